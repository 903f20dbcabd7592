// Import of Hugging Face model folders: config.json -> LayerConfig, and one layer's MoE
// block weights from its safetensors files (single or sharded).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "configs/moe_config.pb.h"
#include "moe/layer_weights.h"

namespace moe {

// Maps a Hugging Face config.json (its text) to the LayerConfig of decoder layer `layer`,
// for model_type mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3, with the
// routing each family's modeling code defines (e.g. DeepSeek-V2 renormalizes OR scales by
// routed_scaling_factor, DeepSeek-V3 renormalizes AND scales). Optional keys absent or null
// take the transformers config defaults (norm_topk_prob false, decoder_sparse_step 1, ...).
// Errors, all naming `source`: kInvalidArgument for malformed JSON, a missing or mistyped key
// (named), an unknown model_type (listing the supported ones), a layer index outside
// [0, num_hidden_layers), a layer that is dense in that model (DeepSeek's
// first_k_dense_replace / moe_layer_freq, Qwen's mlp_only_layers / decoder_sparse_step), or
// sizes ValidateLayerConfig rejects; kUnimplemented for a hidden_act other than silu, swish or
// gelu, or an unsupported DeepSeek scoring_func / topk_method. The name is "<model_type> layer N";
// weight_dtype is BF16 when torch_dtype is "bfloat16" (informational).
absl::StatusOr<config::LayerConfig> ImportHfConfig(absl::string_view config_json, int layer,
                                                   absl::string_view source);

// One decoder layer's MoE block as loaded from a Hugging Face folder.
struct HfLayer {
  config::LayerConfig config;
  MoeLayerWeights weights;  // F32, converted from F32/BF16/F16 on load; accepted by MoeLayer
};

// Reads DIR/config.json (at most 16 MiB), maps it with ImportHfConfig, and reads the MoE
// block of decoder layer `layer` from DIR's model.safetensors or model.safetensors.index.json
// shards, stacking the experts. Only that layer's tensors are read, and only the shards that
// hold them are opened; every shape is checked against the config before anything is
// allocated. A missing tensor is kNotFound naming it; a tensor whose shape disagrees with the
// config is kInvalidArgument naming the tensor, its file and both shapes.
absl::StatusOr<HfLayer> LoadHfLayer(const std::string& model_dir, int layer);

}  // namespace moe
