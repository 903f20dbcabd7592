// AMX kernels for the packed GEMM (this file alone is built with the AMX and AVX-512 flags):
// BF16 weights times BF16 activations on tiles; other formats run the AVX-512 kernels.
//
// A 32-input block of a BF16 panel is exactly an AMX B tile (16 rows of input pairs x 16
// outputs, 1 KiB) and a block of 16 BF16 activation rows an A tile, so the kernel loads both in
// place. Tiles: up to 2 row tiles x 2 panels of F32 accumulators (C) with their A and B tiles,
// or 3 full row tiles x 2 panels with one A and one B register (Run3); each
// output sums its inputs in order, 32 at a time (TDPBF16PS), over the whole of k in the tile,
// so a row's result does not depend on the other rows or on how the work is split.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/packed_gemm.h"

namespace moe::kernels {
namespace {

// The 64-byte tile configuration (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

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
  _tile_loadconfig(&cfg);
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
};

// Copies the first `rows` rows and `cols` columns of a 16 x 16 scratch tile to c.
inline void CopyOut(const float* scratch, float* c, int64_t ldc, int rows, int cols) {
  for (int r = 0; r < rows; ++r) {
    std::memcpy(c + r * ldc, scratch + r * 16, static_cast<size_t>(cols) * sizeof(float));
  }
}

// Streams the first `rows` rows of a 16 x 16 scratch tile to c (64-byte aligned rows).
inline void StreamOut(const float* scratch, float* c, int64_t ldc, int rows) {
  for (int r = 0; r < rows; ++r) _mm512_stream_ps(c + r * ldc, _mm512_load_ps(scratch + r * 16));
}

// Stores C tile `tile` (rows x 16) to c: in place when all 16 columns are valid, else through a
// scratch tile; streamed through a scratch tile when `stream` (all 16 columns valid).
#define MOE_STORE_C(tile, c, ldc, rows, cols, stream)                       \
  do {                                                                      \
    if (stream) {                                                           \
      alignas(64) float scratch[16 * 16];                                   \
      _tile_stored(tile, scratch, 64);                                      \
      StreamOut(scratch, (c), (ldc), (rows));                               \
    } else if ((cols) == 16) {                                              \
      _tile_stored(tile, (c), (ldc) * static_cast<int64_t>(sizeof(float))); \
    } else {                                                                \
      alignas(64) float scratch[16 * 16];                                   \
      _tile_stored(tile, scratch, 64);                                      \
      CopyOut(scratch, (c), (ldc), (rows), (cols));                         \
    }                                                                       \
  } while (0)

// The prefetches of one input block: with `ahead`, every line of the panels' block 4 KiB
// ahead (measured 5-10% faster than one line per block, which leaves the rest to the hardware
// prefetcher); this block's share of the next slice (`next`, into L2).
template <int NT>
[[gnu::always_inline]] inline void PrefetchBlock(const AmxCall& k, const uint8_t* b0,
                                                 const uint8_t* b1, int64_t blk) {
  if (k.ahead) {
    for (int line = 0; line < 1024; line += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(b0 + 4096 + line), _MM_HINT_T0);
      if constexpr (NT == 2) {
        _mm_prefetch(reinterpret_cast<const char*>(b1 + 4096 + line), _MM_HINT_T0);
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

// MT row tiles x NT panels over every input block.
template <int MT, int NT>
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
  const uint8_t* b0 = k.panel;
  const uint8_t* b1 = k.panel + k.panel_stride;
  for (int64_t blk = 0; blk < k.blocks; ++blk) {
    const int64_t a_off = blk * 64;
    const int64_t b_off = blk * 1024;
    PrefetchBlock<NT>(k, b0 + b_off, b1 + b_off, blk);
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
  MOE_STORE_C(MOE_TILE_C00, k.c, k.ldc, k.rows[0], k.cols[0], k.stream);
  if constexpr (NT == 2) MOE_STORE_C(MOE_TILE_C01, k.c + 16, k.ldc, k.rows[0], k.cols[1], k.stream);
  if constexpr (MT == 2) {
    float* c1 = k.c + 16 * k.ldc;
    MOE_STORE_C(MOE_TILE_C10, c1, k.ldc, k.rows[1], k.cols[0], k.stream);
    if constexpr (NT == 2) {
      MOE_STORE_C(MOE_TILE_C11, c1 + 16, k.ldc, k.rows[1], k.cols[1], k.stream);
    }
  }
}

// Three full row tiles (48 rows) x NT panels over every input block, in the registers of the
// 2 x 2 form (the same all-16-row configuration): C(i, j) in 2i + j, one A register (6) loaded
// for each row tile in turn, one B register (7) per panel.
template <int NT>
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
  const uint8_t* b0 = k.panel;
  const uint8_t* b1 = k.panel + k.panel_stride;
  for (int64_t blk = 0; blk < k.blocks; ++blk) {
    const int64_t a_off = blk * 64;
    const int64_t b_off = blk * 1024;
    PrefetchBlock<NT>(k, b0 + b_off, b1 + b_off, blk);
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
  MOE_STORE_C(0, c0, k.ldc, 16, k.cols[0], k.stream);
  MOE_STORE_C(2, c1, k.ldc, 16, k.cols[0], k.stream);
  MOE_STORE_C(4, c2, k.ldc, 16, k.cols[0], k.stream);
  if constexpr (NT == 2) {
    MOE_STORE_C(1, c0 + 16, k.ldc, 16, k.cols[1], k.stream);
    MOE_STORE_C(3, c1 + 16, k.ldc, 16, k.cols[1], k.stream);
    MOE_STORE_C(5, c2 + 16, k.ldc, 16, k.cols[1], k.stream);
  }
}

}  // namespace

void AmxPackedGemm(const PackedGemmParams& p) {
  const PackedMatrix& w = *p.w;
  if (w.format != WeightFormat::kBF16) return Avx512PackedGemm(p);
  AmxCall k;
  k.lda_bytes = p.ld_bf16 * 2;
  k.a_tile_bytes = 16 * k.lda_bytes;
  k.panel_stride = w.panel_bytes;
  const int64_t blocks = w.stored_inputs() / kBf16Block;
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
  // k = 14336, at 128 rows: 3.5 MiB of inputs).
  const int64_t budget_blocks =
      std::max<int64_t>(16, (int64_t{3} << 19) / (2 * p.m * kBf16Block + 2 * 1024));
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
      // Only in one pass over k: where partial sums wait in c between chunks, its lines are in
      // cache already (streaming them then made Mixtral's down projection, k = 14336, slower).
      k.stream = can_stream && full && chunk >= blocks;
      k.panel = w.panel(panel) + b0 * 1024;
      // The slice after this one (the next chunk of these panels, else the first of the next
      // pair), spread over every block of every row pair of this one; only when several row
      // pairs share the panels: panels streamed by one row pair are prefetched ahead in their
      // own streams (measured faster, as for AVX-512 decode).
      k.next[0] = k.next[1] = nullptr;
      int64_t next_blocks = 0;
      if (passes > 1 && b0 + chunk < blocks) {
        next_blocks = std::min(chunk, blocks - b0 - chunk);
        for (int j = 0; j < panels; ++j) k.next[j] = w.panel(panel + j) + (b0 + chunk) * 1024;
      } else if (passes > 1 && panel + panels < p.panel_end) {
        next_blocks = std::min(chunk_blocks, blocks);
        for (int j = 0; j < 2 && panel + panels + j < p.panel_end; ++j) {
          k.next[j] = w.panel(panel + panels + j);
        }
      }
      k.next_lines = CeilDiv(next_blocks * 16, passes * k.blocks);
      for (int64_t r0 = 0, pass = 0; r0 < p.m; ++pass) {
        const bool triple = pass < triples;
        k.ahead = passes == 1 || (panel == p.panel_begin && b0 == 0 && r0 == 0);
        k.l1_ahead = triples == 0 && passes == 2 && blocks >= 128;
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
        if (triple) {
          panels == 2 ? Run3<2>(call) : Run3<1>(call);
        } else if (k.rows[1] > 0) {
          panels == 2 ? Run<2, 2>(call) : Run<2, 1>(call);
        } else {
          panels == 2 ? Run<1, 2>(call) : Run<1, 1>(call);
        }
        r0 += triple ? 48 : 32;
      }
    }
  }
  _tile_release();
  // The streamed lines are visible to other threads once the write-combining buffers drain.
  if (can_stream) _mm_sfence();
}

}  // namespace moe::kernels
