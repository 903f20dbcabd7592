#include "gating/router.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/packed_gemm.h"
#include "kernels/cpu/softmax.h"
#include "kernels/cpu/topk.h"

namespace moe::gating {
namespace {

constexpr float kExcluded = -std::numeric_limits<float>::infinity();
// Tokens whose logits one packed GEMM computes before their scoring and selection.
constexpr int64_t kTokenBlock = 32;

bool AllFinite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return true;
}

// Excludes (sets to -inf) the experts of every group not among the topk_groups best.
void MaskGroups(const config::RouterConfig& r, int32_t num_experts, float* choice,
                std::vector<float>& group_scores, std::vector<int32_t>& group_ids,
                std::vector<char>& keep) {
  const int32_t groups = r.num_groups();
  const int32_t per_group = num_experts / groups;
  for (int32_t g = 0; g < groups; ++g) {
    const float* c = choice + int64_t{g} * per_group;
    if (r.group_score() == config::GROUP_SCORE_MAX) {
      float best = c[0];
      for (int32_t i = 1; i < per_group; ++i) best = c[i] > best ? c[i] : best;
      group_scores[g] = best;
    } else {
      int32_t top2[2];
      kernels::TopK(c, per_group, 2, top2);
      group_scores[g] = c[top2[0]] + c[top2[1]];
    }
  }
  kernels::TopK(group_scores.data(), groups, r.topk_groups(), group_ids.data());
  keep.assign(static_cast<size_t>(groups), 0);
  for (int32_t i = 0; i < r.topk_groups(); ++i) keep[static_cast<size_t>(group_ids[i])] = 1;
  for (int32_t g = 0; g < groups; ++g) {
    if (keep[static_cast<size_t>(g)]) continue;
    for (int32_t i = 0; i < per_group; ++i) choice[int64_t{g} * per_group + i] = kExcluded;
  }
}

}  // namespace

absl::Status Route(const config::LayerConfig& config, const RouterInputs& in,
                   const RouterOutputs& out) {
  const config::RouterConfig& r = config.router();
  const int64_t d_model = config.d_model();
  const int32_t num_experts = config.num_experts();
  const int32_t top_k = config.top_k();
  if (r.selection_bias() && in.selection_bias == nullptr) {
    return absl::InvalidArgumentError("router.selection_bias is set but no bias tensor was given");
  }
  const bool grouped = r.num_groups() > 1;
  const float scaling = config::RoutedScalingFactor(config);
  const bool softmax = r.score_function() == config::SCORE_SOFTMAX;
  const bool topk_first = softmax && r.score_order() == config::TOPK_THEN_SCORE;

  std::atomic<int64_t> first_bad_token{std::numeric_limits<int64_t>::max()};
#pragma omp parallel
  {
    // Per-thread scratch that only grows: steady-state calls allocate nothing.
    thread_local std::vector<float> scores, choice, group_scores, selected;
    thread_local std::vector<int32_t> group_ids;
    thread_local std::vector<char> keep;
    scores.resize(static_cast<size_t>(num_experts));
    choice.resize(static_cast<size_t>(num_experts));
    group_scores.resize(static_cast<size_t>(grouped ? r.num_groups() : 0));
    group_ids.resize(static_cast<size_t>(grouped ? r.num_groups() : 0));
    selected.resize(static_cast<size_t>(top_k));
#pragma omp for schedule(static)
    for (int64_t block = 0; block < in.num_tokens; block += kTokenBlock) {
      const int64_t block_end = std::min(block + kTokenBlock, in.num_tokens);
      if (in.packed_router != nullptr) {
        // The block's logits in one packed GEMM (rows are independent: a bad row spoils only
        // its own logits, and the checks below still run per token).
        kernels::PackedGemm({.w = in.packed_router,
                             .a = in.hidden + block * d_model,
                             .lda = d_model,
                             .qa = {},
                             .m = block_end - block,
                             .panel_begin = 0,
                             .panel_end = in.packed_router->num_panels,
                             .c = out.logits + block * num_experts,
                             .ldc = num_experts});
      }
      for (int64_t t = block; t < block_end; ++t) {
        const float* x = in.hidden + t * d_model;
        float* logits = out.logits + t * num_experts;
        int32_t* ids = out.topk_ids + t * top_k;
        float* weights = out.topk_weights + t * top_k;
        // Bad rows still get in-range, distinct ids so no caller can index out of bounds.
        for (int32_t j = 0; j < top_k; ++j) {
          ids[j] = j;
          weights[j] = 0.0f;
        }
        if (!AllFinite(x, d_model)) {
          int64_t prev = first_bad_token.load();
          while (t < prev && !first_bad_token.compare_exchange_weak(prev, t)) {
          }
          continue;
        }
        if (in.packed_router == nullptr) {
          kernels::MatmulNT({.a = x,
                             .lda = d_model,
                             .b = in.router_weight,
                             .ldb = d_model,
                             .c = logits,
                             .ldc = num_experts,
                             .m = 1,
                             .n = num_experts,
                             .k = d_model});
        }
        if (!AllFinite(logits, num_experts)) {
          int64_t prev = first_bad_token.load();
          while (t < prev && !first_bad_token.compare_exchange_weak(prev, t)) {
          }
          continue;
        }
        if (topk_first) {
          for (int32_t e = 0; e < num_experts; ++e) {
            choice[e] = logits[e] + (r.selection_bias() ? in.selection_bias[e] : 0.0f);
          }
        } else {
          if (softmax) {
            kernels::Softmax(logits, num_experts, scores.data());
          } else {
            for (int32_t e = 0; e < num_experts; ++e) {
              scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
            }
          }
          for (int32_t e = 0; e < num_experts; ++e) {
            choice[e] = scores[e] + (r.selection_bias() ? in.selection_bias[e] : 0.0f);
          }
        }
        if (grouped) MaskGroups(r, num_experts, choice.data(), group_scores, group_ids, keep);
        kernels::TopK(choice.data(), num_experts, top_k, ids);
        if (topk_first) {
          for (int32_t j = 0; j < top_k; ++j) selected[j] = logits[ids[j]];
          kernels::Softmax(selected.data(), top_k, weights);
        } else {
          for (int32_t j = 0; j < top_k; ++j) weights[j] = scores[ids[j]];
        }
        if (r.renormalize()) {
          // The epsilon (DeepSeek's) only matters when every selected sigmoid score underflows.
          float sum = 1e-20f;
          for (int32_t j = 0; j < top_k; ++j) sum += weights[j];
          for (int32_t j = 0; j < top_k; ++j) weights[j] /= sum;
        }
        if (scaling != 1.0f) {
          for (int32_t j = 0; j < top_k; ++j) weights[j] *= scaling;
        }
      }
    }
  }
  const int64_t bad = first_bad_token.load();
  if (bad != std::numeric_limits<int64_t>::max()) {
    const bool bad_is_logit = AllFinite(in.hidden + bad * d_model, d_model);
    return absl::InvalidArgumentError(
        absl::StrCat(bad_is_logit ? "router logits of token " : "hidden_states row of token ", bad,
                     bad_is_logit ? " are not finite (NaN or Inf; hidden values too large?)"
                                  : " contains NaN or Inf"));
  }
  return absl::OkStatus();
}

}  // namespace moe::gating
