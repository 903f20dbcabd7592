#include "kernels/cpu/softmax.h"

#include <cmath>

namespace moe::kernels {

void Softmax(const float* x, int32_t n, float* out) {
  float max = x[0];
  for (int32_t i = 1; i < n; ++i) max = x[i] > max ? x[i] : max;
  float sum = 0.0f;
  for (int32_t i = 0; i < n; ++i) {
    out[i] = std::exp(x[i] - max);
    sum += out[i];
  }
  for (int32_t i = 0; i < n; ++i) out[i] /= sum;
}

}  // namespace moe::kernels
