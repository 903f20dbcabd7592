#include "moe/cuda/cuda_layer.h"

#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "kernels/cuda/activation.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/permute.h"
#include "kernels/cuda/router_gemm.h"
#include "kernels/cuda/routing_plan.h"
#include "moe/base/status_macros.h"
#include "moe/cuda/cuda_workspace.h"
#if MOE_CUDA_HAVE_REFERENCE_GEMM
#include "kernels/cuda/grouped_gemm_reference.h"
#endif
#if MOE_CUDA_HAVE_SM90_GEMM
#include "kernels/cuda/grouped_gemm_sm90.h"
#endif
#if MOE_CUDA_HAVE_FP8_QUANTIZE
#include "kernels/cuda/fp8_quantize.h"
#endif

namespace moe::cuda {

namespace kc = ::moe::kernels::cuda;

#if MOE_CUDA_HAVE_REFERENCE_GEMM
constexpr bool kHaveReferenceGemm = true;
#else
constexpr bool kHaveReferenceGemm = false;
#endif
#if MOE_CUDA_HAVE_SM90_GEMM
constexpr bool kHaveSm90Gemm = true;
#else
constexpr bool kHaveSm90Gemm = false;
#endif
#if MOE_CUDA_HAVE_FP8_QUANTIZE
constexpr bool kHaveFp8Quantize = true;
#else
constexpr bool kHaveFp8Quantize = false;
#endif

absl::StatusOr<GroupedGemmImpl> ParseGroupedGemmImpl(absl::string_view name) {
  if (name == "reference") return GroupedGemmImpl::kReference;
  if (name == "cublas") return GroupedGemmImpl::kCublas;
  if (name == "sm90") return GroupedGemmImpl::kSm90;
  return absl::InvalidArgumentError(
      absl::StrCat("grouped GEMM '", name, "': expected reference, cublas or sm90"));
}

const char* GroupedGemmImplName(GroupedGemmImpl impl) {
  switch (impl) {
    case GroupedGemmImpl::kReference:
      return "reference";
    case GroupedGemmImpl::kCublas:
      return "cublas";
    case GroupedGemmImpl::kSm90:
      return "sm90";
  }
  return "?";
}

bool GroupedGemmImplBuilt(GroupedGemmImpl impl) {
  switch (impl) {
    case GroupedGemmImpl::kReference:
      return kHaveReferenceGemm;
    case GroupedGemmImpl::kCublas:
      return true;
    case GroupedGemmImpl::kSm90:
      return kHaveSm90Gemm;
  }
  return false;
}

int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

kc::RouterSpec RouterSpecOf(const config::LayerConfig& c) {
  const config::RouterConfig& r = c.router();
  kc::RouterSpec spec;
  spec.score = r.score_function() == config::SCORE_SIGMOID ? kc::RouterScore::kSigmoid
                                                           : kc::RouterScore::kSoftmax;
  spec.topk_then_score =
      spec.score == kc::RouterScore::kSoftmax && r.score_order() == config::TOPK_THEN_SCORE;
  spec.renormalize = r.renormalize();
  spec.num_groups = r.num_groups();
  spec.topk_groups = r.topk_groups();
  spec.group_score = r.group_score() == config::GROUP_SCORE_MAX ? kc::RouterGroupScore::kMax
                                                                : kc::RouterGroupScore::kTop2Sum;
  spec.routed_scaling_factor = config::RoutedScalingFactor(c);
  return spec;
}

CudaMoeLayer::CudaMoeLayer(config::LayerConfig config, CudaLayerOptions options)
    : config_(std::move(config)), options_(options) {}

CudaMoeLayer::~CudaMoeLayer() {
  if (decode_graph_ != nullptr) cudaGraphExecDestroy(decode_graph_);
  if (cublas_ != nullptr) cublasDestroy(static_cast<cublasHandle_t>(cublas_));
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::Status CudaMoeLayer::Init() {
  MOE_RETURN_IF_ERROR(config::ValidateLayerConfig(config_, "layer config"));
  if (config_.num_experts() > kc::kRouterMaxExperts) {
    return absl::UnimplementedError(absl::StrCat("the CUDA router handles num_experts up to ",
                                                 kc::kRouterMaxExperts, ", the config has ",
                                                 config_.num_experts()));
  }
  if (options_.fp8_experts && (options_.gemm == GroupedGemmImpl::kCublas || !kHaveFp8Quantize)) {
    return absl::UnimplementedError(
        "FP8 experts need the reference or sm90 grouped GEMM and the FP8 quantize kernel (the "
        "cublas baseline has no 128x128 block-scaled GEMM)");
  }
  if (!GroupedGemmImplBuilt(options_.gemm)) {
    return absl::UnimplementedError(absl::StrCat(
        "grouped GEMM '", GroupedGemmImplName(options_.gemm), "' is not part of this build"));
  }
  const int devices = CudaDeviceCount();
  if (devices == 0) return absl::FailedPreconditionError("no CUDA device visible");
  if (options_.device < 0 || options_.device >= devices) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", options_.device, ": expected 0 to ", devices - 1));
  }
#if MOE_CUDA_HAVE_SM90_GEMM
  if (options_.gemm == GroupedGemmImpl::kSm90) {
    if (!kc::GroupedGemmSm90Supported(options_.device)) {
      return absl::UnimplementedError(
          absl::StrCat("grouped GEMM 'sm90' needs a Hopper GPU "
                       "(compute capability 9.0); device ",
                       options_.device, " is not one"));
    }
    // Every projection's shape, so that an unsupported one fails here and not mid-forward.
    const int64_t d = config_.d_model();
    for (const int64_t d_ff : {config_.d_ff(), config::SharedExpertsDff(config_)}) {
      if (d_ff == 0) continue;
      for (const auto& [n, k] : {std::pair<int64_t, int64_t>{d_ff, d}, {d, d_ff}}) {
        kc::GroupedGemmParams probe;
        probe.dtype = options_.fp8_experts ? kc::GemmDtype::kFP8E4M3 : kc::GemmDtype::kBF16;
        probe.num_experts = 1;
        probe.n = n;
        probe.k = k;
        MOE_RETURN_IF_ERROR(kc::GroupedGemmSm90CanImplement(probe));
      }
    }
  }
#endif
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  cublasHandle_t handle = nullptr;
  MOE_CUBLAS_RETURN_IF_ERROR(cublasCreate(&handle));
  cublas_ = handle;
  // NOTE: a workspace of our own keeps cuBLAS from allocating during graph capture.
  constexpr size_t kCublasWorkspace = size_t{32} << 20;
  MOE_ASSIGN_OR_RETURN(cublas_workspace_, DeviceBuffer::Allocate(kCublasWorkspace));
  MOE_CUBLAS_RETURN_IF_ERROR(
      cublasSetWorkspace(handle, cublas_workspace_.get(), cublas_workspace_.bytes()));
  if (options_.gemm == GroupedGemmImpl::kCublas) {
    MOE_ASSIGN_OR_RETURN(cublas_gemm_, kc::CublasGroupedGemm::Create());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CudaMoeLayer>> CudaMoeLayer::Create(config::LayerConfig config,
                                                                   const MoeLayerWeights& weights,
                                                                   CudaLayerOptions options) {
  MOE_RETURN_IF_ERROR(config::ValidateLayerConfig(config, "layer config"));
  MOE_RETURN_IF_ERROR(CheckLayerWeights(config, weights));
  std::unique_ptr<CudaMoeLayer> layer(new CudaMoeLayer(std::move(config), options));
  MOE_RETURN_IF_ERROR(layer->Init());
  MOE_ASSIGN_OR_RETURN(layer->weights_,
                       UploadLayerWeights(layer->config_, weights, options.fp8_experts));
  return layer;
}

absl::StatusOr<std::unique_ptr<CudaMoeLayer>> CudaMoeLayer::CreateRandom(config::LayerConfig config,
                                                                         uint64_t seed,
                                                                         CudaLayerOptions options) {
  std::unique_ptr<CudaMoeLayer> layer(new CudaMoeLayer(std::move(config), options));
  MOE_RETURN_IF_ERROR(layer->Init());
  if (options.fp8_experts) {
    return absl::UnimplementedError("FP8 experts: random device weights are BF16 only; use Create");
  }
  MOE_ASSIGN_OR_RETURN(layer->weights_, RandomDeviceLayerWeights(layer->config_, seed));
  return layer;
}

int64_t CudaMoeLayer::ExpertWeightBytes() const {
  const int64_t matrices = config::IsGated(config_.activation()) ? 3 : 2;
  return 2 * matrices * config_.d_model() * config_.d_ff();
}

absl::Status CudaMoeLayer::Gemm(const kc::GroupedGemmParams& p) {
  switch (options_.gemm) {
    case GroupedGemmImpl::kCublas:
      return cublas_gemm_->Run(p, stream_);
    case GroupedGemmImpl::kReference:
#if MOE_CUDA_HAVE_REFERENCE_GEMM
      return kc::GroupedGemmReference(p, stream_);
#else
      break;
#endif
    case GroupedGemmImpl::kSm90:
#if MOE_CUDA_HAVE_SM90_GEMM
      return kc::GroupedGemmSm90(p, stream_);
#else
      break;
#endif
  }
  return absl::UnimplementedError(absl::StrCat("grouped GEMM '", GroupedGemmImplName(options_.gemm),
                                               "' is not part of this build"));
}

absl::Status CudaMoeLayer::RunFfn(const DeviceFfnWeights& w, const void* x_bf16,
                                  const int64_t* offsets, int64_t max_rows, CudaLayerWorkspace& ws,
                                  float* out) {
  // FP8 experts: the GEMM input (x, then h) quantized to e4m3 with 1x128 block scales first.
  auto input = [&](const void* bf16, int64_t k, kc::GroupedGemmParams* p) -> absl::Status {
    p->a = bf16;
    if (!w.fp8) return absl::OkStatus();
#if MOE_CUDA_HAVE_FP8_QUANTIZE
    p->dtype = kc::GemmDtype::kFP8E4M3;
    p->a = ws.fp8_x.get();
    p->a_scales = ws.fp8_x_scales.as<float>();
    return kc::QuantizeActivationsE4M3Gpu({.x = bf16,
                                           .input_dtype = kc::QuantizeInputDtype::kBF16,
                                           .q = ws.fp8_x.get(),
                                           .scales = ws.fp8_x_scales.as<float>(),
                                           .rows = max_rows,
                                           .k = k},
                                          stream_);
#else
    return absl::UnimplementedError("FP8 experts: this build has no FP8 quantize kernel");
#endif
  };
  kc::GroupedGemmParams p;
  MOE_RETURN_IF_ERROR(input(x_bf16, w.d_model, &p));
  p.offsets = offsets;
  p.num_experts = w.num_experts;
  p.max_rows = max_rows;
  p.n = w.d_ff;
  p.k = w.d_model;
  const config::Activation act = config_.activation();
  if (act == config::ACTIVATION_SWIGLU) {
    // gate/up with the fused SwiGLU epilogue: h = silu(x . gate^T) * (x . up^T), BF16.
    p.b = w.gate.get();
    p.b_scales = w.gate_scales.as<float>();
    p.b_up = w.up.get();
    p.b_up_scales = w.up_scales.as<float>();
    p.c = ws.ffn_h.get();
    p.epilogue = kc::GemmEpilogue::kSwiGLU;
    p.out_dtype = kc::GemmOutDtype::kBF16;
    MOE_RETURN_IF_ERROR(Gemm(p));
  } else {
    const bool gated = act == config::ACTIVATION_GEGLU;
    p.epilogue = kc::GemmEpilogue::kStore;
    p.out_dtype = kc::GemmOutDtype::kF32;
    if (gated) {
      p.b = w.gate.get();
      p.b_scales = w.gate_scales.as<float>();
      p.c = ws.ffn_gate.get();
      MOE_RETURN_IF_ERROR(Gemm(p));
    }
    p.b = w.up.get();
    p.b_scales = w.up_scales.as<float>();
    p.c = ws.ffn_up.get();
    MOE_RETURN_IF_ERROR(Gemm(p));
    MOE_RETURN_IF_ERROR(kc::Activation(
        {.gate = gated ? ws.ffn_gate.as<float>() : nullptr,
         .up = ws.ffn_up.as<float>(),
         .out = ws.ffn_h.get(),
         .out_dtype = kc::RowDtype::kBF16,
         .row_count = offsets + w.num_experts,
         .num_rows = max_rows,
         .width = w.d_ff,
         .op = act == config::ACTIVATION_RELU ? kc::ActivationOp::kRelu : kc::ActivationOp::kGelu},
        stream_));
  }
  // down: out = h . down^T, F32.
  kc::GroupedGemmParams down;
  MOE_RETURN_IF_ERROR(input(ws.ffn_h.get(), w.d_ff, &down));
  down.b = w.down.get();
  down.b_scales = w.down_scales.as<float>();
  down.offsets = offsets;
  down.c = out;
  down.num_experts = w.num_experts;
  down.n = w.d_model;
  down.k = w.d_ff;
  down.max_rows = max_rows;
  down.out_dtype = kc::GemmOutDtype::kF32;
  return Gemm(down);
}

absl::Status CudaMoeLayer::Enqueue(CudaLayerWorkspace& ws, int64_t num_tokens, const int64_t* valid,
                                   cudaEvent_t* marks) {
  const config::LayerConfig& c = config_;
  const int64_t d = c.d_model();
  const int64_t slots = num_tokens * c.top_k();
  cublasHandle_t handle = static_cast<cublasHandle_t>(cublas_);
  auto mark = [&](int i) {
    return marks == nullptr ? absl::OkStatus()
                            : kc::CudaStatus(cudaEventRecord(marks[i], stream_), "cudaEventRecord");
  };

  MOE_RETURN_IF_ERROR(mark(0));
  MOE_RETURN_IF_ERROR(kc::RouterGemm(handle,
                                     {.hidden = ws.hidden.get(),
                                      .router_weight = weights_.router.get(),
                                      .dtype = kc::RowDtype::kF32,
                                      .logits = ws.logits.as<float>(),
                                      .num_tokens = num_tokens,
                                      .d_model = d,
                                      .num_experts = c.num_experts()},
                                     stream_));
  MOE_RETURN_IF_ERROR(kc::RouterSelect({.logits = ws.logits.as<float>(),
                                        .selection_bias = weights_.selection_bias.as<float>(),
                                        .num_valid_tokens = valid,
                                        .topk_ids = ws.topk_ids.as<int32_t>(),
                                        .topk_weights = ws.topk_weights.as<float>(),
                                        .row_status = ws.row_status.as<int32_t>(),
                                        .num_tokens = num_tokens,
                                        .num_experts = c.num_experts(),
                                        .top_k = c.top_k(),
                                        .spec = RouterSpecOf(c)},
                                       stream_));
  MOE_RETURN_IF_ERROR(mark(1));

  const bool drops = c.capacity().policy() != config::DROPLESS;
  MOE_RETURN_IF_ERROR(
      kc::BuildDeviceRoutingPlan({.topk_ids = ws.topk_ids.as<int32_t>(),
                                  .num_valid_tokens = valid,
                                  .num_tokens = num_tokens,
                                  .top_k = c.top_k(),
                                  .num_experts = c.num_experts(),
                                  .capacity_factor = drops ? c.capacity().factor() : 0.0f,
                                  .demand = ws.demand.as<int64_t>(),
                                  .counts = ws.counts.as<int64_t>(),
                                  .offsets = ws.offsets.as<int64_t>(),
                                  .slot_of_row = ws.slot_of_row.as<int64_t>(),
                                  .row_of_slot = ws.row_of_slot.as<int64_t>(),
                                  .dropped_slots = ws.dropped.as<int64_t>(),
                                  .first_bad_slot = ws.first_bad_slot.as<unsigned long long>(),
                                  .workspace = ws.plan_workspace.get(),
                                  .workspace_bytes = ws.plan_workspace.bytes()},
                                 stream_));
  MOE_RETURN_IF_ERROR(mark(2));

  MOE_RETURN_IF_ERROR(kc::PermuteRows({.src = ws.hidden.get(),
                                       .src_dtype = kc::RowDtype::kF32,
                                       .slot_of_row = ws.slot_of_row.as<int64_t>(),
                                       .dst = ws.x_rows.get(),
                                       .dst_dtype = kc::RowDtype::kBF16,
                                       .num_tokens = num_tokens,
                                       .num_rows = slots,
                                       .d_model = d,
                                       .top_k = c.top_k()},
                                      stream_));
  MOE_RETURN_IF_ERROR(RunFfn(weights_.experts, ws.x_rows.get(), ws.offsets.as<int64_t>(), slots, ws,
                             ws.y_rows.as<float>()));
  const bool shared = weights_.shared.num_experts > 0;
  const bool shared_gate = c.shared_experts().sigmoid_gate();
  if (shared) {
    MOE_RETURN_IF_ERROR(kc::PermuteRows({.src = ws.hidden.get(),
                                         .src_dtype = kc::RowDtype::kF32,
                                         .slot_of_row = nullptr,
                                         .dst = ws.x_shared.get(),
                                         .dst_dtype = kc::RowDtype::kBF16,
                                         .num_tokens = num_tokens,
                                         .num_rows = num_tokens,
                                         .d_model = d,
                                         .top_k = 1},
                                        stream_));
    MOE_RETURN_IF_ERROR(RunFfn(weights_.shared, ws.x_shared.get(), ws.shared_offsets.as<int64_t>(),
                               num_tokens, ws, ws.y_shared.as<float>()));
    if (shared_gate) {
      MOE_RETURN_IF_ERROR(kc::RouterGemm(handle,
                                         {.hidden = ws.hidden.get(),
                                          .router_weight = weights_.shared_gate.get(),
                                          .dtype = kc::RowDtype::kF32,
                                          .logits = ws.shared_scale.as<float>(),
                                          .num_tokens = num_tokens,
                                          .d_model = d,
                                          .num_experts = 1},
                                         stream_));
      MOE_RETURN_IF_ERROR(kc::SigmoidInPlace(ws.shared_scale.as<float>(), num_tokens, stream_));
    }
  }
  MOE_RETURN_IF_ERROR(mark(3));

  MOE_RETURN_IF_ERROR(
      kc::UnpermuteReduce({.rows = ws.y_rows.get(),
                           .rows_dtype = kc::RowDtype::kF32,
                           .row_of_slot = ws.row_of_slot.as<int64_t>(),
                           .weights = ws.topk_weights.as<float>(),
                           .shared = shared ? ws.y_shared.get() : nullptr,
                           .shared_dtype = kc::RowDtype::kF32,
                           .shared_scale = shared_gate ? ws.shared_scale.as<float>() : nullptr,
                           .num_valid_tokens = valid,
                           .out = ws.out.as<float>(),
                           .num_tokens = num_tokens,
                           .num_rows = slots,
                           .d_model = d,
                           .top_k = c.top_k()},
                          stream_));
  return mark(4);
}

absl::StatusOr<LayerOutput> CudaMoeLayer::Collect(CudaLayerWorkspace& ws, int64_t num_tokens) {
  const config::LayerConfig& c = config_;
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  MOE_ASSIGN_OR_RETURN(std::vector<int32_t> status,
                       ws.row_status.ToHost<int32_t>(static_cast<size_t>(num_tokens)));
  for (int64_t t = 0; t < num_tokens; ++t) {
    if (status[t] == kc::kRouterRowBadLogits) {
      return absl::InvalidArgumentError(absl::StrCat(
          "router logits of token ", t, " are not finite (NaN or Inf; hidden values too large?)"));
    }
    if (status[t] == kc::kRouterRowBadBias) {
      return absl::InvalidArgumentError(
          absl::StrCat("selection scores of token ", t, " hold NaN (is selection_bias finite?)"));
    }
  }
  MOE_ASSIGN_OR_RETURN(std::vector<unsigned long long> bad,
                       ws.first_bad_slot.ToHost<unsigned long long>(1));
  if (bad[0] != std::numeric_limits<unsigned long long>::max()) {
    return absl::InternalError(absl::StrCat("device routing plan: slot ", bad[0], " (token ",
                                            bad[0] / c.top_k(),
                                            ") has an out-of-range or repeated expert id"));
  }
  LayerOutput result;
  const int64_t d = c.d_model();
  result.output = Tensor::Zeros(DType::kF32, {num_tokens, d});
  result.topk_ids = Tensor::Zeros(DType::kI32, {num_tokens, c.top_k()});
  result.topk_weights = Tensor::Zeros(DType::kF32, {num_tokens, c.top_k()});
  const std::pair<Tensor*, const DeviceBuffer*> copies[] = {
      {&result.output, &ws.out},
      {&result.topk_ids, &ws.topk_ids},
      {&result.topk_weights, &ws.topk_weights}};
  for (const auto& [host, device] : copies) {
    if (host->num_bytes() == 0) continue;
    MOE_CUDA_RETURN_IF_ERROR(cudaMemcpy(host->raw(), device->get(),
                                        static_cast<size_t>(host->num_bytes()),
                                        cudaMemcpyDeviceToHost));
  }
  MOE_ASSIGN_OR_RETURN(result.expert_load,
                       ws.demand.ToHost<int64_t>(static_cast<size_t>(c.num_experts())));
  MOE_ASSIGN_OR_RETURN(std::vector<int64_t> dropped, ws.dropped.ToHost<int64_t>(1));
  result.dropped_slots = dropped[0];
  return result;
}

}  // namespace moe::cuda
