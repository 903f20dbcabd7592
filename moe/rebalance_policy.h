// RebalancePolicy: decides between forwards when moving experts to a new placement pays.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/replica_placement.h"
#include "comm/replica_planner.h"
#include "gating/load_stats.h"

namespace moe {

class ExpertParallelLayer;
struct RebalanceStats;

struct RebalancePolicyOptions {
  int32_t window_steps = 8;      // steps of expert loads the decision looks at
  double threshold = 1.2;        // predicted max / mean rank load that counts as imbalanced
  double min_improvement = 0.1;  // the plan must cut max / mean by at least this fraction
  comm::PlannerOptions planner;  // num_ranks, num_redundant, num_nodes
};

// What Observe decided, with the numbers behind it.
struct RebalanceDecision {
  bool rebalance = false;
  int32_t steps_over_threshold = 0;     // consecutive steps above the threshold (this one included)
  double current_max_over_mean = 0;     // predicted under the current placement, window mean loads
  double planned_max_over_mean = 0;     // predicted under the plan (0 when none was made)
  comm::ReplicatedPlacement placement;  // the plan when rebalance is true
};

// Feed it every step's per-expert loads (DispatchStats.expert_load: the same on every rank).
// It rebalances when the predicted max / mean rank load under the current placement exceeded
// `threshold` in each of the last window_steps steps (window full) AND the planner's placement
// for the window's mean loads (comm::PlanReplicatedPlacement) predicts a max / mean at most
// (1 - min_improvement) times the current one on those loads. Deterministic: ranks fed the
// same loads decide the same and plan the same placement. Not thread-safe.
class RebalancePolicy {
 public:
  // kInvalidArgument for a bad window, threshold < 1, min_improvement outside [0, 1), or a
  // current placement not for num_experts / planner.num_ranks.
  static absl::StatusOr<RebalancePolicy> Create(int32_t num_experts,
                                                comm::ReplicatedPlacement current,
                                                RebalancePolicyOptions options);

  // Records one step and decides. kInvalidArgument for a bad expert_load (LoadStats::AddStep).
  absl::StatusOr<RebalanceDecision> Observe(const std::vector<int64_t>& expert_load);

  // The layer now runs `placement`: the window restarts.
  absl::Status Adopt(comm::ReplicatedPlacement placement);

  const comm::ReplicatedPlacement& current() const { return current_; }
  const gating::LoadStats& loads() const { return loads_; }

 private:
  RebalancePolicy(comm::ReplicatedPlacement current, RebalancePolicyOptions options,
                  gating::LoadStats loads)
      : current_(std::move(current)), options_(options), loads_(std::move(loads)) {}

  comm::ReplicatedPlacement current_;
  RebalancePolicyOptions options_;
  gating::LoadStats loads_;
  int32_t steps_over_threshold_ = 0;
};

// One step of the runtime loop, collective: Observe(stats expert_load) and, when it says so,
// layer->Rebalance(plan) and Adopt. Returns whether it moved; `moved` gets the cost then.
absl::StatusOr<bool> ObserveAndRebalance(RebalancePolicy* policy, ExpertParallelLayer* layer,
                                         const std::vector<int64_t>& expert_load,
                                         RebalanceStats* moved = nullptr);

}  // namespace moe
