#include "moe/hf_tensor_names.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe {

absl::StatusOr<HfMoeTensorNames> HfMoeTensorNames::For(absl::string_view model_type, int layer) {
  const std::string block = absl::StrCat("model.layers.", layer, ".");
  HfMoeTensorNames n;
  if (model_type == "mixtral") {
    // MixtralSparseMoeBlock: w1 = gate, w3 = up, w2 = down; no shared expert.
    const std::string moe = absl::StrCat(block, "block_sparse_moe.");
    n.router_ = absl::StrCat(moe, "gate.weight");
    n.expert_prefix_ = absl::StrCat(moe, "experts.");
    n.gate_suffix_ = ".w1.weight";
    n.up_suffix_ = ".w3.weight";
    n.down_suffix_ = ".w2.weight";
    return n;
  }
  const bool qwen2 = model_type == "qwen2_moe";
  const bool deepseek = model_type == "deepseek_v2" || model_type == "deepseek_v3";
  if (!qwen2 && !deepseek && model_type != "qwen3_moe" && model_type != "olmoe") {
    return absl::InvalidArgumentError(
        absl::StrCat("no Hugging Face tensor names for model_type \"", model_type,
                     "\" (supported: mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, "
                     "deepseek_v3)"));
  }
  const std::string mlp = absl::StrCat(block, "mlp.");
  n.router_ = absl::StrCat(mlp, "gate.weight");
  n.expert_prefix_ = absl::StrCat(mlp, "experts.");
  n.gate_suffix_ = ".gate_proj.weight";
  n.up_suffix_ = ".up_proj.weight";
  n.down_suffix_ = ".down_proj.weight";
  if (qwen2) {
    n.shared_prefix_ = absl::StrCat(mlp, "shared_expert");
    n.shared_expert_gate_ = absl::StrCat(mlp, "shared_expert_gate.weight");
  } else if (deepseek) {
    n.shared_prefix_ = absl::StrCat(mlp, "shared_experts");
  }
  if (model_type == "deepseek_v3") {
    n.selection_bias_ = absl::StrCat(mlp, "gate.e_score_correction_bias");
  }
  return n;
}

const std::string& HfMoeTensorNames::Suffix(HfProjection p) const {
  switch (p) {
    case HfProjection::kGate:
      return gate_suffix_;
    case HfProjection::kUp:
      return up_suffix_;
    case HfProjection::kDown:
      break;
  }
  return down_suffix_;
}

std::string HfMoeTensorNames::Expert(int64_t expert, HfProjection p) const {
  return absl::StrCat(expert_prefix_, expert, Suffix(p));
}

std::string HfMoeTensorNames::Shared(HfProjection p) const {
  if (shared_prefix_.empty()) return "";
  return absl::StrCat(shared_prefix_, Suffix(p));
}

}  // namespace moe
