// MpiCommunicator across real ranks (mpirun -np 2, 3, 4): payloads that encode their source
// and destination, uneven and empty transfers, count mismatches and a silent peer.
#include <chrono>
#include <string>
#include <vector>

#include "comm/alltoall_perf.h"
#include "comm/mpi_communicator.h"
#include "gtest/gtest.h"
#include "tests/comm/mpi_gtest.h"

namespace moe::comm {
namespace {

using moe::testing::NewWorldComm;

// Ints rank `from` sends rank `to`: uneven, and zero for some pairs (self included).
int64_t CountOf(int from, int to) { return ((from * 7 + to * 3) % 4) * 3; }
int32_t Payload(int from, int to, int64_t i) {
  return static_cast<int32_t>(from * 1000000 + to * 1000 + i);
}

TEST(MpiCommunicatorTest, AllToAllVMovesUnevenPayloadsToTheirPeers) {
  std::unique_ptr<MpiCommunicator> comm = NewWorldComm();
  const int n = comm->size();
  const int me = comm->rank();
  std::vector<int64_t> send_counts(n), send_offsets(n), recv_counts(n), recv_offsets(n);
  std::vector<int32_t> send;
  int64_t recv_total = 0;
  for (int p = 0; p < n; ++p) {
    send_offsets[p] = static_cast<int64_t>(send.size() * sizeof(int32_t));
    send_counts[p] = CountOf(me, p) * 4;
    for (int64_t i = 0; i < CountOf(me, p); ++i) send.push_back(Payload(me, p, i));
    recv_offsets[p] = recv_total * 4;
    recv_counts[p] = CountOf(p, me) * 4;
    recv_total += CountOf(p, me);
  }
  std::vector<int32_t> recv(static_cast<size_t>(recv_total) + 1, -1);
  ASSERT_TRUE(comm->AllToAllV(send.data(), send_counts, send_offsets, recv.data(), recv_counts,
                              recv_offsets)
                  .ok());
  int64_t at = 0;
  for (int p = 0; p < n; ++p) {
    for (int64_t i = 0; i < CountOf(p, me); ++i, ++at) {
      ASSERT_EQ(recv[at], Payload(p, me, i)) << "from rank " << p << " element " << i;
    }
  }
  EXPECT_EQ(recv[recv_total], -1);  // nothing written past the last peer's part
}

TEST(MpiCommunicatorTest, AllGatherIsRankMajorAndAllReduceIsTheSameEverywhere) {
  std::unique_ptr<MpiCommunicator> comm = NewWorldComm();
  const int n = comm->size();
  const int me = comm->rank();
  int64_t mine[2] = {me, 10 * me + 1};
  std::vector<int64_t> all(2 * n);
  ASSERT_TRUE(comm->AllGather(mine, sizeof(mine), all.data()).ok());
  for (int p = 0; p < n; ++p) {
    EXPECT_EQ(all[2 * p], p);
    EXPECT_EQ(all[2 * p + 1], 10 * p + 1);
  }
  ASSERT_TRUE(comm->AllGather(mine, 0, all.data()).ok());  // zero bytes still synchronizes
  int64_t sums[2] = {me, 1};
  ASSERT_TRUE(comm->AllReduceSum(sums, 2).ok());
  EXPECT_EQ(sums[0], n * (n - 1) / 2);
  EXPECT_EQ(sums[1], n);
  EXPECT_TRUE(comm->Barrier().ok());
}

TEST(MpiCommunicatorTest, ReceivingMoreThanExpectedIsAnErrorOnTheReceiver) {
  std::unique_ptr<MpiCommunicator> comm = NewWorldComm();
  const int n = comm->size();
  const int me = comm->rank();
  std::vector<int64_t> send_counts(n, 0), recv_counts(n, 0), offsets(n, 0);
  if (me == 0) send_counts[1] = 8;  // rank 1 expects 4
  if (me == 1) recv_counts[0] = 4;
  char send[8] = {0};
  char recv[8] = {0};
  absl::Status s = comm->AllToAllV(send, send_counts, offsets, recv, recv_counts, offsets);
  if (me == 1) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), "AllToAllV: rank 1 expected 4 bytes from rank 0 but it sent more");
  } else {
    EXPECT_TRUE(s.ok()) << s;
  }
}

TEST(MpiCommunicatorTest, ReceivingLessThanExpectedIsAnErrorOnTheReceiver) {
  std::unique_ptr<MpiCommunicator> comm = NewWorldComm();
  const int n = comm->size();
  const int me = comm->rank();
  std::vector<int64_t> send_counts(n, 0), recv_counts(n, 0), offsets(n, 0);
  if (me == 0) send_counts[1] = 4;  // rank 1 expects 8
  if (me == 1) recv_counts[0] = 8;
  char send[8] = {0};
  char recv[8] = {0};
  absl::Status s = comm->AllToAllV(send, send_counts, offsets, recv, recv_counts, offsets);
  if (me == 1) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), "AllToAllV: rank 1 expected 8 bytes from rank 0 but received 4");
  } else {
    EXPECT_TRUE(s.ok()) << s;
  }
}

TEST(MpiCommunicatorTest, SilentPeerIsDeadlineExceededNamingIt) {
  std::unique_ptr<MpiCommunicator> comm = NewWorldComm(/*timeout_seconds=*/1.0);
  const int n = comm->size();
  const int me = comm->rank();
  const int silent = n - 1;
  if (me != silent) {
    const auto start = std::chrono::steady_clock::now();
    int64_t x = me;
    std::vector<int64_t> all(n);
    absl::Status s = comm->AllGather(&x, sizeof(x), all.data());
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_EQ(s.message(), "rank " + std::to_string(me) + ": no data from rank " +
                               std::to_string(silent) + " within 1 s (AllGather)");
    EXPECT_GE(waited, 1.0);
    EXPECT_LT(waited, 5.0);
    // The communicator stays failed.
    s = comm->Barrier();
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(s.message().find("AllGather on a communicator that failed earlier: rank"),
              std::string::npos)
        << s;
  }
  // Resynchronize on a fresh communicator.
  EXPECT_TRUE(NewWorldComm()->Barrier().ok());
}

TEST(MpiCommunicatorTest, BadArgumentsAreInvalidArgument) {
  std::unique_ptr<MpiCommunicator> comm = NewWorldComm();
  const int n = comm->size();
  int x = 0;
  std::vector<int64_t> zeros(n, 0);
  absl::Status s = comm->AllToAllV(&x, {0}, {0}, &x, zeros, zeros);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "AllToAllV: counts and offsets must have one entry per rank");
  std::vector<int64_t> negative(n, -1);
  s = comm->AllToAllV(&x, negative, zeros, &x, zeros, zeros);
  EXPECT_EQ(s.message(), "AllToAllV: negative count or offset");
  std::vector<int64_t> self(n, 0);
  self[comm->rank()] = 4;
  s = comm->AllToAllV(&x, self, zeros, &x, zeros, zeros);
  EXPECT_EQ(s.message(), "AllToAllV: rank " + std::to_string(comm->rank()) +
                             " sends 4 bytes to itself but expects 0");
  EXPECT_TRUE(comm->Barrier().ok());  // argument errors do not break the communicator

  absl::StatusOr<std::unique_ptr<MpiCommunicator>> bad =
      MpiCommunicator::Create(MPI_COMM_WORLD, {.timeout_seconds = 0});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "MpiCommunicator: timeout must be > 0 seconds, got 0");
}

TEST(AllToAllPerfTest, OurAllToAllVAndMpiAlltoallvDeliverThePattern) {
  std::unique_ptr<MpiCommunicator> comm = NewWorldComm();
  const int n = comm->size();
  absl::StatusOr<AllToAllPerf> ours = MeasureAllToAllV(comm.get(), 4096, 1, 3);
  absl::StatusOr<AllToAllPerf> mpi = MeasureMpiAlltoallv(comm->comm(), 4096, 1, 3);
  absl::StatusOr<AllToAllComparison> both = CompareAllToAll(comm.get(), 1000, 1, 3);
  ASSERT_TRUE(ours.ok()) << ours.status();
  ASSERT_TRUE(mpi.ok()) << mpi.status();
  ASSERT_TRUE(both.ok()) << both.status();
  for (const AllToAllPerf& p : {*ours, *mpi, both->ours, both->mpi}) {
    EXPECT_EQ(p.wrong, 0);
    EXPECT_EQ(p.num_ranks, n);
    EXPECT_GT(p.seconds, 0);
    EXPECT_DOUBLE_EQ(p.busbw_gbps, p.algbw_gbps * (n - 1) / n);
  }
  EXPECT_EQ(ours->bytes_per_rank, 4096 * n);
  EXPECT_EQ(both->mpi.bytes_per_rank, 1000 * n);
  EXPECT_GT(both->ratio(), 0);
  absl::StatusOr<AllToAllPerf> bad = MeasureAllToAllV(comm.get(), -1, 0, 1);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "all-to-all measurement: need bytes_per_peer >= 0, warmup >= 0 and iters > 0, got "
            "-1, 0, 1");
}

TEST(AllToAllPerfTest, BandwidthFollowsNcclTests) {
  const AllToAllPerf p = AllToAllBandwidth(4, 4000000000, 2.0);
  EXPECT_DOUBLE_EQ(p.algbw_gbps, 2.0);
  EXPECT_DOUBLE_EQ(p.busbw_gbps, 1.5);
}

}  // namespace
}  // namespace moe::comm

int main(int argc, char** argv) { return moe::testing::RunMpiGtest(argc, argv); }
