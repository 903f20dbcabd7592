#include "tools/bench_ep.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "comm/alltoall_perf.h"
#include "gating/routing_skew.h"
#include "moe/base/status_macros.h"
#include "moe/base/trace.h"
#include "moe/ep_weights.h"
#include "moe/expert_parallel_layer.h"
#include "moe/rebalance_policy.h"
#include "nlohmann/json.hpp"
#include "tools/bench_check.h"
#include "tools/bench_clock.h"
#include "tools/bench_runner.h"
#include "tools/cli.h"
#include "tools/ep_session.h"

namespace moe::tools {
namespace {

double MaxOverMean(const std::vector<int64_t>& v) {
  int64_t max = 0, sum = 0;
  for (int64_t x : v) max = std::max(max, x), sum += x;
  return sum > 0 ? static_cast<double>(max) * static_cast<double>(v.size()) / sum : 0;
}

// Rows [begin, end) of a [T, d] F32 tensor.
Tensor Rows(const Tensor& all, int64_t begin, int64_t end) {
  Tensor part = Tensor::Zeros(DType::kF32, {end - begin, all.dim(1)});
  if (end > begin) {
    std::memcpy(part.raw(), all.data<float>() + begin * all.dim(1),
                static_cast<size_t>(part.num_bytes()));
  }
  return part;
}

// #wrong of this rank's block: up to max_tokens of its tokens recomputed in float64 with
// only the experts they use (generated here from the seed), ids renumbered into that set.
absl::StatusOr<CheckResult> CheckBlock(const config::LayerConfig& c, uint64_t seed,
                                       const Tensor& hidden, const LayerOutput& out,
                                       int64_t max_tokens) {
  const int64_t n = hidden.dim(0), k = c.top_k(), d = c.d_model();
  CheckResult none;
  if (n == 0 || max_tokens == 0) return none;
  const int64_t m = std::min(n, max_tokens);
  std::vector<int64_t> picked;
  for (int64_t i = 0; i < m; ++i) picked.push_back(i * n / m);
  std::set<int32_t> used_set;
  const int32_t* ids = out.topk_ids.data<int32_t>();
  for (int64_t t : picked) {
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = ids[t * k + j];
      if (e >= 0 && e < c.num_experts()) used_set.insert(e);
    }
  }
  const std::vector<int32_t> used(used_set.begin(), used_set.end());
  MoeLayerWeights w = RandomLayerWeightsOfExperts(c, seed, used);
  config::LayerConfig c2 = c;
  c2.set_num_experts(static_cast<int32_t>(std::max<size_t>(used.size(), size_t(k))));
  c2.clear_capacity();
  LayerOutput sub;
  sub.output = Tensor::Zeros(DType::kF32, {m, d});
  sub.topk_ids = Tensor::Zeros(DType::kI32, {m, k});
  sub.topk_weights = Tensor::Zeros(DType::kF32, {m, k});
  Tensor sub_hidden = Tensor::Zeros(DType::kF32, {m, d});
  for (int64_t i = 0; i < m; ++i) {
    const int64_t t = picked[static_cast<size_t>(i)];
    std::memcpy(sub.output.data<float>() + i * d, out.output.data<float>() + t * d, 4 * d);
    std::memcpy(sub_hidden.data<float>() + i * d, hidden.data<float>() + t * d, 4 * d);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = ids[t * k + j];
      const auto it = std::lower_bound(used.begin(), used.end(), e);
      sub.topk_ids.data<int32_t>()[i * k + j] =
          it != used.end() && *it == e ? static_cast<int32_t>(it - used.begin()) : -1;
      sub.topk_weights.data<float>()[i * k + j] = out.topk_weights.data<float>()[t * k + j];
    }
  }
  return CheckLayerOutput(c2, w, sub_hidden, sub, m);
}

struct EpRow {
  int64_t tokens = 0;
  double seconds = 0;  // median over timed forwards of the slowest rank's forward
  int64_t wrong = 0;
  std::vector<int64_t> rank_load;  // [ranks] expert rows per rank, summed over steps (before)
  std::vector<int64_t> rank_load_after;
  std::vector<int64_t> sent, received;  // [ranks] bytes per forward
  double a2a_seconds = 0;               // median, slowest rank
  comm::AllToAllPerf ours;
  comm::AllToAllComparison ceiling;
  // --rebalance
  bool moved = false;
  double seconds_after = 0;
  int64_t moved_bytes = 0;
  double move_seconds = 0;
  std::vector<std::vector<int64_t>> expert_load;  // [steps][experts]
};

struct Worker {
  const EpBenchOptions& o;
  comm::MpiCommunicator* comm;
  std::optional<gating::SkewedSelection> skew;

  absl::StatusOr<EpRow> Row(int64_t num_tokens) {
    const config::LayerConfig& c = o.config;
    const int n = comm->size(), me = comm->rank();
    MOE_ASSIGN_OR_RETURN(comm::ReplicatedPlacement placement,
                         EpPlacement(o.placement_file, c.num_experts(), n));
    MOE_ASSIGN_OR_RETURN(
        ExpertParallelLayer layer,
        ExpertParallelLayer::Create(c, RandomHeldLayerWeights(c, o.row.seed, placement, me),
                                    placement, comm));
    std::optional<RebalancePolicy> policy;
    const int steps = o.row.steps;
    if (o.rebalance) {
      RebalancePolicyOptions po;
      po.window_steps = std::max(1, std::min(8, steps / 2));
      po.threshold = 1.05;
      po.min_improvement = 0.02;
      po.planner.num_ranks = n;
      po.planner.num_redundant = n;
      MOE_ASSIGN_OR_RETURN(RebalancePolicy p,
                           RebalancePolicy::Create(c.num_experts(), placement, po));
      policy.emplace(std::move(p));
    }
    const int64_t begin = TokenBlockBegin(num_tokens, n, me);
    const int64_t end = TokenBlockBegin(num_tokens, n, me + 1);
    EpRow row;
    row.tokens = num_tokens;
    row.rank_load.assign(static_cast<size_t>(n), 0);
    row.rank_load_after.assign(static_cast<size_t>(n), 0);
    std::vector<double> before_times, after_times, a2a;
    EpStats last;
    for (int step = 0; step < steps; ++step) {
      Tensor all = RandomHidden(num_tokens, c.d_model(), o.row.seed, step, o.row.normal_inputs,
                                o.row.input_skew);
      if (skew) {
        MOE_RETURN_IF_ERROR(ApplySkew(*skew, c, layer.weights().router,
                                      static_cast<uint64_t>(step * num_tokens), &all));
      }
      const Tensor hidden = Rows(all, begin, end);
      if (step == 0) {
        for (int i = 0; i < o.row.warmup; ++i) MOE_RETURN_IF_ERROR(layer.Forward(hidden).status());
      }
      LayerOutput out;
      EpStats stats;
      for (int i = 0; i < o.row.repeats; ++i) {
        MOE_RETURN_IF_ERROR(comm->Barrier());
        const Clock::time_point start = Clock::now();
        MOE_ASSIGN_OR_RETURN(out, layer.Forward(hidden, &stats));
        MOE_ASSIGN_OR_RETURN(std::vector<double> t, GatherDoubles(comm, Seconds(start)));
        MOE_ASSIGN_OR_RETURN(std::vector<double> x, GatherDoubles(comm, stats.alltoall_seconds()));
        (row.moved ? after_times : before_times).push_back(*std::max_element(t.begin(), t.end()));
        a2a.push_back(*std::max_element(x.begin(), x.end()));
      }
      last = stats;
      std::vector<int64_t>& load = row.moved ? row.rank_load_after : row.rank_load;
      for (int r = 0; r < n; ++r) load[r] += stats.dispatch.rank_load[static_cast<size_t>(r)];
      row.expert_load.push_back(stats.dispatch.expert_load);
      if (step == 0) {
        MOE_ASSIGN_OR_RETURN(CheckResult check,
                             CheckBlock(c, o.row.seed, hidden, out, o.row.check_tokens));
        int64_t wrong = check.wrong();
        if (wrong > 0) {
          std::fprintf(stderr, "moe bench: rank %d, %lld tokens: %lld wrong; first: %s\n", me,
                       static_cast<long long>(num_tokens), static_cast<long long>(wrong),
                       check.first_problem.c_str());
        }
        MOE_RETURN_IF_ERROR(comm->AllReduceSum(&wrong, 1));
        row.wrong = wrong;
      }
      if (policy && !row.moved) {
        RebalanceStats moved;
        const Clock::time_point start = Clock::now();
        MOE_ASSIGN_OR_RETURN(
            bool did, ObserveAndRebalance(&*policy, &layer, stats.dispatch.expert_load, &moved));
        if (did) {
          row.moved = true;
          row.moved_bytes = moved.move.total_bytes;
          MOE_ASSIGN_OR_RETURN(std::vector<double> t, GatherDoubles(comm, Seconds(start)));
          row.move_seconds = *std::max_element(t.begin(), t.end());
        }
      }
    }
    row.seconds = Median(before_times);
    row.seconds_after = Median(after_times);
    row.a2a_seconds = Median(a2a);
    MOE_ASSIGN_OR_RETURN(row.sent, GatherInts(comm, last.dispatch.bytes_sent()));
    MOE_ASSIGN_OR_RETURN(row.received, GatherInts(comm, last.dispatch.bytes_received()));
    // nccl-tests' size: the bytes one rank sends (own part included), the mean over ranks.
    int64_t sum_sent = 0;
    for (int64_t s : row.sent) sum_sent += s;
    const int64_t per_rank = sum_sent / n;
    row.ours = comm::AllToAllBandwidth(n, per_rank, row.a2a_seconds);
    // The ceiling: our AllToAllV and MPI_Alltoallv on equal buffers (one all-to-all's bytes per
    // peer: the dispatch and combine are two all-to-alls of about per_rank / 2 each).
    const int64_t per_peer = std::max<int64_t>(1, per_rank / 2 / n);
    MOE_ASSIGN_OR_RETURN(row.ceiling, comm::CompareAllToAll(comm, per_peer, 2, 10));
    return row;
  }
};

std::string Loads(const std::vector<int64_t>& v) { return absl::StrJoin(v, "/"); }

void PrintHeader(const EpBenchOptions& o, int n) {
  const config::LayerConfig& c = o.config;
  std::printf(
      "# moe bench --ep %d: %s (E=%d, k=%d, d_model=%lld, d_ff=%lld), %d MPI ranks x %d "
      "threads, placement %s, skew %s%s\n"
      "# tokens split over ranks in contiguous blocks (first T %% N ranks one more); %d "
      "step(s) x %d repeats, median of the slowest rank\n",
      o.ep, c.name().c_str(), c.num_experts(), c.top_k(), static_cast<long long>(c.d_model()),
      static_cast<long long>(c.d_ff()), n, omp_get_max_threads(),
      o.placement_file.empty() ? "contiguous" : o.placement_file.c_str(),
      o.row.skew ? o.row.skew->text.c_str() : "none (router)", o.rebalance ? ", rebalance" : "",
      o.row.steps, o.row.repeats);
  std::printf("%7s %9s %10s %6s %-24s %7s %9s %9s %8s %8s %8s %9s %9s %6s", "tokens", "time_ms",
              "tokens/s", "#wrong", "rank_rows", "max/mean", "sent_MB", "recv_MB", "a2a_ms",
              "algbw", "busbw", "a2a_busbw", "mpi_busbw", "ratio");
  if (o.rebalance) {
    std::printf(" %8s %8s %10s %10s %8s %8s", "mm_bef", "mm_aft", "tok/s_bef", "tok/s_aft",
                "moved_MB", "move_ms");
  }
  std::printf("\n");
}

void PrintRow(const EpBenchOptions& o, const EpRow& r) {
  int64_t max_sent = 0, max_recv = 0;
  for (int64_t s : r.sent) max_sent = std::max(max_sent, s);
  for (int64_t s : r.received) max_recv = std::max(max_recv, s);
  std::printf(
      "%7lld %9.3f %10.1f %6lld %-24s %7.3f %9.3f %9.3f %8.3f %8.3f %8.3f %9.3f %9.3f %6.2f",
      static_cast<long long>(r.tokens), r.seconds * 1e3, r.tokens / r.seconds,
      static_cast<long long>(r.wrong), Loads(r.rank_load).c_str(), MaxOverMean(r.rank_load),
      max_sent / 1e6, max_recv / 1e6, r.a2a_seconds * 1e3, r.ours.algbw_gbps, r.ours.busbw_gbps,
      r.ceiling.ours.busbw_gbps, r.ceiling.mpi.busbw_gbps, r.ceiling.ratio());
  if (o.rebalance) {
    std::printf(" %8.3f %8s %10.1f %10s %8.3f %8.3f", MaxOverMean(r.rank_load),
                r.moved ? absl::StrFormat("%.3f", MaxOverMean(r.rank_load_after)).c_str() : "-",
                r.tokens / r.seconds,
                r.moved ? absl::StrFormat("%.1f", r.tokens / r.seconds_after).c_str() : "-",
                r.moved_bytes / 1e6, r.move_seconds * 1e3);
  }
  std::printf("\n");
  std::fflush(stdout);
}

void PrintFooter() {
  std::printf(
      "# rank_rows: expert rows each rank computed (all steps before any rebalance); sent/recv: "
      "the largest rank's bytes per forward (dispatch + combine)\n"
      "# algbw = bytes a rank sends per forward (mean over ranks, own part included) / a2a "
      "time (in the forward: includes waiting for slower ranks); busbw = algbw * (n-1)/n "
      "(nccl-tests alltoall)\n# a2a_busbw / mpi_busbw: our AllToAllV and MPI_Alltoallv alone, "
      "alternating, on equal buffers of one all-to-all's bytes (CompareAllToAll); ratio = "
      "a2a_busbw / mpi_busbw\n");
}

absl::Status WriteJson(const EpBenchOptions& o, int n, const std::vector<EpRow>& rows) {
  nlohmann::ordered_json json;
  json["context"] = {{"config", o.config.name()},
                     {"config_source", o.config_source},
                     {"ranks", n},
                     {"ep_ranks", n},
                     {"threads", omp_get_max_threads()},
                     {"steps", o.row.steps},
                     {"repeats", o.row.repeats},
                     {"seed", o.row.seed},
                     {"skew", SkewText(o.row.skew)},
                     {"placement", o.placement_file},
                     {"rebalance", o.rebalance}};
  json["rows"] = nlohmann::ordered_json::array();
  for (const EpRow& r : rows) {
    nlohmann::ordered_json row = {{"config", o.config.name()},
                                  {"experts", o.config.num_experts()},
                                  {"top_k", o.config.top_k()},
                                  {"d_model", o.config.d_model()},
                                  {"d_ff", o.config.d_ff()},
                                  {"tokens", r.tokens},
                                  {"seconds", r.seconds},
                                  {"tokens_per_s", r.tokens / r.seconds},
                                  {"wrong", r.wrong},
                                  {"ep_ranks", n},
                                  {"bytes_sent", r.sent},
                                  {"bytes_received", r.received},
                                  {"alltoall_ms", r.a2a_seconds * 1e3},
                                  {"algbw_gbps", r.ours.algbw_gbps},
                                  {"busbw_gbps", r.ours.busbw_gbps},
                                  {"a2a_busbw_gbps", r.ceiling.ours.busbw_gbps},
                                  {"mpi_busbw_gbps", r.ceiling.mpi.busbw_gbps},
                                  {"a2a_over_mpi", r.ceiling.ratio()},
                                  {"load_max_over_mean", MaxOverMean(r.rank_load)},
                                  {"expert_load", r.expert_load}};
    row["rank_load"] = {{"before", r.rank_load},
                        {"placement", o.placement_file.empty() ? "contiguous" : o.placement_file}};
    if (r.moved) {
      row["rank_load"]["after"] = r.rank_load_after;
      row["tokens_per_s_after"] = r.tokens / r.seconds_after;
      row["moved_bytes"] = r.moved_bytes;
      row["move_ms"] = r.move_seconds * 1e3;
    }
    json["rows"].push_back(row);
  }
  FILE* f = std::fopen(o.json.c_str(), "w");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("--json ", o.json, ": cannot write"));
  const std::string text = json.dump(2) + "\n";
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
  return absl::OkStatus();
}

}  // namespace

// Gathers every rank's trace on rank 0 and writes them there as one file: the traceEvents of
// all ranks (pid = rank) in one array.
absl::Status WriteMergedTrace(comm::MpiCommunicator* comm, const std::string& path) {
  const std::string mine = trace::ToJson();
  const int n = comm->size();
  std::vector<int64_t> lengths(static_cast<size_t>(n));
  const int64_t my_length = static_cast<int64_t>(mine.size());
  MOE_RETURN_IF_ERROR(comm->AllGather(&my_length, sizeof(int64_t), lengths.data()));
  const int64_t width = *std::max_element(lengths.begin(), lengths.end());
  std::string padded = mine;
  padded.resize(static_cast<size_t>(width), ' ');
  std::string all(static_cast<size_t>(width * n), ' ');
  MOE_RETURN_IF_ERROR(comm->AllGather(padded.data(), width, all.data()));
  if (comm->rank() != 0) return absl::OkStatus();
  nlohmann::json merged = nlohmann::json::parse(all.substr(0, static_cast<size_t>(lengths[0])),
                                                nullptr, /*allow_exceptions=*/false);
  if (merged.is_discarded() || !merged.contains("traceEvents")) {
    return absl::InternalError("rank 0's trace is not valid JSON");
  }
  for (int r = 1; r < n; ++r) {
    const nlohmann::json other = nlohmann::json::parse(
        all.substr(static_cast<size_t>(r * width), static_cast<size_t>(lengths[r])), nullptr,
        /*allow_exceptions=*/false);
    if (other.is_discarded() || !other.contains("traceEvents")) {
      return absl::InternalError(absl::StrCat("rank ", r, "'s trace is not valid JSON"));
    }
    for (const nlohmann::json& event : other["traceEvents"]) merged["traceEvents"].push_back(event);
  }
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("--trace ", path, ": cannot write"));
  const std::string text = merged.dump() + "\n";
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) {
    return absl::DataLossError(absl::StrCat("--trace ", path, ": write failed"));
  }
  return absl::OkStatus();
}

int RunEpBench(const EpBenchOptions& o) {
  bool quiet = false;
  absl::StatusOr<std::unique_ptr<EpSession>> ep =
      StartEpSession(o.ep, o.timeout_seconds, "bench", &quiet);
  if (!ep.ok()) return quiet ? kExitUsageError : Fail(ep.status(), kExitUsageError);
  comm::MpiCommunicator* comm = (*ep)->comm.get();
  const bool root = comm->rank() == 0;
  Worker worker{o, comm, std::nullopt};
  absl::StatusOr<std::optional<gating::SkewedSelection>> sel =
      SkewSelection(o.row.skew, o.config, o.row.seed);
  if (!sel.ok()) return root ? Fail(sel.status(), kExitUsageError) : kExitUsageError;
  worker.skew = *std::move(sel);
  if (root) PrintHeader(o, comm->size());
  if (!o.trace.empty()) trace::Enable();
  std::vector<EpRow> rows;
  int64_t wrong = 0;
  for (int64_t t : o.tokens) {
    absl::StatusOr<EpRow> row = worker.Row(t);
    if (!row.ok()) {
      Fail(absl::StrCat("rank ", comm->rank(), ": tokens=", t, ": ", row.status().message()),
           kExitRuntimeError);
      std::fflush(stderr);
      std::exit(kExitRuntimeError);  // NOTE: MPI_Finalize would wait for a failed peer
    }
    if (root) PrintRow(o, *row);
    wrong += row->wrong;
    rows.push_back(*std::move(row));
  }
  if (root) PrintFooter();
  if (!o.trace.empty()) {
    trace::Disable();
    absl::Status written = WriteMergedTrace(comm, o.trace);
    if (!written.ok()) return root ? Fail(written, kExitRuntimeError) : kExitRuntimeError;
  }
  if (root && !o.json.empty()) {
    absl::Status written = WriteJson(o, comm->size(), rows);
    if (!written.ok()) return Fail(written, kExitRuntimeError);
  }
  if (wrong > 0) {
    return root ? Fail(absl::StrCat(wrong, " wrong results (see #wrong)"), kExitRuntimeError)
                : kExitRuntimeError;
  }
  return kExitOk;
}

}  // namespace moe::tools
