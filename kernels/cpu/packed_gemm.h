// The packed GEMM: rows of activations times a PackedMatrix, one column panel at a time, with
// microkernels chosen by the active CPU ISA (kernels/cpu/cpu_isa.h). MatmulNT (matmul.h) is the
// plain version of the same product.
#pragma once

#include <cstdint>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/packed_weights.h"

namespace moe::kernels {

// The activation format a packed GEMM reads, fixed by the weight format and the ISA:
//   kF32:  F32 rows (F32 and INT8 weights everywhere, BF16 weights on AVX2 / portable);
//   kBF16: BF16 rows padded to kBf16Block (BF16 weights on AVX-512 and AMX: the hardware's
//          BF16 dot products take both operands in BF16);
//   kInt8: int8 rows with a scale per group of 32 (INT4 weights).
enum class GemmInput { kF32, kBF16, kInt8 };
GemmInput GemmInputFor(WeightFormat format, CpuIsa isa);

// x [m, k] (row stride ld_x) to BF16 rows [m, ld_out] (FloatToBf16: round to nearest even),
// zero from k to RoundUp(k, kBf16Block) <= ld_out. AVX-512 when the CPU has it.
void ConvertRowsToBf16(const float* x, int64_t ld_x, int64_t m, int64_t k, uint16_t* out,
                       int64_t ld_out);

// Activations quantized for the INT4 kernels: symmetric int8 with one F32 scale per row and
// group of 32 inputs, and per group the correction 8 * sum(q) for the weights' +8 offset.
struct QuantizedRows {
  const int8_t* q = nullptr;  // [m, ld_q], inputs past k are 0; ld_q >= RoundUp(k, 32)
  int64_t ld_q = 0;
  const float* scale = nullptr;   // [m, ld_corr]
  const int32_t* corr = nullptr;  // [m, ld_corr], ld_corr >= ceil(k / 32)
  int64_t ld_corr = 0;
};

// x [m, k] (row stride ld_x) to QuantizedRows buffers sized as documented above. Each group of
// 32 inputs is independent: scale = max|x| / 127, q = clamp(nearbyint(x / scale), -127, 127)
// (NaN to -127); an all-zero group gets scale 0. AVX-512 when the CPU has it.
void QuantizeRowsInt8(const float* x, int64_t ld_x, int64_t m, int64_t k, int8_t* q, int64_t ld_q,
                      float* scale, int32_t* corr, int64_t ld_corr);
// The scalar QuantizeRowsInt8 (the reference), and the AVX-512 one (bitwise the same result).
void PortableQuantizeRowsInt8(const float* x, int64_t ld_x, int64_t m, int64_t k, int8_t* q,
                              int64_t ld_q, float* scale, int32_t* corr, int64_t ld_corr);
void Avx512QuantizeRowsInt8(const float* x, int64_t ld_x, int64_t m, int64_t k, int8_t* q,
                            int64_t ld_q, float* scale, int32_t* corr, int64_t ld_corr);

// C[m, columns of panels [panel_begin, panel_end)] = A . W^T (columns past W.n are not written),
// with the microkernels of the active ISA. A is read in the GemmInputFor format: `a`, `a_bf16`
// or `qa`. Single-threaded; callers split panels and rows across threads.
// NOTE: each output is a sum over k in one fixed order that depends only on the weights, the
// ISA and that output's own activation row, never on m, the panel range or other rows: results
// are bitwise identical however the work is split.
struct PackedGemmParams {
  const PackedMatrix* w = nullptr;
  const float* a = nullptr;  // [m, w->k], row stride lda
  int64_t lda = 0;
  const uint16_t* a_bf16 = nullptr;  // [m, ld_bf16] (ConvertRowsToBf16)
  int64_t ld_bf16 = 0;
  QuantizedRows qa;
  int64_t m = 0;
  int64_t panel_begin = 0;
  int64_t panel_end = 0;
  float* c = nullptr;  // row 0, the first column of panel_begin; row stride ldc
  int64_t ldc = 0;
  // C is written once here and read later by another pass (the down projection's output): the
  // AMX and AVX-512 kernels write its final values with non-temporal stores where c's rows
  // allow (64-byte aligned, whole panels, one pass over k), so that cold output lines are not
  // first read from memory. The values are the same either way.
  bool stream_c = false;
};
void PackedGemm(const PackedGemmParams& p);
// Whether the kernels may write p's final results with non-temporal stores: stream_c is asked
// for and c's rows are 64-byte aligned (c and its row stride).
bool CanStreamC(const PackedGemmParams& p);

// One microkernel call: rows x 16 outputs of one panel over inputs [k0, k0 + kc).
struct PanelTile {
  const float* a = nullptr;  // row 0 of the tile, input 0
  int64_t lda = 0;
  const int8_t* qa = nullptr;  // kInt4: row 0, input 0
  int64_t ld_q = 0;
  const float* a_scale = nullptr;  // kInt4: row 0, group 0; row stride ld_corr
  const int32_t* corr = nullptr;   // kInt4: row 0, group 0
  int64_t ld_corr = 0;
  const uint8_t* panel = nullptr;  // the panel's weights (input 0)
  const float* panel_scales = nullptr;
  int64_t k0 = 0;
  int64_t kc = 0;      // kInt4: a multiple of 32 (inputs are zero-padded)
  float* c = nullptr;  // row 0, the panel's column 0
  int64_t ldc = 0;
  int rows = 0;   // 1 .. MaxTileRows(format)
  int cols = 16;  // valid outputs of the panel (< 16 only for the last panel)
  // Consecutive panels in one call (TilePanels: > 1 only for 1-2 rows, all 16 outputs valid);
  // panel i starts at panel + i * panel_stride bytes, its scales at i * scale_stride floats.
  int panels = 1;
  int64_t panel_stride = 0;
  int64_t scale_stride = 0;
  // When set: the weights the next call will stream (kc inputs' worth, same layout), prefetched
  // a line per input while this call computes.
  const uint8_t* prefetch = nullptr;
  bool first = true;  // start from 0, else add to c
  bool last = true;   // apply the per-column / per-row scales
};
using PanelKernel = void (*)(const PanelTile&);

// Rows per microkernel call for a format.
int MaxTileRows(WeightFormat format);
// Panels per microkernel call for `rows` rows of a format (1, or more for decode rows).
int TilePanels(WeightFormat format, int rows);

// The ISA-specific microkernels (packed_gemm_avx2.cc, packed_gemm_portable.cc), run by
// PackedGemm's panel loop.
PanelKernel Avx2PanelKernel(WeightFormat format);
PanelKernel PortablePanelKernel(WeightFormat format);

// The AVX-512 and AMX GEMMs, with their own blocking (packed_gemm_avx512.cc,
// packed_gemm_amx.cc): same contract as PackedGemm. AmxPackedGemm runs BF16 weights on AMX
// tiles and every other format as Avx512PackedGemm does.
void Avx512PackedGemm(const PackedGemmParams& p);
void AmxPackedGemm(const PackedGemmParams& p);
// ConvertRowsToBf16 with AVX-512 (bitwise the same result).
void Avx512ConvertRowsToBf16(const float* x, int64_t ld_x, int64_t m, int64_t k, uint16_t* out,
                             int64_t ld_out);

}  // namespace moe::kernels
