// FP8 e4m3 encode/decode and the DeepSeek-V3 block scales on the CPU.
#if MOE_HAVE_CUDA

#include "kernels/cuda/fp8_block_scale.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace moe::kernels::cuda {
namespace {

bool IsNanCode(int code) { return (code & 0x7F) == 0x7F; }

TEST(E4M3Test, DecodesKnownCodes) {
  EXPECT_EQ(E4M3ToF32(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(E4M3ToF32(0x80)));
  EXPECT_EQ(E4M3ToF32(0x38), 1.0f);    // exponent 7 = bias
  EXPECT_EQ(E4M3ToF32(0x7E), 448.0f);  // largest finite
  EXPECT_EQ(E4M3ToF32(0xFE), -448.0f);
  EXPECT_EQ(E4M3ToF32(0x08), 0.015625f);         // smallest normal 2^-6
  EXPECT_EQ(E4M3ToF32(0x01), 0.001953125f);      // smallest subnormal 2^-9
  EXPECT_EQ(E4M3ToF32(0x07), 7 * 0.001953125f);  // largest subnormal
  EXPECT_EQ(E4M3ToF32(0x3C), 1.5f);
  EXPECT_TRUE(std::isnan(E4M3ToF32(0x7F)));
  EXPECT_TRUE(std::isnan(E4M3ToF32(0xFF)));
}

TEST(E4M3Test, EveryCodeRoundTripsExactly) {
  for (int code = 0; code < 256; ++code) {
    const float value = E4M3ToF32(static_cast<uint8_t>(code));
    if (IsNanCode(code)) {
      EXPECT_TRUE(std::isnan(value)) << code;
      EXPECT_EQ(F32ToE4M3(value), code) << "NaN keeps its sign";
      continue;
    }
    EXPECT_EQ(F32ToE4M3(value), code) << "code " << code << " value " << value;
  }
}

TEST(E4M3Test, DecodedValuesAreOrderedAndDistinct) {
  float previous = -1.0f;
  for (int code = 0; code < 0x7F; ++code) {
    const float value = E4M3ToF32(static_cast<uint8_t>(code));
    EXPECT_GT(value, previous) << code;
    EXPECT_EQ(E4M3ToF32(static_cast<uint8_t>(code | 0x80)), -value);
    previous = value;
  }
}

// The nearest finite e4m3 value by brute force, ties to the even code.
uint8_t NearestByBruteForce(float x) {
  int best = 0;
  double best_error = INFINITY;
  for (int code = 0; code < 0x7F; ++code) {
    const double error = std::fabs(double{std::fabs(x)} - E4M3ToF32(static_cast<uint8_t>(code)));
    if (error < best_error || (error == best_error && code % 2 == 0)) {
      best = code;
      best_error = error;
    }
  }
  return static_cast<uint8_t>(best | (std::signbit(x) ? 0x80 : 0));
}

TEST(E4M3Test, RoundsToNearestEvenAgainstBruteForce) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<float> log_magnitude(-12.0f, 9.0f);
  for (int i = 0; i < 20000; ++i) {
    float x = std::exp2(log_magnitude(rng));
    if (x > kE4M3Max) continue;
    if (i % 2) x = -x;
    ASSERT_EQ(F32ToE4M3(x), NearestByBruteForce(x)) << x;
  }
  // Exact midpoints between neighbouring codes go to the even code.
  for (int code = 0; code < 0x7E; ++code) {
    const double lo = E4M3ToF32(static_cast<uint8_t>(code));
    const double hi = E4M3ToF32(static_cast<uint8_t>(code + 1));
    const float mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(mid, (lo + hi) / 2) << "midpoints are floats";
    EXPECT_EQ(F32ToE4M3(mid), code % 2 == 0 ? code : code + 1) << "midpoint of " << code;
  }
}

TEST(E4M3Test, SaturatesAboveTheLargestFinite) {
  EXPECT_EQ(F32ToE4M3(448.0f), 0x7E);
  EXPECT_EQ(F32ToE4M3(464.0f), 0x7E) << "the midpoint to the missing 480 saturates";
  EXPECT_EQ(F32ToE4M3(1e6f), 0x7E);
  EXPECT_EQ(F32ToE4M3(-1e6f), 0xFE);
  EXPECT_EQ(F32ToE4M3(std::numeric_limits<float>::infinity()), 0x7E);
  EXPECT_EQ(F32ToE4M3(-std::numeric_limits<float>::infinity()), 0xFE);
}

TEST(E4M3Test, NanAndSignedZeroAndUnderflow) {
  EXPECT_EQ(F32ToE4M3(std::numeric_limits<float>::quiet_NaN()), 0x7F);
  EXPECT_EQ(F32ToE4M3(-std::numeric_limits<float>::quiet_NaN()), 0xFF);
  EXPECT_EQ(F32ToE4M3(0.0f), 0x00);
  EXPECT_EQ(F32ToE4M3(-0.0f), 0x80);
  EXPECT_EQ(F32ToE4M3(0.0009765625f), 0x00) << "2^-10, half the smallest subnormal: to even 0";
  EXPECT_EQ(F32ToE4M3(0.0009766f), 0x01) << "just above the midpoint";
  EXPECT_EQ(F32ToE4M3(1e-30f), 0x00);
}

std::vector<float> Random(size_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// |x - dequant(quant(x))| <= max(|x| * 2^-4, scale * 2^-10): half an ulp of 3 mantissa bits for
// normals, half the subnormal step below 2^-6 * scale.
void ExpectWithinE4M3Error(const std::vector<float>& x, const std::vector<float>& back,
                           const std::vector<float>& element_scale) {
  for (size_t i = 0; i < x.size(); ++i) {
    const double bound =
        std::max(std::fabs(double{x[i]}) * 0.0625, double{element_scale[i]} * 0.0009765625);
    ASSERT_LE(std::fabs(double{x[i]} - back[i]), bound * (1 + 1e-6)) << i;
  }
}

TEST(BlockScaleTest, ActivationBlocksAreOneByOneHundredTwentyEight) {
  const int64_t rows = 5, k = 300;  // k not a multiple of 128: a 44-column last block
  std::vector<float> x = Random(rows * k, 1, 3.0f);
  x[2 * k + 200] = 1000.0f;  // one outlier only scales its own block
  std::vector<uint8_t> q(rows * k);
  std::vector<float> scales(rows * 3), back(rows * k), element_scale(rows * k);
  QuantizeActivationsE4M3(x.data(), rows, k, q.data(), scales.data());
  DequantizeActivationsE4M3(q.data(), scales.data(), rows, k, back.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t kb = 0; kb < 3; ++kb) {
      float amax = 0;
      for (int64_t j = kb * 128; j < std::min<int64_t>(k, kb * 128 + 128); ++j) {
        amax = std::max(amax, std::fabs(x[r * k + j]));
        element_scale[r * k + j] = scales[r * 3 + kb];
      }
      EXPECT_EQ(scales[r * 3 + kb], amax / 448.0f);
    }
  }
  EXPECT_EQ(scales[2 * 3 + 1], 1000.0f / 448.0f);
  EXPECT_FLOAT_EQ(back[2 * k + 200], 1000.0f) << "the block maximum encodes to 448 exactly";
  ExpectWithinE4M3Error(x, back, element_scale);
}

TEST(BlockScaleTest, WeightBlocksAreOneHundredTwentyEightSquare) {
  const int64_t experts = 3, n = 200, k = 256;
  std::vector<float> w = Random(experts * n * k, 2, 0.02f);
  w[(1 * n + 150) * k + 10] = -5.0f;  // expert 1, n block 1, k block 0
  std::vector<uint8_t> q(w.size());
  std::vector<float> scales(experts * 2 * 2), back(w.size()), element_scale(w.size());
  QuantizeWeightsE4M3(w.data(), experts, n, k, q.data(), scales.data());
  DequantizeWeightsE4M3(q.data(), scales.data(), experts, n, k, back.data());
  EXPECT_EQ(scales[(1 * 2 + 1) * 2 + 0], 5.0f / 448.0f);
  EXPECT_FLOAT_EQ(back[(1 * n + 150) * k + 10], -5.0f);
  for (int64_t e = 0; e < experts; ++e) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < k; ++j) {
        element_scale[(e * n + i) * k + j] = scales[(e * 2 + i / 128) * 2 + j / 128];
      }
    }
  }
  ExpectWithinE4M3Error(w, back, element_scale);
  EXPECT_LT(scales[0], 5.0f / 448.0f) << "the outlier's block is the only one it scales";
}

TEST(BlockScaleTest, ZeroBlocksAndNonFiniteValues) {
  const int64_t k = 256;
  std::vector<float> x(k, 0.0f);
  x[130] = 2.0f;
  x[131] = std::numeric_limits<float>::infinity();
  x[132] = std::numeric_limits<float>::quiet_NaN();
  std::vector<uint8_t> q(k);
  std::vector<float> scales(2), back(k);
  QuantizeActivationsE4M3(x.data(), 1, k, q.data(), scales.data());
  DequantizeActivationsE4M3(q.data(), scales.data(), 1, k, back.data());
  EXPECT_EQ(scales[0], 1.0f) << "an all-zero block keeps scale 1";
  EXPECT_EQ(back[0], 0.0f);
  EXPECT_EQ(scales[1], 2.0f / 448.0f) << "amax over the finite values";
  EXPECT_FLOAT_EQ(back[130], 2.0f);
  EXPECT_FLOAT_EQ(back[131], 2.0f) << "inf saturates to 448 * scale";
  EXPECT_TRUE(std::isnan(back[132]));
}

}  // namespace
}  // namespace moe::kernels::cuda

#else  // !MOE_HAVE_CUDA

#include "gtest/gtest.h"

TEST(Fp8BlockScaleTest, NeedsTheCudaToolkit) { GTEST_SKIP() << "built without the CUDA toolkit"; }

#endif  // MOE_HAVE_CUDA
