// Weight matrices packed once at load into the column panels the CPU microkernels stream, in
// F32, BF16, INT8 (per output channel) or INT4 (per group of 32 inputs) formats.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "moe/base/tensor.h"

namespace moe::kernels {

enum class WeightFormat { kF32, kBF16, kInt8, kInt4 };

// "f32", "bf16", "int8", "int4".
absl::string_view WeightFormatName(WeightFormat format);

// Parses a --weight-dtype value; kInvalidArgument naming the flag and the value otherwise.
absl::StatusOr<WeightFormat> ParseWeightFormat(absl::string_view name);

// ceil(a / b), and a rounded up to a multiple of b, for sizes (a >= 0, b > 0).
inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

// Columns (outputs) per panel; every microkernel computes 16 outputs per pass over k.
inline constexpr int64_t kPanelWidth = 16;
// Inputs per INT4 scale group.
inline constexpr int64_t kInt4Group = 32;
// BF16 panels (and BF16 activation rows) pad k to a multiple of this.
inline constexpr int64_t kBf16Block = 32;

// One weight matrix W [n, k] (Hugging Face layout [out, in]) packed as ceil(n / 16) panels of
// 16 outputs; outputs past n are zero. Per panel, k-major:
//   kF32:  [k][16] float
//   kBF16: [RoundUp(k, 32) / 2][16] uint32: word (i, col) = bf16(W[col, 2i]) |
//          bf16(W[col, 2i + 1]) << 16 (round to nearest even); inputs past k are zero. A block of
//          32 inputs is 1 KiB, the layout of an AMX B tile and of AVX-512 BF16 dot products.
//   kInt8: [k][16] int8 q, W ~= q * scales[col], scales = max|W[col, :]| / 127
//   kInt4: [ceil(k / 32) * 4][2 halves][32] bytes: per 8 inputs k0..k0+7 and 8 columns
//          c0..c0+7 (half h: c0 = 8h), byte 4 * c + i = (q[k0 + i] + 8) | (q[k0 + 4 + i] + 8) << 4,
//          q in [-8, 7]; scales [ceil(k / 32)][16] per panel, W ~= q * scale of (group, col),
//          the scale chosen per group to minimise the squared error. Inputs past k are zero.
// NOTE: the summation order of every output is fixed by k alone (see packed_gemm.h).
struct PackedMatrix {
  WeightFormat format = WeightFormat::kF32;
  int64_t n = 0;
  int64_t k = 0;
  int64_t num_panels = 0;
  int64_t panel_bytes = 0;  // bytes of one panel's weights
  std::unique_ptr<void, AlignedFree> data;
  std::unique_ptr<void, AlignedFree> scales;  // F32; kInt8: [num_panels * 16], kInt4: above
  int64_t panel_scales = 0;                   // scales per panel (kInt4: groups * 16)

  const uint8_t* panel(int64_t p) const {
    return static_cast<const uint8_t*>(data.get()) + p * panel_bytes;
  }
  const float* panel_scale(int64_t p) const {
    return static_cast<const float*>(scales.get()) + p * panel_scales;
  }
  // Inputs each panel stores: k, padded to whole blocks for kBF16 (kBf16Block) and kInt4
  // (kInt4Group) with zero weights past k.
  int64_t stored_inputs() const {
    if (format == WeightFormat::kBF16) return RoundUp(k, kBf16Block);
    if (format == WeightFormat::kInt4) return RoundUp(k, kInt4Group);
    return k;
  }
  // Bytes of one panel per stored input (0 when k is 0).
  int64_t bytes_per_input() const {
    return stored_inputs() > 0 ? panel_bytes / stored_inputs() : 0;
  }
  // Weight bytes a full pass streams (panels plus scales).
  int64_t StreamBytes() const {
    return num_panels * (panel_bytes + panel_scales * static_cast<int64_t>(sizeof(float)));
  }
};

// Packs W [n, k] (row stride ldw floats). Single-threaded and deterministic.
PackedMatrix PackMatrix(const float* w, int64_t ldw, int64_t n, int64_t k, WeightFormat format);

// The values the packed matrix stands for, as F32 [n, k] (quantization-aware references).
void UnpackMatrix(const PackedMatrix& m, float* out);

// BF16 bits of x, rounded to nearest even (NaN stays NaN), and back.
uint16_t FloatToBf16(float x);
float Bf16ToFloat(uint16_t b);

}  // namespace moe::kernels
