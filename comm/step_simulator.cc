#include "comm/step_simulator.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace moe::comm {
namespace {

constexpr int32_t kMaxSimulatedRanks = 4096;

absl::Status FieldError(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("step simulator: ", field, ": ", why));
}

bool FiniteNonNegative(double x) { return std::isfinite(x) && x >= 0; }

// Both all-to-all phases and the expert phase for one vector of rank rows.
StepBreakdown Simulate(const StepShape& s, const std::vector<double>& rows, const LinkModel& l,
                       const ComputeModel& c) {
  const int32_t n = s.num_ranks;
  const int32_t per_node = std::min(std::max(l.ranks_per_node, 1), n);
  const double tokens = static_cast<double>(s.tokens_per_rank);
  const double k = s.top_k;
  const double token_row_bytes = 4.0 * s.top_k + static_cast<double>(s.d_model) * s.bytes_per_value;
  const double result_row_bytes = static_cast<double>(s.d_model) * s.bytes_per_value;
  double total_rows = 0;
  for (double r : rows) total_rows += r;
  StepBreakdown b;
  b.route_s = tokens * c.route_us_per_token * 1e-6;
  b.combine_local_s = tokens * c.combine_us_per_token * 1e-6;
  // Per destination d: bytes one source sends it (dispatch) and it returns one source (combine).
  std::vector<double> to_dispatch(static_cast<size_t>(n), 0.0);
  std::vector<double> to_combine(static_cast<size_t>(n), 0.0);
  for (int32_t d = 0; d < n; ++d) {
    const double q = total_rows > 0 ? rows[static_cast<size_t>(d)] / total_rows : 0.0;
    to_dispatch[static_cast<size_t>(d)] = tokens * (1 - std::pow(1 - q, k)) * token_row_bytes;
    to_combine[static_cast<size_t>(d)] = tokens * k * q * result_row_bytes;
  }
  const int32_t num_nodes = (n + per_node - 1) / per_node;
  // Full duplex: a rank's time counts max(sent, received) per link kind, so dispatch (sources
  // send) and combine (destinations send back) use the same formula.
  auto phase = [&](const std::vector<double>& per_dest) {
    // Sums per node of what one source sends to each destination.
    std::vector<double> node_sum(static_cast<size_t>(num_nodes), 0.0);
    double all = 0;
    for (int32_t d = 0; d < n; ++d) {
      node_sum[static_cast<size_t>(d / per_node)] += per_dest[static_cast<size_t>(d)];
      all += per_dest[static_cast<size_t>(d)];
    }
    PhaseTime t;
    const double hops = n == 1 ? 0 : (num_nodes > 1 ? 2 : 1);
    for (int32_t r = 0; r < n; ++r) {
      const int32_t node = r / per_node;
      const int32_t node_ranks = std::min(per_node, n - node * per_node);
      const double self = per_dest[static_cast<size_t>(r)];
      // As a source (dispatch: sends to all; combine: receives from all) ...
      const double source_intra = node_sum[static_cast<size_t>(node)] - self;
      const double source_inter = all - node_sum[static_cast<size_t>(node)];
      // ... and as a destination (dispatch: receives; combine: sends back).
      const double dest_intra = (node_ranks - 1) * self;
      const double dest_inter = (n - node_ranks) * self;
      const double intra = std::max(source_intra, dest_intra);
      const double inter = std::max(source_inter, dest_inter);
      const double seconds = std::max(intra / (l.intra_gbps * 1e9), inter / (l.inter_gbps * 1e9)) +
                             hops * l.latency_us * 1e-6;
      t.max_s = std::max(t.max_s, seconds);
      t.mean_s += seconds / n;
      t.max_rank_bytes = std::max(t.max_rank_bytes, intra + inter);
    }
    return t;
  };
  b.dispatch = phase(to_dispatch);
  b.combine = phase(to_combine);
  for (int32_t r = 0; r < n; ++r) {
    const double x = rows[static_cast<size_t>(r)];
    const double seconds = x > 0 ? (c.expert_fixed_us + c.expert_us_per_row * x) * 1e-6 : 0.0;
    b.expert.max_s = std::max(b.expert.max_s, seconds);
    b.expert.mean_s += seconds / n;
  }
  b.total_s = b.route_s + b.dispatch.max_s + b.expert.max_s + b.combine.max_s + b.combine_local_s;
  const double mean_rows = total_rows / n;
  double max_rows = 0;
  for (double x : rows) max_rows = std::max(max_rows, x);
  b.rows_max_over_mean = mean_rows > 0 ? max_rows / mean_rows : 0;
  return b;
}

}  // namespace

absl::StatusOr<StepBreakdown> SimulateStep(const StepShape& shape,
                                           const std::vector<double>& rank_rows,
                                           const LinkModel& links, const ComputeModel& compute) {
  if (shape.num_ranks < 1 || shape.num_ranks > kMaxSimulatedRanks) {
    return FieldError(
        "num_ranks", absl::StrCat("expected 1 to ", kMaxSimulatedRanks, ", got ", shape.num_ranks));
  }
  if (shape.tokens_per_rank < 0 || shape.top_k < 1 || shape.d_model < 1 ||
      shape.bytes_per_value < 1) {
    return FieldError("shape", absl::StrCat("expected tokens_per_rank >= 0, top_k, d_model and "
                                            "bytes_per_value >= 1; got ",
                                            shape.tokens_per_rank, ", ", shape.top_k, ", ",
                                            shape.d_model, ", ", shape.bytes_per_value));
  }
  if (static_cast<int64_t>(rank_rows.size()) != shape.num_ranks) {
    return FieldError("rank_rows", absl::StrCat("has ", rank_rows.size(), " entries, expected ",
                                                shape.num_ranks, " (num_ranks)"));
  }
  for (size_t r = 0; r < rank_rows.size(); ++r) {
    if (!FiniteNonNegative(rank_rows[r])) {
      return FieldError(absl::StrCat("rank_rows[", r, "]"),
                        absl::StrCat(rank_rows[r], " is not a finite number >= 0"));
    }
  }
  if (links.ranks_per_node < 1) {
    return FieldError("ranks_per_node", absl::StrCat("expected >= 1, got ", links.ranks_per_node));
  }
  if (!(links.intra_gbps > 0) || !(links.inter_gbps > 0) || !std::isfinite(links.intra_gbps) ||
      !std::isfinite(links.inter_gbps) || !FiniteNonNegative(links.latency_us)) {
    return FieldError(
        "links", absl::StrCat("expected intra_gbps, inter_gbps > 0 and latency_us "
                              ">= 0; got ",
                              links.intra_gbps, ", ", links.inter_gbps, ", ", links.latency_us));
  }
  for (double x : {compute.route_us_per_token, compute.expert_fixed_us, compute.expert_us_per_row,
                   compute.combine_us_per_token}) {
    if (!FiniteNonNegative(x)) {
      return FieldError("compute", absl::StrCat("every time must be finite and >= 0, got ", x));
    }
  }
  StepBreakdown b = Simulate(shape, rank_rows, links, compute);
  double total = 0;
  for (double x : rank_rows) total += x;
  const std::vector<double> balanced(rank_rows.size(), total / shape.num_ranks);
  b.imbalance_s = b.total_s - Simulate(shape, balanced, links, compute).total_s;
  return b;
}

absl::StatusOr<AffineFit> FitAffine(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.empty() || x.size() != y.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "affine fit: needs as many x as y values (>= 1), got ", x.size(), " and ", y.size()));
  }
  const double n = static_cast<double>(x.size());
  double sx = 0, sy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!FiniteNonNegative(x[i]) || !std::isfinite(y[i])) {
      return absl::InvalidArgumentError(absl::StrCat("affine fit: point ", i, " (", x[i], ", ",
                                                     y[i], ") is not finite with x >= 0"));
    }
    sx += x[i];
    sy += y[i];
  }
  const double mx = sx / n, my = sy / n;
  double sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    sxy += (x[i] - mx) * (y[i] - my);
  }
  AffineFit fit;
  if (sxx <= 1e-12 * std::max(1.0, mx * mx)) {
    fit.slope = mx > 0 ? my / mx : 0;
    fit.intercept = mx > 0 ? 0 : my;
  } else {
    fit.slope = sxy / sxx;
    fit.intercept = my - fit.slope * mx;
  }
  return fit;
}

}  // namespace moe::comm
