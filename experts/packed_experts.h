// Expert weights packed for the CPU microkernels, and the packed grouped GEMM that runs them:
// gate and up projections in one pass over each row tile with the activation fused into its
// epilogue, then the down projection writing each row where the combine reads it.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/moe_config.pb.h"
#include "experts/expert_bank.h"
#include "experts/expert_weights.h"
#include "kernels/cpu/packed_gemm.h"
#include "kernels/cpu/packed_weights.h"
#include "moe/base/scratch_buffer.h"

namespace moe::experts {

struct PackedExperts {
  kernels::WeightFormat format = kernels::WeightFormat::kF32;
  config::Activation activation = config::ACTIVATION_SWIGLU;
  int64_t num_experts = 0;
  int64_t d_model = 0;
  int64_t d_ff = 0;
  std::vector<kernels::PackedMatrix> gate;  // [num_experts] of [d_ff, d_model]; empty if ungated
  std::vector<kernels::PackedMatrix> up;    // [num_experts] of [d_ff, d_model]
  std::vector<kernels::PackedMatrix> down;  // [num_experts] of [d_model, d_ff]

  // Weight bytes one expert streams per pass (panels and scales of its matrices).
  int64_t ExpertBytes() const;
};

// Packs (and quantizes) every expert; OpenMP over experts. `w` must be valid weights for the
// activation (CheckExpertWeights).
PackedExperts PackExperts(const ExpertWeights& w, config::Activation activation,
                          kernels::WeightFormat format);

// The F32 weights the packed ones stand for (the quantization-aware reference).
ExpertWeights UnpackExperts(const PackedExperts& packed);

// One GEMM's activation rows in the format the kernels read (kernels::GemmInputFor): BF16 rows,
// or int8 rows with a scale and a correction per group of 32 inputs; F32 rows are read in place
// and need none of this.
class GemmInputRows {
 public:
  // Sizes the buffers for `rows` rows of `width` inputs in `input`'s format.
  void Reserve(kernels::GemmInput input, int64_t rows, int64_t width);
  // Converts `rows` rows of `cols` values (row 0 at x; row stride ld_x) into inputs
  // [col0, col0 + cols) of rows [row, row + rows). col0 is a multiple of 32; inputs from
  // col0 + cols to the next multiple of 32 become zero.
  void Prepare(const float* x, int64_t ld_x, int64_t row, int64_t rows, int64_t col0, int64_t cols);
  // Points the GEMM's activations (a_bf16 or qa) at rows from `row` on.
  void Bind(int64_t row, kernels::PackedGemmParams* params) const;

 private:
  kernels::GemmInput input_ = kernels::GemmInput::kF32;
  int64_t ld_ = 0;                // row stride of bf16_ / q_ (elements)
  int64_t groups_ = 0;            // row stride of scales_ / corr_
  ScratchBuffer<uint16_t> bf16_;  // kBF16: [rows, ld_]
  ScratchBuffer<int8_t> q_;       // kInt8: [rows, ld_]
  ScratchBuffer<float> scales_;   // kInt8: [rows, groups_]
  ScratchBuffer<int32_t> corr_;   // kInt8: [rows, groups_]
};

// Scratch for RunPackedExperts, grown on demand and reused: after the first call at the largest
// row count, later calls allocate nothing. Not shareable between concurrent calls.
class ExpertWorkspace {
 public:
  // Sizes every buffer for up to `max_rows` rows of these experts on `num_threads` threads.
  void Reserve(const PackedExperts& experts, int64_t max_rows, int num_threads);

 private:
  friend absl::Status RunPackedExperts(const PackedExperts&, const ExpertBatch&, ExpertWorkspace*);
  struct Item {
    int64_t expert;
    int64_t row_begin;
    int64_t row_end;
    int64_t panel_begin;
    int64_t panel_end;
  };
  // Row strides (elements) of the buffers below: padded past their widths (see RowStride).
  int64_t ld_hidden_ = 0, ld_tile_ = 0, ld_rows_ = 0;
  // [max_rows, ld_hidden_ >= d_ff]: the activation's output, when the down projection reads F32
  // (other inputs: hidden_in_ only, made from the thread's tiles).
  ScratchBuffer<float> hidden_;
  ScratchBuffer<float> rows_;  // [max_rows, ld_rows_]: gathered F32 rows (F32 kernels only)
  // The gate / up projections' inputs (the rows) and the down projection's (hidden_, converted
  // by each gate / up item as it finishes its columns) when the kernels do not read F32.
  GemmInputRows rows_in_, hidden_in_;
  // Per thread: the up projection's tile [kRowTile, ld_tile_], and for inputs other than F32
  // the gate's (then the activation's) tile after it; written and read while in cache.
  ScratchBuffer<float> tiles_;
  std::vector<Item> items_;
  int64_t tile_floats_ = 0;  // floats of one thread's tiles
  int num_threads_ = 0;
};

// Same contract as RunExperts (expert_bank.h) on packed weights. The result of each row depends
// only on that row, the weights and the ISA: bitwise identical for any thread count, row split
// or batch composition.
absl::Status RunPackedExperts(const PackedExperts& experts, const ExpertBatch& batch,
                              ExpertWorkspace* workspace);

}  // namespace moe::experts
