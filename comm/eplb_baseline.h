// DeepSeek's expert-parallel load balancer (EPLB, github.com/deepseek-ai/EPLB), re-implemented
// from the published algorithm as the comparison baseline of the replica planner: equal
// shares per replica.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/replica_placement.h"

namespace moe::comm {

struct EplbOptions {
  int32_t num_ranks = 0;
  // Replica slots beyond one per expert (EPLB: num_physical - num_logical experts).
  int32_t num_redundant = 0;
  // > 1: the hierarchical policy over num_nodes nodes of num_ranks / num_nodes consecutive
  // ranks; 0 or 1: the global policy.
  int32_t num_nodes = 0;
  // Expert groups of the hierarchical policy (contiguous blocks of num_experts / num_groups
  // experts, as group-limited routing defines them); 0 = one expert per group. As in EPLB,
  // when num_groups is not a multiple of num_nodes the global policy is used.
  int32_t num_groups = 0;
};

// replicate_experts: starting from one replica each, `num_redundant` times add a replica to
// the expert with the largest load / replicas (ties to the lower expert), never beyond
// max_replicas. Returns [num_experts] replica counts.
std::vector<int32_t> EplbReplicaCounts(const std::vector<double>& loads, int32_t num_redundant,
                                       int32_t max_replicas);

// balanced_packing, generalized to counts that do not divide: items, heaviest first (ties to
// the lower index), each go to the least-loaded pack (ties to the lower pack) that has room and
// holds no item of the same label (label < 0: none). Packs hold floor(n / num_packs) or
// ceil(n / num_packs) items, exactly n % num_packs of them the ceiling, whichever packs reach
// it first. When every pack with room holds the label, one item of a full pack is moved to a
// pack with room to make a place (EPLB itself does not forbid two replicas of an expert on one
// GPU; this changes nothing unless that would happen). Returns [n] the pack of each item;
// kInternal when no such move exists.
absl::StatusOr<std::vector<int32_t>> BalancedPacking(const std::vector<double>& weights,
                                                     const std::vector<int32_t>& labels,
                                                     int32_t num_packs);

// rebalance_experts: the global policy (replicate over all experts, pack replicas of load
// load / count onto ranks), or with nodes the hierarchical one (pack expert groups onto nodes,
// replicate within each node with num_redundant / num_nodes slots, pack the node's replicas
// onto its ranks). Every replica's share is 1 / count. kInvalidArgument naming the option
// when sizes do not fit (num_ranks % num_nodes, num_experts % num_groups, hierarchical
// num_redundant % num_nodes, more replicas of an expert than ranks).
absl::StatusOr<ReplicatedPlacement> EplbPlacement(const std::vector<double>& loads,
                                                  const EplbOptions& options);

}  // namespace moe::comm
