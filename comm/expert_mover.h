// ExpertMover: moves expert weight blocks between ranks when the placement changes.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "comm/communicator.h"
#include "comm/replica_placement.h"

namespace moe::comm {

// One expert block that travels: `expert` from rank `from` (an old holder) to rank `to` (a
// new holder that did not hold it).
struct ExpertTransfer {
  int32_t expert = 0;
  int32_t from = 0;
  int32_t to = 0;
};

// The transfers that take the holders of `from` to those of `to` (same experts and ranks):
// one per (expert, new holder lacking it), sent by the expert's old holder of lowest rank.
// Ascending (to, expert). Deterministic, so every rank computes the same list.
std::vector<ExpertTransfer> PlanExpertTransfers(const ReplicatedPlacement& from,
                                                const ReplicatedPlacement& to);

// What one move cost.
struct ExpertMoveStats {
  int32_t transfers = 0;       // expert blocks that changed holders, all ranks
  int64_t total_bytes = 0;     // transfers * block_bytes: bytes on the wire, all ranks
  int64_t bytes_sent = 0;      // this rank's
  int64_t bytes_received = 0;  // this rank's
  int64_t bytes_kept = 0;      // blocks this rank held before and after (a local copy)
  double seconds = 0;          // this rank's wall time of the move
};

// Collective (one AllToAllV, on every rank, also when nothing moves). `blocks` holds this
// rank's experts under `from` (HeldExperts order), `block_bytes` each; `out` receives its
// experts under `to` (HeldExperts order), block_bytes each. A rank that keeps an expert
// copies it locally; only blocks a new holder lacks travel. kInvalidArgument when the
// placements disagree on num_experts / num_ranks or do not fit comm->size().
absl::Status MoveExpertBlocks(Communicator* comm, const ReplicatedPlacement& from,
                              const ReplicatedPlacement& to, int64_t block_bytes,
                              const char* blocks, char* out, ExpertMoveStats* stats);

}  // namespace moe::comm
