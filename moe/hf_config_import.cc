// ImportHfConfig: Hugging Face config.json -> LayerConfig, family by family, as the
// transformers modeling code (and DeepSeek's reference code) defines each MoE block.
#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "moe/base/status_macros.h"
#include "moe/checkpoint/safetensors_json.h"
#include "moe/hf_import.h"

namespace moe {
namespace {

using json = nlohmann::json;
using config::LayerConfig;

constexpr int kMaxConfigJsonDepth = 32;
constexpr int64_t kMaxDim = int64_t{1} << 20;  // as ValidateLayerConfig
constexpr int64_t kMaxExperts = 65536;
constexpr int64_t kMaxLayers = int64_t{1} << 20;
constexpr char kSupported[] = "mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3";

// Typed, non-throwing access to the keys of a config.json object. A key that is absent or
// null takes the fallback of the *Or accessors; the required accessors reject it. Every
// error names the file and the key.
class Keys {
 public:
  Keys(const json& root, absl::string_view source, absl::string_view model_type)
      : root_(root), source_(source), model_type_(model_type) {}

  // Present with a value other than null.
  bool Has(const char* key) const {
    auto it = root_.find(key);
    return it != root_.end() && !it->is_null();
  }
  // Present, null included.
  bool Present(const char* key) const { return root_.contains(key); }

  absl::Status Error(const char* key, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": key \"", key, "\" ", what));
  }

  absl::StatusOr<int64_t> Int(const char* key, int64_t min, int64_t max) const {
    if (!Has(key)) {
      return Error(key, absl::StrCat(root_.contains(key) ? "is null" : "is missing",
                                     " (required for model_type ", model_type_, ")"));
    }
    const json& v = root_.at(key);
    if (!v.is_number_integer() ||
        (v.is_number_unsigned() &&
         v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
      return Error(key, absl::StrCat("must be an integer, got ", JsonTypeName(v), " ",
                                     QuoteForMessage(v.dump())));
    }
    const int64_t value = v.get<int64_t>();
    if (value < min || value > max) {
      return Error(key, absl::StrCat("must be in [", min, ", ", max, "], got ", value));
    }
    return value;
  }

  absl::StatusOr<int64_t> IntOr(const char* key, int64_t fallback, int64_t min, int64_t max) const {
    if (!Has(key)) return fallback;
    return Int(key, min, max);
  }

  absl::StatusOr<bool> BoolOr(const char* key, bool fallback) const {
    if (!Has(key)) return fallback;
    const json& v = root_.at(key);
    if (!v.is_boolean())
      return Error(key, absl::StrCat("must be a boolean, got ", JsonTypeName(v)));
    return v.get<bool>();
  }

  // A finite number > 0.
  absl::StatusOr<double> PositiveNumberOr(const char* key, double fallback) const {
    if (!Has(key)) return fallback;
    const json& v = root_.at(key);
    if (!v.is_number()) return Error(key, absl::StrCat("must be a number, got ", JsonTypeName(v)));
    const double value = v.get<double>();
    if (!(value > 0) || !std::isfinite(value) || value > std::numeric_limits<float>::max()) {
      return Error(key, absl::StrCat("must be a finite number > 0, got ", v.dump()));
    }
    return value;
  }

  absl::StatusOr<std::string> StringOr(const char* key, absl::string_view fallback) const {
    if (!Has(key)) return std::string(fallback);
    const json& v = root_.at(key);
    if (!v.is_string()) return Error(key, absl::StrCat("must be a string, got ", JsonTypeName(v)));
    return v.get<std::string>();
  }

  // An array of integers; empty when absent.
  absl::StatusOr<std::vector<int64_t>> IntListOr(const char* key) const {
    std::vector<int64_t> out;
    if (!Has(key)) return out;
    const json& v = root_.at(key);
    if (!v.is_array()) {
      return Error(key, absl::StrCat("must be an array of integers, got ", JsonTypeName(v)));
    }
    for (const json& item : v) {
      if (!item.is_number_integer() ||
          (item.is_number_unsigned() && item.get<uint64_t>() > uint64_t{1} << 62)) {
        return Error(key, absl::StrCat("must be an array of integers, holds ", JsonTypeName(item),
                                       " ", QuoteForMessage(item.dump())));
      }
      out.push_back(item.get<int64_t>());
    }
    return out;
  }

  // hidden_act of the experts' gated MLP: act(gate(x)) * up(x).
  absl::StatusOr<config::Activation> Activation() const {
    MOE_ASSIGN_OR_RETURN(std::string act, StringOr("hidden_act", "silu"));
    if (act == "silu" || act == "swish") return config::ACTIVATION_SWIGLU;
    if (act == "gelu") return config::ACTIVATION_GEGLU;
    return absl::UnimplementedError(absl::StrCat(source_,
                                                 ": key \"hidden_act\" = ", QuoteForMessage(act),
                                                 " is not supported (silu, swish, gelu)"));
  }

  absl::Status Dense(int layer, absl::string_view why) const {
    return absl::InvalidArgumentError(absl::StrCat(
        source_, ": layer ", layer, " is dense in this model (", why, "); it has no MoE block"));
  }

  absl::string_view source() const { return source_; }

 private:
  const json& root_;
  absl::string_view source_;
  absl::string_view model_type_;
};

// num_experts_per_tok, checked against the number of experts (named by `experts_key`).
absl::StatusOr<int32_t> TopK(const Keys& keys, int64_t num_experts, const char* experts_key) {
  MOE_ASSIGN_OR_RETURN(int64_t k, keys.Int("num_experts_per_tok", 1, kMaxExperts));
  if (k > num_experts) {
    return keys.Error("num_experts_per_tok",
                      absl::StrCat("(", k, ") exceeds ", experts_key, " (", num_experts, ")"));
  }
  return static_cast<int32_t>(k);
}

// MixtralSparseMoeBlock: softmax over all experts, top-k, renormalize. Every layer is sparse.
absl::Status MapMixtral(const Keys& keys, LayerConfig& c) {
  MOE_ASSIGN_OR_RETURN(int64_t e, keys.Int("num_local_experts", 1, kMaxExperts));
  MOE_ASSIGN_OR_RETURN(int64_t f, keys.Int("intermediate_size", 1, kMaxDim));
  MOE_ASSIGN_OR_RETURN(int32_t k, TopK(keys, e, "num_local_experts"));
  c.set_d_ff(f);
  c.set_num_experts(static_cast<int32_t>(e));
  c.set_top_k(k);
  c.mutable_router()->set_renormalize(true);
  return absl::OkStatus();
}

// Qwen2MoeSparseMoeBlock / Qwen3MoeSparseMoeBlock: softmax, top-k, renormalize when
// norm_topk_prob. Qwen2 adds one shared expert scaled by sigmoid(shared_expert_gate(x)).
absl::Status MapQwen(const Keys& keys, int layer, bool shared, LayerConfig& c) {
  MOE_ASSIGN_OR_RETURN(int64_t e, keys.Int("num_experts", 0, kMaxExperts));
  MOE_ASSIGN_OR_RETURN(int64_t step, keys.IntOr("decoder_sparse_step", 1, 1, kMaxLayers));
  MOE_ASSIGN_OR_RETURN(std::vector<int64_t> mlp_only, keys.IntListOr("mlp_only_layers"));
  // Qwen2MoeDecoderLayer: sparse iff layer not in mlp_only_layers and num_experts > 0 and
  // (layer + 1) % decoder_sparse_step == 0.
  if (absl::c_linear_search(mlp_only, int64_t{layer})) return keys.Dense(layer, "mlp_only_layers");
  if (e == 0) return keys.Dense(layer, "num_experts = 0");
  if ((layer + 1) % step != 0) {
    return keys.Dense(
        layer, absl::StrCat("decoder_sparse_step = ", step, ": only layers with (layer + 1) % ",
                            step, " == 0 are sparse"));
  }
  MOE_ASSIGN_OR_RETURN(int64_t f, keys.Int("moe_intermediate_size", 1, kMaxDim));
  MOE_ASSIGN_OR_RETURN(int32_t k, TopK(keys, e, "num_experts"));
  MOE_ASSIGN_OR_RETURN(bool norm, keys.BoolOr("norm_topk_prob", false));
  c.set_d_ff(f);
  c.set_num_experts(static_cast<int32_t>(e));
  c.set_top_k(k);
  c.mutable_router()->set_renormalize(norm);
  if (shared) {
    MOE_ASSIGN_OR_RETURN(int64_t shared_f, keys.Int("shared_expert_intermediate_size", 0, kMaxDim));
    if (shared_f > 0) {
      c.mutable_shared_experts()->set_count(1);
      c.mutable_shared_experts()->set_d_ff(shared_f);
      c.mutable_shared_experts()->set_sigmoid_gate(true);
    }
  }
  return absl::OkStatus();
}

// OlmoeSparseMoeBlock: softmax, top-k, renormalize when norm_topk_prob. Every layer sparse.
absl::Status MapOlmoe(const Keys& keys, LayerConfig& c) {
  MOE_ASSIGN_OR_RETURN(int64_t e, keys.Int("num_experts", 1, kMaxExperts));
  MOE_ASSIGN_OR_RETURN(int64_t f, keys.Int("intermediate_size", 1, kMaxDim));
  MOE_ASSIGN_OR_RETURN(int32_t k, TopK(keys, e, "num_experts"));
  MOE_ASSIGN_OR_RETURN(bool norm, keys.BoolOr("norm_topk_prob", false));
  c.set_d_ff(f);
  c.set_num_experts(static_cast<int32_t>(e));
  c.set_top_k(k);
  c.mutable_router()->set_renormalize(norm);
  return absl::OkStatus();
}

// Group-limited selection from n_group / topk_group (n_group <= 1 means no grouping).
absl::Status MapGroups(const Keys& keys, int64_t num_experts, LayerConfig& c) {
  MOE_ASSIGN_OR_RETURN(int64_t groups, keys.Int("n_group", 1, kMaxExperts));
  MOE_ASSIGN_OR_RETURN(int64_t topk_groups, keys.Int("topk_group", 1, kMaxExperts));
  if (groups <= 1) return absl::OkStatus();
  if (num_experts % groups != 0) {
    return keys.Error("n_group", absl::StrCat("(", groups, ") does not divide n_routed_experts (",
                                              num_experts, ")"));
  }
  if (topk_groups > groups) {
    return keys.Error("topk_group",
                      absl::StrCat("(", topk_groups, ") exceeds n_group (", groups, ")"));
  }
  c.mutable_router()->set_num_groups(static_cast<int32_t>(groups));
  c.mutable_router()->set_topk_groups(static_cast<int32_t>(topk_groups));
  return absl::OkStatus();
}

// DeepseekV2MoE / DeepseekV3MoE (DeepSeek's modeling_deepseek.py).
absl::Status MapDeepseek(const Keys& keys, int layer, bool v3, LayerConfig& c) {
  // Required, but null means a dense model.
  if (!keys.Present("n_routed_experts")) return keys.Int("n_routed_experts", 0, 0).status();
  MOE_ASSIGN_OR_RETURN(int64_t e, keys.IntOr("n_routed_experts", 0, 0, kMaxExperts));
  MOE_ASSIGN_OR_RETURN(int64_t first_dense, keys.IntOr("first_k_dense_replace", 0, 0, kMaxLayers));
  MOE_ASSIGN_OR_RETURN(int64_t freq, keys.IntOr("moe_layer_freq", 1, 1, kMaxLayers));
  // DeepseekV2DecoderLayer: sparse iff n_routed_experts and layer >= first_k_dense_replace
  // and layer % moe_layer_freq == 0.
  if (e == 0) return keys.Dense(layer, "n_routed_experts is not set");
  if (layer < first_dense) {
    return keys.Dense(layer, absl::StrCat("first_k_dense_replace = ", first_dense));
  }
  if (layer % freq != 0) {
    return keys.Dense(layer, absl::StrCat("moe_layer_freq = ", freq, ": only layers with layer % ",
                                          freq, " == 0 are sparse"));
  }
  MOE_ASSIGN_OR_RETURN(int64_t f, keys.Int("moe_intermediate_size", 1, kMaxDim));
  MOE_ASSIGN_OR_RETURN(int32_t k, TopK(keys, e, "n_routed_experts"));
  MOE_ASSIGN_OR_RETURN(int64_t shared, keys.IntOr("n_shared_experts", 0, 0, 64));
  MOE_ASSIGN_OR_RETURN(bool norm, keys.BoolOr("norm_topk_prob", false));
  MOE_ASSIGN_OR_RETURN(double scale, keys.PositiveNumberOr("routed_scaling_factor", 1.0));
  MOE_ASSIGN_OR_RETURN(std::string scoring,
                       keys.StringOr("scoring_func", v3 ? "sigmoid" : "softmax"));
  MOE_ASSIGN_OR_RETURN(std::string method,
                       keys.StringOr("topk_method", v3 ? "noaux_tc" : "greedy"));
  c.set_d_ff(f);
  c.set_num_experts(static_cast<int32_t>(e));
  c.set_top_k(k);
  if (shared > 0) {
    // One MLP `shared_experts` of width n_shared_experts * moe_intermediate_size.
    c.mutable_shared_experts()->set_count(static_cast<int32_t>(shared));
    c.mutable_shared_experts()->set_d_ff(f);
  }
  config::RouterConfig& r = *c.mutable_router();
  const std::string family = v3 ? "deepseek_v3" : "deepseek_v2";
  if (v3) {
    // Sigmoid scores; selection on scores + e_score_correction_bias, groups ranked by the sum
    // of their two best biased scores; weights from the unbiased scores, renormalized when
    // norm_topk_prob, then always multiplied by routed_scaling_factor.
    if (scoring != "sigmoid") {
      return absl::UnimplementedError(
          absl::StrCat(keys.source(), ": key \"scoring_func\" = ", QuoteForMessage(scoring),
                       " is not supported for ", family, " (sigmoid)"));
    }
    if (method != "noaux_tc") {
      return absl::UnimplementedError(
          absl::StrCat(keys.source(), ": key \"topk_method\" = ", QuoteForMessage(method),
                       " is not supported for ", family, " (noaux_tc)"));
    }
    r.set_score_function(config::SCORE_SIGMOID);
    r.set_selection_bias(true);
    r.set_group_score(config::GROUP_SCORE_TOP2_SUM);
    MOE_RETURN_IF_ERROR(MapGroups(keys, e, c));
    r.set_renormalize(norm);
    r.set_routed_scaling_factor(static_cast<float>(scale));
    return absl::OkStatus();
  }
  // V2: softmax scores; "greedy" top-k, or "group_limited_greedy" with groups ranked by their
  // best score. With top_k > 1 and norm_topk_prob the weights are renormalized and NOT scaled;
  // otherwise they are multiplied by routed_scaling_factor.
  if (scoring != "softmax") {
    return absl::UnimplementedError(
        absl::StrCat(keys.source(), ": key \"scoring_func\" = ", QuoteForMessage(scoring),
                     " is not supported for ", family, " (softmax)"));
  }
  r.set_score_function(config::SCORE_SOFTMAX);
  if (method == "group_limited_greedy") {
    r.set_group_score(config::GROUP_SCORE_MAX);
    MOE_RETURN_IF_ERROR(MapGroups(keys, e, c));
  } else if (method != "greedy") {
    return absl::UnimplementedError(
        absl::StrCat(keys.source(), ": key \"topk_method\" = ", QuoteForMessage(method),
                     " is not supported for ", family, " (greedy, group_limited_greedy)"));
  }
  if (k > 1 && norm) {
    r.set_renormalize(true);
  } else {
    r.set_routed_scaling_factor(static_cast<float>(scale));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<config::LayerConfig> ImportHfConfig(absl::string_view config_json, int layer,
                                                   absl::string_view source) {
  json root;
  const auto* bytes = reinterpret_cast<const uint8_t*>(config_json.data());
  absl::Status parsed =
      ParseStrictJson(bytes, bytes + config_json.size(), kMaxConfigJsonDepth, "key", &root);
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", parsed.message()));
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": must be a JSON object, got ", JsonTypeName(root)));
  }
  const Keys untyped(root, source, "any");
  MOE_ASSIGN_OR_RETURN(std::string model_type, untyped.StringOr("model_type", ""));
  if (model_type.empty()) return untyped.Error("model_type", "is missing");
  const bool mixtral = model_type == "mixtral", qwen2 = model_type == "qwen2_moe",
             qwen3 = model_type == "qwen3_moe", olmoe = model_type == "olmoe",
             v2 = model_type == "deepseek_v2", v3 = model_type == "deepseek_v3";
  if (!(mixtral || qwen2 || qwen3 || olmoe || v2 || v3)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": model_type ", QuoteForMessage(model_type),
                     " is not supported (supported: ", kSupported, ")"));
  }
  const Keys keys(root, source, model_type);
  MOE_ASSIGN_OR_RETURN(int64_t num_layers, keys.Int("num_hidden_layers", 1, kMaxLayers));
  if (layer < 0 || layer >= num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": layer ", layer, " is out of range [0, num_hidden_layers = ", num_layers, ")"));
  }
  LayerConfig c;
  c.set_name(absl::StrCat(model_type, " layer ", layer));
  MOE_ASSIGN_OR_RETURN(int64_t d_model, keys.Int("hidden_size", 1, kMaxDim));
  c.set_d_model(d_model);
  if (mixtral) MOE_RETURN_IF_ERROR(MapMixtral(keys, c));
  if (qwen2 || qwen3) MOE_RETURN_IF_ERROR(MapQwen(keys, layer, qwen2, c));
  if (olmoe) MOE_RETURN_IF_ERROR(MapOlmoe(keys, c));
  if (v2 || v3) MOE_RETURN_IF_ERROR(MapDeepseek(keys, layer, v3, c));
  MOE_ASSIGN_OR_RETURN(config::Activation activation, keys.Activation());
  c.set_activation(activation);
  // Informational: the weights are converted to float32 on load.
  const char* dtype_key = keys.Has("torch_dtype") ? "torch_dtype" : "dtype";
  absl::StatusOr<std::string> dtype = keys.StringOr(dtype_key, "float32");
  const bool bf16 = dtype.ok() && *dtype == "bfloat16";
  c.set_weight_dtype(bf16 ? config::DTYPE_BF16 : config::DTYPE_F32);
  MOE_RETURN_IF_ERROR(config::ValidateLayerConfig(c, source));
  return c;
}

}  // namespace moe
