#include "comm/expert_mover.h"

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "moe/base/status_macros.h"

namespace moe::comm {
namespace {

// [num_experts] the position of each expert in rank's list, or -1.
std::vector<int32_t> IndexOnRank(const ReplicatedPlacement& p, int rank) {
  std::vector<int32_t> index(static_cast<size_t>(p.num_experts), -1);
  const std::vector<RankExpert>& list = p.rank_experts[static_cast<size_t>(rank)];
  for (size_t i = 0; i < list.size(); ++i) {
    index[static_cast<size_t>(list[i].expert)] = static_cast<int32_t>(i);
  }
  return index;
}

}  // namespace

std::vector<ExpertTransfer> PlanExpertTransfers(const ReplicatedPlacement& from,
                                                const ReplicatedPlacement& to) {
  std::vector<ExpertTransfer> transfers;
  for (int32_t r = 0; r < to.num_ranks; ++r) {
    const std::vector<int32_t> had = IndexOnRank(from, r);
    for (const RankExpert& x : to.rank_experts[static_cast<size_t>(r)]) {
      if (had[static_cast<size_t>(x.expert)] >= 0) continue;
      transfers.push_back({x.expert, from.replicas[static_cast<size_t>(x.expert)][0].rank, r});
    }
  }
  return transfers;
}

absl::Status MoveExpertBlocks(Communicator* comm, const ReplicatedPlacement& from,
                              const ReplicatedPlacement& to, int64_t block_bytes,
                              const char* blocks, char* out, ExpertMoveStats* stats) {
  const auto start = std::chrono::steady_clock::now();
  if (comm == nullptr || block_bytes < 0 || from.num_experts != to.num_experts ||
      from.num_ranks != to.num_ranks || from.num_ranks != comm->size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MoveExpertBlocks: placements of ", from.num_experts, " experts on ", from.num_ranks,
        " ranks and ", to.num_experts, " on ", to.num_ranks, " ranks, for ",
        comm == nullptr ? 0 : comm->size(), " ranks, block_bytes=", block_bytes));
  }
  MOE_RETURN_IF_ERROR(ValidateReplicaStructure(from, from.num_experts, from.num_ranks));
  MOE_RETURN_IF_ERROR(ValidateReplicaStructure(to, to.num_experts, to.num_ranks));
  const int n = comm->size();
  const int me = comm->rank();
  const size_t nr = static_cast<size_t>(n);
  const std::vector<ExpertTransfer> transfers = PlanExpertTransfers(from, to);
  const std::vector<int32_t> old_index = IndexOnRank(from, me);
  const std::vector<int32_t> new_index = IndexOnRank(to, me);
  ExpertMoveStats st;
  st.transfers = static_cast<int32_t>(transfers.size());
  st.total_bytes = st.transfers * block_bytes;

  // Kept blocks: a local copy.
  for (size_t e = 0; e < new_index.size(); ++e) {
    if (new_index[e] >= 0 && old_index[e] >= 0) {
      std::memcpy(out + new_index[e] * block_bytes, blocks + old_index[e] * block_bytes,
                  static_cast<size_t>(block_bytes));
      st.bytes_kept += block_bytes;
    }
  }
  // Send order to each peer and receive order from each: the transfers' order (to, expert).
  std::vector<int64_t> send_counts(nr, 0), recv_counts(nr, 0);
  for (const ExpertTransfer& x : transfers) {
    if (x.from == me) send_counts[static_cast<size_t>(x.to)] += block_bytes;
    if (x.to == me) recv_counts[static_cast<size_t>(x.from)] += block_bytes;
  }
  std::vector<int64_t> send_offsets(nr, 0), recv_offsets(nr, 0);
  for (size_t p = 1; p < nr; ++p) {
    send_offsets[p] = send_offsets[p - 1] + send_counts[p - 1];
    recv_offsets[p] = recv_offsets[p - 1] + recv_counts[p - 1];
  }
  std::vector<char> send(static_cast<size_t>(send_offsets[nr - 1] + send_counts[nr - 1]));
  std::vector<char> recv(static_cast<size_t>(recv_offsets[nr - 1] + recv_counts[nr - 1]));
  std::vector<int64_t> send_cursor = send_offsets;
  for (const ExpertTransfer& x : transfers) {
    if (x.from != me) continue;
    std::memcpy(send.data() + send_cursor[static_cast<size_t>(x.to)],
                blocks + old_index[static_cast<size_t>(x.expert)] * block_bytes,
                static_cast<size_t>(block_bytes));
    send_cursor[static_cast<size_t>(x.to)] += block_bytes;
  }
  MOE_RETURN_IF_ERROR(comm->AllToAllV(send.data(), send_counts, send_offsets, recv.data(),
                                      recv_counts, recv_offsets));
  std::vector<int64_t> recv_cursor = recv_offsets;
  for (const ExpertTransfer& x : transfers) {
    if (x.to != me) continue;
    std::memcpy(out + new_index[static_cast<size_t>(x.expert)] * block_bytes,
                recv.data() + recv_cursor[static_cast<size_t>(x.from)],
                static_cast<size_t>(block_bytes));
    recv_cursor[static_cast<size_t>(x.from)] += block_bytes;
  }
  for (size_t p = 0; p < nr; ++p) {
    st.bytes_sent += send_counts[p];
    st.bytes_received += recv_counts[p];
  }
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (stats != nullptr) *stats = st;
  return absl::OkStatus();
}

}  // namespace moe::comm
