// The routing plan's metadata, checked exactly, and permute -> unpermute = identity.
#include "gating/routing_plan.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "gtest/gtest.h"
#include "kernels/cpu/permute.h"

namespace moe::gating {
namespace {

std::vector<int32_t> RandomIds(int64_t num_tokens, int32_t top_k, int32_t num_experts,
                               uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids;
  std::vector<int32_t> experts(static_cast<size_t>(num_experts));
  std::iota(experts.begin(), experts.end(), 0);
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::shuffle(experts.begin(), experts.end(), rng);
    ids.insert(ids.end(), experts.begin(), experts.begin() + top_k);
  }
  return ids;
}

void ExpectPlanConsistent(const RoutingPlan& plan, const std::vector<int32_t>& ids) {
  const int64_t slots = plan.num_tokens * plan.top_k;
  // Counts match a direct histogram (dropless).
  std::vector<int64_t> hist(static_cast<size_t>(plan.num_experts), 0);
  for (int32_t e : ids) ++hist[e];
  EXPECT_EQ(plan.demand, hist);
  // Offsets are the exclusive scan of counts.
  ASSERT_EQ(plan.offsets.size(), static_cast<size_t>(plan.num_experts) + 1);
  EXPECT_EQ(plan.offsets[0], 0);
  for (int32_t e = 0; e < plan.num_experts; ++e) {
    EXPECT_EQ(plan.offsets[e + 1] - plan.offsets[e], plan.counts[e]);
  }
  // slot_of_row and row_of_slot are inverse bijections over kept slots.
  std::vector<bool> seen(static_cast<size_t>(slots), false);
  for (int64_t r = 0; r < plan.num_rows(); ++r) {
    const int64_t s = plan.slot_of_row[r];
    ASSERT_GE(s, 0);
    ASSERT_LT(s, slots);
    EXPECT_FALSE(seen[s]) << "slot " << s << " appears twice";
    seen[s] = true;
    EXPECT_EQ(plan.row_of_slot[s], r);
  }
  // Rows of one expert hold that expert's slots, in increasing slot (token) order.
  for (int32_t e = 0; e < plan.num_experts; ++e) {
    for (int64_t r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r) {
      EXPECT_EQ(ids[plan.slot_of_row[r]], e);
      if (r > plan.offsets[e]) {
        EXPECT_LT(plan.slot_of_row[r - 1], plan.slot_of_row[r]);
      }
    }
  }
}

TEST(RoutingPlanTest, MetadataIsExactForOddShapes) {
  for (auto [T, k, E] : std::vector<std::tuple<int64_t, int32_t, int32_t>>{
           {1, 1, 1}, {1, 3, 7}, {7, 2, 5}, {33, 5, 5}, {101, 8, 64}, {0, 2, 4}}) {
    std::vector<int32_t> ids = RandomIds(T, k, E, T * 31 + k);
    absl::StatusOr<RoutingPlan> plan = BuildRoutingPlan(ids.data(), T, k, E, -1);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->num_rows(), T * k);
    EXPECT_EQ(plan->dropped_slots, 0);
    ExpectPlanConsistent(*plan, ids);
  }
}

TEST(RoutingPlanTest, PermuteThenUnpermuteIsIdentity) {
  const int64_t T = 13, d = 9;
  const int32_t k = 3, E = 5;
  std::vector<int32_t> ids = RandomIds(T, k, E, 4);
  absl::StatusOr<RoutingPlan> plan = BuildRoutingPlan(ids.data(), T, k, E, -1);
  ASSERT_TRUE(plan.ok());
  // Integer-valued rows: exact in float.
  std::vector<float> x(static_cast<size_t>(T * d));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 97) - 40.0f;
  std::vector<float> rows(static_cast<size_t>(plan->num_rows() * d), -1.0f);
  kernels::PermuteRows({.src = x.data(),
                        .slot_of_row = plan->slot_of_row.data(),
                        .dst = rows.data(),
                        .num_rows = plan->num_rows(),
                        .d_model = d,
                        .top_k = k});
  // Weight 1 on slot j = 0 only: unpermute returns the token itself.
  std::vector<float> weights(static_cast<size_t>(T * k), 0.0f);
  for (int64_t t = 0; t < T; ++t) weights[t * k] = 1.0f;
  std::vector<float> out(static_cast<size_t>(T * d), NAN);
  kernels::UnpermuteReduce({.rows = rows.data(),
                            .row_of_slot = plan->row_of_slot.data(),
                            .weights = weights.data(),
                            .out = out.data(),
                            .num_tokens = T,
                            .d_model = d,
                            .top_k = k},
                           0, T);
  EXPECT_EQ(out, x);
  // Weights 1 on every slot: k copies of the token.
  std::fill(weights.begin(), weights.end(), 1.0f);
  kernels::UnpermuteReduce({.rows = rows.data(),
                            .row_of_slot = plan->row_of_slot.data(),
                            .weights = weights.data(),
                            .out = out.data(),
                            .num_tokens = T,
                            .d_model = d,
                            .top_k = k},
                           0, T);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(out[i], k * x[i]);
}

TEST(RoutingPlanTest, AllTokensOnOneExpert) {
  std::vector<int32_t> ids(9, 2);
  absl::StatusOr<RoutingPlan> plan = BuildRoutingPlan(ids.data(), 9, 1, 4, -1);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->counts, (std::vector<int64_t>{0, 0, 9, 0}));
  EXPECT_EQ(plan->offsets, (std::vector<int64_t>{0, 0, 0, 9, 9}));
  ExpectPlanConsistent(*plan, ids);
}

TEST(RoutingPlanTest, CapacityKeepsTheFirstSlotsInTokenOrder) {
  // Token-major slots: t0 -> {0,1}, t1 -> {0,2}, t2 -> {1,0}, t3 -> {0,1}.
  std::vector<int32_t> ids = {0, 1, 0, 2, 1, 0, 0, 1};
  absl::StatusOr<RoutingPlan> plan = BuildRoutingPlan(ids.data(), 4, 2, 3, 2);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->demand, (std::vector<int64_t>{4, 3, 1}));
  EXPECT_EQ(plan->counts, (std::vector<int64_t>{2, 2, 1}));
  EXPECT_EQ(plan->dropped_slots, 3);
  // Expert 0 keeps slots 0 (t0) and 2 (t1); drops 5 (t2) and 6 (t3). Expert 1 drops 7.
  EXPECT_EQ(plan->row_of_slot, (std::vector<int64_t>{0, 2, 1, 4, 3, -1, -1, -1}));
}

TEST(RoutingPlanTest, OutOfRangeAndRepeatedIdsAreErrorsNamingTheToken) {
  std::vector<int32_t> ids = {0, 1, 3, 4};
  absl::StatusOr<RoutingPlan> plan = BuildRoutingPlan(ids.data(), 2, 2, 4, -1);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().message(), "topk_ids of token 1 holds expert 4, outside [0, 4)");
  ids = {0, 1, 2, 2};
  plan = BuildRoutingPlan(ids.data(), 2, 2, 4, -1);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().message(), "topk_ids of token 1 names expert 2 twice");
  ids = {-1, 0};
  EXPECT_EQ(BuildRoutingPlan(ids.data(), 1, 2, 4, -1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe::gating
