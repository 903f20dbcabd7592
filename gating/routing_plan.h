// The routing plan: which rows each expert computes, in expert-major order.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::gating {

// Slots are (token, j) pairs, slot = token * top_k + j. Rows are the kept slots sorted by
// expert, and within an expert by slot (so by token): stable.
struct RoutingPlan {
  int64_t num_tokens = 0;
  int32_t top_k = 0;
  int32_t num_experts = 0;
  int64_t capacity = -1;                // slots kept per expert; -1 = dropless
  std::vector<int64_t> demand;          // [num_experts] slots routed to each expert
  std::vector<int64_t> counts;          // [num_experts] slots kept (min(demand, capacity))
  std::vector<int64_t> offsets;         // [num_experts + 1] first row of each expert
  std::vector<int64_t> slot_of_row;     // [num_rows] the slot each row computes
  std::vector<int64_t> row_of_slot;     // [num_tokens * top_k] row of a slot, -1 if dropped
  int64_t dropped_slots = 0;            // sum(demand) - sum(counts)
  std::vector<int64_t> rank_in_expert;  // [num_tokens * top_k] scratch of the build

  int64_t num_rows() const { return offsets.empty() ? 0 : offsets.back(); }
};

// Builds the plan from topk_ids [num_tokens, top_k]. capacity < 0 keeps every slot;
// otherwise each expert keeps its first `capacity` slots in token order and the rest are
// dropped. kInvalidArgument when an id is out of [0, num_experts) or repeats within a
// token (the message names the token).
absl::StatusOr<RoutingPlan> BuildRoutingPlan(const int32_t* topk_ids, int64_t num_tokens,
                                             int32_t top_k, int32_t num_experts, int64_t capacity);

// The same into `plan`, reusing its vectors (no allocation when they are large enough).
absl::Status BuildRoutingPlanInto(const int32_t* topk_ids, int64_t num_tokens, int32_t top_k,
                                  int32_t num_experts, int64_t capacity, RoutingPlan* plan);

}  // namespace moe::gating
