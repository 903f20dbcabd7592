// The grouped GEMM over experts on the GPU: one params struct shared by every implementation
// (the readable reference kernel, the cuBLAS grouped baseline, the Hopper TMA/wgmma kernel).
#pragma once

#include <cstdint>

namespace moe::kernels::cuda {

enum class GemmDtype {
  kBF16,     // a, b: __nv_bfloat16
  kFP8E4M3,  // a, b: __nv_fp8_e4m3 with block scales (DeepSeek-V3 layout, see below)
};

enum class GemmEpilogue {
  kStore,   // c = a . b^T
  kSwiGLU,  // c = silu(a . b^T) * (a . b_up^T): the fused gate/up projection
};

enum class GemmOutDtype { kBF16, kF32 };

// Expert e multiplies its rows [offsets[e], offsets[e + 1]) of `a` by its weights. Weights are
// in Hugging Face layout [out, in] (row-major, k contiguous), experts stacked.
// FP8 scales (DeepSeek-V3): activations 1x128 per (row, 128 columns of k); weights 128x128
// per (128 rows of n, 128 columns of k); value = fp8 * scale.
struct GroupedGemmParams {
  const void* a = nullptr;          // [max_rows, k], expert-major rows
  const float* a_scales = nullptr;  // FP8: [max_rows, ceil(k / 128)]
  const void* b = nullptr;          // [num_experts, n, k] (the gate weights for kSwiGLU)
  const float* b_scales = nullptr;  // FP8: [num_experts, ceil(n / 128), ceil(k / 128)]
  const void* b_up = nullptr;       // kSwiGLU only: [num_experts, n, k]
  const float* b_up_scales = nullptr;
  const int64_t* offsets = nullptr;  // DEVICE memory [num_experts + 1], offsets[0] = 0
  void* c = nullptr;                 // [max_rows, n]
  int64_t num_experts = 0;
  int64_t n = 0;
  int64_t k = 0;
  int64_t max_rows = 0;  // host-known bound on offsets[num_experts] (grid and buffer sizing)
  GemmDtype dtype = GemmDtype::kBF16;
  GemmEpilogue epilogue = GemmEpilogue::kStore;
  GemmOutDtype out_dtype = GemmOutDtype::kBF16;
};

}  // namespace moe::kernels::cuda
