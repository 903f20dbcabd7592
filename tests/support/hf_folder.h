// Test helper: writes small Hugging Face model folders (config.json + safetensors files with
// the real tensor names of each MoE family) filled with seeded random weights.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/moe_config.pb.h"
#include "moe/base/dtype.h"
#include "moe/layer_weights.h"

namespace moe::testing {

// How the tensors are stored.
enum class HfLayout {
  kSingleFile,  // model.safetensors
  kSharded,     // model.safetensors.index.json + one shard per decoder layer + one for the rest
};

// What to write. The fields name the project's sizes; config.json uses each family's keys.
struct HfFolderSpec {
  std::string model_type = "mixtral";  // mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2/v3
  int64_t d_model = 32;                // hidden_size
  int64_t d_ff = 16;                   // the routed experts' intermediate size
  int32_t num_experts = 6;
  int32_t top_k = 2;                   // num_experts_per_tok
  bool norm_topk_prob = true;          // qwen, olmoe, deepseek (mixtral always renormalizes)
  int64_t shared_d_ff = 0;             // qwen2_moe: shared_expert_intermediate_size
  int32_t num_shared = 0;              // deepseek: n_shared_experts (each of width d_ff)
  int32_t num_groups = 1;              // deepseek: n_group
  int32_t topk_groups = 1;             // deepseek: topk_group
  bool group_limited = false;          // deepseek_v2: topk_method "group_limited_greedy"
  double routed_scaling_factor = 1.0;  // deepseek
  int num_layers = 2;                  // num_hidden_layers
  int first_k_dense_replace = 0;       // deepseek
  std::vector<int> mlp_only_layers;    // qwen
  int64_t dense_d_ff = 24;             // intermediate_size of dense MLP layers (qwen, deepseek)
  HfLayout layout = HfLayout::kSingleFile;
  DType dtype = DType::kF32;  // storage of every tensor: kF32 or kBF16
  uint64_t seed = 1;
  std::string omit_tensor;      // a tensor name left out of the files ("" = none)
  std::string misshape_tensor;  // a tensor written with one extra leading row ("" = none)
};

// config.json for `spec`, with the family's real key names (plus unrelated keys).
nlohmann::json HfConfigJson(const HfFolderSpec& spec);

// Whether decoder layer `layer` has an MoE block in `spec`'s model (else a dense MLP).
bool HfLayerIsSparse(const HfFolderSpec& spec, int layer);

// The LayerConfig the family's modeling code defines for a sparse layer of `spec`, written
// out independently of ImportHfConfig (name "<model_type> layer N").
config::LayerConfig HfExpectedConfig(const HfFolderSpec& spec, int layer);

// A written folder.
struct HfFolder {
  std::string dir;
  std::vector<MoeLayerWeights> layers;  // [num_layers], empty for dense layers; the values as
                                        // stored (rounded to BF16 when spec.dtype is kBF16)
  std::map<std::string, std::string> file_of;  // tensor name -> file name within dir
};

// Writes config.json and the tensors of every decoder layer (MoE block or dense MLP, plus
// attention and norm weights), model.embed_tokens.weight, model.norm.weight and
// lm_head.weight into `dir` (which must exist). Sharded: shard 1 holds the embeddings and
// layer 0, shard i+1 layer i, the last shard the final norm and lm_head.
absl::StatusOr<HfFolder> WriteHfFolder(const std::string& dir, const HfFolderSpec& spec);

// A fresh directory under ::testing::TempDir(), removed with its contents on destruction.
class ScopedTempDir {
 public:
  ScopedTempDir();
  ~ScopedTempDir();
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace moe::testing
