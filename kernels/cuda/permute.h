// Moving token rows into expert-major order and back on the GPU (kernels/cpu/permute.h's
// semantics): gather with a cast to the compute dtype, and the weighted combine in top-k order
// plus the shared experts. Rows move as 16-byte vectors when the width and alignment allow.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/row_dtype.h"

namespace moe::kernels::cuda {

// dst[r] = cast(src[slot_of_row[r] / top_k]) for r in [0, num_rows). slot_of_row[r] < 0 (a row
// past the plan's last kept row) or naming a token >= num_tokens gives a zero row. A null
// slot_of_row is the identity (dst[r] = src[r], top_k ignored): a plain cast.
struct PermuteRowsParams {
  const void* src = nullptr;  // [num_tokens, d_model]
  RowDtype src_dtype = RowDtype::kF32;
  const int64_t* slot_of_row = nullptr;  // [num_rows] or null
  void* dst = nullptr;                   // [num_rows, d_model]
  RowDtype dst_dtype = RowDtype::kBF16;
  int64_t num_tokens = 0;
  int64_t num_rows = 0;
  int64_t d_model = 0;
  int32_t top_k = 1;
};

// out[t] = sum_j weights[t, j] * rows[row_of_slot[t * top_k + j]] in j order (rows -1 or out of
// [0, num_rows) add nothing), then + shared_scale[t] * shared[t] (scale 1 when null), each step
// rounded as the CPU kernel rounds it (no fused multiply-add). Tokens >= *num_valid_tokens get
// zero rows.
struct UnpermuteReduceParams {
  const void* rows = nullptr;  // [num_rows, d_model], expert outputs
  RowDtype rows_dtype = RowDtype::kF32;
  const int64_t* row_of_slot = nullptr;  // [num_tokens * top_k]
  const float* weights = nullptr;        // [num_tokens, top_k]
  const void* shared = nullptr;          // [num_tokens, d_model] or null
  RowDtype shared_dtype = RowDtype::kF32;
  const float* shared_scale = nullptr;        // [num_tokens] or null
  const int64_t* num_valid_tokens = nullptr;  // device scalar; null = all tokens
  float* out = nullptr;                       // [num_tokens, d_model]
  int64_t num_tokens = 0;
  int64_t num_rows = 0;
  int64_t d_model = 0;
  int32_t top_k = 1;
};

// Threads per block of both kernels (a block handles one row or token at a time).
inline constexpr int kPermuteThreads = 128;

// Whether the launchers use 8-element vector accesses for these params (every row pointer
// 16-byte aligned and d_model % 8 == 0); else they use scalar accesses.
bool PermuteUsesVectors(const PermuteRowsParams& p);
bool UnpermuteUsesVectors(const UnpermuteReduceParams& p);

// kInvalidArgument naming the field; no device access.
absl::Status CheckPermuteRowsParams(const PermuteRowsParams& p);
absl::Status CheckUnpermuteReduceParams(const UnpermuteReduceParams& p);

// Validate, then launch on `stream` (no host sync).
absl::Status PermuteRows(const PermuteRowsParams& p, cudaStream_t stream);
absl::Status UnpermuteReduce(const UnpermuteReduceParams& p, cudaStream_t stream);

}  // namespace moe::kernels::cuda
