// MpiCommunicator: the Communicator of CPU ranks, over MPI point-to-point messages, every
// collective bounded by a timeout.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"

namespace moe::comm {

struct MpiOptions {
  // Bound on each collective, in seconds (> 0). A peer that has not delivered its data by
  // then is kDeadlineExceeded naming it. Later the `--timeout` flag of the command line.
  double timeout_seconds = kDefaultTimeoutSeconds;
};

// Host-memory collectives among the ranks of an MPI communicator. Every collective posts one
// MPI_Irecv / MPI_Isend per peer (tagged with the collective's sequence number) and polls
// them with MPI_Testsome against the deadline, so a dead or stalled peer is an error naming
// it, never a hang:
//   kDeadlineExceeded "rank 1: no data from rank 3 within 5 s (AllToAllV)"
//   kUnavailable      "rank 1: MPI_Isend to rank 3 failed (AllToAllV): <MPI's message>"
// After either the communicator is unusable. AllReduceSum sums in rank order, so every rank
// gets the same bits. Not thread-safe; the process must have called MPI_Init(_thread).
// NOTE: Open MPI's mpirun by default kills the whole job as soon as one rank dies (it prints
// "mpirun noticed that process rank 2 ... exited on signal 9"), so the survivors' timeouts
// matter for stalled ranks, and for dead ones under `mpirun --enable-recovery`.
class MpiCommunicator final : public Communicator {
 public:
  // Duplicates `comm` (a collective call over it) and sets MPI_ERRORS_RETURN on the copy so
  // MPI errors become Status. kInvalidArgument for a bad timeout; kUnavailable when MPI is
  // not initialized or a call fails.
  static absl::StatusOr<std::unique_ptr<MpiCommunicator>> Create(MPI_Comm comm,
                                                                 MpiOptions options = {});
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                         const std::vector<int64_t>& send_offsets, void* recv,
                         const std::vector<int64_t>& recv_counts,
                         const std::vector<int64_t>& recv_offsets) override;
  absl::Status AllGather(const void* send, int64_t bytes, void* recv) override;
  absl::Status AllReduceSum(int64_t* values, int64_t n) override;
  absl::Status Barrier() override;

  // The duplicated communicator (for MPI's own collectives, e.g. the bandwidth ceiling).
  MPI_Comm comm() const { return comm_; }
  double timeout_seconds() const { return options_.timeout_seconds; }

 private:
  // One point-to-point message of a collective: `bytes` at `buffer` to or from `peer`.
  struct Transfer {
    int peer = 0;
    void* buffer = nullptr;
    int64_t bytes = 0;
  };

  MpiCommunicator(MPI_Comm comm, int rank, int size, int tag_bound, MpiOptions options)
      : comm_(comm), rank_(rank), size_(size), tag_bound_(tag_bound), options_(options) {}

  // Posts every receive, then every send, and polls until all are done, the deadline passes
  // or MPI fails. `op` names the collective in messages.
  absl::Status Exchange(const char* op, const std::vector<Transfer>& recvs,
                        const std::vector<Transfer>& sends);
  // Sets the first error and makes later calls fail with it.
  absl::Status Fail(absl::Status status);

  MPI_Comm comm_;
  int rank_;
  int size_;
  int tag_bound_;  // tags cycle through [0, tag_bound_)
  MpiOptions options_;
  int64_t sequence_ = 0;  // collectives issued so far
  absl::Status failure_;  // the first error; every later call returns kUnavailable
};

// Initializes MPI for this process (MPI_Init_thread, MPI_THREAD_FUNNELED: only the calling
// thread talks to MPI; OpenMP threads never do) and finalizes it when destroyed.
// NOTE: after a collective failed, leave with std::exit(1) instead of destroying the session:
// MPI_Finalize waits for the peers and would hang on a stalled one.
class MpiSession {
 public:
  // kUnavailable when MPI is already initialized or MPI_Init_thread fails.
  static absl::StatusOr<std::unique_ptr<MpiSession>> Init(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }

 private:
  MpiSession(int rank, int size) : world_rank_(rank), world_size_(size) {}
  int world_rank_;
  int world_size_;
};

// True when a launcher started this process as one of several ranks (Open MPI, MPICH/Hydra or
// Slurm environment variables), i.e. when the command line should bring up MPI.
bool LaunchedUnderMpi();

// The message of an MPI error code, e.g. "MPI_ERR_TRUNCATE: message truncated".
std::string MpiErrorString(int code);

}  // namespace moe::comm
