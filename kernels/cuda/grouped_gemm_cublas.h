// The cuBLAS grouped GEMM baseline over experts (cublasGemmGroupedBatchedEx_64), taking the
// GroupedGemmParams every GPU implementation shares. It copies the offsets to the host (one
// stream synchronization per call), so it cannot be captured in a CUDA graph: it is the
// baseline the Hopper kernel is measured against, not the decode path.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/grouped_gemm_params.h"

namespace moe::kernels::cuda {

// kInvalidArgument naming the field ("GroupedGemmParams.n: ...") for a bad value,
// kUnimplemented for FP8 (cuBLAS has no 128x128 block-scaled grouped GEMM); no device access.
absl::Status CheckCublasGroupedGemmParams(const GroupedGemmParams& p);

// One expert's problem, in the row-major terms of GroupedGemmParams.
struct GroupedGemmProblem {
  int64_t expert = 0;
  int64_t first_row = 0;  // offsets[expert]
  int64_t rows = 0;       // offsets[expert + 1] - offsets[expert], > 0
};

// The non-empty experts of host `offsets` [num_experts + 1], in expert order. kInvalidArgument
// when offsets[0] != 0, they decrease, or the last exceeds max_rows (naming the expert).
absl::StatusOr<std::vector<GroupedGemmProblem>> GroupedGemmProblems(
    const std::vector<int64_t>& offsets, int64_t max_rows);

class CublasGroupedGemm {
 public:
  // Creates the cuBLAS handle on the current device.
  static absl::StatusOr<std::unique_ptr<CublasGroupedGemm>> Create();
  ~CublasGroupedGemm();
  CublasGroupedGemm(const CublasGroupedGemm&) = delete;
  CublasGroupedGemm& operator=(const CublasGroupedGemm&) = delete;

  // c = a . b^T per expert (kStore), or silu(a . b^T) * (a . b_up^T) (kSwiGLU: two grouped
  // calls into float32 scratch and the activation kernel). BF16 only. Synchronizes `stream`
  // to read the offsets. Rows of c past offsets[num_experts] are not written. Not thread-safe.
  absl::Status Run(const GroupedGemmParams& p, cudaStream_t stream);

 private:
  CublasGroupedGemm() = default;
  absl::Status Reserve(void** buffer, size_t* capacity, size_t bytes);

  cublasHandle_t handle_ = nullptr;
  void* pointers_ = nullptr;  // device arrays of A, B and C pointers
  size_t pointers_bytes_ = 0;
  void* scratch_ = nullptr;  // kSwiGLU: float32 gate and up [max_rows, n] each
  size_t scratch_bytes_ = 0;
};

}  // namespace moe::kernels::cuda
