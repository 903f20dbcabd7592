// FP8 e4m3 (the OCP "e4m3fn" format of Hopper: bias 7, no infinities, one NaN pattern per sign,
// largest finite 448) and the DeepSeek-V3 block scales, in plain C++ for the host: the test
// reference of the GPU quantizer and the grouped GEMM's FP8 path, and a way to prepare inputs.
//
// Block scales (DeepSeek-V3 layout, value = fp8 * scale):
//   activations [rows, k]          -> codes [rows, k],       scales [rows, ceil(k / 128)]
//   weights     [num_experts, n, k] -> codes [num_experts, n, k],
//                                      scales [num_experts, ceil(n / 128), ceil(k / 128)]
// A block's scale is amax / 448 over the FINITE values of the block (1 when that amax is 0), so
// the largest finite element encodes to +-448; +-inf encodes saturated (+-448 * scale) and NaN
// stays NaN.
#pragma once

#include <cstdint>

namespace moe::kernels::cuda {

inline constexpr int kFp8BlockSize = 128;  // elements per scale block along k (and n for weights)
inline constexpr float kE4M3Max = 448.0f;  // largest finite e4m3 value

// Rounds to the nearest e4m3 value, ties to even; magnitudes above 448 (infinities included)
// saturate to +-448 (code 0x7E / 0xFE), like the hardware's cvt.rn.satfinite; NaN encodes to the
// NaN code with its sign kept (0x7F / 0xFF). -0 encodes to 0x80.
uint8_t F32ToE4M3(float x);

// Decodes an e4m3 code exactly (every code is a float); 0x7F and 0xFF decode to NaN.
float E4M3ToF32(uint8_t code);

// The scale of a block whose largest finite magnitude is `amax`: amax / 448, or 1 when amax is 0.
float E4M3BlockScale(float amax);

// Quantizes activations x [rows, k] to codes q [rows, k] and scales [rows, ceil(k / 128)]:
// q = F32ToE4M3(x / scale) per 1x128 block.
void QuantizeActivationsE4M3(const float* x, int64_t rows, int64_t k, uint8_t* q, float* scales);

// Quantizes weights w [num_experts, n, k] to codes q [num_experts, n, k] and scales
// [num_experts, ceil(n / 128), ceil(k / 128)] per 128x128 block.
void QuantizeWeightsE4M3(const float* w, int64_t num_experts, int64_t n, int64_t k, uint8_t* q,
                         float* scales);

// x [rows, k] = E4M3ToF32(q) * scale of the element's 1x128 block.
void DequantizeActivationsE4M3(const uint8_t* q, const float* scales, int64_t rows, int64_t k,
                               float* x);

// w [num_experts, n, k] = E4M3ToF32(q) * scale of the element's 128x128 block.
void DequantizeWeightsE4M3(const uint8_t* q, const float* scales, int64_t num_experts, int64_t n,
                           int64_t k, float* w);

}  // namespace moe::kernels::cuda
