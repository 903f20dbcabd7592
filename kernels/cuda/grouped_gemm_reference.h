// The readable reference of the grouped GEMM over experts: one thread per output element, FP32
// accumulation, every dtype and epilogue of GroupedGemmParams. It is the documentation of the op
// and the test reference of the tuned kernels (GroupedGemmSm90, the cuBLAS baseline).
//
// For every expert e and row r in [offsets[e], offsets[e + 1]), column j in [0, n):
//   gate = sum_k A(r, k) * B(e, j, k)            (B in Hugging Face layout [n, k])
//   kStore:  c[r, j] = gate
//   kSwiGLU: c[r, j] = silu(gate) * sum_k A(r, k) * B_up(e, j, k),  silu(x) = x / (1 + e^-x)
// BF16: A, B are bf16. FP8: A(r, k) = a[r, k] * a_scales[r, k / 128] and
// B(e, j, k) = b[e, j, k] * b_scales[e, j / 128, k / 128]; the sum runs per 128-wide k-block in
// FP32 and each block's sum is scaled by its two scales (the promotion of the Hopper kernel).
// Rows in [offsets[num_experts], max_rows) are not written.
#pragma once

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "kernels/cuda/grouped_gemm_params.h"

namespace moe::kernels::cuda {

// The checks every implementation shares; kInvalidArgument naming the GroupedGemmParams field:
// num_experts, n, k >= 1; max_rows >= 0; known enum values; sizes that fit int64; and, when
// max_rows > 0, non-null a, b, offsets, c (plus a_scales and b_scales for FP8, b_up for kSwiGLU,
// b_up_scales for FP8 kSwiGLU). Host only; the device offsets are never read.
absl::Status ValidateGroupedGemmParams(const GroupedGemmParams& p);

// Computes the grouped GEMM on `stream`, asynchronously. Errors: ValidateGroupedGemmParams's, and
// kInternal naming the CUDA call that failed. max_rows = 0 launches nothing.
absl::Status GroupedGemmReference(const GroupedGemmParams& p, cudaStream_t stream);

}  // namespace moe::kernels::cuda
