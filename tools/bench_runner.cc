#include "tools/bench_runner.h"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "moe/base/status_macros.h"
#include "moe/base/trace.h"
#include "tools/bench_check.h"
#include "tools/bench_clock.h"

namespace moe::tools {
namespace {

// Mean over tokens of the distinct remote ranks holding a token's routed experts.
double RemoteRanksPerToken(const Tensor& topk_ids, int32_t num_experts, int32_t num_ranks) {
  const int64_t num_tokens = topk_ids.dim(0);
  const int64_t top_k = topk_ids.dim(1);
  if (num_ranks <= 1 || num_tokens == 0) return 0;
  const int32_t* ids = topk_ids.data<int32_t>();
  std::vector<int64_t> seen(static_cast<size_t>(num_ranks), -1);  // last token per rank
  int64_t remote = 0;
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int32_t home = ContiguousRank(t, num_tokens, num_ranks);
    for (int64_t j = 0; j < top_k; ++j) {
      const int32_t rank = ContiguousRank(ids[t * top_k + j], num_experts, num_ranks);
      if (rank != home && seen[static_cast<size_t>(rank)] != t) {
        seen[static_cast<size_t>(rank)] = t;
        ++remote;
      }
    }
  }
  return static_cast<double>(remote) / static_cast<double>(num_tokens);
}

}  // namespace

std::string SkewText(const std::optional<gating::SkewSpec>& spec) {
  return spec.has_value() ? spec->text : std::string();
}

absl::StatusOr<std::optional<gating::SkewedSelection>> SkewSelection(
    const std::optional<gating::SkewSpec>& spec, const config::LayerConfig& config, uint64_t seed) {
  if (!spec.has_value()) return std::optional<gating::SkewedSelection>();
  MOE_ASSIGN_OR_RETURN(
      gating::SkewedSelection selection,
      gating::SkewedSelection::Create(*spec, config.num_experts(), config.top_k(), seed));
  return std::optional<gating::SkewedSelection>(std::move(selection));
}

absl::Status ApplySkew(const gating::SkewedSelection& skew, const config::LayerConfig& config,
                       const Tensor& router, uint64_t first_token, Tensor* hidden) {
  const int64_t t_count = hidden->dim(0), d = config.d_model(), e_count = config.num_experts();
  const int32_t top_k = config.top_k();
  std::vector<float> zeros(static_cast<size_t>(t_count * e_count), 0.0f);
  std::vector<int32_t> ids(static_cast<size_t>(t_count * top_k));
  std::vector<float> w(ids.size());
  MOE_RETURN_IF_ERROR(
      skew.Resample(config, zeros.data(), t_count, first_token, ids.data(), w.data()));
  const float* wr = router.data<float>();
  std::vector<double> inv_norm2(static_cast<size_t>(e_count));
  for (int64_t e = 0; e < e_count; ++e) {
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += double(wr[e * d + i]) * wr[e * d + i];
    inv_norm2[static_cast<size_t>(e)] = s > 0 ? 1.0 / s : 0;
  }
  float* x = hidden->data<float>();
  for (int64_t t = 0; t < t_count; ++t) {
    for (int64_t i = 0; i < d; ++i) x[t * d + i] *= 0.1f;
    for (int64_t j = 0; j < top_k; ++j) {
      const int32_t e = ids[static_cast<size_t>(t * top_k + j)];
      const float scale = static_cast<float>(4.0 * inv_norm2[static_cast<size_t>(e)]);
      for (int64_t i = 0; i < d; ++i) x[t * d + i] += scale * wr[e * d + i];
    }
  }
  return absl::OkStatus();
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

Tensor RandomHidden(int64_t num_tokens, int64_t d_model, uint64_t seed, int step, bool normal,
                    double input_skew) {
  Tensor hidden = Tensor::Zeros(DType::kF32, {num_tokens, d_model});
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(num_tokens) +
                      static_cast<uint64_t>(step) * 0x632BE59BD9B4E019ull);
  float* p = hidden.data<float>();
  if (normal) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (int64_t i = 0; i < hidden.num_elements(); ++i) p[i] = dist(rng);
  } else {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (int64_t i = 0; i < hidden.num_elements(); ++i) p[i] = dist(rng);
  }
  if (input_skew != 0) {
    std::mt19937_64 lean_rng(seed ^ 0xD1B54A32D192ED03ull);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> lean(static_cast<size_t>(d_model));  // [d_model]
    for (float& v : lean) v = static_cast<float>(input_skew) * dist(lean_rng);
    for (int64_t t = 0; t < num_tokens; ++t) {
      for (int64_t i = 0; i < d_model; ++i) p[t * d_model + i] += lean[static_cast<size_t>(i)];
    }
  }
  return hidden;
}

void DescribePoint(const SweepPoint& point, Hold hold, BenchRow* row) {
  const config::LayerConfig& c = point.config;
  const ParamCounts params = CountParams(c);
  row->label = point.label;
  row->experts = c.num_experts();
  row->top_k = c.top_k();
  row->d_model = c.d_model();
  row->d_ff = c.d_ff();
  row->active_params = params.active;
  row->total_params = params.total;
  row->held = hold != Hold::kNone;
  row->hold_deviation = point.hold_deviation;
  row->active_bytes_per_token = 4.0 * static_cast<double>(params.active);
}

absl::StatusOr<BenchRow> MeasureRow(const MoeLayer& layer, const RowOptions& o, int64_t num_tokens,
                                    const Ceilings& ceilings) {
  const config::LayerConfig& c = layer.config();
  const double act_bytes = c.activation_dtype() == config::DTYPE_BF16 ? 2.0 : 4.0;
  BenchRow row;
  row.tokens = num_tokens;
  row.steps = o.steps;
  row.ep_ranks = o.ep_ranks;
  if (o.ep_ranks > 1) row.rank_load_before.assign(static_cast<size_t>(o.ep_ranks), 0);
  std::vector<double> total, route, plan, experts, combine;
  double flop = 0, bytes = 0, load_ratio = 0, remote = 0;  // sums over steps
  MOE_ASSIGN_OR_RETURN(const std::optional<gating::SkewedSelection> skew,
                       SkewSelection(o.skew, c, o.seed));
  for (int step = 0; step < o.steps; ++step) {
    Tensor hidden =
        RandomHidden(num_tokens, c.d_model(), o.seed, step, o.normal_inputs, o.input_skew);
    if (skew) {
      MOE_RETURN_IF_ERROR(ApplySkew(*skew, c, layer.weights().router,
                                    static_cast<uint64_t>(step * num_tokens), &hidden));
    }
    if (step == 0) {
      for (int i = 0; i < o.warmup; ++i) {
        trace::TraceScope scope("warm-up forward", "bench");
        MOE_RETURN_IF_ERROR(layer.Forward(hidden).status());
      }
    }
    LayerOutput out;
    for (int i = 0; i < o.repeats; ++i) {
      StageTimes times;
      trace::TraceScope scope("forward", "bench");
      scope.Arg("tokens", num_tokens);
      scope.Arg("step", step);
      const Clock::time_point start = Clock::now();
      MOE_ASSIGN_OR_RETURN(out, layer.Forward(hidden, &times));
      total.push_back(Seconds(start));
      route.push_back(times.route);
      plan.push_back(times.plan);
      experts.push_back(times.experts);
      combine.push_back(times.combine);
    }
    int64_t max_load = 0, sum_load = 0, active_experts = 0;
    for (int64_t load : out.expert_load) {
      max_load = std::max(max_load, load);
      sum_load += load;
      active_experts += load > 0 ? 1 : 0;
    }
    const double mean_load = static_cast<double>(sum_load) / c.num_experts();
    load_ratio += mean_load > 0 ? static_cast<double>(max_load) / mean_load : 0.0;
    const int64_t kept_slots = num_tokens * c.top_k() - out.dropped_slots;
    flop += UsefulFlop(c, num_tokens, kept_slots);
    bytes += ActiveWeightBytes(c, active_experts);
    remote += RemoteRanksPerToken(out.topk_ids, c.num_experts(), o.ep_ranks);
    for (int64_t e = 0; e < c.num_experts() && o.ep_ranks > 1; ++e) {
      row.rank_load_before[static_cast<size_t>(ContiguousRank(e, c.num_experts(), o.ep_ranks))] +=
          out.expert_load[static_cast<size_t>(e)];
    }
    row.expert_load.push_back(out.expert_load);
    if (step > 0) continue;
    row.active_experts = active_experts;
    row.dropped_slots = out.dropped_slots;
    trace::TraceScope scope("check", "bench");
    MOE_ASSIGN_OR_RETURN(
        CheckResult check,
        CheckLayerOutput(c, o.check_weights != nullptr ? *o.check_weights : layer.weights(), hidden,
                         out, o.check_tokens, o.check));
    row.checked_tokens = check.checked_tokens;
    row.wrong = check.wrong();
    row.max_abs_error = check.max_abs_error;
    if (row.wrong > 0) {
      std::fprintf(stderr, "moe bench: %lld tokens: %lld wrong; first: %s\n",
                   static_cast<long long>(num_tokens), static_cast<long long>(row.wrong),
                   check.first_problem.c_str());
    }
  }
  const double steps = static_cast<double>(o.steps);
  row.seconds = Median(total);
  row.route_seconds = Median(route);
  row.plan_seconds = Median(plan);
  row.experts_seconds = Median(experts);
  row.combine_seconds = Median(combine);
  row.tokens_per_second = static_cast<double>(num_tokens) / row.seconds;
  row.load_max_over_mean = load_ratio / steps;
  row.gflops = flop / steps / row.seconds / 1e9;
  row.gbps = bytes / steps / row.seconds / 1e9;
  row.roofline_seconds = RooflineSeconds(flop / steps, bytes / steps, ceilings);
  row.ep_remote_ranks_per_token = remote / steps;
  row.ep_bytes_per_token =
      2.0 * static_cast<double>(c.d_model()) * act_bytes * row.ep_remote_ranks_per_token;
  return row;
}

}  // namespace moe::tools
