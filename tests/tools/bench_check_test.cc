// The #wrong count of `moe bench` (tools/bench_check.cc, compiled into this test): zero on
// the layer's real output for every activation, drops and shared experts; it catches a
// perturbed element, NaN and bad routing.
#include "tools/bench_check.h"

#include <cmath>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/packed_gemm.h"
#include "moe/layer_weights.h"
#include "moe/moe_layer.h"

namespace moe::tools {
namespace {

config::LayerConfig Config(const std::string& text) {
  absl::StatusOr<config::LayerConfig> c = config::ParseLayerConfig(text, "test");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : config::LayerConfig();
}

Tensor Hidden(int64_t num_tokens, int64_t d_model, uint64_t seed) {
  Tensor t = Tensor::Zeros(DType::kF32, {num_tokens, d_model});
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t i = 0; i < t.num_elements(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

struct LayerRun {
  config::LayerConfig config;
  MoeLayerWeights weights;
  Tensor hidden;
  LayerOutput out;
};

LayerRun Forward(const std::string& config_text, int64_t num_tokens) {
  LayerRun run;
  run.config = Config(config_text);
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(run.config, RandomLayerWeights(run.config, 3));
  EXPECT_TRUE(layer.ok()) << layer.status();
  run.hidden = Hidden(num_tokens, run.config.d_model(), 4);
  absl::StatusOr<LayerOutput> out = layer->Forward(run.hidden);
  EXPECT_TRUE(out.ok()) << out.status();
  run.out = std::move(*out);
  run.weights = RandomLayerWeights(run.config, 3);
  return run;
}

CheckResult Check(const LayerRun& run, int64_t max_tokens = 16) {
  absl::StatusOr<CheckResult> r =
      CheckLayerOutput(run.config, run.weights, run.hidden, run.out, max_tokens);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : CheckResult();
}

constexpr char kSwiglu[] =
    "d_model: 24 d_ff: 20 num_experts: 7 top_k: 3 router { renormalize: true }";

TEST(BenchCheckTest, LayerOutputHasNoWrongElementsForEveryActivation) {
  for (const char* activation :
       {"ACTIVATION_SWIGLU", "ACTIVATION_GEGLU", "ACTIVATION_GELU", "ACTIVATION_RELU"}) {
    LayerRun run = Forward(
        absl::StrCat("d_model: 24 d_ff: 20 num_experts: 7 top_k: 3 activation: ", activation), 40);
    CheckResult r = Check(run);
    EXPECT_EQ(r.wrong(), 0) << activation << ": " << r.first_problem;
    EXPECT_EQ(r.checked_tokens, 16);
    EXPECT_EQ(r.checked_elements, 16 * 24);
    EXPECT_GT(r.ref_rms, 0.0);
  }
}

// Every weight format on every ISA this CPU has: the layer's output has no wrong element when
// checked against the values its weights stand for, with its inputs rounded as its kernels
// round them (CheckOptionsFor).
TEST(BenchCheckTest, QuantizedLayersHaveNoWrongElementsOnEveryIsa) {
  const config::LayerConfig c = Config(
      "d_model: 96 d_ff: 80 num_experts: 6 top_k: 2 router { renormalize: true } "
      "shared_experts { count: 1 d_ff: 32 }");
  const auto weights = std::make_shared<const MoeLayerWeights>(RandomLayerWeights(c, 5));
  const Tensor hidden = Hidden(37, c.d_model(), 6);
  for (kernels::CpuIsa isa : kernels::RunnableCpuIsas()) {
    ASSERT_TRUE(kernels::SetCpuIsa(kernels::CpuIsaName(isa)).ok());
    for (kernels::WeightFormat f : {kernels::WeightFormat::kBF16, kernels::WeightFormat::kInt8,
                                    kernels::WeightFormat::kInt4}) {
      absl::StatusOr<MoeLayer> layer =
          MoeLayer::Create(c, weights, {.experts = {.weight_format = f}});
      ASSERT_TRUE(layer.ok()) << layer.status();
      absl::StatusOr<LayerOutput> out = layer->Forward(hidden);
      ASSERT_TRUE(out.ok()) << out.status();
      const std::unique_ptr<MoeLayerWeights> effective = EffectiveLayerWeights(*layer);
      ASSERT_NE(effective, nullptr);
      absl::StatusOr<CheckResult> r =
          CheckLayerOutput(c, *effective, hidden, *out, 37, CheckOptionsFor(*layer));
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->wrong(), 0) << kernels::CpuIsaName(isa) << " " << kernels::WeightFormatName(f)
                               << ": " << r->first_problem;
    }
  }
  ASSERT_TRUE(kernels::SetCpuIsa("auto").ok());
}

// The BF16 kernels of AVX-512 and AMX, and AMX's INT8 kernels, round their inputs to BF16: a
// check that did not model it would count wrong elements (so the model is what makes the count
// 0, not a loose bound).
TEST(BenchCheckTest, Bf16InputRoundingIsModelledNotTolerated) {
  if (kernels::GemmInputFor(kernels::WeightFormat::kBF16, kernels::ActiveCpuIsa()) !=
      kernels::GemmInput::kBF16) {
    GTEST_SKIP() << "the " << kernels::CpuIsaName(kernels::ActiveCpuIsa())
                 << " BF16 kernels read F32 inputs (BF16 inputs need avx512 or amx)";
  }
  for (kernels::WeightFormat format :
       {kernels::WeightFormat::kBF16, kernels::WeightFormat::kInt8}) {
    SCOPED_TRACE(kernels::WeightFormatName(format));
    // INT8 weights take BF16 inputs on amx only.
    if (kernels::GemmInputFor(format, kernels::ActiveCpuIsa()) != kernels::GemmInput::kBF16) {
      continue;
    }
    const config::LayerConfig c = Config(kSwiglu);
    const auto weights = std::make_shared<const MoeLayerWeights>(RandomLayerWeights(c, 7));
    const Tensor hidden = Hidden(40, c.d_model(), 8);
    absl::StatusOr<MoeLayer> layer =
        MoeLayer::Create(c, weights, {.experts = {.weight_format = format}});
    ASSERT_TRUE(layer.ok());
    absl::StatusOr<LayerOutput> out = layer->Forward(hidden);
    ASSERT_TRUE(out.ok());
    const std::unique_ptr<MoeLayerWeights> effective = EffectiveLayerWeights(*layer);
    const CheckOptions modelled = CheckOptionsFor(*layer);
    EXPECT_EQ(modelled.activations, kernels::GemmInput::kBF16);
    absl::StatusOr<CheckResult> good = CheckLayerOutput(c, *effective, hidden, *out, 40, modelled);
    ASSERT_TRUE(good.ok());
    EXPECT_EQ(good->wrong(), 0) << good->first_problem;
    absl::StatusOr<CheckResult> unmodelled = CheckLayerOutput(c, *effective, hidden, *out, 40, {});
    ASSERT_TRUE(unmodelled.ok());
    EXPECT_GT(unmodelled->wrong(), 0);
  }
}

TEST(BenchCheckTest, DropsSharedExpertsAndScalingAreFollowed) {
  LayerRun run = Forward(
      "d_model: 16 d_ff: 12 num_experts: 5 top_k: 2 router { score_function: SCORE_SIGMOID "
      "renormalize: true routed_scaling_factor: 2.5 selection_bias: true } shared_experts { "
      "count: 2 d_ff: 8 sigmoid_gate: true } capacity { policy: DROP_IN_TOKEN_ORDER factor: 0.5 }",
      33);
  ASSERT_GT(run.out.dropped_slots, 0);
  CheckResult r = Check(run, 1000);
  EXPECT_EQ(r.wrong(), 0) << r.first_problem;
  EXPECT_EQ(r.checked_tokens, 33);
}

TEST(BenchCheckTest, OnePerturbedElementOfACheckedTokenIsOneWrong) {
  LayerRun run = Forward(kSwiglu, 40);
  CheckResult clean = Check(run);
  ASSERT_EQ(clean.wrong(), 0) << clean.first_problem;
  float* out = run.out.output.data<float>();
  out[39 * 24 + 5] += static_cast<float>(1e-2 * clean.ref_rms);  // token 39 is always checked
  CheckResult r = Check(run);
  EXPECT_EQ(r.wrong_elements, 1);
  EXPECT_NE(r.first_problem.find("token 39 element 5"), std::string::npos) << r.first_problem;
}

TEST(BenchCheckTest, RoundingSizedDifferencesAreNotWrong) {
  LayerRun run = Forward(kSwiglu, 40);
  float* out = run.out.output.data<float>();
  for (int64_t i = 0; i < run.out.output.num_elements(); ++i) out[i] *= 1.0f + 1e-6f;
  EXPECT_EQ(Check(run).wrong(), 0);
}

TEST(BenchCheckTest, NanIsWrong) {
  LayerRun run = Forward(kSwiglu, 40);
  run.out.output.data<float>()[0] = NAN;
  EXPECT_EQ(Check(run).wrong_elements, 1);
}

TEST(BenchCheckTest, UncheckedTokensAreNotCompared) {
  LayerRun run = Forward(kSwiglu, 40);
  run.out.output.data<float>()[1 * 24] += 100.0f;  // token 1: not among the 16 evenly spaced
  EXPECT_EQ(Check(run).wrong(), 0);
  EXPECT_EQ(Check(run, 40).wrong_elements, 1);
  EXPECT_EQ(Check(run, 0).checked_tokens, 0);
}

TEST(BenchCheckTest, BadRoutingSlotsAreWrong) {
  LayerRun run = Forward(kSwiglu, 10);
  int32_t* ids = run.out.topk_ids.data<int32_t>();
  const int32_t saved = ids[4];
  ids[4] = 7;  // out of range
  EXPECT_GE(Check(run).bad_slots, 1);
  ids[4] = ids[3];  // repeated within token 1
  EXPECT_GE(Check(run).bad_slots, 1);
  ids[4] = saved;
  run.out.topk_weights.data<float>()[4] = -0.5f;
  EXPECT_GE(Check(run).bad_slots, 1);
}

TEST(BenchCheckTest, RenormalizedWeightsMustSumToTheScalingFactor) {
  LayerRun run = Forward(kSwiglu, 10);
  run.out.topk_weights.data<float>()[0] *= 0.5f;
  CheckResult r = Check(run);
  EXPECT_EQ(r.bad_slots, 3);
  EXPECT_NE(r.first_problem.find("token 0"), std::string::npos) << r.first_problem;
}

TEST(BenchCheckTest, ShapeMismatchIsAnError) {
  LayerRun run = Forward(kSwiglu, 10);
  Tensor narrow = Hidden(10, 12, 1);
  EXPECT_FALSE(CheckLayerOutput(run.config, run.weights, narrow, run.out, 16).ok());
}

}  // namespace
}  // namespace moe::tools
