#include "comm/replica_planner.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "absl/strings/str_cat.h"
#include "comm/eplb_baseline.h"
#include "comm/share_optimizer.h"
#include "moe/base/status_macros.h"

namespace moe::comm {
namespace {

std::vector<std::vector<int32_t>> RanksOf(const ReplicatedPlacement& p) {
  std::vector<std::vector<int32_t>> ranks(p.replicas.size());
  for (size_t e = 0; e < p.replicas.size(); ++e) {
    for (const ExpertReplica& r : p.replicas[e]) ranks[e].push_back(r.rank);
  }
  return ranks;
}

// Pieces (expert, size), heaviest first, onto ranks (BalancedPacking). Returns ranks_of_expert.
absl::StatusOr<std::vector<std::vector<int32_t>>> Pack(
    const std::vector<std::vector<double>>& sizes, int32_t num_ranks) {
  std::vector<double> weights;
  std::vector<int32_t> labels;
  for (size_t e = 0; e < sizes.size(); ++e) {
    for (double s : sizes[e]) {
      weights.push_back(s);
      labels.push_back(static_cast<int32_t>(e));
    }
  }
  MOE_ASSIGN_OR_RETURN(std::vector<int32_t> rank_of, BalancedPacking(weights, labels, num_ranks));
  std::vector<std::vector<int32_t>> ranks(sizes.size());
  for (size_t i = 0; i < rank_of.size(); ++i) {
    ranks[static_cast<size_t>(labels[i])].push_back(rank_of[i]);
  }
  for (auto& r : ranks) std::sort(r.begin(), r.end());
  return ranks;
}

// Candidate "grouped": each replicated expert gets ranks of its own (a group); unreplicated
// experts, heaviest first, go to the group or lone rank of least level (load / ranks) with a
// free slot; inside a group, to its rank with the least unreplicated load and a free slot.
// Returns ranks_of_expert, or nothing when the groups need more ranks or ceiling slots than
// there are.
std::optional<std::vector<std::vector<int32_t>>> GroupedAssignment(
    const std::vector<double>& w, const std::vector<int32_t>& counts, int32_t num_ranks) {
  const size_t n = w.size();
  int64_t slots = 0;
  for (int32_t c : counts) slots += c;
  const int64_t low = slots / num_ranks;
  const int64_t extra = slots % num_ranks;
  struct Bin {
    std::vector<int32_t> ranks;
    int64_t used = 0;  // slots taken
    double load = 0;
    std::vector<int32_t> items;  // unreplicated experts
  };
  std::vector<Bin> bins;
  std::vector<std::vector<int32_t>> ranks_of(n);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return w[a] > w[b]; });
  int32_t next_rank = 0;
  int64_t at_ceiling = 0;
  auto ceiling_of = [&](const Bin& b) {
    return std::max<int64_t>(0, b.used - static_cast<int64_t>(b.ranks.size()) * low);
  };
  for (size_t e : order) {
    if (counts[e] < 2) continue;
    if (next_rank + counts[e] > num_ranks) return std::nullopt;
    Bin bin;
    for (int32_t i = 0; i < counts[e]; ++i) bin.ranks.push_back(next_rank++);
    bin.used = counts[e];
    bin.load = w[e];
    at_ceiling += ceiling_of(bin);
    ranks_of[e] = bin.ranks;
    bins.push_back(std::move(bin));
  }
  for (; next_rank < num_ranks; ++next_rank) bins.push_back({{next_rank}, 0, 0.0, {}});
  if (at_ceiling > extra) return std::nullopt;
  for (size_t e : order) {
    if (counts[e] >= 2) continue;
    size_t best = bins.size();
    double best_level = 0;
    for (size_t b = 0; b < bins.size(); ++b) {
      const int64_t size = static_cast<int64_t>(bins[b].ranks.size());
      const bool room =
          bins[b].used < size * low || (bins[b].used < size * (low + 1) && at_ceiling < extra);
      if (!room) continue;
      const double level = (bins[b].load + w[e]) / static_cast<double>(size);
      if (best == bins.size() || level < best_level) {
        best = b;
        best_level = level;
      }
    }
    if (best == bins.size()) return std::nullopt;
    Bin& bin = bins[best];
    at_ceiling -= ceiling_of(bin);
    ++bin.used;
    at_ceiling += ceiling_of(bin);
    bin.load += w[e];
    bin.items.push_back(static_cast<int32_t>(e));
  }
  // Inside each bin: items (heaviest first) to the rank of least item load with room; the bin
  // may put ceiling(bin) of its ranks at low + 1 slots.
  for (Bin& bin : bins) {
    const bool group = bin.used > static_cast<int64_t>(bin.items.size());
    int64_t ceilings = ceiling_of(bin);
    std::vector<int64_t> used(bin.ranks.size(), group ? 1 : 0);
    std::vector<double> load(bin.ranks.size(), 0.0);
    for (int32_t e : bin.items) {
      size_t best = bin.ranks.size();
      for (size_t i = 0; i < bin.ranks.size(); ++i) {
        const bool room = used[i] < low || (used[i] == low && ceilings > 0);
        if (room && (best == bin.ranks.size() || load[i] < load[best])) best = i;
      }
      MOE_CHECK(best < bin.ranks.size());
      if (used[best] == low) --ceilings;
      ++used[best];
      load[best] += w[static_cast<size_t>(e)];
      ranks_of[static_cast<size_t>(e)] = {bin.ranks[best]};
    }
  }
  return ranks_of;
}

// The grouped candidate with its replica counts improved: while it lowers the max load, one
// replica moves from a group of low level to the expert with the largest load on the most
// loaded rank.
std::optional<Pieces> GroupedCandidate(const std::vector<double>& w, std::vector<int32_t> counts,
                                       int32_t num_ranks) {
  auto evaluate = [&](const std::vector<int32_t>& c) -> std::optional<Pieces> {
    auto ranks = GroupedAssignment(w, c, num_ranks);
    if (!ranks) return std::nullopt;
    return OptimizeShares(*ranks, w, num_ranks);
  };
  std::optional<Pieces> best = evaluate(counts);
  if (!best) return std::nullopt;
  for (int iter = 0; iter < 16; ++iter) {  // bounded: planning 256 x 1024 stays < 100 ms
    // The expert with the largest piece on the most loaded rank.
    std::vector<double> load(static_cast<size_t>(num_ranks), 0.0);
    for (const auto& list : best->of_expert) {
      for (const auto& [r, x] : list) load[static_cast<size_t>(r)] += x;
    }
    const int32_t top =
        static_cast<int32_t>(std::max_element(load.begin(), load.end()) - load.begin());
    size_t hot = 0;
    double hot_piece = -1;
    std::vector<std::pair<double, size_t>> donors;  // (level, expert) of replicated experts
    for (size_t e = 0; e < w.size(); ++e) {
      for (const auto& [r, x] : best->of_expert[e]) {
        if (r == top && x > hot_piece && counts[e] < num_ranks) {
          hot = e;
          hot_piece = x;
        }
      }
      if (counts[e] >= 2)
        donors.push_back({load[static_cast<size_t>(best->of_expert[e][0].first)], e});
    }
    if (hot_piece < 0) break;
    std::sort(donors.begin(), donors.end());
    bool improved = false;
    for (size_t d = 0; d < donors.size() && d < 4 && !improved; ++d) {
      const size_t donor = donors[d].second;
      if (donor == hot) continue;
      std::vector<int32_t> trial = counts;
      ++trial[hot];
      --trial[donor];
      std::optional<Pieces> next = evaluate(trial);
      if (next && next->max_load < best->max_load * (1 - 1e-9)) {
        best = std::move(next);
        counts = std::move(trial);
        improved = true;
      }
    }
    if (!improved) break;
  }
  return best;
}

// Shares from pieces: piece / sum of the expert's pieces (equal when the expert has no load);
// the last replica takes 1 - the others so that the sum is 1 to rounding.
ReplicatedPlacement ToPlacement(const Pieces& pieces, int32_t num_ranks) {
  ReplicatedPlacement p;
  p.num_experts = static_cast<int32_t>(pieces.of_expert.size());
  p.num_ranks = num_ranks;
  p.replicas.resize(pieces.of_expert.size());
  for (size_t e = 0; e < pieces.of_expert.size(); ++e) {
    const auto& list = pieces.of_expert[e];
    double sum = 0;
    for (const auto& piece : list) sum += piece.second;
    double taken = 0;
    for (size_t i = 0; i < list.size(); ++i) {
      double share = sum > 0 ? list[i].second / sum : 1.0 / static_cast<double>(list.size());
      if (i + 1 == list.size()) share = std::max(0.0, 1.0 - taken);
      share = std::min(share, 1.0);
      taken += share;
      p.replicas[e].push_back({list[i].first, share});
    }
  }
  MOE_CHECK(FillRankExperts(&p).ok());
  return p;
}

// With nodes: renumbers ranks so that connected groups of replicated experts share nodes.
ReplicatedPlacement GroupOntoNodes(const ReplicatedPlacement& p, int32_t num_nodes) {
  const size_t per_node = static_cast<size_t>(p.num_ranks / num_nodes);
  // Each component's ranks in BFS order from its lowest rank, through shared experts.
  std::vector<std::vector<int32_t>> components;
  std::vector<bool> seen(static_cast<size_t>(p.num_ranks), false);
  for (int32_t start = 0; start < p.num_ranks; ++start) {
    if (seen[static_cast<size_t>(start)]) continue;
    std::vector<int32_t> order = {start};
    seen[static_cast<size_t>(start)] = true;
    for (size_t i = 0; i < order.size(); ++i) {
      for (const RankExpert& x : p.rank_experts[static_cast<size_t>(order[i])]) {
        for (const ExpertReplica& r : p.replicas[static_cast<size_t>(x.expert)]) {
          if (!seen[static_cast<size_t>(r.rank)]) {
            seen[static_cast<size_t>(r.rank)] = true;
            order.push_back(r.rank);
          }
        }
      }
    }
    components.push_back(std::move(order));
  }
  std::stable_sort(components.begin(), components.end(),
                   [](const auto& a, const auto& b) { return a.size() > b.size(); });
  std::vector<std::vector<int32_t>> node_ranks(static_cast<size_t>(num_nodes));
  for (const auto& component : components) {
    size_t done = 0;
    while (done < component.size()) {
      const size_t left = component.size() - done;
      // Best fit: the fullest node that takes all that is left, else the roomiest node.
      size_t best = node_ranks.size();
      size_t roomiest = 0;
      auto room = [&](size_t n) { return per_node - node_ranks[n].size(); };
      for (size_t n = 0; n < node_ranks.size(); ++n) {
        if (room(n) >= left && (best == node_ranks.size() || room(n) < room(best))) best = n;
        if (room(n) > room(roomiest)) roomiest = n;
      }
      auto& target = node_ranks[best < node_ranks.size() ? best : roomiest];
      const size_t take = std::min(left, per_node - target.size());
      target.insert(target.end(), component.begin() + static_cast<long>(done),
                    component.begin() + static_cast<long>(done + take));
      done += take;
    }
  }
  std::vector<int32_t> new_rank(static_cast<size_t>(p.num_ranks));
  for (size_t n = 0; n < node_ranks.size(); ++n) {
    for (size_t i = 0; i < node_ranks[n].size(); ++i) {
      new_rank[static_cast<size_t>(node_ranks[n][i])] = static_cast<int32_t>(n * per_node + i);
    }
  }
  ReplicatedPlacement out = p;
  for (auto& list : out.replicas) {
    for (ExpertReplica& r : list) r.rank = new_rank[static_cast<size_t>(r.rank)];
  }
  MOE_CHECK(FillRankExperts(&out).ok());
  return out;
}

}  // namespace

double ReplicaLowerBound(const std::vector<double>& loads, int32_t num_ranks,
                         int32_t num_redundant) {
  double total = 0;
  for (double x : loads) total += x;
  if (!(total > 0) || num_ranks < 1) return 1;
  const std::vector<int32_t> counts = EplbReplicaCounts(loads, num_redundant, num_ranks);
  double piece = 0;
  for (size_t e = 0; e < loads.size(); ++e) piece = std::max(piece, loads[e] / counts[e]);
  return std::max(1.0, piece * num_ranks / total);
}

double MeanNodeSpan(const ReplicatedPlacement& p, int32_t num_nodes) {
  if (p.replicas.empty() || num_nodes < 1 || p.num_ranks % num_nodes != 0) return 0;
  const int32_t per_node = p.num_ranks / num_nodes;
  double spans = 0;
  for (const auto& list : p.replicas) {
    int32_t last = -1;
    for (const ExpertReplica& r : list) {  // ascending ranks: nodes ascending too
      if (r.rank / per_node != last) ++spans;
      last = r.rank / per_node;
    }
  }
  return spans / static_cast<double>(p.replicas.size());
}

absl::StatusOr<PlanResult> PlanReplicatedPlacement(const std::vector<double>& loads,
                                                   const PlannerOptions& o) {
  const int32_t num_experts = static_cast<int32_t>(loads.size());
  auto error = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("replica planner: ", parts...));
  };
  if (num_experts < 1) return error("loads: no experts");
  double total = 0;
  for (int32_t e = 0; e < num_experts; ++e) {
    const double x = loads[static_cast<size_t>(e)];
    if (!std::isfinite(x) || x < 0) return error("loads[", e, "] = ", x, ", expected >= 0");
    total += x;
  }
  if (o.num_ranks < 1) return error("num_ranks must be >= 1, got ", o.num_ranks);
  if (o.num_redundant < 0 || int64_t{o.num_redundant} > int64_t{o.num_ranks - 1} * num_experts) {
    return error("num_redundant must be in [0, ", int64_t{o.num_ranks - 1} * num_experts,
                 "] (at most one replica of an expert per rank), got ", o.num_redundant);
  }
  const int32_t nodes = std::max(o.num_nodes, 1);
  if (o.num_ranks % nodes != 0) {
    return error("num_ranks ", o.num_ranks, " is not a multiple of num_nodes ", nodes);
  }
  // Scaled loads: mean rank load 1 (uniform when all are zero).
  std::vector<double> w(loads.size(), static_cast<double>(o.num_ranks) / num_experts);
  if (total > 0) {
    for (size_t e = 0; e < w.size(); ++e) w[e] = loads[e] * o.num_ranks / total;
  }
  struct Candidate {
    ReplicatedPlacement placement;
    double max_load;
    const char* name;
  };
  std::vector<Candidate> candidates;
  // greedy: EPLB-style counts, equal pieces packed, shares optimized.
  const std::vector<int32_t> counts = EplbReplicaCounts(w, o.num_redundant, o.num_ranks);
  std::vector<std::vector<double>> sizes(w.size());
  for (size_t e = 0; e < w.size(); ++e) {
    sizes[e].assign(static_cast<size_t>(counts[e]), w[e] / counts[e]);
  }
  MOE_ASSIGN_OR_RETURN(auto ranks, Pack(sizes, o.num_ranks));
  Pieces pieces = OptimizeShares(ranks, w, o.num_ranks);
  candidates.push_back({ToPlacement(pieces, o.num_ranks), pieces.max_load, "greedy"});
  // repacked: the optimized piece sizes packed again, while that lowers the max.
  for (int round = 0; round < 4; ++round) {
    for (size_t e = 0; e < w.size(); ++e) {
      sizes[e].clear();
      for (const auto& piece : pieces.of_expert[e]) sizes[e].push_back(piece.second);
    }
    absl::StatusOr<std::vector<std::vector<int32_t>>> repacked = Pack(sizes, o.num_ranks);
    if (!repacked.ok()) break;  // only a candidate: the greedy one stands
    Pieces next = OptimizeShares(*repacked, w, o.num_ranks);
    if (next.max_load >= pieces.max_load * (1 - 1e-9)) break;
    pieces = std::move(next);
    candidates.push_back({ToPlacement(pieces, o.num_ranks), pieces.max_load, "repacked"});
  }
  if (std::optional<Pieces> grouped = GroupedCandidate(w, counts, o.num_ranks)) {
    candidates.push_back({ToPlacement(*grouped, o.num_ranks), grouped->max_load, "grouped"});
  }
  std::vector<int32_t> eplb_policies = {1};
  if (nodes > 1) eplb_policies.push_back(nodes);
  for (int32_t eplb_nodes : eplb_policies) {
    // On the loads as given, so that this is exactly the baseline a caller computes.
    absl::StatusOr<ReplicatedPlacement> eplb =
        EplbPlacement(total > 0 ? loads : w, {.num_ranks = o.num_ranks,
                                              .num_redundant = o.num_redundant,
                                              .num_nodes = eplb_nodes,
                                              .num_groups = 0});
    if (!eplb.ok()) continue;  // e.g. the hierarchical policy's divisibility
    Pieces p = OptimizeShares(RanksOf(*eplb), w, o.num_ranks);
    candidates.push_back({ToPlacement(p, o.num_ranks), p.max_load,
                          eplb_nodes == 1 ? "eplb-global+shares" : "eplb-hierarchical+shares"});
  }
  size_t best = 0;
  for (size_t i = 1; i < candidates.size(); ++i) {
    if (candidates[i].max_load < candidates[best].max_load * (1 - 1e-12)) best = i;
  }
  PlanResult result;
  result.placement = std::move(candidates[best].placement);
  result.candidate = candidates[best].name;
  if (nodes > 1) {
    ReplicatedPlacement grouped = GroupOntoNodes(result.placement, nodes);
    if (MeanNodeSpan(grouped, nodes) < MeanNodeSpan(result.placement, nodes)) {
      result.placement = std::move(grouped);
    }
  }
  MOE_RETURN_IF_ERROR(ValidateReplicatedPlacement(result.placement, num_experts, o.num_ranks));
  result.rank_loads = PredictedRankLoads(result.placement, total > 0 ? loads : w);
  double sum = 0, max = 0;
  for (double x : result.rank_loads) {
    sum += x;
    max = std::max(max, x);
  }
  result.max_over_mean = sum > 0 ? max * o.num_ranks / sum : 1;
  result.lower_bound = ReplicaLowerBound(w, o.num_ranks, o.num_redundant);
  return result;
}

}  // namespace moe::comm
