// MoeLayer: the public API for one Mixture-of-Experts block forward on the CPU.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/moe_config.pb.h"
#include "moe/base/tensor.h"
#include "moe/layer_weights.h"

namespace moe {

// What one forward produces.
struct LayerOutput {
  Tensor output;                     // F32 [num_tokens, d_model]
  Tensor topk_ids;                   // I32 [num_tokens, top_k], best first
  Tensor topk_weights;               // F32 [num_tokens, top_k], the combine weights
  std::vector<int64_t> expert_load;  // [num_experts] slots routed to each expert
  int64_t dropped_slots = 0;         // slots over capacity (0 when dropless)
};

// Wall time of each stage of the last forward, in seconds.
struct StageTimes {
  double route = 0;    // router GEMM, scoring, top-k
  double plan = 0;     // counts, offsets, permutation
  double experts = 0;  // permute + expert FFNs (+ shared experts)
  double combine = 0;  // weighted sum in top-k order
};

class MoeLayer {
 public:
  // Validates the config and that every weight is present and shaped as it says.
  static absl::StatusOr<MoeLayer> Create(config::LayerConfig config, MoeLayerWeights weights);

  // hidden_states: F32 or BF16 [num_tokens, d_model], num_tokens >= 0. Thread-safe for
  // concurrent calls (the layer is immutable); uses the OpenMP thread pool. The output
  // does not depend on the thread count. kInvalidArgument for a bad shape, dtype, or a
  // row holding NaN/Inf (naming the token).
  absl::StatusOr<LayerOutput> Forward(const Tensor& hidden_states,
                                      StageTimes* times = nullptr) const;

  const config::LayerConfig& config() const { return config_; }
  const MoeLayerWeights& weights() const { return weights_; }

 private:
  MoeLayer(config::LayerConfig config, MoeLayerWeights weights)
      : config_(std::move(config)), weights_(std::move(weights)) {}

  config::LayerConfig config_;
  MoeLayerWeights weights_;
};

}  // namespace moe
