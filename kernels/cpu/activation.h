// Elementwise expert activations.
#pragma once

#include <cstdint>

namespace moe::kernels {

enum class ActivationKind { kSilu, kGelu, kRelu };

// x[i] = act(x[i]) for n elements.
void ApplyActivation(ActivationKind kind, float* x, int64_t n);

// gate[i] = act(gate[i]) * up[i] for n elements (SwiGLU with kSilu, GeGLU with kGelu). SwiGLU
// runs Avx512SiluGated when the active ISA has AVX-512.
void ApplyGatedActivation(ActivationKind kind, float* gate, const float* up, int64_t n);

// SwiGLU with AVX-512 (activation_avx512.cc): within a few ulp of the scalar formula.
void Avx512SiluGated(float* gate, const float* up, int64_t n);

}  // namespace moe::kernels
