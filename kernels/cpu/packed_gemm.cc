#include "kernels/cpu/packed_gemm.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_isa.h"

namespace moe::kernels {
namespace {

// Inputs per microkernel pass: long enough to amortize C, short enough that a panel's slice
// stays in L2 while it serves every row block.
constexpr int64_t kInputBlock = 512;

}  // namespace

int MaxTileRows(WeightFormat format) { return format == WeightFormat::kInt4 ? 2 : 6; }

int TilePanels(WeightFormat format, int rows) {
  if (format == WeightFormat::kInt4) return 1;
  return rows == 1 ? 4 : rows == 2 ? 3 : 1;
}

void QuantizeRowsInt8(const float* x, int64_t ld_x, int64_t m, int64_t k, int8_t* q, int64_t ld_q,
                      float* scale, int32_t* corr, int64_t ld_corr) {
  const int64_t groups = (k + kInt4Group - 1) / kInt4Group;
  for (int64_t r = 0; r < m; ++r) {
    const float* row = x + r * ld_x;
    float amax = 0.0f;
    for (int64_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(row[i]));
    const float s = amax / 127.0f;
    const float inv = s == 0.0f ? 0.0f : 1.0f / s;
    scale[r] = s;
    int8_t* qr = q + r * ld_q;
    for (int64_t i = 0; i < k; ++i) {
      qr[i] =
          static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, std::nearbyint(row[i] * inv))));
    }
    for (int64_t i = k; i < groups * kInt4Group; ++i) qr[i] = 0;
    for (int64_t g = 0; g < groups; ++g) {
      int32_t sum = 0;
      for (int64_t i = 0; i < kInt4Group; ++i) sum += qr[g * kInt4Group + i];
      corr[r * ld_corr + g] = 8 * sum;
    }
  }
}

void PackedGemm(const PackedGemmParams& p) {
  const PackedMatrix& w = *p.w;
  const WeightFormat format = w.format;
  const PanelKernel kernel =
      ActiveCpuIsa() == CpuIsa::kAvx2 ? Avx2PanelKernel(format) : PortablePanelKernel(format);
  const int max_rows = MaxTileRows(format);
  const bool int4 = format == WeightFormat::kInt4;
  const int64_t k = int4 ? (w.k + kInt4Group - 1) / kInt4Group * kInt4Group : w.k;
  for (int64_t k0 = 0; k0 < k || k0 == 0; k0 += kInputBlock) {
    const int64_t kc = std::min(kInputBlock, k - k0);
    // Decode-sized calls (at most 2 rows) take several full panels per microkernel call.
    const int rows_all = static_cast<int>(std::min<int64_t>(max_rows, p.m));
    const int group = p.m <= 2 ? TilePanels(format, rows_all) : 1;
    for (int64_t panel = p.panel_begin; panel < p.panel_end;) {
      const int cols = static_cast<int>(std::min<int64_t>(kPanelWidth, w.n - panel * kPanelWidth));
      int panels = 1;
      if (group > 1 && panel + group <= p.panel_end && (panel + group) * kPanelWidth <= w.n) {
        panels = group;
      }
      for (int64_t r0 = 0; r0 < p.m; r0 += max_rows) {
        PanelTile t;
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
        t.last = k0 + kInputBlock >= k;
        if (int4) {
          t.qa = p.qa.q + r0 * p.qa.ld_q;
          t.ld_q = p.qa.ld_q;
          t.a_scale = p.qa.scale + r0;
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
