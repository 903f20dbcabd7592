#include "comm/eplb_baseline.h"

#include <algorithm>
#include <numeric>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::comm {
namespace {

using ::testing::HasSubstr;

TEST(EplbReplicaCountsTest, AddsReplicasToTheLargestLoadPerReplica) {
  // 10 -> 5 (tie with expert 1 goes to expert 0) -> 3.33; then expert 1: 5 -> 2.5.
  EXPECT_EQ(EplbReplicaCounts({10, 5, 1}, 3, 8), (std::vector<int32_t>{3, 2, 1}));
  EXPECT_EQ(EplbReplicaCounts({10, 5, 1}, 0, 8), (std::vector<int32_t>{1, 1, 1}));
  // Capped at max_replicas: the rest go to the next expert.
  EXPECT_EQ(EplbReplicaCounts({100, 1}, 3, 2), (std::vector<int32_t>{2, 2}));
}

TEST(BalancedPackingTest, HeaviestFirstIntoTheLightestPackWithRoom) {
  auto packs = BalancedPacking({5, 4, 3, 2, 1, 1}, std::vector<int32_t>(6, -1), 3);
  ASSERT_TRUE(packs.ok());
  // 5 -> p0, 4 -> p1, 3 -> p2, 2 -> p2 (3), 1 -> p1 (4), 1 -> p0 (5): loads 6, 5, 5.
  EXPECT_EQ(*packs, (std::vector<int32_t>{0, 1, 2, 2, 1, 0}));
}

TEST(BalancedPackingTest, FloorOrCeilItemsPerPackAndNoLabelTwice) {
  // 7 items over 3 packs: one pack of 3, two of 2; both copies of label 0 apart.
  auto packs = BalancedPacking({9, 9, 1, 1, 1, 1, 1}, {0, 0, -1, -1, -1, -1, -1}, 3);
  ASSERT_TRUE(packs.ok());
  std::vector<int> size(3, 0);
  for (int32_t p : *packs) ++size[static_cast<size_t>(p)];
  std::sort(size.begin(), size.end());
  EXPECT_EQ(size, (std::vector<int>{2, 2, 3}));
  EXPECT_NE((*packs)[0], (*packs)[1]);
  // Forced: the last free pack already holds label 1, so an item moves to make room.
  auto forced = BalancedPacking({4, 3, 3, 1}, {1, 2, 3, 1}, 2);
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_NE((*forced)[0], (*forced)[3]);
}

void ExpectEplbInvariants(const ReplicatedPlacement& p, const std::vector<double>& loads,
                          int32_t ranks, int32_t redundant) {
  const int32_t experts = static_cast<int32_t>(loads.size());
  ASSERT_TRUE(ValidateReplicatedPlacement(p, experts, ranks).ok())
      << ValidateReplicatedPlacement(p, experts, ranks);
  EXPECT_EQ(p.num_slots(), int64_t{experts} + redundant);
  for (const auto& list : p.replicas) {
    for (const ExpertReplica& r : list) {
      EXPECT_EQ(r.share, 1.0 / static_cast<double>(list.size()));  // equal shares
    }
  }
}

TEST(EplbPlacementTest, GlobalPolicyReplicatesTheHottest) {
  std::vector<double> loads(16, 1.0);
  loads[5] = 20;
  auto p = EplbPlacement(loads, {.num_ranks = 4, .num_redundant = 4});
  ASSERT_TRUE(p.ok()) << p.status();
  ExpectEplbInvariants(*p, loads, 4, 4);
  EXPECT_EQ(p->num_replicas(5), 4);  // 20 / c stays the largest until c = 4 (then 5 > 1)
  EXPECT_EQ(EplbReplicaCounts(loads, 4, 4)[5], 4);
}

TEST(EplbPlacementTest, HierarchicalPolicyKeepsEveryExpertInOneNode) {
  std::vector<double> loads(32);
  for (size_t e = 0; e < loads.size(); ++e) loads[e] = 1.0 + static_cast<double>(e % 7);
  auto p =
      EplbPlacement(loads, {.num_ranks = 8, .num_redundant = 8, .num_nodes = 2, .num_groups = 8});
  ASSERT_TRUE(p.ok()) << p.status();
  ExpectEplbInvariants(*p, loads, 8, 8);
  std::vector<int> experts_per_node(2, 0);
  for (int32_t e = 0; e < 32; ++e) {
    std::set<int32_t> nodes;
    for (const ExpertReplica& r : p->replicas[static_cast<size_t>(e)]) nodes.insert(r.rank / 4);
    ASSERT_EQ(nodes.size(), 1u) << "expert " << e;
    ++experts_per_node[static_cast<size_t>(*nodes.begin())];
    // Groups of 4 consecutive experts stay together.
    EXPECT_EQ(*nodes.begin(), p->replicas[static_cast<size_t>(e / 4 * 4)][0].rank / 4);
  }
  EXPECT_EQ(experts_per_node, (std::vector<int>{16, 16}));
}

TEST(EplbPlacementTest, GroupsNotSplittableOverNodesFallBackToGlobal) {
  std::vector<double> loads(12, 1.0);
  loads[0] = 30;
  // 3 groups over 2 nodes: EPLB's global policy (expert 0 may span both nodes).
  auto p =
      EplbPlacement(loads, {.num_ranks = 4, .num_redundant = 3, .num_nodes = 2, .num_groups = 3});
  ASSERT_TRUE(p.ok()) << p.status();
  auto global = EplbPlacement(loads, {.num_ranks = 4, .num_redundant = 3});
  ASSERT_TRUE(global.ok());
  for (size_t e = 0; e < loads.size(); ++e) {
    ASSERT_EQ(p->replicas[e].size(), global->replicas[e].size());
    for (size_t i = 0; i < p->replicas[e].size(); ++i) {
      EXPECT_EQ(p->replicas[e][i].rank, global->replicas[e][i].rank);
    }
  }
}

TEST(EplbPlacementTest, NonDividingSlotsGiveFloorOrCeilPerRank) {
  std::vector<double> loads(10);
  std::iota(loads.begin(), loads.end(), 1.0);
  auto p = EplbPlacement(loads, {.num_ranks = 4, .num_redundant = 3});  // 13 over 4
  ASSERT_TRUE(p.ok()) << p.status();
  ExpectEplbInvariants(*p, loads, 4, 3);
}

TEST(EplbPlacementTest, RejectsOptionsThatDoNotFit) {
  auto error = [](const std::vector<double>& loads, EplbOptions o) {
    return std::string(EplbPlacement(loads, o).status().message());
  };
  const std::vector<double> loads(8, 1.0);
  EXPECT_THAT(error(loads, {.num_ranks = 6, .num_nodes = 4}),
              HasSubstr("num_ranks 6 is not a multiple of num_nodes 4"));
  EXPECT_THAT(error(loads, {.num_ranks = 4, .num_groups = 3}),
              HasSubstr("num_experts 8 is not a multiple of num_groups 3"));
  EXPECT_THAT(error(loads, {.num_ranks = 4, .num_redundant = 3, .num_nodes = 2}),
              HasSubstr("num_redundant 3 to be a multiple of num_nodes 2"));
  EXPECT_THAT(error(loads, {.num_ranks = 2, .num_redundant = 9}), HasSubstr("more replicas"));
  EXPECT_THAT(error({}, {.num_ranks = 2}), HasSubstr("needs >= 1 expert"));
}

}  // namespace
}  // namespace moe::comm
