#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/random_fill.h"
#include "kernels/cuda/row_vectors.cuh"

namespace moe::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// splitmix64's finalizer of seed * golden + i: a counter-based generator.
__host__ __device__ __forceinline__ float Uniform(uint64_t seed, int64_t i, float bound) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i) + 1;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const float unit = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1), 24 bits
  return (2.0f * unit - 1.0f) * bound;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    FillKernel(T* dst, int64_t n, uint64_t seed, float bound) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = FromFloat<T>(Uniform(seed, i, bound));
  }
}

}  // namespace

float UniformAt(uint64_t seed, int64_t i, float bound) { return Uniform(seed, i, bound); }

absl::Status FillUniform(void* dst, RowDtype dtype, int64_t n, uint64_t seed, float bound,
                         cudaStream_t stream) {
  if (n < 0)
    return absl::InvalidArgumentError(absl::StrCat("FillUniform: n must be >= 0, got ", n));
  if (!(bound >= 0.0f) || !std::isfinite(bound)) {
    return absl::InvalidArgumentError(
        absl::StrCat("FillUniform: bound must be finite and >= 0, got ", bound));
  }
  if (n == 0) return absl::OkStatus();
  if (dst == nullptr) return absl::InvalidArgumentError("FillUniform: dst is null");
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>(65535 * 8, (n + kThreads - 1) / kThreads));
  if (dtype == RowDtype::kF32) {
    FillKernel<<<blocks, kThreads, 0, stream>>>(static_cast<float*>(dst), n, seed, bound);
  } else {
    FillKernel<<<blocks, kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(dst), n, seed, bound);
  }
  return CudaStatus(cudaGetLastError(), "FillKernel launch");
}

}  // namespace moe::kernels::cuda
