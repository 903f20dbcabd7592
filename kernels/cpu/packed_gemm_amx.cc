// AMX kernels for the packed GEMM (this file alone is built with the AMX and AVX-512 flags):
// BF16 and INT8 weights times BF16 activations on tiles; other formats run the AVX-512 kernels.
//
// A 32-input block of a BF16 panel is exactly an AMX B tile (16 rows of input pairs x 16
// outputs, 1 KiB) and a block of 16 BF16 activation rows an A tile, so the kernel loads both in
// place. INT8 panels stream as int8 (half the bytes) and the first row pass over a slice expands
// each block into a BF16 B tile in a per-thread buffer (|q| <= 127 is exact in BF16), which the
// later row passes reuse; the column scales multiply the final sums. Tiles: up to 2 row tiles x 2
// panels of F32 accumulators (C) with their A and B tiles, or 3 full row tiles x 2 panels with one
// A and one B register (Run3); each output sums its inputs in order, 32 at a time (TDPBF16PS), over
// the whole of k in the tile, so a row's result does not depend on the other rows or on how the
// work is split.
//
// NOTE: GCC 12's AVX-512 headers start some conversions from _mm512_undefined_*(), which
// -Wmaybe-uninitialized reports once inlined here (as in packed_gemm_avx512.cc).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/amx_tile_config.h"
#include "kernels/cpu/packed_gemm.h"

namespace moe::kernels {
namespace {

// Tile registers (macros: the AMX intrinsics paste the register number into the instruction).
// C(i, j) = row tile i, panel j.
#define MOE_TILE_C00 0
#define MOE_TILE_C01 1
#define MOE_TILE_C10 2
#define MOE_TILE_C11 3
#define MOE_TILE_A0 4
#define MOE_TILE_A1 5
#define MOE_TILE_B0 6
#define MOE_TILE_B1 7
constexpr int kC00 = MOE_TILE_C00, kC01 = MOE_TILE_C01, kC10 = MOE_TILE_C10, kC11 = MOE_TILE_C11,
              kA0 = MOE_TILE_A0, kA1 = MOE_TILE_A1, kB0 = MOE_TILE_B0, kB1 = MOE_TILE_B1;

// Loads the configuration for row tiles of rows0 and rows1 rows (rows1 = 0: one row tile),
// unless `current` says it is loaded already.
// NOTE: the configuration is loaded afresh in every AmxPackedGemm call and released at its end:
// other AMX code on the thread (oneDNN in `moe bench --compare`) configures tiles too.
void Configure(int rows0, int rows1, int* current) {
  const int key = rows0 * 32 + rows1;
  if (key == *current) return;
  TileConfig cfg;
  for (int t : {kC00, kC01, kA0}) {
    cfg.rows[t] = static_cast<uint8_t>(rows0);
    cfg.colsb[t] = 64;
  }
  if (rows1 > 0) {
    for (int t : {kC10, kC11, kA1}) {
      cfg.rows[t] = static_cast<uint8_t>(rows1);
      cfg.colsb[t] = 64;
    }
  }
  for (int t : {kB0, kB1}) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  LoadTileConfig(cfg);
  *current = key;
}

struct AmxCall {
  const uint16_t* a = nullptr;  // row 0 of the first row tile, input 0
  int64_t lda_bytes = 0;
  int64_t a_tile_bytes = 0;        // bytes from row tile 0 to row tile 1 (16 rows)
  const uint8_t* panel = nullptr;  // first panel, input 0
  int64_t panel_stride = 0;
  int64_t blocks = 0;  // 32-input blocks
  float* c = nullptr;  // row 0, column 0 of the first panel
  int64_t ldc = 0;
  int rows[2] = {0, 0};  // rows of each row tile (0: absent)
  int cols[2] = {0, 0};  // valid outputs of each panel (0: absent)
  bool first = true;     // start from zero, else from the partial sums in c (16 valid columns)
  // Final sums of whole panels into 64-byte aligned rows of c: through a scratch tile and
  // non-temporal stores (a tile store into cold lines reads them from memory first: measured
  // 1.5x slower calls for 64 rows at k = 1024 with the output out of cache).
  bool stream = false;
  // Prefetching: `ahead` streams the call's own panels 4 KiB ahead (their first pass), every line;
  // `next_lines` lines of `next` per input block are prefetched (the panels the call after this
  // one streams, spread over this call's blocks, into L2: OLMoE BF16 T = 512 5% faster than
  // into L1 on session 4's machine, the same elsewhere).
  bool ahead = false;
  // Row tiles that reuse the panels: the A and B tiles two blocks ahead are prefetched into L1,
  // so that the tile loads hit L1 instead of L2. Only for two row pairs over k >= 4096: measured
  // on session 4's machine, it made Mixtral BF16 T = 128 (32-40 rows per expert) 9% faster, but
  // OLMoE T = 512 (k = 2048, 1024) and Mixtral T = 512 (4-5 row pairs) 8% slower.
  bool l1_ahead = false;
  const uint8_t* next[2] = {nullptr, nullptr};  // the next slice of each panel (null: none)
  int64_t next_lines = 0;                       // lines of each per block
  // INT8: `src` are the int8 panels (input 0 of this call's first block), `valid` inputs from
  // there (the rest read as zero); `panel` and `panel_stride` address the BF16 tiles they
  // expand to. `convert`: this pass expands every block into its tile first (else an earlier
  // pass did); `slot_mask`: block b's tile is at (b & slot_mask) KiB (a ring when every pass
  // expands its own). `scales`: the column scales of each panel, applied to the final sums.
  const int8_t* src[2] = {nullptr, nullptr};
  int64_t valid = 0;
  bool convert = false;
  int64_t slot_mask = -1;
  const float* scales[2] = {nullptr, nullptr};
  // With `ahead`: where each panel's stream runs on past the call's blocks (null: nowhere).
  const uint8_t* wrap[2] = {nullptr, nullptr};
};

// Bytes of one 32-input block of a panel as stored: BF16 (an AMX B tile) and INT8.
constexpr int64_t kBf16BlockBytes = 1024;
constexpr int64_t kInt8BlockBytes = 512;
// Blocks per panel of the per-thread buffer of expanded INT8 tiles (two panels: 256 KiB).
constexpr int64_t kInt8BufferBlocks = 128;

// BF16 bits of the integers 0..127 (exact: at most 7 significant bits), split into their high
// and low bytes: the tables of ExpandInt8Block's byte lookups.
struct Int8ToBf16Tables {
  alignas(64) uint8_t hi[128];
  alignas(64) uint8_t lo[128];
  // The bytes of a 64-byte load (inputs 4j..4j+3 of 16 columns) in the order that the byte
  // unpacks turn into two B tile rows: 128-bit lane L holds words 8L..8L+7 of row 2j (bytes
  // 0-7) and of row 2j + 1 (bytes 8-15); word w of a row is column w / 2, input w % 2.
  alignas(64) uint8_t order[64];
  constexpr Int8ToBf16Tables() : hi(), lo(), order() {
    for (int a = 1; a < 128; ++a) {
      int e = 0;
      while ((a >> (e + 1)) != 0) ++e;
      const int bits = (127 + e) << 7 | ((a << (7 - e)) & 0x7f);
      hi[a] = static_cast<uint8_t>(bits >> 8);
      lo[a] = static_cast<uint8_t>(bits & 0xff);
    }
    for (int lane = 0; lane < 4; ++lane) {
      for (int b = 0; b < 16; ++b) {
        const int row = b / 8;
        const int word = 8 * lane + b % 8;
        order[16 * lane + b] = static_cast<uint8_t>((2 * row + word % 2) * 16 + word / 2);
      }
    }
  }
};
constexpr Int8ToBf16Tables kInt8ToBf16;

// Expands one 32-input block of an INT8 panel (inputs [0, valid) of src, 16 bytes each; the
// rest zero) into a BF16 B tile: row i holds inputs 2i and 2i + 1 of the 16 columns,
// interleaved as in a BF16 panel. Per 64 weights: one byte permute into tile order, |q|
// looked up in the two byte tables, the sign put back, two byte unpacks into words (2x faster
// than widening to F32 and converting: the expansion bounds INT8 decode).
[[gnu::always_inline]] inline void ExpandInt8Block(const int8_t* src, int64_t valid,
                                                   uint8_t* tile) {
  const __m512i hi0 = _mm512_load_si512(kInt8ToBf16.hi);
  const __m512i hi1 = _mm512_load_si512(kInt8ToBf16.hi + 64);
  const __m512i lo0 = _mm512_load_si512(kInt8ToBf16.lo);
  const __m512i lo1 = _mm512_load_si512(kInt8ToBf16.lo + 64);
  const __m512i order = _mm512_load_si512(kInt8ToBf16.order);
  const __m512i sign = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t j = 0; j < 8; ++j) {
    const int64_t bytes = std::clamp<int64_t>((valid - 4 * j) * 16, 0, 64);
    const __mmask64 mask = bytes >= 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1;
    const __m512i q = _mm512_permutexvar_epi8(order, _mm512_maskz_loadu_epi8(mask, src + 64 * j));
    const __m512i a = _mm512_abs_epi8(q);
    const __m512i lo = _mm512_permutex2var_epi8(lo0, a, lo1);
    // hi | (q & sign): the high byte of bf16(|q|) with q's sign bit.
    const __m512i hi =
        _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(hi0, a, hi1), q, sign, 0xf8);
    _mm512_store_si512(tile + 128 * j, _mm512_unpacklo_epi8(lo, hi));
    _mm512_store_si512(tile + 128 * j + 64, _mm512_unpackhi_epi8(lo, hi));
  }
}

// A compiler barrier between the vector stores of expanded tiles and the tile loads that read
// them: GCC's tileloadd asm names no memory operand, so without it the stores could be moved
// past the loads or dropped as dead (nothing else reads the buffer).
[[gnu::always_inline]] inline void TilesWritten() { asm volatile("" : : : "memory"); }

// Stores the first `rows` rows and `cols` columns of a 16 x 16 scratch tile to c, times the
// column scales when `scales` is not null (INT8's final sums); streamed when `stream` (64-byte
// aligned rows, all 16 columns valid).
inline void StoreOut(const float* scratch, const float* scales, float* c, int64_t ldc, int rows,
                     int cols, bool stream) {
  const __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1);
  for (int r = 0; r < rows; ++r) {
    __m512 v = _mm512_load_ps(scratch + r * 16);
    if (scales != nullptr) v = _mm512_mul_ps(v, _mm512_loadu_ps(scales));
    if (stream) {
      _mm512_stream_ps(c + r * ldc, v);
    } else {
      _mm512_mask_storeu_ps(c + r * ldc, mask, v);
    }
  }
}

// Stores C tile `tile` (rows x 16) to c: in place when all 16 columns are valid and nothing is
// scaled or streamed, else through a scratch tile (StoreOut).
#define MOE_STORE_C(tile, c, ldc, rows, cols, stream, scales)               \
  do {                                                                      \
    if ((scales) == nullptr && !(stream) && (cols) == 16) {                 \
      _tile_stored(tile, (c), (ldc) * static_cast<int64_t>(sizeof(float))); \
    } else {                                                                \
      alignas(64) float scratch[16 * 16];                                   \
      _tile_stored(tile, scratch, 64);                                      \
      StoreOut(scratch, (scales), (c), (ldc), (rows), (cols), (stream));    \
    }                                                                       \
  } while (0)

// The prefetches of one input block (b0, b1: the panels' block as stored, kBlockBytes each):
// with `ahead`, every line of the panels' block kAhead bytes ahead, running on into the next
// panels (`wrap`) past the end of the call's blocks (BF16: 4 KiB into L1, measured 5-10% faster
// than one line per block, which leaves the rest to the hardware prefetcher; INT8 decode:
// 2 KiB into L2 and on into the next panels, 10-15% faster than BF16's in a one-GEMM probe);
// this block's share of the next slice (`next`, into L2).
template <int NT, int64_t kBlockBytes>
[[gnu::always_inline]] inline void PrefetchBlock(const AmxCall& k, const uint8_t* b0,
                                                 const uint8_t* b1, int64_t blk) {
  constexpr bool kInt8 = kBlockBytes == kInt8BlockBytes;
  constexpr int64_t kAhead = kInt8 ? 2048 : 4096;
  constexpr _mm_hint kHint = kInt8 ? _MM_HINT_T1 : _MM_HINT_T0;
  if (k.ahead) {
    const int64_t end = k.blocks * kBlockBytes;
    for (int64_t line = 0; line < kBlockBytes; line += 64) {
      const int64_t past = blk * kBlockBytes + kAhead + line - end;  // >= 0: past the end
      const uint8_t* const panels[2] = {b0, b1};
      for (int j = 0; j < NT; ++j) {
        const uint8_t* address = past < 0               ? panels[j] + kAhead + line
                                 : k.wrap[j] != nullptr ? k.wrap[j] + past
                                                        : nullptr;
        if (address != nullptr) _mm_prefetch(reinterpret_cast<const char*>(address), kHint);
      }
    }
  }
  for (const uint8_t* next : k.next) {
    if (next == nullptr) continue;
    const uint8_t* line = next + blk * k.next_lines * 64;
    for (int64_t i = 0; i < k.next_lines; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(line + i * 64), _MM_HINT_T1);
    }
  }
}

// Block blk's prefetches and, for INT8 passes that expand the tiles, its B tiles (b0, b1).
template <int NT, bool kInt8>
[[gnu::always_inline]] inline void PrepareBlock(const AmxCall& k, uint8_t* b0, uint8_t* b1,
                                                int64_t blk) {
  if constexpr (kInt8) {
    const int8_t* s0 = k.src[0] + blk * kInt8BlockBytes;
    // One panel: src[1] is null and b1 unused (no offset applied to a null pointer).
    const int8_t* s1 = NT == 2 ? k.src[1] + blk * kInt8BlockBytes : s0;
    PrefetchBlock<NT, kInt8BlockBytes>(k, reinterpret_cast<const uint8_t*>(s0),
                                       reinterpret_cast<const uint8_t*>(s1), blk);
    if (k.convert) {
      ExpandInt8Block(s0, k.valid - blk * kBf16Block, b0);
      if constexpr (NT == 2) ExpandInt8Block(s1, k.valid - blk * kBf16Block, b1);
      TilesWritten();
    }
  } else {
    PrefetchBlock<NT, kBf16BlockBytes>(k, b0, b1, blk);
  }
}

// MT row tiles x NT panels over every input block.
template <int MT, int NT, bool kInt8>
void Run(const AmxCall& k) {
  if (k.first) {
    _tile_zero(MOE_TILE_C00);
    if constexpr (NT == 2) _tile_zero(MOE_TILE_C01);
    if constexpr (MT == 2) _tile_zero(MOE_TILE_C10);
    if constexpr (MT == 2 && NT == 2) _tile_zero(MOE_TILE_C11);
  } else {
    const int64_t stride = k.ldc * static_cast<int64_t>(sizeof(float));
    _tile_loadd(MOE_TILE_C00, k.c, stride);
    if constexpr (NT == 2) _tile_loadd(MOE_TILE_C01, k.c + 16, stride);
    if constexpr (MT == 2) _tile_loadd(MOE_TILE_C10, k.c + 16 * k.ldc, stride);
    if constexpr (MT == 2 && NT == 2) _tile_loadd(MOE_TILE_C11, k.c + 16 * k.ldc + 16, stride);
  }
  const uint8_t* a0 = reinterpret_cast<const uint8_t*>(k.a);
  const uint8_t* a1 = a0 + k.a_tile_bytes;
  uint8_t* b0 = const_cast<uint8_t*>(k.panel);
  uint8_t* b1 = b0 + k.panel_stride;
  for (int64_t blk = 0; blk < k.blocks; ++blk) {
    const int64_t a_off = blk * 64;
    const int64_t b_off = (blk & k.slot_mask) * kBf16BlockBytes;
    PrepareBlock<NT, kInt8>(k, b0 + b_off, b1 + b_off, blk);
    if (k.l1_ahead && blk + 2 < k.blocks) {
      for (int r = 0; r < 16; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(a0 + a_off + 128 + r * k.lda_bytes),
                     _MM_HINT_T0);
        if constexpr (MT == 2) {
          _mm_prefetch(reinterpret_cast<const char*>(a1 + a_off + 128 + r * k.lda_bytes),
                       _MM_HINT_T0);
        }
        _mm_prefetch(reinterpret_cast<const char*>(b0 + b_off + 2048 + r * 64), _MM_HINT_T0);
        if constexpr (NT == 2) {
          _mm_prefetch(reinterpret_cast<const char*>(b1 + b_off + 2048 + r * 64), _MM_HINT_T0);
        }
      }
    }
    _tile_loadd(MOE_TILE_A0, a0 + a_off, k.lda_bytes);
    _tile_loadd(MOE_TILE_B0, b0 + b_off, 64);
    _tile_dpbf16ps(MOE_TILE_C00, MOE_TILE_A0, MOE_TILE_B0);
    if constexpr (NT == 2) {
      _tile_loadd(MOE_TILE_B1, b1 + b_off, 64);
      _tile_dpbf16ps(MOE_TILE_C01, MOE_TILE_A0, MOE_TILE_B1);
    }
    if constexpr (MT == 2) {
      _tile_loadd(MOE_TILE_A1, a1 + a_off, k.lda_bytes);
      _tile_dpbf16ps(MOE_TILE_C10, MOE_TILE_A1, MOE_TILE_B0);
      if constexpr (NT == 2) _tile_dpbf16ps(MOE_TILE_C11, MOE_TILE_A1, MOE_TILE_B1);
    }
  }
  MOE_STORE_C(MOE_TILE_C00, k.c, k.ldc, k.rows[0], k.cols[0], k.stream, k.scales[0]);
  if constexpr (NT == 2) {
    MOE_STORE_C(MOE_TILE_C01, k.c + 16, k.ldc, k.rows[0], k.cols[1], k.stream, k.scales[1]);
  }
  if constexpr (MT == 2) {
    float* c1 = k.c + 16 * k.ldc;
    MOE_STORE_C(MOE_TILE_C10, c1, k.ldc, k.rows[1], k.cols[0], k.stream, k.scales[0]);
    if constexpr (NT == 2) {
      MOE_STORE_C(MOE_TILE_C11, c1 + 16, k.ldc, k.rows[1], k.cols[1], k.stream, k.scales[1]);
    }
  }
}

// Three full row tiles (48 rows) x NT panels over every input block, in the registers of the
// 2 x 2 form (the same all-16-row configuration): C(i, j) in 2i + j, one A register (6) loaded
// for each row tile in turn, one B register (7) per panel.
template <int NT, bool kInt8>
void Run3(const AmxCall& k) {
  const int64_t stride = k.ldc * static_cast<int64_t>(sizeof(float));
  float* c0 = k.c;
  float* c1 = k.c + 16 * k.ldc;
  float* c2 = k.c + 32 * k.ldc;
  if (k.first) {
    _tile_zero(0);
    _tile_zero(2);
    _tile_zero(4);
    if constexpr (NT == 2) {
      _tile_zero(1);
      _tile_zero(3);
      _tile_zero(5);
    }
  } else {
    _tile_loadd(0, c0, stride);
    _tile_loadd(2, c1, stride);
    _tile_loadd(4, c2, stride);
    if constexpr (NT == 2) {
      _tile_loadd(1, c0 + 16, stride);
      _tile_loadd(3, c1 + 16, stride);
      _tile_loadd(5, c2 + 16, stride);
    }
  }
  const uint8_t* a0 = reinterpret_cast<const uint8_t*>(k.a);
  const uint8_t* a1 = a0 + k.a_tile_bytes;
  const uint8_t* a2 = a1 + k.a_tile_bytes;
  uint8_t* b0 = const_cast<uint8_t*>(k.panel);
  uint8_t* b1 = b0 + k.panel_stride;
  for (int64_t blk = 0; blk < k.blocks; ++blk) {
    const int64_t a_off = blk * 64;
    const int64_t b_off = (blk & k.slot_mask) * kBf16BlockBytes;
    PrepareBlock<NT, kInt8>(k, b0 + b_off, b1 + b_off, blk);
    // Panel 0 down the row tiles, panel 1 back up them (the last A tile serves both).
    _tile_loadd(7, b0 + b_off, 64);
    _tile_loadd(6, a0 + a_off, k.lda_bytes);
    _tile_dpbf16ps(0, 6, 7);
    _tile_loadd(6, a1 + a_off, k.lda_bytes);
    _tile_dpbf16ps(2, 6, 7);
    _tile_loadd(6, a2 + a_off, k.lda_bytes);
    _tile_dpbf16ps(4, 6, 7);
    if constexpr (NT == 2) {
      _tile_loadd(7, b1 + b_off, 64);
      _tile_dpbf16ps(5, 6, 7);
      _tile_loadd(6, a1 + a_off, k.lda_bytes);
      _tile_dpbf16ps(3, 6, 7);
      _tile_loadd(6, a0 + a_off, k.lda_bytes);
      _tile_dpbf16ps(1, 6, 7);
    }
  }
  MOE_STORE_C(0, c0, k.ldc, 16, k.cols[0], k.stream, k.scales[0]);
  MOE_STORE_C(2, c1, k.ldc, 16, k.cols[0], k.stream, k.scales[0]);
  MOE_STORE_C(4, c2, k.ldc, 16, k.cols[0], k.stream, k.scales[0]);
  if constexpr (NT == 2) {
    MOE_STORE_C(1, c0 + 16, k.ldc, 16, k.cols[1], k.stream, k.scales[1]);
    MOE_STORE_C(3, c1 + 16, k.ldc, 16, k.cols[1], k.stream, k.scales[1]);
    MOE_STORE_C(5, c2 + 16, k.ldc, 16, k.cols[1], k.stream, k.scales[1]);
  }
}

// One pass of row tiles over a slice: Run3, Run or the INT8 forms.
template <bool kInt8>
void RunPass(const AmxCall& call, bool triple, int panels) {
  if (triple) {
    panels == 2 ? Run3<2, kInt8>(call) : Run3<1, kInt8>(call);
  } else if (call.rows[1] > 0) {
    panels == 2 ? Run<2, 2, kInt8>(call) : Run<2, 1, kInt8>(call);
  } else {
    panels == 2 ? Run<1, 2, kInt8>(call) : Run<1, 1, kInt8>(call);
  }
}

}  // namespace

void AmxPackedGemm(const PackedGemmParams& p) {
  const PackedMatrix& w = *p.w;
  const bool int8 = w.format == WeightFormat::kInt8;
  if (w.format != WeightFormat::kBF16 && !int8) return Avx512PackedGemm(p);
  // INT8's expanded tiles: two panels of a slice, reused by every row pass after the first.
  alignas(64) static thread_local uint8_t int8_tiles[2 * kInt8BufferBlocks * kBf16BlockBytes];
  const int64_t block_bytes = int8 ? kInt8BlockBytes : kBf16BlockBytes;
  AmxCall k;
  k.lda_bytes = p.ld_bf16 * 2;
  k.a_tile_bytes = 16 * k.lda_bytes;
  k.panel_stride = int8 ? kInt8BufferBlocks * kBf16BlockBytes : w.panel_bytes;
  const int64_t blocks = CeilDiv(w.stored_inputs(), kBf16Block);
  k.ldc = p.ldc;
  if (blocks == 0) {  // no inputs: zeros
    for (int64_t r = 0; r < p.m; ++r) {
      const int64_t c0 = p.panel_begin * kPanelWidth;
      const int64_t c1 = std::min(w.n, p.panel_end * kPanelWidth);
      std::fill(p.c + r * p.ldc, p.c + r * p.ldc + (c1 - c0), 0.0f);
    }
    return;
  }
  int config = -1;
  const bool can_stream = CanStreamC(p);
  // Row passes over each panel pair: pairs of row tiles (32 rows), or first passes of three
  // full row tiles (48 rows) where that takes fewer passes (65-96 rows: 2 instead of 3; 128:
  // 3 instead of 4). Each pass after the first reads the panels from L2; three row tiles run
  // 1.45x faster from there (measured at 96 rows), the same from memory, and at 64 rows
  // (48 + 16) they were slower than two pairs. OLMoE BF16 skewed T = 128 ~6%, T = 512 2-3%
  // faster, Mixtral T = 512 the same within the noise (session 5).
  const int64_t pair_passes = CeilDiv(p.m, 32);
  const int64_t triple_passes = p.m / 48 + CeilDiv(p.m % 48, 32);
  const int64_t triples = triple_passes < pair_passes ? p.m / 48 : 0;
  const int64_t passes = triples + CeilDiv(p.m - 48 * triples, 32);
  // Inputs per pass: all of k when the rows' BF16 inputs and a panel pair fit in about 1.5 MiB
  // of the 2 MiB L2, else equal chunks that do (the partial sums wait in c between chunks), so
  // that every row pair after the first finds its inputs in L2 (Mixtral's down projection,
  // k = 14336, at 128 rows: 3.5 MiB of inputs). INT8 chunks also fit its tile buffer.
  const int64_t budget_blocks =
      std::min(std::max<int64_t>(16, (int64_t{3} << 19) / (2 * p.m * kBf16Block + 2 * 1024)),
               int8 && passes > 1 ? kInt8BufferBlocks : blocks);
  const int64_t chunk_blocks = CeilDiv(blocks, CeilDiv(blocks, budget_blocks));
  for (int64_t panel = p.panel_begin; panel < p.panel_end; panel += 2) {
    const int panels = panel + 1 < p.panel_end ? 2 : 1;
    for (int j = 0; j < 2; ++j) {
      k.cols[j] = j < panels ? static_cast<int>(std::min<int64_t>(16, w.n - (panel + j) * 16)) : 0;
    }
    // Partial sums are kept in c, which has 16 columns per panel only when they are all valid.
    const bool full = k.cols[0] == 16 && (panels == 1 || k.cols[1] == 16);
    const int64_t chunk = full ? std::min(chunk_blocks, blocks) : blocks;
    for (int64_t b0 = 0; b0 < blocks; b0 += chunk) {
      k.blocks = std::min(chunk, blocks - b0);
      k.first = b0 == 0;
      const bool last = b0 + chunk >= blocks;
      // Only in one pass over k: where partial sums wait in c between chunks, its lines are in
      // cache already (streaming them then made Mixtral's down projection, k = 14336, slower).
      k.stream = can_stream && full && chunk >= blocks;
      // The slice as stored, and (INT8) the tiles it expands to: the first pass expands every
      // block and the others reuse them, unless one pass is all (decode) or the slice exceeds
      // the buffer (a partial panel over more than kInt8BufferBlocks blocks): then every pass
      // expands its own blocks into a ring of 16 tiles per panel, which stays in L1.
      k.panel = int8 ? int8_tiles : w.panel(panel) + b0 * block_bytes;
      const bool ring = int8 && (passes == 1 || k.blocks > kInt8BufferBlocks);
      k.slot_mask = ring ? 15 : -1;
      for (int j = 0; j < 2; ++j) {
        const bool present = int8 && j < panels;
        k.src[j] = present ? reinterpret_cast<const int8_t*>(w.panel(panel + j) + b0 * block_bytes)
                           : nullptr;
        k.scales[j] = present && last ? w.panel_scale(panel + j) : nullptr;
      }
      k.valid = w.k - b0 * kBf16Block;
      // Past the call's blocks the `ahead` streams run on in memory order (the next chunk of the
      // same panel, or the next panel); INT8 decode's run on into the next pair's panels.
      for (int j = 0; j < 2; ++j) {
        const int64_t after = panel + panels + j;
        k.wrap[j] = int8 && passes == 1 && last
                        ? (after < p.panel_end ? w.panel(after) : nullptr)
                        : w.panel(panel + j) + (b0 + k.blocks) * block_bytes;
      }
      // The slice after this one (the next chunk of these panels, else the first of the next
      // pair), spread over every block of every row pair of this one; only when several row
      // pairs share the panels: panels streamed by one row pair are prefetched ahead in their
      // own streams (measured faster, as for AVX-512 decode).
      k.next[0] = k.next[1] = nullptr;
      int64_t next_blocks = 0;
      if (passes > 1 && b0 + chunk < blocks) {
        next_blocks = std::min(chunk, blocks - b0 - chunk);
        for (int j = 0; j < panels; ++j) {
          k.next[j] = w.panel(panel + j) + (b0 + chunk) * block_bytes;
        }
      } else if (passes > 1 && panel + panels < p.panel_end) {
        next_blocks = std::min(chunk_blocks, blocks);
        for (int j = 0; j < 2 && panel + panels + j < p.panel_end; ++j) {
          k.next[j] = w.panel(panel + panels + j);
        }
      }
      k.next_lines = CeilDiv(next_blocks * (block_bytes / 64), passes * k.blocks);
      for (int64_t r0 = 0, pass = 0; r0 < p.m; ++pass) {
        const bool triple = pass < triples;
        k.ahead = passes == 1 || (panel == p.panel_begin && b0 == 0 && r0 == 0);
        k.l1_ahead = !int8 && triples == 0 && passes == 2 && blocks >= 128;
        k.convert = int8 && (pass == 0 || ring);
        k.rows[0] = static_cast<int>(std::min<int64_t>(16, p.m - r0));
        k.rows[1] = static_cast<int>(std::clamp<int64_t>(p.m - r0 - 16, 0, 16));
        Configure(k.rows[0], k.rows[1], &config);
        k.a = p.a_bf16 + r0 * p.ld_bf16 + b0 * kBf16Block;
        k.c = p.c + r0 * p.ldc + (panel - p.panel_begin) * kPanelWidth;
        AmxCall call = k;
        // NOTE: each pass prefetches its share of the next slice; the cursor may run past it by
        // less than one block's share (prefetches never fault).
        for (const uint8_t*& next : call.next) {
          if (next != nullptr) next += pass * k.blocks * k.next_lines * 64;
        }
        int8 ? RunPass<true>(call, triple, panels) : RunPass<false>(call, triple, panels);
        r0 += triple ? 48 : 32;
      }
    }
  }
  _tile_release();
  // The streamed lines are visible to other threads once the write-combining buffers drain.
  if (can_stream) _mm_sfence();
}

}  // namespace moe::kernels
