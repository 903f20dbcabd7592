// All float32 weights of one MoE layer.
#pragma once

#include <cstdint>
#include <vector>

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

// Like CheckLayerWeights, for a holder of `num_local_experts` routed experts (an
// expert-parallel rank): the router, bias and shared experts whole.
absl::Status CheckLocalLayerWeights(const config::LayerConfig& config, const MoeLayerWeights& w,
                                    int64_t num_local_experts);

// Deterministic random weights for benchmarks and tests: uniform in +-1/sqrt(fan_in)
// (the usual Linear init), biases uniform in [-0.1, 0.1). The values do not depend on the
// thread count.
MoeLayerWeights RandomLayerWeights(const config::LayerConfig& config, uint64_t seed);

// The same values, but only the routed experts `expert_ids` are generated and held, stacked
// in that order (an expert-parallel rank's share): equal to slicing RandomLayerWeights.
MoeLayerWeights RandomLayerWeightsOfExperts(const config::LayerConfig& config, uint64_t seed,
                                            const std::vector<int32_t>& expert_ids);

}  // namespace moe
