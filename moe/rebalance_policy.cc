#include "moe/rebalance_policy.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "moe/base/status_macros.h"
#include "moe/expert_parallel_layer.h"

namespace moe {
namespace {

double PredictedMaxOverMean(const comm::ReplicatedPlacement& p, const std::vector<double>& loads) {
  return gating::MaxOverMean(comm::PredictedRankLoads(p, loads));
}

}  // namespace

absl::StatusOr<RebalancePolicy> RebalancePolicy::Create(int32_t num_experts,
                                                        comm::ReplicatedPlacement current,
                                                        RebalancePolicyOptions options) {
  if (!(options.threshold >= 1) || !(options.min_improvement >= 0) ||
      !(options.min_improvement < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RebalancePolicy: threshold must be >= 1 and min_improvement in [0, 1), got ",
                     options.threshold, " and ", options.min_improvement));
  }
  MOE_RETURN_IF_ERROR(
      comm::ValidateReplicaStructure(current, num_experts, options.planner.num_ranks));
  MOE_ASSIGN_OR_RETURN(gating::LoadStats loads,
                       gating::LoadStats::Create(num_experts, options.window_steps));
  return RebalancePolicy(std::move(current), options, std::move(loads));
}

absl::StatusOr<RebalanceDecision> RebalancePolicy::Observe(
    const std::vector<int64_t>& expert_load) {
  MOE_RETURN_IF_ERROR(loads_.AddStep(expert_load));
  const std::vector<double> step(expert_load.begin(), expert_load.end());
  const double step_imbalance = PredictedMaxOverMean(current_, step);
  steps_over_threshold_ = step_imbalance > options_.threshold ? steps_over_threshold_ + 1 : 0;
  RebalanceDecision d;
  d.steps_over_threshold = steps_over_threshold_;
  const std::vector<double> mean = loads_.WindowMean();
  d.current_max_over_mean = PredictedMaxOverMean(current_, mean);
  if (loads_.steps_in_window() < options_.window_steps ||
      steps_over_threshold_ < options_.window_steps) {
    return d;
  }
  MOE_ASSIGN_OR_RETURN(comm::PlanResult plan,
                       comm::PlanReplicatedPlacement(mean, options_.planner));
  d.planned_max_over_mean = PredictedMaxOverMean(plan.placement, mean);
  if (d.planned_max_over_mean <= d.current_max_over_mean * (1 - options_.min_improvement)) {
    d.rebalance = true;
    d.placement = std::move(plan.placement);
  }
  return d;
}

absl::Status RebalancePolicy::Adopt(comm::ReplicatedPlacement placement) {
  MOE_RETURN_IF_ERROR(
      comm::ValidateReplicaStructure(placement, loads_.num_experts(), options_.planner.num_ranks));
  current_ = std::move(placement);
  MOE_ASSIGN_OR_RETURN(loads_,
                       gating::LoadStats::Create(loads_.num_experts(), options_.window_steps));
  steps_over_threshold_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<bool> ObserveAndRebalance(RebalancePolicy* policy, ExpertParallelLayer* layer,
                                         const std::vector<int64_t>& expert_load,
                                         RebalanceStats* moved) {
  MOE_ASSIGN_OR_RETURN(RebalanceDecision d, policy->Observe(expert_load));
  if (!d.rebalance) return false;
  MOE_RETURN_IF_ERROR(layer->Rebalance(d.placement, moved));
  MOE_RETURN_IF_ERROR(policy->Adopt(std::move(d.placement)));
  return true;
}

}  // namespace moe
