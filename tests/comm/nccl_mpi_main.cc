// NcclCommunicator across real ranks (mpirun -np 2), one CUDA device per rank, its unique id
// sent over MPI. Skips with the reason when the build has no NCCL or too few devices.
#include <chrono>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "gtest/gtest.h"
#include "tests/comm/mpi_gtest.h"

namespace moe::comm {
namespace {

using moe::testing::NewWorldComm;

#ifdef MOE_HAVE_NCCL

// Skips unless every rank has a device of its own.
#define MOE_REQUIRE_DEVICE_PER_RANK(bootstrap)                                            \
  do {                                                                                    \
    if (CudaDeviceCount() < (bootstrap)->size()) {                                        \
      GTEST_SKIP() << "needs " << (bootstrap)->size() << " CUDA devices (one per rank), " \
                   << CudaDeviceCount() << " visible";                                    \
    }                                                                                     \
  } while (0)

std::vector<int32_t> ToHost(const int32_t* device, size_t n) {
  std::vector<int32_t> host(n);
  EXPECT_EQ(cudaMemcpy(host.data(), device, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

int32_t* ToDevice(const std::vector<int32_t>& host) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, host.size() * 4 + 4), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, host.data(), host.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  return static_cast<int32_t*>(p);
}

int64_t CountOf(int from, int to) { return ((from * 7 + to * 3) % 4) * 3; }
int32_t Payload(int from, int to, int64_t i) {
  return static_cast<int32_t>(from * 1000000 + to * 1000 + i);
}

TEST(NcclMpiTest, AllToAllVMovesUnevenPayloadsBetweenDevices) {
  std::unique_ptr<MpiCommunicator> bootstrap = NewWorldComm();
  MOE_REQUIRE_DEVICE_PER_RANK(bootstrap);
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> comm =
      NcclCommunicator::Create(bootstrap.get());
  ASSERT_TRUE(comm.ok()) << comm.status();
  const int n = (*comm)->size();
  const int me = (*comm)->rank();
  std::vector<int64_t> send_counts(n), send_offsets(n), recv_counts(n), recv_offsets(n);
  std::vector<int32_t> send;
  int64_t recv_total = 0;
  for (int p = 0; p < n; ++p) {
    send_offsets[p] = static_cast<int64_t>(send.size()) * 4;
    send_counts[p] = CountOf(me, p) * 4;
    for (int64_t i = 0; i < CountOf(me, p); ++i) send.push_back(Payload(me, p, i));
    recv_offsets[p] = recv_total * 4;
    recv_counts[p] = CountOf(p, me) * 4;
    recv_total += CountOf(p, me);
  }
  int32_t* d_send = ToDevice(send);
  int32_t* d_recv = ToDevice(std::vector<int32_t>(static_cast<size_t>(recv_total), -1));
  ASSERT_TRUE((*comm)
                  ->AllToAllV(d_send, send_counts, send_offsets, d_recv, recv_counts, recv_offsets)
                  .ok());
  const std::vector<int32_t> recv = ToHost(d_recv, static_cast<size_t>(recv_total));
  int64_t at = 0;
  for (int p = 0; p < n; ++p) {
    for (int64_t i = 0; i < CountOf(p, me); ++i, ++at) EXPECT_EQ(recv[at], Payload(p, me, i));
  }
  int32_t* d_gathered = ToDevice(std::vector<int32_t>(static_cast<size_t>(n), -1));
  const int32_t mine = 100 + me;
  int32_t* d_mine = ToDevice({mine});
  ASSERT_TRUE((*comm)->AllGather(d_mine, 4, d_gathered).ok());
  const std::vector<int32_t> gathered = ToHost(d_gathered, static_cast<size_t>(n));
  for (int p = 0; p < n; ++p) EXPECT_EQ(gathered[p], 100 + p);
  EXPECT_TRUE((*comm)->Barrier().ok());
  cudaFree(d_send);
  cudaFree(d_recv);
  cudaFree(d_gathered);
  cudaFree(d_mine);
}

TEST(NcclMpiTest, SilentPeerIsDeadlineExceededAndAborts) {
  std::unique_ptr<MpiCommunicator> bootstrap = NewWorldComm();
  MOE_REQUIRE_DEVICE_PER_RANK(bootstrap);
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> comm =
      NcclCommunicator::Create(bootstrap.get(), {.timeout_seconds = 3});
  ASSERT_TRUE(comm.ok()) << comm.status();
  const int n = (*comm)->size();
  const int me = (*comm)->rank();
  if (me == 0) {  // the others never call
    int32_t* d = ToDevice(std::vector<int32_t>(static_cast<size_t>(n), 0));
    std::vector<int64_t> counts(n, 4), offsets(n);
    for (int p = 0; p < n; ++p) offsets[p] = 4 * p;
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = (*comm)->AllToAllV(d, counts, offsets, d, counts, offsets);
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    EXPECT_NE(s.message().find("rank 0: NCCL AllToAllV did not complete within 3 s"),
              std::string::npos)
        << s;
    EXPECT_LT(waited, 10.0);
    EXPECT_EQ((*comm)->Barrier().code(), absl::StatusCode::kUnavailable);
    cudaFree(d);
  }
  comm->reset();
  EXPECT_TRUE(bootstrap->Barrier().ok());
}

#else  // !MOE_HAVE_NCCL

TEST(NcclMpiTest, AllToAllVMovesUnevenPayloadsBetweenDevices) {
  GTEST_SKIP() << "built without NCCL (no CUDA toolkit found)";
}

#endif  // MOE_HAVE_NCCL

}  // namespace
}  // namespace moe::comm

int main(int argc, char** argv) { return moe::testing::RunMpiGtest(argc, argv); }
