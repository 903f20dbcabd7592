#include "gating/routing_skew.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::gating {
namespace {

using ::testing::HasSubstr;

SkewSpec Spec(const std::string& text) {
  auto spec = ParseSkewSpec(text);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : SkewSpec();
}

std::vector<float> RandomLogits(int64_t tokens, int32_t experts, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  std::vector<float> logits(static_cast<size_t>(tokens * experts));
  for (float& x : logits) x = dist(rng);
  return logits;
}

config::LayerConfig Config(int32_t experts, int32_t top_k) {
  config::LayerConfig c;
  c.set_d_model(8);
  c.set_d_ff(8);
  c.set_num_experts(experts);
  c.set_top_k(top_k);
  return c;
}

TEST(SkewSpecTest, ParsesEveryKind) {
  EXPECT_EQ(Spec("uniform").kind, SkewSpec::Kind::kUniform);
  SkewSpec zipf = Spec("zipf:1.2");
  EXPECT_EQ(zipf.kind, SkewSpec::Kind::kZipf);
  EXPECT_EQ(zipf.zipf_s, 1.2);
  SkewSpec hot = Spec("hot:4:0.5");
  EXPECT_EQ(hot.kind, SkewSpec::Kind::kHot);
  EXPECT_EQ(hot.hot_experts, 4);
  EXPECT_EQ(hot.hot_fraction, 0.5);
  const std::string path = ::testing::TempDir() + "routing_skew_trace.txt";
  std::ofstream(path) << "0 3\n1 1\n";
  SkewSpec trace = Spec("trace:" + path);
  EXPECT_EQ(trace.kind, SkewSpec::Kind::kTrace);
  EXPECT_EQ(trace.trace_loads, (std::vector<double>{3, 1}));
}

TEST(SkewSpecTest, ErrorsNameTheSpec) {
  for (const char* bad : {"", "zipf", "zipf:", "zipf:x", "zipf:-1", "zipf:17", "hot:0:0.5", "hot:2",
                          "hot:2:1.5", "hot:x:0.5", "normal", "trace:"}) {
    auto spec = ParseSkewSpec(bad);
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(spec.status().message()),
                HasSubstr(absl::StrCat("--skew '", bad, "'")));
  }
  auto missing = ParseSkewSpec("trace:/no/such/loads.txt");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/no/such/loads.txt"));
}

TEST(SkewFractionsTest, ZipfFollowsThePowerLawOverASeededPermutation) {
  const std::vector<double> f = *SkewFractions(Spec("zipf:1.5"), 64, 7);
  const std::vector<int32_t> perm = SeededPermutation(64, 7);
  EXPECT_NEAR(std::accumulate(f.begin(), f.end(), 0.0), 1.0, 1e-12);
  for (int i = 0; i < 64; ++i) {
    EXPECT_NEAR(f[static_cast<size_t>(perm[static_cast<size_t>(i)])] / f[perm[0]],
                std::pow(i + 1.0, -1.5), 1e-12);
  }
  EXPECT_EQ(*SkewFractions(Spec("zipf:1.5"), 64, 7), f);  // deterministic
  EXPECT_NE(*SkewFractions(Spec("zipf:1.5"), 64, 8), f);  // the seed matters
}

TEST(SkewFractionsTest, UniformHotAndTrace) {
  EXPECT_EQ(*SkewFractions(Spec("uniform"), 4, 1), (std::vector<double>(4, 0.25)));
  const std::vector<double> hot = *SkewFractions(Spec("hot:2:0.8"), 10, 3);
  const std::vector<int32_t> perm = SeededPermutation(10, 3);
  EXPECT_DOUBLE_EQ(hot[perm[0]], 0.4);
  EXPECT_DOUBLE_EQ(hot[perm[1]], 0.4);
  for (int i = 2; i < 10; ++i) EXPECT_DOUBLE_EQ(hot[perm[i]], 0.2 / 8);
  EXPECT_EQ(*SkewFractions(Spec("hot:3:1"), 3, 1), (std::vector<double>(3, 1.0 / 3)));
  SkewSpec trace;
  trace.kind = SkewSpec::Kind::kTrace;
  trace.text = "trace:t";
  trace.trace_loads = {3, 1};
  EXPECT_EQ(*SkewFractions(trace, 2, 9), (std::vector<double>{0.75, 0.25}));
}

TEST(SkewFractionsTest, RejectsSpecsThatDoNotFitTheLayer) {
  auto hot = SkewFractions(Spec("hot:5:0.5"), 4, 1);
  EXPECT_THAT(std::string(hot.status().message()),
              HasSubstr("--skew 'hot:5:0.5': 5 hot experts of 4"));
  auto all_hot = SkewFractions(Spec("hot:4:0.5"), 4, 1);
  EXPECT_THAT(std::string(all_hot.status().message()), HasSubstr("leave none"));
  SkewSpec trace;
  trace.kind = SkewSpec::Kind::kTrace;
  trace.text = "trace:t";
  trace.trace_loads = {3, 1};
  EXPECT_THAT(std::string(SkewFractions(trace, 3, 1).status().message()),
              HasSubstr("the trace has 2 experts, the layer 3"));
  trace.trace_loads = {0, 0};
  EXPECT_THAT(std::string(SkewFractions(trace, 2, 1).status().message()), HasSubstr("sum to 0"));
}

TEST(SeededPermutationTest, IsAPermutationAndPlatformIndependent) {
  std::vector<int32_t> perm = SeededPermutation(100, 42);
  std::vector<int32_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  for (int32_t i = 0; i < 100; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_EQ(SeededPermutation(100, 42), perm);
  EXPECT_EQ(SeededPermutation(1, 5), (std::vector<int32_t>{0}));
  EXPECT_TRUE(SeededPermutation(0, 5).empty());
  // Pinned: the sequence comes from SplitMix64 only, so it must not change with the platform.
  EXPECT_EQ(SeededPermutation(6, 1), (std::vector<int32_t>{4, 5, 0, 3, 2, 1}));
}

TEST(SelectionProbabilitiesTest, CapsAtOnePerTokenAndSumsToTopK) {
  auto p = SelectionProbabilities({0.7, 0.1, 0.1, 0.1}, 2);
  ASSERT_TRUE(p.ok());
  EXPECT_DOUBLE_EQ((*p)[0], 1.0);
  for (int i = 1; i < 4; ++i) EXPECT_NEAR((*p)[static_cast<size_t>(i)], 1.0 / 3, 1e-15);
  auto uniform = SelectionProbabilities(std::vector<double>(8, 0.125), 3);
  for (double x : *uniform) EXPECT_DOUBLE_EQ(x, 3.0 / 8);
  auto all = SelectionProbabilities({0.5, 0.5, 0.0}, 3);  // k = E: every expert always
  EXPECT_EQ(*all, (std::vector<double>{1, 1, 1}));
  auto zeros = SelectionProbabilities({1.0, 0.0, 0.0}, 2);  // the rest shared equally
  EXPECT_EQ(*zeros, (std::vector<double>{1, 0.5, 0.5}));
  EXPECT_EQ(SelectionProbabilities({0.5, 0.5}, 3).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SelectionProbabilities({0.5, 0.5}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SkewedSelectionTest, DrawsDistinctIdsWithTheTargetFrequencies) {
  const int32_t experts = 16, k = 4;
  const int64_t tokens = 40000;
  auto sel = SkewedSelection::Create(Spec("zipf:1.0"), experts, k, 3);
  ASSERT_TRUE(sel.ok()) << sel.status();
  const std::vector<float> logits = RandomLogits(tokens, experts, 1);
  std::vector<int32_t> ids(static_cast<size_t>(tokens * k));
  std::vector<float> weights(ids.size());
  ASSERT_TRUE(
      sel->Resample(Config(experts, k), logits.data(), tokens, 0, ids.data(), weights.data()).ok());
  std::vector<double> count(experts, 0);
  for (int64_t t = 0; t < tokens; ++t) {
    std::set<int32_t> distinct(ids.begin() + t * k, ids.begin() + (t + 1) * k);
    ASSERT_EQ(distinct.size(), static_cast<size_t>(k)) << "token " << t;
    for (int32_t id : distinct) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, experts);
      ++count[static_cast<size_t>(id)];
    }
  }
  for (int32_t e = 0; e < experts; ++e) {
    const double p = sel->probabilities()[static_cast<size_t>(e)];
    // Binomial: 5 standard deviations.
    EXPECT_NEAR(count[static_cast<size_t>(e)] / tokens, p, 5 * std::sqrt(p * (1 - p) / tokens))
        << "expert " << e;
  }
}

TEST(SkewedSelectionTest, DeterministicAcrossThreadsAndBatchSplits) {
  const int32_t experts = 12, k = 3;
  const int64_t tokens = 501;
  auto sel = SkewedSelection::Create(Spec("hot:2:0.6"), experts, k, 11);
  ASSERT_TRUE(sel.ok());
  const std::vector<float> logits = RandomLogits(tokens, experts, 2);
  auto run = [&](int threads, int64_t first, int64_t count, int32_t* ids, float* w) {
    omp_set_num_threads(threads);
    ASSERT_TRUE(sel->Resample(Config(experts, k), logits.data() + first * experts, count,
                              static_cast<uint64_t>(first), ids + first * k, w + first * k)
                    .ok());
  };
  std::vector<int32_t> ids1(tokens * k), ids2(tokens * k);
  std::vector<float> w1(tokens * k), w2(tokens * k);
  run(1, 0, tokens, ids1.data(), w1.data());
  run(2, 0, 200, ids2.data(), w2.data());
  run(2, 200, tokens - 200, ids2.data(), w2.data());
  EXPECT_EQ(ids1, ids2);
  EXPECT_EQ(w1, w2);
}

TEST(SkewedSelectionTest, WeightsFollowTheRouterFamily) {
  const int32_t experts = 6, k = 2;
  const int64_t tokens = 50;
  const std::vector<float> logits = RandomLogits(tokens, experts, 3);
  auto sel = SkewedSelection::Create(Spec("uniform"), experts, k, 1);
  ASSERT_TRUE(sel.ok());
  std::vector<int32_t> ids(tokens * k);
  std::vector<float> w(tokens * k);
  // Softmax over all experts, weights = scores of the drawn ids, best first.
  config::LayerConfig softmax = Config(experts, k);
  ASSERT_TRUE(sel->Resample(softmax, logits.data(), tokens, 0, ids.data(), w.data()).ok());
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = logits.data() + t * experts;
    double sum = 0;
    for (int32_t e = 0; e < experts; ++e) sum += std::exp(double{row[e]});
    for (int32_t j = 0; j < k; ++j) {
      EXPECT_NEAR(w[t * k + j], std::exp(double{row[ids[t * k + j]]}) / sum, 1e-6);
    }
    EXPECT_GE(w[t * k], w[t * k + 1]);
  }
  // Sigmoid, renormalized, scaled by 2.5: the weights sum to 2.5.
  config::LayerConfig sigmoid = Config(experts, k);
  sigmoid.mutable_router()->set_score_function(config::SCORE_SIGMOID);
  sigmoid.mutable_router()->set_renormalize(true);
  sigmoid.mutable_router()->set_routed_scaling_factor(2.5f);
  ASSERT_TRUE(sel->Resample(sigmoid, logits.data(), tokens, 0, ids.data(), w.data()).ok());
  for (int64_t t = 0; t < tokens; ++t) {
    EXPECT_NEAR(w[t * k] + w[t * k + 1], 2.5, 1e-5);
    const float* row = logits.data() + t * experts;
    const double s0 = 1 / (1 + std::exp(-double{row[ids[t * k]]}));
    const double s1 = 1 / (1 + std::exp(-double{row[ids[t * k + 1]]}));
    EXPECT_NEAR(w[t * k], 2.5 * s0 / (s0 + s1), 1e-5);
  }
  // TOPK_THEN_SCORE: softmax over the two drawn logits, best logit first.
  config::LayerConfig topk_first = Config(experts, k);
  topk_first.mutable_router()->set_score_order(config::TOPK_THEN_SCORE);
  ASSERT_TRUE(sel->Resample(topk_first, logits.data(), tokens, 0, ids.data(), w.data()).ok());
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = logits.data() + t * experts;
    EXPECT_GE(row[ids[t * k]], row[ids[t * k + 1]]);
    EXPECT_NEAR(w[t * k], 1 / (1 + std::exp(double{row[ids[t * k + 1]]} - row[ids[t * k]])), 1e-6);
  }
}

TEST(SkewedSelectionTest, RejectsBadLogitsAndMismatchedConfigs) {
  auto sel = SkewedSelection::Create(Spec("zipf:1"), 4, 2, 1);
  ASSERT_TRUE(sel.ok());
  std::vector<float> logits(12, 0.0f);
  logits[9] = std::nanf("");
  std::vector<int32_t> ids(6);
  std::vector<float> w(6);
  absl::Status s = sel->Resample(Config(4, 2), logits.data(), 3, 0, ids.data(), w.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("token 2"));
  s = sel->Resample(Config(4, 3), logits.data(), 3, 0, ids.data(), w.data());
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("top_k 2 used with a config of num_experts 4, top_k 3"));
  auto too_big = SkewedSelection::Create(Spec("uniform"), 2, 3, 1);
  EXPECT_THAT(std::string(too_big.status().message()),
              HasSubstr("--skew 'uniform': top_k must be in [1, 2]"));
}

}  // namespace
}  // namespace moe::gating
