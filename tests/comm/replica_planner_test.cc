#include "comm/replica_planner.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "comm/eplb_baseline.h"
#include "gating/load_stats.h"
#include "gating/routing_skew.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::comm {
namespace {

using ::testing::HasSubstr;

std::vector<double> Zipf(int32_t num_experts, double s, uint64_t seed) {
  gating::SkewSpec spec;
  spec.kind = gating::SkewSpec::Kind::kZipf;
  spec.zipf_s = s;
  return *gating::SkewFractions(spec, num_experts, seed);
}

double MaxOverMeanOf(const ReplicatedPlacement& p, const std::vector<double>& loads) {
  return gating::MaxOverMean(PredictedRankLoads(p, loads));
}

// The invariants, checked independently of ValidateReplicatedPlacement.
void ExpectInvariants(const ReplicatedPlacement& p, int32_t experts, int32_t ranks,
                      int32_t redundant) {
  ASSERT_TRUE(ValidateReplicatedPlacement(p, experts, ranks).ok())
      << ValidateReplicatedPlacement(p, experts, ranks);
  ASSERT_EQ(p.replicas.size(), static_cast<size_t>(experts));
  int64_t slots = 0;
  std::map<std::pair<int32_t, int32_t>, double> by_expert;
  for (int32_t e = 0; e < experts; ++e) {
    const auto& list = p.replicas[static_cast<size_t>(e)];
    ASSERT_GE(list.size(), 1u) << "expert " << e << " not placed";
    std::set<int32_t> ranks_of_e;
    double sum = 0;
    for (const ExpertReplica& r : list) {
      EXPECT_TRUE(ranks_of_e.insert(r.rank).second) << "expert " << e << " twice on " << r.rank;
      EXPECT_GE(r.share, 0);
      sum += r.share;
      by_expert[{e, r.rank}] = r.share;
    }
    EXPECT_NEAR(sum, 1.0, 1e-9) << "expert " << e;
    slots += static_cast<int64_t>(list.size());
  }
  EXPECT_EQ(slots, int64_t{experts} + redundant);
  const int64_t low = slots / ranks, extra = slots % ranks;
  int64_t at_ceiling = 0;
  for (int32_t r = 0; r < ranks; ++r) {
    const auto& list = p.rank_experts[static_cast<size_t>(r)];
    EXPECT_GE(static_cast<int64_t>(list.size()), low) << "rank " << r;
    EXPECT_LE(static_cast<int64_t>(list.size()), low + (extra > 0 ? 1 : 0)) << "rank " << r;
    at_ceiling += static_cast<int64_t>(list.size()) > low ? 1 : 0;
    for (const RankExpert& x : list) EXPECT_EQ(by_expert.at({x.expert, r}), x.share);
  }
  EXPECT_EQ(at_ceiling, extra);
}

void ExpectSame(const ReplicatedPlacement& a, const ReplicatedPlacement& b) {
  ASSERT_EQ(a.replicas.size(), b.replicas.size());
  for (size_t e = 0; e < a.replicas.size(); ++e) {
    ASSERT_EQ(a.replicas[e].size(), b.replicas[e].size()) << "expert " << e;
    for (size_t i = 0; i < a.replicas[e].size(); ++i) {
      EXPECT_EQ(a.replicas[e][i].rank, b.replicas[e][i].rank);
      EXPECT_EQ(a.replicas[e][i].share, b.replicas[e][i].share);  // bitwise
    }
  }
}

// The issue's setting: Zipf(s) over 256 experts on 64 ranks with 32 redundant slots.
class ZipfTargetTest : public ::testing::TestWithParam<std::tuple<double, int32_t>> {};

TEST_P(ZipfTargetTest, MeetsTheTargetWhereFeasibleAndNeverLosesToEplb) {
  const auto [s, nodes] = GetParam();
  for (uint64_t seed : {1, 2, 3}) {
    const std::vector<double> loads = Zipf(256, s, seed);
    auto plan =
        PlanReplicatedPlacement(loads, {.num_ranks = 64, .num_redundant = 32, .num_nodes = nodes});
    ASSERT_TRUE(plan.ok()) << plan.status();
    ExpectInvariants(plan->placement, 256, 64, 32);
    EXPECT_NEAR(MaxOverMeanOf(plan->placement, loads), plan->max_over_mean, 1e-12);
    // No worse than EPLB with the same nodes (hierarchical) and without (global).
    for (int32_t eplb_nodes : {nodes, 0}) {
      auto eplb =
          EplbPlacement(loads, {.num_ranks = 64, .num_redundant = 32, .num_nodes = eplb_nodes});
      ASSERT_TRUE(eplb.ok()) << eplb.status();
      EXPECT_LE(plan->max_over_mean, MaxOverMeanOf(*eplb, loads) + 1e-12)
          << "s " << s << " eplb nodes " << eplb_nodes;
    }
    // The target max/mean <= 1.05 where a placement can reach it. Some replica of expert e
    // carries >= load_e / replicas_e alone, so max/mean >= ReplicaLowerBound: 1.082 for
    // s = 1.2 and 1.354 for s = 1.5, above the target for any planner. There, the plan must
    // come within 7% of that bound (the bound ignores that every rank holds >= 4 experts).
    if (plan->lower_bound <= 1.0) {
      EXPECT_LE(plan->max_over_mean, 1.05) << "s " << s;
    } else {
      EXPECT_GT(plan->lower_bound, 1.05);
      EXPECT_LE(plan->max_over_mean, 1.07 * plan->lower_bound) << "s " << s;
    }
    if (nodes > 1) {
      EXPECT_LE(MeanNodeSpan(plan->placement, nodes), 1.05);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Zipf, ZipfTargetTest,
                         ::testing::Combine(::testing::Values(1.0, 1.2, 1.5),
                                            ::testing::Values(0, 8)));

TEST(ReplicaPlannerTest, LowerBoundsOfTheIssueSetting) {
  EXPECT_DOUBLE_EQ(ReplicaLowerBound(Zipf(256, 1.0, 1), 64, 32), 1.0);
  EXPECT_NEAR(ReplicaLowerBound(Zipf(256, 1.2, 1), 64, 32), 1.0821, 1e-4);
  EXPECT_NEAR(ReplicaLowerBound(Zipf(256, 1.5, 1), 64, 32), 1.3541, 1e-4);
  // With 64 redundant slots the bound is 1 for every s, and the plan reaches 1.05.
  for (double s : {1.0, 1.2, 1.5}) {
    const std::vector<double> loads = Zipf(256, s, 1);
    EXPECT_DOUBLE_EQ(ReplicaLowerBound(loads, 64, 64), 1.0);
    auto plan = PlanReplicatedPlacement(loads, {.num_ranks = 64, .num_redundant = 64});
    ASSERT_TRUE(plan.ok());
    ExpectInvariants(plan->placement, 256, 64, 64);
    EXPECT_LE(plan->max_over_mean, 1.05) << "s " << s;
  }
}

TEST(ReplicaPlannerTest, SameInputsGiveTheSamePlacement) {
  const std::vector<double> loads = Zipf(256, 1.2, 5);
  for (int32_t nodes : {0, 8}) {
    const PlannerOptions o{.num_ranks = 64, .num_redundant = 32, .num_nodes = nodes};
    auto a = PlanReplicatedPlacement(loads, o);
    auto b = PlanReplicatedPlacement(loads, o);
    ASSERT_TRUE(a.ok() && b.ok());
    ExpectSame(a->placement, b->placement);
    EXPECT_EQ(a->rank_loads, b->rank_loads);
  }
}

TEST(ReplicaPlannerTest, OddSizes) {
  struct Case {
    std::vector<double> loads;
    int32_t ranks, redundant, nodes;
  };
  for (const Case& c : std::vector<Case>{
           {{5.0}, 1, 0, 0},                           // one expert, one rank
           {{5.0}, 4, 3, 0},                           // one expert on every rank
           {{1, 2, 3}, 5, 0, 0},                       // more ranks than slots: empty ranks
           {{0, 0, 0, 0}, 2, 2, 0},                    // no load: planned as uniform
           {{9, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 4, 3, 2},  // E = 10, 13 slots over 4 ranks
           {{100, 0, 0, 0, 0, 0, 0}, 3, 2, 0},         // all load on one expert
           {{3, 1, 4, 1, 5, 9, 2}, 7, 0, 7},           // one rank per node
       }) {
    const int32_t experts = static_cast<int32_t>(c.loads.size());
    auto plan = PlanReplicatedPlacement(
        c.loads, {.num_ranks = c.ranks, .num_redundant = c.redundant, .num_nodes = c.nodes});
    ASSERT_TRUE(plan.ok()) << plan.status();
    ExpectInvariants(plan->placement, experts, c.ranks, c.redundant);
    auto eplb = EplbPlacement(c.loads, {.num_ranks = c.ranks, .num_redundant = c.redundant});
    ASSERT_TRUE(eplb.ok()) << eplb.status();
    if (gating::MaxOverMean(c.loads) > 0) {  // all-zero loads are planned as uniform
      EXPECT_LE(plan->max_over_mean, MaxOverMeanOf(*eplb, c.loads) + 1e-12);
    }
    EXPECT_GE(plan->max_over_mean, plan->lower_bound - 1e-12);
  }
  // One expert on 4 ranks: a quarter each, perfectly balanced.
  auto one = PlanReplicatedPlacement({5.0}, {.num_ranks = 4, .num_redundant = 3});
  for (const ExpertReplica& r : one->placement.replicas[0]) EXPECT_NEAR(r.share, 0.25, 1e-12);
  EXPECT_NEAR(one->max_over_mean, 1.0, 1e-12);
  // All load on one expert, replicated on all 3 ranks: a third each.
  auto hot = PlanReplicatedPlacement({100, 0, 0, 0, 0, 0, 0}, {.num_ranks = 3, .num_redundant = 2});
  EXPECT_EQ(hot->placement.num_replicas(0), 3);
  EXPECT_NEAR(hot->max_over_mean, 1.0, 1e-12);
}

TEST(ReplicaPlannerTest, RandomInstancesKeepTheInvariants) {
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 400; ++trial) {
    const int32_t experts = 1 + static_cast<int32_t>(rng() % 24);
    const int32_t ranks = 1 + static_cast<int32_t>(rng() % 12);
    const int32_t redundant =
        static_cast<int32_t>(rng() % (std::min(experts * (ranks - 1), 40) + 1));
    std::vector<int32_t> divisors;
    for (int32_t d = 1; d <= ranks; ++d) {
      if (ranks % d == 0) divisors.push_back(d);
    }
    const int32_t nodes = divisors[rng() % divisors.size()];
    std::vector<double> loads(static_cast<size_t>(experts));
    for (double& x : loads) x = rng() % 4 == 0 ? 0.0 : std::pow(2.0, (rng() % 200) / 20.0);
    SCOPED_TRACE(testing::Message() << "trial " << trial << ": E " << experts << " N " << ranks
                                    << " R " << redundant << " nodes " << nodes);
    auto plan = PlanReplicatedPlacement(
        loads, {.num_ranks = ranks, .num_redundant = redundant, .num_nodes = nodes});
    ASSERT_TRUE(plan.ok()) << plan.status();
    ExpectInvariants(plan->placement, experts, ranks, redundant);
    EXPECT_GE(plan->max_over_mean, plan->lower_bound * (1 - 1e-9));
    auto eplb = EplbPlacement(loads, {.num_ranks = ranks, .num_redundant = redundant});
    ASSERT_TRUE(eplb.ok()) << eplb.status();
    if (gating::MaxOverMean(loads) > 0) {
      EXPECT_LE(plan->max_over_mean, MaxOverMeanOf(*eplb, loads) * (1 + 1e-12));
    }
  }
}

TEST(ReplicaPlannerTest, RejectsBadInputsNamingThem) {
  auto error = [](const std::vector<double>& loads, PlannerOptions o) {
    return std::string(PlanReplicatedPlacement(loads, o).status().message());
  };
  EXPECT_THAT(error({}, {.num_ranks = 2}), HasSubstr("no experts"));
  EXPECT_THAT(error({1, -1}, {.num_ranks = 2}), HasSubstr("loads[1] = -1"));
  EXPECT_THAT(error({1, NAN}, {.num_ranks = 2}), HasSubstr("loads[1] = nan"));
  EXPECT_THAT(error({1, 2}, {.num_ranks = 0}), HasSubstr("num_ranks must be >= 1, got 0"));
  EXPECT_THAT(error({1, 2}, {.num_ranks = 2, .num_redundant = 3}),
              HasSubstr("num_redundant must be in [0, 2]"));
  EXPECT_THAT(error({1, 2}, {.num_ranks = 2, .num_redundant = -1}), HasSubstr("num_redundant"));
  EXPECT_THAT(error({1, 2}, {.num_ranks = 6, .num_nodes = 4}),
              HasSubstr("num_ranks 6 is not a multiple of num_nodes 4"));
}

TEST(ReplicaPlannerTest, NodesKeepReplicasTogether) {
  // Two hot experts of 4 replicas each on 2 nodes of 4 ranks: each within one node.
  std::vector<double> loads(16, 1.0);
  loads[3] = 16;
  loads[9] = 16;
  auto plan = PlanReplicatedPlacement(loads, {.num_ranks = 8, .num_redundant = 6, .num_nodes = 2});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectInvariants(plan->placement, 16, 8, 6);
  EXPECT_DOUBLE_EQ(MeanNodeSpan(plan->placement, 2), 1.0);
}

TEST(MeanNodeSpanTest, CountsNodesPerExpert) {
  ReplicatedPlacement p;
  p.num_experts = 2;
  p.num_ranks = 4;
  p.replicas = {{{0, 0.5}, {1, 0.5}}, {{1, 0.5}, {2, 0.5}}};
  ASSERT_TRUE(FillRankExperts(&p).ok());
  EXPECT_DOUBLE_EQ(MeanNodeSpan(p, 2), 1.5);  // expert 0 on node 0, expert 1 on nodes 0 and 1
  EXPECT_DOUBLE_EQ(MeanNodeSpan(p, 1), 1.0);
  EXPECT_DOUBLE_EQ(MeanNodeSpan(p, 4), 2.0);
}

TEST(ReplicaPlannerTest, PredictedLoadsUseTheShares) {
  ReplicatedPlacement p;
  p.num_experts = 3;
  p.num_ranks = 2;
  p.replicas = {{{0, 0.25}, {1, 0.75}}, {{0, 1.0}}, {{1, 1.0}}};
  ASSERT_TRUE(FillRankExperts(&p).ok());
  EXPECT_EQ(PredictedRankLoads(p, {8, 1, 2}), (std::vector<double>{3, 8}));
}

}  // namespace
}  // namespace moe::comm
