// RebalancePolicy on synthetic load sequences, single process.
#include "moe/rebalance_policy.h"

#include <vector>

#include "gtest/gtest.h"

namespace moe {
namespace {

RebalancePolicy NewPolicy(int32_t window, int32_t num_ranks = 4) {
  absl::StatusOr<RebalancePolicy> p =
      RebalancePolicy::Create(8, comm::ContiguousReplicatedPlacement(8, num_ranks),
                              {.window_steps = window,
                               .threshold = 1.2,
                               .min_improvement = 0.1,
                               .planner = {.num_ranks = num_ranks, .num_redundant = num_ranks}});
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

TEST(RebalancePolicyTest, SkewedLoadsTriggerOnceTheWindowIsFull) {
  RebalancePolicy policy = NewPolicy(4);
  const std::vector<int64_t> skewed = {100, 5, 5, 5, 5, 5, 5, 5};
  for (int step = 0; step < 3; ++step) {
    absl::StatusOr<RebalanceDecision> d = policy.Observe(skewed);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_FALSE(d->rebalance) << "step " << step;
    EXPECT_EQ(d->steps_over_threshold, step + 1);
  }
  absl::StatusOr<RebalanceDecision> d = policy.Observe(skewed);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->rebalance);
  EXPECT_GT(d->current_max_over_mean, 1.2);
  EXPECT_LE(d->planned_max_over_mean, 0.9 * d->current_max_over_mean);
  EXPECT_TRUE(comm::ValidateReplicatedPlacement(d->placement, 8, 4).ok());
  EXPECT_GT(d->placement.replicas[0].size(), 1u);
  // The same loads plan the same placement (what every rank relies on).
  RebalancePolicy other = NewPolicy(4);
  for (int step = 0; step < 3; ++step) ASSERT_TRUE(other.Observe(skewed).ok());
  absl::StatusOr<RebalanceDecision> again = other.Observe(skewed);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->placement.replicas.size(), d->placement.replicas.size());
  for (size_t e = 0; e < d->placement.replicas.size(); ++e) {
    ASSERT_EQ(again->placement.replicas[e].size(), d->placement.replicas[e].size());
    for (size_t i = 0; i < d->placement.replicas[e].size(); ++i) {
      EXPECT_EQ(again->placement.replicas[e][i].rank, d->placement.replicas[e][i].rank);
      EXPECT_EQ(again->placement.replicas[e][i].share, d->placement.replicas[e][i].share);
    }
  }
  // After adopting it, the window restarts and the same loads are balanced.
  ASSERT_TRUE(policy.Adopt(d->placement).ok());
  for (int step = 0; step < 6; ++step) {
    absl::StatusOr<RebalanceDecision> after = policy.Observe(skewed);
    ASSERT_TRUE(after.ok());
    EXPECT_FALSE(after->rebalance);
  }
}

TEST(RebalancePolicyTest, UniformLoadsNeverTrigger) {
  RebalancePolicy policy = NewPolicy(2);
  for (int step = 0; step < 10; ++step) {
    absl::StatusOr<RebalanceDecision> d = policy.Observe({10, 10, 10, 10, 10, 10, 10, 10});
    ASSERT_TRUE(d.ok());
    EXPECT_FALSE(d->rebalance);
    EXPECT_EQ(d->steps_over_threshold, 0);
  }
}

TEST(RebalancePolicyTest, OneBalancedStepRestartsTheCount) {
  RebalancePolicy policy = NewPolicy(3);
  const std::vector<int64_t> skewed = {100, 5, 5, 5, 5, 5, 5, 5};
  const std::vector<int64_t> uniform(8, 10);
  for (const auto& loads : {skewed, skewed, uniform, skewed, skewed}) {
    absl::StatusOr<RebalanceDecision> d = policy.Observe(loads);
    ASSERT_TRUE(d.ok());
    EXPECT_FALSE(d->rebalance);
  }
}

TEST(RebalancePolicyTest, BadOptionsAndLoadsAreInvalidArgument) {
  absl::StatusOr<RebalancePolicy> p =
      RebalancePolicy::Create(8, comm::ContiguousReplicatedPlacement(8, 2),
                              {.threshold = 0.5, .planner = {.num_ranks = 2}});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  RebalancePolicy policy = NewPolicy(2);
  EXPECT_EQ(policy.Observe({1, 2, 3}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe
