// Softmax over one row.
#pragma once

#include <cstdint>

namespace moe::kernels {

// out[i] = exp(x[i] - max x) / sum_j exp(x[j] - max x), summed in index order. `out` may be
// `x`. n >= 1; x must be finite.
void Softmax(const float* x, int32_t n, float* out);

}  // namespace moe::kernels
