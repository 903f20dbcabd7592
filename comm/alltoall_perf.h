// All-to-all bandwidth as nccl-tests reports it, for our AllToAllV and for MPI's own.
#pragma once

#include <mpi.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "comm/mpi_communicator.h"

namespace moe::comm {

// One measured all-to-all size. nccl-tests' alltoall: algbw = size / time with size the bytes
// one rank sends (its own part included), busbw = algbw * (n - 1) / n.
struct AllToAllPerf {
  int num_ranks = 0;
  int64_t bytes_per_rank = 0;  // bytes each rank sends, its own part included
  double seconds = 0;          // median time of one all-to-all, the slowest rank's
  double algbw_gbps = 0;       // bytes_per_rank / seconds / 1e9
  double busbw_gbps = 0;       // algbw_gbps * (num_ranks - 1) / num_ranks
  int64_t wrong = 0;           // received bytes differing from the expected pattern (#wrong)
};

// algbw and busbw of an all-to-all that moved bytes_per_rank per rank in `seconds`.
AllToAllPerf AllToAllBandwidth(int num_ranks, int64_t bytes_per_rank, double seconds);

// Collective. Times comm->AllToAllV sending bytes_per_peer to every rank (host buffers):
// `warmup` untimed runs, then `iters` timed ones, each after a Barrier; the median, the
// slowest rank's. Checks the received pattern. kInvalidArgument for bad sizes.
absl::StatusOr<AllToAllPerf> MeasureAllToAllV(Communicator* comm, int64_t bytes_per_peer,
                                              int warmup, int iters);

// The same for MPI's own MPI_Alltoallv over `comm` (blocking, no timeout). bytes_per_peer * the
// rank count must fit in an int.
absl::StatusOr<AllToAllPerf> MeasureMpiAlltoallv(MPI_Comm comm, int64_t bytes_per_peer, int warmup,
                                                 int iters);

// Our AllToAllV and MPI_Alltoallv measured in the same run, on the same buffers, their
// iterations alternating (each after an MPI_Barrier), so neither gains from going first: the
// bench's ceiling comparison (the goal: ours.busbw >= 0.8 * mpi.busbw).
struct AllToAllComparison {
  AllToAllPerf ours;
  AllToAllPerf mpi;
  double ratio() const { return mpi.busbw_gbps > 0 ? ours.busbw_gbps / mpi.busbw_gbps : 0; }
};
absl::StatusOr<AllToAllComparison> CompareAllToAll(MpiCommunicator* comm, int64_t bytes_per_peer,
                                                   int warmup, int iters);

}  // namespace moe::comm
