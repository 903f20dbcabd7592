#include "comm/eplb_baseline.h"

#include <algorithm>
#include <numeric>
#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"
#include "moe/base/status_macros.h"

namespace moe::comm {
namespace {

// Items of `labels` value `label` in pack `pack`.
bool PackHolds(const std::vector<std::vector<int32_t>>& items_of_pack,
               const std::vector<int32_t>& labels, int32_t pack, int32_t label) {
  if (label < 0) return false;
  for (int32_t i : items_of_pack[static_cast<size_t>(pack)]) {
    if (labels[static_cast<size_t>(i)] == label) return true;
  }
  return false;
}

}  // namespace

std::vector<int32_t> EplbReplicaCounts(const std::vector<double>& loads, int32_t num_redundant,
                                       int32_t max_replicas) {
  std::vector<int32_t> counts(loads.size(), 1);
  // Max-heap of (load / count, -expert): ties to the lower expert.
  std::priority_queue<std::pair<double, int64_t>> heap;
  for (size_t e = 0; e < loads.size(); ++e) heap.push({loads[e], -static_cast<int64_t>(e)});
  for (int32_t added = 0; added < num_redundant && !heap.empty();) {
    const size_t e = static_cast<size_t>(-heap.top().second);
    heap.pop();
    if (counts[e] >= max_replicas) continue;
    ++counts[e];
    ++added;
    heap.push({loads[e] / counts[e], -static_cast<int64_t>(e)});
  }
  return counts;
}

absl::StatusOr<std::vector<int32_t>> BalancedPacking(const std::vector<double>& weights,
                                                     const std::vector<int32_t>& labels,
                                                     int32_t num_packs) {
  const int64_t n = static_cast<int64_t>(weights.size());
  MOE_CHECK(labels.size() == weights.size() && num_packs >= 1);
  const int64_t low = n / num_packs;
  const int64_t extra = n % num_packs;  // packs that may hold low + 1
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return weights[static_cast<size_t>(a)] > weights[static_cast<size_t>(b)];
  });
  std::vector<double> load(static_cast<size_t>(num_packs), 0.0);
  std::vector<std::vector<int32_t>> items(static_cast<size_t>(num_packs));
  std::vector<int32_t> pack_of(static_cast<size_t>(n), -1);
  int64_t at_ceiling = 0;
  auto has_room = [&](int32_t p) {
    const int64_t size = static_cast<int64_t>(items[static_cast<size_t>(p)].size());
    return size < low || (size == low && at_ceiling < extra);
  };
  auto add = [&](int64_t item, int32_t p) {
    items[static_cast<size_t>(p)].push_back(static_cast<int32_t>(item));
    load[static_cast<size_t>(p)] += weights[static_cast<size_t>(item)];
    if (static_cast<int64_t>(items[static_cast<size_t>(p)].size()) == low + 1) ++at_ceiling;
    pack_of[static_cast<size_t>(item)] = p;
  };
  // Min-heap of (load, pack); entries whose load is stale or whose pack is full are dropped.
  using Entry = std::pair<double, int32_t>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  for (int32_t p = 0; p < num_packs; ++p) heap.push({0.0, p});
  std::vector<Entry> skipped;
  for (int64_t item : order) {
    const int32_t label = labels[static_cast<size_t>(item)];
    int32_t chosen = -1;
    skipped.clear();
    while (!heap.empty()) {
      const Entry top = heap.top();
      heap.pop();
      if (top.first != load[static_cast<size_t>(top.second)] || !has_room(top.second)) continue;
      if (PackHolds(items, labels, top.second, label)) {
        skipped.push_back(top);
        continue;
      }
      chosen = top.second;
      break;
    }
    for (const Entry& e : skipped) heap.push(e);
    if (chosen < 0) {
      // Every pack with room holds the label: move an item of another label from a pack q
      // without the label to a pack f with room that lacks that item's label; use q.
      for (int32_t q = 0; q < num_packs && chosen < 0; ++q) {
        if (has_room(q) || PackHolds(items, labels, q, label)) continue;
        for (const Entry& f : skipped) {
          auto& q_items = items[static_cast<size_t>(q)];
          for (size_t i = 0; i < q_items.size() && chosen < 0; ++i) {
            const int32_t moved = q_items[i];
            if (PackHolds(items, labels, f.second, labels[static_cast<size_t>(moved)])) continue;
            q_items.erase(q_items.begin() + static_cast<long>(i));
            load[static_cast<size_t>(q)] -= weights[static_cast<size_t>(moved)];
            if (static_cast<int64_t>(q_items.size()) == low) --at_ceiling;
            add(moved, f.second);
            heap.push({load[static_cast<size_t>(f.second)], f.second});
            chosen = q;
          }
          if (chosen >= 0) break;
        }
      }
      if (chosen < 0) {
        return absl::InternalError(absl::StrCat("balanced packing: item ", item, " (label ", label,
                                                ") fits no pack without a duplicate label"));
      }
    }
    add(item, chosen);
    heap.push({load[static_cast<size_t>(chosen)], chosen});
  }
  return pack_of;
}

absl::StatusOr<ReplicatedPlacement> EplbPlacement(const std::vector<double>& loads,
                                                  const EplbOptions& o) {
  const int32_t num_experts = static_cast<int32_t>(loads.size());
  auto error = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("EPLB: ", parts...));
  };
  if (num_experts < 1 || o.num_ranks < 1 || o.num_redundant < 0) {
    return error("needs >= 1 expert, num_ranks >= 1 and num_redundant >= 0; got ", num_experts,
                 ", ", o.num_ranks, ", ", o.num_redundant);
  }
  int32_t nodes = std::max(o.num_nodes, 1);
  const int32_t groups = o.num_groups == 0 ? num_experts : o.num_groups;
  if (o.num_ranks % nodes != 0) {
    return error("num_ranks ", o.num_ranks, " is not a multiple of num_nodes ", nodes);
  }
  if (groups < 1 || num_experts % groups != 0) {
    return error("num_experts ", num_experts, " is not a multiple of num_groups ", groups);
  }
  if (groups % nodes != 0) nodes = 1;  // EPLB's global policy
  if (o.num_redundant % nodes != 0) {
    return error("the hierarchical policy needs num_redundant ", o.num_redundant,
                 " to be a multiple of num_nodes ", nodes);
  }
  const int32_t ranks_per_node = o.num_ranks / nodes;
  const int32_t group_size = num_experts / groups;
  if (static_cast<int64_t>(num_experts) * ranks_per_node <
      static_cast<int64_t>(num_experts) + o.num_redundant) {
    return error(o.num_redundant, " redundant slots need more replicas of an expert than its ",
                 ranks_per_node, " ranks");
  }
  // Step 1: expert groups onto nodes (each node the same number of groups).
  std::vector<double> group_load(static_cast<size_t>(groups), 0.0);
  for (int32_t e = 0; e < num_experts; ++e) {
    group_load[static_cast<size_t>(e / group_size)] += loads[static_cast<size_t>(e)];
  }
  MOE_ASSIGN_OR_RETURN(
      std::vector<int32_t> node_of_group,
      BalancedPacking(group_load, std::vector<int32_t>(group_load.size(), -1), nodes));
  ReplicatedPlacement p;
  p.num_experts = num_experts;
  p.num_ranks = o.num_ranks;
  p.replicas.resize(static_cast<size_t>(num_experts));
  for (int32_t node = 0; node < nodes; ++node) {
    std::vector<int32_t> experts;  // this node's experts, ascending
    for (int32_t e = 0; e < num_experts; ++e) {
      if (node_of_group[static_cast<size_t>(e / group_size)] == node) experts.push_back(e);
    }
    std::vector<double> node_loads;
    for (int32_t e : experts) node_loads.push_back(loads[static_cast<size_t>(e)]);
    // Step 2: replicate within the node; step 3: pack its replicas onto its ranks.
    const std::vector<int32_t> counts =
        EplbReplicaCounts(node_loads, o.num_redundant / nodes, ranks_per_node);
    std::vector<double> weights;
    std::vector<int32_t> labels;
    for (size_t i = 0; i < experts.size(); ++i) {
      for (int32_t c = 0; c < counts[i]; ++c) {
        weights.push_back(node_loads[i] / counts[i]);
        labels.push_back(experts[i]);
      }
    }
    MOE_ASSIGN_OR_RETURN(std::vector<int32_t> pack,
                         BalancedPacking(weights, labels, ranks_per_node));
    for (size_t i = 0; i < weights.size(); ++i) {
      const size_t e = static_cast<size_t>(labels[i]);
      p.replicas[e].push_back({node * ranks_per_node + pack[i], 0.0});
    }
  }
  for (auto& list : p.replicas) {
    for (ExpertReplica& r : list) r.share = 1.0 / static_cast<double>(list.size());
  }
  MOE_RETURN_IF_ERROR(FillRankExperts(&p));
  return p;
}

}  // namespace moe::comm
