// AVX2 + FMA microkernels for the packed GEMM (this file alone is built with -mavx2 -mfma).
// Each keeps rows x 16 outputs in registers (two 8-float vectors per row) and streams the panel
// once per call, prefetching ahead of the loads.
#include <immintrin.h>

#include "kernels/cpu/packed_gemm.h"

namespace moe::kernels {
namespace {

// Panel bytes ahead of the current input that are prefetched (about 1 KiB: the hardware
// prefetcher handles the rest; this covers the start of each panel stream).
constexpr int64_t kPrefetchBytes = 1024;

// NOTE: every helper is forced inline so the accumulators stay in registers.
#define MOE_INLINE inline __attribute__((always_inline))

MOE_INLINE __m256i ColumnMask(int cols) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), idx);
}

// Loads / stores the 16 outputs of one row (the first `cols` of them).
MOE_INLINE void LoadRow(const float* c, int cols, __m256* lo, __m256* hi) {
  if (cols == 16) {
    *lo = _mm256_loadu_ps(c);
    *hi = _mm256_loadu_ps(c + 8);
  } else {
    *lo = _mm256_maskload_ps(c, ColumnMask(cols));
    *hi = _mm256_maskload_ps(c + 8, ColumnMask(cols - 8));
  }
}
MOE_INLINE void StoreRow(float* c, int cols, __m256 lo, __m256 hi) {
  if (cols == 16) {
    _mm256_storeu_ps(c, lo);
    _mm256_storeu_ps(c + 8, hi);
  } else {
    _mm256_maskstore_ps(c, ColumnMask(cols), lo);
    _mm256_maskstore_ps(c + 8, ColumnMask(cols - 8), hi);
  }
}

// Weights of 16 outputs at input kk as two F32 vectors (outputs 0-7, 8-15).
struct F32Panel {
  static constexpr int64_t kBytesPerInput = 64;
  MOE_INLINE static void Load(const uint8_t* p, int64_t kk, __m256* lo, __m256* hi) {
    const float* f = reinterpret_cast<const float*>(p) + kk * 16;
    *lo = _mm256_load_ps(f);
    *hi = _mm256_load_ps(f + 8);
  }
};
// BF16 pairs: the words of input pair kk / 2; an even input is the low half of each word.
struct Bf16Panel {
  static constexpr int64_t kBytesPerInput = 32;
  MOE_INLINE static void Load(const uint8_t* p, int64_t kk, __m256* lo, __m256* hi) {
    const uint8_t* pair = p + (kk >> 1) * 64;
    const __m128i shift = _mm_cvtsi32_si128((kk & 1) != 0 ? 0 : 16);
    const __m256i high_half = _mm256_set1_epi32(-65536);
    const __m256i w_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(pair));
    const __m256i w_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(pair + 32));
    *lo = _mm256_castsi256_ps(_mm256_and_si256(_mm256_sll_epi32(w_lo, shift), high_half));
    *hi = _mm256_castsi256_ps(_mm256_and_si256(_mm256_sll_epi32(w_hi, shift), high_half));
  }
};
struct Int8Panel {
  static constexpr int64_t kBytesPerInput = 16;
  MOE_INLINE static void Load(const uint8_t* p, int64_t kk, __m256* lo, __m256* hi) {
    const __m128i w = _mm_load_si128(reinterpret_cast<const __m128i*>(p + kk * 16));
    *lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(w));
    *hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(w, w)));
  }
};

// R rows x P panels (16 * P outputs): P > 1 only for few rows, where independent accumulators
// keep the FMA pipes busy while the panels stream (decode).
template <class Panel, int R, int P>
void FloatTile(const PanelTile& t, bool column_scales) {
  __m256 acc[R][P][2];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      if (t.first) {
        acc[r][p][0] = _mm256_setzero_ps();
        acc[r][p][1] = _mm256_setzero_ps();
      } else {
        LoadRow(t.c + r * t.ldc + p * 16, P > 1 ? 16 : t.cols, &acc[r][p][0], &acc[r][p][1]);
      }
    }
  }
  const float* a[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) a[r] = t.a + r * t.lda + t.k0;
  const uint8_t* panel = t.panel + t.k0 * Panel::kBytesPerInput;
  const int64_t stride = t.panel_stride;
  const int64_t kc = t.kc;
  for (int64_t kk = 0; kk < kc; ++kk) {
    if constexpr (P == 1) {
      // NOTE: one broadcast live at a time: 12 accumulators + 2 weights + 1 input = 15 ymm.
      _mm_prefetch(
          reinterpret_cast<const char*>(panel + kk * Panel::kBytesPerInput + kPrefetchBytes),
          _MM_HINT_T0);
      if (t.prefetch != nullptr) {
        _mm_prefetch(reinterpret_cast<const char*>(t.prefetch + kk * Panel::kBytesPerInput),
                     _MM_HINT_T0);
      }
      __m256 lo, hi;
      Panel::Load(panel, kk, &lo, &hi);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 x = _mm256_broadcast_ss(a[r] + kk);
        acc[r][0][0] = _mm256_fmadd_ps(x, lo, acc[r][0][0]);
        acc[r][0][1] = _mm256_fmadd_ps(x, hi, acc[r][0][1]);
      }
    } else {
      __m256 x[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) x[r] = _mm256_broadcast_ss(a[r] + kk);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        const uint8_t* panel_p = panel + p * stride;
        _mm_prefetch(
            reinterpret_cast<const char*>(panel_p + kk * Panel::kBytesPerInput + kPrefetchBytes),
            _MM_HINT_T0);
        __m256 lo, hi;
        Panel::Load(panel_p, kk, &lo, &hi);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          acc[r][p][0] = _mm256_fmadd_ps(x[r], lo, acc[r][p][0]);
          acc[r][p][1] = _mm256_fmadd_ps(x[r], hi, acc[r][p][1]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    if (t.last && column_scales) {
      const __m256 s_lo = _mm256_loadu_ps(t.panel_scales + p * t.scale_stride);
      const __m256 s_hi = _mm256_loadu_ps(t.panel_scales + p * t.scale_stride + 8);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        acc[r][p][0] = _mm256_mul_ps(acc[r][p][0], s_lo);
        acc[r][p][1] = _mm256_mul_ps(acc[r][p][1], s_hi);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      StoreRow(t.c + r * t.ldc + p * 16, P > 1 ? 16 : t.cols, acc[r][p][0], acc[r][p][1]);
    }
  }
}

template <class Panel, bool kColumnScales>
void FloatKernel(const PanelTile& t) {
  if (t.panels == 4 && t.rows == 1) return FloatTile<Panel, 1, 4>(t, kColumnScales);
  if (t.panels == 3 && t.rows == 2) return FloatTile<Panel, 2, 3>(t, kColumnScales);
  switch (t.rows) {
    case 1:
      return FloatTile<Panel, 1, 1>(t, kColumnScales);
    case 2:
      return FloatTile<Panel, 2, 1>(t, kColumnScales);
    case 3:
      return FloatTile<Panel, 3, 1>(t, kColumnScales);
    case 4:
      return FloatTile<Panel, 4, 1>(t, kColumnScales);
    case 5:
      return FloatTile<Panel, 5, 1>(t, kColumnScales);
    default:
      return FloatTile<Panel, 6, 1>(t, kColumnScales);
  }
}

// INT4 x int8: per group of 32 inputs, u8 weights (q + 8) times s8 activations summed in 16-bit
// lanes (8 products of at most 2 * 15 * 127 each: no overflow), widened once per group, offset
// corrected, then scaled (weight scale x the group's activation scale) into F32 accumulators.
template <int R>
void Int4Tile(const PanelTile& t) {
  __m256 acc[R][2];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    if (t.first) {
      acc[r][0] = _mm256_setzero_ps();
      acc[r][1] = _mm256_setzero_ps();
    } else {
      LoadRow(t.c + r * t.ldc, t.cols, &acc[r][0], &acc[r][1]);
    }
  }
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t g0 = t.k0 / kInt4Group;
  const int64_t groups = t.kc / kInt4Group;
  for (int64_t g = g0; g < g0 + groups; ++g) {
    const uint8_t* bytes = t.panel + g * 256;
    _mm_prefetch(reinterpret_cast<const char*>(bytes + kPrefetchBytes), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(bytes + kPrefetchBytes + 64), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(bytes + kPrefetchBytes + 128), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(bytes + kPrefetchBytes + 192), _MM_HINT_T0);
    __m256i sum[R][2];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) sum[r][0] = sum[r][1] = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int octet = 0; octet < 4; ++octet) {
      __m256i lo[2], hi[2];
      for (int h = 0; h < 2; ++h) {
        const __m256i v =
            _mm256_load_si256(reinterpret_cast<const __m256i*>(bytes + (octet * 2 + h) * 32));
        lo[h] = _mm256_and_si256(v, low_nibbles);
        hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low_nibbles);
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const int8_t* a = t.qa + r * t.ld_q + g * kInt4Group + octet * 8;
        int32_t a_lo, a_hi;
        __builtin_memcpy(&a_lo, a, 4);
        __builtin_memcpy(&a_hi, a + 4, 4);
        const __m256i x_lo = _mm256_set1_epi32(a_lo);
        const __m256i x_hi = _mm256_set1_epi32(a_hi);
        for (int h = 0; h < 2; ++h) {
          sum[r][h] = _mm256_add_epi16(sum[r][h], _mm256_maddubs_epi16(lo[h], x_lo));
          sum[r][h] = _mm256_add_epi16(sum[r][h], _mm256_maddubs_epi16(hi[h], x_hi));
        }
      }
    }
    const __m256 s_lo = _mm256_loadu_ps(t.panel_scales + g * 16);
    const __m256 s_hi = _mm256_loadu_ps(t.panel_scales + g * 16 + 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256i corr = _mm256_set1_epi32(t.corr[r * t.ld_corr + g]);
      const __m256i d_lo = _mm256_sub_epi32(_mm256_madd_epi16(sum[r][0], ones), corr);
      const __m256i d_hi = _mm256_sub_epi32(_mm256_madd_epi16(sum[r][1], ones), corr);
      const __m256 a_scale = _mm256_set1_ps(t.a_scale[r * t.ld_corr + g]);
      acc[r][0] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(d_lo), _mm256_mul_ps(s_lo, a_scale), acc[r][0]);
      acc[r][1] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(d_hi), _mm256_mul_ps(s_hi, a_scale), acc[r][1]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) StoreRow(t.c + r * t.ldc, t.cols, acc[r][0], acc[r][1]);
}

void Int4Kernel(const PanelTile& t) {
  if (t.rows == 1) return Int4Tile<1>(t);
  return Int4Tile<2>(t);
}

}  // namespace

PanelKernel Avx2PanelKernel(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32:
      return FloatKernel<F32Panel, false>;
    case WeightFormat::kBF16:
      return FloatKernel<Bf16Panel, false>;
    case WeightFormat::kInt8:
      return FloatKernel<Int8Panel, true>;
    case WeightFormat::kInt4:
      return Int4Kernel;
  }
  return FloatKernel<F32Panel, false>;
}

}  // namespace moe::kernels
