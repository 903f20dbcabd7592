#include "moe/layer_weights.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"

namespace moe {
namespace {

// Fills `t` uniformly in [-bound, bound). Chunks of kChunk elements draw from their own
// generator seeded by (stream, chunk), so the values do not depend on the thread count.
void FillUniform(Tensor& t, float bound, uint64_t stream) {
  constexpr int64_t kChunk = int64_t{1} << 16;
  float* p = t.data<float>();
  const int64_t n = t.num_elements();
#pragma omp parallel for schedule(static)
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    std::seed_seq seq{static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32),
                      static_cast<uint32_t>(begin / kChunk)};
    std::mt19937 rng(seq);
    std::uniform_real_distribution<float> dist(-bound, bound);
    const int64_t end = begin + kChunk < n ? begin + kChunk : n;
    for (int64_t i = begin; i < end; ++i) p[i] = dist(rng);
  }
}

void FillExperts(experts::ExpertWeights& w, std::mt19937_64& rng) {
  // Each tensor gets its own stream from the layer's generator.
  const float in_bound = 1.0f / std::sqrt(static_cast<float>(w.d_model()));
  const float ff_bound = 1.0f / std::sqrt(static_cast<float>(w.d_ff()));
  if (!w.gate.empty()) FillUniform(w.gate, in_bound, rng());
  FillUniform(w.up, in_bound, rng());
  FillUniform(w.down, ff_bound, rng());
}

}  // namespace

absl::Status CheckLayerWeights(const config::LayerConfig& c, const MoeLayerWeights& w) {
  absl::Status s = CheckTensor(w.router, DType::kF32, {c.num_experts(), c.d_model()}, "router");
  if (!s.ok()) return s;
  if (c.router().selection_bias()) {
    s = CheckTensor(w.selection_bias, DType::kF32, {c.num_experts()}, "selection_bias");
    if (!s.ok()) return s;
  }
  s = experts::CheckExpertWeights(w.experts, c.activation(), c.num_experts(), c.d_model(), c.d_ff(),
                                  "experts");
  if (!s.ok()) return s;
  const int64_t shared_dff = config::SharedExpertsDff(c);
  if (shared_dff > 0) {
    s = experts::CheckExpertWeights(w.shared, c.activation(), 1, c.d_model(), shared_dff,
                                    "shared_experts");
    if (!s.ok()) return s;
    if (c.shared_experts().sigmoid_gate()) {
      s = CheckTensor(w.shared_gate, DType::kF32, {1, c.d_model()}, "shared_gate");
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

MoeLayerWeights RandomLayerWeights(const config::LayerConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  MoeLayerWeights w;
  w.router = Tensor::Zeros(DType::kF32, {c.num_experts(), c.d_model()});
  FillUniform(w.router, 1.0f / std::sqrt(static_cast<float>(c.d_model())), rng());
  if (c.router().selection_bias()) {
    w.selection_bias = Tensor::Zeros(DType::kF32, {c.num_experts()});
    FillUniform(w.selection_bias, 0.1f, rng());
  }
  w.experts = experts::ZeroExpertWeights(c.activation(), c.num_experts(), c.d_model(), c.d_ff());
  FillExperts(w.experts, rng);
  const int64_t shared_dff = config::SharedExpertsDff(c);
  if (shared_dff > 0) {
    w.shared = experts::ZeroExpertWeights(c.activation(), 1, c.d_model(), shared_dff);
    FillExperts(w.shared, rng);
    if (c.shared_experts().sigmoid_gate()) {
      w.shared_gate = Tensor::Zeros(DType::kF32, {1, c.d_model()});
      FillUniform(w.shared_gate, 1.0f / std::sqrt(static_cast<float>(c.d_model())), rng());
    }
  }
  return w;
}

}  // namespace moe
