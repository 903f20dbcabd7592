// NcclCommunicator: the Communicator of GPU ranks, over a non-blocking NCCL communicator whose
// unique id travels over a bootstrap (MPI) communicator. Built only with the CUDA toolkit
// (MOE_HAVE_NCCL); CudaDeviceCount() exists in every build.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "comm/communicator.h"

#ifdef MOE_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace moe::comm {

// CUDA devices this process sees; 0 in a build without NCCL or when the driver reports none.
int CudaDeviceCount();

#ifdef MOE_HAVE_NCCL

struct NcclOptions {
  // Bound on creation and on each collective, in seconds (> 0).
  double timeout_seconds = kDefaultTimeoutSeconds;
  // The CUDA device of this rank; -1 = bootstrap rank % CudaDeviceCount().
  int device = -1;
};

// Device-memory collectives: every buffer argument, AllReduceSum's values included, is a
// device pointer of device(). Each call enqueues on stream() and returns when the stream has
// finished it. The communicator is non-blocking (ncclCommInitRankConfig with blocking = 0):
// calls poll ncclCommGetAsyncError and cudaStreamQuery against the deadline, and on timeout
// ncclCommAbort tears the communicator down and the call is kDeadlineExceeded naming the peers
// this rank was waiting on (NCCL cannot say which one stalled). AllToAllV is one group of
// ncclSend/ncclRecv per peer (the self part a device copy). Every NCCL/CUDA return code
// becomes a Status naming the call.
class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap` (a host communicator, e.g. MpiCommunicator, borrowed for
  // the call): rank 0 creates the unique id and an AllGather shares it, together with every
  // rank's readiness, so a rank without a device fails all ranks (kFailedPrecondition "no
  // CUDA device visible" there, kAborted naming it elsewhere).
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(Communicator* bootstrap,
                                                                  NcclOptions options = {});
  // ncclCommFinalize + ncclCommDestroy, or ncclCommAbort after a failure.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MemorySpace memory_space() const override { return MemorySpace::kDevice; }
  absl::Status AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                         const std::vector<int64_t>& send_offsets, void* recv,
                         const std::vector<int64_t>& recv_counts,
                         const std::vector<int64_t>& recv_offsets) override;
  absl::Status AllGather(const void* send, int64_t bytes, void* recv) override;
  absl::Status AllReduceSum(int64_t* values, int64_t n) override;
  absl::Status Barrier() override;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }

 private:
  NcclCommunicator(int rank, int size, int device, NcclOptions options)
      : rank_(rank), size_(size), device_(device), options_(options) {}

  // Waits for the enqueued work of `op`: NCCL's in-progress state, then the stream.
  // `peers` are named when the deadline passes.
  absl::Status Wait(const char* op, const std::vector<int>& peers);
  // The Status of an NCCL result; ncclSuccess and ncclInProgress are OK.
  absl::Status Check(ncclResult_t result, const char* call, const char* op);
  absl::Status Fail(absl::Status status);

  int rank_;
  int size_;
  int device_;
  NcclOptions options_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int64_t* scratch_ = nullptr;  // one device int64 for Barrier
  absl::Status failure_;        // the first error; later calls fail with kUnavailable
};

#endif  // MOE_HAVE_NCCL

}  // namespace moe::comm
