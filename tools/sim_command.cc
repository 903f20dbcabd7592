// `moe sim`: predicted step time of expert parallelism over N ranks, without balancing, with
// EPLB and with the replica planner (or a placement file), and where the time goes.
#include <cstdio>
#include <fstream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "comm/eplb_baseline.h"
#include "comm/replica_planner.h"
#include "comm/step_simulator.h"
#include "configs/layer_config.h"
#include "nlohmann/json.hpp"
#include "tools/balance_commands.h"

ABSL_FLAG(int32_t, ranks_per_node, 8, "Ranks sharing a node (intra-node links).");
ABSL_FLAG(double, intra_gbps, 150, "GB/s per rank and direction inside a node.");
ABSL_FLAG(double, inter_gbps, 45, "GB/s per rank and direction across nodes.");
ABSL_FLAG(double, latency_us, 3,
          "Latency of one hop in microseconds (inside a node 1 hop, across nodes 2).");
ABSL_FLAG(std::string, expert_model, "",
          "A `moe bench --json` file: expert, route and combine times are fitted (least "
          "squares, affine) to its rows instead of the --*_us flags.");
ABSL_FLAG(double, expert_us_per_row, 0.2, "Expert GEMM microseconds per routed row.");
ABSL_FLAG(double, expert_fixed_us, 20, "Expert GEMM microseconds per rank and step (launches).");
ABSL_FLAG(double, route_us_per_token, 0.05, "Router microseconds per token.");
ABSL_FLAG(double, combine_us_per_token, 0.05, "Local combine microseconds per token.");

namespace moe::tools {
namespace {

// Fits the compute model to the rows of a `moe bench --json` file that share the first row's
// (experts, top_k, d_model, d_ff). Errors name the file and field.
absl::StatusOr<comm::ComputeModel> ComputeModelFromBench(const std::string& path,
                                                         std::string* description) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat(path, ": cannot open the bench JSON"));
  nlohmann::json json = nlohmann::json::parse(file, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  if (!json.contains("rows") || !json["rows"].is_array() || json["rows"].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": rows: missing or empty array"));
  }
  std::vector<double> rows, tokens, expert_us, route_us, combine_us;
  const nlohmann::json& first = json["rows"][0];
  for (size_t i = 0; i < json["rows"].size(); ++i) {
    const nlohmann::json& row = json["rows"][i];
    for (const char* key : {"experts", "top_k", "d_model", "d_ff", "tokens", "experts_ms",
                            "route_ms", "combine_ms"}) {
      if (!row.is_object() || !row.contains(key) || !row[key].is_number()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": rows[", i, "].", key, ": missing or not a number"));
      }
    }
    bool same = true;
    for (const char* key : {"experts", "top_k", "d_model", "d_ff"}) {
      same = same && row[key] == first[key];
    }
    if (!same) continue;
    const double dropped = row.contains("dropped_slots") && row["dropped_slots"].is_number()
                               ? row["dropped_slots"].get<double>()
                               : 0.0;
    tokens.push_back(row["tokens"].get<double>());
    rows.push_back(tokens.back() * row["top_k"].get<double>() - dropped);
    expert_us.push_back(row["experts_ms"].get<double>() * 1e3);
    route_us.push_back(row["route_ms"].get<double>() * 1e3);
    combine_us.push_back(row["combine_ms"].get<double>() * 1e3);
  }
  comm::ComputeModel model;
  absl::StatusOr<comm::AffineFit> e = comm::FitAffine(rows, expert_us);
  absl::StatusOr<comm::AffineFit> r = comm::FitAffine(tokens, route_us);
  absl::StatusOr<comm::AffineFit> c = comm::FitAffine(tokens, combine_us);
  for (const auto* fit : {&e, &r, &c}) {
    if (!fit->ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", fit->status().message()));
    }
  }
  model.expert_fixed_us = std::max(0.0, e->intercept);
  model.expert_us_per_row = std::max(0.0, e->slope);
  model.route_us_per_token = std::max(0.0, r->slope);
  model.combine_us_per_token = std::max(0.0, c->slope);
  *description = absl::StrFormat("fitted to %d rows of %s", rows.size(), path);
  return model;
}

struct Scenario {
  std::string name;
  std::vector<double> rank_rows;
  comm::StepBreakdown b;
};

}  // namespace

int RunSimCommand(const std::vector<std::string>& positional) {
  if (!positional.empty()) {
    return Fail(absl::StrCat("unexpected argument '", positional[0], "'"), kExitUsageError);
  }
  const std::string config_name =
      FlagGiven("config") ? absl::GetFlag(FLAGS_config) : std::string("deepseek-v3");
  absl::StatusOr<config::LayerConfig> config = config::LoadLayerConfig(config_name);
  if (!config.ok()) return Fail(config.status(), kExitRuntimeError);
  const int32_t ranks = absl::GetFlag(FLAGS_ranks);
  comm::LinkModel links{absl::GetFlag(FLAGS_ranks_per_node), absl::GetFlag(FLAGS_intra_gbps),
                        absl::GetFlag(FLAGS_inter_gbps), absl::GetFlag(FLAGS_latency_us)};
  if (ranks < 1 || ranks > 4096) {
    return Fail(absl::StrCat("flag --ranks: expected 1 to 4096, got ", ranks), kExitUsageError);
  }
  if (links.ranks_per_node < 1 || ranks % std::min(links.ranks_per_node, ranks) != 0) {
    return Fail(absl::StrCat("flag --ranks_per_node: expected a divisor of --ranks ", ranks,
                             ", got ", links.ranks_per_node),
                kExitUsageError);
  }
  int exit_code = kExitUsageError;
  absl::StatusOr<LoadsInput> input = LoadsFromFlags(config->num_experts(), "sim", &exit_code);
  if (!input.ok()) return Fail(input.status(), exit_code);
  const int32_t num_experts = config->num_experts();
  const std::string token_text =
      FlagGiven("tokens") ? absl::GetFlag(FLAGS_tokens) : std::string("4096");
  absl::StatusOr<std::vector<int64_t>> token_counts = ParseTokenCounts(token_text, "tokens");
  if (!token_counts.ok()) return Fail(token_counts.status(), kExitUsageError);

  comm::ComputeModel compute{
      absl::GetFlag(FLAGS_route_us_per_token), absl::GetFlag(FLAGS_expert_fixed_us),
      absl::GetFlag(FLAGS_expert_us_per_row), absl::GetFlag(FLAGS_combine_us_per_token)};
  std::string compute_source = "flags";
  if (!absl::GetFlag(FLAGS_expert_model).empty()) {
    absl::StatusOr<comm::ComputeModel> fitted =
        ComputeModelFromBench(absl::GetFlag(FLAGS_expert_model), &compute_source);
    if (!fitted.ok()) return Fail(fitted.status(), kExitRuntimeError);
    compute = *fitted;
  }

  // Placements: none (contiguous), EPLB, and the planner's or the --placement file's (then
  // EPLB gets the file's number of redundant slots).
  const int32_t nodes = ranks / std::min(links.ranks_per_node, ranks);
  std::vector<std::pair<std::string, comm::ReplicatedPlacement>> placements;
  placements.push_back({"contiguous", comm::ContiguousReplicatedPlacement(num_experts, ranks)});
  int32_t redundant = absl::GetFlag(FLAGS_redundant);
  comm::ReplicatedPlacement mine;
  std::string mine_name;
  if (!absl::GetFlag(FLAGS_placement).empty()) {
    const std::string path = absl::GetFlag(FLAGS_placement);
    absl::StatusOr<comm::ReplicatedPlacement> file = comm::ReadPlacementFile(path);
    if (!file.ok()) return Fail(file.status(), kExitRuntimeError);
    absl::Status fits = comm::ValidateReplicatedPlacement(*file, num_experts, ranks);
    if (!fits.ok()) return Fail(absl::StrCat(path, ": ", fits.message()), kExitRuntimeError);
    mine = *std::move(file);
    redundant = static_cast<int32_t>(mine.num_slots() - num_experts);
    mine_name = "--placement";
  } else {
    absl::StatusOr<comm::PlanResult> plan = comm::PlanReplicatedPlacement(
        input->loads, {.num_ranks = ranks, .num_redundant = redundant, .num_nodes = nodes});
    if (!plan.ok()) return Fail(plan.status(), kExitUsageError);
    mine = std::move(plan->placement);
    mine_name = absl::StrCat("planner R=", redundant);
  }
  absl::StatusOr<comm::ReplicatedPlacement> eplb =
      comm::EplbPlacement(input->loads, {.num_ranks = ranks, .num_redundant = redundant});
  if (eplb.ok()) placements.push_back({absl::StrCat("EPLB R=", redundant), *eplb});
  placements.push_back({mine_name, std::move(mine)});

  std::printf("moe sim: %d ranks (%d node%s x %d), %s: d_model %lld, top_k %d, %d experts\n", ranks,
              nodes, nodes > 1 ? "s" : "", ranks / nodes, config_name.c_str(),
              static_cast<long long>(config->d_model()), config->top_k(), num_experts);
  std::printf("links: intra %.1f GB/s, inter %.1f GB/s, %.2f us/hop; rows move as F32\n",
              links.intra_gbps, links.inter_gbps, links.latency_us);
  std::printf(
      "compute (%s): expert %.3f us + %.5f us/row, route %.5f us/token, combine %.5f "
      "us/token\nloads: %s\n",
      compute_source.c_str(), compute.expert_fixed_us, compute.expert_us_per_row,
      compute.route_us_per_token, compute.combine_us_per_token, input->description.c_str());
  double total_load = 0;
  for (double x : input->loads) total_load += x;
  for (int64_t tokens : *token_counts) {
    const comm::StepShape shape{ranks, tokens, config->top_k(), config->d_model(), 4};
    const double total_rows = static_cast<double>(tokens) * ranks * config->top_k();
    std::vector<Scenario> scenarios;
    for (const auto& [name, placement] : placements) {
      std::vector<double> expert_rows(input->loads.size());
      for (size_t e = 0; e < expert_rows.size(); ++e) {
        expert_rows[e] = total_load > 0 ? input->loads[e] / total_load * total_rows : 0;
      }
      Scenario s{name, comm::PredictedRankLoads(placement, expert_rows), {}};
      absl::StatusOr<comm::StepBreakdown> b =
          comm::SimulateStep(shape, s.rank_rows, links, compute);
      if (!b.ok()) return Fail(b.status(), kExitUsageError);
      s.b = *b;
      scenarios.push_back(std::move(s));
    }
    std::printf("\n%lld tokens per rank (%.0f routed rows per step)\n%-28s",
                static_cast<long long>(tokens), total_rows, "time in us");
    for (const Scenario& s : scenarios) std::printf(" %16s", s.name.c_str());
    std::printf("\n");
    auto line = [&](const char* label, auto value) {
      std::printf("%-28s", label);
      for (const Scenario& s : scenarios) std::printf(" %16s", value(s.b).c_str());
      std::printf("\n");
    };
    auto us = [](double seconds) { return absl::StrFormat("%.1f", seconds * 1e6); };
    line("rank rows max/mean", [](const comm::StepBreakdown& b) {
      return absl::StrFormat("%.3f", b.rows_max_over_mean);
    });
    line("route", [&](const comm::StepBreakdown& b) { return us(b.route_s); });
    line("dispatch all-to-all (max)", [&](const auto& b) { return us(b.dispatch.max_s); });
    line("  mean rank", [&](const auto& b) { return us(b.dispatch.mean_s); });
    line("  max rank MB",
         [](const auto& b) { return absl::StrFormat("%.2f", b.dispatch.max_rank_bytes / 1e6); });
    line("expert compute (max rank)", [&](const auto& b) { return us(b.expert.max_s); });
    line("  mean rank", [&](const auto& b) { return us(b.expert.mean_s); });
    line("combine all-to-all (max)", [&](const auto& b) { return us(b.combine.max_s); });
    line("combine (local)", [&](const auto& b) { return us(b.combine_local_s); });
    line("step total", [&](const auto& b) { return us(b.total_s); });
    line("imbalance cost", [&](const auto& b) {
      return absl::StrFormat("%.1f (%.0f%%)", b.imbalance_s * 1e6,
                             b.total_s > 0 ? 100 * b.imbalance_s / b.total_s : 0.0);
    });
  }
  std::printf(
      "\nimbalance cost: step total minus the same step with every rank computing the "
      "mean rows.\n");
  return kExitOk;
}

Command SimCommandEntry() {
  return {"sim",
          "moe sim (--loads FILE | --skew SPEC) --ranks N [--config CONFIG] [--tokens T]\n"
          "        [--redundant R] [--placement FILE] [--ranks_per_node 8] [--intra_gbps G]\n"
          "        [--inter_gbps G] [--latency_us L] [--expert_model BENCH.json]",
          "Predict the step time of expert parallelism over N ranks and where it goes.",
          "Per --tokens count (tokens per rank), for experts placed contiguously, by EPLB and\n"
          "by the replica planner (or --placement): route, dispatch all-to-all, expert compute\n"
          "(slowest and mean rank), combine all-to-all, and the imbalance cost. The traffic\n"
          "and time model is in comm/step_simulator.h. --config gives d_model, top_k and the\n"
          "expert count (default deepseek-v3).",
          {"loads", "skew", "config", "ranks", "tokens", "redundant", "placement", "seed",
           "ranks_per_node", "intra_gbps", "inter_gbps", "latency_us", "expert_model",
           "expert_us_per_row", "expert_fixed_us", "route_us_per_token", "combine_us_per_token"},
          &RunSimCommand};
}

}  // namespace moe::tools
