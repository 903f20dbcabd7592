#include "kernels/cuda/router_gemm.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"

namespace moe::kernels::cuda {
namespace {

absl::Status FieldError(const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("RouterGemmParams.", field, ": ", what));
}

}  // namespace

absl::Status CheckRouterGemmParams(const RouterGemmParams& p) {
  if (p.num_tokens < 0) {
    return FieldError("num_tokens", absl::StrCat("expected >= 0, got ", p.num_tokens));
  }
  if (p.d_model < 1) return FieldError("d_model", absl::StrCat("expected >= 1, got ", p.d_model));
  if (p.num_experts < 1) {
    return FieldError("num_experts", absl::StrCat("expected >= 1, got ", p.num_experts));
  }
  if (p.num_tokens > 0) {
    if (p.hidden == nullptr) return FieldError("hidden", "null");
    if (p.router_weight == nullptr) return FieldError("router_weight", "null");
    if (p.logits == nullptr) return FieldError("logits", "null");
  }
  return absl::OkStatus();
}

absl::Status RouterGemm(cublasHandle_t handle, const RouterGemmParams& p, cudaStream_t stream) {
  MOE_RETURN_IF_ERROR(CheckRouterGemmParams(p));
  if (p.num_tokens == 0) return absl::OkStatus();
  MOE_CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle, stream));
  // Row-major logits [T, E] = hidden [T, d] . W [E, d]^T is column-major logits^T [E, T] =
  // W^T (W read column-major as [d, E], transposed) . hidden^T (read as [d, T]).
  const float alpha = 1.0f, beta = 0.0f;
  const bool f32 = p.dtype == RowDtype::kF32;
  const cudaDataType_t type = f32 ? CUDA_R_32F : CUDA_R_16BF;
  MOE_CUBLAS_RETURN_IF_ERROR(cublasGemmEx_64(
      handle, CUBLAS_OP_T, CUBLAS_OP_N, p.num_experts, p.num_tokens, p.d_model, &alpha,
      p.router_weight, type, p.d_model, p.hidden, type, p.d_model, &beta, p.logits, CUDA_R_32F,
      p.num_experts, f32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda
