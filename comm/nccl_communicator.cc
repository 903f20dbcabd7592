#include "comm/nccl_communicator.h"

#ifdef MOE_HAVE_NCCL

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "moe/base/status_macros.h"

namespace moe::comm {
namespace {

using Clock = std::chrono::steady_clock;

Clock::time_point Deadline(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

absl::Status CudaStatus(cudaError_t error, const char* call) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: ", cudaGetErrorString(error)));
}

// An NCCL result as a Status with the code STYLE.md asks for.
absl::Status NcclStatus(ncclResult_t result, absl::string_view what) {
  const std::string message = absl::StrCat(what, ": ", ncclGetErrorString(result));
  switch (result) {
    case ncclSuccess:
    case ncclInProgress:
      return absl::OkStatus();
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return absl::InvalidArgumentError(message);
    case ncclInternalError:
      return absl::InternalError(message);
    default:  // ncclSystemError, ncclRemoteError, ncclUnhandledCudaError: a peer or the machine
      return absl::UnavailableError(message);
  }
}

// Polls the communicator's asynchronous state until it leaves ncclInProgress.
absl::Status WaitReady(ncclComm_t comm, Clock::time_point deadline, bool* timed_out) {
  *timed_out = false;
  for (;;) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t rc = ncclCommGetAsyncError(comm, &state);
    if (rc != ncclSuccess) return NcclStatus(rc, "ncclCommGetAsyncError");
    if (state != ncclInProgress) return NcclStatus(state, "NCCL asynchronous error");
    if (Clock::now() >= deadline) {
      *timed_out = true;
      return absl::OkStatus();
    }
    std::this_thread::yield();
  }
}

}  // namespace

int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(Communicator* bootstrap,
                                                                           NcclOptions options) {
  if (bootstrap == nullptr || bootstrap->memory_space() != MemorySpace::kHost) {
    return absl::InvalidArgumentError("NcclCommunicator: needs a host bootstrap communicator");
  }
  if (!(options.timeout_seconds > 0)) {
    return absl::InvalidArgumentError("NcclCommunicator: timeout must be > 0 seconds");
  }
  const int rank = bootstrap->rank();
  const int size = bootstrap->size();
  // [ready flag][unique id] from every rank; rank 0's id is the one used.
  struct Hello {
    int64_t ready = 0;
    ncclUniqueId id;
  };
  Hello mine;
  std::memset(&mine.id, 0, sizeof(mine.id));
  absl::Status local = absl::OkStatus();
  const int devices = CudaDeviceCount();
  const int device = options.device >= 0 ? options.device : (devices > 0 ? rank % devices : 0);
  if (devices == 0) {
    local = absl::FailedPreconditionError(
        absl::StrCat("rank ", rank, ": no CUDA device visible for NCCL"));
  } else if (device >= devices) {
    local = absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, ": CUDA device ", device, " requested, ", devices, " visible"));
  } else if (rank == 0) {
    local = NcclStatus(ncclGetUniqueId(&mine.id), "ncclGetUniqueId");
  }
  mine.ready = local.ok() ? 1 : 0;
  std::vector<Hello> all(static_cast<size_t>(size));
  MOE_RETURN_IF_ERROR(bootstrap->AllGather(&mine, sizeof(Hello), all.data()));
  if (!local.ok()) return local;
  for (int r = 0; r < size; ++r) {
    if (all[static_cast<size_t>(r)].ready == 0) {
      return absl::AbortedError(absl::StrCat("rank ", rank, ": NCCL set-up aborted because rank ",
                                             r, " has no usable CUDA device"));
    }
  }

  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(rank, size, device, options));
  MOE_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
  MOE_RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&c->stream_, cudaStreamNonBlocking),
                                 "cudaStreamCreate"));
  MOE_RETURN_IF_ERROR(CudaStatus(
      cudaMalloc(reinterpret_cast<void**>(&c->scratch_), sizeof(int64_t)), "cudaMalloc"));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  MOE_RETURN_IF_ERROR(c->Check(ncclCommInitRankConfig(&c->comm_, size, all[0].id, rank, &config),
                               "ncclCommInitRankConfig", "init"));
  bool timed_out = false;
  absl::Status ready = WaitReady(c->comm_, Deadline(options.timeout_seconds), &timed_out);
  if (!ready.ok()) return c->Fail(ready);
  if (timed_out) {
    return c->Fail(absl::DeadlineExceededError(
        absl::StrFormat("rank %d: NCCL communicator of %d ranks not ready within %g s "
                        "(ncclCommInitRankConfig)",
                        rank, size, options.timeout_seconds)));
  }
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr) {
    bool clean = failure_.ok();
    if (clean) {
      ncclResult_t rc = ncclCommFinalize(comm_);
      bool timed_out = false;
      clean = (rc == ncclSuccess || rc == ncclInProgress) &&
              WaitReady(comm_, Deadline(options_.timeout_seconds), &timed_out).ok() && !timed_out;
    }
    if (clean) {
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
  }
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::Status NcclCommunicator::Fail(absl::Status status) {
  if (!status.ok() && failure_.ok()) {
    failure_ = status;
    if (comm_ != nullptr) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
  }
  return status;
}

absl::Status NcclCommunicator::Check(ncclResult_t result, const char* call, const char* op) {
  if (result == ncclSuccess || result == ncclInProgress) return absl::OkStatus();
  std::string detail = comm_ != nullptr ? ncclGetLastError(comm_) : "";
  absl::Status s =
      NcclStatus(result, absl::StrCat("rank ", rank_, ": ", call, " failed (", op, ")",
                                      detail.empty() ? "" : absl::StrCat(" [", detail, "]")));
  return Fail(s);
}

absl::Status NcclCommunicator::Wait(const char* op, const std::vector<int>& peers) {
  const Clock::time_point deadline = Deadline(options_.timeout_seconds);
  auto timeout = [&] {
    return Fail(absl::DeadlineExceededError(absl::StrFormat(
        "rank %d: NCCL %s did not complete within %g s, waiting on ranks %s (NCCL cannot say "
        "which one died or stalled; the communicator was aborted)",
        rank_, op, options_.timeout_seconds, absl::StrJoin(peers, ", "))));
  };
  bool timed_out = false;
  absl::Status s = WaitReady(comm_, deadline, &timed_out);
  if (!s.ok())
    return Fail(absl::Status(s.code(), absl::StrCat("rank ", rank_, " (", op, "): ", s.message())));
  if (timed_out) return timeout();
  for (;;) {
    const cudaError_t e = cudaStreamQuery(stream_);
    if (e == cudaSuccess) return absl::OkStatus();
    if (e != cudaErrorNotReady) return Fail(CudaStatus(e, "cudaStreamQuery"));
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm_, &state);
    if (state != ncclSuccess && state != ncclInProgress) {
      return Fail(NcclStatus(state, absl::StrCat("rank ", rank_, ": NCCL ", op, " failed")));
    }
    if (Clock::now() >= deadline) return timeout();
    std::this_thread::yield();
  }
}

absl::Status NcclCommunicator::AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                                         const std::vector<int64_t>& send_offsets, void* recv,
                                         const std::vector<int64_t>& recv_counts,
                                         const std::vector<int64_t>& recv_offsets) {
  MOE_RETURN_IF_ERROR(
      ValidateAllToAllV(size_, rank_, send_counts, send_offsets, recv_counts, recv_offsets));
  if (!failure_.ok()) return absl::UnavailableError(failure_.message());
  const char* s = static_cast<const char*>(send);
  char* r = static_cast<char*>(recv);
  std::vector<int> peers;
  if (send_counts[rank_] > 0) {
    MOE_RETURN_IF_ERROR(Fail(CudaStatus(
        cudaMemcpyAsync(r + recv_offsets[rank_], s + send_offsets[rank_],
                        static_cast<size_t>(send_counts[rank_]), cudaMemcpyDeviceToDevice, stream_),
        "cudaMemcpyAsync")));
  }
  MOE_RETURN_IF_ERROR(Check(ncclGroupStart(), "ncclGroupStart", "AllToAllV"));
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    if (recv_counts[p] > 0) {
      peers.push_back(p);
      MOE_RETURN_IF_ERROR(Check(ncclRecv(r + recv_offsets[p], static_cast<size_t>(recv_counts[p]),
                                         ncclUint8, p, comm_, stream_),
                                "ncclRecv", "AllToAllV"));
    }
    if (send_counts[p] > 0) {
      MOE_RETURN_IF_ERROR(Check(ncclSend(s + send_offsets[p], static_cast<size_t>(send_counts[p]),
                                         ncclUint8, p, comm_, stream_),
                                "ncclSend", "AllToAllV"));
    }
  }
  MOE_RETURN_IF_ERROR(Check(ncclGroupEnd(), "ncclGroupEnd", "AllToAllV"));
  return Wait("AllToAllV", peers);
}

absl::Status NcclCommunicator::AllGather(const void* send, int64_t bytes, void* recv) {
  if (bytes < 0) return absl::InvalidArgumentError("AllGather: negative byte count");
  if (!failure_.ok()) return absl::UnavailableError(failure_.message());
  std::vector<int> peers;
  for (int p = 0; p < size_; ++p) {
    if (p != rank_) peers.push_back(p);
  }
  MOE_RETURN_IF_ERROR(
      Check(ncclAllGather(send, recv, static_cast<size_t>(bytes), ncclUint8, comm_, stream_),
            "ncclAllGather", "AllGather"));
  return Wait("AllGather", peers);
}

absl::Status NcclCommunicator::AllReduceSum(int64_t* values, int64_t n) {
  if (n < 0) return absl::InvalidArgumentError("AllReduceSum: negative count");
  if (!failure_.ok()) return absl::UnavailableError(failure_.message());
  std::vector<int> peers;
  for (int p = 0; p < size_; ++p) {
    if (p != rank_) peers.push_back(p);
  }
  MOE_RETURN_IF_ERROR(Check(
      ncclAllReduce(values, values, static_cast<size_t>(n), ncclInt64, ncclSum, comm_, stream_),
      "ncclAllReduce", "AllReduceSum"));
  return Wait("AllReduceSum", peers);
}

absl::Status NcclCommunicator::Barrier() { return AllReduceSum(scratch_, 1); }

}  // namespace moe::comm

#else  // !MOE_HAVE_NCCL

namespace moe::comm {
int CudaDeviceCount() { return 0; }
}  // namespace moe::comm

#endif  // MOE_HAVE_NCCL
