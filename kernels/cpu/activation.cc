#include "kernels/cpu/activation.h"

#include <cmath>

#include "kernels/cpu/cpu_isa.h"

namespace moe::kernels {
namespace {

inline float Act(ActivationKind kind, float x) {
  switch (kind) {
    case ActivationKind::kSilu:
      return x / (1.0f + std::exp(-x));
    case ActivationKind::kGelu:
      return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    case ActivationKind::kRelu:
      return x > 0.0f ? x : 0.0f;
  }
  return x;
}

}  // namespace

void ApplyActivation(ActivationKind kind, float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = Act(kind, x[i]);
}

void ApplyGatedActivation(ActivationKind kind, float* gate, const float* up, int64_t n) {
  if (kind == ActivationKind::kSilu &&
      static_cast<int>(ActiveCpuIsa()) >= static_cast<int>(CpuIsa::kAvx512)) {
    return Avx512SiluGated(gate, up, n);
  }
  for (int64_t i = 0; i < n; ++i) gate[i] = Act(kind, gate[i]) * up[i];
}

}  // namespace moe::kernels
