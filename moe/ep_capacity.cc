#include "moe/ep_capacity.h"

#include <algorithm>

namespace moe {

std::vector<int64_t> CapacityQuota(const std::vector<std::vector<int64_t>>& demand_by_rank,
                                   int rank, int64_t capacity) {
  const std::vector<int64_t>& own = demand_by_rank[static_cast<size_t>(rank)];
  std::vector<int64_t> quota(own);
  if (capacity < 0) return quota;
  for (size_t e = 0; e < own.size(); ++e) {
    int64_t before = 0;
    for (int r = 0; r < rank; ++r) before += demand_by_rank[static_cast<size_t>(r)][e];
    quota[e] = std::clamp<int64_t>(capacity - before, 0, own[e]);
  }
  return quota;
}

gating::RoutingPlan KeepFirstSlots(const gating::RoutingPlan& plan,
                                   const std::vector<int64_t>& quota) {
  gating::RoutingPlan out;
  out.num_tokens = plan.num_tokens;
  out.top_k = plan.top_k;
  out.num_experts = plan.num_experts;
  out.capacity = plan.capacity;
  out.demand = plan.demand;
  const size_t num_experts = static_cast<size_t>(plan.num_experts);
  out.counts.resize(num_experts);
  out.offsets.assign(num_experts + 1, 0);
  for (size_t e = 0; e < num_experts; ++e) {
    out.counts[e] = std::min(plan.counts[e], quota[e]);
    out.offsets[e + 1] = out.offsets[e] + out.counts[e];
    out.dropped_slots += out.demand[e] - out.counts[e];
  }
  out.row_of_slot.assign(plan.row_of_slot.size(), -1);
  out.slot_of_row.resize(static_cast<size_t>(out.num_rows()));
  for (size_t e = 0; e < num_experts; ++e) {
    for (int64_t i = 0; i < out.counts[e]; ++i) {
      const int64_t slot = plan.slot_of_row[static_cast<size_t>(plan.offsets[e] + i)];
      const int64_t row = out.offsets[e] + i;
      out.slot_of_row[static_cast<size_t>(row)] = slot;
      out.row_of_slot[static_cast<size_t>(slot)] = row;
    }
  }
  return out;
}

}  // namespace moe
