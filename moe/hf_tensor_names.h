// Names of the MoE-block tensors of one decoder layer in Hugging Face checkpoints.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

// The three projections of a gated feed-forward network, in Hugging Face layout [out, in].
enum class HfProjection { kGate, kUp, kDown };

// The tensor names of one decoder layer's MoE block for one model family. Shapes, with
// E = num_experts, d = d_model, f = d_ff and F = the shared experts' fused width:
//   router [E, d]; selection_bias [E]; expert gate/up [f, d], down [d, f];
//   shared gate/up [F, d], down [d, F]; shared_expert_gate [1, d].
class HfMoeTensorNames {
 public:
  // The names for `model_type` (mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2,
  // deepseek_v3) and decoder layer `layer`; kInvalidArgument for another model_type.
  static absl::StatusOr<HfMoeTensorNames> For(absl::string_view model_type, int layer);

  const std::string& router() const { return router_; }
  // "" when the family has no selection bias (all but deepseek_v3).
  const std::string& selection_bias() const { return selection_bias_; }
  // "" when the family has no sigmoid gate on its shared expert (all but qwen2_moe).
  const std::string& shared_expert_gate() const { return shared_expert_gate_; }
  // The weight of projection `p` of routed expert `expert`.
  std::string Expert(int64_t expert, HfProjection p) const;
  // The weight of projection `p` of the (fused) shared experts; "" when the family has none.
  std::string Shared(HfProjection p) const;

 private:
  HfMoeTensorNames() = default;
  const std::string& Suffix(HfProjection p) const;

  std::string router_;
  std::string selection_bias_;
  std::string shared_expert_gate_;
  std::string expert_prefix_;  // "model.layers.N.mlp.experts."
  std::string shared_prefix_;  // "model.layers.N.mlp.shared_expert(s)", "" when none
  std::string gate_suffix_, up_suffix_, down_suffix_;  // ".w1.weight", ".gate_proj.weight", ...
};

}  // namespace moe
