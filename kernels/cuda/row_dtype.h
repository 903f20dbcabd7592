// Element types of activation rows on the GPU (hidden states, expert inputs and outputs).
#pragma once

#include <cstdint>

namespace moe::kernels::cuda {

enum class RowDtype {
  kF32,   // float
  kBF16,  // __nv_bfloat16
};

inline int64_t RowDtypeSize(RowDtype dtype) { return dtype == RowDtype::kF32 ? 4 : 2; }
inline const char* RowDtypeName(RowDtype dtype) { return dtype == RowDtype::kF32 ? "F32" : "BF16"; }

// Whether rows of `row_elements` elements starting at `base` allow the 8-element (16-byte and
// wider) vector accesses of row_vectors.cuh: base 16-byte aligned, width a multiple of 8.
inline bool VectorRowsOk(const void* base, int64_t row_elements) {
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && row_elements % 8 == 0;
}

}  // namespace moe::kernels::cuda
