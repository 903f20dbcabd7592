// ExpertParallelLayer: one MoE block forward with the routed experts sharded across ranks.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "comm/alltoall_perf.h"
#include "comm/communicator.h"
#include "comm/dispatcher.h"
#include "comm/expert_mover.h"
#include "comm/placement.h"
#include "comm/replica_placement.h"
#include "configs/moe_config.pb.h"
#include "gating/routing_plan.h"
#include "moe/layer_weights.h"
#include "moe/moe_layer.h"

namespace moe {

struct EpOptions {
  comm::DispatcherOptions dispatcher;    // e.g. max_tokens_per_rank
  experts::ExpertKernelOptions experts;  // kernels and weight format of the local experts
};

// What one expert-parallel forward measured. Counts cover all ranks; times and bytes are this
// rank's.
struct EpStats {
  StageTimes times;              // route, plan, experts (local routed + shared), combine
  double sync_seconds = 0;       // the all-gather of token counts and demand
  comm::DispatchStats dispatch;  // per-rank load, per-expert load, bytes, all-to-all times
  int64_t global_tokens = 0;     // tokens of all ranks
  int64_t global_dropped_slots = 0;

  // Seconds in the two payload all-to-alls (dispatch + combine).
  double alltoall_seconds() const { return dispatch.dispatch_seconds + dispatch.combine_seconds; }
  // nccl-tests' algbw and busbw of those two all-to-alls together, from this rank's view: the
  // bytes it sent (its own part included) over alltoall_seconds().
  comm::AllToAllPerf AllToAllBandwidth() const;
  // max / mean of dispatch.rank_load: 1 = even; 0 when no slot was routed.
  double LoadImbalance() const;
};

// What one Rebalance cost.
struct RebalanceStats {
  comm::ExpertMoveStats move;  // blocks moved, bytes (all ranks and this rank's), time
  int64_t block_bytes = 0;     // bytes of one expert's weights
  double seconds = 0;          // this rank's wall time: pack, move, unpack, new dispatcher
};

// Each rank holds the router and the shared experts whole and the routed experts its
// placement names. Forward routes its own tokens, sends each token row once per destination
// rank (comm::Dispatcher), runs its local experts on what arrives, sends results back and
// combines them in each token's top-k order with MoeLayer's stages.
// Bitwise contract: the output of every rank equals the slice of MoeLayer::Forward over all
// ranks' tokens concatenated in rank order, for any rank count and placement. Capacity
// (DROP_IN_TOKEN_ORDER) is per expert over that global order: capacity =
// ExpertCapacity(config, total tokens) and rank 0's slots come first (moe/ep_capacity.h).
// Per forward, on every rank in this order: AllGather (demand; only with capacity), AllGather
// (dispatch counts), AllToAllV (rows), AllToAllV (results).
// Not thread-safe (it drives the communicator).
class ExpertParallelLayer {
 public:
  // `weights` holds every routed expert (the others are dropped here) or only this rank's,
  // in the placement's local order (RandomLocalLayerWeights, KeepLocalExperts). `comm` is
  // borrowed, must outlive the layer and hold host memory (MPI or local). kInvalidArgument for
  // a bad config, a placement not for comm->size() ranks, or a weight whose shape disagrees.
  static absl::StatusOr<ExpertParallelLayer> Create(config::LayerConfig config,
                                                    MoeLayerWeights weights,
                                                    const comm::Placement& placement,
                                                    comm::Communicator* comm,
                                                    EpOptions options = {});
  // Replicated experts: `placement` must pass comm::ValidateReplicaStructure; `weights` holds
  // every routed expert or exactly this rank's (comm::HeldExperts order: RandomHeldLayerWeights,
  // KeepHeldExperts). An expert's rows are split among its replicas (comm::Dispatcher), and
  // the output is bitwise the same as without replicas.
  static absl::StatusOr<ExpertParallelLayer> Create(config::LayerConfig config,
                                                    MoeLayerWeights weights,
                                                    comm::ReplicatedPlacement placement,
                                                    comm::Communicator* comm,
                                                    EpOptions options = {});

  // Collective. hidden_states: this rank's tokens, F32 or BF16 [num_tokens, d_model]; the
  // token count may differ by rank and may be 0. Returns this rank's output, topk ids and
  // weights; expert_load and dropped_slots count this rank's tokens (stats has the totals).
  // A bad input on one rank fails every rank (its own error there, kAborted naming it
  // elsewhere: "rank 0: aborted because rank 2 failed (Dispatch)"); a dead or stalled peer is the
  // communicator's kDeadlineExceeded/kUnavailable.
  absl::StatusOr<LayerOutput> Forward(const Tensor& hidden_states, EpStats* stats = nullptr);

  const config::LayerConfig& config() const { return config_; }
  // Collective, between forwards: adopts `next` (same experts and ranks; identical on every
  // rank), moving expert weights over the communicator (comm::MoveExpertBlocks: one
  // AllToAllV; only the blocks a new holder lacks travel). Outputs after it are bitwise
  // unchanged. On an error the layer keeps its old placement and weights.
  absl::Status Rebalance(comm::ReplicatedPlacement next, RebalanceStats* stats = nullptr);

  const comm::ReplicatedPlacement& placement() const { return dispatcher_.placement(); }
  // Router and shared experts whole; experts = this rank's routed experts.
  const MoeLayerWeights& weights() const { return weights_; }

 private:
  // The all-gather of demand and the global-order capacity drops (moe/ep_capacity.h); also
  // carries `local` so that every rank stops when one failed.
  absl::Status ApplyGlobalCapacity(const absl::Status& local, gating::RoutingPlan* plan,
                                   EpStats* stats);

  ExpertParallelLayer(config::LayerConfig config, MoeLayerWeights weights, comm::Communicator* comm,
                      comm::Dispatcher dispatcher, EpOptions options)
      : config_(std::move(config)),
        weights_(std::move(weights)),
        comm_(comm),
        dispatcher_(std::move(dispatcher)),
        options_(options) {
    PackBanks();
  }
  // (Re)builds routed_ and shared_ from weights_.
  void PackBanks();

  config::LayerConfig config_;
  MoeLayerWeights weights_;
  comm::Communicator* comm_;
  comm::Dispatcher dispatcher_;
  EpOptions options_;
  experts::ExpertBank routed_;
  experts::ExpertBank shared_;
  std::shared_ptr<const kernels::PackedMatrix> packed_router_;  // null: plain router GEMM
};

}  // namespace moe
