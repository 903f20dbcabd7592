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
  double gemm_gflops = 0;  // dense MatmulNT C[m, n] = A[m, k] B[n, k]^T, all threads
  int64_t gemm_m = 0;      // 256
  int64_t gemm_n = 0;      // d_ff clamped to [1024, 4096]
  int64_t gemm_k = 0;      // d_model clamped to [1024, 4096]
  double read_gbps = 0;    // summing a 256 MiB float buffer, all threads
};

// Everything the header lines and the JSON "context" say.
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
};

// One table row: one token count.
struct BenchRow {
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
};

// Useful FLOP and active-weight bytes of one forward of `config` on `tokens` tokens with
// `kept_slots` computed routed slots and `active_experts` experts receiving >= 1 slot.
double UsefulFlop(const config::LayerConfig& config, int64_t tokens, int64_t kept_slots);
double ActiveWeightBytes(const config::LayerConfig& config, int64_t active_experts);

// Measures the ceilings with the current OpenMP thread count (about half a second).
Ceilings MeasureCeilings(const config::LayerConfig& config);

// The CPU model from /proc/cpuinfo ("unknown" when unreadable).
std::string CpuModel();
// The git commit the binary was built from, or "unknown".
std::string GitCommit();

// The header lines, the column names, one row, the formulas under the table.
std::string TableHeader(const BenchContext& context);
std::string TableRow(const BenchRow& row, const Ceilings& ceilings);
std::string TableFooter();

// Writes the context and the rows as JSON to `path`; errors name the path.
absl::Status WriteBenchJson(const std::string& path, const BenchContext& context,
                            const std::vector<BenchRow>& rows);

}  // namespace moe::tools
