// Moving token rows into expert-major order and back.
#pragma once

#include <cstdint>

namespace moe::kernels {

// dst[r] = src[slot_of_row[r] / top_k] for r in [0, num_rows): gathers each kept slot's
// token row so rows of one expert are contiguous.
struct PermuteParams {
  const float* src = nullptr;            // [num_tokens, d_model]
  const int64_t* slot_of_row = nullptr;  // [num_rows], slot = token * top_k + j
  float* dst = nullptr;                  // [num_rows, d_model]
  int64_t num_rows = 0;
  int64_t d_model = 0;
  int32_t top_k = 1;
};
void PermuteRows(const PermuteParams& p);

// out[t] = sum_j weights[t, j] * rows[row_of_slot[t * top_k + j]], summed in j order
// (the token's top-k order); slots with row -1 (dropped) add nothing. When `shared` is
// set, out[t] += shared_scale[t] * shared[t] (scale 1 when shared_scale is null), last.
struct UnpermuteReduceParams {
  const float* rows = nullptr;           // [num_rows, d_model], expert outputs
  const int64_t* row_of_slot = nullptr;  // [num_tokens * top_k]
  const float* weights = nullptr;        // [num_tokens, top_k]
  const float* shared = nullptr;         // [num_tokens, d_model] or null
  const float* shared_scale = nullptr;   // [num_tokens] or null
  float* out = nullptr;                  // [num_tokens, d_model]
  int64_t num_tokens = 0;
  int64_t d_model = 0;
  int32_t top_k = 1;
};
// Tokens [token_begin, token_end) only, so callers can split tokens across threads.
void UnpermuteReduce(const UnpermuteReduceParams& p, int64_t token_begin, int64_t token_end);

}  // namespace moe::kernels
