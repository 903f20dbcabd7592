#include "tests/support/reference_forward.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace moe::testing {
namespace {

using config::LayerConfig;

double Activate(config::Activation a, double x) {
  switch (a) {
    case config::ACTIVATION_SWIGLU:
      return x / (1.0 + std::exp(-x));
    case config::ACTIVATION_GEGLU:
    case config::ACTIVATION_GELU:
      return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case config::ACTIVATION_RELU:
      return std::max(x, 0.0);
    default:
      return x;
  }
}

bool Gated(config::Activation a) {
  return a == config::ACTIVATION_SWIGLU || a == config::ACTIVATION_GEGLU;
}

// One expert's FFN on one token, in double. gate/up [d_ff, d_model], down [d_model, d_ff].
std::vector<double> Ffn(config::Activation act, const float* gate, const float* up,
                        const float* down, const float* x, int64_t d_model, int64_t d_ff) {
  std::vector<double> h(static_cast<size_t>(d_ff));
  for (int64_t f = 0; f < d_ff; ++f) {
    double u = 0;
    for (int64_t i = 0; i < d_model; ++i) u += double{up[f * d_model + i]} * x[i];
    if (Gated(act)) {
      double g = 0;
      for (int64_t i = 0; i < d_model; ++i) g += double{gate[f * d_model + i]} * x[i];
      h[f] = Activate(act, g) * u;
    } else {
      h[f] = Activate(act, u);
    }
  }
  std::vector<double> y(static_cast<size_t>(d_model));
  for (int64_t o = 0; o < d_model; ++o) {
    double s = 0;
    for (int64_t f = 0; f < d_ff; ++f) s += double{down[o * d_ff + f]} * h[f];
    y[o] = s;
  }
  return y;
}

// Indices of the k largest values, best first, ties to the lower index.
std::vector<int32_t> TopKIndices(const std::vector<double>& v, int k) {
  std::vector<int32_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return v[a] > v[b]; });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

std::vector<double> SoftmaxOf(const std::vector<double>& x) {
  const double m = *std::max_element(x.begin(), x.end());
  std::vector<double> p(x.size());
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) sum += p[i] = std::exp(x[i] - m);
  for (double& v : p) v /= sum;
  return p;
}

}  // namespace

ReferenceOutput ReferenceForward(const LayerConfig& c, const MoeLayerWeights& w,
                                 const Tensor& hidden) {
  const int64_t T = hidden.dim(0);
  const int64_t d = c.d_model();
  const int E = c.num_experts();
  const int k = c.top_k();
  const config::RouterConfig& r = c.router();
  const double scaling = r.has_routed_scaling_factor() ? r.routed_scaling_factor() : 1.0;
  const float* x_all = hidden.data<float>();

  ReferenceOutput out;
  out.output.assign(static_cast<size_t>(T * d), 0.0);
  out.topk_ids.resize(static_cast<size_t>(T * k));
  out.topk_weights.resize(static_cast<size_t>(T * k));
  out.scores.resize(static_cast<size_t>(T * E));

  // Routing, token by token.
  for (int64_t t = 0; t < T; ++t) {
    const float* x = x_all + t * d;
    std::vector<double> logits(static_cast<size_t>(E));
    for (int e = 0; e < E; ++e) {
      double s = 0;
      for (int64_t i = 0; i < d; ++i) s += double{w.router.data<float>()[e * d + i]} * x[i];
      logits[e] = s;
    }
    const bool topk_first =
        r.score_function() == config::SCORE_SOFTMAX && r.score_order() == config::TOPK_THEN_SCORE;
    std::vector<double> scores(static_cast<size_t>(E));
    if (topk_first) {
      scores = logits;
    } else if (r.score_function() == config::SCORE_SOFTMAX) {
      scores = SoftmaxOf(logits);
    } else {
      for (int e = 0; e < E; ++e) scores[e] = 1.0 / (1.0 + std::exp(-logits[e]));
    }
    std::vector<double> choice = scores;
    if (r.selection_bias()) {
      for (int e = 0; e < E; ++e) choice[e] += w.selection_bias.data<float>()[e];
    }
    if (r.num_groups() > 1) {
      const int G = r.num_groups();
      const int per = E / G;
      std::vector<double> group_score(static_cast<size_t>(G));
      for (int g = 0; g < G; ++g) {
        std::vector<double> members(choice.begin() + g * per, choice.begin() + (g + 1) * per);
        std::sort(members.begin(), members.end(), std::greater<double>());
        group_score[g] =
            r.group_score() == config::GROUP_SCORE_MAX ? members[0] : members[0] + members[1];
      }
      std::vector<int32_t> kept = TopKIndices(group_score, r.topk_groups());
      for (int g = 0; g < G; ++g) {
        if (std::find(kept.begin(), kept.end(), g) != kept.end()) continue;
        for (int i = 0; i < per; ++i)
          choice[g * per + i] = -std::numeric_limits<double>::infinity();
      }
    }
    std::copy(choice.begin(), choice.end(), out.scores.begin() + t * E);
    std::vector<int32_t> ids = TopKIndices(choice, k);
    std::vector<double> weights(static_cast<size_t>(k));
    if (topk_first) {
      std::vector<double> sel(static_cast<size_t>(k));
      for (int j = 0; j < k; ++j) sel[j] = logits[ids[j]];
      weights = SoftmaxOf(sel);
    } else {
      for (int j = 0; j < k; ++j) weights[j] = scores[ids[j]];
    }
    if (r.renormalize()) {
      double sum = 1e-20;
      for (double v : weights) sum += v;
      for (double& v : weights) v /= sum;
    }
    for (double& v : weights) v *= scaling;
    for (int j = 0; j < k; ++j) {
      out.topk_ids[t * k + j] = ids[j];
      out.topk_weights[t * k + j] = weights[j];
    }
  }

  // Capacity: each expert keeps its first `capacity` slots in token order.
  std::vector<bool> kept(static_cast<size_t>(T * k), true);
  if (c.capacity().policy() == config::DROP_IN_TOKEN_ORDER) {
    const int64_t capacity = static_cast<int64_t>(
        std::ceil(double{c.capacity().factor()} * static_cast<double>(T * k) / E));
    std::vector<int64_t> used(static_cast<size_t>(E), 0);
    for (int64_t s = 0; s < T * k; ++s) {
      if (used[out.topk_ids[s]]++ >= capacity) {
        kept[s] = false;
        ++out.dropped_slots;
      }
    }
  }

  // Experts and combine.
  const int64_t dff = c.d_ff();
  const int64_t shared_dff = int64_t{c.shared_experts().count()} *
                             (c.shared_experts().d_ff() > 0 ? c.shared_experts().d_ff() : c.d_ff());
  for (int64_t t = 0; t < T; ++t) {
    const float* x = x_all + t * d;
    double* y = out.output.data() + t * d;
    for (int j = 0; j < k; ++j) {
      if (!kept[t * k + j]) continue;
      const int64_t e = out.topk_ids[t * k + j];
      const float* gate =
          Gated(c.activation()) ? w.experts.gate.data<float>() + e * dff * d : nullptr;
      std::vector<double> fe = Ffn(c.activation(), gate, w.experts.up.data<float>() + e * dff * d,
                                   w.experts.down.data<float>() + e * d * dff, x, d, dff);
      for (int64_t i = 0; i < d; ++i) y[i] += out.topk_weights[t * k + j] * fe[i];
    }
    if (shared_dff > 0) {
      std::vector<double> fs =
          Ffn(c.activation(), Gated(c.activation()) ? w.shared.gate.data<float>() : nullptr,
              w.shared.up.data<float>(), w.shared.down.data<float>(), x, d, shared_dff);
      double scale = 1.0;
      if (c.shared_experts().sigmoid_gate()) {
        double g = 0;
        for (int64_t i = 0; i < d; ++i) g += double{w.shared_gate.data<float>()[i]} * x[i];
        scale = 1.0 / (1.0 + std::exp(-g));
      }
      for (int64_t i = 0; i < d; ++i) y[i] += scale * fs[i];
    }
  }
  return out;
}

double RelativeL2(const float* a, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double diff = double{a[i]} - ref[i];
    num += diff * diff;
    den += ref[i] * ref[i];
  }
  if (std::isnan(num)) return std::numeric_limits<double>::infinity();
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

}  // namespace moe::testing
