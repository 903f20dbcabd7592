#include "comm/dispatcher.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "moe/base/status_macros.h"

namespace moe::comm {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Exclusive prefix sums scaled by `unit`: offsets[p] = unit * sum(counts[0, p)).
std::vector<int64_t> Offsets(const std::vector<int64_t>& counts, int64_t unit) {
  std::vector<int64_t> offsets(counts.size());
  int64_t sum = 0;
  for (size_t p = 0; p < counts.size(); ++p) {
    offsets[p] = sum;
    sum += counts[p] * unit;
  }
  return offsets;
}

std::vector<int64_t> Scaled(const std::vector<int64_t>& counts, int64_t unit) {
  std::vector<int64_t> out(counts.size());
  for (size_t p = 0; p < counts.size(); ++p) out[p] = counts[p] * unit;
  return out;
}

int64_t Sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

AllToAllBytes CountBytes(int rank, const std::vector<int64_t>& send_bytes,
                         const std::vector<int64_t>& recv_bytes) {
  AllToAllBytes bytes;
  for (size_t p = 0; p < send_bytes.size(); ++p) {
    if (static_cast<int>(p) == rank) {
      bytes.self += send_bytes[p];
    } else {
      bytes.sent += send_bytes[p];
      bytes.received += recv_bytes[p];
    }
  }
  return bytes;
}

// Rows of the range [begin, begin + count) that fall in [lo, hi).
int64_t Overlap(int64_t begin, int64_t count, int64_t lo, int64_t hi) {
  return std::max<int64_t>(0, std::min(begin + count, hi) - std::max(begin, lo));
}

}  // namespace

Dispatcher::Dispatcher(Communicator* comm, ReplicatedPlacement placement, int64_t d_model,
                       int32_t top_k, DispatcherOptions options)
    : comm_(comm),
      placement_(std::move(placement)),
      d_model_(d_model),
      top_k_(top_k),
      options_(options) {
  const int me = comm_->rank();
  local_index_.assign(static_cast<size_t>(placement_.num_experts), -1);
  for (size_t e = 0; e < placement_.replicas.size(); ++e) {
    const std::vector<ExpertReplica>& list = placement_.replicas[e];
    units_.push_back(CumulativeShareUnits(list));
    replicated_ |= list.size() > 1;
  }
  const std::vector<RankExpert>& local = placement_.rank_experts[static_cast<size_t>(me)];
  for (size_t i = 0; i < local.size(); ++i) {
    const size_t e = static_cast<size_t>(local[i].expert);
    local_index_[e] = static_cast<int32_t>(i);
    int32_t replica = 0;
    while (placement_.replicas[e][static_cast<size_t>(replica)].rank != me) ++replica;
    local_replica_.push_back(replica);
  }
}

absl::StatusOr<Dispatcher> Dispatcher::Create(Communicator* comm, const Placement& placement,
                                              int64_t d_model, int32_t top_k,
                                              DispatcherOptions options) {
  if (comm != nullptr) {
    MOE_RETURN_IF_ERROR(ValidatePlacement(placement, placement.num_experts, comm->size()));
  }
  return Create(comm, ReplicatedFromPlacement(placement), d_model, top_k, options);
}

absl::StatusOr<Dispatcher> Dispatcher::Create(Communicator* comm, ReplicatedPlacement placement,
                                              int64_t d_model, int32_t top_k,
                                              DispatcherOptions options) {
  if (comm == nullptr) return absl::InvalidArgumentError("Dispatcher: no communicator");
  if (comm->memory_space() != MemorySpace::kHost) {
    return absl::InvalidArgumentError(
        "Dispatcher: needs a host-memory communicator (MPI or local)");
  }
  MOE_RETURN_IF_ERROR(ValidateReplicaStructure(placement, placement.num_experts, comm->size()));
  if (d_model <= 0 || top_k <= 0 || top_k > placement.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("Dispatcher: bad sizes d_model=", d_model,
                                                   " top_k=", top_k,
                                                   " num_experts=", placement.num_experts));
  }
  if (options.max_tokens_per_rank < 0) {
    return absl::InvalidArgumentError("Dispatcher: max_tokens_per_rank must be >= 0");
  }
  return Dispatcher(comm, std::move(placement), d_model, top_k, options);
}

absl::Status Dispatcher::CheckInput(const DispatchInput& in) const {
  if (in.num_tokens < 0) return absl::InvalidArgumentError("Dispatch: negative num_tokens");
  if (in.num_tokens > 0 && (in.hidden == nullptr || in.topk_ids == nullptr)) {
    return absl::InvalidArgumentError("Dispatch: hidden and topk_ids are required");
  }
  for (int64_t t = 0; t < in.num_tokens; ++t) {
    for (int32_t j = 0; j < top_k_; ++j) {
      const int32_t e = in.topk_ids[t * top_k_ + j];
      if (e < 0 || e >= placement_.num_experts) {
        return absl::InvalidArgumentError(absl::StrCat("Dispatch: topk_ids of token ", t,
                                                       " holds expert ", e, ", outside [0, ",
                                                       placement_.num_experts, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ExpertRows> Dispatcher::Dispatch(const DispatchInput& in, DispatchLayout* layout,
                                                absl::Status local_status) {
  const int n = comm_->size();
  const int me = comm_->rank();
  const size_t nr = static_cast<size_t>(n);
  const int32_t k = top_k_;
  const int32_t num_experts = placement_.num_experts;
  const size_t ne = static_cast<size_t>(num_experts);
  const int64_t d = d_model_;
  *layout = DispatchLayout();
  layout->num_tokens = in.num_tokens;
  DispatchStats& stats = layout->stats;
  auto kept = [&](int64_t slot) { return in.row_of_slot == nullptr || in.row_of_slot[slot] >= 0; };

  // 1. This rank's counts: [failed, num_tokens, slots per expert, tokens to each rank]. The
  // tokens per rank are known before the exchange only without replicas (then a slot's rank
  // is its expert's); with replicas a second all-gather carries them.
  const size_t kExperts = 2;
  const size_t kTokens = kExperts + ne;
  const size_t width = kTokens + nr;
  std::vector<int64_t> mine(width, 0);
  const absl::Status input_status = local_status.ok() ? CheckInput(in) : local_status;
  if (input_status.ok()) {
    mine[1] = in.num_tokens;
    std::vector<int64_t> last_token(nr, -1);
    for (int64_t t = 0; t < in.num_tokens; ++t) {
      for (int32_t j = 0; j < k; ++j) {
        if (!kept(t * k + j)) continue;
        const size_t e = static_cast<size_t>(in.topk_ids[t * k + j]);
        mine[kExperts + e]++;
        const size_t p = static_cast<size_t>(placement_.replicas[e][0].rank);
        if (!replicated_ && last_token[p] != t) {
          last_token[p] = t;
          mine[kTokens + p]++;
        }
      }
    }
  } else {
    mine[0] = 1;
  }
  Clock::time_point start = Clock::now();
  std::vector<int64_t> all(width * nr);
  MOE_RETURN_IF_ERROR(
      comm_->AllGather(mine.data(), static_cast<int64_t>(width * sizeof(int64_t)), all.data()));
  stats.counts_seconds = SecondsSince(start);
  auto count = [&](int r, size_t e) { return all[static_cast<size_t>(r) * width + kExperts + e]; };
  if (!input_status.ok()) return input_status;
  for (int r = 0; r < n; ++r) {
    if (all[static_cast<size_t>(r) * width] != 0) {
      return absl::AbortedError(
          absl::StrCat("rank ", me, ": aborted because rank ", r, " failed (Dispatch)"));
    }
  }

  // 2. Row ranges: begin[r][e] = the first global row of expert e from rank r; bounds[e] the
  // replicas' boundaries. Every rank computes them all from the same counts.
  std::vector<std::vector<int64_t>> begin(nr, std::vector<int64_t>(ne, 0));
  std::vector<std::vector<int64_t>> bounds(ne);
  stats.expert_load.assign(ne, 0);
  stats.replica_rows.assign(ne, {});
  for (size_t e = 0; e < ne; ++e) {
    int64_t total = 0;
    for (int r = 0; r < n; ++r) {
      begin[static_cast<size_t>(r)][e] = total;
      total += count(r, e);
    }
    stats.expert_load[e] = total;
    bounds[e] = ReplicaRowRanges(total, units_[e]);
    for (size_t i = 0; i + 1 < bounds[e].size(); ++i) {
      stats.replica_rows[e].push_back(bounds[e][i + 1] - bounds[e][i]);
    }
  }
  // slots[r][p]: slots rank r sends rank p.
  std::vector<std::vector<int64_t>> slots(nr, std::vector<int64_t>(nr, 0));
  for (int r = 0; r < n; ++r) {
    for (size_t e = 0; e < ne; ++e) {
      const std::vector<ExpertReplica>& list = placement_.replicas[e];
      for (size_t i = 0; i < list.size(); ++i) {
        slots[static_cast<size_t>(r)][static_cast<size_t>(list[i].rank)] +=
            Overlap(begin[static_cast<size_t>(r)][e], count(r, e), bounds[e][i], bounds[e][i + 1]);
      }
    }
  }

  // 3. Each kept slot's destination: its row within its expert picks the replica.
  std::vector<int32_t> dest_of_slot(static_cast<size_t>(in.num_tokens * k), -1);
  layout->send_tokens.assign(nr, 0);
  layout->send_slots.assign(nr, 0);
  {
    std::vector<int64_t> row(begin[static_cast<size_t>(me)]);
    std::vector<size_t> replica(ne, 0);
    std::vector<int64_t> last_token(nr, -1);
    for (int64_t t = 0; t < in.num_tokens; ++t) {
      for (int32_t j = 0; j < k; ++j) {
        const int64_t slot = t * k + j;
        if (!kept(slot)) continue;
        const size_t e = static_cast<size_t>(in.topk_ids[slot]);
        while (row[e] >= bounds[e][replica[e] + 1]) ++replica[e];
        row[e]++;
        const int32_t p = placement_.replicas[e][replica[e]].rank;
        dest_of_slot[static_cast<size_t>(slot)] = p;
        layout->send_slots[static_cast<size_t>(p)]++;
        if (last_token[static_cast<size_t>(p)] != t) {
          last_token[static_cast<size_t>(p)] = t;
          layout->send_tokens[static_cast<size_t>(p)]++;
        }
      }
    }
  }
  if (layout->send_slots != slots[static_cast<size_t>(me)]) {
    return absl::InternalError(
        absl::StrCat("Dispatch: rank ", me, " routes its slots unlike its counts say"));
  }
  // tokens[r * n + p]: token rows rank r sends rank p.
  std::vector<int64_t> tokens(nr * nr, 0);
  if (replicated_) {
    start = Clock::now();
    MOE_RETURN_IF_ERROR(comm_->AllGather(
        layout->send_tokens.data(), static_cast<int64_t>(nr * sizeof(int64_t)), tokens.data()));
    stats.counts_seconds += SecondsSince(start);
  } else {
    for (int r = 0; r < n; ++r) {
      for (size_t p = 0; p < nr; ++p) {
        tokens[static_cast<size_t>(r) * nr + p] = all[static_cast<size_t>(r) * width + kTokens + p];
      }
    }
    for (size_t p = 0; p < nr; ++p) {
      if (tokens[static_cast<size_t>(me) * nr + p] != layout->send_tokens[p]) {
        return absl::InternalError(absl::StrCat(
            "Dispatch: rank ", me, " counted ", tokens[static_cast<size_t>(me) * nr + p],
            " token rows to rank ", p, " but packs ", layout->send_tokens[p]));
      }
    }
  }
  stats.source_tokens.assign(nr, 0);
  stats.rank_tokens.assign(nr, 0);
  stats.rank_load.assign(nr, 0);
  for (int r = 0; r < n; ++r) {
    stats.source_tokens[static_cast<size_t>(r)] = all[static_cast<size_t>(r) * width + 1];
    for (size_t p = 0; p < nr; ++p) {
      stats.rank_tokens[p] += tokens[static_cast<size_t>(r) * nr + p];
      stats.rank_load[p] += slots[static_cast<size_t>(r)][p];
    }
  }
  const int64_t limit = options_.max_tokens_per_rank;
  for (int p = 0; p < n; ++p) {
    if (limit > 0 && stats.rank_tokens[static_cast<size_t>(p)] > limit) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "Dispatch: rank ", p, " would receive ", stats.rank_tokens[static_cast<size_t>(p)],
          " token rows, more than max_tokens_per_rank = ", limit));
    }
  }
  for (int r = 0; r < n; ++r) {
    layout->recv_tokens.push_back(tokens[static_cast<size_t>(r) * nr + static_cast<size_t>(me)]);
    layout->recv_slots.push_back(slots[static_cast<size_t>(r)][static_cast<size_t>(me)]);
  }

  // 4. Pack one record per (token, destination rank): the header, then the row.
  const int64_t record = token_row_bytes();
  const std::vector<int64_t> send_offsets = Offsets(layout->send_tokens, record);
  const std::vector<int64_t> return_offsets = Offsets(layout->send_slots, 1);
  std::unique_ptr<char[]> send(new char[static_cast<size_t>(Sum(layout->send_tokens) * record)]);
  std::vector<int64_t> record_cursor = Offsets(layout->send_tokens, 1);
  std::vector<int64_t> return_cursor = return_offsets;
  std::vector<int64_t> last_token(nr, -1);
  std::vector<int64_t> record_of(nr, -1);
  layout->return_row_of_slot.assign(static_cast<size_t>(in.num_tokens * k), -1);
  for (int64_t t = 0; t < in.num_tokens; ++t) {
    for (int32_t j = 0; j < k; ++j) {
      const int64_t slot = t * k + j;
      if (!kept(slot)) continue;
      const int32_t e = in.topk_ids[slot];
      const size_t p = static_cast<size_t>(dest_of_slot[static_cast<size_t>(slot)]);
      if (last_token[p] != t) {
        last_token[p] = t;
        record_of[p] = record_cursor[p]++;
        char* r = send.get() + record_of[p] * record;
        const int32_t none = -1;
        for (int32_t i = 0; i < k; ++i) std::memcpy(r + 4 * i, &none, 4);
        std::memcpy(r + 4 * k, in.hidden + t * d, static_cast<size_t>(d) * sizeof(float));
      }
      std::memcpy(send.get() + record_of[p] * record + 4 * j, &e, 4);
      layout->return_row_of_slot[static_cast<size_t>(slot)] = return_cursor[p]++;
    }
  }

  // 5. Move the records.
  const int64_t num_records = Sum(layout->recv_tokens);
  std::unique_ptr<char[]> recv(new char[static_cast<size_t>(num_records * record)]);
  const std::vector<int64_t> send_bytes = Scaled(layout->send_tokens, record);
  const std::vector<int64_t> recv_bytes = Scaled(layout->recv_tokens, record);
  start = Clock::now();
  MOE_RETURN_IF_ERROR(comm_->AllToAllV(send.get(), send_bytes, send_offsets, recv.get(), recv_bytes,
                                       Offsets(layout->recv_tokens, record)));
  stats.dispatch_seconds = SecondsSince(start);
  stats.dispatch_bytes = CountBytes(me, send_bytes, recv_bytes);

  // 6. Expand each record to one row per named local expert. Rows of (source r, expert e)
  // start after the rows of e this replica got from ranks before r.
  const std::vector<RankExpert>& local = placement_.rank_experts[static_cast<size_t>(me)];
  const size_t num_local = local.size();
  ExpertRows out;
  out.offsets.assign(num_local + 1, 0);
  for (size_t i = 0; i < num_local; ++i) {
    const size_t e = static_cast<size_t>(local[i].expert);
    out.offsets[i + 1] =
        out.offsets[i] + stats.replica_rows[e][static_cast<size_t>(local_replica_[i])];
  }
  out.rows = Tensor::Zeros(DType::kF32, {out.offsets[num_local], d});
  std::vector<int64_t> cursor(num_local);
  std::vector<int64_t> end(num_local);
  for (size_t i = 0; i < num_local; ++i) cursor[i] = out.offsets[i];
  layout->expert_row_of_recv_slot.reserve(static_cast<size_t>(Sum(layout->recv_slots)));
  const char* rec = recv.get();
  for (int r = 0; r < n; ++r) {
    for (size_t i = 0; i < num_local; ++i) {
      const size_t e = static_cast<size_t>(local[i].expert);
      const size_t q = static_cast<size_t>(local_replica_[i]);
      end[i] = cursor[i] + Overlap(begin[static_cast<size_t>(r)][e], count(r, e), bounds[e][q],
                                   bounds[e][q + 1]);
    }
    for (int64_t q = 0; q < layout->recv_tokens[static_cast<size_t>(r)]; ++q, rec += record) {
      for (int32_t j = 0; j < k; ++j) {
        int32_t e = 0;
        std::memcpy(&e, rec + 4 * j, 4);
        if (e < 0) continue;
        if (e >= num_experts || local_index_[static_cast<size_t>(e)] < 0) {
          return absl::InternalError(absl::StrCat("Dispatch: rank ", me, " received a row for ",
                                                  "expert ", e, " from rank ", r,
                                                  ", which it does not hold"));
        }
        const size_t li = static_cast<size_t>(local_index_[static_cast<size_t>(e)]);
        if (cursor[li] >= end[li]) {
          return absl::InternalError(absl::StrCat("Dispatch: rank ", r, " sent rank ", me,
                                                  " more rows for expert ", e, " than it counted"));
        }
        std::memcpy(out.rows.data<float>() + cursor[li] * d, rec + 4 * k,
                    static_cast<size_t>(d) * sizeof(float));
        layout->expert_row_of_recv_slot.push_back(cursor[li]++);
      }
    }
    for (size_t i = 0; i < num_local; ++i) {
      if (cursor[i] != end[i]) {
        return absl::InternalError(absl::StrCat("Dispatch: rank ", r, " sent rank ", me,
                                                " fewer rows for expert ", local[i].expert,
                                                " than it counted"));
      }
    }
  }
  return out;
}
absl::StatusOr<Tensor> Dispatcher::Combine(const float* expert_out, DispatchLayout* layout) {
  const int me = comm_->rank();
  const int64_t d = d_model_;
  const int64_t row = d * static_cast<int64_t>(sizeof(float));
  const int64_t num_back = Sum(layout->recv_slots);
  if (static_cast<int64_t>(layout->expert_row_of_recv_slot.size()) != num_back ||
      layout->send_slots.size() != static_cast<size_t>(comm_->size())) {
    return absl::InvalidArgumentError("Combine: the layout does not come from Dispatch");
  }
  // Results leave in receive order, so each source finds them in its own send order.
  Tensor send = Tensor::Zeros(DType::kF32, {num_back, d});
  for (int64_t q = 0; q < num_back; ++q) {
    std::memcpy(send.data<float>() + q * d,
                expert_out + layout->expert_row_of_recv_slot[static_cast<size_t>(q)] * d,
                static_cast<size_t>(row));
  }
  Tensor back = Tensor::Zeros(DType::kF32, {Sum(layout->send_slots), d});
  const std::vector<int64_t> send_bytes = Scaled(layout->recv_slots, row);
  const std::vector<int64_t> recv_bytes = Scaled(layout->send_slots, row);
  const Clock::time_point start = Clock::now();
  MOE_RETURN_IF_ERROR(comm_->AllToAllV(send.raw(), send_bytes, Offsets(layout->recv_slots, row),
                                       back.raw(), recv_bytes, Offsets(layout->send_slots, row)));
  layout->stats.combine_seconds = SecondsSince(start);
  layout->stats.combine_bytes = CountBytes(me, send_bytes, recv_bytes);
  return back;
}

}  // namespace moe::comm
