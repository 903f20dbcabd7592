#include <cmath>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/router_select.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kWarps = kRouterThreads / 32;

absl::Status FieldError(const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("RouterSelectParams.", field, ": ", what));
}

// Block-wide reductions over kRouterThreads threads; every thread gets the result. The tree
// is fixed, so the result does not change between runs.
__device__ float BlockMax(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < kWarps; ++w) r = fmaxf(r, scratch[w]);
  __syncthreads();
  return r;
}

__device__ float BlockSum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < kWarps; ++w) r += scratch[w];
  __syncthreads();
  return r;
}

// Whether candidate (value a, index i) ranks before (value b, index j): larger value first,
// ties to the lower index. A strict total order when no value is NaN, so ranks are distinct.
__device__ __forceinline__ bool RanksBefore(float a, int32_t i, float b, int32_t j) {
  return a > b || (a == b && i < j);
}

// One block per token. Shared memory holds the token's scores and selection keys.
__global__ void __launch_bounds__(kRouterThreads) RouterSelectKernel(const RouterSelectParams p) {
  __shared__ float scores[kRouterMaxExperts];  // softmax/sigmoid scores (logits if topk-first)
  __shared__ float choice[kRouterMaxExperts];  // selection keys: scores + bias, groups masked
  __shared__ float group_scores[kRouterMaxExperts];
  __shared__ int32_t selected[kRouterMaxExperts];
  __shared__ float scratch[kWarps];

  const int64_t t = blockIdx.x;
  const int tid = threadIdx.x;
  const int32_t E = p.num_experts;
  const int32_t k = p.top_k;
  const RouterSpec& spec = p.spec;
  int32_t* ids = p.topk_ids + t * k;
  float* weights = p.topk_weights + t * k;

  // A padding token or a bad row: distinct in-range ids and zero weights.
  auto write_placeholder = [&](int32_t status) {
    for (int32_t j = tid; j < k; j += kRouterThreads) {
      ids[j] = j;
      weights[j] = 0.0f;
    }
    if (tid == 0) p.row_status[t] = status;
  };
  if (p.num_valid_tokens != nullptr && t >= *p.num_valid_tokens) {
    write_placeholder(kRouterRowOk);
    return;
  }

  const float* logits = p.logits + t * E;
  int bad = 0;
  for (int32_t e = tid; e < E; e += kRouterThreads) {
    const float x = logits[e];
    bad |= !isfinite(x);
    scores[e] = x;
  }
  if (__syncthreads_or(bad)) {
    write_placeholder(kRouterRowBadLogits);
    return;
  }

  // Scores (kept as logits for top-k-then-score, whose softmax runs after the selection).
  if (!spec.topk_then_score) {
    if (spec.score == RouterScore::kSoftmax) {
      float local_max = -INFINITY;
      for (int32_t e = tid; e < E; e += kRouterThreads) local_max = fmaxf(local_max, scores[e]);
      const float max = BlockMax(local_max, scratch);
      float local_sum = 0.0f;
      for (int32_t e = tid; e < E; e += kRouterThreads) {
        scores[e] = expf(scores[e] - max);
        local_sum += scores[e];
      }
      const float sum = BlockSum(local_sum, scratch);
      for (int32_t e = tid; e < E; e += kRouterThreads) scores[e] /= sum;
    } else {
      for (int32_t e = tid; e < E; e += kRouterThreads) {
        scores[e] = 1.0f / (1.0f + expf(-scores[e]));
      }
    }
  }
  bad = 0;
  for (int32_t e = tid; e < E; e += kRouterThreads) {
    choice[e] = scores[e] + (p.selection_bias != nullptr ? p.selection_bias[e] : 0.0f);
    bad |= isnan(choice[e]);
  }
  if (__syncthreads_or(bad)) {
    write_placeholder(kRouterRowBadBias);
    return;
  }

  // Group-limited selection: experts outside the topk_groups best groups become -inf.
  if (spec.num_groups > 1) {
    const int32_t G = spec.num_groups;
    const int32_t per_group = E / G;
    for (int32_t g = tid; g < G; g += kRouterThreads) {
      const float* c = choice + g * per_group;
      float best = -INFINITY, second = -INFINITY;
      for (int32_t i = 0; i < per_group; ++i) {
        if (c[i] > best) {
          second = best;
          best = c[i];
        } else if (c[i] > second) {
          second = c[i];
        }
      }
      float s = spec.group_score == RouterGroupScore::kMax ? best : best + second;
      group_scores[g] = isnan(s) ? -INFINITY : s;  // +inf + -inf: never ranks first
    }
    __syncthreads();
    int32_t* keep_group = selected;  // [num_groups], free until the top-k below
    for (int32_t g = tid; g < G; g += kRouterThreads) {
      int32_t rank = 0;
      for (int32_t h = 0; h < G; ++h) rank += RanksBefore(group_scores[h], h, group_scores[g], g);
      keep_group[g] = rank < spec.topk_groups;
    }
    __syncthreads();
    for (int32_t e = tid; e < E; e += kRouterThreads) {
      if (!keep_group[e / per_group]) choice[e] = -INFINITY;
    }
    __syncthreads();
  }

  // Top-k by rank: expert e is selected at position rank(e) when rank(e) < top_k.
  for (int32_t e = tid; e < E; e += kRouterThreads) {
    const float c = choice[e];
    int32_t rank = 0;
    for (int32_t f = 0; f < E; ++f) rank += RanksBefore(choice[f], f, c, e);
    if (rank < k) selected[rank] = e;
  }
  __syncthreads();

  // Weights, serially in top-k order as gating::Route does (k is small).
  if (tid == 0) {
    float* w = group_scores;  // reused as [top_k] scratch
    if (spec.topk_then_score) {
      float max = scores[selected[0]];
      for (int32_t j = 1; j < k; ++j) max = fmaxf(max, scores[selected[j]]);
      float sum = 0.0f;
      for (int32_t j = 0; j < k; ++j) {
        w[j] = expf(scores[selected[j]] - max);
        sum += w[j];
      }
      for (int32_t j = 0; j < k; ++j) w[j] /= sum;
    } else {
      for (int32_t j = 0; j < k; ++j) w[j] = scores[selected[j]];
    }
    if (spec.renormalize) {
      float sum = 1e-20f;
      for (int32_t j = 0; j < k; ++j) sum += w[j];
      for (int32_t j = 0; j < k; ++j) w[j] /= sum;
    }
    if (spec.routed_scaling_factor != 1.0f) {
      for (int32_t j = 0; j < k; ++j) w[j] *= spec.routed_scaling_factor;
    }
    for (int32_t j = 0; j < k; ++j) {
      ids[j] = selected[j];
      weights[j] = w[j];
    }
    p.row_status[t] = kRouterRowOk;
  }
}

}  // namespace

absl::Status CheckRouterSelectParams(const RouterSelectParams& p) {
  if (p.num_tokens < 0 || p.num_tokens > std::numeric_limits<int32_t>::max()) {
    return FieldError("num_tokens", absl::StrCat("expected 0 to 2^31-1, got ", p.num_tokens));
  }
  if (p.num_experts < 1 || p.num_experts > kRouterMaxExperts) {
    return FieldError("num_experts",
                      absl::StrCat("expected 1 to ", kRouterMaxExperts, ", got ", p.num_experts));
  }
  if (p.top_k < 1 || p.top_k > p.num_experts) {
    return FieldError(
        "top_k", absl::StrCat("expected 1 to num_experts (", p.num_experts, "), got ", p.top_k));
  }
  const RouterSpec& s = p.spec;
  if (s.topk_then_score && s.score != RouterScore::kSoftmax) {
    return FieldError("spec.topk_then_score", "only with softmax scores");
  }
  if (!(s.routed_scaling_factor > 0.0f) || !std::isfinite(s.routed_scaling_factor)) {
    return FieldError("spec.routed_scaling_factor",
                      absl::StrCat("expected a finite value > 0, got ", s.routed_scaling_factor));
  }
  if (s.num_groups > 1) {
    if (p.num_experts % s.num_groups != 0) {
      return FieldError(
          "spec.num_groups",
          absl::StrCat(s.num_groups, " does not divide num_experts (", p.num_experts, ")"));
    }
    const int32_t per_group = p.num_experts / s.num_groups;
    if (s.topk_groups < 1 || s.topk_groups > s.num_groups) {
      return FieldError("spec.topk_groups", absl::StrCat("expected 1 to num_groups (", s.num_groups,
                                                         "), got ", s.topk_groups));
    }
    if (int64_t{s.topk_groups} * per_group < p.top_k) {
      return FieldError(
          "spec.topk_groups",
          absl::StrCat("the ", s.topk_groups, " kept groups hold ", s.topk_groups * per_group,
                       " experts, fewer than top_k (", p.top_k, ")"));
    }
    if (s.group_score == RouterGroupScore::kTop2Sum && per_group < 2) {
      return FieldError("spec.group_score", "kTop2Sum needs at least 2 experts per group");
    }
  }
  if (p.num_tokens > 0) {
    if (p.logits == nullptr) return FieldError("logits", "null");
    if (p.topk_ids == nullptr) return FieldError("topk_ids", "null");
    if (p.topk_weights == nullptr) return FieldError("topk_weights", "null");
    if (p.row_status == nullptr) return FieldError("row_status", "null");
  }
  return absl::OkStatus();
}

absl::Status RouterSelect(const RouterSelectParams& p, cudaStream_t stream) {
  MOE_RETURN_IF_ERROR(CheckRouterSelectParams(p));
  if (p.num_tokens == 0) return absl::OkStatus();
  RouterSelectKernel<<<static_cast<unsigned>(p.num_tokens), kRouterThreads, 0, stream>>>(p);
  return CudaStatus(cudaGetLastError(), "RouterSelectKernel launch");
}

}  // namespace moe::kernels::cuda
