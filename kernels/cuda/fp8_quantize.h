// Quantization of activations to FP8 e4m3 with DeepSeek-V3 1x128 block scales on the GPU, the
// device twin of QuantizeActivationsE4M3 (fp8_block_scale.h): same scales and same codes, bit for
// bit (amax / 448 over the finite values of each 1x128 block, 1 for an all-zero block; codes by
// round-to-nearest-even with saturation to +-448).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace moe::kernels::cuda {

enum class QuantizeInputDtype { kF32, kBF16 };

struct QuantizeE4M3Params {
  const void* x = nullptr;  // [rows, k] of input_dtype
  QuantizeInputDtype input_dtype = QuantizeInputDtype::kBF16;
  void* q = nullptr;        // [rows, k] e4m3 codes
  float* scales = nullptr;  // [rows, ceil(k / 128)]
  int64_t rows = 0;
  int64_t k = 0;
};

// Quantizes on `stream`, asynchronously. kInvalidArgument naming the QuantizeE4M3Params field
// (null pointers when rows > 0, negative rows, k < 1, unknown dtype); kInternal naming the CUDA
// call that failed. rows = 0 launches nothing.
absl::Status QuantizeActivationsE4M3Gpu(const QuantizeE4M3Params& p, cudaStream_t stream);

}  // namespace moe::kernels::cuda
