#include "moe/ep_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "moe/base/status_macros.h"

namespace moe {
namespace {

Tensor SelectBlocks(const Tensor& all, const std::vector<int32_t>& ids) {
  Tensor out =
      Tensor::Zeros(all.dtype(), {static_cast<int64_t>(ids.size()), all.dim(1), all.dim(2)});
  const int64_t block = all.dim(1) * all.dim(2);
  for (size_t i = 0; i < ids.size(); ++i) {
    std::memcpy(out.data<float>() + static_cast<int64_t>(i) * block,
                all.data<float>() + int64_t{ids[i]} * block,
                static_cast<size_t>(block) * sizeof(float));
  }
  return out;
}

}  // namespace

absl::StatusOr<experts::ExpertWeights> SelectExperts(const experts::ExpertWeights& all,
                                                     const std::vector<int32_t>& ids) {
  for (int32_t e : ids) {
    if (e < 0 || e >= all.num_experts()) {
      return absl::InvalidArgumentError(
          absl::StrCat("SelectExperts: expert ", e, " outside [0, ", all.num_experts(), ")"));
    }
  }
  experts::ExpertWeights out;
  if (!all.gate.empty()) out.gate = SelectBlocks(all.gate, ids);
  out.up = SelectBlocks(all.up, ids);
  out.down = SelectBlocks(all.down, ids);
  return out;
}

absl::StatusOr<MoeLayerWeights> KeepLocalExperts(const config::LayerConfig& config,
                                                 MoeLayerWeights full,
                                                 const comm::Placement& placement, int rank) {
  MOE_RETURN_IF_ERROR(CheckLayerWeights(config, full));
  if (placement.num_experts != config.num_experts() || rank < 0 || rank >= placement.num_ranks) {
    return absl::InvalidArgumentError(
        absl::StrCat("KeepLocalExperts: rank ", rank, " of a placement of ", placement.num_experts,
                     " experts on ", placement.num_ranks, " ranks, for a layer of ",
                     config.num_experts(), " experts"));
  }
  MOE_ASSIGN_OR_RETURN(
      experts::ExpertWeights local,
      SelectExperts(full.experts, placement.local_experts[static_cast<size_t>(rank)]));
  full.experts = std::move(local);
  return full;
}

MoeLayerWeights RandomLocalLayerWeights(const config::LayerConfig& c, uint64_t seed,
                                        const comm::Placement& placement, int rank) {
  return RandomLayerWeightsOfExperts(c, seed, placement.local_experts[static_cast<size_t>(rank)]);
}

absl::StatusOr<MoeLayerWeights> KeepHeldExperts(const config::LayerConfig& config,
                                                MoeLayerWeights full,
                                                const comm::ReplicatedPlacement& placement,
                                                int rank) {
  MOE_RETURN_IF_ERROR(CheckLayerWeights(config, full));
  if (placement.num_experts != config.num_experts() || rank < 0 || rank >= placement.num_ranks ||
      placement.rank_experts.size() != static_cast<size_t>(placement.num_ranks)) {
    return absl::InvalidArgumentError(
        absl::StrCat("KeepHeldExperts: rank ", rank, " of a placement of ", placement.num_experts,
                     " experts on ", placement.num_ranks, " ranks, for a layer of ",
                     config.num_experts(), " experts"));
  }
  MOE_ASSIGN_OR_RETURN(experts::ExpertWeights local,
                       SelectExperts(full.experts, comm::HeldExperts(placement, rank)));
  full.experts = std::move(local);
  return full;
}

MoeLayerWeights RandomHeldLayerWeights(const config::LayerConfig& c, uint64_t seed,
                                       const comm::ReplicatedPlacement& placement, int rank) {
  return RandomLayerWeightsOfExperts(c, seed, comm::HeldExperts(placement, rank));
}

int64_t ExpertBlockFloats(const experts::ExpertWeights& w) {
  auto per = [](const Tensor& t) { return t.empty() ? 0 : t.dim(1) * t.dim(2); };
  return per(w.gate) + per(w.up) + per(w.down);
}

std::vector<float> PackExpertBlocks(const experts::ExpertWeights& w) {
  const int64_t block = ExpertBlockFloats(w);
  const int64_t num = w.num_experts();
  std::vector<float> out(static_cast<size_t>(num * block));
  for (int64_t e = 0; e < num; ++e) {
    float* dst = out.data() + e * block;
    for (const Tensor* t : {&w.gate, &w.up, &w.down}) {
      if (t->empty()) continue;
      const int64_t per = t->dim(1) * t->dim(2);
      std::memcpy(dst, t->data<float>() + e * per, static_cast<size_t>(per) * sizeof(float));
      dst += per;
    }
  }
  return out;
}

experts::ExpertWeights UnpackExpertBlocks(const float* blocks, int64_t num_experts,
                                          const experts::ExpertWeights& like) {
  experts::ExpertWeights w;
  auto shaped = [&](const Tensor& t) {
    return t.empty() ? Tensor() : Tensor::Zeros(DType::kF32, {num_experts, t.dim(1), t.dim(2)});
  };
  w.gate = shaped(like.gate);
  w.up = shaped(like.up);
  w.down = shaped(like.down);
  const int64_t block = ExpertBlockFloats(like);
  for (int64_t e = 0; e < num_experts; ++e) {
    const float* src = blocks + e * block;
    for (Tensor* t : {&w.gate, &w.up, &w.down}) {
      if (t->empty()) continue;
      const int64_t per = t->dim(1) * t->dim(2);
      std::memcpy(t->data<float>() + e * per, src, static_cast<size_t>(per) * sizeof(float));
      src += per;
    }
  }
  return w;
}

}  // namespace moe
