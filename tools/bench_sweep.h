// Sweeps of `moe bench`: a grid of layer configs derived from one base config, optionally
// holding the active or the total parameter count fixed by solving for d_ff.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "configs/moe_config.pb.h"

namespace moe::tools {

// What a sweep keeps fixed while the swept dimensions change.
enum class Hold {
  kNone,          // d_ff as the base config (or the d_ff dimension) says
  kActiveParams,  // top_k * expert_params(d_ff) + shared + router = the base's
  kTotalParams,   // num_experts * expert_params(d_ff) + shared + router = the base's
};

// Largest |held params / base held params - 1| a grid point may have.
inline constexpr double kHoldTolerance = 0.01;

// "none" (also ""), "active-params", "total-params"; kInvalidArgument naming --hold.
absl::StatusOr<Hold> ParseHold(absl::string_view text);
const char* HoldName(Hold hold);

// The dimensions a sweep may vary.
inline constexpr const char* kSweepDims[] = {"experts", "top_k", "d_ff", "d_model", "tokens"};

// One swept dimension and its values, in the order given.
struct SweepDim {
  std::string name;  // one of kSweepDims
  std::vector<int64_t> values;
};

// "experts=8,16;top_k=1,2" (repeated --sweep flags are joined with ';') -> dims in that order.
// kInvalidArgument naming --sweep for an unknown or repeated dimension, an empty list, or a
// value that is not an integer in [1, 1 << 24].
absl::StatusOr<std::vector<SweepDim>> ParseSweep(absl::string_view text);

// The sweep as it was given: "experts=8,16 x top_k=1,2".
std::string SweepText(const std::vector<SweepDim>& dims);

// Weight counts of a layer config.
struct ParamCounts {
  int64_t expert = 0;  // one routed expert: P * d_model * d_ff, P = 3 if gated else 2
  int64_t shared = 0;  // shared experts: P * d_model * shared_d_ff (+ d_model for their gate)
  int64_t router = 0;  // num_experts * d_model (+ num_experts of selection bias)
  int64_t active = 0;  // per token: top_k * expert + shared + router
  int64_t total = 0;   // num_experts * expert + shared + router
};
ParamCounts CountParams(const config::LayerConfig& config);

// The count `hold` keeps fixed (0 for kNone).
int64_t HeldParams(const ParamCounts& counts, Hold hold);

// One grid point's layer config.
struct SweepPoint {
  config::LayerConfig config;
  std::string label;          // the swept values, "experts=16 top_k=2"; "" without a sweep
  double hold_deviation = 0;  // HeldParams(point) / HeldParams(base) - 1; 0 for kNone
};

// Every combination of the swept config dimensions (tokens excluded), the first dimension
// outermost, applied to `base`. Shared experts keep the base's width (their d_ff is pinned
// when it followed the layer's d_ff). With a hold, d_ff is solved for each point and rounded
// to the integer (floor or ceiling, >= 1) closest to the held count. kInvalidArgument naming
// the point: for d_ff swept together with a hold, a config that does not validate (e.g.
// top_k > experts), or a held count that no d_ff >= 1 reaches within kHoldTolerance.
// Without config dimensions the grid is the base alone.
absl::StatusOr<std::vector<SweepPoint>> ExpandSweep(const config::LayerConfig& base,
                                                    const std::vector<SweepDim>& dims, Hold hold);

}  // namespace moe::tools
