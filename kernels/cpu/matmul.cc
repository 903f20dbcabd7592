#include "kernels/cpu/matmul.h"

namespace moe::kernels {
namespace {

constexpr int kLanes = 16;    // independent partial sums per dot product
constexpr int kRowBlock = 4;  // rows of A sharing one pass over a row of B

// Reduces the lanes pairwise in a fixed order, then adds the scalar tail.
inline float ReduceLanes(float* acc, float tail) {
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
  }
  return acc[0] + tail;
}

// NOTE: ReduceLanes and the lane split below define the summation order; DotProduct and
// the row-blocked path must stay identical in it.
__attribute__((target_clones("avx512f", "avx2", "default"))) void DotRows(
    const float* const* a_rows, int num_rows, const float* b, int64_t k, float* out) {
  float acc[kRowBlock][kLanes] = {};
  const int64_t k_main = k / kLanes * kLanes;
  for (int64_t kk = 0; kk < k_main; kk += kLanes) {
    for (int r = 0; r < kRowBlock; ++r) {
      if (r >= num_rows) break;
      const float* a = a_rows[r] + kk;
      for (int l = 0; l < kLanes; ++l) acc[r][l] += a[l] * b[kk + l];
    }
  }
  for (int r = 0; r < num_rows; ++r) {
    float tail = 0.0f;
    for (int64_t kk = k_main; kk < k; ++kk) tail += a_rows[r][kk] * b[kk];
    out[r] = ReduceLanes(acc[r], tail);
  }
}

}  // namespace

float DotProduct(const float* a, const float* b, int64_t n) {
  float out;
  DotRows(&a, 1, b, n, &out);
  return out;
}

void MatmulNT(const MatmulParams& p) {
  for (int64_t i0 = 0; i0 < p.m; i0 += kRowBlock) {
    const int rows = static_cast<int>(p.m - i0 < kRowBlock ? p.m - i0 : kRowBlock);
    const float* a_rows[kRowBlock];
    for (int r = 0; r < rows; ++r) a_rows[r] = p.a + (i0 + r) * p.lda;
    for (int64_t j = 0; j < p.n; ++j) {
      float out[kRowBlock];
      DotRows(a_rows, rows, p.b + j * p.ldb, p.k, out);
      for (int r = 0; r < rows; ++r) p.c[(i0 + r) * p.ldc + j] = out[r];
    }
  }
}

}  // namespace moe::kernels
