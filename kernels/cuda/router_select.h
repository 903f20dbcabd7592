// Router scoring and top-k selection on the GPU: one fused kernel for every router variant of
// gating/router.h (softmax or sigmoid scores, selection bias, expert groups, top-k-then-score,
// renormalization, routed scaling). The logits come from router_gemm.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace moe::kernels::cuda {

// Largest num_experts the fused kernel handles (one token's scores live in shared memory).
inline constexpr int32_t kRouterMaxExperts = 512;
// Threads per token (one block per token).
inline constexpr int kRouterThreads = 128;

enum class RouterScore { kSoftmax, kSigmoid };
enum class RouterGroupScore {
  kTop2Sum,  // a group's two best biased scores, summed (DeepSeek-V3)
  kMax,      // a group's best biased score (DeepSeek-V2)
};

// The routing rule; moe/cuda/cuda_layer.cc fills it from config::RouterConfig.
struct RouterSpec {
  RouterScore score = RouterScore::kSoftmax;
  bool topk_then_score = false;  // softmax over the k selected logits (softmax only)
  bool renormalize = false;      // weights / (1e-20 + their sum)
  int32_t num_groups = 0;        // <= 1: no grouping; else divides num_experts
  int32_t topk_groups = 0;       // groups kept when grouping
  RouterGroupScore group_score = RouterGroupScore::kTop2Sum;
  float routed_scaling_factor = 1.0f;
};

// Row status codes written to RouterSelectParams::row_status.
inline constexpr int32_t kRouterRowOk = 0;
inline constexpr int32_t kRouterRowBadLogits = 1;  // a logit is NaN or Inf
inline constexpr int32_t kRouterRowBadBias = 2;    // a biased selection score is NaN

struct RouterSelectParams {
  const float* logits = nullptr;          // [num_tokens, num_experts]
  const float* selection_bias = nullptr;  // [num_experts]; null = no bias
  // Device scalar: tokens [num_valid_tokens, num_tokens) are padding (a CUDA-graph decode
  // batch). Null = every token is valid.
  const int64_t* num_valid_tokens = nullptr;
  int32_t* topk_ids = nullptr;    // [num_tokens, top_k], best first
  float* topk_weights = nullptr;  // [num_tokens, top_k]
  int32_t* row_status = nullptr;  // [num_tokens], kRouterRow*
  int64_t num_tokens = 0;
  int32_t num_experts = 0;
  int32_t top_k = 0;
  RouterSpec spec;
};

// kInvalidArgument naming the field ("RouterSelectParams.top_k: ...") for a bad value; no
// device access, so it runs without a GPU.
absl::Status CheckRouterSelectParams(const RouterSelectParams& p);

// Validates, then launches one block of kRouterThreads per token on `stream` (no host sync).
// For every token: ids = top_k of the biased scores (after group masking), ties to the lower
// expert index; weights as gating::Route computes them. A token with non-finite logits (or a
// NaN selection score), and a padding token, gets ids 0..top_k-1 and weights 0 (never an
// out-of-range or repeated id) and its row_status says which.
absl::Status RouterSelect(const RouterSelectParams& p, cudaStream_t stream);

}  // namespace moe::kernels::cuda
