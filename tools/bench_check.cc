#include "tools/bench_check.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "configs/layer_config.h"
#include "moe/base/status_macros.h"

namespace moe::tools {
namespace {

double Dot(const float* a, const double* b, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
  return sum;
}

double GeluErf(double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); }

double Activate(config::Activation activation, double gate, double up) {
  switch (activation) {
    case config::ACTIVATION_SWIGLU:
      return gate / (1.0 + std::exp(-gate)) * up;
    case config::ACTIVATION_GEGLU:
      return GeluErf(gate) * up;
    case config::ACTIVATION_GELU:
      return GeluErf(up);
    case config::ACTIVATION_RELU:
      return up > 0 ? up : 0.0;
    default:
      return NAN;  // an activation this check does not know: every element counts as wrong
  }
}

// Rounds v to int8 steps of max |v| / 127 per group of 32 (the INT4 kernels' activations).
void RoundToInt8Steps(std::vector<double>& v) {
  for (size_t begin = 0; begin < v.size(); begin += 32) {
    const size_t end = std::min(v.size(), begin + 32);
    double amax = 0;
    for (size_t i = begin; i < end; ++i) amax = std::max(amax, std::abs(v[i]));
    if (amax == 0) continue;
    const double step = amax / 127.0;
    for (size_t i = begin; i < end; ++i) {
      v[i] = std::min(127.0, std::max(-127.0, std::nearbyint(v[i] / step))) * step;
    }
  }
}

// Rounds v to BF16, as the BF16 kernels' activations (through float, as the kernels see it).
void RoundToBf16(std::vector<double>& v) {
  for (double& x : v) x = kernels::Bf16ToFloat(kernels::FloatToBf16(static_cast<float>(x)));
}

// Rounds v as the GEMM input format says.
void RoundActivations(kernels::GemmInput input, std::vector<double>& v) {
  if (input == kernels::GemmInput::kInt8) RoundToInt8Steps(v);
  if (input == kernels::GemmInput::kBF16) RoundToBf16(v);
}

// y += scale * FFN_e(x), the plain definition: down_e(act(gate_e x, up_e x)).
void AddExpert(const experts::ExpertWeights& w, int64_t e, config::Activation activation,
               const double* x, double scale, double* y, kernels::GemmInput activations) {
  const int64_t d_model = w.d_model();
  const int64_t d_ff = w.d_ff();
  const float* up = w.up.data<float>() + e * d_ff * d_model;  // [d_ff, d_model]
  const float* gate = w.gate.empty() ? nullptr : w.gate.data<float>() + e * d_ff * d_model;
  const float* down = w.down.data<float>() + e * d_model * d_ff;  // [d_model, d_ff]
  std::vector<double> h(static_cast<size_t>(d_ff));               // [d_ff]
  for (int64_t f = 0; f < d_ff; ++f) {
    const double u = Dot(up + f * d_model, x, d_model);
    const double g = gate != nullptr ? Dot(gate + f * d_model, x, d_model) : 0.0;
    h[static_cast<size_t>(f)] = Activate(activation, g, u);
  }
  RoundActivations(activations, h);
  for (int64_t i = 0; i < d_model; ++i) y[i] += scale * Dot(down + i * d_ff, h.data(), d_ff);
}

// Which slots survive the capacity limit: each expert keeps its first `capacity` slots in
// slot (= token) order. Slots with an invalid id are marked dropped (they are counted bad).
std::vector<bool> KeptSlots(const int32_t* ids, int64_t num_slots, int32_t num_experts,
                            int64_t capacity) {
  std::vector<bool> kept(static_cast<size_t>(num_slots), true);
  std::vector<int64_t> used(static_cast<size_t>(num_experts), 0);
  for (int64_t s = 0; s < num_slots; ++s) {
    if (ids[s] < 0 || ids[s] >= num_experts) {
      kept[static_cast<size_t>(s)] = false;
    } else if (capacity >= 0) {
      kept[static_cast<size_t>(s)] = used[static_cast<size_t>(ids[s])]++ < capacity;
    }
  }
  return kept;
}

}  // namespace

std::unique_ptr<MoeLayerWeights> EffectiveLayerWeights(const MoeLayer& layer) {
  const experts::ExpertKernelOptions& kernels = layer.routed_bank().options();
  if (kernels.plain || kernels.weight_format == kernels::WeightFormat::kF32) return nullptr;
  auto w = std::make_unique<MoeLayerWeights>();
  w->experts = layer.routed_bank().EffectiveWeights();
  w->shared = layer.shared_bank().EffectiveWeights();
  if (!layer.weights().shared_gate.empty()) w->shared_gate = layer.weights().shared_gate.Clone();
  return w;
}

CheckOptions CheckOptionsFor(const MoeLayer& layer) {
  const experts::ExpertKernelOptions& kernels = layer.routed_bank().options();
  CheckOptions options;
  if (kernels.plain) return options;
  options.activations = kernels::GemmInputFor(kernels.weight_format, kernels::ActiveCpuIsa());
  if (options.activations == kernels::GemmInput::kInt8) {
    options.abs_tolerance = kCheckInt8ActivationAbsTolerance;
  } else if (options.activations == kernels::GemmInput::kBF16) {
    options.abs_tolerance = kCheckBf16ActivationAbsTolerance;
  }
  return options;
}

absl::StatusOr<CheckResult> CheckLayerOutput(const config::LayerConfig& c,
                                             const MoeLayerWeights& weights, const Tensor& hidden,
                                             const LayerOutput& out, int64_t max_tokens,
                                             const CheckOptions& options) {
  const int64_t d_model = c.d_model();
  const int32_t top_k = c.top_k();
  const int32_t num_experts = c.num_experts();
  if (hidden.empty() || hidden.rank() != 2 || hidden.dim(1) != d_model) {
    return absl::InvalidArgumentError("check: hidden must be F32 [num_tokens, d_model]");
  }
  const int64_t num_tokens = hidden.dim(0);
  MOE_RETURN_IF_ERROR(CheckTensor(hidden, DType::kF32, {num_tokens, d_model}, "check: hidden"));
  MOE_RETURN_IF_ERROR(CheckTensor(out.output, DType::kF32, {num_tokens, d_model}, "check: output"));
  MOE_RETURN_IF_ERROR(
      CheckTensor(out.topk_ids, DType::kI32, {num_tokens, top_k}, "check: topk_ids"));
  MOE_RETURN_IF_ERROR(
      CheckTensor(out.topk_weights, DType::kF32, {num_tokens, top_k}, "check: topk_weights"));

  CheckResult result;
  const int32_t* ids = out.topk_ids.data<int32_t>();
  const float* topk_weights = out.topk_weights.data<float>();
  const float scaling = config::RoutedScalingFactor(c);

  // Routing: every slot of every token.
  for (int64_t t = 0; t < num_tokens; ++t) {
    double sum = 0;
    for (int32_t j = 0; j < top_k; ++j) {
      const int64_t s = t * top_k + j;
      const int32_t id = ids[s];
      const float w = topk_weights[s];
      bool repeated = false;
      for (int32_t i = 0; i < j; ++i) repeated = repeated || ids[t * top_k + i] == id;
      if (id < 0 || id >= num_experts || repeated || !std::isfinite(w) || w < 0) {
        ++result.bad_slots;
        if (result.first_problem.empty()) {
          result.first_problem = absl::StrCat("token ", t, " slot ", j, ": expert id ", id,
                                              repeated ? " (repeated)" : "", ", weight ", w);
        }
      }
      sum += w;
    }
    if (c.router().renormalize() && top_k > 0 &&
        !(std::abs(sum - scaling) <= 1e-4 * std::abs(scaling))) {
      result.bad_slots += top_k;
      if (result.first_problem.empty()) {
        result.first_problem = absl::StrCat("token ", t, ": renormalized weights sum to ", sum,
                                            ", expected ", scaling);
      }
    }
  }

  // Outputs: sampled tokens, evenly spaced, first and last included.
  const int64_t n = std::min(std::max<int64_t>(max_tokens, 0), num_tokens);
  std::vector<int64_t> tokens(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    tokens[static_cast<size_t>(i)] = n == 1 ? 0 : i * (num_tokens - 1) / (n - 1);
  const std::vector<bool> kept =
      KeptSlots(ids, num_tokens * top_k, num_experts, config::ExpertCapacity(c, num_tokens));
  std::vector<double> ref(static_cast<size_t>(n * d_model), 0.0);  // [n, d_model]
  const bool shared = config::SharedExpertsDff(c) > 0;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = tokens[static_cast<size_t>(i)];
    std::vector<double> x(hidden.data<float>() + t * d_model,
                          hidden.data<float>() + (t + 1) * d_model);  // [d_model]
    double* y = ref.data() + i * d_model;
    std::vector<double> xq = x;  // what the experts see
    RoundActivations(options.activations, xq);
    for (int32_t j = 0; j < top_k; ++j) {
      const int64_t s = t * top_k + j;
      if (!kept[static_cast<size_t>(s)]) continue;
      AddExpert(weights.experts, ids[s], c.activation(), xq.data(), topk_weights[s], y,
                options.activations);
    }
    if (shared) {
      double scale = 1.0;
      if (c.shared_experts().sigmoid_gate()) {
        scale = 1.0 / (1.0 + std::exp(-Dot(weights.shared_gate.data<float>(), x.data(), d_model)));
      }
      AddExpert(weights.shared, 0, c.activation(), xq.data(), scale, y, options.activations);
    }
  }

  double sum_sq = 0;
  for (double v : ref) sum_sq += v * v;
  result.checked_tokens = n;
  result.checked_elements = n * d_model;
  result.ref_rms = ref.empty() ? 0.0 : std::sqrt(sum_sq / static_cast<double>(ref.size()));
  const double atol = options.abs_tolerance * result.ref_rms;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = tokens[static_cast<size_t>(i)];
    const float* got = out.output.data<float>() + t * d_model;
    for (int64_t k = 0; k < d_model; ++k) {
      const double r = ref[static_cast<size_t>(i * d_model + k)];
      const double err = std::abs(static_cast<double>(got[k]) - r);
      if (std::isfinite(err)) result.max_abs_error = std::max(result.max_abs_error, err);
      // NOTE: written so that NaN in either value counts as wrong.
      if (!(err <= atol + kCheckRelTolerance * std::abs(r))) {
        ++result.wrong_elements;
        if (result.first_problem.empty()) {
          result.first_problem =
              absl::StrFormat("token %d element %d: got %.9g, expected %.9g", t, k, got[k], r);
        }
      }
    }
  }
  return result;
}

}  // namespace moe::tools
