// Top-k selection over one row of scores.
#pragma once

#include <cstdint>

namespace moe::kernels {

// Writes the indices of the k largest of scores[0, n) to ids, best first; equal scores
// go to the lower index. -inf entries are never chosen before finite ones. The scores
// must not contain NaN (callers check). 1 <= k <= n.
void TopK(const float* scores, int32_t n, int32_t k, int32_t* ids);

}  // namespace moe::kernels
