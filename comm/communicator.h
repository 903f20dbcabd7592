// Communicator: the collectives the expert-parallel layer needs, over some transport.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"

namespace moe::comm {

// Where a communicator's buffers live.
enum class MemorySpace { kHost, kDevice };

// Default bound on one collective; a peer that has not answered by then is an error.
inline constexpr double kDefaultTimeoutSeconds = 60.0;

// A group of ranks. Every collective must be called by all ranks in the same order.
// Counts and displacements are in bytes. Implementations: LocalCommunicator (one rank),
// MpiCommunicator (comm/mpi_communicator.h, host buffers), NcclCommunicator
// (comm/nccl_communicator.h, device buffers). Not thread-safe: one caller at a time.
// NOTE: every collective of the multi-rank implementations is bounded by a timeout; a peer
// that died or stalled becomes kDeadlineExceeded / kUnavailable naming the call and the
// peer, after which the communicator is unusable (every later call fails, kUnavailable).
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Host memory unless overridden (NCCL: device memory).
  virtual MemorySpace memory_space() const { return MemorySpace::kHost; }

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

// Checks AllToAllV's arguments on `rank` of `num_ranks` ranks: kInvalidArgument when a vector
// is not num_ranks long, a count or offset is negative, or the bytes the rank sends itself
// differ from those it expects from itself.
absl::Status ValidateAllToAllV(int num_ranks, int rank, const std::vector<int64_t>& send_counts,
                               const std::vector<int64_t>& send_offsets,
                               const std::vector<int64_t>& recv_counts,
                               const std::vector<int64_t>& recv_offsets);

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
