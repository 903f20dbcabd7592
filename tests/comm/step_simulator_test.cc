#include "comm/step_simulator.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::comm {
namespace {

using ::testing::HasSubstr;

constexpr double kUs = 1e-6;

TEST(StepSimulatorTest, OneRankIsComputeOnly) {
  const StepShape shape{.num_ranks = 1, .tokens_per_rank = 100, .top_k = 2, .d_model = 4};
  const ComputeModel compute{.route_us_per_token = 0.5,
                             .expert_fixed_us = 10,
                             .expert_us_per_row = 0.25,
                             .combine_us_per_token = 0.1};
  auto b = SimulateStep(shape, {200}, LinkModel{}, compute);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_DOUBLE_EQ(b->route_s, 50 * kUs);
  EXPECT_EQ(b->dispatch.max_s, 0);
  EXPECT_EQ(b->combine.max_s, 0);
  EXPECT_DOUBLE_EQ(b->expert.max_s, 60 * kUs);  // 10 + 0.25 * 200
  EXPECT_DOUBLE_EQ(b->combine_local_s, 10 * kUs);
  EXPECT_DOUBLE_EQ(b->total_s, 120 * kUs);
  EXPECT_DOUBLE_EQ(b->imbalance_s, 0);
  EXPECT_DOUBLE_EQ(b->rows_max_over_mean, 1);
}

TEST(StepSimulatorTest, TwoRanksInOneNodeByHand) {
  // k = 1, d_model 4, F32: a token row is 4 (header) + 16 bytes, a result row 16 bytes.
  // q = 1/2 per rank: each source sends 100 * 1/2 * 20 = 1000 bytes to the other rank and
  // receives 1000; results: 100 * 1/2 * 16 = 800 bytes each way.
  const StepShape shape{.num_ranks = 2, .tokens_per_rank = 100, .top_k = 1, .d_model = 4};
  const LinkModel links{.ranks_per_node = 2,
                        .intra_gbps = 1e-6,
                        .inter_gbps = 1,
                        .latency_us = 5};  // 1000 bytes/s inside the node
  auto b = SimulateStep(shape, {100, 100}, links, ComputeModel{});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NEAR(b->dispatch.max_s, 1.0 + 5 * kUs, 1e-12);  // 1000 B at 1000 B/s, one hop
  EXPECT_NEAR(b->dispatch.mean_s, 1.0 + 5 * kUs, 1e-12);
  EXPECT_DOUBLE_EQ(b->dispatch.max_rank_bytes, 1000);
  EXPECT_NEAR(b->combine.max_s, 0.8 + 5 * kUs, 1e-12);
  EXPECT_NEAR(b->imbalance_s, 0, 1e-15);
}

TEST(StepSimulatorTest, AcrossNodesUsesTheInterLinkAndTwoHops) {
  const StepShape shape{.num_ranks = 2, .tokens_per_rank = 100, .top_k = 1, .d_model = 4};
  const LinkModel links{.ranks_per_node = 1,
                        .intra_gbps = 1,
                        .inter_gbps = 2e-6,
                        .latency_us = 5};  // 2000 bytes/s across nodes
  auto b = SimulateStep(shape, {100, 100}, links, ComputeModel{});
  ASSERT_TRUE(b.ok());
  EXPECT_NEAR(b->dispatch.max_s, 0.5 + 10 * kUs, 1e-12);
}

TEST(StepSimulatorTest, TopKDestinationsCountOncePerToken) {
  // 4 ranks in one node, k = 2, uniform q = 1/4: a token row goes to a given rank with
  // probability 1 - (3/4)^2 = 7/16; rank 0 sends to 3 others: 3 * 64 * 7/16 * (8 + 32).
  const StepShape shape{.num_ranks = 4, .tokens_per_rank = 64, .top_k = 2, .d_model = 8};
  const LinkModel links{
      .ranks_per_node = 4, .intra_gbps = 1e-9, .inter_gbps = 1, .latency_us = 0};  // 1 byte/s
  auto b = SimulateStep(shape, {32, 32, 32, 32}, links, ComputeModel{});
  ASSERT_TRUE(b.ok());
  EXPECT_NEAR(b->dispatch.max_s, 3 * 64 * 7.0 / 16 * 40, 1e-6);
  EXPECT_NEAR(b->combine.max_s, 3 * 64 * 2 * 0.25 * 32, 1e-6);
}

TEST(StepSimulatorTest, ImbalanceCostsTheSlowestRank) {
  const StepShape shape{.num_ranks = 4, .tokens_per_rank = 10, .top_k = 1, .d_model = 4};
  const ComputeModel compute{.expert_fixed_us = 1, .expert_us_per_row = 1};
  const LinkModel fast{.ranks_per_node = 4, .intra_gbps = 1e9, .inter_gbps = 1e9, .latency_us = 0};
  auto skewed = SimulateStep(shape, {40, 0, 0, 0}, fast, compute);
  ASSERT_TRUE(skewed.ok());
  EXPECT_DOUBLE_EQ(skewed->expert.max_s, 41 * kUs);
  EXPECT_DOUBLE_EQ(skewed->expert.mean_s, 41 * kUs / 4);
  EXPECT_DOUBLE_EQ(skewed->rows_max_over_mean, 4);
  EXPECT_NEAR(skewed->imbalance_s, (41 - 11) * kUs, 1e-12);  // vs 10 rows on every rank
}

TEST(StepSimulatorTest, RunsAt4096Ranks) {
  const StepShape shape{.num_ranks = 4096, .tokens_per_rank = 128, .top_k = 8, .d_model = 7168};
  std::vector<double> rows(4096, 1024);
  rows[17] = 4096;
  auto b = SimulateStep(shape, rows, LinkModel{}, ComputeModel{.expert_us_per_row = 0.1});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_GT(b->imbalance_s, 0);
  EXPECT_GT(b->dispatch.max_s, b->dispatch.mean_s);
}

TEST(StepSimulatorTest, RejectsBadInputsNamingTheField) {
  const StepShape ok{.num_ranks = 2, .tokens_per_rank = 1, .top_k = 1, .d_model = 1};
  auto error = [](StepShape s, std::vector<double> rows, LinkModel l, ComputeModel c) {
    return std::string(SimulateStep(s, rows, l, c).status().message());
  };
  StepShape bad = ok;
  bad.num_ranks = 4097;
  EXPECT_THAT(error(bad, {}, {}, {}), HasSubstr("num_ranks: expected 1 to 4096, got 4097"));
  EXPECT_THAT(error(ok, {1}, {}, {}), HasSubstr("rank_rows: has 1 entries, expected 2"));
  EXPECT_THAT(error(ok, {1, -1}, {}, {}), HasSubstr("rank_rows[1]: -1"));
  EXPECT_THAT(error(ok, {1, 1}, {.intra_gbps = 0}, {}), HasSubstr("links"));
  EXPECT_THAT(error(ok, {1, 1}, {}, {.expert_us_per_row = -1}), HasSubstr("compute"));
  bad = ok;
  bad.d_model = 0;
  EXPECT_THAT(error(bad, {1, 1}, {}, {}), HasSubstr("shape"));
}

TEST(FitAffineTest, RecoversALineAndHandlesOnePoint) {
  auto fit = FitAffine({1, 2, 3, 4}, {5, 7, 9, 11});
  ASSERT_TRUE(fit.ok());
  EXPECT_NEAR(fit->intercept, 3, 1e-12);
  EXPECT_NEAR(fit->slope, 2, 1e-12);
  auto one = FitAffine({4}, {10});
  EXPECT_DOUBLE_EQ(one->slope, 2.5);
  EXPECT_DOUBLE_EQ(one->intercept, 0);
  auto same_x = FitAffine({2, 2}, {3, 5});
  EXPECT_DOUBLE_EQ(same_x->slope, 2);
  EXPECT_THAT(std::string(FitAffine({}, {}).status().message()), HasSubstr("affine fit"));
  EXPECT_THAT(std::string(FitAffine({1, -1}, {1, 1}).status().message()), HasSubstr("point 1"));
}

}  // namespace
}  // namespace moe::comm
