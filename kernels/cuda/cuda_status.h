// CUDA runtime, driver and cuBLAS return codes as absl::Status naming the call.
#pragma once

#include <cublas_api.h>
#include <cuda.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "moe/base/status_macros.h"

namespace moe::kernels::cuda {

// kInternal "CALL failed: <CUDA's message>"; Ok for cudaSuccess. Clears the error so a later
// call does not report it again.
inline absl::Status CudaStatus(cudaError_t error, const char* call) {
  if (error == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();
  return absl::InternalError(absl::StrCat(call, " failed: ", cudaGetErrorName(error), " (",
                                          cudaGetErrorString(error), ")"));
}

inline absl::Status CuStatus(CUresult result, const char* call) {
  if (result == CUDA_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: CUresult ", static_cast<int>(result)));
}

inline absl::Status CublasStatus(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: ", cublasGetStatusName(status), " (",
                                          cublasGetStatusString(status), ")"));
}

}  // namespace moe::kernels::cuda

// Evaluates a CUDA runtime call and returns its Status from the enclosing function on error.
#define MOE_CUDA_RETURN_IF_ERROR(call) \
  MOE_RETURN_IF_ERROR(::moe::kernels::cuda::CudaStatus((call), #call))
#define MOE_CUBLAS_RETURN_IF_ERROR(call) \
  MOE_RETURN_IF_ERROR(::moe::kernels::cuda::CublasStatus((call), #call))
