// Communicator: the collectives the expert-parallel layer needs, over some transport.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"

namespace moe::comm {

// A group of ranks. Every collective must be called by all ranks in the same order.
// Counts and displacements are in bytes. Implementations: LocalCommunicator (one rank);
// MPI and NCCL ones come with expert parallelism.
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // The v-variant all-to-all: rank r sends send_counts[p] bytes at send + send_offsets[p] to
  // each peer p and receives recv_counts[p] bytes at recv + recv_offsets[p] from it.
  // kInvalidArgument when the vectors are not size() long; kDeadlineExceeded /
  // kUnavailable naming the peer when one dies or stalls.
  virtual absl::Status AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                                 const std::vector<int64_t>& send_offsets, void* recv,
                                 const std::vector<int64_t>& recv_counts,
                                 const std::vector<int64_t>& recv_offsets) = 0;

  // Every rank contributes `bytes` bytes; recv holds size() * bytes, rank-major.
  virtual absl::Status AllGather(const void* send, int64_t bytes, void* recv) = 0;

  // Elementwise sum of n int64 values across ranks, in place.
  virtual absl::Status AllReduceSum(int64_t* values, int64_t n) = 0;

  virtual absl::Status Barrier() = 0;
};

// One rank: every collective is a local copy.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  absl::Status AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                         const std::vector<int64_t>& send_offsets, void* recv,
                         const std::vector<int64_t>& recv_counts,
                         const std::vector<int64_t>& recv_offsets) override;
  absl::Status AllGather(const void* send, int64_t bytes, void* recv) override;
  absl::Status AllReduceSum(int64_t* values, int64_t n) override { return absl::OkStatus(); }
  absl::Status Barrier() override { return absl::OkStatus(); }
};

}  // namespace moe::comm
