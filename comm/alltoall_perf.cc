#include "comm/alltoall_perf.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "moe/base/status_macros.h"

namespace moe::comm {
namespace {

using Clock = std::chrono::steady_clock;

uint8_t Pattern(int from, int to, int64_t i) {
  return static_cast<uint8_t>((from * 31 + to * 7 + i) & 0xff);
}

absl::Status MpiStatus(int rc, const char* call) {
  return rc == MPI_SUCCESS
             ? absl::OkStatus()
             : absl::UnavailableError(absl::StrCat(call, " failed: ", MpiErrorString(rc)));
}

// Send and receive buffers of one measurement, with the pattern in the send buffer.
struct Buffers {
  Buffers(int rank, int n, int64_t bytes_per_peer)
      : rank(rank),
        n(n),
        bytes(bytes_per_peer),
        send(static_cast<size_t>(n * bytes_per_peer)),
        recv(send.size()),
        counts(static_cast<size_t>(n), bytes_per_peer),
        offsets(static_cast<size_t>(n)) {
    for (int p = 0; p < n; ++p) {
      offsets[static_cast<size_t>(p)] = p * bytes_per_peer;
      for (int64_t i = 0; i < bytes_per_peer; ++i) {
        send[static_cast<size_t>(p * bytes_per_peer + i)] = Pattern(rank, p, i);
      }
    }
  }
  // Received bytes differing from the pattern; clears the receive buffer.
  int64_t TakeWrong() {
    int64_t wrong = 0;
    for (int p = 0; p < n; ++p) {
      for (int64_t i = 0; i < bytes; ++i) {
        wrong += recv[static_cast<size_t>(p * bytes + i)] != Pattern(p, rank, i);
      }
    }
    std::fill(recv.begin(), recv.end(), 0);
    return wrong;
  }
  absl::Status Ours(Communicator* comm) {
    return comm->AllToAllV(send.data(), counts, offsets, recv.data(), counts, offsets);
  }
  absl::Status Mpi(MPI_Comm comm) {
    std::vector<int> c(counts.begin(), counts.end());
    std::vector<int> o(offsets.begin(), offsets.end());
    return MpiStatus(MPI_Alltoallv(send.data(), c.data(), o.data(), MPI_BYTE, recv.data(), c.data(),
                                   o.data(), MPI_BYTE, comm),
                     "MPI_Alltoallv");
  }

  int rank;
  int n;
  int64_t bytes;
  std::vector<uint8_t> send;
  std::vector<uint8_t> recv;
  std::vector<int64_t> counts;
  std::vector<int64_t> offsets;
};

// One contender: what it runs and the times of its timed runs.
struct Contender {
  explicit Contender(std::function<absl::Status()> f) : run(std::move(f)) {}
  std::function<absl::Status()> run;
  std::vector<double> times;
  int64_t wrong = 0;
};

// warmup + iters rounds; in each, every contender runs once after `barrier`, in turn.
absl::Status Interleave(const std::vector<Contender*>& contenders, Buffers& buffers,
                        const std::function<absl::Status()>& barrier, int warmup, int iters) {
  for (int i = 0; i < warmup + iters; ++i) {
    for (Contender* c : contenders) {
      MOE_RETURN_IF_ERROR(barrier());
      const Clock::time_point start = Clock::now();
      MOE_RETURN_IF_ERROR(c->run());
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      if (i >= warmup) c->times.push_back(seconds);
      if (i + 1 == warmup + iters) c->wrong = buffers.TakeWrong();
    }
  }
  return absl::OkStatus();
}

double Median(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

absl::Status CheckSizes(int64_t bytes_per_peer, int n, int warmup, int iters, bool mpi) {
  if (bytes_per_peer < 0 || warmup < 0 || iters <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "all-to-all measurement: need bytes_per_peer >= 0, warmup >= 0 and iters > 0, got ",
        bytes_per_peer, ", ", warmup, ", ", iters));
  }
  if (mpi && bytes_per_peer * n > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("MPI_Alltoallv measurement: ", bytes_per_peer,
                                                   " bytes to each of ", n,
                                                   " ranks exceed MPI's int counts"));
  }
  return absl::OkStatus();
}

// The perf of `c`, with the slowest rank's median (`max_over_ranks` gathers it).
absl::StatusOr<AllToAllPerf> Summarize(
    const Contender& c, int n, int64_t bytes_per_peer,
    const std::function<absl::StatusOr<double>(double)>& max_over_ranks) {
  MOE_ASSIGN_OR_RETURN(double seconds, max_over_ranks(Median(c.times)));
  AllToAllPerf perf = AllToAllBandwidth(n, n * bytes_per_peer, seconds);
  perf.wrong = c.wrong;
  return perf;
}

std::function<absl::StatusOr<double>(double)> MpiMax(MPI_Comm comm) {
  return [comm](double x) -> absl::StatusOr<double> {
    double max = 0;
    MOE_RETURN_IF_ERROR(
        MpiStatus(MPI_Allreduce(&x, &max, 1, MPI_DOUBLE, MPI_MAX, comm), "MPI_Allreduce"));
    return max;
  };
}

}  // namespace

AllToAllPerf AllToAllBandwidth(int num_ranks, int64_t bytes_per_rank, double seconds) {
  AllToAllPerf perf;
  perf.num_ranks = num_ranks;
  perf.bytes_per_rank = bytes_per_rank;
  perf.seconds = seconds;
  if (seconds > 0) {
    perf.algbw_gbps = static_cast<double>(bytes_per_rank) / seconds / 1e9;
    perf.busbw_gbps = perf.algbw_gbps * (num_ranks - 1) / num_ranks;
  }
  return perf;
}

absl::StatusOr<AllToAllPerf> MeasureAllToAllV(Communicator* comm, int64_t bytes_per_peer,
                                              int warmup, int iters) {
  const int n = comm->size();
  MOE_RETURN_IF_ERROR(CheckSizes(bytes_per_peer, n, warmup, iters, false));
  Buffers buffers(comm->rank(), n, bytes_per_peer);
  Contender ours([&] { return buffers.Ours(comm); });
  MOE_RETURN_IF_ERROR(Interleave(
      {&ours}, buffers, [&] { return comm->Barrier(); }, warmup, iters));
  return Summarize(ours, n, bytes_per_peer, [&](double x) -> absl::StatusOr<double> {
    std::vector<double> all(static_cast<size_t>(n));
    MOE_RETURN_IF_ERROR(comm->AllGather(&x, sizeof(double), all.data()));
    return *std::max_element(all.begin(), all.end());
  });
}

absl::StatusOr<AllToAllPerf> MeasureMpiAlltoallv(MPI_Comm comm, int64_t bytes_per_peer, int warmup,
                                                 int iters) {
  int n = 0;
  int rank = 0;
  MPI_Comm_size(comm, &n);
  MPI_Comm_rank(comm, &rank);
  MOE_RETURN_IF_ERROR(CheckSizes(bytes_per_peer, n, warmup, iters, true));
  Buffers buffers(rank, n, bytes_per_peer);
  Contender mpi([&] { return buffers.Mpi(comm); });
  MOE_RETURN_IF_ERROR(Interleave(
      {&mpi}, buffers, [&] { return MpiStatus(MPI_Barrier(comm), "MPI_Barrier"); }, warmup, iters));
  return Summarize(mpi, n, bytes_per_peer, MpiMax(comm));
}

absl::StatusOr<AllToAllComparison> CompareAllToAll(MpiCommunicator* comm, int64_t bytes_per_peer,
                                                   int warmup, int iters) {
  const int n = comm->size();
  MOE_RETURN_IF_ERROR(CheckSizes(bytes_per_peer, n, warmup, iters, true));
  Buffers buffers(comm->rank(), n, bytes_per_peer);
  Contender ours([&] { return buffers.Ours(comm); });
  Contender mpi([&] { return buffers.Mpi(comm->comm()); });
  MOE_RETURN_IF_ERROR(Interleave(
      {&ours, &mpi}, buffers, [&] { return MpiStatus(MPI_Barrier(comm->comm()), "MPI_Barrier"); },
      warmup, iters));
  AllToAllComparison result;
  MOE_ASSIGN_OR_RETURN(result.ours, Summarize(ours, n, bytes_per_peer, MpiMax(comm->comm())));
  MOE_ASSIGN_OR_RETURN(result.mpi, Summarize(mpi, n, bytes_per_peer, MpiMax(comm->comm())));
  return result;
}

}  // namespace moe::comm
