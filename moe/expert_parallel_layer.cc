#include "moe/expert_parallel_layer.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "experts/expert_bank.h"
#include "gating/routing_plan.h"
#include "moe/base/status_macros.h"
#include "moe/base/trace.h"
#include "moe/ep_capacity.h"
#include "moe/ep_weights.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

comm::AllToAllPerf EpStats::AllToAllBandwidth() const {
  const comm::AllToAllBytes& a = dispatch.dispatch_bytes;
  const comm::AllToAllBytes& b = dispatch.combine_bytes;
  return comm::AllToAllBandwidth(static_cast<int>(dispatch.rank_load.size()),
                                 a.sent + a.self + b.sent + b.self, alltoall_seconds());
}

double EpStats::LoadImbalance() const {
  const std::vector<int64_t>& load = dispatch.rank_load;
  if (load.empty()) return 0;
  int64_t sum = 0;
  for (int64_t x : load) sum += x;
  if (sum == 0) return 0;
  const double mean = static_cast<double>(sum) / static_cast<double>(load.size());
  return static_cast<double>(*std::max_element(load.begin(), load.end())) / mean;
}

absl::StatusOr<ExpertParallelLayer> ExpertParallelLayer::Create(config::LayerConfig config,
                                                                MoeLayerWeights weights,
                                                                const comm::Placement& placement,
                                                                comm::Communicator* comm,
                                                                EpOptions options) {
  if (comm == nullptr) return absl::InvalidArgumentError("ExpertParallelLayer: no communicator");
  MOE_RETURN_IF_ERROR(comm::ValidatePlacement(placement, config.num_experts(), comm->size()));
  return Create(std::move(config), std::move(weights), comm::ReplicatedFromPlacement(placement),
                comm, options);
}

absl::StatusOr<ExpertParallelLayer> ExpertParallelLayer::Create(config::LayerConfig config,
                                                                MoeLayerWeights weights,
                                                                comm::ReplicatedPlacement placement,
                                                                comm::Communicator* comm,
                                                                EpOptions options) {
  MOE_RETURN_IF_ERROR(config::ValidateLayerConfig(config, "layer config"));
  if (comm == nullptr) return absl::InvalidArgumentError("ExpertParallelLayer: no communicator");
  MOE_RETURN_IF_ERROR(
      comm::ValidateReplicaStructure(placement, config.num_experts(), comm->size()));
  const int rank = comm->rank();
  trace::SetRank(rank);
  const int64_t num_local =
      static_cast<int64_t>(placement.rank_experts[static_cast<size_t>(rank)].size());
  if (weights.experts.num_experts() == config.num_experts() && num_local != config.num_experts()) {
    MOE_ASSIGN_OR_RETURN(weights, KeepHeldExperts(config, std::move(weights), placement, rank));
  }
  MOE_RETURN_IF_ERROR(CheckLocalLayerWeights(config, weights, num_local));
  MOE_ASSIGN_OR_RETURN(comm::Dispatcher dispatcher,
                       comm::Dispatcher::Create(comm, std::move(placement), config.d_model(),
                                                config.top_k(), options.dispatcher));
  return ExpertParallelLayer(std::move(config), std::move(weights), comm, std::move(dispatcher),
                             options);
}

void ExpertParallelLayer::PackBanks() {
  const config::Activation activation = config_.activation();
  if (packed_router_ == nullptr) packed_router_ = stages::PackRouter(weights_, options_.experts);
  routed_ = experts::ExpertBank::Create(weights_.experts, activation, options_.experts);
  if (config::SharedExpertsDff(config_) > 0) {
    shared_ = experts::ExpertBank::Create(weights_.shared, activation, options_.experts);
  }
}

absl::Status ExpertParallelLayer::Rebalance(comm::ReplicatedPlacement next, RebalanceStats* stats) {
  const Clock::time_point start = Clock::now();
  MOE_RETURN_IF_ERROR(comm::ValidateReplicaStructure(next, config_.num_experts(), comm_->size()));
  const int me = comm_->rank();
  const std::vector<float> blocks = PackExpertBlocks(weights_.experts);
  RebalanceStats st;
  st.block_bytes = ExpertBlockFloats(weights_.experts) * static_cast<int64_t>(sizeof(float));
  const int64_t num_held = static_cast<int64_t>(next.rank_experts[static_cast<size_t>(me)].size());
  const int64_t block_floats = ExpertBlockFloats(weights_.experts);
  std::vector<float> moved(static_cast<size_t>(num_held * block_floats));
  MOE_RETURN_IF_ERROR(comm::MoveExpertBlocks(comm_, dispatcher_.placement(), next, st.block_bytes,
                                             reinterpret_cast<const char*>(blocks.data()),
                                             reinterpret_cast<char*>(moved.data()), &st.move));
  MOE_ASSIGN_OR_RETURN(comm::Dispatcher dispatcher,
                       comm::Dispatcher::Create(comm_, std::move(next), config_.d_model(),
                                                config_.top_k(), options_.dispatcher));
  weights_.experts = UnpackExpertBlocks(moved.data(), num_held, weights_.experts);
  PackBanks();
  dispatcher_ = std::move(dispatcher);
  st.seconds = SecondsSince(start);
  if (stats != nullptr) *stats = st;
  return absl::OkStatus();
}

absl::Status ExpertParallelLayer::ApplyGlobalCapacity(const absl::Status& local,
                                                      gating::RoutingPlan* plan, EpStats* stats) {
  const int n = comm_->size();
  const int me = comm_->rank();
  const int32_t num_experts = config_.num_experts();
  // Every rank's [failed, num_tokens, demand per expert].
  const size_t width = 2 + static_cast<size_t>(num_experts);
  std::vector<int64_t> mine(width, 0);
  if (local.ok()) {
    mine[1] = plan->num_tokens;
    std::copy(plan->demand.begin(), plan->demand.end(), mine.begin() + 2);
  } else {
    mine[0] = 1;
  }
  std::vector<int64_t> all(width * static_cast<size_t>(n));
  const Clock::time_point start = Clock::now();
  MOE_RETURN_IF_ERROR(
      comm_->AllGather(mine.data(), static_cast<int64_t>(width * sizeof(int64_t)), all.data()));
  stats->sync_seconds = SecondsSince(start);
  if (!local.ok()) return local;
  std::vector<std::vector<int64_t>> demand_by_rank(static_cast<size_t>(n));
  std::vector<int64_t> global_demand(static_cast<size_t>(num_experts), 0);
  for (int r = 0; r < n; ++r) {
    const int64_t* row = all.data() + static_cast<size_t>(r) * width;
    if (row[0] != 0) {
      return absl::AbortedError(
          absl::StrCat("rank ", me, ": aborted because rank ", r, " failed (Forward)"));
    }
    stats->global_tokens += row[1];
    demand_by_rank[static_cast<size_t>(r)].assign(row + 2, row + width);
    for (int32_t e = 0; e < num_experts; ++e) global_demand[static_cast<size_t>(e)] += row[2 + e];
  }
  const int64_t capacity = config::ExpertCapacity(config_, stats->global_tokens);
  *plan = KeepFirstSlots(*plan, CapacityQuota(demand_by_rank, me, capacity));
  plan->capacity = capacity;
  for (int64_t d : global_demand) stats->global_dropped_slots += std::max<int64_t>(d - capacity, 0);
  return absl::OkStatus();
}

absl::StatusOr<LayerOutput> ExpertParallelLayer::Forward(const Tensor& hidden_states,
                                                         EpStats* stats) {
  const config::LayerConfig& c = config_;
  const int32_t num_experts = c.num_experts();
  EpStats local_stats;
  EpStats& st = stats != nullptr ? *stats : local_stats;
  st = EpStats();
  StageTimes& t = st.times;
  trace::TraceScope forward_scope("ep_layer", "stage");

  // Local stages. An error here still takes part in the first collective, so every rank stops.
  LayerOutput result;
  Tensor hidden;
  gating::RoutingPlan plan;
  const absl::Status local = [&]() -> absl::Status {
    MOE_ASSIGN_OR_RETURN(hidden, stages::HiddenAsF32(hidden_states, c.d_model()));
    result.output = Tensor::Zeros(DType::kF32, {hidden.dim(0), c.d_model()});
    forward_scope.Arg("tokens", hidden.dim(0));
    Clock::time_point start = Clock::now();
    {
      trace::TraceScope scope("route", "stage");
      MOE_RETURN_IF_ERROR(stages::RouteTokens(c, weights_, packed_router_.get(), hidden, &result));
    }
    t.route = SecondsSince(start);
    start = Clock::now();
    {
      trace::TraceScope scope("plan", "stage");
      MOE_ASSIGN_OR_RETURN(plan, gating::BuildRoutingPlan(result.topk_ids.data<int32_t>(),
                                                          hidden.dim(0), c.top_k(), num_experts,
                                                          /*capacity=*/-1));
    }
    t.plan = SecondsSince(start);
    return absl::OkStatus();
  }();

  // With capacity, every rank needs every rank's demand first: drops follow the global token
  // order. That all-gather also carries errors; without capacity the dispatch's own count
  // exchange carries them and this collective is skipped (the same choice on every rank).
  Clock::time_point start;
  if (config::ExpertCapacity(c, 0) >= 0) {
    trace::TraceScope scope("sync", "comm");
    MOE_RETURN_IF_ERROR(ApplyGlobalCapacity(local, &plan, &st));
  }
  if (local.ok()) {
    result.expert_load = plan.demand;
    result.dropped_slots = plan.dropped_slots;
  }

  comm::DispatchLayout layout;
  comm::DispatchInput input;
  if (local.ok()) {
    input = {.hidden = hidden.data<float>(),
             .topk_ids = result.topk_ids.data<int32_t>(),
             .row_of_slot = plan.row_of_slot.data(),
             .num_tokens = plan.num_tokens};
  }
  comm::ExpertRows rows;
  {
    trace::TraceScope scope("dispatch", "comm");
    MOE_ASSIGN_OR_RETURN(rows, dispatcher_.Dispatch(input, &layout, local));
  }
  st.global_tokens = 0;
  for (int64_t x : layout.stats.source_tokens) st.global_tokens += x;

  start = Clock::now();
  Tensor expert_out = Tensor::Zeros(DType::kF32, {rows.rows.dim(0), c.d_model()});
  stages::SharedExpertsOutput shared;
  {
    trace::TraceScope scope("experts", "stage");
    scope.Arg("rows", rows.rows.dim(0));
    MOE_RETURN_IF_ERROR(routed_.Run(weights_.experts, {.rows = rows.rows.data<float>(),
                                                       .offsets = rows.offsets.data(),
                                                       .out = expert_out.data<float>()}));
    trace::TraceScope shared_scope("shared_experts", "stage");
    MOE_ASSIGN_OR_RETURN(shared, stages::RunSharedExperts(c, weights_, shared_, hidden));
  }
  t.experts = SecondsSince(start);

  {
    trace::TraceScope scope("combine", "comm");
    MOE_ASSIGN_OR_RETURN(Tensor back, dispatcher_.Combine(expert_out.data<float>(), &layout));
    start = Clock::now();
    stages::CombineSlots(back.data<float>(), layout.return_row_of_slot.data(), result.topk_weights,
                         shared, &result.output);
    t.combine = SecondsSince(start);
  }
  st.dispatch = std::move(layout.stats);
  return result;
}

}  // namespace moe
