// `moe plan`: a replicated expert placement for given per-expert loads, compared with EPLB.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "comm/eplb_baseline.h"
#include "comm/replica_planner.h"
#include "gating/load_stats.h"
#include "gating/routing_skew.h"
#include "tools/balance_commands.h"

ABSL_FLAG(std::string, loads, "",
          "Per-expert loads file: lines \"expert load\" (written by LoadStats::ToLoadsText).");
ABSL_FLAG(std::string, skew, "",
          "uniform, zipf:S, hot:N:P (N experts get fraction P) or trace:FILE; the expert order is "
          "a permutation seeded by --seed. plan/sim: synthetic loads instead of --loads; bench: "
          "each token's experts are drawn from it.");
ABSL_FLAG(int32_t, experts, 0, "Number of routed experts (with --skew; 0 = from --loads).");
ABSL_FLAG(int32_t, ranks, 0, "Number of expert-parallel ranks.");
ABSL_FLAG(int32_t, nodes, 0,
          "Nodes (of ranks/nodes consecutive ranks each): the plan keeps an expert's replicas "
          "on few nodes and EPLB uses its hierarchical policy; 0 = flat.");
ABSL_FLAG(int32_t, redundant, 0,
          "Replica slots beyond one per expert; ranks hold floor or ceil of "
          "(experts + redundant) / ranks slots.");
ABSL_FLAG(std::string, placement, "",
          "Replicated placement file (text-format configs/placement.proto, from `moe plan "
          "--output`).");

namespace moe::tools {
namespace {

constexpr int32_t kMaxPlanRanks = 1 << 16;

std::string ShareText(const comm::RankExpert& x) {
  if (x.share >= 1 - 1e-12) return absl::StrCat("e", x.expert);
  return absl::StrFormat("e%d:%.4f", x.expert, x.share);
}

double MaxOverMeanOf(const comm::ReplicatedPlacement& p, const std::vector<double>& loads) {
  return gating::MaxOverMean(comm::PredictedRankLoads(p, loads));
}

}  // namespace

absl::StatusOr<LoadsInput> LoadsFromFlags(int32_t num_experts, const char* command,
                                          int* exit_code) {
  *exit_code = kExitUsageError;
  const std::string file = absl::GetFlag(FLAGS_loads);
  const std::string skew = absl::GetFlag(FLAGS_skew);
  if (file.empty() == skew.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("`moe ", command, "` needs exactly one of --loads FILE and --skew SPEC"));
  }
  LoadsInput input;
  if (!file.empty()) {
    absl::StatusOr<std::vector<double>> loads = gating::ReadLoadsFile(file);
    if (!loads.ok()) {
      *exit_code = kExitRuntimeError;
      return loads.status();
    }
    if (num_experts > 0 && static_cast<int32_t>(loads->size()) != num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("--loads ", file, " has ", loads->size(),
                                                     " experts, but the layer has ", num_experts));
    }
    input.loads = *std::move(loads);
    input.description = file;
    return input;
  }
  absl::StatusOr<gating::SkewSpec> spec = gating::ParseSkewSpec(skew);
  if (!spec.ok()) {
    if (skew.rfind("trace:", 0) == 0) *exit_code = kExitRuntimeError;
    return spec.status();
  }
  if (num_experts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--skew needs the number of experts (--experts N >= 1)"));
  }
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  absl::StatusOr<std::vector<double>> fractions = gating::SkewFractions(*spec, num_experts, seed);
  if (!fractions.ok()) return fractions.status();
  input.loads = *std::move(fractions);
  input.description = absl::StrCat(skew, " (seed ", seed, ", fractions of the slots)");
  return input;
}

int RunPlanCommand(const std::vector<std::string>& positional) {
  if (!positional.empty()) {
    return Fail(absl::StrCat("unexpected argument '", positional[0], "'"), kExitUsageError);
  }
  const int32_t ranks = absl::GetFlag(FLAGS_ranks);
  const int32_t nodes = absl::GetFlag(FLAGS_nodes);
  const int32_t redundant = absl::GetFlag(FLAGS_redundant);
  const int32_t experts = absl::GetFlag(FLAGS_experts);
  if (ranks < 1 || ranks > kMaxPlanRanks) {
    return Fail(absl::StrCat("flag --ranks: expected 1 to ", kMaxPlanRanks, ", got ", ranks),
                kExitUsageError);
  }
  if (nodes < 0 || (nodes > 0 && ranks % nodes != 0)) {
    return Fail(
        absl::StrCat("flag --nodes: expected 0 or a divisor of --ranks ", ranks, ", got ", nodes),
        kExitUsageError);
  }
  if (experts < 0 || experts > gating::kMaxLoadsExperts) {
    return Fail(
        absl::StrCat("flag --experts: expected 1 to ", gating::kMaxLoadsExperts, ", got ", experts),
        kExitUsageError);
  }
  int exit_code = kExitUsageError;
  absl::StatusOr<LoadsInput> input = LoadsFromFlags(experts, "plan", &exit_code);
  if (!input.ok()) return Fail(input.status(), exit_code);
  const std::vector<double>& loads = input->loads;
  const int32_t num_experts = static_cast<int32_t>(loads.size());
  const int64_t max_redundant = int64_t{ranks - 1} * num_experts;
  if (redundant < 0 || redundant > max_redundant) {
    return Fail(absl::StrCat("flag --redundant: expected 0 to ", max_redundant,
                             " (one replica of an expert per rank at most), got ", redundant),
                kExitUsageError);
  }

  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<comm::PlanResult> plan = comm::PlanReplicatedPlacement(
      loads, {.num_ranks = ranks, .num_redundant = redundant, .num_nodes = nodes});
  const double plan_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!plan.ok()) return Fail(plan.status(), kExitRuntimeError);
  const comm::ReplicatedPlacement& p = plan->placement;

  const int64_t slots = p.num_slots();
  const int32_t per_node = nodes > 0 ? ranks / nodes : ranks;
  double total = 0, hottest = 0;
  for (double x : loads) {
    total += x;
    hottest = std::max(hottest, x);
  }
  std::printf("moe plan: %d experts on %d ranks", num_experts, ranks);
  if (nodes > 0) std::printf(" (%d nodes of %d)", nodes, per_node);
  std::printf(", %d redundant slots: %lld slots, %lld ranks x %lld + %lld ranks x %lld\n",
              redundant, static_cast<long long>(slots),
              static_cast<long long>(ranks - slots % ranks), static_cast<long long>(slots / ranks),
              static_cast<long long>(slots % ranks), static_cast<long long>(slots / ranks + 1));
  std::printf("loads: %s; hottest expert %.2f%% of the load, expert max/mean %.3f\n\n",
              input->description.c_str(), total > 0 ? 100 * hottest / total : 0,
              gating::MaxOverMean(loads));
  std::printf("%6s %5s %5s %9s  %s\n", "rank", "node", "slots", "load/mean",
              "experts (eID:share of the expert's rows, when not all of them)");
  const double mean = total / ranks;
  for (int32_t r = 0; r < ranks; ++r) {
    const auto& list = p.rank_experts[static_cast<size_t>(r)];
    std::printf("%6d %5d %5zu %9.4f  %s\n", r, r / per_node, list.size(),
                mean > 0 ? plan->rank_loads[static_cast<size_t>(r)] / mean : 0.0,
                absl::StrJoin(list, " ", [](std::string* out, const comm::RankExpert& x) {
                  out->append(ShareText(x));
                }).c_str());
  }
  int32_t replicated = 0;
  for (int32_t e = 0; e < num_experts; ++e) replicated += p.num_replicas(e) > 1 ? 1 : 0;
  std::printf(
      "\npredicted max/mean rank load: %.4f  (lower bound %.4f; %d experts replicated; "
      "contiguous without replicas: %.4f)\n",
      plan->max_over_mean, plan->lower_bound, replicated,
      MaxOverMeanOf(comm::ContiguousReplicatedPlacement(num_experts, ranks), loads));
  const comm::EplbOptions eplb_options = {
      .num_ranks = ranks, .num_redundant = redundant, .num_nodes = nodes, .num_groups = 0};
  absl::StatusOr<comm::ReplicatedPlacement> eplb = comm::EplbPlacement(loads, eplb_options);
  std::string eplb_text = eplb.ok() ? absl::StrFormat("%.4f", MaxOverMeanOf(*eplb, loads))
                                    : absl::StrCat("n/a (", eplb.status().message(), ")");
  std::printf("EPLB baseline (equal shares, %s policy): %s", nodes > 1 ? "hierarchical" : "global",
              eplb_text.c_str());
  if (nodes > 1) {
    absl::StatusOr<comm::ReplicatedPlacement> global =
        comm::EplbPlacement(loads, {.num_ranks = ranks, .num_redundant = redundant});
    if (global.ok()) std::printf("; global policy: %.4f", MaxOverMeanOf(*global, loads));
  }
  std::printf("\n");
  if (nodes > 1) {
    std::printf("nodes per expert (mean): %.3f", comm::MeanNodeSpan(p, nodes));
    if (eplb.ok()) std::printf(" (EPLB: %.3f)", comm::MeanNodeSpan(*eplb, nodes));
    std::printf("\n");
  }
  std::printf("planning time: %.2f ms (%d experts x %d ranks, winner: %s)\n", plan_ms, num_experts,
              ranks, plan->candidate);

  const std::string output = absl::GetFlag(FLAGS_output);
  if (!output.empty()) {
    const std::string comment = absl::StrFormat(
        "moe plan --ranks %d --nodes %d --redundant %d; loads: %s\npredicted max/mean rank "
        "load %.6f (EPLB %s)",
        ranks, nodes, redundant, input->description, plan->max_over_mean, eplb_text);
    absl::Status written = comm::WritePlacementFile(output, p, loads, comment);
    if (!written.ok()) return Fail(written, kExitRuntimeError);
    std::printf("wrote %s\n", output.c_str());
  }
  return kExitOk;
}

Command PlanCommandEntry() {
  return {"plan",
          "moe plan (--loads FILE | --skew SPEC --experts E) --ranks N [--nodes G]\n"
          "         [--redundant R] [--output PLACEMENT.textproto] [--seed S]",
          "Plan a placement with replicated experts that balances per-expert loads over ranks.",
          "Prints every rank's experts (with the share of an expert's rows each replica\n"
          "computes, split by row index), the predicted max/mean rank load, a lower bound, and\n"
          "DeepSeek's EPLB (equal shares) on the same loads. --output writes the placement as\n"
          "text-format configs/placement.proto for --placement. Deterministic for given flags.",
          {"loads", "skew", "experts", "ranks", "nodes", "redundant", "output", "seed"},
          &RunPlanCommand};
}

}  // namespace moe::tools
