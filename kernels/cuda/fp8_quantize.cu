#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/fp8_quantize.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kBlock = 128;            // elements per scale block
constexpr int kPerLane = kBlock / 32;  // one warp per block, 4 elements per lane
constexpr float kE4M3MaxValue = 448.0f;

template <QuantizeInputDtype kIn>
__device__ float LoadInput(const void* x, int64_t index) {
  if constexpr (kIn == QuantizeInputDtype::kBF16) {
    return __bfloat162float(static_cast<const __nv_bfloat16*>(x)[index]);
  } else {
    return static_cast<const float*>(x)[index];
  }
}

// One warp per (row, 128-column block), grid-stride over all blocks.
template <QuantizeInputDtype kIn>
__global__ void QuantizeActivationsE4M3Kernel(const QuantizeE4M3Params p) {
  const int lane = threadIdx.x % 32;
  const int64_t k_blocks = (p.k + kBlock - 1) / kBlock;
  const int64_t total = p.rows * k_blocks;
  const int64_t warps = int64_t{gridDim.x} * blockDim.x / 32;
  for (int64_t block = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32; block < total;
       block += warps) {
    const int64_t row = block / k_blocks, kb = block % k_blocks;
    float values[kPerLane];
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t col = kb * kBlock + lane * kPerLane + i;
      values[i] = col < p.k ? LoadInput<kIn>(p.x, row * p.k + col) : 0.0f;
      // NOTE: like the host reference, the amax covers the finite values only (NaN and inf
      // neither raise nor poison the scale).
      if (isfinite(values[i])) amax = fmaxf(amax, fabsf(values[i]));
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
    }
    // NOTE: IEEE division (nvcc's default -prec-div=true) so the scale and the quotients are
    // the host reference's bit for bit.
    const float scale = amax > 0.0f ? amax / kE4M3MaxValue : 1.0f;
    if (lane == 0) p.scales[row * k_blocks + kb] = scale;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t col = kb * kBlock + lane * kPerLane + i;
      if (col < p.k) {
        static_cast<__nv_fp8_storage_t*>(p.q)[row * p.k + col] =
            __nv_cvt_float_to_fp8(values[i] / scale, __NV_SATFINITE, __NV_E4M3);
      }
    }
  }
}

absl::Status FieldError(const char* field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("QuantizeE4M3Params.", field, " ", what));
}

}  // namespace

absl::Status QuantizeActivationsE4M3Gpu(const QuantizeE4M3Params& p, cudaStream_t stream) {
  if (p.rows < 0) return FieldError("rows", absl::StrCat("must not be negative, got ", p.rows));
  if (p.k < 1) return FieldError("k", absl::StrCat("must be at least 1, got ", p.k));
  if (p.input_dtype != QuantizeInputDtype::kF32 && p.input_dtype != QuantizeInputDtype::kBF16) {
    return FieldError("input_dtype",
                      absl::StrCat("has no such value: ", static_cast<int>(p.input_dtype)));
  }
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr) return FieldError("x", "is null");
  if (p.q == nullptr) return FieldError("q", "is null");
  if (p.scales == nullptr) return FieldError("scales", "is null");
  constexpr int kThreads = 256;
  const int64_t blocks_total = p.rows * ((p.k + kBlock - 1) / kBlock);
  const int64_t grid = std::min<int64_t>((blocks_total * 32 + kThreads - 1) / kThreads, 65536);
  if (p.input_dtype == QuantizeInputDtype::kBF16) {
    QuantizeActivationsE4M3Kernel<QuantizeInputDtype::kBF16>
        <<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(p);
  } else {
    QuantizeActivationsE4M3Kernel<QuantizeInputDtype::kF32>
        <<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(p);
  }
  return CudaStatus(cudaGetLastError(), "QuantizeActivationsE4M3Kernel<<<>>>");
}

}  // namespace moe::kernels::cuda
