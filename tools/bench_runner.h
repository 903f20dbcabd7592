// One row of `moe bench`: timed forwards of one layer on one token count, with the correctness
// count, expert loads per step and the expert-parallel traffic model.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "gating/routing_skew.h"
#include "moe/base/tensor.h"
#include "moe/moe_layer.h"
#include "tools/bench_check.h"
#include "tools/bench_report.h"
#include "tools/bench_sweep.h"

namespace moe::tools {

struct RowOptions {
  int repeats = 1;            // timed forwards per step
  int warmup = 0;             // untimed forwards before the first step
  int steps = 1;              // input batches, each with fresh random hidden states
  bool normal_inputs = true;  // N(0, 1), else uniform [-1, 1)
  double input_skew = 0;      // see RandomHidden
  // --skew SPEC, parsed once (a trace file is read then); none: the router's own choice.
  std::optional<gating::SkewSpec> skew;
  int64_t check_tokens = 0;  // tokens of the first step checked in float64
  int32_t ep_ranks = 1;      // ranks of the EP traffic model
  uint64_t seed = 1;
  // The #wrong reference: weights (null: the layer's own F32 weights) and number-format model.
  const MoeLayerWeights* check_weights = nullptr;
  CheckOptions check;
};

// The median (mean of the middle two for an even count); 0 for none.
double Median(std::vector<double> values);

// F32 [num_tokens, d_model], a function of (seed, num_tokens, step) only: N(0, 1) or uniform
// [-1, 1) entries, plus input_skew * u for one fixed N(0, 1) vector u [d_model] of the seed
// (every token leans the same way, so the router favours some experts). Step 0 with no skew
// is what `moe bench` has always used.
Tensor RandomHidden(int64_t num_tokens, int64_t d_model, uint64_t seed, int step, bool normal,
                    double input_skew);

// The --skew spec as given, "" for none.
std::string SkewText(const std::optional<gating::SkewSpec>& spec);

// --skew SPEC for a layer config: the spec's selection (seeded by `seed`), nullopt for no
// spec. kInvalidArgument naming --skew and the spec when it does not fit the config (hot:N:P
// with N > experts, a trace of another expert count).
absl::StatusOr<std::optional<gating::SkewedSelection>> SkewSelection(
    const std::optional<gating::SkewSpec>& spec, const config::LayerConfig& config, uint64_t seed);

// Draws the experts of every token of `hidden` [T, d_model] from `skew` (on zero logits) and
// reshapes the token's hidden state so that the real router selects them:
// x = 0.1 * x + 4 * sum_j Wr[e_j] / |Wr[e_j]|^2 (random router rows are nearly orthogonal, so
// the drawn experts' logits are ~4 and the others' ~0). `first_token`: the global index of row
// 0, so that every token draws differently.
absl::Status ApplySkew(const gating::SkewedSelection& skew, const config::LayerConfig& config,
                       const Tensor& router, uint64_t first_token, Tensor* hidden);

// The config fields of a row: label, sizes, param counts, hold deviation, active bytes.
void DescribePoint(const SweepPoint& point, Hold hold, BenchRow* row);

// Runs `warmup` forwards, then for each step `repeats` timed forwards on that step's inputs.
// Time and stage columns: medians over all timed forwards. Loads: expert_load per step;
// load_max_over_mean, GFLOP/s, GB/s and the roofline from the mean over steps; active_experts
// and dropped_slots of the first step. #wrong: the first step's output (CheckLayerOutput).
// EP model: tokens and experts in contiguous blocks over `ep_ranks`; for each token, the
// distinct ranks other than its own that hold one of its top-k experts. Trace scopes
// ("forward", "check") when tracing is on. Only the timing fields depend on the clock.
absl::StatusOr<BenchRow> MeasureRow(const MoeLayer& layer, const RowOptions& options,
                                    int64_t num_tokens, const Ceilings& ceilings);

}  // namespace moe::tools
