#include <vector>

#include "comm/communicator.h"
#include "gtest/gtest.h"

namespace moe::comm {
namespace {

TEST(LocalCommunicatorTest, AllToAllVCopiesTheSelfSlice) {
  LocalCommunicator comm;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  std::vector<int> send = {1, 2, 3, 4, 5};
  std::vector<int> recv(5, -1);
  ASSERT_TRUE(comm.AllToAllV(send.data(), {3 * sizeof(int)}, {1 * sizeof(int)}, recv.data(),
                             {3 * sizeof(int)}, {2 * sizeof(int)})
                  .ok());
  EXPECT_EQ(recv, (std::vector<int>{-1, -1, 2, 3, 4}));
}

TEST(LocalCommunicatorTest, MismatchedCountsAreErrors) {
  LocalCommunicator comm;
  int x = 0;
  absl::Status s = comm.AllToAllV(&x, {4}, {0}, &x, {8}, {0});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "AllToAllV: rank 0 sends 4 bytes to itself but expects 8");
  EXPECT_EQ(comm.AllToAllV(&x, {4, 4}, {0, 0}, &x, {4}, {0}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LocalCommunicatorTest, AllGatherAndReduceAreIdentity) {
  LocalCommunicator comm;
  int64_t v[2] = {3, 4};
  ASSERT_TRUE(comm.AllReduceSum(v, 2).ok());
  EXPECT_EQ(v[1], 4);
  int64_t out[2] = {0, 0};
  ASSERT_TRUE(comm.AllGather(v, sizeof(v), out).ok());
  EXPECT_EQ(out[0], 3);
  EXPECT_TRUE(comm.Barrier().ok());
}

}  // namespace
}  // namespace moe::comm
