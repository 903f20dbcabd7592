// Runs the experts' feed-forward networks over their rows (the CPU grouped GEMM): RunExperts is
// the plain version; ExpertBank runs the packed kernels (experts/packed_experts.h).
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "configs/moe_config.pb.h"
#include "experts/expert_weights.h"
#include "kernels/cpu/packed_weights.h"

namespace moe::experts {

// One grouped call: expert e computes rows [offsets[e], offsets[e + 1]).
struct ExpertBatch {
  const float* rows = nullptr;       // [num_rows, d_model], expert-major
  const int64_t* offsets = nullptr;  // [num_experts + 1]
  float* out = nullptr;              // [num_rows, d_model]
  // Instead of `rows` (null), where the bank gathers (ExpertBank::GathersRows): row r is
  // tokens[slot_of_row[r] / top_k], read into the format the kernels take without an F32 copy.
  const float* tokens = nullptr;         // [num_tokens, d_model]
  const int64_t* slot_of_row = nullptr;  // [num_rows]
  int32_t top_k = 1;
};

// out[r] = down_e(act(gate_e(x_r)) * up_e(x_r)) for gated activations, down_e(act(up_e(x_r)))
// otherwise. Work is split over (expert, row block) items across OpenMP threads; every row's
// result is independent of the split, the thread count and the other rows.
absl::Status RunExperts(const ExpertWeights& w, config::Activation activation,
                        const ExpertBatch& batch);

struct PackedExperts;
struct WorkspacePool;

// How a layer's experts run.
struct ExpertKernelOptions {
  kernels::WeightFormat weight_format = kernels::WeightFormat::kF32;  // packed at load
  bool plain = false;  // RunExperts on the F32 weights (the reference; weight_format ignored)
};

// A set of experts ready to run: packed (and quantized) once at creation, with a pool of
// workspaces so that steady-state calls allocate nothing. Copies share the packed weights.
// Run is thread-safe (concurrent calls take separate workspaces).
class ExpertBank {
 public:
  ExpertBank() = default;
  static ExpertBank Create(const ExpertWeights& w, config::Activation activation,
                           const ExpertKernelOptions& options);

  // Runs `batch`. `plain` must be the weights the bank was created from (read in plain mode).
  absl::Status Run(const ExpertWeights& plain, const ExpertBatch& batch) const;

  // Whether Run takes a batch given by tokens / slot_of_row instead of rows (packed banks do;
  // the plain one needs the rows).
  bool GathersRows() const { return packed_ != nullptr; }

  // Sizes a workspace for `max_rows` rows ahead of the first call.
  void Reserve(int64_t max_rows) const;

  const ExpertKernelOptions& options() const { return options_; }
  // Bytes one expert's weights stream per pass in this bank's format.
  int64_t ExpertBytes() const;
  // The F32 weights the bank computes with (quantized values for INT8/INT4); plain mode: empty.
  ExpertWeights EffectiveWeights() const;

 private:
  ExpertKernelOptions options_;
  config::Activation activation_ = config::ACTIVATION_SWIGLU;
  std::shared_ptr<const PackedExperts> packed_;
  std::shared_ptr<WorkspacePool> pool_;
};

}  // namespace moe::experts
