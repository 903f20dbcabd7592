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
// for model_type mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3.
// kInvalidArgument naming `source` and the key for a missing or bad key, an unknown
// model_type, a layer index out of range, or a layer that is dense in that model
// (e.g. DeepSeek's first_k_dense_replace, Qwen's mlp_only_layers / decoder_sparse_step).
absl::StatusOr<config::LayerConfig> ImportHfConfig(absl::string_view config_json, int layer,
                                                   absl::string_view source);

struct HfLayer {
  config::LayerConfig config;
  MoeLayerWeights weights;  // F32, converted from F32/BF16/F16 on load
};

// Reads DIR/config.json and the MoE block of decoder layer `layer` from DIR's
// model.safetensors or model.safetensors.index.json shards. Tensors of other layers are
// never read. A missing tensor or one whose shape disagrees with the config is an error
// naming the tensor and the file.
absl::StatusOr<HfLayer> LoadHfLayer(const std::string& model_dir, int layer);

}  // namespace moe
