// NcclCommunicator on one rank (LocalCommunicator as the bootstrap). The build always compiles
// it; the tests run where a CUDA device is visible and skip with the reason elsewhere.
// Multi-rank NCCL: tests/comm/nccl_mpi_main.cc.
#include "comm/nccl_communicator.h"

#include <vector>

#include "gtest/gtest.h"

namespace moe::comm {
namespace {

#ifdef MOE_HAVE_NCCL

// A device copy of `host`, freed with the object.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const std::vector<T>& host) : size_(host.size()) {
    EXPECT_EQ(cudaMalloc(&data_, bytes()), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(data_, host.data(), bytes(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(data_); }
  T* get() { return static_cast<T*>(data_); }
  std::vector<T> ToHost() const {
    std::vector<T> host(size_);
    EXPECT_EQ(cudaMemcpy(host.data(), data_, bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }

 private:
  size_t bytes() const { return size_ * sizeof(T) + 1; }
  size_t size_;
  void* data_ = nullptr;
};

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device visible";
    absl::StatusOr<std::unique_ptr<NcclCommunicator>> c =
        NcclCommunicator::Create(&bootstrap_, {.timeout_seconds = 30});
    ASSERT_TRUE(c.ok()) << c.status();
    comm_ = *std::move(c);
  }
  LocalCommunicator bootstrap_;
  std::unique_ptr<NcclCommunicator> comm_;
};

TEST_F(NcclCommunicatorTest, OneRankCollectivesAreDeviceCopies) {
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->size(), 1);
  EXPECT_EQ(comm_->memory_space(), MemorySpace::kDevice);
  DeviceBuffer<int32_t> send({1, 2, 3, 4, 5});
  DeviceBuffer<int32_t> recv({-1, -1, -1, -1, -1});
  ASSERT_TRUE(comm_->AllToAllV(send.get(), {12}, {4}, recv.get(), {12}, {8}).ok());
  EXPECT_EQ(recv.ToHost(), (std::vector<int32_t>{-1, -1, 2, 3, 4}));
  DeviceBuffer<int64_t> values({3, 4});
  ASSERT_TRUE(comm_->AllReduceSum(values.get(), 2).ok());
  EXPECT_EQ(values.ToHost(), (std::vector<int64_t>{3, 4}));
  DeviceBuffer<int64_t> gathered({0, 0});
  ASSERT_TRUE(comm_->AllGather(values.get(), 16, gathered.get()).ok());
  EXPECT_EQ(gathered.ToHost(), (std::vector<int64_t>{3, 4}));
  EXPECT_TRUE(comm_->Barrier().ok());
}

TEST_F(NcclCommunicatorTest, MismatchedSelfCountsAreInvalidArgument) {
  DeviceBuffer<int32_t> buf({0, 0});
  absl::Status s = comm_->AllToAllV(buf.get(), {4}, {0}, buf.get(), {8}, {0});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "AllToAllV: rank 0 sends 4 bytes to itself but expects 8");
}

TEST(NcclSetupTest, NoDeviceIsFailedPrecondition) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is visible";
  LocalCommunicator bootstrap;
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> c = NcclCommunicator::Create(&bootstrap);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.status().message(), "rank 0: no CUDA device visible for NCCL");
}

#else  // !MOE_HAVE_NCCL

TEST(NcclCommunicatorTest, OneRankCollectivesAreDeviceCopies) {
  EXPECT_EQ(CudaDeviceCount(), 0);
  GTEST_SKIP() << "built without NCCL (no CUDA toolkit found)";
}

#endif  // MOE_HAVE_NCCL

}  // namespace
}  // namespace moe::comm
