#include "comm/mpi_communicator.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "moe/base/status_macros.h"

namespace moe::comm {
namespace {

using Clock = std::chrono::steady_clock;

// Larger transfers travel as several messages (MPI counts are int).
constexpr int64_t kMaxMessageBytes = int64_t{1} << 30;
// Polling spins for kSpinPeriod without progress, then yields the core (ranks may outnumber
// cores), and after kYieldPeriod sleeps between polls (a stalled peer costs no CPU).
constexpr auto kSpinPeriod = std::chrono::milliseconds(2);
constexpr auto kYieldPeriod = std::chrono::milliseconds(50);

std::string Seconds(double s) { return absl::StrFormat("%g s", s); }

std::string RankList(std::vector<int> ranks) {
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  return absl::StrCat(ranks.size() == 1 ? "rank " : "ranks ", absl::StrJoin(ranks, ", "));
}

}  // namespace

std::string MpiErrorString(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) {
    return absl::StrCat("MPI error ", code);
  }
  return std::string(text, static_cast<size_t>(length));
}

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Create(MPI_Comm comm,
                                                                         MpiOptions options) {
  if (!(options.timeout_seconds > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MpiCommunicator: timeout must be > 0 seconds, got ", options.timeout_seconds));
  }
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    return absl::UnavailableError("MpiCommunicator: MPI is not initialized (call MPI_Init first)");
  }
  MPI_Comm dup = MPI_COMM_NULL;
  int rc = MPI_Comm_dup(comm, &dup);
  if (rc != MPI_SUCCESS) {
    return absl::UnavailableError(absl::StrCat("MPI_Comm_dup failed: ", MpiErrorString(rc)));
  }
  rc = MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  if (rc != MPI_SUCCESS) {
    return absl::UnavailableError(
        absl::StrCat("MPI_Comm_set_errhandler failed: ", MpiErrorString(rc)));
  }
  int rank = 0;
  int size = 0;
  MPI_Comm_rank(dup, &rank);
  MPI_Comm_size(dup, &size);
  int* tag_ub = nullptr;
  int flag = 0;
  MPI_Comm_get_attr(dup, MPI_TAG_UB, &tag_ub, &flag);
  const int tag_bound = flag && tag_ub != nullptr && *tag_ub > 0 ? *tag_ub : 32767;
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(dup, rank, size, tag_bound, options));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  // After a failure requests may still reference the communicator: leave it to MPI_Finalize.
  if (!finalized && failure_.ok() && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

absl::Status MpiCommunicator::Fail(absl::Status status) {
  if (failure_.ok()) failure_ = status;
  return status;
}

absl::Status MpiCommunicator::Exchange(const char* op, const std::vector<Transfer>& recvs,
                                       const std::vector<Transfer>& sends) {
  if (!failure_.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "rank ", rank_, ": ", op, " on a communicator that failed earlier: ", failure_.message()));
  }
  const int tag = static_cast<int>(sequence_++ % tag_bound_);
  struct Pending {
    int peer;
    bool is_recv;
    int64_t bytes;
  };
  std::vector<MPI_Request> requests;
  std::vector<Pending> pending;
  // Frees whatever is still in flight; the communicator is unusable afterwards.
  auto abandon = [&](absl::Status status) {
    for (size_t i = 0; i < requests.size(); ++i) {
      if (requests[i] == MPI_REQUEST_NULL) continue;
      if (pending[i].is_recv) MPI_Cancel(&requests[i]);
      MPI_Request_free(&requests[i]);
    }
    return Fail(std::move(status));
  };
  auto post = [&](const Transfer& t, bool is_recv) -> absl::Status {
    char* base = static_cast<char*>(t.buffer);
    int64_t done = 0;
    do {  // a zero-byte transfer is still one message: it proves the peer is there
      const int chunk = static_cast<int>(std::min(t.bytes - done, kMaxMessageBytes));
      MPI_Request request = MPI_REQUEST_NULL;
      const int rc = is_recv
                         ? MPI_Irecv(base + done, chunk, MPI_BYTE, t.peer, tag, comm_, &request)
                         : MPI_Isend(base + done, chunk, MPI_BYTE, t.peer, tag, comm_, &request);
      if (rc != MPI_SUCCESS) {
        return absl::UnavailableError(
            absl::StrCat("rank ", rank_, ": ", is_recv ? "MPI_Irecv from" : "MPI_Isend to",
                         " rank ", t.peer, " failed (", op, "): ", MpiErrorString(rc)));
      }
      requests.push_back(request);
      pending.push_back({t.peer, is_recv, chunk});
      done += chunk;
    } while (done < t.bytes);
    return absl::OkStatus();
  };
  for (const Transfer& t : recvs) {
    absl::Status s = post(t, true);
    if (!s.ok()) return abandon(s);
  }
  for (const Transfer& t : sends) {
    absl::Status s = post(t, false);
    if (!s.ok()) return abandon(s);
  }

  const int n = static_cast<int>(requests.size());
  std::vector<int> indices(static_cast<size_t>(n));
  std::vector<MPI_Status> statuses(static_cast<size_t>(n));
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(options_.timeout_seconds));
  Clock::time_point last_progress = start;
  int remaining = n;
  while (remaining > 0) {
    int completed = 0;
    const int rc = MPI_Testsome(n, requests.data(), &completed, indices.data(), statuses.data());
    if (rc != MPI_SUCCESS && rc != MPI_ERR_IN_STATUS) {
      return abandon(absl::UnavailableError(
          absl::StrCat("rank ", rank_, ": MPI_Testsome failed (", op, "): ", MpiErrorString(rc))));
    }
    if (completed == MPI_UNDEFINED) break;
    for (int i = 0; i < completed; ++i) {
      const Pending& p = pending[static_cast<size_t>(indices[static_cast<size_t>(i)])];
      const MPI_Status& st = statuses[static_cast<size_t>(i)];
      const int error = rc == MPI_ERR_IN_STATUS ? st.MPI_ERROR : MPI_SUCCESS;
      int error_class = MPI_SUCCESS;
      if (error != MPI_SUCCESS) MPI_Error_class(error, &error_class);
      if (error_class == MPI_ERR_TRUNCATE) {
        return abandon(absl::InvalidArgumentError(absl::StrCat(op, ": rank ", rank_, " expected ",
                                                               p.bytes, " bytes from rank ", p.peer,
                                                               " but it sent more")));
      }
      if (error != MPI_SUCCESS) {
        return abandon(absl::UnavailableError(
            absl::StrCat("rank ", rank_, ": ", p.is_recv ? "receive from" : "send to", " rank ",
                         p.peer, " failed (", op, "): ", MpiErrorString(error))));
      }
      if (p.is_recv) {
        int count = 0;
        MPI_Get_count(&st, MPI_BYTE, &count);
        if (count != p.bytes) {
          return abandon(absl::InvalidArgumentError(absl::StrCat(op, ": rank ", rank_, " expected ",
                                                                 p.bytes, " bytes from rank ",
                                                                 p.peer, " but received ", count)));
        }
      }
    }
    remaining -= completed;
    if (remaining == 0) break;
    const Clock::time_point now = Clock::now();
    if (completed > 0) {
      last_progress = now;
    } else if (now >= deadline) {
      std::vector<int> silent;
      std::vector<int> not_taking;
      for (int i = 0; i < n; ++i) {
        if (requests[static_cast<size_t>(i)] == MPI_REQUEST_NULL) continue;
        (pending[static_cast<size_t>(i)].is_recv ? silent : not_taking)
            .push_back(pending[static_cast<size_t>(i)].peer);
      }
      const std::string why = !silent.empty()
                                  ? absl::StrCat("no data from ", RankList(silent))
                                  : absl::StrCat(RankList(not_taking), " did not take its data");
      return abandon(absl::DeadlineExceededError(absl::StrCat("rank ", rank_, ": ", why, " within ",
                                                              Seconds(options_.timeout_seconds),
                                                              " (", op, ")")));
    } else if (now - last_progress < kSpinPeriod) {
      // spin: MPI_Testsome drives the progress engine
    } else if (now - last_progress < kYieldPeriod) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  return absl::OkStatus();
}

absl::Status MpiCommunicator::AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                                        const std::vector<int64_t>& send_offsets, void* recv,
                                        const std::vector<int64_t>& recv_counts,
                                        const std::vector<int64_t>& recv_offsets) {
  MOE_RETURN_IF_ERROR(
      ValidateAllToAllV(size_, rank_, send_counts, send_offsets, recv_counts, recv_offsets));
  std::vector<Transfer> recvs;
  std::vector<Transfer> sends;
  char* recv_bytes = static_cast<char*>(recv);
  char* send_bytes = const_cast<char*>(static_cast<const char*>(send));
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    recvs.push_back({p, recv_bytes + recv_offsets[p], recv_counts[p]});
    sends.push_back({p, send_bytes + send_offsets[p], send_counts[p]});
  }
  if (send_counts[rank_] > 0) {
    std::memmove(recv_bytes + recv_offsets[rank_], send_bytes + send_offsets[rank_],
                 static_cast<size_t>(send_counts[rank_]));
  }
  return Exchange("AllToAllV", recvs, sends);
}

absl::Status MpiCommunicator::AllGather(const void* send, int64_t bytes, void* recv) {
  if (bytes < 0) return absl::InvalidArgumentError("AllGather: negative byte count");
  char* recv_bytes = static_cast<char*>(recv);
  char* send_bytes = const_cast<char*>(static_cast<const char*>(send));
  std::vector<Transfer> recvs;
  std::vector<Transfer> sends;
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    recvs.push_back({p, recv_bytes + p * bytes, bytes});
    sends.push_back({p, send_bytes, bytes});
  }
  if (bytes > 0) std::memmove(recv_bytes + rank_ * bytes, send_bytes, static_cast<size_t>(bytes));
  return Exchange("AllGather", recvs, sends);
}

absl::Status MpiCommunicator::AllReduceSum(int64_t* values, int64_t n) {
  if (n < 0) return absl::InvalidArgumentError("AllReduceSum: negative count");
  std::vector<int64_t> all(static_cast<size_t>(n * size_));
  std::vector<int64_t> mine(values, values + n);
  MOE_RETURN_IF_ERROR(
      AllGather(mine.data(), n * static_cast<int64_t>(sizeof(int64_t)), all.data()));
  for (int64_t i = 0; i < n; ++i) {
    int64_t sum = 0;
    for (int p = 0; p < size_; ++p) sum += all[static_cast<size_t>(p * n + i)];
    values[i] = sum;
  }
  return absl::OkStatus();
}

absl::Status MpiCommunicator::Barrier() {
  char token = 0;
  std::vector<char> all(static_cast<size_t>(size_));
  return AllGather(&token, 1, all.data());
}

absl::StatusOr<std::unique_ptr<MpiSession>> MpiSession::Init(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return absl::UnavailableError("MpiSession: MPI is already initialized");
  int provided = 0;
  const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) {
    return absl::UnavailableError(absl::StrCat("MPI_Init_thread failed: ", MpiErrorString(rc)));
  }
  int rank = 0;
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return std::unique_ptr<MpiSession>(new MpiSession(rank, size));
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

bool LaunchedUnderMpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

}  // namespace moe::comm
