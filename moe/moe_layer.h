// MoeLayer: the public API for one Mixture-of-Experts block forward on the CPU.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/moe_config.pb.h"
#include "experts/expert_bank.h"
#include "experts/expert_weights.h"
#include "gating/routing_plan.h"
#include "moe/base/object_pool.h"
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

// How a layer computes: the experts' kernels and weight format (routed and shared experts).
struct LayerOptions {
  experts::ExpertKernelOptions experts;
  int64_t max_tokens = 0;  // when > 0, workspaces are sized for this many tokens at creation
};

struct ForwardWorkspace;  // moe_layer.cc

class MoeLayer {
 public:
  // Validates the config and that every weight is present and shaped as it says, then packs
  // (and quantizes) the expert weights for options.experts.
  static absl::StatusOr<MoeLayer> Create(config::LayerConfig config, MoeLayerWeights weights,
                                         LayerOptions options = {});
  // The same, sharing F32 weights with other layers (e.g. one per weight format).
  static absl::StatusOr<MoeLayer> Create(config::LayerConfig config,
                                         std::shared_ptr<const MoeLayerWeights> weights,
                                         LayerOptions options = {});

  // hidden_states: F32 or BF16 [num_tokens, d_model], num_tokens >= 0. Thread-safe for
  // concurrent calls (the layer is immutable); uses the OpenMP thread pool. The output
  // does not depend on the thread count. kInvalidArgument for a bad shape, dtype, or a
  // row holding NaN/Inf (naming the token).
  absl::StatusOr<LayerOutput> Forward(const Tensor& hidden_states,
                                      StageTimes* times = nullptr) const;

  // The same into `out`, whose tensors are reused when their shapes already fit (as after a
  // previous call with the same token count). Intermediate buffers come from a pool of
  // per-layer workspaces sized by the largest token count seen (or LayerOptions::max_tokens):
  // repeated calls at a token count allocate nothing on the heap.
  absl::Status ForwardInto(const Tensor& hidden_states, LayerOutput* out,
                           StageTimes* times = nullptr) const;

  const config::LayerConfig& config() const { return config_; }
  // The F32 weights the layer was created from (before packing or quantization).
  const MoeLayerWeights& weights() const { return *weights_; }
  const experts::ExpertBank& routed_bank() const { return routed_; }
  const experts::ExpertBank& shared_bank() const { return shared_; }

 private:
  absl::Status ForwardWith(const Tensor& hidden_states, ForwardWorkspace* ws, LayerOutput* out,
                           StageTimes* times) const;

  MoeLayer(config::LayerConfig config, std::shared_ptr<const MoeLayerWeights> weights)
      : config_(std::move(config)), weights_(std::move(weights)) {}

  config::LayerConfig config_;
  std::shared_ptr<const MoeLayerWeights> weights_;  // never null
  experts::ExpertBank routed_;
  experts::ExpertBank shared_;
  std::shared_ptr<const kernels::PackedMatrix> packed_router_;  // null: plain router GEMM
  std::shared_ptr<ObjectPool<ForwardWorkspace>> workspaces_;
};

// The stages of one forward, shared by MoeLayer and the expert-parallel layer
// (moe/expert_parallel_layer.h). Every stage computes each token or row independently of the
// others and of the thread count, which is what makes the expert-parallel output bitwise equal.
namespace stages {

// hidden_states as F32 [num_tokens, d_model], BF16 converted exactly. kInvalidArgument naming
// hidden_states for a bad shape or dtype (CheckHidden).
absl::StatusOr<Tensor> HiddenAsF32(const Tensor& hidden_states, int64_t d_model);
absl::Status CheckHidden(const Tensor& hidden_states, int64_t d_model);

// Router GEMM, scoring and top-k: allocates and fills out->topk_ids and out->topk_weights.
// Uses weights.router and weights.selection_bias only. kInvalidArgument for a NaN/Inf token.
// `packed_router`: weights.router packed as F32 (PackRouter), or null for the plain router GEMM.
absl::Status RouteTokens(const config::LayerConfig& config, const MoeLayerWeights& weights,
                         const kernels::PackedMatrix* packed_router, const Tensor& hidden,
                         LayerOutput* out);

// weights.router packed as F32 for RouteTokens; null when `options` asks for plain kernels.
std::shared_ptr<const kernels::PackedMatrix> PackRouter(
    const MoeLayerWeights& weights, const experts::ExpertKernelOptions& options);

// The shared experts' contribution; both tensors empty without shared experts.
struct SharedExpertsOutput {
  Tensor out;    // F32 [num_tokens, d_model]
  Tensor scale;  // F32 [num_tokens], sigmoid(hidden . shared_gate); empty unless sigmoid_gate
};
absl::StatusOr<SharedExpertsOutput> RunSharedExperts(const config::LayerConfig& config,
                                                     const MoeLayerWeights& weights,
                                                     const experts::ExpertBank& shared_bank,
                                                     const Tensor& hidden);
// The same into `shared`, reusing its tensors when their shapes fit.
absl::Status RunSharedExpertsInto(const config::LayerConfig& config, const MoeLayerWeights& weights,
                                  const experts::ExpertBank& shared_bank, const Tensor& hidden,
                                  SharedExpertsOutput* shared);

// output[t] = sum_j topk_weights[t, j] * rows[row_of_slot[t * top_k + j]] in top-k order
// (row -1 adds nothing), then + scale[t] * shared[t]. `output` is F32 [num_tokens, d_model].
void CombineSlots(const float* rows, const int64_t* row_of_slot, const Tensor& topk_weights,
                  const SharedExpertsOutput& shared, Tensor* output);

}  // namespace stages
}  // namespace moe
