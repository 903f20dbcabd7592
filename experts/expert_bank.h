// Runs the experts' feed-forward networks over their rows (the CPU grouped GEMM).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "configs/moe_config.pb.h"
#include "experts/expert_weights.h"

namespace moe::experts {

// One grouped call: expert e computes rows [offsets[e], offsets[e + 1]).
struct ExpertBatch {
  const float* rows = nullptr;       // [num_rows, d_model], expert-major
  const int64_t* offsets = nullptr;  // [num_experts + 1]
  float* out = nullptr;              // [num_rows, d_model]
};

// out[r] = down_e(act(gate_e(x_r)) * up_e(x_r)) for gated activations, down_e(act(up_e(x_r)))
// otherwise. Work is split over (expert, row block) items across OpenMP threads; every row's
// result is independent of the split, the thread count and the other rows.
absl::Status RunExperts(const ExpertWeights& w, config::Activation activation,
                        const ExpertBatch& batch);

}  // namespace moe::experts
