// Float32 weights of a set of feed-forward experts, stacked, in Hugging Face layout [out, in].
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "configs/moe_config.pb.h"
#include "kernels/cpu/activation.h"
#include "moe/base/tensor.h"

namespace moe::experts {

struct ExpertWeights {
  Tensor gate;  // [num_experts, d_ff, d_model]; empty unless the activation is gated
  Tensor up;    // [num_experts, d_ff, d_model]
  Tensor down;  // [num_experts, d_model, d_ff]

  int64_t num_experts() const { return up.empty() ? 0 : up.dim(0); }
  int64_t d_ff() const { return up.empty() ? 0 : up.dim(1); }
  int64_t d_model() const { return up.empty() ? 0 : up.dim(2); }
};

// The elementwise activation of a config's activation (SwiGLU -> SiLU of the gate, ...).
kernels::ActivationKind ActivationKindOf(config::Activation activation);

// Zero-filled weights of the right shapes for `num_experts` experts.
ExpertWeights ZeroExpertWeights(config::Activation activation, int64_t num_experts, int64_t d_model,
                                int64_t d_ff);

// kInvalidArgument naming `what` (e.g. "experts") and the tensor whose dtype or shape
// disagrees with the expected sizes.
absl::Status CheckExpertWeights(const ExpertWeights& w, config::Activation activation,
                                int64_t num_experts, int64_t d_model, int64_t d_ff,
                                absl::string_view what);

}  // namespace moe::experts
