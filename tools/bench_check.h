// The correctness count of `moe bench` (#wrong): a plain float64 recomputation of sampled
// tokens from the layer's own routing decisions.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "configs/moe_config.pb.h"
#include "kernels/cpu/packed_gemm.h"
#include "moe/base/tensor.h"
#include "moe/layer_weights.h"
#include "moe/moe_layer.h"

// The rule, as a literal for help texts.
#define MOE_BENCH_CHECK_RULE "|out - ref| > 1e-4*rms(ref) + 1e-4*|ref|"

namespace moe::tools {

inline constexpr double kCheckRelTolerance = 1e-4;  // of |ref|
inline constexpr double kCheckAbsTolerance = 1e-4;  // of rms(ref) over the checked elements
// With int8 activations (INT4 weights): where the kernel's float32 hidden value and float64's
// fall on either side of an int8 rounding boundary (a few per token at d_ff = 14336), the
// output moves by one int8 step times a down-projection weight: up to ~1e-2 of rms(ref) per
// element. A real fault (wrong expert, scale or row) is off by O(rms).
inline constexpr double kCheckInt8ActivationAbsTolerance = 3e-2;
// With BF16 activations (BF16 weights on AVX-512 / AMX): a hidden value rounding to the other
// BF16 neighbour moves the output by one BF16 step (2^-8 relative) times a down weight: up to
// ~1e-3 of rms(ref) per element at d_ff = 1024.
inline constexpr double kCheckBf16ActivationAbsTolerance = 3e-3;

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

// How the reference models the kernels' number formats.
struct CheckOptions {
  // How each token's input and each expert's hidden row are rounded before their GEMMs, as the
  // kernels do: kInt8 to int8 steps with one scale per group of 32 (max |x| / 127, INT4
  // weights), kBF16 to BF16. The kernels' F32 hidden rows round differently from the float64
  // ones now and then (one step on one element), hence the looser tolerances.
  kernels::GemmInput activations = kernels::GemmInput::kF32;
  double abs_tolerance = kCheckAbsTolerance;  // of rms(ref)
};

// The reference weights of a layer: its own F32 weights when its experts run in F32 (nullptr
// returned), else a copy whose experts hold the values the quantized weights stand for.
std::unique_ptr<MoeLayerWeights> EffectiveLayerWeights(const MoeLayer& layer);

// The check options for a layer's expert weight format.
CheckOptions CheckOptionsFor(const MoeLayer& layer);

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
                                             const LayerOutput& out, int64_t max_tokens,
                                             const CheckOptions& options = {});

}  // namespace moe::tools
