// CPU kernels against plain loops: matmul, top-k, activations.
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/topk.h"

namespace moe::kernels {
namespace {

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(MatmulTest, MatchesDoubleLoopsAtOddSizes) {
  for (auto [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1}, {3, 5, 7}, {5, 17, 33}, {9, 3, 100}, {16, 16, 16}, {4, 2, 0}}) {
    std::vector<float> a = Random(static_cast<size_t>(m * k), 1);
    std::vector<float> b = Random(static_cast<size_t>(n * k), 2);
    std::vector<float> c(static_cast<size_t>(m * n), NAN);
    MatmulNT({.a = a.data(),
              .lda = k,
              .b = b.data(),
              .ldb = k,
              .c = c.data(),
              .ldc = n,
              .m = m,
              .n = n,
              .k = k});
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double want = 0;
        for (int64_t p = 0; p < k; ++p) want += double{a[i * k + p]} * b[j * k + p];
        EXPECT_NEAR(c[i * n + j], want, 1e-5 * (1 + std::fabs(want))) << m << "x" << n << "x" << k;
      }
    }
  }
}

TEST(MatmulTest, RowResultDoesNotDependOnOtherRows) {
  const int64_t k = 77, n = 5;
  std::vector<float> a = Random(7 * k, 3), b = Random(n * k, 4);
  std::vector<float> all(7 * n), one(n);
  MatmulNT({.a = a.data(),
            .lda = k,
            .b = b.data(),
            .ldb = k,
            .c = all.data(),
            .ldc = n,
            .m = 7,
            .n = n,
            .k = k});
  for (int64_t i = 0; i < 7; ++i) {
    MatmulNT({.a = a.data() + i * k,
              .lda = k,
              .b = b.data(),
              .ldb = k,
              .c = one.data(),
              .ldc = n,
              .m = 1,
              .n = n,
              .k = k});
    for (int64_t j = 0; j < n; ++j) {
      EXPECT_EQ(one[j], all[i * n + j]);
      EXPECT_EQ(one[j], DotProduct(a.data() + i * k, b.data() + j * k, k));
    }
  }
}

TEST(TopKTest, BestFirstTiesToLowerIndexAndMinusInfLast) {
  std::vector<float> s = {1, 3, 3, -INFINITY, 2, 3};
  std::vector<int32_t> ids(4);
  TopK(s.data(), 6, 4, ids.data());
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 2, 5, 4}));
  std::vector<float> inf = {-INFINITY, 0, -INFINITY};
  std::vector<int32_t> two(2);
  TopK(inf.data(), 3, 2, two.data());
  EXPECT_EQ(two, (std::vector<int32_t>{1, 0}));
  std::vector<int32_t> all(6);
  TopK(s.data(), 6, 6, all.data());
  EXPECT_EQ(all, (std::vector<int32_t>{1, 2, 5, 4, 0, 3}));
}

TEST(ActivationTest, MatchesDefinitions) {
  std::vector<float> x = {-3, -0.5f, 0, 0.5f, 3};
  for (ActivationKind kind :
       {ActivationKind::kSilu, ActivationKind::kGelu, ActivationKind::kRelu}) {
    std::vector<float> y = x;
    ApplyActivation(kind, y.data(), static_cast<int64_t>(y.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      const double v = x[i];
      const double want = kind == ActivationKind::kSilu ? v / (1 + std::exp(-v))
                          : kind == ActivationKind::kGelu
                              ? 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)))
                              : std::max(v, 0.0);
      EXPECT_NEAR(y[i], want, 1e-6);
    }
  }
  std::vector<float> gate = {1, -1}, up = {2, 3};
  ApplyGatedActivation(ActivationKind::kSilu, gate.data(), up.data(), 2);
  EXPECT_NEAR(gate[0], 2 / (1 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(gate[1], 3 * -1 / (1 + std::exp(1.0)), 1e-6);
}

// SwiGLU on every ISA this CPU has (AVX-512 runs its own exp) against float64, over the whole
// useful range, the saturating ends, zero, infinities and NaN, at a length with a partial
// vector.
TEST(ActivationTest, SwigluIsWithinAFewUlpOfFloat64OnEveryIsa) {
  std::vector<float> x;
  for (float v = -110.0f; v <= 110.0f; v += 0.0137f) x.push_back(v);
  for (float v :
       {0.0f, -0.0f, 1e-30f, -1e-30f, 88.7f, -88.7f, 200.0f, -200.0f, INFINITY, -INFINITY, NAN}) {
    x.push_back(v);
  }
  for (CpuIsa isa : RunnableCpuIsas()) {
    ASSERT_TRUE(SetCpuIsa(CpuIsaName(isa)).ok());
    std::vector<float> gate = x;
    std::vector<float> up(x.size(), 1.5f);
    ApplyGatedActivation(ActivationKind::kSilu, gate.data(), up.data(),
                         static_cast<int64_t>(gate.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      const double v = x[i];
      const double want = v / (1 + std::exp(-v)) * 1.5;
      if (v == -INFINITY) {  // -inf / inf: NaN on every ISA (the limit would be 0)
        EXPECT_TRUE(std::isnan(gate[i])) << CpuIsaName(isa);
        continue;
      }
      if (std::isnan(v)) {
        EXPECT_TRUE(std::isnan(gate[i])) << CpuIsaName(isa);
        continue;
      }
      if (std::isinf(want)) {
        EXPECT_EQ(gate[i], want) << CpuIsaName(isa);
        continue;
      }
      // 4 ulp of the result, or 1e-35 absolute where exp(-x) overflows (x < -88.7).
      const double tol = std::max(4 * std::abs(want) * 0x1p-23, 1e-35);
      EXPECT_NEAR(gate[i], want, tol) << CpuIsaName(isa) << " x = " << v;
    }
  }
  ASSERT_TRUE(SetCpuIsa("auto").ok());
}

}  // namespace
}  // namespace moe::kernels
