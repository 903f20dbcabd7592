// CudaMoeLayer: one MoE block forward on an NVIDIA GPU with the semantics of moe::MoeLayer
// (moe/moe_layer.h): router GEMM (cuBLAS, F32) -> fused scoring and top-k -> device routing
// plan -> permute to BF16 -> grouped GEMMs (gate/up, activation, down) -> shared experts ->
// combine in top-k order. Expert weights and activations are BF16, accumulation and the
// output F32, routing F32 as on the CPU.
//
// NOTE: written and compiled without a GPU; none of it has run on one yet (see README).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "configs/moe_config.pb.h"
#include "kernels/cuda/grouped_gemm_cublas.h"
#include "kernels/cuda/router_select.h"
#include "moe/cuda/cuda_weights.h"
#include "moe/cuda/device_buffer.h"
#include "moe/layer_weights.h"
#include "moe/moe_layer.h"

namespace moe::cuda {

// Which grouped GEMM runs the experts.
enum class GroupedGemmImpl {
  kReference,  // kernels/cuda/grouped_gemm_reference.h: plain, any GPU, graph-capturable
  kCublas,     // kernels/cuda/grouped_gemm_cublas.h: the baseline; syncs, not capturable
  kSm90,       // kernels/cuda/grouped_gemm_sm90.h: Hopper TMA/wgmma, fused SwiGLU
};

// "reference", "cublas", "sm90"; kInvalidArgument naming the value otherwise.
absl::StatusOr<GroupedGemmImpl> ParseGroupedGemmImpl(absl::string_view name);
const char* GroupedGemmImplName(GroupedGemmImpl impl);
// Whether this build holds the implementation (reference and sm90 come from their own files).
bool GroupedGemmImplBuilt(GroupedGemmImpl impl);

// Visible CUDA devices; 0 when there are none or the runtime fails.
int CudaDeviceCount();

// The fused router kernel's rule for `config.router()`.
kernels::cuda::RouterSpec RouterSpecOf(const config::LayerConfig& config);

struct CudaLayerOptions {
  GroupedGemmImpl gemm = GroupedGemmImpl::kCublas;
  int device = 0;
  // Experts (routed and shared) in FP8 e4m3 with 128x128 block scales, quantized at Create;
  // GEMM inputs quantized per 1x128 block on the fly. Needs the reference or sm90 GEMM.
  bool fp8_experts = false;
};

// Device buffers of one forward for up to max_tokens tokens (cuda_layer.cc).
struct CudaLayerWorkspace;

class CudaMoeLayer {
 public:
  // Validates the config and the weights as MoeLayer::Create does, checks the device and the
  // options (kUnimplemented for an implementation this build or this GPU lacks, or num_experts
  // > 512), uploads the weights.
  static absl::StatusOr<std::unique_ptr<CudaMoeLayer>> Create(config::LayerConfig config,
                                                              const MoeLayerWeights& weights,
                                                              CudaLayerOptions options = {});
  // Random weights made on the device (cuda_weights.h), for benchmarks of large layers.
  static absl::StatusOr<std::unique_ptr<CudaMoeLayer>> CreateRandom(config::LayerConfig config,
                                                                    uint64_t seed,
                                                                    CudaLayerOptions options = {});
  ~CudaMoeLayer();

  // hidden_states: F32 or BF16 [num_tokens, d_model] on the host. Same outputs and errors as
  // MoeLayer::Forward (a NaN/Inf hidden row or logits row is kInvalidArgument naming the
  // token). times: GPU time per stage from CUDA events. Not thread-safe (one stream and one
  // workspace per layer, grown to the largest batch seen).
  absl::StatusOr<LayerOutput> Forward(const Tensor& hidden_states, StageTimes* times = nullptr);

  // The decode path: a forward over a static max_tokens rows whose first num_tokens are real;
  // padded rows are masked out of routing (no slots, no expert load) and combine (zero rows).
  // PrepareDecode allocates its buffers and, with use_graph, captures one CUDA graph of the
  // whole forward (needs a grouped GEMM that reads offsets on the device: reference or sm90;
  // kUnimplemented with cublas). Decode copies the batch in, replays (or runs eagerly) and
  // copies the outputs back. Replays are bitwise equal to the eager run of the same path.
  absl::Status PrepareDecode(int64_t max_tokens, bool use_graph = true);
  absl::StatusOr<LayerOutput> Decode(const Tensor& hidden_states);

  const config::LayerConfig& config() const { return config_; }
  const CudaLayerOptions& options() const { return options_; }
  cudaStream_t stream() const { return stream_; }
  // BF16 bytes of one routed expert's gate, up and down weights.
  int64_t ExpertWeightBytes() const;

 private:
  CudaMoeLayer(config::LayerConfig config, CudaLayerOptions options);
  absl::Status Init();
  // Enqueues the whole forward over ws (no host sync unless the cuBLAS baseline runs).
  // valid: device scalar of real tokens or null. marks: 5 events (stage bounds) or null.
  absl::Status Enqueue(CudaLayerWorkspace& ws, int64_t num_tokens, const int64_t* valid,
                       cudaEvent_t* marks);
  absl::Status RunFfn(const DeviceFfnWeights& w, const void* x_bf16, const int64_t* offsets,
                      int64_t max_rows, CudaLayerWorkspace& ws, float* out);
  absl::Status Gemm(const kernels::cuda::GroupedGemmParams& p);
  // Copies outputs of the first num_tokens rows to the host and turns device flags into errors.
  absl::StatusOr<LayerOutput> Collect(CudaLayerWorkspace& ws, int64_t num_tokens);

  config::LayerConfig config_;
  CudaLayerOptions options_;
  DeviceLayerWeights weights_;
  cudaStream_t stream_ = nullptr;
  void* cublas_ = nullptr;  // cublasHandle_t of the router GEMMs
  DeviceBuffer cublas_workspace_;
  std::unique_ptr<kernels::cuda::CublasGroupedGemm> cublas_gemm_;
  std::unique_ptr<CudaLayerWorkspace> forward_ws_;
  std::unique_ptr<CudaLayerWorkspace> decode_ws_;
  cudaGraphExec_t decode_graph_ = nullptr;
};

}  // namespace moe::cuda
