#include <cuda_bf16.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/activation.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/row_vectors.cuh"

namespace moe::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

absl::Status FieldError(const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("ActivationParams.", field, ": ", what));
}

__device__ __forceinline__ float Act(ActivationOp op, float x) {
  switch (op) {
    case ActivationOp::kSilu:
      return x / (1.0f + expf(-x));
    case ActivationOp::kGelu:
      return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case ActivationOp::kRelu:
      return x > 0.0f ? x : 0.0f;
  }
  return x;
}

// A grid-stride loop over elements of the first *row_count rows.
template <typename Out>
__global__ void __launch_bounds__(kThreads) ActivationKernel(const ActivationParams p) {
  const int64_t rows = p.row_count != nullptr ? min(*p.row_count, p.num_rows) : p.num_rows;
  const int64_t n = rows * p.width;
  Out* out = static_cast<Out*>(p.out);
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float a = Act(p.op, p.gate != nullptr ? p.gate[i] : p.up[i]);
    out[i] = FromFloat<Out>(p.gate != nullptr ? a * p.up[i] : a);
  }
}

__global__ void __launch_bounds__(kThreads) SigmoidKernel(float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = 1.0f / (1.0f + expf(-x[i]));
  }
}

unsigned Blocks(int64_t n) {
  return static_cast<unsigned>(
      std::max<int64_t>(1, std::min(kMaxBlocks, (n + kThreads - 1) / kThreads)));
}

}  // namespace

absl::Status CheckActivationParams(const ActivationParams& p) {
  if (p.num_rows < 0)
    return FieldError("num_rows", absl::StrCat("expected >= 0, got ", p.num_rows));
  if (p.width < 1) return FieldError("width", absl::StrCat("expected >= 1, got ", p.width));
  if (p.num_rows > 0) {
    if (p.up == nullptr) return FieldError("up", "null");
    if (p.out == nullptr) return FieldError("out", "null");
  }
  return absl::OkStatus();
}

absl::Status Activation(const ActivationParams& p, cudaStream_t stream) {
  MOE_RETURN_IF_ERROR(CheckActivationParams(p));
  if (p.num_rows == 0) return absl::OkStatus();
  const unsigned blocks = Blocks(p.num_rows * p.width);
  if (p.out_dtype == RowDtype::kF32) {
    ActivationKernel<float><<<blocks, kThreads, 0, stream>>>(p);
  } else {
    ActivationKernel<__nv_bfloat16><<<blocks, kThreads, 0, stream>>>(p);
  }
  return CudaStatus(cudaGetLastError(), "ActivationKernel launch");
}

absl::Status SigmoidInPlace(float* x, int64_t n, cudaStream_t stream) {
  if (n < 0)
    return absl::InvalidArgumentError(absl::StrCat("SigmoidInPlace: n must be >= 0, got ", n));
  if (n == 0) return absl::OkStatus();
  if (x == nullptr) return absl::InvalidArgumentError("SigmoidInPlace: x is null");
  SigmoidKernel<<<Blocks(n), kThreads, 0, stream>>>(x, n);
  return CudaStatus(cudaGetLastError(), "SigmoidKernel launch");
}

}  // namespace moe::kernels::cuda
