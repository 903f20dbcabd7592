// AVX-512 microkernels for the packed GEMM and their blocking (this file alone is built with the
// AVX-512 F/BW/VL/DQ, BF16 and VNNI flags). A tile is up to R rows x P panels: R * P zmm
// accumulators of 16 outputs, P panel vectors loaded per input and one broadcast per row.
//   F32:  FMA, each output a single chain over k in order (bitwise equal to the AVX2 kernels).
//   BF16: VDPBF16PS on BF16 activations, one input pair per step.
//   INT8: the int8 weights widened to F32 in registers, FMA, the column scales at the end.
//   INT4: VPDPBUSD of the offset nibbles (0..15) with int8 activations per group of 32, then
//         corrected, converted and scaled into F32 as the AVX2 kernel does (bitwise equal).
// NOTE: GCC 12's AVX-512 headers start some conversions from _mm512_undefined_*(), which
// -Wmaybe-uninitialized reports once inlined here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/cpu/packed_gemm.h"

namespace moe::kernels {
namespace {

#define MOE_INLINE inline __attribute__((always_inline))

// Bytes ahead of the current input that each panel stream prefetches (the hardware prefetcher
// follows the streams after that; this covers the start of each).
constexpr int64_t kPrefetchBytes = 1024;
constexpr int kMaxRows = 8;
constexpr int kMaxPanels = 8;

// One microkernel call: rows x panels of outputs over inputs [k0, k0 + kc).
struct Tile {
  const float* a = nullptr;  // kF32 input: row 0, input 0
  int64_t lda = 0;
  const uint16_t* a16 = nullptr;  // kBF16 input: row 0, input 0
  int64_t ld16 = 0;
  const int8_t* qa = nullptr;  // kInt8 input: row 0, input 0
  int64_t ld_q = 0;
  const float* a_scale = nullptr;  // row 0, group 0; row stride ld_corr
  const int32_t* corr = nullptr;
  int64_t ld_corr = 0;
  const uint8_t* panel = nullptr;  // the first panel of the tile, input 0
  int64_t panel_stride = 0;        // bytes between panels
  const float* scales = nullptr;   // the first panel's scales
  int64_t scale_stride = 0;        // floats between panels
  int64_t k0 = 0;
  int64_t kc = 0;
  float* c = nullptr;  // row 0, the first panel's column 0
  int64_t ldc = 0;
  __mmask16 last_mask = 0xffff;        // valid outputs of the last panel
  bool first = true;                   // start from 0, else add to c
  bool last = true;                    // apply column scales (INT8)
  bool prefetch = false;               // prefetch ahead in every panel stream
  bool stream = false;                 // final sums of whole panels: non-temporal stores
  bool compact = false;                // F32 / INT8: the compact inner loop (FloatTile)
  int64_t bytes_per_input = 0;         // of a panel
  int64_t slice_bytes = 0;             // bytes of each panel in this call: kc inputs
  int wrap_panels = 0;                 // panels of the next tile whose streams continue this one's
  const uint8_t* wrap_base = nullptr;  // the next tile's first panel, input 0
  int64_t wrap_stride = 0;             // bytes between its panels
  // The weights the calls after this one stream (the next slice), prefetched `next_lines`
  // lines per inner step starting at line `next_line`, so that memory stays busy while later
  // row blocks reuse the current slice from the caches. next_base null: none.
  const uint8_t* next_base = nullptr;  // the next slice in its first panel
  int64_t next_stride = 0;             // bytes between its panels
  int64_t next_chunk = 0;              // its bytes in each panel
  int next_panels = 0;
  int64_t next_line = 0;
  int64_t next_lines = 0;
};
using Kernel = void (*)(const Tile&);

// Walks the lines of a Tile's next slice, panel by panel.
class NextSliceCursor {
 public:
  explicit MOE_INLINE NextSliceCursor(const Tile& t)
      : base_(t.next_base),
        stride_(t.next_stride),
        chunk_(t.next_chunk),
        lines_(t.next_lines),
        panels_(t.next_panels) {
    if (base_ == nullptr || chunk_ <= 0) {
      panel_ = panels_;
      return;
    }
    const int64_t chunk_lines = chunk_ / 64;
    panel_ = static_cast<int>(t.next_line / chunk_lines);
    p_ = base_ + panel_ * stride_ + (t.next_line % chunk_lines) * 64;
    end_ = base_ + panel_ * stride_ + chunk_;
  }
  // Prefetches the next `lines_` lines per step (nothing past the slice) into L2: into L1 they
  // evicted the current slice that the later row blocks reuse (measured: OLMoE F32 T = 128 9%
  // faster).
  MOE_INLINE void Step(int64_t steps = 1) {
    for (int64_t i = 0; i < steps * lines_ && panel_ < panels_; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(p_), _MM_HINT_T1);
      p_ += 64;
      if (p_ >= end_) {
        ++panel_;
        p_ = base_ + panel_ * stride_;
        end_ = p_ + chunk_;
      }
    }
  }

 private:
  const uint8_t* base_;
  int64_t stride_, chunk_, lines_;
  int panels_;
  int panel_ = 0;
  const uint8_t* p_ = nullptr;
  const uint8_t* end_ = nullptr;
};

MOE_INLINE __mmask16 PanelMask(const Tile& t, int p, int panels) {
  return p == panels - 1 ? t.last_mask : __mmask16{0xffff};
}

template <int R, int P>
MOE_INLINE void LoadAccumulators(const Tile& t, __m512 (&acc)[R][P]) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      acc[r][p] = t.first ? _mm512_setzero_ps()
                          : _mm512_maskz_loadu_ps(PanelMask(t, p, P), t.c + r * t.ldc + p * 16);
    }
  }
}

template <int R, int P>
MOE_INLINE void StoreAccumulators(const Tile& t, __m512 (&acc)[R][P], bool column_scales) {
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    if (column_scales && t.last) {
      const __m512 s = _mm512_loadu_ps(t.scales + p * t.scale_stride);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][p] = _mm512_mul_ps(acc[r][p], s);
    }
    if (t.stream && (p + 1 < P || t.last_mask == 0xffff)) {
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) _mm512_stream_ps(t.c + r * t.ldc + p * 16, acc[r][p]);
      continue;
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm512_mask_storeu_ps(t.c + r * t.ldc + p * 16, PanelMask(t, p, P), acc[r][p]);
    }
  }
}

// Prefetches kPrefetchBytes ahead of byte `offset` of panel p's slice in a tile of P panels.
// Past the end of the slice, the stream continues into the same stream of the next tile (its
// panel p, from input 0: t.wrap_base) when t.wrap_panels says it exists: decode tiles then
// stream without a cold start at each panel group.
template <int P>
MOE_INLINE void Prefetch(const Tile& t, int p, int64_t offset) {
  const int64_t ahead = offset + kPrefetchBytes;
  const uint8_t* address = nullptr;
  if (ahead < t.slice_bytes) {
    address = t.panel + p * t.panel_stride + t.k0 * t.bytes_per_input + ahead;
  } else if (p < t.wrap_panels) {
    address = t.wrap_base + p * t.wrap_stride + (ahead - t.slice_bytes);
  }
  if (address != nullptr) _mm_prefetch(reinterpret_cast<const char*>(address), _MM_HINT_T0);
}

// Loads `insn` from base + q * stride (q = 0..3) into `out`, addressed from a base register and
// the stride (and 3x it), so that four rows or panels take two or three registers instead of a
// pointer each: with a pointer per row GCC ran out of registers and reloaded them from the stack
// in every step of the 7 x 4 F32 tile.
#define MOE_LOAD_STRIDED(insn, out, q, base, stride, stride3)           \
  do {                                                                  \
    if constexpr ((q) == 0) {                                           \
      asm(insn " (%1), %0" : "=v"(out) : "r"(base));                    \
    } else if constexpr ((q) == 1) {                                    \
      asm(insn " (%1,%2,1), %0" : "=v"(out) : "r"(base), "r"(stride));  \
    } else if constexpr ((q) == 2) {                                    \
      asm(insn " (%1,%2,2), %0" : "=v"(out) : "r"(base), "r"(stride));  \
    } else {                                                            \
      asm(insn " (%1,%2,1), %0" : "=v"(out) : "r"(base), "r"(stride3)); \
    }                                                                   \
  } while (0)

// Rows (or panels) 0-3 and 4-7 of a tile: two bases, a byte stride and 3x it.
struct Strided {
  const uint8_t* base0;
  const uint8_t* base4;
  int64_t stride;
  int64_t stride3;
  MOE_INLINE Strided(const void* first, int64_t stride_bytes)
      : base0(static_cast<const uint8_t*>(first)),
        base4(base0 + 4 * stride_bytes),
        stride(stride_bytes),
        stride3(3 * stride_bytes) {}
  MOE_INLINE void Advance(int64_t bytes) {
    base0 += bytes;
    base4 += bytes;
  }
};

// Row r's activation at the current input, broadcast to 16 lanes.
template <int r>
MOE_INLINE __m512 BroadcastRow(const Strided& a) {
  __m512 x;
  MOE_LOAD_STRIDED("vbroadcastss", x, r % 4, r < 4 ? a.base0 : a.base4, a.stride, a.stride3);
  return x;
}

// F32 and INT8 weights with F32 activations: 16 outputs of panel p at the current input.
struct F32Weights {
  static constexpr int64_t kBytesPerInput = 64;
  static constexpr bool kColumnScales = false;
  MOE_INLINE static __m512 Load(const uint8_t* panel, int64_t kk) {
    return _mm512_load_ps(reinterpret_cast<const float*>(panel) + kk * 16);
  }
  template <int p>
  MOE_INLINE static __m512 Load(const Strided& w) {
    __m512 v;
    MOE_LOAD_STRIDED("vmovaps", v, p % 4, p < 4 ? w.base0 : w.base4, w.stride, w.stride3);
    return v;
  }
};
struct Int8Weights {
  static constexpr int64_t kBytesPerInput = 16;
  static constexpr bool kColumnScales = true;
  MOE_INLINE static __m512 Load(const uint8_t* panel, int64_t kk) {
    const __m128i q = _mm_load_si128(reinterpret_cast<const __m128i*>(panel + kk * 16));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
  }
  template <int p>
  MOE_INLINE static __m512 Load(const Strided& w) {
    __m512i q;
    MOE_LOAD_STRIDED("vpmovsxbd", q, p % 4, p < 4 ? w.base0 : w.base4, w.stride, w.stride3);
    return _mm512_cvtepi32_ps(q);
  }
};

template <int... Is, class F>
MOE_INLINE void ForEach(std::integer_sequence<int, Is...>, F&& f) {
  (f(std::integral_constant<int, Is>()), ...);
}

template <class W, int R, int P>
struct FloatTile {
  // Inputs per segment: the next slice's prefetches for a segment are issued before its inner
  // loop, which then needs no cursor registers.
  static constexpr int64_t kSegment = 16;

  static void Run(const Tile& t) {
    __m512 acc[R][P];
    LoadAccumulators<R, P>(t, acc);
    if (t.compact) {
      RunCompact(t, acc);
    } else {
      RunStreaming(t, acc);
    }
    StoreAccumulators<R, P>(t, acc, W::kColumnScales);
  }

  // A pointer per row and panel, the next slice's lines prefetched in every step.
  MOE_INLINE static void RunStreaming(const Tile& t, __m512 (&acc)[R][P]) {
    const float* a[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a[r] = t.a + r * t.lda + t.k0;
    const uint8_t* w = t.panel + t.k0 * W::kBytesPerInput;
    const int64_t stride = t.panel_stride;
    // Inputs per 64-byte line of one panel stream: prefetch once per line.
    constexpr int64_t kLineMask = 64 / W::kBytesPerInput - 1;
    NextSliceCursor next(t);
    for (int64_t kk = 0; kk < t.kc; ++kk) {
      next.Step();
      __m512 wv[P];
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) wv[p] = W::Load(w + p * stride, kk);
      if (t.prefetch && (kk & kLineMask) == 0) {
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) Prefetch<P>(t, p, kk * W::kBytesPerInput);
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512 x = _mm512_set1_ps(a[r][kk]);
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) acc[r][p] = _mm512_fmadd_ps(x, wv[p], acc[r][p]);
      }
    }
  }

  // Rows and panels addressed from two registers each (Strided), the next slice's lines
  // prefetched per segment of inputs: no register spills but one accumulator's (7 x 4).
  MOE_INLINE static void RunCompact(const Tile& t, __m512 (&acc)[R][P]) {
    Strided a(t.a + t.k0, t.lda * static_cast<int64_t>(sizeof(float)));
    Strided w(t.panel + t.k0 * W::kBytesPerInput, t.panel_stride);
    NextSliceCursor next(t);
    for (int64_t k0 = 0; k0 < t.kc; k0 += kSegment) {
      const int64_t k1 = std::min(t.kc, k0 + kSegment);
      next.Step(k1 - k0);
      if (t.prefetch) {
        Steps<true>(t, k0, k1, a, w, acc);
      } else {
        Steps<false>(t, k0, k1, a, w, acc);
      }
    }
  }

  // Inputs [k0, k1) of the tile (a and w at k0), with the streams' own prefetches when
  // kPrefetch.
  template <bool kPrefetch>
  MOE_INLINE static void Steps(const Tile& t, int64_t k0, int64_t k1, Strided& a, Strided& w,
                               __m512 (&acc)[R][P]) {
    // Inputs per 64-byte line of one panel stream: prefetch once per line.
    constexpr int64_t kLineMask = 64 / W::kBytesPerInput - 1;
    for (int64_t kk = k0; kk < k1; ++kk) {
      __m512 wv[P];
      ForEach(std::make_integer_sequence<int, P>(),
              [&](auto p) { wv[p()] = W::template Load<p()>(w); });
      if (kPrefetch && (kk & kLineMask) == 0) {
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) Prefetch<P>(t, p, kk * W::kBytesPerInput);
      }
      ForEach(std::make_integer_sequence<int, R>(), [&](auto r) {
        const __m512 x = BroadcastRow<r()>(a);
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) acc[r()][p] = _mm512_fmadd_ps(x, wv[p], acc[r()][p]);
      });
      a.Advance(sizeof(float));
      w.Advance(W::kBytesPerInput);
    }
  }
};

template <int R, int P>
using F32Tile = FloatTile<F32Weights, R, P>;
template <int R, int P>
using Int8Tile = FloatTile<Int8Weights, R, P>;

MOE_INLINE __m512i Broadcast32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return _mm512_set1_epi32(v);
}

// BF16 weights (input pairs, 64 bytes per pair and panel) with BF16 activations.
template <int R, int P>
struct Bf16Tile {
  static void Run(const Tile& t) {
    __m512 acc[R][P];
    LoadAccumulators<R, P>(t, acc);
    const uint16_t* a[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a[r] = t.a16 + r * t.ld16 + t.k0;
    const uint8_t* w = t.panel + t.k0 * 32;
    const int64_t stride = t.panel_stride;
    const int64_t pairs = t.kc / 2;
    NextSliceCursor next(t);
    for (int64_t i = 0; i < pairs; ++i) {
      next.Step();
      __m512i wv[P];
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        wv[p] = _mm512_load_si512(reinterpret_cast<const __m512i*>(w + p * stride + i * 64));
      }
      if (t.prefetch) {
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) Prefetch<P>(t, p, i * 64);
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512bh x = (__m512bh)Broadcast32(a[r] + 2 * i);
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) acc[r][p] = _mm512_dpbf16_ps(acc[r][p], x, (__m512bh)wv[p]);
      }
    }
    StoreAccumulators<R, P>(t, acc, false);
  }
};

// INT4 weights with int8 activations, one group of 32 inputs at a time.
template <int R, int P>
struct Int4Tile {
  static void Run(const Tile& t) {
    __m512 acc[R][P];
    LoadAccumulators<R, P>(t, acc);
    const __m512i nibble = _mm512_set1_epi8(0x0f);
    const int64_t g0 = t.k0 / kInt4Group;
    const int64_t groups = t.kc / kInt4Group;
    const int64_t stride = t.panel_stride;
    NextSliceCursor next(t);
    for (int64_t g = g0; g < g0 + groups; ++g) {
      __m512i sum[R][P];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) sum[r][p] = _mm512_setzero_si512();
      }
#pragma GCC unroll 4
      for (int octet = 0; octet < 4; ++octet) {
        next.Step();
        __m512i lo[P], hi[P];
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) {
          const uint8_t* bytes = t.panel + p * stride + (g * 4 + octet) * 64;
          if (t.prefetch) Prefetch<P>(t, p, ((g - g0) * 4 + octet) * 64);
          const __m512i v = _mm512_load_si512(reinterpret_cast<const __m512i*>(bytes));
          lo[p] = _mm512_and_si512(v, nibble);
          hi[p] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const int8_t* a = t.qa + r * t.ld_q + g * kInt4Group + octet * 8;
          const __m512i x_lo = Broadcast32(a);
          const __m512i x_hi = Broadcast32(a + 4);
#pragma GCC unroll 8
          for (int p = 0; p < P; ++p) {
            sum[r][p] = _mm512_dpbusd_epi32(sum[r][p], lo[p], x_lo);
            sum[r][p] = _mm512_dpbusd_epi32(sum[r][p], hi[p], x_hi);
          }
        }
      }
      __m512 s[P];
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) s[p] = _mm512_loadu_ps(t.scales + p * t.scale_stride + g * 16);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512i corr = _mm512_set1_epi32(t.corr[r * t.ld_corr + g]);
        const __m512 a_scale = _mm512_set1_ps(t.a_scale[r * t.ld_corr + g]);
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p) {
          const __m512 d = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum[r][p], corr));
          acc[r][p] = _mm512_fmadd_ps(d, _mm512_mul_ps(s[p], a_scale), acc[r][p]);
        }
      }
    }
    StoreAccumulators<R, P>(t, acc, false);
  }
};

// Kernel tables [rows][panels], filled for 1..kMaxRows x 1..kMaxPanels.
using KernelTable = Kernel[kMaxRows + 1][kMaxPanels + 1];

template <template <int, int> class K, int R, int... Ps>
void FillRow(Kernel* row, std::integer_sequence<int, Ps...>) {
  ((row[Ps + 1] = &K<R, Ps + 1>::Run), ...);
}
template <template <int, int> class K, int... Rs>
void FillTable(KernelTable& table, std::integer_sequence<int, Rs...>) {
  (FillRow<K, Rs + 1>(table[Rs + 1], std::make_integer_sequence<int, kMaxPanels>()), ...);
}
template <template <int, int> class K>
struct Table {
  KernelTable kernels = {};
  Table() { FillTable<K>(kernels, std::make_integer_sequence<int, kMaxRows>()); }
};

// The tile shape and input block for a format and row count: rows and panels at most (row
// blocks are split evenly), inputs per call.
struct Blocking {
  int rows;
  int panels;
  int64_t input_block;  // a multiple of 32
};

// Measured on a Xeon (Sapphire/Emerald Rapids class, 2 threads, weights streaming from memory):
// 7 x 4 tiles over 128-input blocks ran m = 16..96 rows fastest (F32: 28 accumulators, 4 panel
// vectors and one broadcast in the 32 zmm registers); decode rows stream whole panels. F32 up
// to 32 rows runs 64-input blocks (a 16 KiB slice per panel group, so that it and the next one
// fit in L1: OLMoE T = 128, 16 rows per expert, 2.5% faster); more rows keep 128 (64 was 4%
// slower at OLMoE T = 512 and 6% at Mixtral T = 512; 256 no better), as does INT8.
Blocking BlockingFor(WeightFormat format, int64_t m) {
  constexpr int64_t kWhole = int64_t{1} << 40;
  if (format == WeightFormat::kInt4) {
    if (m <= 2) return {static_cast<int>(m), 4, kWhole};
    return {4, 2, kWhole};
  }
  if (m <= 2) return {static_cast<int>(m), 8, kWhole};
  if (m <= 4) return {static_cast<int>(m), 4, kWhole};
  return {7, 4, format == WeightFormat::kF32 && m <= 32 ? 64 : 128};
}

// Bytes per activation the kernels of a format read (GemmInputFor on AVX-512).
int64_t InputBytes(WeightFormat format) {
  switch (format) {
    case WeightFormat::kBF16:
      return 2;
    case WeightFormat::kInt4:
      return 1;
    case WeightFormat::kF32:
    case WeightFormat::kInt8:
      break;
  }
  return 4;
}

const KernelTable& TableFor(WeightFormat format) {
  static const Table<F32Tile> f32;
  static const Table<Bf16Tile> bf16;
  static const Table<Int8Tile> int8;
  static const Table<Int4Tile> int4;
  switch (format) {
    case WeightFormat::kBF16:
      return bf16.kernels;
    case WeightFormat::kInt8:
      return int8.kernels;
    case WeightFormat::kInt4:
      return int4.kernels;
    case WeightFormat::kF32:
      break;
  }
  return f32.kernels;
}

}  // namespace

void Avx512ConvertRowsToBf16(const float* x, int64_t ld_x, int64_t m, int64_t k, uint16_t* out,
                             int64_t ld_out) {
  // The same rounding as FloatToBf16, 16 at a time: (bits + 0x7fff + lsb) >> 16, NaN quieted.
  const __m512i round = _mm512_set1_epi32(0x7fff);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  const __m512i inf = _mm512_set1_epi32(0x7f800000);
  const __m512i quiet = _mm512_set1_epi32(0x40);
  const int64_t padded = RoundUp(k, kBf16Block);
  for (int64_t r = 0; r < m; ++r) {
    const float* row = x + r * ld_x;
    uint16_t* o = out + r * ld_out;
    for (int64_t i = 0; i < padded; i += 16) {
      const __mmask16 valid = i + 16 <= k
                                  ? __mmask16{0xffff}
                                  : static_cast<__mmask16>(i < k ? (1u << (k - i)) - 1 : 0u);
      const __m512i bits = _mm512_castps_si512(_mm512_maskz_loadu_ps(valid, row + i));
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), one);
      __m512i b = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, round), lsb), 16);
      const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, abs_mask), inf);
      b = _mm512_mask_or_epi32(b, nan, _mm512_srli_epi32(bits, 16), quiet);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), _mm512_cvtepi32_epi16(b));
    }
  }
}

void Avx512QuantizeRowsInt8(const float* x, int64_t ld_x, int64_t m, int64_t k, int8_t* q,
                            int64_t ld_q, float* scale, int32_t* corr, int64_t ld_corr) {
  // The portable version's operations lane by lane: max_ps(|x|, acc) keeps acc where x is NaN
  // (as std::max(amax, |x|) does), max_ps(y, -127) gives -127 for NaN (as std::max(-127, y)),
  // and the inputs past k are masked to 0 (not 0 * inv, which is NaN when inv overflowed).
  const int64_t groups = CeilDiv(k, kInt4Group);
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  const __m512 lo = _mm512_set1_ps(-127.0f);
  const __m512 hi = _mm512_set1_ps(127.0f);
  for (int64_t r = 0; r < m; ++r) {
    const float* row = x + r * ld_x;
    int8_t* qr = q + r * ld_q;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t begin = g * kInt4Group;
      const int64_t valid = std::min<int64_t>(kInt4Group, k - begin);
      const __mmask16 m0 =
          valid >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << valid) - 1);
      const __mmask16 m1 = valid >= 32  ? __mmask16{0xffff}
                           : valid > 16 ? static_cast<__mmask16>((1u << (valid - 16)) - 1)
                                        : __mmask16{0};
      const __m512 x0 = _mm512_maskz_loadu_ps(m0, row + begin);
      const __m512 x1 = _mm512_maskz_loadu_ps(m1, row + begin + 16);
      __m512 amax = _mm512_max_ps(_mm512_and_ps(x0, abs_mask), _mm512_setzero_ps());
      amax = _mm512_max_ps(_mm512_and_ps(x1, abs_mask), amax);
      const float s = _mm512_reduce_max_ps(amax) / 127.0f;
      const float inv = s == 0.0f ? 0.0f : 1.0f / s;
      scale[r * ld_corr + g] = s;
      const __m512 vinv = _mm512_set1_ps(inv);
      const auto quantize = [&](__m512 v, __mmask16 mask) {
        __m512 y = _mm512_roundscale_ps(_mm512_mul_ps(v, vinv),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
        return _mm512_maskz_cvtps_epi32(mask, y);
      };
      const __m512i q0 = quantize(x0, m0);
      const __m512i q1 = quantize(x1, m1);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + begin), _mm512_cvtepi32_epi8(q0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + begin + 16), _mm512_cvtepi32_epi8(q1));
      corr[r * ld_corr + g] = 8 * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
  }
}

void Avx512PackedGemm(const PackedGemmParams& p) {
  const PackedMatrix& w = *p.w;
  const WeightFormat format = w.format;
  const KernelTable& kernels = TableFor(format);
  const Blocking b = BlockingFor(format, p.m);
  // Inputs the kernels step over: BF16 and INT4 run over the zero-padded blocks.
  const int64_t k = w.stored_inputs();
  Tile t;
  t.lda = p.lda;
  t.ld16 = p.ld_bf16;
  t.ld_q = p.qa.ld_q;
  t.ld_corr = p.qa.ld_corr;
  t.panel_stride = w.panel_bytes;
  t.scale_stride = w.panel_scales;
  t.ldc = p.ldc;
  // Panel bytes per input, and inputs per inner step of the format's kernel.
  const int64_t bytes_per_input = w.bytes_per_input();
  t.bytes_per_input = bytes_per_input;
  const int64_t inputs_per_step = format == WeightFormat::kBF16   ? 2
                                  : format == WeightFormat::kInt4 ? 8
                                                                  : 1;
  const bool can_stream = CanStreamC(p);
  // The compact F32 / INT8 loop for more than 64 rows, where the weights are reused from the
  // caches and the tiles bound the time: 128 rows (k = 4096) ran 8-10% faster with it. Up to
  // 64 rows the weights' streaming bounds the time, and there the loop that prefetches the
  // next slice in every step was 4-6% faster (Mixtral F32 T = 128, 32 rows per expert).
  t.compact = p.m > 64;
  // Row blocks of nearly equal size (the first `extra` one row more).
  const int64_t row_blocks = CeilDiv(p.m, b.rows);
  const int64_t block_rows = p.m / std::max<int64_t>(row_blocks, 1);
  const int64_t extra = p.m - block_rows * row_blocks;
  // Slices (panel group, input block) in order: panel groups outermost (each panel's stream
  // runs on from one slice to the next), unless the rows' inputs do not fit in half of L2
  // (1 MiB): then input blocks outermost, so that the rows' block of inputs stays in L2 while
  // every panel group uses it (the partial sums wait in c, in L2), instead of coming from L3
  // again for each panel group (Mixtral's F32 down projection at 128 rows: 7 MiB of rows;
  // measured 1-4% faster there, and 10-15% slower at 16-32 rows, where the inputs fit).
  const int64_t input_blocks = std::max<int64_t>(CeilDiv(k, b.input_block), 1);
  const int64_t groups = CeilDiv(p.panel_end - p.panel_begin, b.panels);
  const bool blocks_outer = row_blocks > 1 && p.m * k * InputBytes(format) > (int64_t{1} << 20);
  const auto slice_panel = [&](int64_t i) {
    return p.panel_begin + (blocks_outer ? i % groups : i / input_blocks) * b.panels;
  };
  const auto slice_k0 = [&](int64_t i) {
    return (blocks_outer ? i / groups : i % input_blocks) * b.input_block;
  };
  const int64_t slices = groups * input_blocks;
  for (int64_t i = 0; i < slices; ++i) {
    const int64_t panel = slice_panel(i);
    const int64_t k0 = slice_k0(i);
    const int panels = static_cast<int>(std::min<int64_t>(b.panels, p.panel_end - panel));
    const int64_t last_cols = std::min<int64_t>(kPanelWidth, w.n - (panel + panels - 1) * 16);
    t.last_mask = static_cast<__mmask16>((1u << last_cols) - 1);
    t.panel = w.panel(panel);
    t.scales = w.panel_scale(panel);
    t.k0 = k0;
    t.kc = std::min(b.input_block, k - k0);
    t.first = k0 == 0;
    t.last = k0 + b.input_block >= k;
    t.slice_bytes = t.kc * bytes_per_input;
    // Streaming stores only where nothing reads the lines back (one pass over k): partial
    // sums stay in cache for the next input block.
    t.stream = can_stream && t.first && t.last;
    // Decode (one row block over all of k): the streams run on into the next tile's panels
    // (measured 7% faster Mixtral decode).
    t.wrap_panels = 0;
    if (row_blocks == 1 && t.last && t.first && panel + panels < p.panel_end) {
      t.wrap_panels = static_cast<int>(std::min<int64_t>(p.panel_end - panel - panels, panels));
      t.wrap_base = w.panel(panel + panels);
      t.wrap_stride = w.panel_bytes;
    }
    // The slice after this one, prefetched while the row blocks reuse this one. Only when
    // several row blocks share a slice: a slice streamed by one row block is prefetched ahead
    // in its own streams (measured faster for decode).
    t.next_base = nullptr;
    if (row_blocks > 1 && i + 1 < slices) {
      const int64_t next_panel = slice_panel(i + 1);
      const int64_t next_k0 = slice_k0(i + 1);
      t.next_base = w.panel(next_panel) + next_k0 * bytes_per_input;
      t.next_panels = static_cast<int>(std::min<int64_t>(b.panels, p.panel_end - next_panel));
      t.next_chunk = std::min(b.input_block, k - next_k0) * bytes_per_input;
    }
    t.next_stride = w.panel_bytes;
    const int64_t steps = CeilDiv(t.kc, inputs_per_step);
    t.next_lines =
        t.next_base == nullptr ? 0 : CeilDiv(t.next_panels * t.next_chunk / 64, row_blocks * steps);
    for (int64_t block = 0, r0 = 0; block < row_blocks; ++block) {
      const int rows = static_cast<int>(block_rows + (block < extra ? 1 : 0));
      // Only the first slice streams without having been prefetched by the one before.
      t.prefetch = row_blocks == 1 || (i == 0 && r0 == 0);
      t.next_line = block * steps * t.next_lines;
      t.c = p.c + r0 * p.ldc + (panel - p.panel_begin) * kPanelWidth;
      if (p.a != nullptr) t.a = p.a + r0 * p.lda;
      if (p.a_bf16 != nullptr) t.a16 = p.a_bf16 + r0 * p.ld_bf16;
      if (p.qa.q != nullptr) {
        t.qa = p.qa.q + r0 * p.qa.ld_q;
        t.a_scale = p.qa.scale + r0 * p.qa.ld_corr;
        t.corr = p.qa.corr + r0 * p.qa.ld_corr;
      }
      kernels[rows][panels](t);
      r0 += rows;
    }
  }
  // The streamed lines are visible to other threads once the write-combining buffers drain.
  if (can_stream) _mm_sfence();
}

}  // namespace moe::kernels
