// Portable C++ microkernels for the packed GEMM: the same layouts and summation order as the
// AVX2 kernels, with separate multiply and add (no FMA contraction in this build).
#include <cstring>

#include "kernels/cpu/packed_gemm.h"

namespace moe::kernels {
namespace {

// The weight of panel column j at input kk, as F32 (before per-column/group scales for INT8).
float F32Weight(const uint8_t* panel, int64_t kk, int j) {
  return reinterpret_cast<const float*>(panel)[kk * 16 + j];
}
float Bf16Weight(const uint8_t* panel, int64_t kk, int j) {
  const uint32_t word = reinterpret_cast<const uint32_t*>(panel)[kk / 2 * 16 + j];
  const uint32_t bits = kk % 2 == 0 ? word << 16 : word & 0xffff0000u;
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}
float Int8Weight(const uint8_t* panel, int64_t kk, int j) {
  return static_cast<float>(reinterpret_cast<const int8_t*>(panel)[kk * 16 + j]);
}

template <float (*Weight)(const uint8_t*, int64_t, int)>
void FloatTile(const PanelTile& t, bool column_scales) {
  if (t.panels > 1) {  // one panel at a time: the same sums
    PanelTile one = t;
    one.panels = 1;
    for (int i = 0; i < t.panels; ++i) {
      one.panel = t.panel + i * t.panel_stride;
      one.panel_scales = t.panel_scales + i * t.scale_stride;
      one.c = t.c + i * 16;
      FloatTile<Weight>(one, column_scales);
    }
    return;
  }
  for (int r = 0; r < t.rows; ++r) {
    const float* a = t.a + r * t.lda + t.k0;
    float* c = t.c + r * t.ldc;
    for (int j = 0; j < t.cols; ++j) {
      float acc = t.first ? 0.0f : c[j];
      for (int64_t kk = 0; kk < t.kc; ++kk) {
        const float prod = a[kk] * Weight(t.panel, t.k0 + kk, j);
        acc = acc + prod;
      }
      if (t.last && column_scales) acc = acc * t.panel_scales[j];
      c[j] = acc;
    }
  }
}

void F32Kernel(const PanelTile& t) { FloatTile<F32Weight>(t, false); }
void Bf16Kernel(const PanelTile& t) { FloatTile<Bf16Weight>(t, false); }
void Int8Kernel(const PanelTile& t) { FloatTile<Int8Weight>(t, true); }

void Int4Kernel(const PanelTile& t) {
  const int64_t g0 = t.k0 / kInt4Group;
  const int64_t groups = t.kc / kInt4Group;
  for (int r = 0; r < t.rows; ++r) {
    const int8_t* qa = t.qa + r * t.ld_q;
    float* c = t.c + r * t.ldc;
    for (int j = 0; j < t.cols; ++j) {
      float acc = t.first ? 0.0f : c[j];
      for (int64_t g = g0; g < g0 + groups; ++g) {
        int32_t dot = 0;
        for (int64_t octet = 0; octet < 4; ++octet) {
          const uint8_t* bytes = t.panel + ((g * 4 + octet) * 2 + j / 8) * 32 + 4 * (j % 8);
          const int8_t* a = qa + g * kInt4Group + octet * 8;
          for (int i = 0; i < 4; ++i) {
            dot += (bytes[i] & 0xf) * a[i] + (bytes[i] >> 4) * a[4 + i];
          }
        }
        dot -= t.corr[r * t.ld_corr + g];
        const float scale = t.panel_scales[g * 16 + j] * t.a_scale[r * t.ld_corr + g];
        const float prod = static_cast<float>(dot) * scale;
        acc = acc + prod;
      }
      c[j] = acc;
    }
  }
}

}  // namespace

PanelKernel PortablePanelKernel(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32:
      return F32Kernel;
    case WeightFormat::kBF16:
      return Bf16Kernel;
    case WeightFormat::kInt8:
      return Int8Kernel;
    case WeightFormat::kInt4:
      return Int4Kernel;
  }
  return F32Kernel;
}

}  // namespace moe::kernels
