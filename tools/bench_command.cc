// `moe bench`: time one layer (or a sweep of layers derived from it) on random weights and
// inputs, with a correctness count per row; optional JSON, CSV and trace files.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "configs/layer_config.h"
#include "moe/base/status_macros.h"
#include "moe/base/trace.h"
#include "moe/moe_layer.h"
#include "tools/balance_commands.h"
#include "tools/bench_clock.h"
#include "tools/bench_compare.h"
#include "tools/bench_cuda.h"
#include "tools/bench_ep.h"
#include "tools/bench_output.h"
#include "tools/bench_progress.h"
#include "tools/bench_report.h"
#include "tools/bench_runner.h"
#include "tools/bench_sweep.h"
#include "tools/cli.h"
#include "tools/kernel_flags.h"
#include "tools/native_weights.h"

namespace moe::tools {
namespace {

struct BenchOptions {
  std::string config_source;
  std::vector<int64_t> tokens;
  int threads = 0;
  RowOptions row;
  std::string input_dist;
  std::vector<SweepDim> sweep;  // empty without --sweep
  Hold hold = Hold::kNone;
  std::string json, csv, trace;
  int ep = 1;  // --ep: real expert parallelism over MPI ranks
  experts::ExpertKernelOptions kernels;
  bool compare = false;
  std::vector<kernels::WeightFormat> formats;  // --weight_dtype (several only with --compare)
};

absl::Status CheckRange(const char* flag, int64_t value, int64_t low, int64_t high) {
  if (value >= low && value <= high) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("flag --", flag, ": expected ", low, " to ", high, ", got ", value));
}

// Every flag value checked before any work; errors are usage errors.
absl::StatusOr<BenchOptions> ParseBenchOptions(const std::vector<std::string>& positional) {
  if (!positional.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", positional[0],
                                                   "' (moe bench takes only flags; --config X)"));
  }
  BenchOptions o;
  o.config_source = absl::GetFlag(FLAGS_config);
  if (o.config_source.empty()) o.config_source = MOE_DEFAULT_BENCH_CONFIG;
  if (FlagGiven("sweep")) {
    MOE_ASSIGN_OR_RETURN(o.sweep, ParseSweep(absl::GetFlag(FLAGS_sweep)));
  }
  MOE_ASSIGN_OR_RETURN(o.hold, ParseHold(absl::GetFlag(FLAGS_hold)));
  if (o.hold != Hold::kNone && o.sweep.empty()) {
    return absl::InvalidArgumentError("flag --hold: needs --sweep (it sets d_ff per sweep point)");
  }
  const auto tokens_dim = std::find_if(o.sweep.begin(), o.sweep.end(),
                                       [](const SweepDim& d) { return d.name == "tokens"; });
  std::string tokens = absl::GetFlag(FLAGS_tokens);
  if (tokens_dim != o.sweep.end()) {
    if (FlagGiven("tokens")) {
      return absl::InvalidArgumentError(
          "flag --tokens: give the token counts with --tokens or --sweep tokens=..., not both");
    }
    o.tokens = tokens_dim->values;
  } else {
    MOE_ASSIGN_OR_RETURN(
        o.tokens, ParseTokenCounts(tokens.empty() ? MOE_DEFAULT_BENCH_TOKENS : tokens, "tokens"));
  }
  RowOptions& r = o.row;
  r.repeats = absl::GetFlag(FLAGS_repeats);
  MOE_RETURN_IF_ERROR(CheckRange("repeats", r.repeats, 1, 100000));
  r.warmup = absl::GetFlag(FLAGS_warmup);
  MOE_RETURN_IF_ERROR(CheckRange("warmup", r.warmup, 0, 100000));
  r.steps = absl::GetFlag(FLAGS_steps);
  MOE_RETURN_IF_ERROR(CheckRange("steps", r.steps, 1, 100000));
  r.ep_ranks = absl::GetFlag(FLAGS_model_ranks);
  MOE_RETURN_IF_ERROR(CheckRange("model_ranks", r.ep_ranks, 1, 4096));
  o.input_dist = absl::GetFlag(FLAGS_input_dist);
  if (o.input_dist != "normal" && o.input_dist != "uniform") {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --input_dist: expected normal or uniform, got '", o.input_dist, "'"));
  }
  r.normal_inputs = o.input_dist == "normal";
  r.input_skew = absl::GetFlag(FLAGS_input_skew);
  if (!(r.input_skew >= 0 && r.input_skew <= 1000)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --input_skew: expected 0 to 1000, got ", r.input_skew));
  }
  if (const std::string skew = absl::GetFlag(FLAGS_skew); !skew.empty()) {
    MOE_ASSIGN_OR_RETURN(r.skew, gating::ParseSkewSpec(skew));
  }
  r.check_tokens = absl::GetFlag(FLAGS_check_tokens);
  if (r.check_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --check_tokens: expected >= 0, got ", r.check_tokens));
  }
  r.seed = absl::GetFlag(FLAGS_seed);
  o.json = absl::GetFlag(FLAGS_json);
  o.csv = absl::GetFlag(FLAGS_csv);
  o.trace = absl::GetFlag(FLAGS_trace);
  o.ep = absl::GetFlag(FLAGS_ep);
  MOE_RETURN_IF_ERROR(CheckRange("ep", o.ep, 1, 4096));
  if (o.ep > 1) {
    for (const char* flag : {"sweep", "hold", "csv", "model_ranks"}) {
      if (FlagGiven(flag)) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", flag, " is not supported with --ep"));
      }
    }
    if (!(absl::GetFlag(FLAGS_timeout) > 0)) {
      return absl::InvalidArgumentError("flag --timeout: expected seconds > 0");
    }
    if (absl::GetFlag(FLAGS_rebalance) && !FlagGiven("steps")) r.steps = 8;
    if (absl::GetFlag(FLAGS_rebalance) && r.steps < 2) {
      return absl::InvalidArgumentError("flag --rebalance: needs --steps >= 2");
    }
  } else {
    for (const char* flag : {"placement", "rebalance", "timeout"}) {
      if (FlagGiven(flag)) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", flag, " needs --ep N > 1"));
      }
    }
  }
  MOE_ASSIGN_OR_RETURN(o.threads, ApplyThreadsFlag());
  MOE_RETURN_IF_ERROR(ApplyIsaFlag());
  MOE_ASSIGN_OR_RETURN(o.formats, WeightFormatsFlag());
  o.compare = absl::GetFlag(FLAGS_compare);
  if (o.formats.size() > 1 && !o.compare) {
    return absl::InvalidArgumentError(
        "flag --weight_dtype: a list of formats needs --compare (one format per layer)");
  }
  if (o.compare && (o.ep > 1 || !o.sweep.empty())) {
    return absl::InvalidArgumentError("flag --compare: not supported with --ep or --sweep");
  }
  if (o.compare && (!o.csv.empty() || !o.trace.empty())) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", o.csv.empty() ? "trace" : "csv",
                     ": not supported with --compare (its table goes to stdout and --json)"));
  }
  o.kernels.weight_format = o.formats.front();
  return o;
}

// The memory one point needs: F32 weights, activations of the largest token count, slack.
double PointBytes(const config::LayerConfig& c, int64_t max_tokens) {
  const double activation_bytes =
      4.0 * static_cast<double>(max_tokens) *
      static_cast<double>(4 * c.d_model() + 3 * c.top_k() * c.d_model() +
                          c.top_k() * std::max(c.d_ff(), config::SharedExpertsDff(c)));
  return 4.0 * static_cast<double>(NativeWeightCount(c)) + activation_bytes + (1 << 28);
}

absl::StatusOr<MoeLayer> MakeLayer(const SweepPoint& point, uint64_t seed,
                                   const experts::ExpertKernelOptions& kernels) {
  trace::TraceScope scope([&] { return absl::StrCat("init weights ", point.label); }, "bench");
  return MoeLayer::Create(point.config, RandomLayerWeights(point.config, seed),
                          {.experts = kernels});
}

// Writes the files asked for; the first error.
absl::Status WriteOutputs(const BenchOptions& o, const BenchContext& context,
                          const std::vector<BenchRow>& rows) {
  if (!o.json.empty()) MOE_RETURN_IF_ERROR(WriteBenchJson(o.json, context, rows));
  if (!o.csv.empty()) MOE_RETURN_IF_ERROR(WriteBenchCsv(o.csv, context, rows));
  if (!o.trace.empty()) {
    trace::Disable();
    absl::Status written = trace::WriteJson(o.trace);
    if (!written.ok()) return absl::Status(written.code(), absl::StrCat("--", written.message()));
  }
  return absl::OkStatus();
}

}  // namespace

int BenchCommand(const std::vector<std::string>& positional) {
  absl::StatusOr<bool> cuda_backend = CudaBackendRequested();
  if (!cuda_backend.ok()) return Fail(cuda_backend.status(), kExitUsageError);
  if (*cuda_backend) return CudaBenchCommand(positional);  // tools/bench_cuda.cc
  absl::StatusOr<BenchOptions> options = ParseBenchOptions(positional);
  if (!options.ok()) return Fail(options.status(), kExitUsageError);
  const BenchOptions& o = *options;
  const bool sweep = !o.sweep.empty();

  absl::StatusOr<config::LayerConfig> config = config::LoadLayerConfig(o.config_source);
  if (!config.ok()) return Fail(config.status(), kExitRuntimeError);
  if (const absl::Status fits = SkewSelection(o.row.skew, *config, o.row.seed).status();
      !fits.ok()) {
    return Fail(fits, kExitUsageError);
  }
  if (o.ep > 1) {
    EpBenchOptions ep;
    ep.config = *config;
    ep.config_source = o.config_source;
    ep.tokens = o.tokens;
    ep.row = o.row;
    ep.threads = o.threads;
    ep.ep = o.ep;
    ep.timeout_seconds = absl::GetFlag(FLAGS_timeout);
    ep.placement_file = absl::GetFlag(FLAGS_placement);
    ep.rebalance = absl::GetFlag(FLAGS_rebalance);
    ep.json = o.json;
    ep.trace = o.trace;
    return RunEpBench(ep);
  }
  if (o.compare) {
    CompareOptions compare;
    compare.config = *config;
    compare.config_source = o.config_source;
    compare.tokens = o.tokens;
    compare.formats = o.formats;
    compare.threads = o.threads;
    compare.repeats = o.row.repeats;
    compare.warmup = o.row.warmup;
    compare.steps = FlagGiven("steps") ? o.row.steps : 4;
    compare.normal_inputs = o.row.normal_inputs;
    compare.input_skew = o.row.input_skew;
    compare.skew = o.row.skew;
    compare.check_tokens = o.row.check_tokens;
    compare.seed = o.row.seed;
    compare.json = o.json;
    return RunCompareBench(compare);
  }
  absl::StatusOr<std::vector<SweepPoint>> points = ExpandSweep(*config, o.sweep, o.hold);
  if (!points.ok()) return Fail(points.status(), kExitUsageError);
  for (const auto& [flag, path] :
       {std::pair<const char*, std::string>{"json", o.json}, {"csv", o.csv}, {"trace", o.trace}}) {
    if (!path.empty() && !std::ofstream(path, std::ios::app)) {  // fail before the long part
      return Fail(absl::StrCat("--", flag, " ", path, ": cannot open for writing"),
                  kExitRuntimeError);
    }
  }

  BenchContext context;
  context.config = *config;
  context.config_source = o.config_source;
  context.threads = o.threads;
  context.seed = o.row.seed;
  context.repeats = o.row.repeats;
  context.warmup = o.row.warmup;
  context.input_dist = o.input_dist;
  context.cpu = CpuModel();
  context.cores = omp_get_num_procs();
  context.commit = GitCommit();
  context.isa = CpuIsaFeatures();
  context.ep_ranks = o.row.ep_ranks;
  context.steps = o.row.steps;
  context.input_skew = o.row.input_skew;
  context.skew = SkewText(o.row.skew);
  context.sweep = sweep ? SweepText(o.sweep) : "";
  context.tokens = o.tokens;
  context.hold = HoldName(o.hold);
  context.base_active_params = CountParams(*config).active;
  context.base_total_params = CountParams(*config).total;
  context.points_total = static_cast<int64_t>(points->size() * o.tokens.size());
  context.trace_file = o.trace;

  const int64_t max_tokens = *std::max_element(o.tokens.begin(), o.tokens.end());
  const SweepPoint* largest = &points->front();
  for (const SweepPoint& p : *points) {
    if (PointBytes(p.config, max_tokens) > PointBytes(largest->config, max_tokens)) largest = &p;
  }
  absl::Status fits = CheckFitsInMemory(
      PointBytes(largest->config, max_tokens),
      absl::StrCat("moe bench of ", config->name(), largest->label.empty() ? "" : " ",
                   largest->label, " (F32 weights, ", max_tokens, " tokens)"));
  if (!fits.ok()) return Fail(fits, kExitRuntimeError);

  InstallInterruptHandler();  // from here on, Ctrl-C ends the run with the rows done so far
  std::optional<MoeLayer> layer;
  if (!sweep) {  // the header reports the weights' init time
    const Clock::time_point init_start = Clock::now();
    absl::StatusOr<MoeLayer> made = MakeLayer(points->front(), context.seed, o.kernels);
    if (!made.ok()) return Fail(made.status(), kExitRuntimeError);
    layer.emplace(*std::move(made));
    context.weight_init_seconds = Seconds(init_start);
    context.weight_gb = 4.0 * static_cast<double>(NativeWeightCount(*config)) / 1e9;
  }
  context.ceilings = MeasureCeilings(*config);
  context.kernels = KernelsDescription(o.kernels);

  if (!o.trace.empty()) trace::Enable();
  std::fputs(sweep ? SweepTableHeader(context).c_str() : TableHeader(context).c_str(), stdout);
  std::fflush(stdout);
  Progress progress(context.points_total, sweep);
  std::vector<BenchRow> rows;
  int64_t wrong = 0;
  for (const SweepPoint& point : *points) {
    if (InterruptRequested()) break;
    if (sweep) {
      layer.reset();
      absl::StatusOr<MoeLayer> made = MakeLayer(point, context.seed, o.kernels);
      if (!made.ok()) return Fail(made.status(), kExitRuntimeError);
      layer.emplace(*std::move(made));
    }
    const std::unique_ptr<MoeLayerWeights> check_weights = EffectiveLayerWeights(*layer);
    for (int64_t num_tokens : o.tokens) {
      if (InterruptRequested()) break;
      const std::string label =
          absl::StrCat(point.label, point.label.empty() ? "" : " ", "tokens=", num_tokens);
      absl::StatusOr<BenchRow> row;
      {
        trace::TraceScope scope([&] { return absl::StrCat("point ", label); }, "bench");
        RowOptions row_options = o.row;
        row_options.check_weights = check_weights.get();
        row_options.check = CheckOptionsFor(*layer);
        row = MeasureRow(*layer, row_options, num_tokens, context.ceilings);
      }
      if (!row.ok()) {
        progress.Finish();
        return Fail(absl::StrCat(label, ": ", row.status().message()), kExitRuntimeError);
      }
      DescribePoint(point, o.hold, &*row);
      progress.ClearLine();
      std::fputs(
          sweep ? SweepTableRow(*row, context).c_str() : TableRow(*row, context.ceilings).c_str(),
          stdout);
      std::fflush(stdout);
      wrong += row->wrong;
      rows.push_back(*std::move(row));
      progress.PointDone(static_cast<int64_t>(rows.size()), label);
    }
  }
  progress.Finish();
  std::fputs(sweep ? SweepTableFooter(context).c_str() : TableFooter().c_str(), stdout);
  std::fflush(stdout);

  context.interrupted =
      InterruptRequested() && static_cast<int64_t>(rows.size()) < context.points_total;
  absl::Status written = WriteOutputs(o, context, rows);
  if (!written.ok()) return Fail(written, kExitRuntimeError);
  if (context.interrupted) {
    std::vector<std::string> files;
    for (const std::string& f : {o.json, o.csv, o.trace}) {
      if (!f.empty()) files.push_back(f);
    }
    std::fprintf(stderr, "moe bench: interrupted after %zu of %lld points%s%s\n", rows.size(),
                 static_cast<long long>(context.points_total), files.empty() ? "" : "; wrote ",
                 absl::StrJoin(files, ", ").c_str());
    return kExitInterrupted;
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
