// Dispatcher: moves token rows to the ranks that hold their experts, and the results back.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "comm/placement.h"
#include "comm/replica_placement.h"
#include "moe/base/tensor.h"

namespace moe::comm {

struct DispatcherOptions {
  // Token rows one rank may receive in one dispatch; 0 = no limit. Every rank sees every
  // rank's counts before any payload moves, so an excess is kResourceExhausted on all ranks
  // (naming the rank and the limit), never an overflow.
  int64_t max_tokens_per_rank = 0;
};

// One rank's tokens and their routing. Pointers are borrowed for the call.
struct DispatchInput {
  const float* hidden = nullptr;         // [num_tokens, d_model]
  const int32_t* topk_ids = nullptr;     // [num_tokens, top_k], global expert ids
  const int64_t* row_of_slot = nullptr;  // [num_tokens * top_k], < 0 = dropped; null = all kept
  int64_t num_tokens = 0;
};

// The expert side of a dispatch: what this rank's local experts compute.
struct ExpertRows {
  // F32 [num_rows, d_model], grouped by local expert (the placement's rank_experts[rank]
  // order, ascending expert); within an expert by source rank, then token: the global token
  // order, restricted to this replica's row range (ReplicaRowRanges).
  Tensor rows;
  std::vector<int64_t> offsets;  // [num_local_experts + 1]
};

// Payload bytes of one all-to-all, as this rank saw it.
struct AllToAllBytes {
  int64_t sent = 0;      // to other ranks
  int64_t received = 0;  // from other ranks
  int64_t self = 0;      // kept on this rank (a copy, no transfer)
};

// Counts and times of one dispatch + combine. Counts cover all ranks (each rank sees them
// all); bytes and times are this rank's.
struct DispatchStats {
  std::vector<int64_t> source_tokens;  // [num_ranks] tokens each rank dispatched
  std::vector<int64_t> rank_tokens;    // [num_ranks] token rows each rank received
  std::vector<int64_t> rank_load;      // [num_ranks] expert rows each rank computes
  std::vector<int64_t> expert_load;    // [num_experts] kept slots of each expert, all ranks
  // [num_experts][replicas] rows each replica computes: ReplicaRowRanges of expert_load[e].
  std::vector<std::vector<int64_t>> replica_rows;
  AllToAllBytes dispatch_bytes;  // token rows (with their headers)
  AllToAllBytes combine_bytes;   // result rows
  double counts_seconds = 0;     // the all-gather of counts
  double dispatch_seconds = 0;   // the all-to-all of token rows
  double combine_seconds = 0;    // the all-to-all of result rows

  int64_t bytes_sent() const { return dispatch_bytes.sent + combine_bytes.sent; }
  int64_t bytes_received() const { return dispatch_bytes.received + combine_bytes.received; }
};

// Filled by Dispatch, read by Combine: where every row went and where its result lands.
struct DispatchLayout {
  int64_t num_tokens = 0;
  std::vector<int64_t> send_tokens;  // [num_ranks] token rows sent to each rank
  std::vector<int64_t> send_slots;   // [num_ranks] slots sent to each rank (= results back)
  std::vector<int64_t> recv_tokens;  // [num_ranks] token rows received from each rank
  std::vector<int64_t> recv_slots;   // [num_ranks] slots received from each rank
  // [num_tokens * top_k]: the row of the slot's result in Combine's output; -1 when dropped.
  std::vector<int64_t> return_row_of_slot;
  // [sum recv_slots]: the ExpertRows row of each received slot, in receive order (source
  // rank, token row, top-k position) - the order results travel back in.
  std::vector<int64_t> expert_row_of_recv_slot;
  DispatchStats stats;
};

// Replicas: an expert's kept slots, numbered in the global token order (source rank, then
// token), are split among its replicas by ReplicaRowRanges (comm/replica_placement.h); a
// slot's row within its expert is sum over source ranks s < src of count[s][e] plus its
// position among src's slots of e. Which replica computes a row never changes its result.
// A plain Placement is the case of one replica of share 1 per expert.
// Sends each token row ONCE per destination rank, with a header of top_k int32 naming the
// token's experts on that rank (-1 elsewhere); the receiver expands it to one row per local
// expert. Results travel back one row per slot, and the caller combines them in each token's
// top-k order (kernels::UnpermuteReduce with return_row_of_slot), so the output does not
// depend on the rank count or the placement. Per forward: Dispatch issues AllGather (counts),
// a second AllGather (token rows per destination; only when some expert has several
// replicas) then AllToAllV (rows), Combine one AllToAllV (results), in that order on every
// rank, also on ranks with no tokens or no experts.
// Bytes on the wire per token: D * (4 * top_k + 4 * d_model) out and k_kept * 4 * d_model
// back, D = the token's distinct destination ranks other than its own.
// The Dispatcher knows rows and destinations, not what an expert computes.
class Dispatcher {
 public:
  // `comm` is borrowed and must outlive the dispatcher; it must be a host-memory
  // communicator. kInvalidArgument when the placement does not fit comm->size() ranks.
  static absl::StatusOr<Dispatcher> Create(Communicator* comm, ReplicatedPlacement placement,
                                           int64_t d_model, int32_t top_k,
                                           DispatcherOptions options = {});
  // The plain placement as ReplicatedFromPlacement.
  static absl::StatusOr<Dispatcher> Create(Communicator* comm, const Placement& placement,
                                           int64_t d_model, int32_t top_k,
                                           DispatcherOptions options = {});

  // Collective. Validates `in`, exchanges counts, checks they agree, then moves rows. An
  // error on one rank fails every rank at the counts exchange: that rank returns its own
  // error, the others kAborted "rank 0: aborted because rank 2 failed (Dispatch)".
  // `local_status`: an error the caller hit before dispatching (then `in` is not read); it
  // travels the same way, so a caller need not synchronize before the dispatch.
  absl::StatusOr<ExpertRows> Dispatch(const DispatchInput& in, DispatchLayout* layout,
                                      absl::Status local_status = absl::OkStatus());

  // Collective. `expert_out` [ExpertRows.rows.dim(0), d_model] holds the local experts'
  // results row for row. Returns F32 [sum send_slots, d_model]; slot s's result is row
  // layout->return_row_of_slot[s]. Adds its bytes and time to layout->stats.
  absl::StatusOr<Tensor> Combine(const float* expert_out, DispatchLayout* layout);

  const ReplicatedPlacement& placement() const { return placement_; }
  // Whether some expert has more than one replica.
  bool replicated() const { return replicated_; }
  // Bytes of one dispatched token row: the top_k int32 header and d_model floats.
  int64_t token_row_bytes() const { return 4 * (int64_t{top_k_} + d_model_); }

 private:
  Dispatcher(Communicator* comm, ReplicatedPlacement placement, int64_t d_model, int32_t top_k,
             DispatcherOptions options);

  absl::Status CheckInput(const DispatchInput& in) const;

  Communicator* comm_;
  ReplicatedPlacement placement_;
  std::vector<std::vector<uint64_t>> units_;  // [num_experts][replicas + 1] CumulativeShareUnits
  std::vector<int32_t> local_index_;          // [num_experts] position in rank_experts[rank], or -1
  std::vector<int32_t> local_replica_;        // [num_local_experts] index in the expert's replicas
  bool replicated_ = false;
  int64_t d_model_;
  int32_t top_k_;
  DispatcherOptions options_;
};

}  // namespace moe::comm
