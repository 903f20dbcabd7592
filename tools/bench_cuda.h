// The CUDA backend of the `moe` command: `moe bench --backend cuda` (grouped GEMM rates against
// ceilings measured in the same run) and the forward behind `moe run --backend cuda`.
// Built into every `moe`; without a CUDA build or a visible GPU they return a clear error.
#pragma once

#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "configs/moe_config.pb.h"
#include "moe/base/tensor.h"
#include "moe/layer_weights.h"
#include "moe/moe_layer.h"

ABSL_DECLARE_FLAG(std::string, backend);

// Defaults of `moe bench --backend cuda`: the shapes (DeepSeek-V3 experts; decode
// T = 1..64 and a T = 4096 prefill).
#define MOE_DEFAULT_CUDA_BENCH_CONFIG "deepseek-v3"
#define MOE_DEFAULT_CUDA_BENCH_TOKENS "1,8,16,32,64,4096"

namespace moe::tools {

// --backend: true for "cuda", false for "cpu" (the default); kInvalidArgument otherwise.
absl::StatusOr<bool> CudaBackendRequested();

// kFailedPrecondition unless this `moe` was built with CUDA and a CUDA device is visible
// (the message starts with "--backend cuda: ").
absl::Status CheckCudaBackendAvailable();

// `moe run --backend cuda`: the layer's forward on GPU 0 (cuBLAS grouped GEMM, BF16 experts).
absl::StatusOr<LayerOutput> CudaForward(const config::LayerConfig& config,
                                        const MoeLayerWeights& weights, const Tensor& hidden,
                                        StageTimes* times);

// `moe bench --backend cuda` (its own flag checks; exit code as the other subcommands).
int CudaBenchCommand(const std::vector<std::string>& positional);

}  // namespace moe::tools
