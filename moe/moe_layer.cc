#include "moe/moe_layer.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "experts/expert_bank.h"
#include "gating/router.h"
#include "gating/routing_plan.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/permute.h"
#include "moe/base/scratch_buffer.h"
#include "moe/base/status_macros.h"
#include "moe/base/trace.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Keeps `t` when it is already `dtype` [d0, d1] (or [d0] when d1 < 0), else replaces it.
void Ensure(Tensor* t, DType dtype, int64_t d0, int64_t d1 = -1) {
  const bool fits = !t->empty() && t->dtype() == dtype &&
                    (d1 < 0 ? t->rank() == 1 && t->dim(0) == d0
                            : t->rank() == 2 && t->dim(0) == d0 && t->dim(1) == d1);
  if (fits) return;
  *t = d1 < 0 ? Tensor::Zeros(dtype, {d0}) : Tensor::Zeros(dtype, {d0, d1});
}

}  // namespace

// The intermediate buffers of one forward; vectors only grow.
struct ForwardWorkspace {
  Tensor hidden;  // F32 copy of BF16 hidden states
  std::vector<float> logits;
  gating::RoutingPlan plan;
  std::vector<float> rows;  // [num_rows, d_model] in plan order
  // [num_rows, d_model]; 64-byte aligned, so that the packed kernels can stream their results
  // into it (PackedGemmParams::stream_c).
  ScratchBuffer<float> expert_out;
  stages::SharedExpertsOutput shared;
};

namespace stages {

absl::Status CheckHidden(const Tensor& hidden, int64_t d_model) {
  if (hidden.empty() || hidden.rank() != 2 || hidden.dim(1) != d_model ||
      (hidden.dtype() != DType::kF32 && hidden.dtype() != DType::kBF16)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hidden_states: expected F32 or BF16 [num_tokens, ", d_model, "], got ",
        hidden.empty()
            ? "nothing"
            : absl::StrCat(DTypeName(hidden.dtype()), " ", ShapeString(hidden.shape()))));
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> HiddenAsF32(const Tensor& hidden, int64_t d_model) {
  MOE_RETURN_IF_ERROR(CheckHidden(hidden, d_model));
  if (hidden.dtype() == DType::kF32) return hidden.Clone();
  Tensor f32 = Tensor::Zeros(DType::kF32, hidden.shape());
  MOE_RETURN_IF_ERROR(
      ConvertToF32(hidden.dtype(), hidden.raw(), hidden.num_elements(), f32.data<float>()));
  return f32;
}

std::shared_ptr<const kernels::PackedMatrix> PackRouter(
    const MoeLayerWeights& weights, const experts::ExpertKernelOptions& options) {
  if (options.plain) return nullptr;
  const int64_t n = weights.router.dim(0);
  const int64_t k = weights.router.dim(1);
  return std::make_shared<const kernels::PackedMatrix>(
      kernels::PackMatrix(weights.router.data<float>(), k, n, k, kernels::WeightFormat::kF32));
}

absl::Status RouteTokens(const config::LayerConfig& c, const MoeLayerWeights& weights,
                         const kernels::PackedMatrix* packed_router, const Tensor& hidden,
                         LayerOutput* out) {
  const int64_t num_tokens = hidden.dim(0);
  out->topk_ids = Tensor::Zeros(DType::kI32, {num_tokens, c.top_k()});
  out->topk_weights = Tensor::Zeros(DType::kF32, {num_tokens, c.top_k()});
  Tensor logits = Tensor::Zeros(DType::kF32, {num_tokens, c.num_experts()});
  return gating::Route(
      c,
      {.hidden = hidden.data<float>(),
       .router_weight = weights.router.data<float>(),
       .selection_bias =
           c.router().selection_bias() ? weights.selection_bias.data<float>() : nullptr,
       .num_tokens = num_tokens,
       .packed_router = packed_router},
      {.topk_ids = out->topk_ids.data<int32_t>(),
       .topk_weights = out->topk_weights.data<float>(),
       .logits = logits.data<float>()});
}

absl::StatusOr<SharedExpertsOutput> RunSharedExperts(const config::LayerConfig& c,
                                                     const MoeLayerWeights& weights,
                                                     const experts::ExpertBank& shared_bank,
                                                     const Tensor& hidden) {
  SharedExpertsOutput shared;
  MOE_RETURN_IF_ERROR(RunSharedExpertsInto(c, weights, shared_bank, hidden, &shared));
  return shared;
}

absl::Status RunSharedExpertsInto(const config::LayerConfig& c, const MoeLayerWeights& weights,
                                  const experts::ExpertBank& shared_bank, const Tensor& hidden,
                                  SharedExpertsOutput* shared) {
  if (config::SharedExpertsDff(c) == 0) {
    shared->out = Tensor();
    shared->scale = Tensor();
    return absl::OkStatus();
  }
  const int64_t num_tokens = hidden.dim(0);
  const int64_t d_model = c.d_model();
  Ensure(&shared->out, DType::kF32, num_tokens, d_model);
  const int64_t shared_offsets[2] = {0, num_tokens};
  MOE_RETURN_IF_ERROR(shared_bank.Run(
      weights.shared,
      {.rows = hidden.data<float>(), .offsets = shared_offsets, .out = shared->out.data<float>()}));
  if (!c.shared_experts().sigmoid_gate()) {
    shared->scale = Tensor();
    return absl::OkStatus();
  }
  Ensure(&shared->scale, DType::kF32, num_tokens);
  float* scale = shared->scale.data<float>();
  kernels::MatmulNT({.a = hidden.data<float>(),
                     .lda = d_model,
                     .b = weights.shared_gate.data<float>(),
                     .ldb = d_model,
                     .c = scale,
                     .ldc = 1,
                     .m = num_tokens,
                     .n = 1,
                     .k = d_model});
  for (int64_t i = 0; i < num_tokens; ++i) scale[i] = 1.0f / (1.0f + std::exp(-scale[i]));
  return absl::OkStatus();
}

void CombineSlots(const float* rows, const int64_t* row_of_slot, const Tensor& topk_weights,
                  const SharedExpertsOutput& shared, Tensor* output) {
  const int64_t num_tokens = output->dim(0);
  const kernels::UnpermuteReduceParams combine = {
      .rows = rows,
      .row_of_slot = row_of_slot,
      .weights = topk_weights.data<float>(),
      .shared = shared.out.empty() ? nullptr : shared.out.data<float>(),
      .shared_scale = shared.scale.empty() ? nullptr : shared.scale.data<float>(),
      .out = output->data<float>(),
      .num_tokens = num_tokens,
      .d_model = output->dim(1),
      .top_k = static_cast<int32_t>(topk_weights.dim(1))};
  constexpr int64_t kTokenBlock = 8;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < num_tokens; b += kTokenBlock) {
    kernels::UnpermuteReduce(combine, b,
                             b + kTokenBlock < num_tokens ? b + kTokenBlock : num_tokens);
  }
}

}  // namespace stages

absl::StatusOr<MoeLayer> MoeLayer::Create(config::LayerConfig config, MoeLayerWeights weights,
                                          LayerOptions options) {
  return Create(std::move(config), std::make_shared<const MoeLayerWeights>(std::move(weights)),
                options);
}

absl::StatusOr<MoeLayer> MoeLayer::Create(config::LayerConfig config,
                                          std::shared_ptr<const MoeLayerWeights> weights,
                                          LayerOptions options) {
  if (weights == nullptr) return absl::InvalidArgumentError("layer weights: null");
  MOE_RETURN_IF_ERROR(config::ValidateLayerConfig(config, "layer config"));
  MOE_RETURN_IF_ERROR(CheckLayerWeights(config, *weights));
  MoeLayer layer(std::move(config), std::move(weights));
  const config::Activation activation = layer.config_.activation();
  const bool shared = config::SharedExpertsDff(layer.config_) > 0;
  layer.routed_ = experts::ExpertBank::Create(layer.weights_->experts, activation, options.experts);
  if (shared) {
    layer.shared_ =
        experts::ExpertBank::Create(layer.weights_->shared, activation, options.experts);
  }
  layer.packed_router_ = stages::PackRouter(*layer.weights_, options.experts);
  layer.workspaces_ = std::make_shared<ObjectPool<ForwardWorkspace>>();
  if (options.max_tokens > 0) {
    layer.routed_.Reserve(options.max_tokens * layer.config_.top_k());
    if (shared) layer.shared_.Reserve(options.max_tokens);
  }
  return layer;
}

absl::StatusOr<LayerOutput> MoeLayer::Forward(const Tensor& hidden_states,
                                              StageTimes* times) const {
  LayerOutput result;
  MOE_RETURN_IF_ERROR(ForwardInto(hidden_states, &result, times));
  return result;
}

absl::Status MoeLayer::ForwardInto(const Tensor& hidden_states, LayerOutput* out,
                                   StageTimes* times) const {
  const config::LayerConfig& c = config_;
  MOE_RETURN_IF_ERROR(stages::CheckHidden(hidden_states, c.d_model()));
  std::unique_ptr<ForwardWorkspace> ws = workspaces_->Take();
  const absl::Status status = ForwardWith(hidden_states, ws.get(), out, times);
  workspaces_->Give(std::move(ws));
  return status;
}

absl::Status MoeLayer::ForwardWith(const Tensor& hidden_states, ForwardWorkspace* ws,
                                   LayerOutput* out, StageTimes* times) const {
  const config::LayerConfig& c = config_;
  const int64_t num_tokens = hidden_states.dim(0);
  const int64_t d_model = c.d_model();
  StageTimes local_times;
  StageTimes& t = times != nullptr ? *times : local_times;
  const Tensor* hidden = &hidden_states;
  if (hidden_states.dtype() != DType::kF32) {
    Ensure(&ws->hidden, DType::kF32, num_tokens, d_model);
    MOE_RETURN_IF_ERROR(ConvertToF32(hidden_states.dtype(), hidden_states.raw(),
                                     hidden_states.num_elements(), ws->hidden.data<float>()));
    hidden = &ws->hidden;
  }
  Ensure(&out->output, DType::kF32, num_tokens, d_model);
  Ensure(&out->topk_ids, DType::kI32, num_tokens, c.top_k());
  Ensure(&out->topk_weights, DType::kF32, num_tokens, c.top_k());

  trace::TraceScope forward_scope("moe_layer", "stage");
  forward_scope.Arg("tokens", num_tokens);

  Clock::time_point start = Clock::now();
  {
    trace::TraceScope scope("route", "stage");
    ws->logits.resize(static_cast<size_t>(num_tokens * c.num_experts()));
    MOE_RETURN_IF_ERROR(gating::Route(
        c,
        {.hidden = hidden->data<float>(),
         .router_weight = weights_->router.data<float>(),
         .selection_bias =
             c.router().selection_bias() ? weights_->selection_bias.data<float>() : nullptr,
         .num_tokens = num_tokens,
         .packed_router = packed_router_.get()},
        {.topk_ids = out->topk_ids.data<int32_t>(),
         .topk_weights = out->topk_weights.data<float>(),
         .logits = ws->logits.data()}));
  }
  t.route = SecondsSince(start);

  start = Clock::now();
  gating::RoutingPlan& plan = ws->plan;
  {
    trace::TraceScope scope("plan", "stage");
    MOE_RETURN_IF_ERROR(gating::BuildRoutingPlanInto(out->topk_ids.data<int32_t>(), num_tokens,
                                                     c.top_k(), c.num_experts(),
                                                     config::ExpertCapacity(c, num_tokens), &plan));
  }
  out->expert_load.assign(plan.demand.begin(), plan.demand.end());
  out->dropped_slots = plan.dropped_slots;
  t.plan = SecondsSince(start);

  start = Clock::now();
  {
    trace::TraceScope scope("experts", "stage");
    scope.Arg("rows", plan.num_rows());
    const int64_t num_rows = plan.num_rows();
    ws->expert_out.Reserve(num_rows * d_model);
    experts::ExpertBatch batch = {.offsets = plan.offsets.data(), .out = ws->expert_out.data()};
    if (routed_.GathersRows()) {
      // The packed bank reads each row from its token, in the format its kernels take.
      batch.tokens = hidden->data<float>();
      batch.slot_of_row = plan.slot_of_row.data();
      batch.top_k = c.top_k();
    } else {
      ws->rows.resize(static_cast<size_t>(num_rows * d_model));
      kernels::PermuteRows({.src = hidden->data<float>(),
                            .slot_of_row = plan.slot_of_row.data(),
                            .dst = ws->rows.data(),
                            .num_rows = num_rows,
                            .d_model = d_model,
                            .top_k = c.top_k()});
      batch.rows = ws->rows.data();
    }
    MOE_RETURN_IF_ERROR(routed_.Run(weights_->experts, batch));
    trace::TraceScope shared_scope("shared_experts", "stage");
    MOE_RETURN_IF_ERROR(stages::RunSharedExpertsInto(c, *weights_, shared_, *hidden, &ws->shared));
  }
  t.experts = SecondsSince(start);

  start = Clock::now();
  {
    trace::TraceScope scope("combine", "stage");
    stages::CombineSlots(ws->expert_out.data(), plan.row_of_slot.data(), out->topk_weights,
                         ws->shared, &out->output);
  }
  t.combine = SecondsSince(start);
  return absl::OkStatus();
}

}  // namespace moe
