#include "gating/routing_plan.h"

#include "absl/strings/str_cat.h"

namespace moe::gating {

absl::StatusOr<RoutingPlan> BuildRoutingPlan(const int32_t* topk_ids, int64_t num_tokens,
                                             int32_t top_k, int32_t num_experts, int64_t capacity) {
  RoutingPlan plan;
  absl::Status s = BuildRoutingPlanInto(topk_ids, num_tokens, top_k, num_experts, capacity, &plan);
  if (!s.ok()) return s;
  return plan;
}

absl::Status BuildRoutingPlanInto(const int32_t* topk_ids, int64_t num_tokens, int32_t top_k,
                                  int32_t num_experts, int64_t capacity, RoutingPlan* out) {
  if (num_tokens < 0 || top_k <= 0 || num_experts <= 0 || top_k > num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("routing plan: bad sizes num_tokens=", num_tokens, " top_k=", top_k,
                     " num_experts=", num_experts));
  }
  RoutingPlan& plan = *out;
  plan.num_tokens = num_tokens;
  plan.dropped_slots = 0;
  plan.top_k = top_k;
  plan.num_experts = num_experts;
  plan.capacity = capacity;
  const int64_t num_slots = num_tokens * top_k;
  plan.demand.assign(static_cast<size_t>(num_experts), 0);
  plan.row_of_slot.assign(static_cast<size_t>(num_slots), -1);

  // Pass 1: validate and rank each slot within its expert (in slot order = token order).
  std::vector<int64_t>& rank_in_expert = plan.rank_in_expert;
  rank_in_expert.resize(static_cast<size_t>(num_slots));
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int32_t* ids = topk_ids + t * top_k;
    for (int32_t j = 0; j < top_k; ++j) {
      const int32_t e = ids[j];
      if (e < 0 || e >= num_experts) {
        return absl::InvalidArgumentError(absl::StrCat("topk_ids of token ", t, " holds expert ", e,
                                                       ", outside [0, ", num_experts, ")"));
      }
      for (int32_t i = 0; i < j; ++i) {
        if (ids[i] == e) {
          return absl::InvalidArgumentError(
              absl::StrCat("topk_ids of token ", t, " names expert ", e, " twice"));
        }
      }
      rank_in_expert[static_cast<size_t>(t * top_k + j)] = plan.demand[static_cast<size_t>(e)]++;
    }
  }
  // Pass 2: counts and offsets.
  plan.counts.resize(static_cast<size_t>(num_experts));
  plan.offsets.assign(static_cast<size_t>(num_experts) + 1, 0);
  for (int32_t e = 0; e < num_experts; ++e) {
    const int64_t demand = plan.demand[static_cast<size_t>(e)];
    const int64_t kept = capacity < 0 || demand < capacity ? demand : capacity;
    plan.counts[static_cast<size_t>(e)] = kept;
    plan.offsets[static_cast<size_t>(e) + 1] = plan.offsets[static_cast<size_t>(e)] + kept;
    plan.dropped_slots += demand - kept;
  }
  // Pass 3: place kept slots.
  plan.slot_of_row.resize(static_cast<size_t>(plan.num_rows()));
  for (int64_t s = 0; s < num_slots; ++s) {
    const int32_t e = topk_ids[s];
    const int64_t rank = rank_in_expert[static_cast<size_t>(s)];
    if (rank >= plan.counts[static_cast<size_t>(e)]) continue;
    const int64_t row = plan.offsets[static_cast<size_t>(e)] + rank;
    plan.row_of_slot[static_cast<size_t>(s)] = row;
    plan.slot_of_row[static_cast<size_t>(row)] = s;
  }
  return absl::OkStatus();
}

}  // namespace moe::gating
