#include "experts/expert_weights.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"

namespace moe::experts {

kernels::ActivationKind ActivationKindOf(config::Activation activation) {
  switch (activation) {
    case config::ACTIVATION_GEGLU:
    case config::ACTIVATION_GELU:
      return kernels::ActivationKind::kGelu;
    case config::ACTIVATION_RELU:
      return kernels::ActivationKind::kRelu;
    default:
      return kernels::ActivationKind::kSilu;
  }
}

ExpertWeights ZeroExpertWeights(config::Activation activation, int64_t num_experts, int64_t d_model,
                                int64_t d_ff) {
  ExpertWeights w;
  if (config::IsGated(activation))
    w.gate = Tensor::Zeros(DType::kF32, {num_experts, d_ff, d_model});
  w.up = Tensor::Zeros(DType::kF32, {num_experts, d_ff, d_model});
  w.down = Tensor::Zeros(DType::kF32, {num_experts, d_model, d_ff});
  return w;
}

absl::Status CheckExpertWeights(const ExpertWeights& w, config::Activation activation,
                                int64_t num_experts, int64_t d_model, int64_t d_ff,
                                absl::string_view what) {
  if (config::IsGated(activation)) {
    absl::Status s =
        CheckTensor(w.gate, DType::kF32, {num_experts, d_ff, d_model}, absl::StrCat(what, ".gate"));
    if (!s.ok()) return s;
  } else if (!w.gate.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ".gate: given, but the activation has no gate projection"));
  }
  absl::Status s =
      CheckTensor(w.up, DType::kF32, {num_experts, d_ff, d_model}, absl::StrCat(what, ".up"));
  if (!s.ok()) return s;
  return CheckTensor(w.down, DType::kF32, {num_experts, d_model, d_ff},
                     absl::StrCat(what, ".down"));
}

}  // namespace moe::experts
