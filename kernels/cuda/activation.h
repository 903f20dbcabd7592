// Elementwise expert activations on the GPU (kernels/cpu/activation.h's formulas), for the
// grouped GEMMs without a fused epilogue, and the sigmoid of Qwen2-MoE's shared-expert gate.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/row_dtype.h"

namespace moe::kernels::cuda {

enum class ActivationOp {
  kSilu,  // x / (1 + exp(-x))
  kGelu,  // exact (erf) GELU
  kRelu,  // max(x, 0)
};

// out[r, i] = act(gate[r, i]) * up[r, i] (gated: SwiGLU with kSilu, GeGLU with kGelu), or
// act(up[r, i]) when gate is null, for rows r < *row_count (all num_rows when row_count is
// null; a device scalar such as the plan's offsets[num_experts]).
struct ActivationParams {
  const float* gate = nullptr;  // [num_rows, width] or null
  const float* up = nullptr;    // [num_rows, width]
  void* out = nullptr;          // [num_rows, width]
  RowDtype out_dtype = RowDtype::kBF16;
  const int64_t* row_count = nullptr;
  int64_t num_rows = 0;
  int64_t width = 0;
  ActivationOp op = ActivationOp::kSilu;
};

// kInvalidArgument naming the field; no device access.
absl::Status CheckActivationParams(const ActivationParams& p);

// Validates, then launches on `stream`.
absl::Status Activation(const ActivationParams& p, cudaStream_t stream);

// x[i] = 1 / (1 + exp(-x[i])) for i < n, in place.
absl::Status SigmoidInPlace(float* x, int64_t n, cudaStream_t stream);

}  // namespace moe::kernels::cuda
