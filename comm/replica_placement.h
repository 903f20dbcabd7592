// A replicated expert placement: each routed expert has one or more replicas on distinct
// ranks, each computing a share of the expert's tokens. What the replica planner and the EPLB
// baseline produce, what `moe plan --output` writes and `--placement FILE` reads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "comm/placement.h"

namespace moe::comm {

// One replica of an expert: the rank holding it and the fraction of the expert's tokens
// (rows) it computes.
struct ExpertReplica {
  int32_t rank = 0;
  double share = 0;
};

// One expert held by a rank, with the share of that expert's tokens this rank computes.
struct RankExpert {
  int32_t expert = 0;
  double share = 0;
};

// Slots: one per replica. With S = num_experts + redundant slots over num_ranks ranks, every
// rank holds floor(S / num_ranks) or ceil(S / num_ranks) slots (exactly S % num_ranks ranks
// hold the ceiling; which ones is the planner's choice): 256 + 32 over 64 ranks = 32 ranks of
// 5 and 32 of 4.
struct ReplicatedPlacement {
  int32_t num_experts = 0;
  int32_t num_ranks = 0;
  // [num_experts][replicas], ascending rank, shares sum to 1. The order is the split order:
  // replica 0 computes the expert's first rows (see ReplicaRowRanges).
  std::vector<std::vector<ExpertReplica>> replicas;
  // [num_ranks][slots], ascending expert: the same (expert, rank, share) triples by rank.
  std::vector<std::vector<RankExpert>> rank_experts;

  int64_t num_slots() const;
  int32_t num_replicas(int32_t expert) const {
    return static_cast<int32_t>(replicas[static_cast<size_t>(expert)].size());
  }
};

// Builds rank_experts from replicas (sorting both). kInvalidArgument naming the expert and
// replica for a rank outside [0, num_ranks).
absl::Status FillRankExperts(ReplicatedPlacement* placement);

// No replicas: experts in contiguous blocks, the first num_experts % num_ranks ranks holding
// one more (comm::ContiguousPlacement's rule), every share 1. The unbalanced reference.
// num_experts, num_ranks >= 1 (MOE_CHECK).
ReplicatedPlacement ContiguousReplicatedPlacement(int32_t num_experts, int32_t num_ranks);

// kInvalidArgument naming the first violation, unless: sizes match num_experts / num_ranks;
// every expert has >= 1 replica, ranks in range, ascending, no rank twice; shares finite,
// >= 0 and summing to 1 within 1e-9; rank_experts holds exactly the same triples, ascending;
// every rank holds floor or ceil of num_slots / num_ranks slots.
absl::Status ValidateReplicatedPlacement(const ReplicatedPlacement& placement, int32_t num_experts,
                                         int32_t num_ranks);

// ValidateReplicatedPlacement without the slot-count rule (any number of replicas per rank):
// what the Dispatcher and the expert-parallel layer need, so that any plain Placement fits.
absl::Status ValidateReplicaStructure(const ReplicatedPlacement& placement, int32_t num_experts,
                                      int32_t num_ranks);

// A plain placement as a replicated one: one replica of share 1 per expert.
ReplicatedPlacement ReplicatedFromPlacement(const Placement& placement);

// The experts `rank` holds, ascending (rank_experts[rank] without the shares): the order of
// that rank's expert weights. rank in [0, num_ranks).
std::vector<int32_t> HeldExperts(const ReplicatedPlacement& placement, int rank);

// [num_ranks] predicted load of each rank: sum over its replicas of share * expert_loads[e].
// expert_loads [num_experts]; its size must match (MOE_CHECK).
std::vector<double> PredictedRankLoads(const ReplicatedPlacement& placement,
                                       const std::vector<double>& expert_loads);

// The split of an expert's rows among its replicas, bit-identical on every rank.
//
// An expert's rows are numbered 0 .. count - 1 in the global token order (source rank, then
// token, as the Dispatcher orders them). Replica i of c computes the contiguous range
// [B(i), B(i + 1)) where, with U_i = the cumulative share of replicas 0 .. i - 1 in units of
// 2^-32 (U_0 = 0, U_c = 2^32; U_i = round(2^32 * (share_0 + ... + share_{i-1})), summed in
// replica order in double, clamped to be non-decreasing),
//   B(i) = floor((count * U_i + 2^31) / 2^32)      (integer arithmetic, 128-bit product)
// so B(0) = 0, B(c) = count, ranges are contiguous, cover every row once, and each holds
// within one row of count * (U_{i+1} - U_i) / 2^32 (and of count * share_i up to count * 2^-32).
// NOTE: which replica computes a row never changes the row's result, so the forward output
// does not depend on the placement.
inline constexpr uint64_t kShareUnit = uint64_t{1} << 32;

// [replicas + 1] the U_i above for one expert's replicas.
std::vector<uint64_t> CumulativeShareUnits(const std::vector<ExpertReplica>& replicas);
// B(i) above for one boundary: the first row of the replica whose cumulative units are `units`.
int64_t ReplicaRowBegin(int64_t count, uint64_t units);
// [replicas + 1] every B(i) for `count` rows.
std::vector<int64_t> ReplicaRowRanges(int64_t count, const std::vector<uint64_t>& units);
// The replica (index into the expert's list) computing row `row` of `count`; row in
// [0, count). Binary search over the boundaries.
int32_t ReplicaOfRow(int64_t row, int64_t count, const std::vector<uint64_t>& units);

// Text-format file (configs/placement.proto, message moe.config.ExpertPlacement).
// Writes `placement` with every share exactly (shortest round-trip decimal), and the loads
// it was planned for when given ([num_experts] or empty). kNotFound / kDataLoss naming the path.
absl::Status WritePlacementFile(const std::string& path, const ReplicatedPlacement& placement,
                                const std::vector<double>& expert_loads, absl::string_view comment);
// Parses a placement file and validates it (ValidateReplicatedPlacement). Errors name the file
// and the field: "p.textproto: experts[3] (expert 7): replicas[1].share: ...".
absl::StatusOr<ReplicatedPlacement> ParsePlacementText(absl::string_view text,
                                                       absl::string_view source);
absl::StatusOr<ReplicatedPlacement> ReadPlacementFile(const std::string& path);

}  // namespace moe::comm
