// The router: logits = hidden . W_router^T, then each family's scoring and top-k selection.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "configs/moe_config.pb.h"
#include "kernels/cpu/packed_weights.h"

namespace moe::gating {

// Inputs of one routing call. Pointers are borrowed; nothing is retained.
struct RouterInputs {
  const float* hidden = nullptr;          // [num_tokens, d_model]
  const float* router_weight = nullptr;   // [num_experts, d_model]
  const float* selection_bias = nullptr;  // [num_experts], required iff router.selection_bias
  int64_t num_tokens = 0;
  // router_weight packed as F32 (kernels/cpu/packed_weights.h): logits are computed per block
  // of tokens with the packed GEMM, fused with scoring and top-k. Null: MatmulNT per token.
  const kernels::PackedMatrix* packed_router = nullptr;
};

// Outputs, written for every token.
struct RouterOutputs {
  int32_t* topk_ids = nullptr;    // [num_tokens, top_k], best first
  float* topk_weights = nullptr;  // [num_tokens, top_k], the combine weights
  float* logits = nullptr;        // [num_tokens, num_experts] workspace; holds the logits after
};

// Routes every token as config.router describes:
//   scores  = softmax(logits) or sigmoid(logits)      (SCORE_THEN_TOPK)
//   choice  = scores + selection_bias                  (bias for selection only)
//   groups  = top topk_groups groups by max or top-2 sum of choice; other experts excluded
//   ids     = top_k of choice, ties to the lower expert index
//   weights = scores[ids], / their sum if renormalize, * routed_scaling_factor
// With TOPK_THEN_SCORE, ids are the top_k logits and weights their softmax.
// A token whose hidden row or logits hold NaN or Inf is kInvalidArgument naming the token.
// Tokens are split across OpenMP threads; results do not depend on the thread count.
absl::Status Route(const config::LayerConfig& config, const RouterInputs& in,
                   const RouterOutputs& out);

}  // namespace moe::gating
