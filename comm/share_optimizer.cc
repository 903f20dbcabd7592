#include "comm/share_optimizer.h"

#include <algorithm>
#include <numeric>
#include <queue>

namespace moe::comm {
namespace {

// Dinic's max flow on doubles, for the feasibility of a max rank load T.
class MaxFlow {
 public:
  explicit MaxFlow(int32_t nodes) : adjacency_(static_cast<size_t>(nodes)) {}
  // Returns the index of the forward edge.
  size_t AddEdge(int32_t from, int32_t to, double capacity) {
    adjacency_[static_cast<size_t>(from)].push_back(edges_.size());
    edges_.push_back({to, capacity, 0.0});
    adjacency_[static_cast<size_t>(to)].push_back(edges_.size());
    edges_.push_back({from, 0.0, 0.0});
    return edges_.size() - 2;
  }
  void SetCapacity(size_t edge, double capacity) { edges_[edge].capacity = capacity; }
  // After Run: whether `node` is reachable from the source in the residual graph (the source
  // side of a minimum cut).
  bool Reachable(int32_t node) const { return level_[static_cast<size_t>(node)] >= 0; }
  double Flow(size_t edge) const { return edges_[edge].flow; }

  double Run(int32_t source, int32_t sink) {
    for (Edge& e : edges_) e.flow = 0;
    double total = 0;
    while (Levels(source, sink)) {
      next_.assign(adjacency_.size(), 0);
      for (double pushed; (pushed = Push(source, sink, kInfinity)) > kEpsilon;) total += pushed;
    }
    return total;
  }

 private:
  struct Edge {
    int32_t to;
    double capacity;
    double flow;
  };
  static constexpr double kInfinity = 1e300;
  static constexpr double kEpsilon = 1e-13;

  bool Levels(int32_t source, int32_t sink) {
    level_.assign(adjacency_.size(), -1);
    std::queue<int32_t> queue;
    level_[static_cast<size_t>(source)] = 0;
    queue.push(source);
    while (!queue.empty()) {
      const int32_t v = queue.front();
      queue.pop();
      for (size_t id : adjacency_[static_cast<size_t>(v)]) {
        const Edge& e = edges_[id];
        if (e.capacity - e.flow > kEpsilon && level_[static_cast<size_t>(e.to)] < 0) {
          level_[static_cast<size_t>(e.to)] = level_[static_cast<size_t>(v)] + 1;
          queue.push(e.to);
        }
      }
    }
    return level_[static_cast<size_t>(sink)] >= 0;
  }

  double Push(int32_t v, int32_t sink, double limit) {
    if (v == sink) return limit;
    auto& out = adjacency_[static_cast<size_t>(v)];
    for (size_t& i = next_[static_cast<size_t>(v)]; i < out.size(); ++i) {
      Edge& e = edges_[out[i]];
      if (e.capacity - e.flow <= kEpsilon ||
          level_[static_cast<size_t>(e.to)] != level_[static_cast<size_t>(v)] + 1) {
        continue;
      }
      const double pushed = Push(e.to, sink, std::min(limit, e.capacity - e.flow));
      if (pushed > kEpsilon) {
        e.flow += pushed;
        edges_[out[i] ^ 1].flow -= pushed;
        return pushed;
      }
    }
    return 0;
  }

  std::vector<std::vector<size_t>> adjacency_;
  std::vector<Edge> edges_;
  std::vector<int32_t> level_;
  std::vector<size_t> next_;
};

}  // namespace

UnionFind::UnionFind(int32_t n) : parent_(static_cast<size_t>(n)) {
  std::iota(parent_.begin(), parent_.end(), 0);
}

int32_t UnionFind::Find(int32_t x) {
  while (parent_[static_cast<size_t>(x)] != x) {
    int32_t& up = parent_[static_cast<size_t>(x)];
    up = parent_[static_cast<size_t>(up)];  // path halving
    x = up;
  }
  return x;
}

void UnionFind::Union(int32_t a, int32_t b) {
  a = Find(a);
  b = Find(b);
  if (a != b) parent_[static_cast<size_t>(std::max(a, b))] = std::min(a, b);
}

Pieces OptimizeShares(const std::vector<std::vector<int32_t>>& ranks_of_expert,
                      const std::vector<double>& loads, int32_t num_ranks) {
  const std::vector<double>& w = loads;
  const int32_t num_experts = static_cast<int32_t>(w.size());
  Pieces out;
  out.of_expert.resize(w.size());
  std::vector<double> fixed(static_cast<size_t>(num_ranks), 0.0);
  UnionFind components(num_ranks);
  for (int32_t e = 0; e < num_experts; ++e) {
    const auto& ranks = ranks_of_expert[static_cast<size_t>(e)];
    if (ranks.size() == 1) {
      fixed[static_cast<size_t>(ranks[0])] += w[static_cast<size_t>(e)];
      out.of_expert[static_cast<size_t>(e)] = {{ranks[0], w[static_cast<size_t>(e)]}};
    }
    for (int32_t r : ranks) components.Union(ranks[0], r);
  }
  std::vector<std::vector<int32_t>> experts_of(static_cast<size_t>(num_ranks));
  for (int32_t e = 0; e < num_experts; ++e) {
    const auto& ranks = ranks_of_expert[static_cast<size_t>(e)];
    if (ranks.size() > 1) experts_of[static_cast<size_t>(components.Find(ranks[0]))].push_back(e);
  }
  std::vector<double> load = fixed;
  for (int32_t root = 0; root < num_ranks; ++root) {
    const auto& experts = experts_of[static_cast<size_t>(root)];
    if (experts.empty()) continue;
    if (experts.size() == 1) {  // water-filling of one expert over its ranks
      const size_t e = static_cast<size_t>(experts[0]);
      std::vector<int32_t> ranks = ranks_of_expert[e];
      std::stable_sort(ranks.begin(), ranks.end(), [&](int32_t a, int32_t b) {
        return fixed[static_cast<size_t>(a)] < fixed[static_cast<size_t>(b)];
      });
      double sum = w[e];
      double level = 0;
      for (size_t k = 0; k < ranks.size(); ++k) {
        sum += fixed[static_cast<size_t>(ranks[k])];
        level = sum / static_cast<double>(k + 1);
        if (k + 1 == ranks.size() || level <= fixed[static_cast<size_t>(ranks[k + 1])]) break;
      }
      for (int32_t r : ranks_of_expert[e]) {
        const double piece = std::max(0.0, level - fixed[static_cast<size_t>(r)]);
        out.of_expert[e].push_back({r, piece});
        load[static_cast<size_t>(r)] += piece;
      }
      continue;
    }
    // Several experts: the least T for which a flow routes every load.
    std::vector<int32_t> ranks;
    for (int32_t e : experts) {
      for (int32_t r : ranks_of_expert[static_cast<size_t>(e)]) ranks.push_back(r);
    }
    std::sort(ranks.begin(), ranks.end());
    ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
    const int32_t n_e = static_cast<int32_t>(experts.size());
    const int32_t source = n_e + static_cast<int32_t>(ranks.size());
    const int32_t sink = source + 1;
    MaxFlow flow(sink + 1);
    double demand = 0, fixed_sum = 0, fixed_max = 0;
    std::vector<std::vector<size_t>> edge_of(experts.size());
    for (int32_t i = 0; i < n_e; ++i) {
      const size_t e = static_cast<size_t>(experts[static_cast<size_t>(i)]);
      flow.AddEdge(source, i, w[e]);
      demand += w[e];
      for (int32_t r : ranks_of_expert[e]) {
        const int32_t node =
            n_e +
            static_cast<int32_t>(std::lower_bound(ranks.begin(), ranks.end(), r) - ranks.begin());
        edge_of[static_cast<size_t>(i)].push_back(flow.AddEdge(i, node, 1e300));
      }
    }
    std::vector<size_t> sink_edge;
    for (size_t j = 0; j < ranks.size(); ++j) {
      const double f = fixed[static_cast<size_t>(ranks[j])];
      fixed_sum += f;
      fixed_max = std::max(fixed_max, f);
      sink_edge.push_back(flow.AddEdge(n_e + static_cast<int32_t>(j), sink, 0.0));
    }
    auto feasible = [&](double t) {
      for (size_t j = 0; j < ranks.size(); ++j) {
        flow.SetCapacity(sink_edge[j], std::max(0.0, t - fixed[static_cast<size_t>(ranks[j])]));
      }
      return flow.Run(source, sink) >= demand * (1 - 1e-12);
    };
    // Dinkelbach-style ascent: every T tried is a lower bound on the optimum. When T is
    // infeasible, the experts X still reachable from the source in the residual graph send all
    // their load to their ranks N(X), so the optimum is >= (load(X) + fixed(N(X))) / |N(X)|,
    // which is > T; the ascent ends at the optimum after a few max flows.
    double t = std::max(fixed_max, (fixed_sum + demand) / static_cast<double>(ranks.size()));
    std::vector<bool> in_n(ranks.size());
    for (int iter = 0; iter < 1000 && !feasible(t); ++iter) {
      double x_load = 0, n_fixed = 0;
      int64_t n_count = 0;
      std::fill(in_n.begin(), in_n.end(), false);
      for (int32_t i = 0; i < n_e; ++i) {
        if (!flow.Reachable(i)) continue;
        const size_t e = static_cast<size_t>(experts[static_cast<size_t>(i)]);
        x_load += w[e];
        for (int32_t r : ranks_of_expert[e]) {
          const size_t j =
              static_cast<size_t>(std::lower_bound(ranks.begin(), ranks.end(), r) - ranks.begin());
          if (in_n[j]) continue;
          in_n[j] = true;
          n_fixed += fixed[static_cast<size_t>(r)];
          ++n_count;
        }
      }
      const double next = n_count > 0 ? (x_load + n_fixed) / static_cast<double>(n_count) : t;
      t = std::max(next, t * (1 + 1e-12));  // rounding must not stall the ascent
    }
    for (int32_t i = 0; i < n_e; ++i) {
      const size_t e = static_cast<size_t>(experts[static_cast<size_t>(i)]);
      const auto& rs = ranks_of_expert[e];
      for (size_t j = 0; j < rs.size(); ++j) {
        const double piece = std::max(0.0, flow.Flow(edge_of[static_cast<size_t>(i)][j]));
        out.of_expert[e].push_back({rs[j], piece});
        load[static_cast<size_t>(rs[j])] += piece;
      }
    }
  }
  out.max_load = *std::max_element(load.begin(), load.end());
  return out;
}

}  // namespace moe::comm
