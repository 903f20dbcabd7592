#include "gating/routing_skew.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "configs/layer_config.h"
#include "gating/load_stats.h"
#include "kernels/cpu/softmax.h"

namespace moe::gating {
namespace {

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// SplitMix64: a tiny generator whose output is the same on every platform.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() { return Mix64(state_ += 0x9e3779b97f4a7c15ULL); }
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  // In [0, n) (multiply-shift; the bias is below 2^-32 for n < 2^32).
  uint32_t Below(uint32_t n) {
    return static_cast<uint32_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }

 private:
  uint64_t state_;
};

absl::Status SpecError(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "--skew '", text, "': ", why, " (expected uniform, zipf:S, hot:N:P or trace:FILE)"));
}

}  // namespace

std::vector<int32_t> SeededPermutation(int32_t n, uint64_t seed) {
  std::vector<int32_t> perm(static_cast<size_t>(std::max(n, 0)));
  std::iota(perm.begin(), perm.end(), 0);
  SplitMix64 rng(Mix64(seed ^ 0x5eedc0ffee123457ULL));
  for (int32_t i = n - 1; i > 0; --i) {
    const uint32_t j = rng.Below(static_cast<uint32_t>(i) + 1);
    std::swap(perm[static_cast<size_t>(i)], perm[j]);
  }
  return perm;
}

absl::StatusOr<SkewSpec> ParseSkewSpec(absl::string_view text) {
  SkewSpec spec;
  spec.text = std::string(text);
  if (text == "uniform") return spec;
  std::vector<absl::string_view> parts = absl::StrSplit(text, absl::MaxSplits(':', 2));
  if (parts[0] == "zipf") {
    spec.kind = SkewSpec::Kind::kZipf;
    if (parts.size() != 2 || !absl::SimpleAtod(parts[1], &spec.zipf_s) ||
        !(spec.zipf_s >= 0 && spec.zipf_s <= 16)) {
      return SpecError(text, "zipf:S needs an exponent S in [0, 16]");
    }
    return spec;
  }
  if (parts[0] == "hot") {
    spec.kind = SkewSpec::Kind::kHot;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &spec.hot_experts) ||
        spec.hot_experts < 1) {
      return SpecError(text, "hot:N:P needs a count N >= 1 of hot experts");
    }
    if (!absl::SimpleAtod(parts[2], &spec.hot_fraction) ||
        !(spec.hot_fraction >= 0 && spec.hot_fraction <= 1)) {
      return SpecError(text, "hot:N:P needs a fraction P in [0, 1] of the slots");
    }
    return spec;
  }
  if (parts[0] == "trace") {
    spec.kind = SkewSpec::Kind::kTrace;
    const size_t colon = text.find(':');
    const std::string path(text.substr(colon + 1));
    if (path.empty()) return SpecError(text, "trace:FILE needs a loads file");
    absl::StatusOr<std::vector<double>> loads = ReadLoadsFile(path);
    if (!loads.ok()) {
      return absl::Status(loads.status().code(),
                          absl::StrCat("--skew '", text, "': ", loads.status().message()));
    }
    spec.trace_loads = *std::move(loads);
    return spec;
  }
  return SpecError(text, "unknown distribution");
}

absl::StatusOr<std::vector<double>> SkewFractions(const SkewSpec& spec, int32_t num_experts,
                                                  uint64_t seed) {
  if (num_experts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--skew '", spec.text, "': num_experts must be >= 1, got ", num_experts));
  }
  const size_t n = static_cast<size_t>(num_experts);
  std::vector<double> weight(n, 1.0);
  const std::vector<int32_t> perm = SeededPermutation(num_experts, seed);
  switch (spec.kind) {
    case SkewSpec::Kind::kUniform:
      break;
    case SkewSpec::Kind::kZipf:
      for (size_t i = 0; i < n; ++i) {
        weight[static_cast<size_t>(perm[i])] = std::pow(static_cast<double>(i + 1), -spec.zipf_s);
      }
      break;
    case SkewSpec::Kind::kHot: {
      const int32_t hot = spec.hot_experts;
      if (hot > num_experts || (hot == num_experts && spec.hot_fraction < 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--skew '", spec.text, "': ", hot, " hot experts of ", num_experts,
                         hot > num_experts ? "" : " leave none for the remaining fraction"));
      }
      for (size_t i = 0; i < n; ++i) {
        const bool is_hot = static_cast<int32_t>(i) < hot;
        weight[static_cast<size_t>(perm[i])] =
            is_hot ? spec.hot_fraction / hot : (1 - spec.hot_fraction) / (num_experts - hot);
      }
      break;
    }
    case SkewSpec::Kind::kTrace:
      if (spec.trace_loads.size() != n) {
        return absl::InvalidArgumentError(absl::StrCat("--skew '", spec.text, "': the trace has ",
                                                       spec.trace_loads.size(),
                                                       " experts, the layer ", num_experts));
      }
      weight = spec.trace_loads;
      break;
  }
  double total = 0;
  for (double w : weight) total += w;
  if (!(total > 0) || !std::isfinite(total)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--skew '", spec.text, "': the loads sum to ", total, ", expected > 0"));
  }
  for (double& w : weight) w /= total;
  return weight;
}

absl::StatusOr<std::vector<double>> SelectionProbabilities(const std::vector<double>& fractions,
                                                           int32_t top_k) {
  const size_t n = fractions.size();
  if (top_k < 1 || static_cast<size_t>(top_k) > n) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be in [1, ", n, "] (num_experts), got ", top_k));
  }
  // Water-filling: p_e = min(1, alpha * f_e) with sum p = top_k. Capped experts are fixed at
  // 1 one at a time, largest first, until alpha * f stays below 1 for the rest.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return fractions[a] > fractions[b]; });
  std::vector<double> p(n, 0.0);
  double rest = 0;  // sum of fractions not capped
  for (double f : fractions) rest += f;
  size_t capped = 0;
  while (capped < n) {
    const double mass = static_cast<double>(top_k) - static_cast<double>(capped);
    if (!(rest > 0) || fractions[order[capped]] * mass / rest <= 1) break;
    rest -= fractions[order[capped]];
    p[order[capped]] = 1;
    ++capped;
  }
  const double mass = static_cast<double>(top_k) - static_cast<double>(capped);
  for (size_t i = capped; i < n; ++i) {
    // Uncapped experts with no fraction share what is left equally when nothing else can.
    p[order[i]] =
        rest > 0 ? fractions[order[i]] * mass / rest : mass / static_cast<double>(n - capped);
  }
  return p;
}

absl::StatusOr<SkewedSelection> SkewedSelection::Create(const SkewSpec& spec, int32_t num_experts,
                                                        int32_t top_k, uint64_t seed) {
  absl::StatusOr<std::vector<double>> fractions = SkewFractions(spec, num_experts, seed);
  if (!fractions.ok()) return fractions.status();
  absl::StatusOr<std::vector<double>> p = SelectionProbabilities(*fractions, top_k);
  if (!p.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--skew '", spec.text, "': ", p.status().message()));
  }
  return SkewedSelection(*std::move(fractions), *std::move(p), top_k, seed);
}

absl::Status SkewedSelection::Resample(const config::LayerConfig& config, const float* logits,
                                       int64_t num_tokens, uint64_t first_token, int32_t* topk_ids,
                                       float* topk_weights) const {
  const int32_t num_experts = static_cast<int32_t>(probabilities_.size());
  if (config.num_experts() != num_experts || config.top_k() != top_k_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "skewed selection made for num_experts ", num_experts, ", top_k ", top_k_,
        " used with a config of num_experts ", config.num_experts(), ", top_k ", config.top_k()));
  }
  const config::RouterConfig& r = config.router();
  const bool softmax = r.score_function() == config::SCORE_SOFTMAX;
  const bool topk_first = softmax && r.score_order() == config::TOPK_THEN_SCORE;
  const float scaling = config::RoutedScalingFactor(config);
  const int32_t k = top_k_;
  std::atomic<int64_t> first_bad{std::numeric_limits<int64_t>::max()};
#pragma omp parallel
  {
    std::vector<int32_t> order(static_cast<size_t>(num_experts));
    std::vector<float> scores(static_cast<size_t>(num_experts));
    std::vector<int32_t> picked;
    std::vector<float> selected(static_cast<size_t>(k));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < num_tokens; ++t) {
      const float* row = logits + t * num_experts;
      int32_t* ids = topk_ids + t * k;
      float* weights = topk_weights + t * k;
      bool finite = true;
      for (int32_t e = 0; e < num_experts; ++e) finite = finite && std::isfinite(row[e]);
      if (!finite) {
        for (int32_t j = 0; j < k; ++j) {
          ids[j] = j;
          weights[j] = 0.0f;
        }
        int64_t prev = first_bad.load();
        while (t < prev && !first_bad.compare_exchange_weak(prev, t)) {
        }
        continue;
      }
      // The draw: a per-token order of the experts, then systematic sampling.
      SplitMix64 rng(Mix64(seed_ ^ Mix64(first_token + static_cast<uint64_t>(t))));
      std::iota(order.begin(), order.end(), 0);
      for (int32_t i = num_experts - 1; i > 0; --i) {
        std::swap(order[static_cast<size_t>(i)], order[rng.Below(static_cast<uint32_t>(i) + 1)]);
      }
      picked.clear();
      double next = rng.Uniform();
      double cumulative = 0;
      for (int32_t i = 0; i < num_experts && static_cast<int32_t>(picked.size()) < k; ++i) {
        const int32_t e = order[static_cast<size_t>(i)];
        cumulative += probabilities_[static_cast<size_t>(e)];
        if (cumulative > next) {  // p_e <= 1: at most one threshold per expert
          picked.push_back(e);
          next += 1;
        }
      }
      // Rounding can leave the last threshold unreached: complete with the most probable.
      for (int32_t i = 0; static_cast<int32_t>(picked.size()) < k; ++i) {
        const int32_t e = order[static_cast<size_t>(i)];
        if (std::find(picked.begin(), picked.end(), e) == picked.end()) picked.push_back(e);
      }
      // The family's weighting of the drawn experts.
      std::copy(row, row + num_experts, scores.begin());
      if (!topk_first) {
        if (softmax) {
          kernels::Softmax(scores.data(), num_experts, scores.data());
        } else {
          for (float& s : scores) s = 1.0f / (1.0f + std::exp(-s));
        }
      }
      std::sort(picked.begin(), picked.end(), [&](int32_t a, int32_t b) {
        const float sa = scores[static_cast<size_t>(a)];
        const float sb = scores[static_cast<size_t>(b)];
        return sa > sb || (sa == sb && a < b);
      });
      for (int32_t j = 0; j < k; ++j) {
        ids[j] = picked[static_cast<size_t>(j)];
        selected[static_cast<size_t>(j)] = scores[static_cast<size_t>(ids[j])];
      }
      if (topk_first) kernels::Softmax(selected.data(), k, selected.data());
      for (int32_t j = 0; j < k; ++j) weights[j] = selected[static_cast<size_t>(j)];
      if (r.renormalize()) {
        float sum = 1e-20f;
        for (int32_t j = 0; j < k; ++j) sum += weights[j];
        for (int32_t j = 0; j < k; ++j) weights[j] /= sum;
      }
      if (scaling != 1.0f) {
        for (int32_t j = 0; j < k; ++j) weights[j] *= scaling;
      }
    }
  }
  if (first_bad.load() != std::numeric_limits<int64_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("router logits of token ", first_bad.load(), " are not finite (NaN or Inf)"));
  }
  return absl::OkStatus();
}

}  // namespace moe::gating
