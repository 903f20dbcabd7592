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

}  // namespace moe
