#include "comm/communicator.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace moe::comm {

absl::Status ValidateAllToAllV(int num_ranks, int rank, const std::vector<int64_t>& send_counts,
                               const std::vector<int64_t>& send_offsets,
                               const std::vector<int64_t>& recv_counts,
                               const std::vector<int64_t>& recv_offsets) {
  const size_t n = static_cast<size_t>(num_ranks);
  if (send_counts.size() != n || send_offsets.size() != n || recv_counts.size() != n ||
      recv_offsets.size() != n) {
    return absl::InvalidArgumentError("AllToAllV: counts and offsets must have one entry per rank");
  }
  for (size_t p = 0; p < n; ++p) {
    if (send_counts[p] < 0 || send_offsets[p] < 0 || recv_counts[p] < 0 || recv_offsets[p] < 0) {
      return absl::InvalidArgumentError("AllToAllV: negative count or offset");
    }
  }
  const size_t self = static_cast<size_t>(rank);
  if (send_counts[self] != recv_counts[self]) {
    return absl::InvalidArgumentError(
        absl::StrCat("AllToAllV: rank ", rank, " sends ", send_counts[self],
                     " bytes to itself but expects ", recv_counts[self]));
  }
  return absl::OkStatus();
}

absl::Status LocalCommunicator::AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                                          const std::vector<int64_t>& send_offsets, void* recv,
                                          const std::vector<int64_t>& recv_counts,
                                          const std::vector<int64_t>& recv_offsets) {
  absl::Status valid =
      ValidateAllToAllV(1, 0, send_counts, send_offsets, recv_counts, recv_offsets);
  if (!valid.ok()) return valid;
  if (send_counts[0] > 0) {
    std::memmove(static_cast<char*>(recv) + recv_offsets[0],
                 static_cast<const char*>(send) + send_offsets[0],
                 static_cast<size_t>(send_counts[0]));
  }
  return absl::OkStatus();
}

absl::Status LocalCommunicator::AllGather(const void* send, int64_t bytes, void* recv) {
  if (bytes < 0) return absl::InvalidArgumentError("AllGather: negative byte count");
  if (bytes > 0) std::memmove(recv, send, static_cast<size_t>(bytes));
  return absl::OkStatus();
}

}  // namespace moe::comm
