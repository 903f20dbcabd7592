// Expert capacity across ranks: capacity drops follow the global token order.
#pragma once

#include <cstdint>
#include <vector>

#include "gating/routing_plan.h"

namespace moe {

// Under expert parallelism the tokens of all ranks form one batch in rank order (rank 0's
// tokens first). An expert keeps its first `capacity` slots of that global order, where
// capacity = config::ExpertCapacity(config, total tokens of all ranks): exactly what one rank
// holding the concatenated batch keeps. This returns, for `rank`, how many of its own slots
// each expert keeps: clamp(capacity - slots of earlier ranks, 0, own demand).
// demand_by_rank: [num_ranks][num_experts] slots routed before drops. capacity < 0 keeps all.
std::vector<int64_t> CapacityQuota(const std::vector<std::vector<int64_t>>& demand_by_rank,
                                   int rank, int64_t capacity);

// The plan with each expert keeping only its first quota[e] rows (an expert's rows are in token
// order), every field rebuilt; `plan` is usually dropless. Quotas above the counts keep all.
gating::RoutingPlan KeepFirstSlots(const gating::RoutingPlan& plan,
                                   const std::vector<int64_t>& quota);

}  // namespace moe
