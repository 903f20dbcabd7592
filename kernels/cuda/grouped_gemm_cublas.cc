#include "kernels/cuda/grouped_gemm_cublas.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/activation.h"
#include "kernels/cuda/cuda_status.h"

namespace moe::kernels::cuda {
namespace {

absl::Status FieldError(const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("GroupedGemmParams.", field, ": ", what));
}

}  // namespace

absl::Status CheckCublasGroupedGemmParams(const GroupedGemmParams& p) {
  if (p.dtype != GemmDtype::kBF16) {
    return absl::UnimplementedError(
        "GroupedGemmParams.dtype: the cuBLAS grouped baseline supports BF16 only (no FP8 "
        "block scales)");
  }
  if (p.num_experts < 1) {
    return FieldError("num_experts", absl::StrCat("expected >= 1, got ", p.num_experts));
  }
  constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();
  if (p.n < 1 || p.n > kMaxDim)
    return FieldError("n", absl::StrCat("expected 1 to 2^31-1, got ", p.n));
  if (p.k < 1 || p.k > kMaxDim)
    return FieldError("k", absl::StrCat("expected 1 to 2^31-1, got ", p.k));
  if (p.max_rows < 0) {
    return FieldError("max_rows", absl::StrCat("expected >= 0, got ", p.max_rows));
  }
  if (p.a == nullptr && p.max_rows > 0) return FieldError("a", "null");
  if (p.b == nullptr) return FieldError("b", "null");
  if (p.offsets == nullptr) return FieldError("offsets", "null");
  if (p.c == nullptr && p.max_rows > 0) return FieldError("c", "null");
  if (p.epilogue == GemmEpilogue::kSwiGLU && p.b_up == nullptr) {
    return FieldError("b_up", "null (required by the kSwiGLU epilogue)");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<GroupedGemmProblem>> GroupedGemmProblems(
    const std::vector<int64_t>& offsets, int64_t max_rows) {
  if (offsets.empty() || offsets[0] != 0) {
    return absl::InvalidArgumentError("GroupedGemmParams.offsets: offsets[0] must be 0");
  }
  std::vector<GroupedGemmProblem> problems;
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    const int64_t rows = offsets[e + 1] - offsets[e];
    if (rows < 0 || offsets[e + 1] > max_rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("GroupedGemmParams.offsets: expert ", e, " spans [", offsets[e], ", ",
                       offsets[e + 1], "), outside [0, max_rows = ", max_rows, "] or decreasing"));
    }
    if (rows > 0) problems.push_back({static_cast<int64_t>(e), offsets[e], rows});
  }
  return problems;
}

absl::StatusOr<std::unique_ptr<CublasGroupedGemm>> CublasGroupedGemm::Create() {
  std::unique_ptr<CublasGroupedGemm> gemm(new CublasGroupedGemm());
  MOE_CUBLAS_RETURN_IF_ERROR(cublasCreate(&gemm->handle_));
  return gemm;
}

CublasGroupedGemm::~CublasGroupedGemm() {
  if (handle_ != nullptr) cublasDestroy(handle_);
  cudaFree(pointers_);
  cudaFree(scratch_);
}

absl::Status CublasGroupedGemm::Reserve(void** buffer, size_t* capacity, size_t bytes) {
  if (bytes <= *capacity) return absl::OkStatus();
  MOE_CUDA_RETURN_IF_ERROR(cudaFree(*buffer));
  *buffer = nullptr;
  *capacity = 0;
  MOE_CUDA_RETURN_IF_ERROR(cudaMalloc(buffer, bytes));
  *capacity = bytes;
  return absl::OkStatus();
}

absl::Status CublasGroupedGemm::Run(const GroupedGemmParams& p, cudaStream_t stream) {
  MOE_RETURN_IF_ERROR(CheckCublasGroupedGemmParams(p));
  std::vector<int64_t> offsets(static_cast<size_t>(p.num_experts) + 1);
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      offsets.data(), p.offsets, sizeof(int64_t) * offsets.size(), cudaMemcpyDeviceToHost, stream));
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  MOE_ASSIGN_OR_RETURN(std::vector<GroupedGemmProblem> problems,
                       GroupedGemmProblems(offsets, p.max_rows));
  if (problems.empty()) return absl::OkStatus();

  const bool swiglu = p.epilogue == GemmEpilogue::kSwiGLU;
  const size_t row_elems = static_cast<size_t>(p.max_rows) * static_cast<size_t>(p.n);
  float* gate_out = nullptr;
  float* up_out = nullptr;
  if (swiglu) {
    MOE_RETURN_IF_ERROR(Reserve(&scratch_, &scratch_bytes_, 2 * sizeof(float) * row_elems));
    gate_out = static_cast<float*>(scratch_);
    up_out = gate_out + row_elems;
  }
  // Column-major view per expert: C_e^T [n, rows] = B_e (read as [k, n], transposed) .
  // A_e^T (read as [k, rows]). kSwiGLU adds the up projection as a second group per expert.
  const size_t out_elem = swiglu || p.out_dtype == GemmOutDtype::kF32 ? 4 : 2;
  const size_t weight_elems = static_cast<size_t>(p.n) * static_cast<size_t>(p.k);
  std::vector<const void*> a_ptrs, b_ptrs;
  std::vector<void*> c_ptrs;
  std::vector<int64_t> m, n, k, lda, ldb, ldc, group_size;
  std::vector<cublasOperation_t> trans_a, trans_b;
  std::vector<float> alpha, beta;
  for (int pass = 0; pass < (swiglu ? 2 : 1); ++pass) {
    const void* weights = pass == 0 ? p.b : p.b_up;
    char* out =
        swiglu ? reinterpret_cast<char*>(pass == 0 ? gate_out : up_out) : static_cast<char*>(p.c);
    for (const GroupedGemmProblem& g : problems) {
      a_ptrs.push_back(static_cast<const char*>(p.a) + g.first_row * p.k * 2);
      b_ptrs.push_back(static_cast<const char*>(weights) + g.expert * weight_elems * 2);
      c_ptrs.push_back(out + static_cast<size_t>(g.first_row * p.n) * out_elem);
      m.push_back(p.n);
      n.push_back(g.rows);
      k.push_back(p.k);
      lda.push_back(p.k);
      ldb.push_back(p.k);
      ldc.push_back(p.n);
      group_size.push_back(1);
      trans_a.push_back(CUBLAS_OP_T);
      trans_b.push_back(CUBLAS_OP_N);
      alpha.push_back(1.0f);
      beta.push_back(0.0f);
    }
  }
  const size_t groups = a_ptrs.size();
  MOE_RETURN_IF_ERROR(Reserve(&pointers_, &pointers_bytes_, 3 * sizeof(void*) * groups));
  void** device_pointers = static_cast<void**>(pointers_);
  const void** device_a = const_cast<const void**>(device_pointers);
  const void** device_b = device_a + groups;
  void** device_c = device_pointers + 2 * groups;
  // NOTE: pageable host -> device copies return once the source is staged, so the vectors may
  // die after these calls even though the copies are asynchronous.
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device_a, a_ptrs.data(), sizeof(void*) * groups,
                                           cudaMemcpyHostToDevice, stream));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device_b, b_ptrs.data(), sizeof(void*) * groups,
                                           cudaMemcpyHostToDevice, stream));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device_c, c_ptrs.data(), sizeof(void*) * groups,
                                           cudaMemcpyHostToDevice, stream));
  MOE_CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle_, stream));
  MOE_CUBLAS_RETURN_IF_ERROR(cublasGemmGroupedBatchedEx_64(
      handle_, trans_a.data(), trans_b.data(), m.data(), n.data(), k.data(), alpha.data(), device_a,
      CUDA_R_16BF, lda.data(), device_b, CUDA_R_16BF, ldb.data(), beta.data(), device_c,
      swiglu || p.out_dtype == GemmOutDtype::kF32 ? CUDA_R_32F : CUDA_R_16BF, ldc.data(),
      static_cast<int64_t>(groups), group_size.data(), CUBLAS_COMPUTE_32F));
  if (!swiglu) return absl::OkStatus();
  return Activation(
      {.gate = gate_out,
       .up = up_out,
       .out = p.c,
       .out_dtype = p.out_dtype == GemmOutDtype::kF32 ? RowDtype::kF32 : RowDtype::kBF16,
       .row_count = p.offsets + p.num_experts,
       .num_rows = p.max_rows,
       .width = p.n,
       .op = ActivationOp::kSilu},
      stream);
}

}  // namespace moe::kernels::cuda
