#include <cuda_bf16.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/permute.h"
#include "kernels/cuda/row_vectors.cuh"

namespace moe::kernels::cuda {
namespace {

// Blocks are capped; each block loops over rows (tokens) with a grid stride.
constexpr int64_t kMaxBlocks = 65535;

absl::Status FieldError(const char* params, const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(params, ".", field, ": ", what));
}

template <typename Src, typename Dst, int kVec>
__global__ void __launch_bounds__(kPermuteThreads) PermuteRowsKernel(const PermuteRowsParams p) {
  const Src* src = static_cast<const Src*>(p.src);
  Dst* dst = static_cast<Dst*>(p.dst);
  const int64_t d = p.d_model;
  for (int64_t r = blockIdx.x; r < p.num_rows; r += gridDim.x) {
    int64_t token = r;
    if (p.slot_of_row != nullptr) {
      const int64_t slot = p.slot_of_row[r];
      token = slot < 0 ? -1 : slot / p.top_k;
    }
    const bool zero = token < 0 || token >= p.num_tokens;
    const Src* in = src + (zero ? 0 : token) * d;
    Dst* out = dst + r * d;
    if constexpr (kVec == kRowVector) {
      for (int64_t i = int64_t{threadIdx.x} * kVec; i < d; i += int64_t{blockDim.x} * kVec) {
        float v[kRowVector] = {};
        if (!zero) LoadFloats(in, i, v);
        StoreFloats(out, i, v);
      }
    } else {
      for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        out[i] = FromFloat<Dst>(zero ? 0.0f : ToFloat(in[i]));
      }
    }
  }
}

template <typename Rows, typename Shared, int kVec>
__global__ void __launch_bounds__(kPermuteThreads)
    UnpermuteReduceKernel(const UnpermuteReduceParams p) {
  const Rows* rows = static_cast<const Rows*>(p.rows);
  const Shared* shared = static_cast<const Shared*>(p.shared);
  const int64_t d = p.d_model;
  const int64_t valid = p.num_valid_tokens != nullptr ? *p.num_valid_tokens : p.num_tokens;
  for (int64_t t = blockIdx.x; t < p.num_tokens; t += gridDim.x) {
    float* out = p.out + t * d;
    const bool padding = t >= valid;
    const float scale = p.shared_scale != nullptr && !padding ? p.shared_scale[t] : 1.0f;
    const int step = kVec == kRowVector ? kRowVector : 1;
    for (int64_t i = int64_t{threadIdx.x} * step; i < d; i += int64_t{blockDim.x} * step) {
      float acc[kRowVector] = {};
      float y[kRowVector];
      for (int32_t j = 0; j < p.top_k && !padding; ++j) {
        const int64_t slot = t * p.top_k + j;
        const int64_t row = p.row_of_slot[slot];
        if (row < 0 || row >= p.num_rows) continue;
        const float w = p.weights[slot];
        if constexpr (kVec == kRowVector) {
          LoadFloats(rows + row * d, i, y);
        } else {
          y[0] = ToFloat(rows[row * d + i]);
        }
        for (int v = 0; v < step; ++v) acc[v] = __fadd_rn(acc[v], __fmul_rn(w, y[v]));
      }
      if (shared != nullptr && !padding) {
        if constexpr (kVec == kRowVector) {
          LoadFloats(shared + t * d, i, y);
        } else {
          y[0] = ToFloat(shared[t * d + i]);
        }
        for (int v = 0; v < step; ++v) acc[v] = __fadd_rn(acc[v], __fmul_rn(scale, y[v]));
      }
      if constexpr (kVec == kRowVector) {
        StoreFloats(out, i, acc);
      } else {
        out[i] = acc[0];
      }
    }
  }
}

unsigned Blocks(int64_t items) { return static_cast<unsigned>(std::min(items, kMaxBlocks)); }

template <typename Src, typename Dst>
void LaunchPermute(const PermuteRowsParams& p, bool vectors, cudaStream_t stream) {
  if (vectors) {
    PermuteRowsKernel<Src, Dst, kRowVector><<<Blocks(p.num_rows), kPermuteThreads, 0, stream>>>(p);
  } else {
    PermuteRowsKernel<Src, Dst, 1><<<Blocks(p.num_rows), kPermuteThreads, 0, stream>>>(p);
  }
}

template <typename Rows, typename Shared>
void LaunchUnpermute(const UnpermuteReduceParams& p, bool vectors, cudaStream_t stream) {
  if (vectors) {
    UnpermuteReduceKernel<Rows, Shared, kRowVector>
        <<<Blocks(p.num_tokens), kPermuteThreads, 0, stream>>>(p);
  } else {
    UnpermuteReduceKernel<Rows, Shared, 1><<<Blocks(p.num_tokens), kPermuteThreads, 0, stream>>>(p);
  }
}

absl::Status CheckSizes(const char* params, int64_t num_tokens, int64_t num_rows, int64_t d_model,
                        int32_t top_k) {
  if (num_tokens < 0) {
    return FieldError(params, "num_tokens", absl::StrCat("expected >= 0, got ", num_tokens));
  }
  if (num_rows < 0) {
    return FieldError(params, "num_rows", absl::StrCat("expected >= 0, got ", num_rows));
  }
  if (d_model < 1) {
    return FieldError(params, "d_model", absl::StrCat("expected >= 1, got ", d_model));
  }
  if (top_k < 1) return FieldError(params, "top_k", absl::StrCat("expected >= 1, got ", top_k));
  return absl::OkStatus();
}

}  // namespace

bool PermuteUsesVectors(const PermuteRowsParams& p) {
  return VectorRowsOk(p.src, p.d_model) && VectorRowsOk(p.dst, p.d_model);
}

bool UnpermuteUsesVectors(const UnpermuteReduceParams& p) {
  return VectorRowsOk(p.rows, p.d_model) && VectorRowsOk(p.out, p.d_model) &&
         (p.shared == nullptr || VectorRowsOk(p.shared, p.d_model));
}

absl::Status CheckPermuteRowsParams(const PermuteRowsParams& p) {
  constexpr char kName[] = "PermuteRowsParams";
  MOE_RETURN_IF_ERROR(CheckSizes(kName, p.num_tokens, p.num_rows, p.d_model, p.top_k));
  if (p.num_rows > 0) {
    if (p.dst == nullptr) return FieldError(kName, "dst", "null");
    if (p.src == nullptr && p.num_tokens > 0) return FieldError(kName, "src", "null");
  }
  return absl::OkStatus();
}

absl::Status CheckUnpermuteReduceParams(const UnpermuteReduceParams& p) {
  constexpr char kName[] = "UnpermuteReduceParams";
  MOE_RETURN_IF_ERROR(CheckSizes(kName, p.num_tokens, p.num_rows, p.d_model, p.top_k));
  if (p.num_tokens > 0) {
    if (p.out == nullptr) return FieldError(kName, "out", "null");
    if (p.row_of_slot == nullptr) return FieldError(kName, "row_of_slot", "null");
    if (p.weights == nullptr) return FieldError(kName, "weights", "null");
    if (p.rows == nullptr && p.num_rows > 0) return FieldError(kName, "rows", "null");
  }
  return absl::OkStatus();
}

absl::Status PermuteRows(const PermuteRowsParams& p, cudaStream_t stream) {
  MOE_RETURN_IF_ERROR(CheckPermuteRowsParams(p));
  if (p.num_rows == 0) return absl::OkStatus();
  const bool vectors = PermuteUsesVectors(p);
  const bool src_f32 = p.src_dtype == RowDtype::kF32;
  const bool dst_f32 = p.dst_dtype == RowDtype::kF32;
  if (src_f32 && dst_f32) LaunchPermute<float, float>(p, vectors, stream);
  if (src_f32 && !dst_f32) LaunchPermute<float, __nv_bfloat16>(p, vectors, stream);
  if (!src_f32 && dst_f32) LaunchPermute<__nv_bfloat16, float>(p, vectors, stream);
  if (!src_f32 && !dst_f32) LaunchPermute<__nv_bfloat16, __nv_bfloat16>(p, vectors, stream);
  return CudaStatus(cudaGetLastError(), "PermuteRowsKernel launch");
}

absl::Status UnpermuteReduce(const UnpermuteReduceParams& p, cudaStream_t stream) {
  MOE_RETURN_IF_ERROR(CheckUnpermuteReduceParams(p));
  if (p.num_tokens == 0) return absl::OkStatus();
  const bool vectors = UnpermuteUsesVectors(p);
  const bool rows_f32 = p.rows_dtype == RowDtype::kF32;
  const bool shared_f32 = p.shared_dtype == RowDtype::kF32;
  if (rows_f32 && shared_f32) LaunchUnpermute<float, float>(p, vectors, stream);
  if (rows_f32 && !shared_f32) LaunchUnpermute<float, __nv_bfloat16>(p, vectors, stream);
  if (!rows_f32 && shared_f32) LaunchUnpermute<__nv_bfloat16, float>(p, vectors, stream);
  if (!rows_f32 && !shared_f32) LaunchUnpermute<__nv_bfloat16, __nv_bfloat16>(p, vectors, stream);
  return CudaStatus(cudaGetLastError(), "UnpermuteReduceKernel launch");
}

}  // namespace moe::kernels::cuda
