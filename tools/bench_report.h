// What `moe bench` measures and how it prints it: rows, context, ceilings, table, JSON.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "configs/moe_config.pb.h"

namespace moe::tools {

// Rates measured once per run that the table rates are compared with.
struct Ceilings {
  double gemm_gflops = 0;  // dense C[m, n] = A[m, k] B[n, k]^T, all threads
  std::string gemm_name;   // which GEMM: "OpenBLAS sgemm, Zen" or "plain MatmulNT"
  int64_t gemm_m = 0;      // 256
  int64_t gemm_n = 0;      // d_ff clamped to [1024, 4096]
  int64_t gemm_k = 0;      // d_model clamped to [1024, 4096]
  double read_gbps = 0;    // summing a 256 MiB float buffer, all threads
};

// Everything the header lines and the JSON / CSV "context" say.
struct BenchContext {
  config::LayerConfig config;
  std::string config_source;  // the --config value
  int threads = 0;
  uint64_t seed = 0;
  int repeats = 0;
  int warmup = 0;
  std::string input_dist;
  std::string cpu;  // /proc/cpuinfo "model name"
  int cores = 0;
  std::string commit;
  double weight_init_seconds = 0;
  double weight_gb = 0;  // all weights, F32
  Ceilings ceilings;
  std::string kernels;             // KernelsDescription of the layer's experts
  std::vector<std::string> isa;    // CpuIsaFeatures()
  int ranks = 1;                   // processes that ran the bench
  int ep_ranks = 1;                // --model_ranks: ranks the EP bytes are modelled for
  int steps = 1;                   // --steps
  double input_skew = 0;           // --input_skew
  std::string skew;                // --skew SPEC (empty: the router's own choice)
  std::string sweep;               // SweepText, "" without --sweep
  std::vector<int64_t> tokens;     // the token counts of each config's rows
  std::string hold = "none";       // --hold
  int64_t base_active_params = 0;  // CountParams of the base config
  int64_t base_total_params = 0;
  int64_t points_total = 0;  // rows the run was to produce
  bool interrupted = false;  // stopped by SIGINT before points_total rows
  std::string trace_file;    // --trace, "" when none
};

// One table row: one token count of one config.
struct BenchRow {
  std::string label;  // the sweep point, "experts=16 top_k=2"; "" without --sweep
  int64_t experts = 0;
  int64_t top_k = 0;
  int64_t d_model = 0;
  int64_t d_ff = 0;
  int64_t active_params = 0;  // top_k * expert + shared + router (CountParams)
  int64_t total_params = 0;   // num_experts * expert + shared + router
  bool held = false;          // whether --hold held a param count for this row
  double hold_deviation = 0;  // held params / base's - 1 (when held)
  int64_t tokens = 0;
  double seconds = 0;  // median forward wall time
  double tokens_per_second = 0;
  double gflops = 0;         // useful expert FLOP / seconds, see kFlopFormula
  double gbps = 0;           // active weight bytes / seconds, see kBytesFormula
  double route_seconds = 0;  // medians of the StageTimes
  double plan_seconds = 0;
  double experts_seconds = 0;
  double combine_seconds = 0;
  double load_max_over_mean = 0;  // of expert_load
  int64_t active_experts = 0;     // experts with >= 1 slot
  int64_t dropped_slots = 0;
  int64_t checked_tokens = 0;
  int64_t wrong = 0;
  double max_abs_error = 0;
  int steps = 1;
  double roofline_seconds = 0;        // RooflineSeconds
  double active_bytes_per_token = 0;  // 4 * active_params: F32 weight bytes a token touches
  int ep_ranks = 1;
  double ep_remote_ranks_per_token = 0;           // E[distinct remote destination ranks] of a token
  double ep_bytes_per_token = 0;                  // kEpBytesFormula
  std::vector<std::vector<int64_t>> expert_load;  // [steps][num_experts] slots per expert
  std::vector<int64_t> rank_load_before;  // [ep_ranks] slots per rank, all steps; empty for 1

  double roofline_percent() const { return seconds > 0 ? 100 * roofline_seconds / seconds : 0; }
};

// Formulas printed under the tables and stored in the JSON context.
inline constexpr char kRooflineFormula[] =
    "time_roofline = max(useful FLOP / dense GEMM ceiling, active weight bytes / memory read "
    "ceiling); %roof = 100 * time_roofline / time";
inline constexpr char kEpBytesFormula[] =
    "EP bytes/token = 2 * d_model * act_bytes * E[distinct remote destination ranks of a token]; "
    "experts and tokens in contiguous blocks over --model_ranks ranks, E[] over this run's routed "
    "slots";

// Useful FLOP and active-weight bytes of one forward of `config` on `tokens` tokens with
// `kept_slots` computed routed slots and `active_experts` experts receiving >= 1 slot.
double UsefulFlop(const config::LayerConfig& config, int64_t tokens, int64_t kept_slots);
double ActiveWeightBytes(const config::LayerConfig& config, int64_t active_experts);

// max(flop / GEMM ceiling, bytes / read ceiling), seconds; 0 without ceilings.
double RooflineSeconds(double flop, double bytes, const Ceilings& ceilings);

// The rank holding item `index` of `count` when they are split over `num_ranks` in contiguous
// blocks, the first count % num_ranks ranks holding one more (comm::ContiguousPlacement's
// rule). Used for experts and, in the EP model, for tokens.
int32_t ContiguousRank(int64_t index, int64_t count, int32_t num_ranks);

// Measures the ceilings with the current OpenMP thread count (about half a second).
Ceilings MeasureCeilings(const config::LayerConfig& config);

// The CPU model from /proc/cpuinfo ("unknown" when unreadable).
std::string CpuModel();
// The ISA features of /proc/cpuinfo "flags" that the CPU kernels dispatch on, among avx2,
// fma, avx512f, avx512bw, avx512_vnni, avx512_bf16, amx_tile, amx_bf16 (present ones only).
std::vector<std::string> CpuIsaFeatures();
// The features CpuIsaFeatures looks for.
const std::vector<std::string>& KnownIsaFeatures();
// The git commit the binary was built from, or "unknown".
std::string GitCommit();

// The header lines, the column names, one row, the formulas under the table.
std::string TableHeader(const BenchContext& context);
std::string TableRow(const BenchRow& row, const Ceilings& ceilings);
std::string TableFooter();

// "SWIGLU" for ACTIVATION_SWIGLU.
std::string ActivationName(const config::LayerConfig& config);

// The formulas of the default table, for the JSON context.
std::string FlopFormula();
std::string BytesFormula();

}  // namespace moe::tools
