#include "comm/communicator.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace moe::comm {

absl::Status LocalCommunicator::AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                                          const std::vector<int64_t>& send_offsets, void* recv,
                                          const std::vector<int64_t>& recv_counts,
                                          const std::vector<int64_t>& recv_offsets) {
  if (send_counts.size() != 1 || send_offsets.size() != 1 || recv_counts.size() != 1 ||
      recv_offsets.size() != 1) {
    return absl::InvalidArgumentError("AllToAllV: counts and offsets must have one entry per rank");
  }
  if (send_counts[0] != recv_counts[0]) {
    return absl::InvalidArgumentError(absl::StrCat("AllToAllV: rank 0 sends ", send_counts[0],
                                                   " bytes to itself but expects ",
                                                   recv_counts[0]));
  }
  if (send_counts[0] < 0 || send_offsets[0] < 0 || recv_offsets[0] < 0) {
    return absl::InvalidArgumentError("AllToAllV: negative count or offset");
  }
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
