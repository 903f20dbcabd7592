// The replica planner: from per-expert loads, choose which experts to replicate, where every
// replica goes, and which share of its expert's rows each replica computes, so that the
// maximum rank load is as small as possible.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/replica_placement.h"

namespace moe::comm {

struct PlannerOptions {
  int32_t num_ranks = 0;
  // Replica slots beyond one per expert. Ranks hold floor or ceil of
  // (num_experts + num_redundant) / num_ranks slots (see ReplicatedPlacement).
  int32_t num_redundant = 0;
  // > 1: ranks form num_nodes nodes of num_ranks / num_nodes consecutive ranks, and the plan
  // keeps each expert's replicas on as few nodes as it can (see PlanReplicatedPlacement).
  int32_t num_nodes = 0;
};

// What the planner returns beside the placement.
struct PlanResult {
  ReplicatedPlacement placement;
  std::vector<double> rank_loads;  // [num_ranks] predicted: sum of share * load
  double max_over_mean = 0;        // of rank_loads
  double lower_bound = 0;          // ReplicaLowerBound: no placement does better
  const char* candidate = "";      // which candidate won (for reports)
};

// Plans a placement for `loads` [num_experts] (finite, >= 0; only ratios matter; all zero is
// planned as uniform).
//
// Algorithm (deterministic; ties always go to the lower expert / rank index). Candidates, each
// with the shares that minimize its max rank load for its assignment (a min-max flow,
// comm/share_optimizer.h); the best wins:
//  - greedy: replica counts by giving the redundant slots one at a time to the expert with the
//    largest load / replicas (at most num_ranks replicas of an expert); replicas, heaviest
//    first, to the least-loaded rank with a free slot not holding the expert
//    (BalancedPacking; slots as in ReplicatedPlacement);
//  - repacked: the same packing with the piece sizes the shares gave, while that helps;
//  - grouped: each replicated expert on ranks of its own, the other experts, heaviest first,
//    to the group or rank of least load per rank with a free slot; then, while it helps, one
//    replica moves to the expert with the largest piece on the most loaded rank from one of
//    the least-loaded groups;
//  - EPLB's assignments (EplbPlacement: global, and hierarchical with nodes) with optimized
//    shares, so the result is never worse than the EPLB baseline on the same loads.
// With nodes, ranks are then renumbered so that the ranks sharing a replicated expert sit on
// one node when they fit (first-fit decreasing of the connected groups onto nodes): loads are
// unchanged, and only an expert too hot for one node spans several.
// kInvalidArgument naming the option for empty or negative / non-finite loads, num_ranks < 1,
// num_redundant < 0 or more than (num_ranks - 1) * num_experts, num_ranks not a multiple of
// num_nodes.
absl::StatusOr<PlanResult> PlanReplicatedPlacement(const std::vector<double>& loads,
                                                   const PlannerOptions& options);

// A lower bound on max / mean rank load of any placement with num_redundant extra replicas:
// max(1, min over replica counts c of max_e loads[e] * num_ranks / (c_e * total)), since some
// replica of expert e carries at least loads[e] / c_e and sits on a rank of its own. Zipf
// loads over 256 experts on 64 ranks with 32 redundant slots: 1.000 (s = 1.0), 1.082 (1.2),
// 1.354 (1.5).
double ReplicaLowerBound(const std::vector<double>& loads, int32_t num_ranks,
                         int32_t num_redundant);

// Mean over experts of the number of nodes holding a replica of the expert (1 = every
// expert within one node), ranks grouped into num_nodes nodes of consecutive ranks.
double MeanNodeSpan(const ReplicatedPlacement& placement, int32_t num_nodes);

}  // namespace moe::comm
