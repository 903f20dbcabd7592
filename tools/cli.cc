#include "tools/cli.h"

#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "configs/presets.h"
#include "tools/balance_commands.h"
#include "tools/bench_check.h"
#include "tools/bench_cuda.h"

ABSL_FLAG(std::string, config, "",
          "Layer config: a preset name (see below) or a text-format LayerConfig file. "
          "bench: default " MOE_DEFAULT_BENCH_CONFIG ".");
ABSL_FLAG(std::string, weights, "",
          "Native weights safetensors file (run: read; init: written). Tensors: router, "
          "selection_bias, experts.{gate,up,down}, shared.{gate,up,down}, shared_gate.");
ABSL_FLAG(std::string, model, "",
          "Hugging Face model folder (config.json + model.safetensors[.index.json]).");
ABSL_FLAG(int32_t, layer, -1, "Decoder layer index to load from --model.");
ABSL_FLAG(std::string, input, "",
          "Input safetensors file holding hidden_states [num_tokens, d_model], F32 or BF16.");
ABSL_FLAG(std::string, output, "",
          "run: output safetensors file: output [num_tokens, d_model] F32, topk_ids [num_tokens, "
          "top_k] I32, topk_weights [num_tokens, top_k] F32. plan: the placement, written as "
          "text-format configs/placement.proto.");
ABSL_FLAG(int32_t, threads, 0, "OpenMP threads; 0 = all cores (or OMP_NUM_THREADS).");
ABSL_FLAG(
    uint64_t, seed, 1,
    "Seed of the random weights and of bench's inputs; plan/sim: of the --skew expert order.");
ABSL_FLAG(std::string, dtype, "",
          "Storage dtype of the written weights: f32 or bf16; default the config's weight_dtype.");
ABSL_FLAG(std::string, tokens, "",
          "Comma-separated token counts, one table row each (sim: tokens per rank). bench "
          "default " MOE_DEFAULT_BENCH_TOKENS ".");
ABSL_FLAG(int32_t, repeats, 5, "Timed forwards per row; the median is reported.");
ABSL_FLAG(int32_t, warmup, 1, "Untimed forwards before the timed ones, per row.");
ABSL_FLAG(std::string, json, "",
          "Also write the table and its context as JSON to this file (with per-step expert "
          "loads).");
ABSL_FLAG(std::string, input_dist, "normal",
          "Distribution of the random hidden states: normal (mean 0, sd 1) or uniform [-1, 1).");
ABSL_FLAG(int32_t, check_tokens, 16,
          "Tokens per row (evenly spaced) checked against the float64 reference; 0 = none.");
ABSL_FLAG(std::string, sweep, "",
          "DIM=V1,V2,... over experts, top_k, d_ff, d_model or tokens; repeat the flag for a "
          "grid of configs derived from --config (one row per point).");
ABSL_FLAG(std::string, hold, "none",
          "With --sweep: none, active-params (top_k*expert + shared + router) or total-params "
          "(experts*expert + shared + router) held at the base config's count by solving d_ff "
          "(within 1%).");
ABSL_FLAG(int32_t, model_ranks, 1,
          "Ranks of the expert-parallel traffic model (single process): bytes a token would "
          "move with experts in contiguous blocks over N ranks (1 = none).");
ABSL_FLAG(int32_t, ep, 1,
          "Expert parallelism over N MPI ranks (launch with mpirun -np N): each rank holds its "
          "experts and a contiguous block of the tokens (1 = single process).");
ABSL_FLAG(double, timeout, 60, "With --ep: seconds each collective waits for a peer.");
ABSL_FLAG(bool, rebalance, false,
          "bench with --ep: run the rebalance policy over the --steps (default 8 with it) and "
          "report rank load, throughput before/after and the bytes moved.");
ABSL_FLAG(int32_t, steps, 1,
          "Input batches per row, each with fresh random hidden states; expert loads are "
          "recorded per step.");
ABSL_FLAG(double, input_skew, 0,
          "Adds skew*u to every hidden state (u a fixed random vector), concentrating the "
          "routing on fewer experts; 0 = none.");
ABSL_FLAG(std::string, csv, "", "Also write the rows and the run's context as CSV to this file.");
ABSL_FLAG(std::string, trace, "",
          "Write a Chrome/Perfetto trace (JSON trace events: pid = rank, tid = OpenMP thread) "
          "of the timed run to this file.");

namespace moe::tools {
namespace {

std::set<std::string>& GivenFlags() {
  static auto* given = new std::set<std::string>();
  return *given;
}

int HelpCommand(const std::vector<std::string>& positional);

// Flags whose values accumulate when given more than once.
bool IsRepeatable(absl::string_view name) { return name == "sweep"; }

bool AcceptsFlag(const Command& command, absl::string_view name) {
  return std::any_of(command.flags.begin(), command.flags.end(),
                     [&](const char* f) { return name == f; });
}

// "  --name        help (default: x)", wrapped at 100 columns under the help column.
std::string FlagHelpLine(absl::string_view name) {
  constexpr size_t kHelpColumn = 18;
  constexpr size_t kWidth = 100;
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  std::string help = flag == nullptr ? "" : flag->Help();
  if (flag != nullptr && !flag->DefaultValue().empty() && flag->DefaultValue() != "-1") {
    absl::StrAppend(&help, " (default: ", flag->DefaultValue(), ")");
  }
  std::string line = absl::StrCat("  --", name);
  line.resize(std::max(kHelpColumn, line.size() + 2), ' ');
  std::string text;
  for (absl::string_view word : absl::StrSplit(help, ' ', absl::SkipEmpty())) {
    if (line.size() + word.size() > kWidth && line.size() > kHelpColumn) {
      absl::StrAppend(&text, line, "\n");
      line = std::string(kHelpColumn, ' ');
    }
    absl::StrAppend(&line, line.size() > kHelpColumn && line.back() != ' ' ? " " : "", word);
  }
  return absl::StrCat(text, line, "\n");
}

}  // namespace

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"run",
       "moe run --model DIR --layer N --input IN.safetensors --output OUT.safetensors\n"
       "moe run --config CONFIG --weights W.safetensors --input IN.safetensors "
       "--output OUT.safetensors",
       "Run one MoE layer forward on hidden states read from a safetensors file.",
       "Loads the layer from a Hugging Face folder (--model, --layer) or from a config and a\n"
       "native weights file (--config, --weights; create one with `moe init`). Reads the\n"
       "tensor hidden_states, writes output, topk_ids and topk_weights, prints one summary line.",
       {"model", "layer", "config", "weights", "input", "output", "threads", "ep", "placement",
        "timeout", "weight_dtype", "isa", "backend"},
       &RunCommand},
      {"init",
       "moe init --config CONFIG --weights OUT.safetensors [--seed S] [--dtype f32|bf16]",
       "Write a native weights file with deterministic random weights for a config.",
       "The weights are RandomLayerWeights(config, seed): uniform in +-1/sqrt(fan_in).",
       {"config", "weights", "seed", "dtype"},
       &InitCommand},
      {"bench",
       "moe bench [--config CONFIG] [--tokens 1,16,128] [--threads N] [--seed S]\n"
       "          [--repeats R] [--warmup W] [--steps S] [--json FILE] [--csv FILE]\n"
       "          [--trace FILE] [--sweep DIM=V1,V2,... ...] [--hold active-params|total-params]\n"
       "          [--model_ranks N] [--skew SPEC] [--ep N [--placement FILE] [--rebalance]\n"
       "          [--timeout S]] [--weight_dtype f32|bf16|int8|int4]\n"
       "          [--isa auto|amx|avx512|avx2|portable]\n"
       "          [--compare [--weight_dtype f32,bf16,int8,int4] [--json FILE]]",
       "Benchmark one layer on random weights and inputs, with a correctness count per row.",
       "Per token count: W warm-up forwards, then R timed ones on each of S input batches\n"
       "(--steps); the median is reported.\n"
       "Routing uses the real router. #wrong: up to --check_tokens evenly spaced tokens are\n"
       "recomputed in float64 from the layer's own top-k ids and weights (y = sum_j w_j\n"
       "FFN_{e_j}(x) + shared experts; dropped slots add nothing); an element is wrong when\n"
       "  " MOE_BENCH_CHECK_RULE "\n"
       "Routing slots with an out-of-range or repeated id, or a non-finite or negative weight\n"
       "(or renormalized weights not summing to the scaling factor) count as wrong too.\n"
       "Exits 1 when any #wrong > 0.\n\n"
       "--skew SPEC draws each token's experts from SPEC (uniform, zipf:S, hot:N:P,\n"
       "trace:FILE) and shapes its hidden state so that the real router selects them; with\n"
       "--compare it adds a pass of rows routed so (routing column: SPEC).\n\n"
       "--sweep runs a grid of configs derived from --config (tokens innermost) and prints\n"
       "tokens/s, GFLOP/s, % of the roofline, active weight bytes per token, expert load\n"
       "max/mean and the bytes a token would move under --model_ranks N ranks; --hold keeps the "
       "active\n"
       "or total params of the base by solving d_ff. Progress goes to stderr. Ctrl-C stops\n"
       "after the current row, writes the finished rows to --json/--csv/--trace and exits 130.\n"
       "Plot the JSON with tools/plot_bench.py.\n\n"
       "--ep N (under mpirun -np N) runs the real expert-parallel layer: rank r holds its\n"
       "experts (contiguous blocks, or --placement FILE) and tokens [r*T/N ...) in contiguous\n"
       "blocks (the first T % N ranks one more); rank 0 prints per-rank expert rows, bytes,\n"
       "all-to-all time, algbw/busbw (busbw = algbw*(n-1)/n) and MPI_Alltoallv's busbw at the\n"
       "same bytes (--skew applies too). --rebalance feeds each step's expert loads to the\n"
       "rebalance policy.\n\n"
       "--backend cuda (GPU 0; default --config " MOE_DEFAULT_CUDA_BENCH_CONFIG
       " --tokens " MOE_DEFAULT_CUDA_BENCH_TOKENS ") times the CUDA layer with the cuBLAS grouped\n"
       "GEMM baseline and the sm90 kernel: TFLOP/s against dense cuBLAS GEMMs of the same FLOPs\n"
       "and GB/s of active expert weights against a device-to-device copy, both measured in the\n"
       "same run; takes --config, --tokens, --repeats, --warmup, --seed.",
       {"config",       "tokens",       "threads",     "seed",       "repeats",
        "warmup",       "steps",        "json",        "csv",        "trace",
        "sweep",        "hold",         "model_ranks", "ep",         "placement",
        "skew",         "rebalance",    "timeout",     "input_dist", "input_skew",
        "check_tokens", "weight_dtype", "isa",         "compare",    "backend"},
       &BenchCommand},
      {"validate",
       "moe validate CONFIG",
       "Check a config (preset name or .textproto file); print it with every default filled in.",
       "",
       {},
       &ValidateCommand},
      PlanCommandEntry(),
      SimCommandEntry(),
      {"help", "moe help [COMMAND]", "Show this help, or one command's.", "", {}, &HelpCommand},
  };
  return *commands;
}

namespace {

int HelpCommand(const std::vector<std::string>& positional) {
  if (positional.size() > 1) {
    return Fail(absl::StrCat("unexpected argument '", positional[1], "'"), kExitUsageError);
  }
  if (positional.empty()) {
    std::fputs(HelpText(nullptr).c_str(), stdout);
    return kExitOk;
  }
  for (const Command& command : Commands()) {
    if (positional[0] == command.name) {
      std::fputs(HelpText(&command).c_str(), stdout);
      return kExitOk;
    }
  }
  return Fail(absl::StrCat("unknown command '", positional[0], "' (try `moe help`)"),
              kExitUsageError);
}

}  // namespace

std::string HelpText(const Command* command) {
  std::string text;
  if (command != nullptr) {
    absl::StrAppend(&text, "Usage:\n  ", absl::StrReplaceAll(command->synopsis, {{"\n", "\n  "}}),
                    "\n\n", command->summary, "\n");
    if (*command->details != '\0') absl::StrAppend(&text, command->details, "\n");
    if (!command->flags.empty()) absl::StrAppend(&text, "\nFlags:\n");
    for (const char* flag : command->flags) absl::StrAppend(&text, FlagHelpLine(flag));
  } else {
    absl::StrAppend(&text,
                    "moe: run, benchmark and check Mixture-of-Experts layers.\n\n"
                    "Usage: moe COMMAND [FLAGS] [ARGS]   (moe help COMMAND for details)\n\n"
                    "Commands:\n");
    for (const Command& c : Commands()) {
      absl::StrAppend(&text, "  ", c.name, std::string(10 - std::string(c.name).size(), ' '),
                      c.summary, "\n");
    }
    for (const Command& c : Commands()) {
      absl::StrAppend(&text, "\n", c.synopsis, "\n");
      for (const char* flag : c.flags) absl::StrAppend(&text, FlagHelpLine(flag));
    }
  }
  std::vector<std::string> presets;
  for (const auto& preset : config::EmbeddedPresets()) presets.emplace_back(preset.name);
  absl::StrAppend(
      &text, "\nFlags take --name=value or --name value.\nPresets: ", absl::StrJoin(presets, ", "),
      ".\nExit status: 0 success, 1 runtime error (file, config, computation, "
      "#wrong > 0),\n"
      "             2 usage error (flag, value, argument), 130 bench stopped by Ctrl-C\n"
      "             (after writing the rows it finished).\n");
  return text;
}

absl::StatusOr<std::vector<std::string>> ParseFlags(const Command& command,
                                                    const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      positional.insert(positional.end(), args.begin() + static_cast<long>(i) + 1, args.end());
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      positional.push_back(arg);
      continue;
    }
    absl::string_view body(arg);
    body.remove_prefix(body.size() > 2 && body[1] == '-' ? 2 : 1);
    const size_t eq = body.find('=');
    const bool has_value = eq != absl::string_view::npos;
    std::string name = absl::StrReplaceAll(body.substr(0, eq), {{"-", "_"}});
    std::string value = has_value ? std::string(body.substr(eq + 1)) : "";
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) {
        flag = negated;
        name = name.substr(2);
        value = "false";
      }
    }
    const bool known_anywhere =
        flag != nullptr && std::any_of(Commands().begin(), Commands().end(),
                                       [&](const Command& c) { return AcceptsFlag(c, name); });
    if (!known_anywhere) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " (see `moe help ", command.name, "`)"));
    }
    if (!AcceptsFlag(command, name)) {
      return absl::InvalidArgumentError(absl::StrCat("flag --", name, " is not used by `moe ",
                                                     command.name, "` (see `moe help ",
                                                     command.name, "`)"));
    }
    if (!has_value && value.empty()) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
      }
    }
    if (IsRepeatable(name) && GivenFlags().count(name) > 0) {
      value = absl::StrCat(flag->CurrentValue(), ";", value);
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", name, ": bad value '", value, "': ", error));
    }
    GivenFlags().insert(name);
  }
  return positional;
}

bool FlagGiven(absl::string_view name) { return GivenFlags().count(std::string(name)) > 0; }

int Fail(absl::string_view message, int exit_code) {
  std::string line = absl::StrReplaceAll(message, {{"\r\n", "; "}, {"\n", "; "}});
  std::fprintf(stderr, "moe: error: %s\n", line.c_str());
  return exit_code;
}

int Fail(const absl::Status& status, int exit_code) { return Fail(status.message(), exit_code); }

absl::StatusOr<int> ApplyThreadsFlag() {
  const int32_t threads = absl::GetFlag(FLAGS_threads);
  if (threads < 0 || threads > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --threads: expected 0 (all cores) to 4096, got ", threads));
  }
  if (threads > 0) omp_set_num_threads(threads);
  return omp_get_max_threads();
}

absl::Status CheckFitsInMemory(double bytes, absl::string_view what) {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") {
      if (bytes <= kib * 1024.0) return absl::OkStatus();
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: needs %.1f GB of memory, only %.1f GB available", what, bytes / 1e9,
                          kib * 1024.0 / 1e9));
    }
    meminfo.ignore(1 << 10, '\n');
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> ParseTokenCounts(absl::string_view text,
                                                      absl::string_view flag) {
  std::vector<int64_t> counts;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1 || n > (int64_t{1} << 24)) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", flag, ": expected comma-separated token counts in [1, ",
                       int64_t{1} << 24, "], got '", part, "' in '", text, "'"));
    }
    counts.push_back(n);
  }
  return counts;
}

}  // namespace moe::tools
