#include "tools/bench_output.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "configs/layer_config.h"
#include "tools/bench_check.h"

namespace moe::tools {
namespace {

bool Held(const BenchContext& x) { return x.hold != "none"; }

std::string Capacity(const config::LayerConfig& c) {
  return c.capacity().policy() == config::DROPLESS
             ? "dropless"
             : absl::StrFormat("capacity factor %g, drop in token order", c.capacity().factor());
}

// Writes `text` to `path`; errors name `flag`.
absl::Status WriteFile(const std::string& path, const std::string& text, const char* flag) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot open for writing"));
  file << text;
  file.close();
  if (!file) return absl::DataLossError(absl::StrCat(flag, " ", path, ": write failed"));
  return absl::OkStatus();
}

std::string CsvField(const nlohmann::ordered_json& value) {
  if (value.is_null()) return "";
  if (!value.is_string()) return value.dump();
  const std::string text = value.get<std::string>();
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

}  // namespace

std::string SweepTableHeader(const BenchContext& x) {
  const config::LayerConfig& c = x.config;
  std::string text = absl::StrFormat(
      "# moe bench sweep of %s (%s): d_model %d, d_ff %d, experts %d, top_k %d, %s, shared d_ff "
      "%d, %s\n",
      c.name(), x.config_source, c.d_model(), c.d_ff(), c.num_experts(), c.top_k(),
      ActivationName(c), config::SharedExpertsDff(c), Capacity(c));
  const bool tokens_swept = x.sweep.find("tokens=") != std::string::npos;
  absl::StrAppendFormat(&text, "# grid: %s%s%s = %d points", x.sweep,
                        tokens_swept ? "" : " x tokens=",
                        tokens_swept ? "" : absl::StrJoin(x.tokens, ","), x.points_total);
  if (Held(x)) {
    absl::StrAppendFormat(&text,
                          "; --hold %s: d_ff solved per point to keep the base's %s params "
                          "(deviation in hold_dev%%)",
                          x.hold, x.hold == "active-params" ? "active" : "total");
  }
  absl::StrAppendFormat(&text, "\n# EP model: %d rank%s%s\n", x.ep_ranks, x.ep_ranks > 1 ? "s" : "",
                        x.ep_ranks > 1 ? ", contiguous expert blocks (no rank runs: bytes modelled "
                                         "from the routing)"
                                       : " (no bytes move; --model_ranks N models N ranks)");
  absl::StrAppendFormat(
      &text,
      "# weights: random F32 (seed %d), created per config; inputs: %s (seed %d), "
      "%d step%s, skew %g%s\n",
      x.seed, x.input_dist, x.seed, x.steps, x.steps > 1 ? "s" : "", x.input_skew,
      x.skew.empty() ? "" : absl::StrCat(", experts drawn from --skew ", x.skew));
  absl::StrAppendFormat(&text, "# machine: %s, %d cores, isa %s; threads %d; commit %s\n", x.cpu,
                        x.cores, x.isa.empty() ? "-" : absl::StrJoin(x.isa, " "), x.threads,
                        x.commit);
  absl::StrAppendFormat(&text, "# timing: %d warm-up + median of %d forwards x %d step%s per row\n",
                        x.warmup, x.repeats, x.steps, x.steps > 1 ? "s" : "");
  absl::StrAppendFormat(&text,
                        "# ceilings (measured now): dense GEMM %.1f GFLOP/s (%s, 256 x "
                        "%d x %d), memory read %.1f GB/s (256 MiB sum)\n",
                        x.ceilings.gemm_gflops, x.ceilings.gemm_name, x.ceilings.gemm_n,
                        x.ceilings.gemm_k, x.ceilings.read_gbps);
  absl::StrAppendFormat(&text, "\n%7s %5s %7s %7s %7s %10s %11s %9s %6s %10s %12s %8s %9s",
                        "experts", "top_k", "d_model", "d_ff", "tokens", "time_ms", "tokens/s",
                        "GFLOP/s", "%roof", "act_MB/tok", "total_Mparam", "load_max", "ep_KB/tok");
  if (Held(x)) absl::StrAppendFormat(&text, " %9s", "hold_dev%");
  absl::StrAppendFormat(&text, " %6s\n", "#wrong");
  return text;
}

std::string SweepTableRow(const BenchRow& r, const BenchContext& x) {
  std::string text = absl::StrFormat(
      "%7d %5d %7d %7d %7d %10.3f %11.1f %9.2f %6.1f %10.3f %12.3f %8.2f %9.3f", r.experts, r.top_k,
      r.d_model, r.d_ff, r.tokens, r.seconds * 1e3, r.tokens_per_second, r.gflops,
      r.roofline_percent(), r.active_bytes_per_token / 1e6,
      static_cast<double>(r.total_params) / 1e6, r.load_max_over_mean, r.ep_bytes_per_token / 1e3);
  if (Held(x)) absl::StrAppendFormat(&text, " %+9.3f", 100 * r.hold_deviation);
  absl::StrAppendFormat(&text, " %6d\n", r.wrong);
  return text;
}

std::string SweepTableFooter(const BenchContext& x) {
  std::string text = absl::StrCat(
      "\n# ", FlopFormula(), "\n# %roof: ", kRooflineFormula,
      "\n#   (active weight bytes: ", BytesFormula(),
      ")\n# act_MB/tok: 4 * (top_k * P*d_model*d_ff + shared + router params) / 1e6, the F32 "
      "weight bytes one token touches\n# total_Mparam: num_experts * P*d_model*d_ff + shared + "
      "router params, / 1e6\n# load_max: max/mean of expert_load, mean over steps\n# ep_KB/tok: ",
      kEpBytesFormula, ", / 1e3\n");
  if (Held(x)) {
    absl::StrAppend(&text, "# hold_dev%: 100 * (", x.hold == "active-params" ? "active" : "total",
                    " params / the base config's - 1); |hold_dev%| <= 1 by construction\n");
  }
  absl::StrAppend(&text,
                  "# #wrong: the first step's output, tokens recomputed in float64; wrong when ",
                  MOE_BENCH_CHECK_RULE, "\n");
  return text;
}

nlohmann::ordered_json ContextJson(const BenchContext& x) {
  const config::LayerConfig& c = x.config;
  nlohmann::ordered_json isa = nlohmann::ordered_json::object();
  for (const std::string& feature : KnownIsaFeatures()) {
    isa[feature] = std::find(x.isa.begin(), x.isa.end(), feature) != x.isa.end();
  }
  return {
      {"config", c.name()},
      {"config_source", x.config_source},
      {"config_text", config::ResolvedConfigText(c)},
      {"d_model", c.d_model()},
      {"d_ff", c.d_ff()},
      {"num_experts", c.num_experts()},
      {"top_k", c.top_k()},
      {"activation", ActivationName(c)},
      {"shared_d_ff", config::SharedExpertsDff(c)},
      {"sweep", x.sweep},
      {"tokens", x.tokens},
      {"hold", x.hold},
      {"base_active_params", x.base_active_params},
      {"base_total_params", x.base_total_params},
      {"points_total", x.points_total},
      {"interrupted", x.interrupted},
      {"threads", x.threads},
      {"ranks", x.ranks},
      {"ep_ranks", x.ep_ranks},
      {"seed", x.seed},
      {"repeats", x.repeats},
      {"warmup", x.warmup},
      {"steps", x.steps},
      {"input_dist", x.input_dist},
      {"input_skew", x.input_skew},
      {"skew", x.skew},
      {"cpu", x.cpu},
      {"cores", x.cores},
      {"isa", isa},
      {"commit", x.commit},
      {"trace_file", x.trace_file},
      {"weight_gb", x.weight_gb},
      {"weight_init_seconds", x.weight_init_seconds},
      {"ceiling_gemm_gflops", x.ceilings.gemm_gflops},
      {"ceiling_gemm", x.ceilings.gemm_name},
      {"kernels", x.kernels},
      {"ceiling_gemm_shape", {x.ceilings.gemm_m, x.ceilings.gemm_n, x.ceilings.gemm_k}},
      {"ceiling_read_gbps", x.ceilings.read_gbps},
      {"flop_formula", FlopFormula()},
      {"bytes_formula", BytesFormula()},
      {"roofline_formula", kRooflineFormula},
      {"ep_bytes_formula", kEpBytesFormula},
      {"check_rule", MOE_BENCH_CHECK_RULE},
  };
}

nlohmann::ordered_json RowJson(const BenchRow& r) {
  nlohmann::ordered_json row = {
      {"label", r.label},
      {"experts", r.experts},
      {"top_k", r.top_k},
      {"d_model", r.d_model},
      {"d_ff", r.d_ff},
      {"tokens", r.tokens},
      {"time_ms", r.seconds * 1e3},
      {"tokens_per_s", r.tokens_per_second},
      {"gflops", r.gflops},
      {"gbps", r.gbps},
      {"roofline_ms", r.roofline_seconds * 1e3},
      {"roofline_percent", r.roofline_percent()},
      {"active_bytes_per_token", r.active_bytes_per_token},
      {"active_params", r.active_params},
      {"total_params", r.total_params},
      {"hold_deviation_percent",
       r.held ? nlohmann::ordered_json(100 * r.hold_deviation) : nlohmann::ordered_json()},
      {"load_max_over_mean", r.load_max_over_mean},
      {"ep_ranks", r.ep_ranks},
      {"ep_remote_ranks_per_token", r.ep_remote_ranks_per_token},
      {"ep_bytes_per_token", r.ep_bytes_per_token},
      {"route_ms", r.route_seconds * 1e3},
      {"plan_ms", r.plan_seconds * 1e3},
      {"experts_ms", r.experts_seconds * 1e3},
      {"combine_ms", r.combine_seconds * 1e3},
      {"active_experts", r.active_experts},
      {"dropped_slots", r.dropped_slots},
      {"checked_tokens", r.checked_tokens},
      {"wrong", r.wrong},
      {"max_abs_error", r.max_abs_error},
      {"steps", r.steps},
      {"expert_load", r.expert_load},
  };
  if (!r.rank_load_before.empty()) {
    row["rank_load"] = {{"before", r.rank_load_before}, {"placement", "contiguous"}};
  }
  return row;
}

absl::Status WriteJsonReport(const std::string& path, const nlohmann::ordered_json& context,
                             const nlohmann::ordered_json& rows) {
  nlohmann::ordered_json json;
  json["context"] = context;
  json["rows"] = rows;
  return WriteFile(path, json.dump(2) + "\n", "--json");
}

absl::Status WriteBenchJson(const std::string& path, const BenchContext& x,
                            const std::vector<BenchRow>& rows) {
  nlohmann::ordered_json json_rows = nlohmann::ordered_json::array();
  for (const BenchRow& r : rows) json_rows.push_back(RowJson(r));
  return WriteJsonReport(path, ContextJson(x), json_rows);
}

absl::Status WriteBenchCsv(const std::string& path, const BenchContext& x,
                           const std::vector<BenchRow>& rows) {
  std::string text;
  const nlohmann::ordered_json context = ContextJson(x);
  for (const auto& [key, value] : context.items()) {
    absl::StrAppend(&text, "# ", key, ": ", value.dump(), "\n");
  }
  std::vector<std::string> columns;
  const nlohmann::ordered_json empty_row = RowJson(BenchRow());
  for (const auto& [key, value] : empty_row.items()) {
    if (!value.is_structured()) columns.push_back(key);
  }
  absl::StrAppend(&text, absl::StrJoin(columns, ","), "\n");
  for (const BenchRow& r : rows) {
    const nlohmann::ordered_json row = RowJson(r);
    absl::StrAppend(&text,
                    absl::StrJoin(columns, ",",
                                  [&](std::string* out, const std::string& key) {
                                    out->append(CsvField(row[key]));
                                  }),
                    "\n");
  }
  return WriteFile(path, text, "--csv");
}

}  // namespace moe::tools
