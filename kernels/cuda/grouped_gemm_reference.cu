#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/grouped_gemm_reference.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kScaleBlock = 128;  // FP8 scale block along k (and n for weights)

absl::Status FieldError(const char* field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("GroupedGemmParams.", field, " ", what));
}

template <typename T>
__device__ float Load(const void* base, int64_t index) {
  return static_cast<float>(static_cast<const T*>(base)[index]);
}

// sum_k A(row, k) * W(expert, col, k) for one weight tensor (gate or up), as documented in the
// header: FP8 sums per 128-wide k-block and scales each block's sum.
template <GemmDtype kDtype>
__device__ float Dot(const GroupedGemmParams& p, const void* w, const float* w_scales,
                     int64_t expert, int64_t row, int64_t col) {
  const int64_t a_row = row * p.k;
  const int64_t w_row = (expert * p.n + col) * p.k;
  if constexpr (kDtype == GemmDtype::kBF16) {
    float sum = 0.0f;
    for (int64_t i = 0; i < p.k; ++i) {
      sum += Load<__nv_bfloat16>(p.a, a_row + i) * Load<__nv_bfloat16>(w, w_row + i);
    }
    return sum;
  } else {
    const int64_t k_blocks = (p.k + kScaleBlock - 1) / kScaleBlock;
    const int64_t n_blocks = (p.n + kScaleBlock - 1) / kScaleBlock;
    float sum = 0.0f;
    for (int64_t kb = 0; kb < k_blocks; ++kb) {
      float block = 0.0f;
      for (int64_t i = kb * kScaleBlock; i < min(p.k, (kb + 1) * kScaleBlock); ++i) {
        block += Load<__nv_fp8_e4m3>(p.a, a_row + i) * Load<__nv_fp8_e4m3>(w, w_row + i);
      }
      const float a_scale = p.a_scales[row * k_blocks + kb];
      const float w_scale = w_scales[(expert * n_blocks + col / kScaleBlock) * k_blocks + kb];
      sum += block * (a_scale * w_scale);
    }
    return sum;
  }
}

// The expert whose rows contain `row`, or -1 when no expert does (row past offsets[E]).
__device__ int64_t ExpertOfRow(const int64_t* offsets, int64_t num_experts, int64_t row) {
  int64_t lo = 0, hi = num_experts;  // find the last e with offsets[e] <= row
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (offsets[mid] <= row) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return (offsets[lo] <= row && row < offsets[lo + 1]) ? lo : -1;
}

// One thread per output element (grid-stride over max_rows * n).
template <GemmDtype kDtype, GemmEpilogue kEpilogue, GemmOutDtype kOut>
__global__ void GroupedGemmReferenceKernel(const GroupedGemmParams p) {
  const int64_t total = p.max_rows * p.n;
  for (int64_t index = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; index < total;
       index += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = index / p.n, col = index % p.n;
    const int64_t expert = ExpertOfRow(p.offsets, p.num_experts, row);
    if (expert < 0) continue;
    float value = Dot<kDtype>(p, p.b, p.b_scales, expert, row, col);
    if constexpr (kEpilogue == GemmEpilogue::kSwiGLU) {
      const float up = Dot<kDtype>(p, p.b_up, p.b_up_scales, expert, row, col);
      value = value / (1.0f + expf(-value)) * up;
    }
    if constexpr (kOut == GemmOutDtype::kBF16) {
      static_cast<__nv_bfloat16*>(p.c)[index] = __float2bfloat16_rn(value);
    } else {
      static_cast<float*>(p.c)[index] = value;
    }
  }
}

template <GemmDtype kDtype, GemmEpilogue kEpilogue>
auto SelectKernel(GemmOutDtype out) {
  return out == GemmOutDtype::kBF16
             ? GroupedGemmReferenceKernel<kDtype, kEpilogue, GemmOutDtype::kBF16>
             : GroupedGemmReferenceKernel<kDtype, kEpilogue, GemmOutDtype::kF32>;
}

template <GemmDtype kDtype>
auto SelectKernel(GemmEpilogue epilogue, GemmOutDtype out) {
  return epilogue == GemmEpilogue::kStore ? SelectKernel<kDtype, GemmEpilogue::kStore>(out)
                                          : SelectKernel<kDtype, GemmEpilogue::kSwiGLU>(out);
}

}  // namespace

absl::Status ValidateGroupedGemmParams(const GroupedGemmParams& p) {
  if (p.num_experts < 1) {
    return FieldError("num_experts", absl::StrCat("must be at least 1, got ", p.num_experts));
  }
  if (p.n < 1) return FieldError("n", absl::StrCat("must be at least 1, got ", p.n));
  if (p.k < 1) return FieldError("k", absl::StrCat("must be at least 1, got ", p.k));
  if (p.max_rows < 0) {
    return FieldError("max_rows", absl::StrCat("must not be negative, got ", p.max_rows));
  }
  if (p.dtype != GemmDtype::kBF16 && p.dtype != GemmDtype::kFP8E4M3) {
    return FieldError("dtype", absl::StrCat("has no such value: ", static_cast<int>(p.dtype)));
  }
  if (p.epilogue != GemmEpilogue::kStore && p.epilogue != GemmEpilogue::kSwiGLU) {
    return FieldError("epilogue",
                      absl::StrCat("has no such value: ", static_cast<int>(p.epilogue)));
  }
  if (p.out_dtype != GemmOutDtype::kBF16 && p.out_dtype != GemmOutDtype::kF32) {
    return FieldError("out_dtype",
                      absl::StrCat("has no such value: ", static_cast<int>(p.out_dtype)));
  }
  int64_t a_elements, b_elements, c_elements;
  if (__builtin_mul_overflow(p.max_rows, p.k, &a_elements) ||
      __builtin_mul_overflow(p.max_rows, p.n, &c_elements) ||
      __builtin_mul_overflow(p.num_experts, p.n, &b_elements) ||
      __builtin_mul_overflow(b_elements, p.k, &b_elements)) {
    return FieldError("max_rows",
                      absl::StrCat("and the shapes overflow int64 (max_rows ", p.max_rows, ", n ",
                                   p.n, ", k ", p.k, ", num_experts ", p.num_experts, ")"));
  }
  if (p.max_rows == 0) return absl::OkStatus();  // nothing is read or written
  const bool fp8 = p.dtype == GemmDtype::kFP8E4M3;
  const bool swiglu = p.epilogue == GemmEpilogue::kSwiGLU;
  if (p.a == nullptr) return FieldError("a", "is null");
  if (p.b == nullptr) return FieldError("b", "is null");
  if (p.offsets == nullptr) return FieldError("offsets", "is null");
  if (p.c == nullptr) return FieldError("c", "is null");
  if (fp8 && p.a_scales == nullptr) return FieldError("a_scales", "is null (dtype kFP8E4M3)");
  if (fp8 && p.b_scales == nullptr) return FieldError("b_scales", "is null (dtype kFP8E4M3)");
  if (swiglu && p.b_up == nullptr) return FieldError("b_up", "is null (epilogue kSwiGLU)");
  if (fp8 && swiglu && p.b_up_scales == nullptr) {
    return FieldError("b_up_scales", "is null (dtype kFP8E4M3, epilogue kSwiGLU)");
  }
  return absl::OkStatus();
}

absl::Status GroupedGemmReference(const GroupedGemmParams& p, cudaStream_t stream) {
  MOE_RETURN_IF_ERROR(ValidateGroupedGemmParams(p));
  if (p.max_rows == 0) return absl::OkStatus();
  auto kernel = p.dtype == GemmDtype::kBF16
                    ? SelectKernel<GemmDtype::kBF16>(p.epilogue, p.out_dtype)
                    : SelectKernel<GemmDtype::kFP8E4M3>(p.epilogue, p.out_dtype);
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((p.max_rows * p.n + kThreads - 1) / kThreads, 65536);
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  return CudaStatus(cudaGetLastError(), "GroupedGemmReferenceKernel<<<>>>");
}

}  // namespace moe::kernels::cuda
