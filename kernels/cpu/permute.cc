#include "kernels/cpu/permute.h"

#include <cstring>

namespace moe::kernels {

void PermuteRows(const PermuteParams& p) {
  const size_t row_bytes = static_cast<size_t>(p.d_model) * sizeof(float);
  for (int64_t r = 0; r < p.num_rows; ++r) {
    const int64_t token = p.slot_of_row[r] / p.top_k;
    std::memcpy(p.dst + r * p.d_model, p.src + token * p.d_model, row_bytes);
  }
}

void UnpermuteReduce(const UnpermuteReduceParams& p, int64_t token_begin, int64_t token_end) {
  const int64_t d = p.d_model;
  const int64_t row_bytes = d * static_cast<int64_t>(sizeof(float));
  for (int64_t t = token_begin; t < token_end; ++t) {
    // The next token's rows into L2 while this one's are summed: the rows lie anywhere in the
    // expert outputs, often out of cache (the packed kernels stream them to memory).
    if (t + 1 < p.num_tokens) {
      for (int32_t j = 0; j < p.top_k; ++j) {
        const int64_t row = p.row_of_slot[(t + 1) * p.top_k + j];
        if (row < 0) continue;
        const char* y = reinterpret_cast<const char*>(p.rows + row * d);
        for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(y + b, 0, 2);
      }
    }
    float* out = p.out + t * d;
    for (int64_t i = 0; i < d; ++i) out[i] = 0.0f;
    for (int32_t j = 0; j < p.top_k; ++j) {
      const int64_t slot = t * p.top_k + j;
      const int64_t row = p.row_of_slot[slot];
      if (row < 0) continue;
      const float w = p.weights[slot];
      const float* y = p.rows + row * d;
      for (int64_t i = 0; i < d; ++i) out[i] += w * y[i];
    }
    if (p.shared != nullptr) {
      const float scale = p.shared_scale != nullptr ? p.shared_scale[t] : 1.0f;
      const float* s = p.shared + t * d;
      for (int64_t i = 0; i < d; ++i) out[i] += scale * s[i];
    }
  }
}

}  // namespace moe::kernels
