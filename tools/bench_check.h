// The correctness count of `moe bench` (#wrong): a plain float64 recomputation of sampled
// tokens from the layer's own routing decisions.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "configs/moe_config.pb.h"
#include "moe/base/tensor.h"
#include "moe/layer_weights.h"
#include "moe/moe_layer.h"

// The rule, as a literal for help texts.
#define MOE_BENCH_CHECK_RULE "|out - ref| > 1e-4*rms(ref) + 1e-4*|ref|"

namespace moe::tools {

inline constexpr double kCheckRelTolerance = 1e-4;  // of |ref|
inline constexpr double kCheckAbsTolerance = 1e-4;  // of rms(ref) over the checked elements

struct CheckResult {
  int64_t checked_tokens = 0;
  int64_t checked_elements = 0;  // checked_tokens * d_model
  int64_t wrong_elements = 0;    // output elements outside the tolerance (NaN included)
  int64_t bad_slots = 0;         // routing slots with a bad id or weight
  double max_abs_error = 0;      // over the checked elements
  double ref_rms = 0;
  std::string first_problem;  // "" when all is well, else one line

  int64_t wrong() const { return wrong_elements + bad_slots; }
};

// Checks up to `max_tokens` evenly spaced tokens of `out`, the layer's result for `hidden`
// (F32 [num_tokens, d_model], the values the layer saw), with `weights` (F32). For each
// checked token t, in float64: ref[t] = sum over kept slots j of topk_weights[t, j] *
// FFN_{topk_ids[t, j]}(x_t), plus the shared experts (scaled by sigmoid(shared_gate . x_t)
// when configured); slots over capacity (in token order, as the config's drop policy says)
// add nothing. Every routing slot of every token is checked: ids in range and distinct
// within a token, weights finite and >= 0 (and, with renormalize, summing to the routed
// scaling factor within 1e-4). Multithreaded over the checked tokens (OpenMP).
// kInvalidArgument when the shapes of `hidden` and `out` disagree with `config`.
absl::StatusOr<CheckResult> CheckLayerOutput(const config::LayerConfig& config,
                                             const MoeLayerWeights& weights, const Tensor& hidden,
                                             const LayerOutput& out, int64_t max_tokens);

}  // namespace moe::tools
