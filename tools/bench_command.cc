// `moe bench`: time one layer on random weights and inputs, with a correctness count per row.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "moe/base/status_macros.h"
#include "moe/moe_layer.h"
#include "tools/bench_check.h"
#include "tools/bench_report.h"
#include "tools/cli.h"
#include "tools/native_weights.h"

namespace moe::tools {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

struct BenchOptions {
  std::string config_source;
  std::vector<int64_t> tokens;
  int threads = 0;
  int repeats = 0;
  int warmup = 0;
  std::string input_dist;
  int64_t check_tokens = 0;
};

// Every flag value checked before any work; errors are usage errors.
absl::StatusOr<BenchOptions> ParseBenchOptions(const std::vector<std::string>& positional) {
  if (!positional.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", positional[0],
                                                   "' (moe bench takes only flags; --config X)"));
  }
  BenchOptions o;
  o.config_source = absl::GetFlag(FLAGS_config);
  if (o.config_source.empty()) o.config_source = MOE_DEFAULT_BENCH_CONFIG;
  std::string tokens = absl::GetFlag(FLAGS_tokens);
  MOE_ASSIGN_OR_RETURN(
      o.tokens, ParseTokenCounts(tokens.empty() ? MOE_DEFAULT_BENCH_TOKENS : tokens, "tokens"));
  o.repeats = absl::GetFlag(FLAGS_repeats);
  if (o.repeats < 1 || o.repeats > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --repeats: expected 1 to 100000, got ", o.repeats));
  }
  o.warmup = absl::GetFlag(FLAGS_warmup);
  if (o.warmup < 0 || o.warmup > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --warmup: expected 0 to 100000, got ", o.warmup));
  }
  o.input_dist = absl::GetFlag(FLAGS_input_dist);
  if (o.input_dist != "normal" && o.input_dist != "uniform") {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --input_dist: expected normal or uniform, got '", o.input_dist, "'"));
  }
  o.check_tokens = absl::GetFlag(FLAGS_check_tokens);
  if (o.check_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --check_tokens: expected >= 0, got ", o.check_tokens));
  }
  MOE_ASSIGN_OR_RETURN(o.threads, ApplyThreadsFlag());
  return o;
}

// F32 [num_tokens, d_model] from (seed, num_tokens): each row count gets its own inputs.
Tensor RandomHidden(int64_t num_tokens, int64_t d_model, uint64_t seed, bool normal) {
  Tensor hidden = Tensor::Zeros(DType::kF32, {num_tokens, d_model});
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(num_tokens));
  float* p = hidden.data<float>();
  if (normal) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (int64_t i = 0; i < hidden.num_elements(); ++i) p[i] = dist(rng);
  } else {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (int64_t i = 0; i < hidden.num_elements(); ++i) p[i] = dist(rng);
  }
  return hidden;
}

// Times one token count and checks its output.
absl::StatusOr<BenchRow> BenchTokens(const MoeLayer& layer, const BenchOptions& o, uint64_t seed,
                                     int64_t num_tokens) {
  const config::LayerConfig& c = layer.config();
  const Tensor hidden = RandomHidden(num_tokens, c.d_model(), seed, o.input_dist == "normal");
  for (int i = 0; i < o.warmup; ++i) {
    MOE_RETURN_IF_ERROR(layer.Forward(hidden).status());
  }
  std::vector<double> total, route, plan, experts, combine;
  LayerOutput out;
  for (int i = 0; i < o.repeats; ++i) {
    StageTimes times;
    const Clock::time_point start = Clock::now();
    MOE_ASSIGN_OR_RETURN(out, layer.Forward(hidden, &times));
    total.push_back(Seconds(start));
    route.push_back(times.route);
    plan.push_back(times.plan);
    experts.push_back(times.experts);
    combine.push_back(times.combine);
  }
  MOE_ASSIGN_OR_RETURN(CheckResult check,
                       CheckLayerOutput(c, layer.weights(), hidden, out, o.check_tokens));

  BenchRow row;
  row.tokens = num_tokens;
  row.seconds = Median(total);
  row.route_seconds = Median(route);
  row.plan_seconds = Median(plan);
  row.experts_seconds = Median(experts);
  row.combine_seconds = Median(combine);
  row.tokens_per_second = static_cast<double>(num_tokens) / row.seconds;
  int64_t max_load = 0, sum_load = 0;
  for (int64_t load : out.expert_load) {
    max_load = std::max(max_load, load);
    sum_load += load;
    row.active_experts += load > 0 ? 1 : 0;
  }
  const double mean_load = static_cast<double>(sum_load) / c.num_experts();
  row.load_max_over_mean = mean_load > 0 ? static_cast<double>(max_load) / mean_load : 0.0;
  row.dropped_slots = out.dropped_slots;
  const int64_t kept_slots = num_tokens * c.top_k() - out.dropped_slots;
  row.gflops = UsefulFlop(c, num_tokens, kept_slots) / row.seconds / 1e9;
  row.gbps = ActiveWeightBytes(c, row.active_experts) / row.seconds / 1e9;
  row.checked_tokens = check.checked_tokens;
  row.wrong = check.wrong();
  row.max_abs_error = check.max_abs_error;
  if (row.wrong > 0) {
    std::fprintf(stderr, "moe bench: %lld tokens: %lld wrong; first: %s\n",
                 static_cast<long long>(num_tokens), static_cast<long long>(row.wrong),
                 check.first_problem.c_str());
  }
  return row;
}

}  // namespace

int BenchCommand(const std::vector<std::string>& positional) {
  absl::StatusOr<BenchOptions> options = ParseBenchOptions(positional);
  if (!options.ok()) return Fail(options.status(), kExitUsageError);
  const BenchOptions& o = *options;

  absl::StatusOr<config::LayerConfig> config = config::LoadLayerConfig(o.config_source);
  if (!config.ok()) return Fail(config.status(), kExitRuntimeError);
  const std::string json = absl::GetFlag(FLAGS_json);
  if (!json.empty() && !std::ofstream(json, std::ios::app)) {  // fail before the long part
    return Fail(absl::StrCat("--json ", json, ": cannot open for writing"), kExitRuntimeError);
  }

  BenchContext context;
  context.config = *config;
  context.config_source = o.config_source;
  context.threads = o.threads;
  context.seed = absl::GetFlag(FLAGS_seed);
  context.repeats = o.repeats;
  context.warmup = o.warmup;
  context.input_dist = o.input_dist;
  context.cpu = CpuModel();
  context.cores = omp_get_num_procs();
  context.commit = GitCommit();

  const int64_t max_tokens = *std::max_element(o.tokens.begin(), o.tokens.end());
  const double activation_bytes =
      4.0 * static_cast<double>(max_tokens) *
      static_cast<double>(4 * config->d_model() + 3 * config->top_k() * config->d_model() +
                          config->top_k() *
                              std::max(config->d_ff(), config::SharedExpertsDff(*config)));
  absl::Status fits = CheckFitsInMemory(
      4.0 * static_cast<double>(NativeWeightCount(*config)) + activation_bytes + (1 << 28),
      absl::StrCat("moe bench of ", config->name(), " (F32 weights, ", max_tokens, " tokens)"));
  if (!fits.ok()) return Fail(fits, kExitRuntimeError);

  const Clock::time_point init_start = Clock::now();
  MoeLayerWeights weights = RandomLayerWeights(*config, context.seed);
  context.weight_init_seconds = Seconds(init_start);
  context.weight_gb = 4.0 * static_cast<double>(NativeWeightCount(*config)) / 1e9;
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(*config, std::move(weights));
  if (!layer.ok()) return Fail(layer.status(), kExitRuntimeError);
  context.ceilings = MeasureCeilings(*config);

  std::fputs(TableHeader(context).c_str(), stdout);
  std::fflush(stdout);
  std::vector<BenchRow> rows;
  int64_t wrong = 0;
  for (int64_t num_tokens : o.tokens) {
    absl::StatusOr<BenchRow> row = BenchTokens(*layer, o, context.seed, num_tokens);
    if (!row.ok()) {
      return Fail(absl::StrCat(num_tokens, " tokens: ", row.status().message()), kExitRuntimeError);
    }
    std::fputs(TableRow(*row, context.ceilings).c_str(), stdout);
    std::fflush(stdout);
    wrong += row->wrong;
    rows.push_back(*row);
  }
  std::fputs(TableFooter().c_str(), stdout);

  if (!json.empty()) {
    absl::Status written = WriteBenchJson(json, context, rows);
    if (!written.ok()) return Fail(written, kExitRuntimeError);
  }
  if (wrong > 0) {
    return Fail(absl::StrCat(wrong,
                             " wrong results (see #wrong); the layer disagrees with the "
                             "float64 reference"),
                kExitRuntimeError);
  }
  return kExitOk;
}

}  // namespace moe::tools
