#include "tests/support/hf_folder.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "moe/base/status_macros.h"
#include "moe/checkpoint/safetensors_writer.h"

namespace moe::testing {
namespace {

using json = nlohmann::json;

constexpr int64_t kVocab = 50;

bool IsQwen(const std::string& t) { return t == "qwen2_moe" || t == "qwen3_moe"; }
bool IsDeepseek(const std::string& t) { return t == "deepseek_v2" || t == "deepseek_v3"; }

// Rounds every element to the nearest BF16 value, in place.
void RoundToBf16(Tensor& t) {
  if (t.empty()) return;
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.num_elements(); ++i) p[i] = Bf16ToF32(F32ToBf16(p[i]));
}

void RoundToBf16(MoeLayerWeights& w) {
  for (Tensor* t : {&w.router, &w.selection_bias, &w.experts.gate, &w.experts.up, &w.experts.down,
                    &w.shared.gate, &w.shared.up, &w.shared.down, &w.shared_gate}) {
    RoundToBf16(*t);
  }
}

// Collects the tensors of each output file in storage dtype, applying the spec's omissions
// and wrong shapes.
class TensorSink {
 public:
  TensorSink(const HfFolderSpec& spec, int num_files)
      : spec_(spec),
        files_(spec.layout == HfLayout::kSharded ? static_cast<size_t>(num_files) : 1),
        rng_(spec.seed ^ 0x5eedULL) {}

  void SetFile(int file) { file_ = spec_.layout == HfLayout::kSharded ? file : 0; }

  // `src` holds the product of `shape` floats.
  void Add(const std::string& name, const float* src, std::vector<int64_t> shape) {
    if (name == spec_.omit_tensor) return;
    std::vector<float> values(src, src + Count(shape));
    if (name == spec_.misshape_tensor) {
      shape[0] += 1;
      values = RandomValues(Count(shape));
    }
    Tensor t = Tensor::Zeros(spec_.dtype, shape);
    for (size_t i = 0; i < values.size(); ++i) {
      if (spec_.dtype == DType::kBF16) {
        t.data<uint16_t>()[i] = F32ToBf16(values[i]);
      } else {
        t.data<float>()[i] = values[i];
      }
    }
    files_[static_cast<size_t>(file_)].push_back({name, std::move(t)});
  }

  // An unrelated tensor with random values.
  void AddRandom(const std::string& name, std::vector<int64_t> shape) {
    const std::vector<float> values = RandomValues(Count(shape));
    Add(name, values.data(), std::move(shape));
  }

  // Writes every file into `dir`; fills `file_of`.
  absl::Status Write(const std::string& dir, std::map<std::string, std::string>& file_of) {
    const std::map<std::string, std::string> metadata = {{"format", "pt"}};
    const int n = static_cast<int>(files_.size());
    json weight_map = json::object();
    int64_t total_size = 0;
    for (int i = 0; i < n; ++i) {
      const std::string file = spec_.layout == HfLayout::kSharded
                                   ? absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, n)
                                   : "model.safetensors";
      NamedTensors named;
      for (const auto& [name, tensor] : files_[static_cast<size_t>(i)]) {
        named.push_back({name, &tensor});
        file_of[name] = file;
        weight_map[name] = file;
        total_size += tensor.num_bytes();
      }
      MOE_RETURN_IF_ERROR(WriteSafetensors(absl::StrCat(dir, "/", file), named, metadata));
    }
    if (spec_.layout == HfLayout::kSharded) {
      const json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
      std::ofstream out(absl::StrCat(dir, "/model.safetensors.index.json"));
      out << index.dump(2);
      if (!out) return absl::InternalError("cannot write model.safetensors.index.json");
    }
    return absl::OkStatus();
  }

 private:
  static int64_t Count(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  std::vector<float> RandomValues(int64_t n) {
    std::uniform_real_distribution<float> dist(-0.1f, 0.1f);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = dist(rng_);
    return v;
  }

  const HfFolderSpec& spec_;
  std::vector<std::vector<std::pair<std::string, Tensor>>> files_;
  int file_ = 0;
  std::mt19937_64 rng_;
};

// The routed experts (or the fused shared experts when `shared`) of one layer.
void AddExperts(TensorSink& sink, const std::string& prefix, bool mixtral, bool shared,
                const experts::ExpertWeights& w) {
  const int64_t f = w.d_ff(), d = w.d_model();
  for (int64_t e = 0; e < w.num_experts(); ++e) {
    const std::string p = shared ? prefix : absl::StrCat(prefix, e, ".");
    sink.Add(absl::StrCat(p, mixtral ? "w1" : "gate_proj", ".weight"),
             w.gate.data<float>() + e * f * d, {f, d});
    sink.Add(absl::StrCat(p, mixtral ? "w2" : "down_proj", ".weight"),
             w.down.data<float>() + e * d * f, {d, f});
    sink.Add(absl::StrCat(p, mixtral ? "w3" : "up_proj", ".weight"), w.up.data<float>() + e * f * d,
             {f, d});
  }
}

// The MoE block of one sparse layer, named as the family's checkpoints name it.
void AddMoeBlock(TensorSink& sink, const HfFolderSpec& spec, int layer, const MoeLayerWeights& w) {
  const std::string& type = spec.model_type;
  const int64_t d = spec.d_model, e = spec.num_experts;
  if (type == "mixtral") {
    const std::string moe = absl::StrCat("model.layers.", layer, ".block_sparse_moe.");
    sink.Add(moe + "gate.weight", w.router.data<float>(), {e, d});
    AddExperts(sink, moe + "experts.", /*mixtral=*/true, /*shared=*/false, w.experts);
    return;
  }
  const std::string mlp = absl::StrCat("model.layers.", layer, ".mlp.");
  sink.Add(mlp + "gate.weight", w.router.data<float>(), {e, d});
  if (type == "deepseek_v3") {
    sink.Add(mlp + "gate.e_score_correction_bias", w.selection_bias.data<float>(), {e});
  }
  AddExperts(sink, mlp + "experts.", false, false, w.experts);
  if (type == "qwen2_moe" && spec.shared_d_ff > 0) {
    AddExperts(sink, mlp + "shared_expert.", false, true, w.shared);
    sink.Add(mlp + "shared_expert_gate.weight", w.shared_gate.data<float>(), {1, d});
  }
  if (IsDeepseek(type) && spec.num_shared > 0) {
    AddExperts(sink, mlp + "shared_experts.", false, true, w.shared);
  }
}

}  // namespace

json HfConfigJson(const HfFolderSpec& spec) {
  const std::string& type = spec.model_type;
  json j = {{"model_type", type},
            {"hidden_size", spec.d_model},
            {"num_hidden_layers", spec.num_layers},
            {"num_attention_heads", 4},
            {"num_key_value_heads", 2},
            {"vocab_size", kVocab},
            {"max_position_embeddings", 4096},
            {"rms_norm_eps", 1e-6},
            {"rope_theta", 10000.0},
            {"rope_scaling", nullptr},
            {"hidden_act", "silu"},
            {"tie_word_embeddings", false},
            {"torch_dtype", spec.dtype == DType::kBF16 ? "bfloat16" : "float32"},
            {"transformers_version", "4.46.0"}};
  if (type == "mixtral") {
    j["architectures"] = {"MixtralForCausalLM"};
    j["intermediate_size"] = spec.d_ff;
    j["num_local_experts"] = spec.num_experts;
    j["num_experts_per_tok"] = spec.top_k;
    j["router_aux_loss_coef"] = 0.02;
    j["sliding_window"] = nullptr;
  } else if (IsQwen(type)) {
    j["architectures"] = {type == "qwen2_moe" ? "Qwen2MoeForCausalLM" : "Qwen3MoeForCausalLM"};
    j["intermediate_size"] = spec.dense_d_ff;
    j["moe_intermediate_size"] = spec.d_ff;
    j["num_experts"] = spec.num_experts;
    j["num_experts_per_tok"] = spec.top_k;
    j["norm_topk_prob"] = spec.norm_topk_prob;
    j["decoder_sparse_step"] = 1;
    j["mlp_only_layers"] = spec.mlp_only_layers;
    j["use_sliding_window"] = false;
    j["router_aux_loss_coef"] = 0.001;
    if (type == "qwen2_moe") j["shared_expert_intermediate_size"] = spec.shared_d_ff;
    if (type == "qwen3_moe") j["head_dim"] = 8;
  } else if (type == "olmoe") {
    j["architectures"] = {"OlmoeForCausalLM"};
    j["intermediate_size"] = spec.d_ff;
    j["num_experts"] = spec.num_experts;
    j["num_experts_per_tok"] = spec.top_k;
    j["norm_topk_prob"] = spec.norm_topk_prob;
    j["clip_qkv"] = nullptr;
  } else if (IsDeepseek(type)) {
    const bool v3 = type == "deepseek_v3";
    j["architectures"] = {v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM"};
    j["intermediate_size"] = spec.dense_d_ff;
    j["moe_intermediate_size"] = spec.d_ff;
    j["n_routed_experts"] = spec.num_experts;
    j["n_shared_experts"] = spec.num_shared > 0 ? json(spec.num_shared) : json(nullptr);
    j["num_experts_per_tok"] = spec.top_k;
    j["first_k_dense_replace"] = spec.first_k_dense_replace;
    j["moe_layer_freq"] = 1;
    j["scoring_func"] = v3 ? "sigmoid" : "softmax";
    j["topk_method"] = v3 ? "noaux_tc" : (spec.group_limited ? "group_limited_greedy" : "greedy");
    j["n_group"] = spec.num_groups;
    j["topk_group"] = spec.topk_groups;
    j["norm_topk_prob"] = spec.norm_topk_prob;
    j["routed_scaling_factor"] = spec.routed_scaling_factor;
    j["kv_lora_rank"] = 16;
    j["q_lora_rank"] = nullptr;
    j["qk_rope_head_dim"] = 8;
    j["qk_nope_head_dim"] = 8;
    j["v_head_dim"] = 8;
    j["aux_loss_alpha"] = 0.001;
    if (v3) j["num_nextn_predict_layers"] = 1;
  }
  return j;
}

bool HfLayerIsSparse(const HfFolderSpec& spec, int layer) {
  if (IsQwen(spec.model_type)) return !absl::c_linear_search(spec.mlp_only_layers, layer);
  if (IsDeepseek(spec.model_type)) return layer >= spec.first_k_dense_replace;
  return true;
}

config::LayerConfig HfExpectedConfig(const HfFolderSpec& spec, int layer) {
  const std::string& type = spec.model_type;
  config::LayerConfig c;
  c.set_name(absl::StrCat(type, " layer ", layer));
  c.set_d_model(spec.d_model);
  c.set_d_ff(spec.d_ff);
  c.set_num_experts(spec.num_experts);
  c.set_top_k(spec.top_k);
  c.set_activation(config::ACTIVATION_SWIGLU);
  c.set_weight_dtype(spec.dtype == DType::kBF16 ? config::DTYPE_BF16 : config::DTYPE_F32);
  config::RouterConfig& r = *c.mutable_router();
  if (type == "mixtral") {
    r.set_renormalize(true);
  } else if (IsQwen(type) || type == "olmoe") {
    r.set_renormalize(spec.norm_topk_prob);
    if (type == "qwen2_moe" && spec.shared_d_ff > 0) {
      c.mutable_shared_experts()->set_count(1);
      c.mutable_shared_experts()->set_d_ff(spec.shared_d_ff);
      c.mutable_shared_experts()->set_sigmoid_gate(true);
    }
  } else if (IsDeepseek(type)) {
    if (spec.num_shared > 0) {
      c.mutable_shared_experts()->set_count(spec.num_shared);
      c.mutable_shared_experts()->set_d_ff(spec.d_ff);
    }
    const bool v3 = type == "deepseek_v3";
    if ((v3 || spec.group_limited) && spec.num_groups > 1) {
      r.set_num_groups(spec.num_groups);
      r.set_topk_groups(spec.topk_groups);
    }
    if (v3) {
      r.set_score_function(config::SCORE_SIGMOID);
      r.set_selection_bias(true);
      r.set_group_score(config::GROUP_SCORE_TOP2_SUM);
      r.set_renormalize(spec.norm_topk_prob);
      r.set_routed_scaling_factor(static_cast<float>(spec.routed_scaling_factor));
    } else {
      if (spec.group_limited) r.set_group_score(config::GROUP_SCORE_MAX);
      if (spec.top_k > 1 && spec.norm_topk_prob) {
        r.set_renormalize(true);
      } else {
        r.set_routed_scaling_factor(static_cast<float>(spec.routed_scaling_factor));
      }
    }
  }
  return c;
}

absl::StatusOr<HfFolder> WriteHfFolder(const std::string& dir, const HfFolderSpec& spec) {
  HfFolder folder;
  folder.dir = dir;
  {
    std::ofstream out(absl::StrCat(dir, "/config.json"));
    out << HfConfigJson(spec).dump(2);
    if (!out) return absl::InternalError(absl::StrCat(dir, "/config.json: cannot write"));
  }
  const int64_t d = spec.d_model;
  TensorSink sink(spec, spec.num_layers + 1);
  sink.SetFile(0);
  sink.AddRandom("model.embed_tokens.weight", {kVocab, d});
  for (int layer = 0; layer < spec.num_layers; ++layer) {
    sink.SetFile(layer);
    const std::string block = absl::StrCat("model.layers.", layer, ".");
    sink.AddRandom(block + "input_layernorm.weight", {d});
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
      sink.AddRandom(absl::StrCat(block, "self_attn.", proj, ".weight"), {d, d});
    }
    sink.AddRandom(block + "post_attention_layernorm.weight", {d});
    MoeLayerWeights w;
    if (HfLayerIsSparse(spec, layer)) {
      w = RandomLayerWeights(HfExpectedConfig(spec, layer), spec.seed * 7919 + layer);
      if (spec.dtype == DType::kBF16) RoundToBf16(w);
      AddMoeBlock(sink, spec, layer, w);
    } else {
      for (const char* proj : {"gate_proj", "up_proj"}) {
        sink.AddRandom(absl::StrCat(block, "mlp.", proj, ".weight"), {spec.dense_d_ff, d});
      }
      sink.AddRandom(block + "mlp.down_proj.weight", {d, spec.dense_d_ff});
    }
    folder.layers.push_back(std::move(w));
  }
  sink.SetFile(spec.num_layers);
  sink.AddRandom("model.norm.weight", {d});
  sink.AddRandom("lm_head.weight", {kVocab, d});
  MOE_RETURN_IF_ERROR(sink.Write(dir, folder.file_of));
  return folder;
}

ScopedTempDir::ScopedTempDir() {
  std::string pattern = ::testing::TempDir() + "moe_hf_XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp(" << pattern << ") failed";
  }
  path_ = pattern;
}

ScopedTempDir::~ScopedTempDir() {
  std::error_code error;
  std::filesystem::remove_all(path_, error);
}

}  // namespace moe::testing
