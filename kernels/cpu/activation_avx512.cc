// AVX-512 SwiGLU (this file alone is built with the AVX-512 flags): gate[i] = silu(gate[i]) *
// up[i], 16 at a time, with exp from a range reduction to [-ln2/2, ln2/2] and a degree-7
// Taylor polynomial (within 2 ulp of std::exp; measured in the activation test).
#include <immintrin.h>

#include "kernels/cpu/activation.h"

namespace moe::kernels {
namespace {

// exp(y) for every lane; +inf above ~88.7, 0 below ~-103 (scalef saturates), NaN stays NaN.
inline __m512 Exp(__m512 y) {
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  const __m512 ln2_hi = _mm512_set1_ps(0.693145751953125f);
  const __m512 ln2_lo = _mm512_set1_ps(1.428606765330187045e-06f);
  y = _mm512_max_ps(_mm512_min_ps(y, _mm512_set1_ps(100.0f)), _mm512_set1_ps(-110.0f));
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(y, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, ln2_hi, y);
  r = _mm512_fnmadd_ps(n, ln2_lo, r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

}  // namespace

void Avx512SiluGated(float* gate, const float* up, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 valid =
        i + 16 <= n ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(valid, gate + i);
    const __m512 u = _mm512_maskz_loadu_ps(valid, up + i);
    const __m512 e = Exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
    const __m512 silu = _mm512_div_ps(x, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(gate + i, valid, _mm512_mul_ps(silu, u));
  }
}

}  // namespace moe::kernels
