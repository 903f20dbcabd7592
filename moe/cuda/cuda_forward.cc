// CudaMoeLayer's entry points: the eager forward and the CUDA-graph decode path. The stages
// themselves are enqueued by CudaMoeLayer::Enqueue (cuda_layer.cc).
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "moe/base/status_macros.h"
#include "moe/cuda/cuda_layer.h"
#include "moe/cuda/cuda_workspace.h"

namespace moe::cuda {
namespace {

namespace kc = ::moe::kernels::cuda;

// The CPU's message for a bad row (gating/router.cc), so both backends read the same.
absl::Status CheckHiddenFinite(const Tensor& hidden) {
  const int64_t d = hidden.dim(1);
  const float* x = hidden.data<float>();
  for (int64_t t = 0; t < hidden.dim(0); ++t) {
    for (int64_t i = 0; i < d; ++i) {
      if (!std::isfinite(x[t * d + i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("hidden_states row of token ", t, " contains NaN or Inf"));
      }
    }
  }
  return absl::OkStatus();
}

// Events bounding the stages of one forward, destroyed with the object.
class StageEvents {
 public:
  absl::Status Create() {
    for (cudaEvent_t& e : events_) MOE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
    return absl::OkStatus();
  }
  ~StageEvents() {
    for (cudaEvent_t e : events_) {
      if (e != nullptr) cudaEventDestroy(e);
    }
  }
  cudaEvent_t* get() { return events_; }
  // Seconds between events i and i + 1 (after they completed).
  absl::StatusOr<double> Seconds(int i) const {
    float ms = 0;
    MOE_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]));
    return ms * 1e-3;
  }

 private:
  cudaEvent_t events_[5] = {};
};

// Writes {0, num_tokens} to ws.shared_offsets unless it holds that already (synchronous; never
// during a graph capture, which PrepareDecode arranges by setting it before).
absl::Status SetSharedOffsets(CudaLayerWorkspace& ws, int64_t num_tokens) {
  if (ws.shared_offsets_tokens == num_tokens) return absl::OkStatus();
  const int64_t offsets[2] = {0, num_tokens};
  MOE_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(ws.shared_offsets.get(), offsets, sizeof(offsets), cudaMemcpyHostToDevice));
  ws.shared_offsets_tokens = num_tokens;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LayerOutput> CudaMoeLayer::Forward(const Tensor& hidden_states, StageTimes* times) {
  MOE_ASSIGN_OR_RETURN(Tensor hidden, stages::HiddenAsF32(hidden_states, config_.d_model()));
  MOE_RETURN_IF_ERROR(CheckHiddenFinite(hidden));
  const int64_t num_tokens = hidden.dim(0);
  if (num_tokens == 0) {
    LayerOutput empty;
    empty.output = Tensor::Zeros(DType::kF32, {0, config_.d_model()});
    empty.topk_ids = Tensor::Zeros(DType::kI32, {0, config_.top_k()});
    empty.topk_weights = Tensor::Zeros(DType::kF32, {0, config_.top_k()});
    empty.expert_load.assign(static_cast<size_t>(config_.num_experts()), 0);
    if (times != nullptr) *times = StageTimes();
    return empty;
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  if (forward_ws_ == nullptr || forward_ws_->max_tokens < num_tokens) {
    forward_ws_.reset();  // free the old buffers first
    MOE_ASSIGN_OR_RETURN(forward_ws_, AllocateWorkspace(config_, num_tokens, options_.fp8_experts));
  }
  CudaLayerWorkspace& ws = *forward_ws_;
  MOE_RETURN_IF_ERROR(SetSharedOffsets(ws, num_tokens));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ws.hidden.get(), hidden.raw(),
                                           static_cast<size_t>(hidden.num_bytes()),
                                           cudaMemcpyHostToDevice, stream_));
  StageEvents events;
  if (times != nullptr) MOE_RETURN_IF_ERROR(events.Create());
  MOE_RETURN_IF_ERROR(Enqueue(ws, num_tokens, nullptr, times != nullptr ? events.get() : nullptr));
  MOE_ASSIGN_OR_RETURN(LayerOutput out, Collect(ws, num_tokens));
  if (times != nullptr) {
    MOE_ASSIGN_OR_RETURN(times->route, events.Seconds(0));
    MOE_ASSIGN_OR_RETURN(times->plan, events.Seconds(1));
    MOE_ASSIGN_OR_RETURN(times->experts, events.Seconds(2));
    MOE_ASSIGN_OR_RETURN(times->combine, events.Seconds(3));
  }
  return out;
}

absl::Status CudaMoeLayer::PrepareDecode(int64_t max_tokens, bool use_graph) {
  if (max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode max_tokens: expected >= 1, got ", max_tokens));
  }
  if (use_graph && options_.gemm == GroupedGemmImpl::kCublas) {
    return absl::UnimplementedError(
        "a CUDA-graph decode needs a grouped GEMM that reads the offsets on the device "
        "(reference or sm90); the cublas baseline copies them to the host");
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  if (decode_graph_ != nullptr) {
    MOE_CUDA_RETURN_IF_ERROR(cudaGraphExecDestroy(decode_graph_));
    decode_graph_ = nullptr;
  }
  decode_ws_.reset();
  MOE_ASSIGN_OR_RETURN(decode_ws_, AllocateWorkspace(config_, max_tokens, options_.fp8_experts));
  CudaLayerWorkspace& ws = *decode_ws_;
  MOE_RETURN_IF_ERROR(SetSharedOffsets(ws, max_tokens));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemset(ws.hidden.get(), 0, ws.hidden.bytes()));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemset(ws.valid.get(), 0, sizeof(int64_t)));
  if (!use_graph) return absl::OkStatus();

  // One eager run first: library and kernel initialization happens outside the capture.
  MOE_RETURN_IF_ERROR(Enqueue(ws, max_tokens, ws.valid.as<int64_t>(), nullptr));
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  const absl::Status enqueued = Enqueue(ws, max_tokens, ws.valid.as<int64_t>(), nullptr);
  cudaGraph_t graph = nullptr;
  const absl::Status ended =
      kc::CudaStatus(cudaStreamEndCapture(stream_, &graph), "cudaStreamEndCapture");
  MOE_RETURN_IF_ERROR(enqueued);
  MOE_RETURN_IF_ERROR(ended);
  const absl::Status instantiated =
      kc::CudaStatus(cudaGraphInstantiate(&decode_graph_, graph, 0), "cudaGraphInstantiate");
  cudaGraphDestroy(graph);
  return instantiated;
}

absl::StatusOr<LayerOutput> CudaMoeLayer::Decode(const Tensor& hidden_states) {
  if (decode_ws_ == nullptr) {
    return absl::FailedPreconditionError("Decode before PrepareDecode");
  }
  CudaLayerWorkspace& ws = *decode_ws_;
  MOE_ASSIGN_OR_RETURN(Tensor hidden, stages::HiddenAsF32(hidden_states, config_.d_model()));
  MOE_RETURN_IF_ERROR(CheckHiddenFinite(hidden));
  const int64_t num_tokens = hidden.dim(0);
  if (num_tokens > ws.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hidden_states: ", num_tokens, " tokens exceed the decode maximum of ", ws.max_tokens));
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  // Real rows, then zero padding rows, then the real count: all ordered before the replay.
  const size_t real_bytes = static_cast<size_t>(hidden.num_bytes());
  if (real_bytes > 0) {
    MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ws.hidden.get(), hidden.raw(), real_bytes,
                                             cudaMemcpyHostToDevice, stream_));
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(ws.hidden.as<char>() + real_bytes, 0,
                                           ws.hidden.bytes() - real_bytes, stream_));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ws.valid.get(), &num_tokens, sizeof(int64_t),
                                           cudaMemcpyHostToDevice, stream_));
  if (decode_graph_ != nullptr) {
    MOE_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(decode_graph_, stream_));
  } else {
    MOE_RETURN_IF_ERROR(Enqueue(ws, ws.max_tokens, ws.valid.as<int64_t>(), nullptr));
  }
  return Collect(ws, num_tokens);
}

}  // namespace moe::cuda
