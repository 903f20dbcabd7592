// The MPI side of `moe bench --ep N` and `moe run --ep N`: the launch check, the session and
// the communicator, and the helpers both commands share.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "comm/mpi_communicator.h"
#include "comm/replica_placement.h"

namespace moe::tools {

// MPI brought up for N ranks. Destroying it finalizes MPI (the communicator first).
struct EpSession {
  std::unique_ptr<comm::MpiSession> session;
  std::unique_ptr<comm::MpiCommunicator> comm;
  ~EpSession() { comm.reset(); }
};

// kInvalidArgument (a usage error) with the launch line when the process was not started by
// mpirun as one of exactly `ep` ranks: "--ep 4 needs 4 MPI ranks: mpirun --oversubscribe -np 4
// moe bench --ep 4 ..." (`command` is "bench" or "run"). Under a wrong world size every rank
// gets the error; `*quiet` is set on ranks other than 0 so that one line is printed.
absl::StatusOr<std::unique_ptr<EpSession>> StartEpSession(int ep, double timeout_seconds,
                                                          absl::string_view command, bool* quiet);

// --placement FILE (every rank reads it) or contiguous blocks; kInvalidArgument naming the
// file when its sizes disagree with num_experts / num_ranks.
absl::StatusOr<comm::ReplicatedPlacement> EpPlacement(const std::string& file, int32_t num_experts,
                                                      int32_t num_ranks);

// The first token of `rank` when `num_tokens` are split over `num_ranks` in contiguous blocks,
// the first num_tokens % num_ranks ranks holding one more; rank == num_ranks gives num_tokens.
int64_t TokenBlockBegin(int64_t num_tokens, int num_ranks, int rank);

// Collective: every rank's `value`, rank-major.
absl::StatusOr<std::vector<double>> GatherDoubles(comm::Communicator* comm, double value);
absl::StatusOr<std::vector<int64_t>> GatherInts(comm::Communicator* comm, int64_t value);

}  // namespace moe::tools
