// GoogleTest under MPI: every rank runs every test; rank 0 prints the usual report, other
// ranks print their failures only, and every rank exits non-zero when any rank failed.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "comm/mpi_communicator.h"
#include "gtest/gtest.h"

namespace moe::testing {

// Timeout of the communicators tests create: long enough for 4 ranks on 2 busy cores, short
// enough that a desynchronized test fails instead of hanging until the ctest timeout.
inline constexpr double kTestTimeoutSeconds = 20.0;

// A fresh communicator over MPI_COMM_WORLD, so a failure in one test cannot leak into the next.
inline std::unique_ptr<comm::MpiCommunicator> NewWorldComm(
    double timeout_seconds = kTestTimeoutSeconds) {
  absl::StatusOr<std::unique_ptr<comm::MpiCommunicator>> c =
      comm::MpiCommunicator::Create(MPI_COMM_WORLD, {.timeout_seconds = timeout_seconds});
  if (!c.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(c.status().message()).c_str());
    std::exit(1);
  }
  return *std::move(c);
}

// Prints a non-zero rank's failed assertions, prefixed with the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() != nullptr ? result.file_name() : "?", result.line_number(),
                 result.summary());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] [  FAILED  ] %s.%s\n", rank_, info.test_suite_name(),
                   info.name());
    }
  }

 private:
  int rank_;
};

// The body of an MPI test main.
inline int RunMpiGtest(int argc, char** argv) {
  absl::StatusOr<std::unique_ptr<comm::MpiSession>> session = comm::MpiSession::Init(&argc, &argv);
  if (!session.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(session.status().message()).c_str());
    return 1;
  }
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = (*session)->world_rank();
  std::unique_ptr<comm::MpiCommunicator> vote = NewWorldComm();
  if (rank != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  int64_t failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  const int64_t mine = failed;
  absl::Status s = vote->AllReduceSum(&failed, 1);
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    std::exit(1);  // without MPI_Finalize: a stuck peer would hang it
  }
  if (rank == 0 && failed > 0) std::fprintf(stderr, "%lld rank(s) failed\n", (long long)failed);
  if (failed > 0 && mine == 0)
    std::fprintf(stderr, "[rank %d] passed; another rank failed\n", rank);
  vote.reset();
  session->reset();
  return failed > 0 ? 1 : 0;
}

}  // namespace moe::testing
