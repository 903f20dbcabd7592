// Router semantics on hand-made logits: ties, groups, bias, scaling.
#include "gating/router.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/packed_weights.h"

namespace moe::gating {
namespace {

// A router whose logits equal the hidden state: W = identity (d_model = num_experts).
struct IdentityRouter {
  explicit IdentityRouter(int32_t num_experts) : weight(num_experts * num_experts, 0.0f) {
    for (int32_t e = 0; e < num_experts; ++e) weight[e * num_experts + e] = 1.0f;
  }
  std::vector<float> weight;
};

struct Routed {
  absl::Status status;
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

// Whether RouteLogits hands the router the packed weights (the fused block GEMM) or not.
bool g_packed = false;

Routed RouteLogits(const config::LayerConfig& c, const std::vector<float>& logits,
                   const std::vector<float>* bias = nullptr) {
  IdentityRouter router(c.num_experts());
  const kernels::PackedMatrix packed =
      kernels::PackMatrix(router.weight.data(), c.num_experts(), c.num_experts(), c.num_experts(),
                          kernels::WeightFormat::kF32);
  const int64_t T = static_cast<int64_t>(logits.size()) / c.num_experts();
  Routed r;
  r.ids.assign(static_cast<size_t>(T * c.top_k()), -7);
  r.weights.assign(static_cast<size_t>(T * c.top_k()), NAN);
  std::vector<float> workspace(logits.size());
  r.status = Route(
      c,
      {.hidden = logits.data(),
       .router_weight = router.weight.data(),
       .selection_bias = bias ? bias->data() : nullptr,
       .num_tokens = T,
       .packed_router = g_packed ? &packed : nullptr},
      {.topk_ids = r.ids.data(), .topk_weights = r.weights.data(), .logits = workspace.data()});
  return r;
}

config::LayerConfig Config(int32_t num_experts, int32_t top_k) {
  config::LayerConfig c;
  c.set_d_model(num_experts);
  c.set_d_ff(4);
  c.set_num_experts(num_experts);
  c.set_top_k(top_k);
  return c;
}

// Every test runs with the per-token plain GEMM and with the packed block GEMM; identity
// weights make both logits exact.
class RouterTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { g_packed = GetParam(); }
  void TearDown() override { g_packed = false; }
};

TEST_P(RouterTest, TiesGoToLowerExpertIndex) {
  config::LayerConfig c = Config(6, 3);
  Routed r = RouteLogits(c, {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f,  // all equal
                             0, 2, 1, 2, 1, 2});                  // three tied best
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1, 2, 1, 3, 5}));
  for (int j = 0; j < 3; ++j) EXPECT_FLOAT_EQ(r.weights[j], 1.0f / 6.0f);
}

TEST_P(RouterTest, SoftmaxThenTopKRenormalizesWhenAsked) {
  config::LayerConfig c = Config(4, 2);
  Routed plain = RouteLogits(c, {1, 3, 2, 0});
  ASSERT_TRUE(plain.status.ok());
  const double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0) + 1.0;
  EXPECT_EQ(plain.ids, (std::vector<int32_t>{1, 2}));
  EXPECT_NEAR(plain.weights[0], std::exp(3.0) / z, 1e-7);
  EXPECT_NEAR(plain.weights[1], std::exp(2.0) / z, 1e-7);
  c.mutable_router()->set_renormalize(true);
  Routed renorm = RouteLogits(c, {1, 3, 2, 0});
  EXPECT_NEAR(renorm.weights[0], std::exp(3.0) / (std::exp(3.0) + std::exp(2.0)), 1e-7);
  EXPECT_NEAR(renorm.weights[0] + renorm.weights[1], 1.0, 1e-7);
}

TEST_P(RouterTest, TopKThenSoftmaxNormalizesOverTheSelected) {
  config::LayerConfig c = Config(4, 2);
  c.mutable_router()->set_score_order(config::TOPK_THEN_SCORE);
  Routed r = RouteLogits(c, {1, 3, 2, 0});
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 2}));
  EXPECT_NEAR(r.weights[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-7);
}

TEST_P(RouterTest, DeepSeekV3GroupsBiasAndScaling) {
  // 8 experts in 4 groups of 2, keep 2 groups, top-2. Sigmoid scores; the bias steers
  // selection but the weights use unbiased scores.
  config::LayerConfig c = Config(8, 2);
  config::RouterConfig* r = c.mutable_router();
  r->set_score_function(config::SCORE_SIGMOID);
  r->set_num_groups(4);
  r->set_topk_groups(2);
  r->set_group_score(config::GROUP_SCORE_TOP2_SUM);
  r->set_selection_bias(true);
  r->set_renormalize(true);
  r->set_routed_scaling_factor(2.5f);
  // Expert 0 has the best single logit, but group 0's top-2 sum is low; groups 1 and 3
  // win by their sums. The bias lifts expert 7 above expert 6.
  std::vector<float> logits = {4, -4, 1, 1, -3, -3, 2, 1.5f};
  std::vector<float> bias = {0, 0, 0, 0, 0, 0, 0, 0.2f};
  Routed out = RouteLogits(c, logits, &bias);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.ids, (std::vector<int32_t>{7, 6}));
  const double s7 = 1 / (1 + std::exp(-1.5)), s6 = 1 / (1 + std::exp(-2.0));
  EXPECT_NEAR(out.weights[0], 2.5 * s7 / (s7 + s6), 1e-6);
  EXPECT_NEAR(out.weights[1], 2.5 * s6 / (s7 + s6), 1e-6);
}

TEST_P(RouterTest, DeepSeekV2GroupsRankedByMax) {
  config::LayerConfig c = Config(6, 2);
  c.mutable_router()->set_num_groups(3);
  c.mutable_router()->set_topk_groups(1);
  c.mutable_router()->set_group_score(config::GROUP_SCORE_MAX);
  // Group max: g0 = 3, g1 = 2.9, g2 = 1. Only group 0 is kept: ids 0 and 1.
  Routed r = RouteLogits(c, {3, -5, 2.9f, 2.8f, 1, 0});
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
}

TEST_P(RouterTest, NanAndInfRowsAreErrorsWithInRangeIds) {
  config::LayerConfig c = Config(4, 2);
  for (float bad : {NAN, INFINITY}) {
    Routed r = RouteLogits(c, {1, 2, 3, 4, 0, bad, 0, 0});
    ASSERT_FALSE(r.status.ok());
    EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status.message(), "hidden_states row of token 1 contains NaN or Inf");
    // Even the bad token's ids are distinct and in range.
    EXPECT_EQ(r.ids[2], 0);
    EXPECT_EQ(r.ids[3], 1);
  }
}

TEST_P(RouterTest, MissingBiasIsAnError) {
  config::LayerConfig c = Config(4, 2);
  c.mutable_router()->set_selection_bias(true);
  Routed r = RouteLogits(c, {1, 2, 3, 4});
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Gemm, RouterTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Packed" : "Plain"; });

}  // namespace
}  // namespace moe::gating
