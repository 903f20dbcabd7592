// Small helpers shared by tests: layer configs per family and seeded random inputs.
#pragma once

#include <cstdint>
#include <string>

#include "configs/moe_config.pb.h"
#include "moe/base/tensor.h"

namespace moe::testing {

// A small LayerConfig that follows one published family's routing:
// "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "switch",
// "geglu_topk_first" (GeGLU experts, top-k then softmax), "gelu" (plain GELU experts).
config::LayerConfig FamilyConfig(const std::string& family, int32_t num_experts, int32_t top_k);

// F32 [num_tokens, d_model], uniform in [-1, 1), from the seed.
Tensor RandomHidden(int64_t num_tokens, int64_t d_model, uint64_t seed);

}  // namespace moe::testing
