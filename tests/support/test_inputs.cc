#include "tests/support/test_inputs.h"

#include <random>

namespace moe::testing {

config::LayerConfig FamilyConfig(const std::string& family, int32_t num_experts, int32_t top_k) {
  config::LayerConfig c;
  c.set_name(family);
  c.set_d_model(40);
  c.set_d_ff(24);
  c.set_num_experts(num_experts);
  c.set_top_k(top_k);
  config::RouterConfig* r = c.mutable_router();
  if (family == "mixtral" || family == "qwen3_moe") {
    r->set_renormalize(true);
  } else if (family == "qwen2_moe") {
    c.mutable_shared_experts()->set_count(1);
    c.mutable_shared_experts()->set_d_ff(56);
    c.mutable_shared_experts()->set_sigmoid_gate(true);
  } else if (family == "deepseek_v2") {
    r->set_num_groups(num_experts % 4 == 0 ? 4 : 2);
    r->set_topk_groups(r->num_groups() / 2);
    r->set_group_score(config::GROUP_SCORE_MAX);
    r->set_routed_scaling_factor(16.0f);
    c.mutable_shared_experts()->set_count(2);
  } else if (family == "deepseek_v3") {
    r->set_score_function(config::SCORE_SIGMOID);
    r->set_renormalize(true);
    r->set_num_groups(num_experts % 4 == 0 ? 4 : 2);
    r->set_topk_groups(r->num_groups() / 2);
    r->set_group_score(config::GROUP_SCORE_TOP2_SUM);
    r->set_selection_bias(true);
    r->set_routed_scaling_factor(2.5f);
    c.mutable_shared_experts()->set_count(1);
  } else if (family == "switch") {
    c.set_activation(config::ACTIVATION_RELU);
    c.mutable_capacity()->set_policy(config::DROP_IN_TOKEN_ORDER);
    c.mutable_capacity()->set_factor(1.0f);
  } else if (family == "geglu_topk_first") {
    c.set_activation(config::ACTIVATION_GEGLU);
    r->set_score_order(config::TOPK_THEN_SCORE);
  } else if (family == "gelu") {
    c.set_activation(config::ACTIVATION_GELU);
    r->set_renormalize(true);
  }
  // "olmoe": the defaults (softmax, no renormalization, SwiGLU).
  return c;
}

Tensor RandomHidden(int64_t num_tokens, int64_t d_model, uint64_t seed) {
  Tensor t = Tensor::Zeros(DType::kF32, {num_tokens, d_model});
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int64_t i = 0; i < t.num_elements(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

}  // namespace moe::testing
