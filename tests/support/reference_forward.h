// The float64 reference forward: every family's published semantics, written plainly,
// independently of the production code. Tests compare the runtime against it.
#pragma once

#include <cstdint>
#include <vector>

#include "configs/moe_config.pb.h"
#include "moe/base/tensor.h"
#include "moe/layer_weights.h"

namespace moe::testing {

struct ReferenceOutput {
  std::vector<double> output;        // [num_tokens, d_model]
  std::vector<int32_t> topk_ids;     // [num_tokens, top_k], best first
  std::vector<double> topk_weights;  // [num_tokens, top_k]
  std::vector<double> scores;        // [num_tokens, num_experts] selection scores (biased,
                                     // -inf for experts of excluded groups)
  int64_t dropped_slots = 0;
};

// hidden: F32 [num_tokens, d_model]. Weights are read as float and computed in double.
ReferenceOutput ReferenceForward(const config::LayerConfig& config, const MoeLayerWeights& w,
                                 const Tensor& hidden);

// Relative L2 error sqrt(sum (a - ref)^2 / sum ref^2) of a float tensor against doubles.
double RelativeL2(const float* a, const std::vector<double>& ref);

}  // namespace moe::testing
