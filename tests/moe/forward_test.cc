// The CPU forward against the float64 reference, for every family at odd sizes.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>

#include "configs/layer_config.h"
#include "gtest/gtest.h"
#include "moe/moe_layer.h"
#include "tests/support/reference_forward.h"
#include "tests/support/test_inputs.h"

namespace moe {
namespace {

using testing::FamilyConfig;
using testing::RandomHidden;
using testing::ReferenceForward;
using testing::RelativeL2;

const char* const kFamilies[] = {"mixtral", "qwen2_moe",        "qwen3_moe",
                                 "olmoe",   "deepseek_v2",      "deepseek_v3",
                                 "switch",  "geglu_topk_first", "gelu"};

// Runs the layer and the reference and checks outputs, weights and id sets.
void ExpectMatchesReference(const config::LayerConfig& c, int64_t num_tokens, uint64_t seed) {
  SCOPED_TRACE(c.name() + " E=" + std::to_string(c.num_experts()) +
               " k=" + std::to_string(c.top_k()) + " T=" + std::to_string(num_tokens));
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(c, RandomLayerWeights(c, seed));
  ASSERT_TRUE(layer.ok()) << layer.status();
  Tensor hidden = RandomHidden(num_tokens, c.d_model(), seed + 1);
  absl::StatusOr<LayerOutput> out = layer->Forward(hidden);
  ASSERT_TRUE(out.ok()) << out.status();
  testing::ReferenceOutput ref = ReferenceForward(c, layer->weights(), hidden);

  const float* y = out->output.data<float>();
  for (int64_t i = 0; i < out->output.num_elements(); ++i) {
    ASSERT_FALSE(std::isnan(y[i]));
  }
  if (num_tokens > 0) {
    EXPECT_LT(RelativeL2(y, ref.output), 1e-5);
  }
  EXPECT_LT(RelativeL2(out->topk_weights.data<float>(), ref.topk_weights), 1e-5);
  EXPECT_EQ(out->dropped_slots, ref.dropped_slots);
  const int k = c.top_k();
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::vector<int32_t> got(out->topk_ids.data<int32_t>() + t * k,
                             out->topk_ids.data<int32_t>() + (t + 1) * k);
    std::vector<int32_t> want(ref.topk_ids.begin() + t * k, ref.topk_ids.begin() + (t + 1) * k);
    std::sort(got.begin(), got.end());
    std::sort(want.begin(), want.end());
    ASSERT_EQ(got, want) << "token " << t;
  }
}

class FamilyForwardTest : public ::testing::TestWithParam<std::tuple<const char*, int, int>> {};

TEST_P(FamilyForwardTest, MatchesFloat64Reference) {
  const auto [family, num_experts, top_k] = GetParam();
  config::LayerConfig c = FamilyConfig(family, num_experts, top_k);
  absl::Status valid = config::ValidateLayerConfig(c, "test");
  if (!valid.ok()) {
    // Only grouped routing can make a combination invalid: the kept groups hold < top_k.
    EXPECT_NE(valid.message().find("fewer than top_k"), std::string::npos) << valid;
    return;
  }
  for (int64_t num_tokens : {1, 7, 33}) ExpectMatchesReference(c, num_tokens, 17 + num_tokens);
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyForwardTest,
                         ::testing::Combine(::testing::ValuesIn(kFamilies),
                                            ::testing::Values(6, 12), ::testing::Values(1, 2, 4)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param)) + "_E" +
                                  std::to_string(std::get<1>(info.param)) + "_k" +
                                  std::to_string(std::get<2>(info.param));
                         });

TEST(ForwardTest, TopKEqualsNumExpertsForUngroupedFamilies) {
  for (const char* family : {"mixtral", "qwen2_moe", "olmoe", "switch", "gelu"}) {
    ExpectMatchesReference(FamilyConfig(family, 5, 5), 9, 3);
  }
}

TEST(ForwardTest, ZeroTokensGiveEmptyOutputs) {
  config::LayerConfig c = FamilyConfig("deepseek_v3", 8, 2);
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(c, RandomLayerWeights(c, 1));
  ASSERT_TRUE(layer.ok());
  absl::StatusOr<LayerOutput> out = layer->Forward(Tensor::Zeros(DType::kF32, {0, c.d_model()}));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->output.shape(), (std::vector<int64_t>{0, c.d_model()}));
  EXPECT_EQ(out->topk_ids.shape(), (std::vector<int64_t>{0, 2}));
}

TEST(ForwardTest, AllTokensOnOneExpertAndOthersEmpty) {
  config::LayerConfig c = FamilyConfig("mixtral", 7, 1);
  MoeLayerWeights w = RandomLayerWeights(c, 5);
  // Expert 3's router row dominates for all-positive hidden states.
  for (int64_t i = 0; i < c.d_model(); ++i) w.router.data<float>()[3 * c.d_model() + i] = 4.0f;
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(c, std::move(w));
  ASSERT_TRUE(layer.ok());
  Tensor hidden = RandomHidden(11, c.d_model(), 9);
  for (int64_t i = 0; i < hidden.num_elements(); ++i) {
    hidden.data<float>()[i] = std::fabs(hidden.data<float>()[i]) + 0.1f;
  }
  absl::StatusOr<LayerOutput> out = layer->Forward(hidden);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->expert_load, (std::vector<int64_t>{0, 0, 0, 11, 0, 0, 0}));
  testing::ReferenceOutput ref = ReferenceForward(c, layer->weights(), hidden);
  EXPECT_LT(RelativeL2(out->output.data<float>(), ref.output), 1e-5);
}

TEST(ForwardTest, CapacityDropsSlotsInTokenOrder) {
  config::LayerConfig c = FamilyConfig("switch", 4, 1);
  c.mutable_capacity()->set_factor(0.5f);  // capacity = ceil(0.5 * T / 4)
  ExpectMatchesReference(c, 40, 21);
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(c, RandomLayerWeights(c, 21));
  ASSERT_TRUE(layer.ok());
  absl::StatusOr<LayerOutput> out = layer->Forward(RandomHidden(40, c.d_model(), 22));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->dropped_slots, 40 - 4 * 5);  // every expert keeps at most 5 of its slots
}

TEST(ForwardTest, OutputDoesNotDependOnThreadCount) {
  config::LayerConfig c = FamilyConfig("deepseek_v3", 12, 4);
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(c, RandomLayerWeights(c, 8));
  ASSERT_TRUE(layer.ok());
  Tensor hidden = RandomHidden(37, c.d_model(), 4);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  absl::StatusOr<LayerOutput> one = layer->Forward(hidden);
  omp_set_num_threads(2);
  absl::StatusOr<LayerOutput> two = layer->Forward(hidden);
  absl::StatusOr<LayerOutput> again = layer->Forward(hidden);
  omp_set_num_threads(saved);
  ASSERT_TRUE(one.ok() && two.ok() && again.ok());
  const size_t bytes = static_cast<size_t>(one->output.num_bytes());
  EXPECT_EQ(0, std::memcmp(one->output.raw(), two->output.raw(), bytes));
  EXPECT_EQ(0, std::memcmp(two->output.raw(), again->output.raw(), bytes));
}

TEST(ForwardTest, Bf16HiddenStatesAreConvertedExactly) {
  config::LayerConfig c = FamilyConfig("olmoe", 6, 2);
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(c, RandomLayerWeights(c, 2));
  ASSERT_TRUE(layer.ok());
  Tensor f32 = RandomHidden(5, c.d_model(), 3);
  Tensor bf16 = Tensor::Zeros(DType::kBF16, f32.shape());
  for (int64_t i = 0; i < f32.num_elements(); ++i) {
    bf16.data<uint16_t>()[i] = F32ToBf16(f32.data<float>()[i]);
    f32.data<float>()[i] = Bf16ToF32(bf16.data<uint16_t>()[i]);
  }
  absl::StatusOr<LayerOutput> a = layer->Forward(f32);
  absl::StatusOr<LayerOutput> b = layer->Forward(bf16);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(0, std::memcmp(a->output.raw(), b->output.raw(), a->output.num_bytes()));
}

TEST(ForwardTest, NonFiniteHiddenRowIsAnErrorNamingTheToken) {
  config::LayerConfig c = FamilyConfig("mixtral", 8, 2);
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(c, RandomLayerWeights(c, 2));
  ASSERT_TRUE(layer.ok());
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    Tensor hidden = RandomHidden(6, c.d_model(), 3);
    hidden.data<float>()[4 * c.d_model() + 7] = bad;
    absl::StatusOr<LayerOutput> out = layer->Forward(hidden);
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(out.status().message().find("token 4 contains NaN or Inf"), std::string::npos)
        << out.status();
  }
}

TEST(ForwardTest, OverflowingLogitsAreAnErrorNamingTheToken) {
  config::LayerConfig c = FamilyConfig("mixtral", 8, 2);
  MoeLayerWeights w = RandomLayerWeights(c, 2);
  for (int64_t i = 0; i < w.router.num_elements(); ++i) w.router.data<float>()[i] = 1e30f;
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(c, std::move(w));
  ASSERT_TRUE(layer.ok());
  Tensor hidden = RandomHidden(3, c.d_model(), 3);
  for (int64_t i = 0; i < hidden.num_elements(); ++i) hidden.data<float>()[i] = 1e30f;
  absl::StatusOr<LayerOutput> out = layer->Forward(hidden);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("router logits of token 0 are not finite"),
            std::string::npos)
      << out.status();
}

TEST(ForwardTest, WrongHiddenShapeOrDtypeIsAnError) {
  config::LayerConfig c = FamilyConfig("mixtral", 8, 2);
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(c, RandomLayerWeights(c, 2));
  ASSERT_TRUE(layer.ok());
  absl::StatusOr<LayerOutput> out = layer->Forward(Tensor::Zeros(DType::kF32, {3, 41}));
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("hidden_states: expected F32 or BF16 [num_tokens, 40], "
                                        "got F32 [3, 41]"),
            std::string::npos)
      << out.status();
  out = layer->Forward(Tensor::Zeros(DType::kI32, {3, 40}));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ForwardTest, MissingOrMisshapenWeightIsNamed) {
  config::LayerConfig c = FamilyConfig("qwen2_moe", 6, 2);
  MoeLayerWeights w = RandomLayerWeights(c, 2);
  w.shared_gate = Tensor();
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(c, std::move(w));
  ASSERT_FALSE(layer.ok());
  EXPECT_EQ(layer.status().message(), "shared_gate: expected F32 [1, 40], got nothing");
  w = RandomLayerWeights(c, 2);
  w.experts.down = Tensor::Zeros(DType::kF32, {6, 24, 40});
  layer = MoeLayer::Create(c, std::move(w));
  ASSERT_FALSE(layer.ok());
  EXPECT_EQ(layer.status().message(),
            "experts.down: expected F32 [6, 40, 24], got F32 [6, 24, 40]");
}

}  // namespace
}  // namespace moe
