#include "kernels/cpu/packed_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/cpu_isa.h"

namespace moe::kernels {
namespace {

// Inputs per microkernel pass. Float formats: a panel's slice (16 x 256 x 4 = 16 KiB) stays in
// L1 while it serves every row block, and the rows' slice (rows x 1 KiB) in L2. INT4 keeps whole
// rows (its tiles are short and reload their F32 sums per pass).
// Decode-sized calls (at most 2 rows) stream whole panels instead.
int64_t InputBlock(WeightFormat format, int64_t rows) {
  return format == WeightFormat::kInt4 || rows <= 2 ? int64_t{1} << 40 : 256;
}

}  // namespace

int MaxTileRows(WeightFormat format) { return format == WeightFormat::kInt4 ? 2 : 6; }

int TilePanels(WeightFormat format, int rows) {
  if (format == WeightFormat::kInt4) return 1;
  return rows == 1 ? 4 : rows == 2 ? 3 : 1;
}

void QuantizeRowsInt8(const float* x, int64_t ld_x, int64_t m, int64_t k, int8_t* q, int64_t ld_q,
                      float* scale, int32_t* corr, int64_t ld_corr) {
  if (static_cast<int>(DetectedCpuIsa()) >= static_cast<int>(CpuIsa::kAvx512)) {
    return Avx512QuantizeRowsInt8(x, ld_x, m, k, q, ld_q, scale, corr, ld_corr);
  }
  PortableQuantizeRowsInt8(x, ld_x, m, k, q, ld_q, scale, corr, ld_corr);
}

void PortableQuantizeRowsInt8(const float* x, int64_t ld_x, int64_t m, int64_t k, int8_t* q,
                              int64_t ld_q, float* scale, int32_t* corr, int64_t ld_corr) {
  const int64_t groups = CeilDiv(k, kInt4Group);
  for (int64_t r = 0; r < m; ++r) {
    const float* row = x + r * ld_x;
    int8_t* qr = q + r * ld_q;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t begin = g * kInt4Group;
      const int64_t end = std::min(k, begin + kInt4Group);
      float amax = 0.0f;
      for (int64_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(row[i]));
      const float s = amax / 127.0f;
      const float inv = s == 0.0f ? 0.0f : 1.0f / s;
      scale[r * ld_corr + g] = s;
      int32_t sum = 0;
      for (int64_t i = begin; i < begin + kInt4Group; ++i) {
        const int8_t v = i < end ? static_cast<int8_t>(std::min(
                                       127.0f, std::max(-127.0f, std::nearbyint(row[i] * inv))))
                                 : int8_t{0};
        qr[i] = v;
        sum += v;
      }
      corr[r * ld_corr + g] = 8 * sum;
    }
  }
}

GemmInput GemmInputFor(WeightFormat format, CpuIsa isa) {
  if (format == WeightFormat::kInt4) return GemmInput::kInt8;
  if (format == WeightFormat::kBF16 && (isa == CpuIsa::kAvx512 || isa == CpuIsa::kAmx)) {
    return GemmInput::kBF16;
  }
  // INT8 on AMX: the weights expand to BF16 tiles (packed_gemm_amx.cc).
  if (format == WeightFormat::kInt8 && isa == CpuIsa::kAmx) return GemmInput::kBF16;
  return GemmInput::kF32;
}

void ConvertRowsToBf16(const float* x, int64_t ld_x, int64_t m, int64_t k, uint16_t* out,
                       int64_t ld_out) {
  if (static_cast<int>(DetectedCpuIsa()) >= static_cast<int>(CpuIsa::kAvx512)) {
    return Avx512ConvertRowsToBf16(x, ld_x, m, k, out, ld_out);
  }
  const int64_t padded = RoundUp(k, kBf16Block);
  for (int64_t r = 0; r < m; ++r) {
    const float* row = x + r * ld_x;
    uint16_t* o = out + r * ld_out;
    for (int64_t i = 0; i < k; ++i) o[i] = FloatToBf16(row[i]);
    for (int64_t i = k; i < padded; ++i) o[i] = 0;
  }
}

bool CanStreamC(const PackedGemmParams& p) {
  return p.stream_c && reinterpret_cast<uintptr_t>(p.c) % 64 == 0 && p.ldc % 16 == 0;
}

void PackedGemm(const PackedGemmParams& p) {
  const CpuIsa isa = ActiveCpuIsa();
  if (isa == CpuIsa::kAmx) return AmxPackedGemm(p);
  if (isa == CpuIsa::kAvx512) return Avx512PackedGemm(p);
  const PackedMatrix& w = *p.w;
  const WeightFormat format = w.format;
  const PanelKernel kernel =
      isa == CpuIsa::kAvx2 ? Avx2PanelKernel(format) : PortablePanelKernel(format);
  const int max_rows = MaxTileRows(format);
  const bool int4 = format == WeightFormat::kInt4;
  // Inputs the microkernels step over: INT4 runs over its padded groups, the others over the
  // F32 rows' k (BF16 panels' padding is never read here).
  const int64_t k = int4 ? w.stored_inputs() : w.k;
  const int64_t bytes_per_input = w.bytes_per_input();
  const int64_t input_block = InputBlock(format, p.m);
  // Decode-sized calls (at most 2 rows) take several full panels per microkernel call.
  const int group = p.m <= 2 ? TilePanels(format, static_cast<int>(p.m)) : 1;
  for (int64_t k0 = 0; k0 < k || k0 == 0; k0 += input_block) {
    const int64_t kc = std::min(input_block, k - k0);
    for (int64_t panel = p.panel_begin; panel < p.panel_end;) {
      const int cols = static_cast<int>(std::min<int64_t>(kPanelWidth, w.n - panel * kPanelWidth));
      int panels = 1;
      if (group > 1 && panel + group <= p.panel_end && (panel + group) * kPanelWidth <= w.n) {
        panels = group;
      }
      // The slice after this one (next panel, or the first panel of the next input block): the
      // first row block's call prefetches it while it computes.
      const uint8_t* next = nullptr;
      if (panel + panels < p.panel_end) {
        next = w.panel(panel + panels) + k0 * bytes_per_input;
      } else if (k0 + input_block < k) {
        next = w.panel(p.panel_begin) + (k0 + input_block) * bytes_per_input;
      }
      for (int64_t r0 = 0; r0 < p.m; r0 += max_rows) {
        PanelTile t;
        t.prefetch = r0 == 0 ? next : nullptr;
        t.rows = static_cast<int>(std::min<int64_t>(max_rows, p.m - r0));
        t.cols = cols;
        t.panels = panels;
        t.panel_stride = w.panel_bytes;
        t.scale_stride = w.panel_scales;
        t.panel = w.panel(panel);
        t.panel_scales = w.panel_scale(panel);
        t.k0 = k0;
        t.kc = kc;
        t.c = p.c + r0 * p.ldc + (panel - p.panel_begin) * kPanelWidth;
        t.ldc = p.ldc;
        t.first = k0 == 0;
        t.last = k0 + input_block >= k;
        if (int4) {
          t.qa = p.qa.q + r0 * p.qa.ld_q;
          t.ld_q = p.qa.ld_q;
          t.a_scale = p.qa.scale + r0 * p.qa.ld_corr;
          t.corr = p.qa.corr + r0 * p.qa.ld_corr;
          t.ld_corr = p.qa.ld_corr;
        } else {
          t.a = p.a + r0 * p.lda;
          t.lda = p.lda;
        }
        kernel(t);
      }
      panel += panels;
    }
    if (k == 0) break;
  }
}

}  // namespace moe::kernels
