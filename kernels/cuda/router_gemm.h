// The router GEMM on the GPU through cuBLAS: logits = hidden . router_weight^T in float32.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/row_dtype.h"

namespace moe::kernels::cuda {

// hidden and router_weight share one dtype; logits are float32. F32 inputs use
// CUBLAS_COMPUTE_32F_PEDANTIC (true float32, no TF32: the CPU router's precision); BF16 inputs
// accumulate in float32.
struct RouterGemmParams {
  const void* hidden = nullptr;         // [num_tokens, d_model]
  const void* router_weight = nullptr;  // [num_experts, d_model]
  RowDtype dtype = RowDtype::kF32;
  float* logits = nullptr;  // [num_tokens, num_experts]
  int64_t num_tokens = 0;
  int64_t d_model = 0;
  int64_t num_experts = 0;  // any n >= 1 (1 for a shared-expert gate)
};

// kInvalidArgument naming the field; no device access.
absl::Status CheckRouterGemmParams(const RouterGemmParams& p);

// Validates, binds `handle` to `stream` and enqueues one cublasGemmEx_64 (no host sync).
absl::Status RouterGemm(cublasHandle_t handle, const RouterGemmParams& p, cudaStream_t stream);

}  // namespace moe::kernels::cuda
