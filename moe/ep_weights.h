// The weights one expert-parallel rank holds: the router and shared experts whole, the routed
// experts of its placement only.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/placement.h"
#include "comm/replica_placement.h"
#include "configs/moe_config.pb.h"
#include "experts/expert_weights.h"
#include "moe/layer_weights.h"

namespace moe {

// The experts `ids` of `all`, stacked in that order. kInvalidArgument for an id out of range.
absl::StatusOr<experts::ExpertWeights> SelectExperts(const experts::ExpertWeights& all,
                                                     const std::vector<int32_t>& ids);

// Keeps only the routed experts `rank` holds under `placement` (in its local order); moves the
// router, selection bias and shared experts. `full` must pass CheckLayerWeights (the error
// names the tensor). For checkpoint import: load the full layer (or only these experts'
// tensors, see placement.local_experts) and call this.
absl::StatusOr<MoeLayerWeights> KeepLocalExperts(const config::LayerConfig& config,
                                                 MoeLayerWeights full,
                                                 const comm::Placement& placement, int rank);

// Equals KeepLocalExperts(RandomLayerWeights(config, seed), placement, rank) value for value,
// but generates only this rank's experts (RandomLayerWeightsOfExperts), so a rank never holds
// the whole layer.
MoeLayerWeights RandomLocalLayerWeights(const config::LayerConfig& config, uint64_t seed,
                                        const comm::Placement& placement, int rank);

// The replicated forms: the experts `rank` holds under `placement` (comm::HeldExperts order,
// ascending expert). Same errors as KeepLocalExperts.
absl::StatusOr<MoeLayerWeights> KeepHeldExperts(const config::LayerConfig& config,
                                                MoeLayerWeights full,
                                                const comm::ReplicatedPlacement& placement,
                                                int rank);
MoeLayerWeights RandomHeldLayerWeights(const config::LayerConfig& config, uint64_t seed,
                                       const comm::ReplicatedPlacement& placement, int rank);

// Floats of one expert's block: its gate (when present), up and down matrices, in that order.
int64_t ExpertBlockFloats(const experts::ExpertWeights& experts);
// [num_experts * ExpertBlockFloats] every expert's block, in the experts' order.
std::vector<float> PackExpertBlocks(const experts::ExpertWeights& experts);
// The inverse: `num_experts` blocks shaped like `like` (gate present or not, d_ff, d_model).
experts::ExpertWeights UnpackExpertBlocks(const float* blocks, int64_t num_experts,
                                          const experts::ExpertWeights& like);

}  // namespace moe
