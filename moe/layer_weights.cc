#include "moe/layer_weights.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "moe/base/status_macros.h"

namespace moe {
namespace {

constexpr int64_t kChunk = int64_t{1} << 16;

// Writes elements [begin, end) of the stream (stream, bound) to dst[0, end - begin): the stream
// is cut in chunks of kChunk elements, each drawn from its own generator seeded by (stream,
// chunk index), one draw per element. So any range can be generated alone, in parallel.
void FillUniformRange(float* dst, int64_t begin, int64_t end, float bound, uint64_t stream) {
  const int64_t first_chunk = begin / kChunk;
  const int64_t last_chunk = (end + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t chunk = first_chunk; chunk < last_chunk; ++chunk) {
    std::seed_seq seq{static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32),
                      static_cast<uint32_t>(chunk)};
    std::mt19937 rng(seq);
    std::uniform_real_distribution<float> dist(-bound, bound);
    const int64_t from = std::max(chunk * kChunk, begin);
    rng.discard(static_cast<unsigned long long>(from - chunk * kChunk));
    const int64_t to = std::min((chunk + 1) * kChunk, end);
    for (int64_t i = from; i < to; ++i) dst[i - begin] = dist(rng);
  }
}

void FillUniform(Tensor& t, float bound, uint64_t stream) {
  FillUniformRange(t.data<float>(), 0, t.num_elements(), bound, stream);
}

// Fills `held` [ids.size(), ...] with the blocks of experts `ids` of the stacked
// [num_experts, ...] tensor that stream (stream, bound) describes.
void FillExpertBlocks(Tensor& held, const std::vector<int32_t>& ids, float bound, uint64_t stream) {
  const int64_t block = held.dim(1) * held.dim(2);
  for (size_t i = 0; i < ids.size(); ++i) {
    FillUniformRange(held.data<float>() + static_cast<int64_t>(i) * block, ids[i] * block,
                     (ids[i] + 1) * block, bound, stream);
  }
}

// One stream per tensor, drawn from the layer's generator: gate (if gated), up, down.
void FillExperts(experts::ExpertWeights& w, const std::vector<int32_t>& ids, int64_t d_model,
                 int64_t d_ff, std::mt19937_64& rng) {
  const float in_bound = 1.0f / std::sqrt(static_cast<float>(d_model));
  const float ff_bound = 1.0f / std::sqrt(static_cast<float>(d_ff));
  if (!w.gate.empty()) FillExpertBlocks(w.gate, ids, in_bound, rng());
  FillExpertBlocks(w.up, ids, in_bound, rng());
  FillExpertBlocks(w.down, ids, ff_bound, rng());
}

}  // namespace

absl::Status CheckLayerWeights(const config::LayerConfig& c, const MoeLayerWeights& w) {
  return CheckLocalLayerWeights(c, w, c.num_experts());
}

absl::Status CheckLocalLayerWeights(const config::LayerConfig& c, const MoeLayerWeights& w,
                                    int64_t num_local_experts) {
  MOE_RETURN_IF_ERROR(CheckTensor(w.router, DType::kF32, {c.num_experts(), c.d_model()}, "router"));
  if (c.router().selection_bias()) {
    MOE_RETURN_IF_ERROR(
        CheckTensor(w.selection_bias, DType::kF32, {c.num_experts()}, "selection_bias"));
  }
  MOE_RETURN_IF_ERROR(experts::CheckExpertWeights(w.experts, c.activation(), num_local_experts,
                                                  c.d_model(), c.d_ff(), "experts"));
  const int64_t shared_dff = config::SharedExpertsDff(c);
  if (shared_dff > 0) {
    MOE_RETURN_IF_ERROR(experts::CheckExpertWeights(w.shared, c.activation(), 1, c.d_model(),
                                                    shared_dff, "shared_experts"));
    if (c.shared_experts().sigmoid_gate()) {
      MOE_RETURN_IF_ERROR(CheckTensor(w.shared_gate, DType::kF32, {1, c.d_model()}, "shared_gate"));
    }
  }
  return absl::OkStatus();
}

MoeLayerWeights RandomLayerWeights(const config::LayerConfig& c, uint64_t seed) {
  std::vector<int32_t> all(static_cast<size_t>(c.num_experts()));
  for (int32_t e = 0; e < c.num_experts(); ++e) all[static_cast<size_t>(e)] = e;
  return RandomLayerWeightsOfExperts(c, seed, all);
}

MoeLayerWeights RandomLayerWeightsOfExperts(const config::LayerConfig& c, uint64_t seed,
                                            const std::vector<int32_t>& expert_ids) {
  std::mt19937_64 rng(seed);
  MoeLayerWeights w;
  const float in_bound = 1.0f / std::sqrt(static_cast<float>(c.d_model()));
  w.router = Tensor::Zeros(DType::kF32, {c.num_experts(), c.d_model()});
  FillUniform(w.router, in_bound, rng());
  if (c.router().selection_bias()) {
    w.selection_bias = Tensor::Zeros(DType::kF32, {c.num_experts()});
    FillUniform(w.selection_bias, 0.1f, rng());
  }
  w.experts = experts::ZeroExpertWeights(c.activation(), static_cast<int64_t>(expert_ids.size()),
                                         c.d_model(), c.d_ff());
  FillExperts(w.experts, expert_ids, c.d_model(), c.d_ff(), rng);
  const int64_t shared_dff = config::SharedExpertsDff(c);
  if (shared_dff > 0) {
    w.shared = experts::ZeroExpertWeights(c.activation(), 1, c.d_model(), shared_dff);
    FillExperts(w.shared, {0}, c.d_model(), shared_dff, rng);
    if (c.shared_experts().sigmoid_gate()) {
      w.shared_gate = Tensor::Zeros(DType::kF32, {1, c.d_model()});
      FillUniform(w.shared_gate, in_bound, rng());
    }
  }
  return w;
}

}  // namespace moe
