// All float32 weights of one MoE layer.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "configs/moe_config.pb.h"
#include "experts/expert_weights.h"
#include "moe/base/tensor.h"

namespace moe {

struct MoeLayerWeights {
  Tensor router;                   // [num_experts, d_model]
  Tensor selection_bias;           // [num_experts]; empty unless router.selection_bias
  experts::ExpertWeights experts;  // routed: [num_experts, d_ff, d_model] ...
  experts::ExpertWeights shared;   // [1, shared d_ff, d_model] ...; empty without shared experts
  Tensor shared_gate;              // [1, d_model]; empty unless shared_experts.sigmoid_gate
};

// Every tensor present, F32, and shaped as `config` says; the error names the tensor.
absl::Status CheckLayerWeights(const config::LayerConfig& config, const MoeLayerWeights& w);

// Deterministic random weights for benchmarks and tests: uniform in +-1/sqrt(fan_in)
// (the usual Linear init), biases uniform in [-0.1, 0.1).
MoeLayerWeights RandomLayerWeights(const config::LayerConfig& config, uint64_t seed);

}  // namespace moe
