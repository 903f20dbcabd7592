// Deterministic uniform random fill on the GPU (benchmark weights and inputs too large to make
// on the host): element i gets a value in [-bound, bound) from a hash of (seed, i), the same
// for any launch shape.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/row_dtype.h"

namespace moe::kernels::cuda {

// The value FillUniform writes at index i, computed on the host (for tests and checks).
float UniformAt(uint64_t seed, int64_t i, float bound);

// dst[i] = UniformAt(seed, i, bound) rounded to `dtype`, for i < n. kInvalidArgument for
// n < 0, a null dst or a bound that is not finite and >= 0.
absl::Status FillUniform(void* dst, RowDtype dtype, int64_t n, uint64_t seed, float bound,
                         cudaStream_t stream);

}  // namespace moe::kernels::cuda
