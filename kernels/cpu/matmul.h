// Plain float32 matrix products on the CPU: rows of A against rows of B.
#pragma once

#include <cstdint>

namespace moe::kernels {

// C[m, n] = sum_k A[m, k] * B[n, k], the layout of Hugging Face weights ([out, in]).
struct MatmulParams {
  const float* a = nullptr;  // [m, k], row stride lda
  int64_t lda = 0;
  const float* b = nullptr;  // [n, k], row stride ldb
  int64_t ldb = 0;
  float* c = nullptr;  // [m, n], row stride ldc
  int64_t ldc = 0;
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
};

// Single-threaded; callers split work across threads by rows or columns.
// NOTE: every C element is summed in one fixed order that depends on k alone, so a
// row's result never depends on m, on which other rows share the call, or on the ISA
// the dispatcher picked (no FMA contraction: the build is ISO C++).
void MatmulNT(const MatmulParams& p);

// The dot product of n floats in MatmulNT's summation order.
float DotProduct(const float* a, const float* b, int64_t n);

}  // namespace moe::kernels
