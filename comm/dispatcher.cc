#include "comm/dispatcher.h"

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

}  // namespace

absl::StatusOr<Dispatcher> Dispatcher::Create(Communicator* comm, Placement placement,
                                              int64_t d_model, int32_t top_k,
                                              DispatcherOptions options) {
  if (comm == nullptr) return absl::InvalidArgumentError("Dispatcher: no communicator");
  if (comm->memory_space() != MemorySpace::kHost) {
    return absl::InvalidArgumentError(
        "Dispatcher: needs a host-memory communicator (MPI or local)");
  }
  MOE_RETURN_IF_ERROR(ValidatePlacement(placement, placement.num_experts, comm->size()));
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
  const int32_t k = top_k_;
  const int32_t num_experts = placement_.num_experts;
  const int64_t d = d_model_;
  *layout = DispatchLayout();
  layout->num_tokens = in.num_tokens;
  DispatchStats& stats = layout->stats;
  auto kept = [&](int64_t slot) { return in.row_of_slot == nullptr || in.row_of_slot[slot] >= 0; };

  // 1. This rank's counts: [failed, num_tokens, tokens to each rank, slots to each rank,
  // slots per expert].
  const size_t kTokens = 2;
  const size_t kSlots = kTokens + static_cast<size_t>(n);
  const size_t kExperts = kSlots + static_cast<size_t>(n);
  const size_t width = kExperts + static_cast<size_t>(num_experts);
  std::vector<int64_t> mine(width, 0);
  const absl::Status input_status = local_status.ok() ? CheckInput(in) : local_status;
  if (input_status.ok()) {
    mine[1] = in.num_tokens;
    std::vector<int64_t> last_token(static_cast<size_t>(n), -1);
    for (int64_t t = 0; t < in.num_tokens; ++t) {
      for (int32_t j = 0; j < k; ++j) {
        if (!kept(t * k + j)) continue;
        const int32_t e = in.topk_ids[t * k + j];
        const size_t p = static_cast<size_t>(placement_.rank_of_expert[static_cast<size_t>(e)]);
        mine[kSlots + p]++;
        mine[kExperts + static_cast<size_t>(e)]++;
        if (last_token[p] != t) {
          last_token[p] = t;
          mine[kTokens + p]++;
        }
      }
    }
  } else {
    mine[0] = 1;
  }
  Clock::time_point start = Clock::now();
  std::vector<int64_t> all(width * static_cast<size_t>(n));
  MOE_RETURN_IF_ERROR(
      comm_->AllGather(mine.data(), static_cast<int64_t>(width * sizeof(int64_t)), all.data()));
  stats.counts_seconds = SecondsSince(start);
  auto at = [&](int r, size_t i) { return all[static_cast<size_t>(r) * width + i]; };
  if (!input_status.ok()) return input_status;
  for (int r = 0; r < n; ++r) {
    if (at(r, 0) != 0) {
      return absl::AbortedError(
          absl::StrCat("rank ", me, ": aborted because rank ", r, " failed (Dispatch)"));
    }
  }

  // 2. Every rank checks every rank's counts, so all reach the same verdict.
  stats.source_tokens.assign(static_cast<size_t>(n), 0);
  stats.rank_tokens.assign(static_cast<size_t>(n), 0);
  stats.rank_load.assign(static_cast<size_t>(n), 0);
  stats.expert_load.assign(static_cast<size_t>(num_experts), 0);
  for (int r = 0; r < n; ++r) {
    stats.source_tokens[static_cast<size_t>(r)] = at(r, 1);
    for (int p = 0; p < n; ++p) {
      stats.rank_tokens[static_cast<size_t>(p)] += at(r, kTokens + static_cast<size_t>(p));
      stats.rank_load[static_cast<size_t>(p)] += at(r, kSlots + static_cast<size_t>(p));
      int64_t expert_slots = 0;
      for (int32_t e : placement_.local_experts[static_cast<size_t>(p)]) {
        expert_slots += at(r, kExperts + static_cast<size_t>(e));
      }
      if (expert_slots != at(r, kSlots + static_cast<size_t>(p))) {
        return absl::InternalError(
            absl::StrCat("Dispatch: rank ", r, " sends ", at(r, kSlots + static_cast<size_t>(p)),
                         " slots to rank ", p, " but its experts expect ", expert_slots));
      }
    }
    for (int32_t e = 0; e < num_experts; ++e) {
      stats.expert_load[static_cast<size_t>(e)] += at(r, kExperts + static_cast<size_t>(e));
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
  layout->send_tokens.assign(mine.begin() + kTokens, mine.begin() + kSlots);
  layout->send_slots.assign(mine.begin() + kSlots, mine.begin() + kExperts);
  for (int r = 0; r < n; ++r) {
    layout->recv_tokens.push_back(at(r, kTokens + static_cast<size_t>(me)));
    layout->recv_slots.push_back(at(r, kSlots + static_cast<size_t>(me)));
  }

  // 3. Pack one record per (token, destination rank): the header, then the row.
  const int64_t record = token_row_bytes();
  const std::vector<int64_t> send_offsets = Offsets(layout->send_tokens, record);
  const std::vector<int64_t> return_offsets = Offsets(layout->send_slots, 1);
  std::unique_ptr<char[]> send(new char[static_cast<size_t>(Sum(layout->send_tokens) * record)]);
  std::vector<int64_t> record_cursor = Offsets(layout->send_tokens, 1);
  std::vector<int64_t> return_cursor = return_offsets;
  std::vector<int64_t> last_token(static_cast<size_t>(n), -1);
  std::vector<int64_t> record_of(static_cast<size_t>(n), -1);
  layout->return_row_of_slot.assign(static_cast<size_t>(in.num_tokens * k), -1);
  for (int64_t t = 0; t < in.num_tokens; ++t) {
    for (int32_t j = 0; j < k; ++j) {
      const int64_t slot = t * k + j;
      if (!kept(slot)) continue;
      const int32_t e = in.topk_ids[slot];
      const size_t p = static_cast<size_t>(placement_.rank_of_expert[static_cast<size_t>(e)]);
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

  // 4. Move the records.
  const int64_t num_records = Sum(layout->recv_tokens);
  std::unique_ptr<char[]> recv(new char[static_cast<size_t>(num_records * record)]);
  const std::vector<int64_t> send_bytes = Scaled(layout->send_tokens, record);
  const std::vector<int64_t> recv_bytes = Scaled(layout->recv_tokens, record);
  start = Clock::now();
  MOE_RETURN_IF_ERROR(comm_->AllToAllV(send.get(), send_bytes, send_offsets, recv.get(), recv_bytes,
                                       Offsets(layout->recv_tokens, record)));
  stats.dispatch_seconds = SecondsSince(start);
  stats.dispatch_bytes = CountBytes(me, send_bytes, recv_bytes);

  // 5. Expand each record to one row per named local expert. Rows of (source r, expert e)
  // start after the rows of e from ranks before r.
  const std::vector<int32_t>& local = placement_.local_experts[static_cast<size_t>(me)];
  const size_t num_local = local.size();
  ExpertRows out;
  out.offsets.assign(num_local + 1, 0);
  for (size_t i = 0; i < num_local; ++i) {
    out.offsets[i + 1] = out.offsets[i] + stats.expert_load[static_cast<size_t>(local[i])];
  }
  out.rows = Tensor::Zeros(DType::kF32, {out.offsets[num_local], d});
  std::vector<int64_t> cursor(num_local);
  std::vector<int64_t> end(num_local);
  for (size_t i = 0; i < num_local; ++i) cursor[i] = out.offsets[i];
  layout->expert_row_of_recv_slot.reserve(static_cast<size_t>(Sum(layout->recv_slots)));
  const char* rec = recv.get();
  for (int r = 0; r < n; ++r) {
    for (size_t i = 0; i < num_local; ++i) {
      end[i] = cursor[i] + at(r, kExperts + static_cast<size_t>(local[i]));
    }
    for (int64_t q = 0; q < layout->recv_tokens[static_cast<size_t>(r)]; ++q, rec += record) {
      for (int32_t j = 0; j < k; ++j) {
        int32_t e = 0;
        std::memcpy(&e, rec + 4 * j, 4);
        if (e < 0) continue;
        if (e >= num_experts || placement_.rank_of_expert[static_cast<size_t>(e)] != me) {
          return absl::InternalError(absl::StrCat("Dispatch: rank ", me, " received a row for ",
                                                  "expert ", e, " from rank ", r,
                                                  ", which it does not hold"));
        }
        const size_t li = static_cast<size_t>(placement_.local_index[static_cast<size_t>(e)]);
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
                                                " fewer rows for expert ", local[i],
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
