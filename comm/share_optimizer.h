// The shares of replicas that minimize the maximum rank load when the replicas' ranks are
// fixed: a min-max flow. Used by the replica planner (comm/replica_planner.h).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace moe::comm {

// Which ranks hold each expert's replicas, and how much load each replica carries.
struct Pieces {
  // [num_experts][replicas] (rank, load), ascending rank.
  std::vector<std::vector<std::pair<int32_t, double>>> of_expert;
  double max_load = 0;
};

// For a fixed assignment, the load of every replica minimizing the maximum rank load.
// `ranks_of_expert` [num_experts] the ranks holding each expert, ascending, distinct, in
// [0, num_ranks); `loads` [num_experts] >= 0. Unreplicated experts are fixed loads; per
// connected group of replicated experts and their ranks: water-filling when the group has one
// expert, else the least max load T for which a flow (source -> expert, cap load; expert -> its
// ranks; rank -> sink, cap T - fixed load) routes every load, found by an ascent over min cuts
// (each step a lower bound; exact up to rounding, a few max flows). Deterministic.
Pieces OptimizeShares(const std::vector<std::vector<int32_t>>& ranks_of_expert,
                      const std::vector<double>& loads, int32_t num_ranks);

// Disjoint sets over 0 .. n - 1; the representative of a set is its smallest member.
class UnionFind {
 public:
  explicit UnionFind(int32_t n);
  int32_t Find(int32_t x);
  void Union(int32_t a, int32_t b);

 private:
  std::vector<int32_t> parent_;
};

}  // namespace moe::comm
