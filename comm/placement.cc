#include "comm/placement.h"

#include "absl/strings/str_cat.h"

namespace moe::comm {

absl::StatusOr<Placement> ContiguousPlacement(int32_t num_experts, int32_t num_ranks) {
  if (num_experts <= 0 || num_ranks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("placement: need num_experts > 0 and ",
                                                   "num_ranks > 0, got num_experts=", num_experts,
                                                   " num_ranks=", num_ranks));
  }
  std::vector<int32_t> rank_of_expert(static_cast<size_t>(num_experts));
  const int32_t base = num_experts / num_ranks;
  const int32_t extra = num_experts % num_ranks;
  int32_t e = 0;
  for (int32_t r = 0; r < num_ranks; ++r) {
    const int32_t count = base + (r < extra ? 1 : 0);
    for (int32_t i = 0; i < count; ++i) rank_of_expert[static_cast<size_t>(e++)] = r;
  }
  return PlacementFromRanks(std::move(rank_of_expert), num_ranks);
}

absl::StatusOr<Placement> PlacementFromRanks(std::vector<int32_t> rank_of_expert,
                                             int32_t num_ranks) {
  if (rank_of_expert.empty() || num_ranks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("placement: need experts and num_ranks > 0, ",
                                                   "got ", rank_of_expert.size(), " experts and ",
                                                   "num_ranks=", num_ranks));
  }
  Placement p;
  p.num_experts = static_cast<int32_t>(rank_of_expert.size());
  p.num_ranks = num_ranks;
  p.local_experts.resize(static_cast<size_t>(num_ranks));
  p.local_index.resize(rank_of_expert.size());
  for (int32_t e = 0; e < p.num_experts; ++e) {
    const int32_t r = rank_of_expert[static_cast<size_t>(e)];
    if (r < 0 || r >= num_ranks) {
      return absl::InvalidArgumentError(absl::StrCat("placement: expert ", e, " is on rank ", r,
                                                     ", outside [0, ", num_ranks, ")"));
    }
    std::vector<int32_t>& local = p.local_experts[static_cast<size_t>(r)];
    p.local_index[static_cast<size_t>(e)] = static_cast<int32_t>(local.size());
    local.push_back(e);
  }
  p.rank_of_expert = std::move(rank_of_expert);
  return p;
}

absl::Status ValidatePlacement(const Placement& p, int32_t num_experts, int32_t num_ranks) {
  if (p.num_experts != num_experts || p.num_ranks != num_ranks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "placement: built for ", p.num_experts, " experts on ", p.num_ranks,
        " ranks, but the layer has ", num_experts, " experts on ", num_ranks, " ranks"));
  }
  if (p.rank_of_expert.size() != static_cast<size_t>(num_experts) ||
      p.local_index.size() != static_cast<size_t>(num_experts) ||
      p.local_experts.size() != static_cast<size_t>(num_ranks)) {
    return absl::InvalidArgumentError("placement: field sizes disagree with num_experts/num_ranks");
  }
  int64_t listed = 0;
  for (int32_t r = 0; r < num_ranks; ++r) {
    const std::vector<int32_t>& local = p.local_experts[static_cast<size_t>(r)];
    listed += static_cast<int64_t>(local.size());
    for (size_t i = 0; i < local.size(); ++i) {
      const int32_t e = local[i];
      if (e < 0 || e >= num_experts || p.rank_of_expert[static_cast<size_t>(e)] != r ||
          p.local_index[static_cast<size_t>(e)] != static_cast<int32_t>(i) ||
          (i > 0 && local[i - 1] >= e)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "placement: local_experts of rank ", r, " disagrees with rank_of_expert at entry ", i));
      }
    }
  }
  if (listed != num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("placement: local_experts lists ", listed,
                                                   " experts, expected ", num_experts));
  }
  return absl::OkStatus();
}

}  // namespace moe::comm
