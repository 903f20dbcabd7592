// The native weights file of one layer: a safetensors file with the tensors of
// MoeLayerWeights under fixed names, F32, BF16 or F16 each.
//
//   router          [num_experts, d_model]
//   selection_bias  [num_experts]                    iff router.selection_bias
//   experts.gate    [num_experts, d_ff, d_model]     iff the activation is gated
//   experts.up      [num_experts, d_ff, d_model]
//   experts.down    [num_experts, d_model, d_ff]
//   shared.gate     [1, shared_d_ff, d_model]        iff shared experts and gated
//   shared.up       [1, shared_d_ff, d_model]        iff shared experts
//   shared.down     [1, d_model, shared_d_ff]        iff shared experts
//   shared_gate     [1, d_model]                     iff shared_experts.sigmoid_gate
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "configs/moe_config.pb.h"
#include "moe/base/dtype.h"
#include "moe/layer_weights.h"

namespace moe::tools {

// One tensor the config requires: its name and shape.
struct NativeTensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// The tensors `config` requires, in file order.
std::vector<NativeTensorSpec> NativeTensorSpecs(const config::LayerConfig& config);

// The number of weights `config` has (the sum over NativeTensorSpecs).
int64_t NativeWeightCount(const config::LayerConfig& config);

// Reads `path` and converts every tensor to F32. kNotFound for a missing file;
// kInvalidArgument naming the file and tensor for a missing, misshapen, non-float or
// unexpected tensor.
absl::StatusOr<MoeLayerWeights> LoadNativeWeights(const config::LayerConfig& config,
                                                  const std::string& path);

// Writes `weights` (F32, checked against `config`) to `path` stored as `dtype` (kF32 or
// kBF16, rounded to nearest even), with the config's name in the metadata.
absl::Status WriteNativeWeights(const config::LayerConfig& config, const MoeLayerWeights& weights,
                                DType dtype, const std::string& path);

}  // namespace moe::tools
