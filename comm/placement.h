// Placement: which rank holds each routed expert.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::comm {

// Expert -> rank and rank -> local experts. A plain struct, so a load balancer can build one
// (a later replica-aware placement adds fields, not a new type). Every rank must hold the same
// placement. A rank may hold no experts.
struct Placement {
  int32_t num_experts = 0;
  int32_t num_ranks = 0;
  std::vector<int32_t> rank_of_expert;              // [num_experts]
  std::vector<std::vector<int32_t>> local_experts;  // [num_ranks][num_local_experts], ascending
  std::vector<int32_t> local_index;                 // [num_experts] position in its rank's list

  int32_t num_local_experts(int rank) const {
    return static_cast<int32_t>(local_experts[static_cast<size_t>(rank)].size());
  }
};

// Contiguous blocks: rank r holds experts [begin(r), begin(r + 1)). When num_ranks does not
// divide num_experts, the first num_experts % num_ranks ranks hold one expert more
// (E = 10, n = 4: 3, 3, 2, 2). With fewer experts than ranks the last ranks hold none.
// kInvalidArgument unless num_experts > 0 and num_ranks > 0.
absl::StatusOr<Placement> ContiguousPlacement(int32_t num_experts, int32_t num_ranks);

// A placement from rank_of_expert (each entry in [0, num_ranks)); fills the other fields.
// kInvalidArgument naming the first expert whose rank is out of range.
absl::StatusOr<Placement> PlacementFromRanks(std::vector<int32_t> rank_of_expert,
                                             int32_t num_ranks);

// kInvalidArgument unless the fields are sized and mutually consistent (what a hand-built or
// deserialized placement must satisfy) for a layer of num_experts on num_ranks.
absl::Status ValidatePlacement(const Placement& placement, int32_t num_experts, int32_t num_ranks);

}  // namespace moe::comm
