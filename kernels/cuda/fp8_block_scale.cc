#include "kernels/cuda/fp8_block_scale.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace moe::kernels::cuda {
namespace {

constexpr float kE4M3MinNormal = 0.015625f;  // 2^-6
constexpr int kE4M3Bias = 7;

int64_t Blocks(int64_t size) { return (size + kFp8BlockSize - 1) / kFp8BlockSize; }

// Round half to even of a float that holds an exact multiple of 1/2 or finer: nearbyint under the
// default rounding mode (to nearest, ties to even).
int RoundHalfEven(float x) { return static_cast<int>(std::nearbyint(x)); }

}  // namespace

uint8_t F32ToE4M3(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  if (std::isnan(x)) return sign | 0x7F;
  const float a = std::fabs(x);
  if (a > kE4M3Max) return sign | 0x7E;  // saturate (448 = 1.75 * 2^8 is the largest finite)
  if (a < kE4M3MinNormal) {
    // Subnormals are m * 2^-9, m in [0, 7]; m = 8 rounds up into the smallest normal, whose code
    // is 0x08, so the code is m either way. a * 2^9 is exact.
    return sign | static_cast<uint8_t>(RoundHalfEven(std::ldexp(a, 9)));
  }
  int exp2;
  std::frexp(a, &exp2);  // a = f * 2^exp2, f in [0.5, 1)
  int e = exp2 - 1;      // a = 1.m * 2^e, e in [-6, 8]
  // The 3 mantissa bits: (a / 2^e - 1) * 8 is exact in float; rounding may carry into e.
  int m = RoundHalfEven((std::ldexp(a, -e) - 1.0f) * 8.0f);
  if (m == 8) {
    m = 0;
    ++e;
  }
  const int code = ((e + kE4M3Bias) << 3) | m;
  return sign | static_cast<uint8_t>(std::min(code, 0x7E));
}

float E4M3ToF32(uint8_t code) {
  const bool negative = (code & 0x80) != 0;
  const int e = (code >> 3) & 0xF;
  const int m = code & 0x7;
  float value;
  if (e == 0xF && m == 0x7) {
    value = std::numeric_limits<float>::quiet_NaN();
  } else if (e == 0) {
    value = std::ldexp(static_cast<float>(m), -9);
  } else {
    value = std::ldexp(1.0f + static_cast<float>(m) / 8.0f, e - kE4M3Bias);
  }
  return negative ? -value : value;
}

float E4M3BlockScale(float amax) { return amax > 0.0f ? amax / kE4M3Max : 1.0f; }

void QuantizeActivationsE4M3(const float* x, int64_t rows, int64_t k, uint8_t* q, float* scales) {
  const int64_t k_blocks = Blocks(k);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t kb = 0; kb < k_blocks; ++kb) {
      const int64_t k0 = kb * kFp8BlockSize, k1 = std::min(k, k0 + kFp8BlockSize);
      float amax = 0.0f;
      for (int64_t j = k0; j < k1; ++j) {
        if (std::isfinite(x[r * k + j])) amax = std::max(amax, std::fabs(x[r * k + j]));
      }
      const float scale = E4M3BlockScale(amax);
      scales[r * k_blocks + kb] = scale;
      for (int64_t j = k0; j < k1; ++j) q[r * k + j] = F32ToE4M3(x[r * k + j] / scale);
    }
  }
}

void QuantizeWeightsE4M3(const float* w, int64_t num_experts, int64_t n, int64_t k, uint8_t* q,
                         float* scales) {
  const int64_t n_blocks = Blocks(n), k_blocks = Blocks(k);
  for (int64_t e = 0; e < num_experts; ++e) {
    const float* we = w + e * n * k;
    uint8_t* qe = q + e * n * k;
    for (int64_t nb = 0; nb < n_blocks; ++nb) {
      const int64_t n0 = nb * kFp8BlockSize, n1 = std::min(n, n0 + kFp8BlockSize);
      for (int64_t kb = 0; kb < k_blocks; ++kb) {
        const int64_t k0 = kb * kFp8BlockSize, k1 = std::min(k, k0 + kFp8BlockSize);
        float amax = 0.0f;
        for (int64_t i = n0; i < n1; ++i) {
          for (int64_t j = k0; j < k1; ++j) {
            if (std::isfinite(we[i * k + j])) amax = std::max(amax, std::fabs(we[i * k + j]));
          }
        }
        const float scale = E4M3BlockScale(amax);
        scales[(e * n_blocks + nb) * k_blocks + kb] = scale;
        for (int64_t i = n0; i < n1; ++i) {
          for (int64_t j = k0; j < k1; ++j) qe[i * k + j] = F32ToE4M3(we[i * k + j] / scale);
        }
      }
    }
  }
}

void DequantizeActivationsE4M3(const uint8_t* q, const float* scales, int64_t rows, int64_t k,
                               float* x) {
  const int64_t k_blocks = Blocks(k);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      x[r * k + j] = E4M3ToF32(q[r * k + j]) * scales[r * k_blocks + j / kFp8BlockSize];
    }
  }
}

void DequantizeWeightsE4M3(const uint8_t* q, const float* scales, int64_t num_experts, int64_t n,
                           int64_t k, float* w) {
  const int64_t n_blocks = Blocks(n), k_blocks = Blocks(k);
  for (int64_t e = 0; e < num_experts; ++e) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < k; ++j) {
        const float scale =
            scales[(e * n_blocks + i / kFp8BlockSize) * k_blocks + j / kFp8BlockSize];
        w[(e * n + i) * k + j] = E4M3ToF32(q[(e * n + i) * k + j]) * scale;
      }
    }
  }
}

}  // namespace moe::kernels::cuda
