#include "comm/placement.h"

#include <vector>

#include "gtest/gtest.h"

namespace moe::comm {
namespace {

TEST(PlacementTest, ContiguousBlocksGiveTheRemainderToTheFirstRanks) {
  absl::StatusOr<Placement> p = ContiguousPlacement(10, 4);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->rank_of_expert, (std::vector<int32_t>{0, 0, 0, 1, 1, 1, 2, 2, 3, 3}));
  EXPECT_EQ(p->local_experts[1], (std::vector<int32_t>{3, 4, 5}));
  EXPECT_EQ(p->local_experts[3], (std::vector<int32_t>{8, 9}));
  EXPECT_EQ(p->local_index, (std::vector<int32_t>{0, 1, 2, 0, 1, 2, 0, 1, 0, 1}));
  EXPECT_TRUE(ValidatePlacement(*p, 10, 4).ok());
}

TEST(PlacementTest, FewerExpertsThanRanksLeavesTheLastRanksEmpty) {
  absl::StatusOr<Placement> p = ContiguousPlacement(3, 5);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->rank_of_expert, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(p->num_local_experts(3), 0);
  EXPECT_EQ(p->num_local_experts(4), 0);
}

TEST(PlacementTest, AnyExpertToRankMapIsAPlacement) {
  absl::StatusOr<Placement> p = PlacementFromRanks({1, 0, 1, 0, 1}, 2);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->local_experts[0], (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(p->local_experts[1], (std::vector<int32_t>{0, 2, 4}));
  EXPECT_EQ(p->local_index[4], 2);
  EXPECT_TRUE(ValidatePlacement(*p, 5, 2).ok());
}

TEST(PlacementTest, BadPlacementsAreNamed) {
  EXPECT_EQ(ContiguousPlacement(0, 4).status().message(),
            "placement: need num_experts > 0 and num_ranks > 0, got num_experts=0 num_ranks=4");
  EXPECT_EQ(PlacementFromRanks({0, 5}, 2).status().message(),
            "placement: expert 1 is on rank 5, outside [0, 2)");
  Placement p = *ContiguousPlacement(4, 2);
  EXPECT_EQ(ValidatePlacement(p, 4, 3).message(),
            "placement: built for 4 experts on 2 ranks, but the layer has 4 experts on 3 ranks");
  p.local_experts[0] = {1, 0};
  absl::Status s = ValidatePlacement(p, 4, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "placement: local_experts of rank 0 disagrees with rank_of_expert at entry 0");
}

}  // namespace
}  // namespace moe::comm
