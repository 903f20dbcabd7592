#include "tools/bench_sweep.h"

#include <algorithm>
#include <cmath>
#include <iterator>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "configs/layer_config.h"

namespace moe::tools {
namespace {

constexpr int64_t kMaxSweepValue = int64_t{1} << 24;

bool IsSweepDim(absl::string_view name) {
  return std::any_of(std::begin(kSweepDims), std::end(kSweepDims),
                     [&](const char* d) { return name == d; });
}

// Sets the swept config dimension `name` of `c` to `value`.
void ApplyDim(const std::string& name, int64_t value, config::LayerConfig* c) {
  if (name == "experts") c->set_num_experts(static_cast<int32_t>(value));
  if (name == "top_k") c->set_top_k(static_cast<int32_t>(value));
  if (name == "d_ff") c->set_d_ff(value);
  if (name == "d_model") c->set_d_model(value);
}

double Deviation(int64_t held, int64_t base_held) {
  return static_cast<double>(held) / static_cast<double>(base_held) - 1.0;
}

// Solves d_ff of `c` so that HeldParams is closest to `target`: the count is linear in d_ff,
// held(d_ff) = fixed + slope * d_ff.
absl::Status SolveDff(Hold hold, int64_t target, const std::string& label, config::LayerConfig* c) {
  c->set_d_ff(1);
  const ParamCounts one = CountParams(*c);
  const int64_t slope = (hold == Hold::kActiveParams ? c->top_k() : c->num_experts()) * one.expert;
  const int64_t fixed = HeldParams(one, hold) - slope;
  const double exact = static_cast<double>(target - fixed) / static_cast<double>(slope);
  int64_t best = std::max<int64_t>(1, static_cast<int64_t>(std::floor(exact)));
  const int64_t ceiling = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(exact)));
  if (std::abs(fixed + slope * ceiling - target) < std::abs(fixed + slope * best - target)) {
    best = ceiling;
  }
  c->set_d_ff(best);
  const double deviation = Deviation(HeldParams(CountParams(*c), hold), target);
  if (!(std::abs(deviation) <= kHoldTolerance)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--sweep point %s: --hold %s cannot be met: the closest d_ff (%d) gives %+.2f%% of the "
        "base's %d params (tolerance %g%%)",
        label, HoldName(hold), best, 100 * deviation, target, 100 * kHoldTolerance));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Hold> ParseHold(absl::string_view text) {
  if (text.empty() || text == "none") return Hold::kNone;
  if (text == "active-params") return Hold::kActiveParams;
  if (text == "total-params") return Hold::kTotalParams;
  return absl::InvalidArgumentError(
      absl::StrCat("flag --hold: expected none, active-params or total-params, got '", text, "'"));
}

const char* HoldName(Hold hold) {
  switch (hold) {
    case Hold::kActiveParams:
      return "active-params";
    case Hold::kTotalParams:
      return "total-params";
    default:
      return "none";
  }
}

absl::StatusOr<std::vector<SweepDim>> ParseSweep(absl::string_view text) {
  std::vector<SweepDim> dims;
  for (absl::string_view part : absl::StrSplit(text, ';', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    const size_t eq = part.find('=');
    const absl::string_view name = part.substr(0, eq);
    if (eq == absl::string_view::npos || !IsSweepDim(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "flag --sweep: expected DIM=V1,V2,... with DIM one of experts, top_k, d_ff, d_model, "
          "tokens; got '",
          part, "'"));
    }
    if (std::any_of(dims.begin(), dims.end(), [&](const SweepDim& d) { return d.name == name; })) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --sweep: dimension ", name, " given twice"));
    }
    SweepDim dim{std::string(name), {}};
    for (absl::string_view value : absl::StrSplit(part.substr(eq + 1), ',')) {
      int64_t v = 0;
      if (!absl::SimpleAtoi(value, &v) || v < 1 || v > kMaxSweepValue) {
        return absl::InvalidArgumentError(absl::StrCat("flag --sweep: ", name,
                                                       ": expected integers in [1, ",
                                                       kMaxSweepValue, "], got '", value, "'"));
      }
      dim.values.push_back(v);
    }
    dims.push_back(std::move(dim));
  }
  if (dims.empty()) {
    return absl::InvalidArgumentError("flag --sweep: expected DIM=V1,V2,..., got nothing");
  }
  return dims;
}

std::string SweepText(const std::vector<SweepDim>& dims) {
  return absl::StrJoin(dims, " x ", [](std::string* out, const SweepDim& d) {
    absl::StrAppend(out, d.name, "=", absl::StrJoin(d.values, ","));
  });
}

ParamCounts CountParams(const config::LayerConfig& c) {
  const int64_t projections = config::IsGated(c.activation()) ? 3 : 2;
  ParamCounts p;
  p.expert = projections * c.d_model() * c.d_ff();
  p.shared =
      projections * c.d_model() * config::SharedExpertsDff(c) +
      (c.shared_experts().count() > 0 && c.shared_experts().sigmoid_gate() ? c.d_model() : 0);
  p.router =
      int64_t{c.num_experts()} * c.d_model() + (c.router().selection_bias() ? c.num_experts() : 0);
  p.active = c.top_k() * p.expert + p.shared + p.router;
  p.total = c.num_experts() * p.expert + p.shared + p.router;
  return p;
}

int64_t HeldParams(const ParamCounts& counts, Hold hold) {
  switch (hold) {
    case Hold::kActiveParams:
      return counts.active;
    case Hold::kTotalParams:
      return counts.total;
    default:
      return 0;
  }
}

absl::StatusOr<std::vector<SweepPoint>> ExpandSweep(const config::LayerConfig& base,
                                                    const std::vector<SweepDim>& dims, Hold hold) {
  std::vector<const SweepDim*> config_dims;
  for (const SweepDim& d : dims) {
    if (d.name == "tokens") continue;
    if (d.name == "d_ff" && hold != Hold::kNone) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --sweep: d_ff cannot be swept with --hold ", HoldName(hold),
                       " (the hold sets d_ff)"));
    }
    config_dims.push_back(&d);
  }
  config::LayerConfig pinned = base;
  if (pinned.shared_experts().count() > 0 && pinned.shared_experts().d_ff() == 0) {
    pinned.mutable_shared_experts()->set_d_ff(base.d_ff());
  }
  const int64_t base_held = HeldParams(CountParams(base), hold);
  std::vector<SweepPoint> points;
  std::vector<size_t> index(config_dims.size(), 0);  // odometer, last dimension fastest
  while (true) {
    SweepPoint point;
    point.config = pinned;
    std::vector<std::string> parts;
    for (size_t i = 0; i < config_dims.size(); ++i) {
      const int64_t value = config_dims[i]->values[index[i]];
      ApplyDim(config_dims[i]->name, value, &point.config);
      parts.push_back(absl::StrCat(config_dims[i]->name, "=", value));
    }
    point.label = absl::StrJoin(parts, " ");
    const std::string where = point.label.empty() ? std::string("(base)") : point.label;
    if (hold != Hold::kNone) {
      if (base_held <= 0) return absl::InvalidArgumentError("--hold: the base has no params");
      absl::Status solved = SolveDff(hold, base_held, where, &point.config);
      if (!solved.ok()) return solved;
      point.hold_deviation = Deviation(HeldParams(CountParams(point.config), hold), base_held);
    }
    absl::Status valid =
        config::ValidateLayerConfig(point.config, absl::StrCat("--sweep point ", where));
    if (!valid.ok()) return valid;
    points.push_back(std::move(point));
    size_t i = config_dims.size();
    while (i > 0 && ++index[i - 1] == config_dims[i - 1]->values.size()) index[--i] = 0;
    if (i == 0) break;
  }
  return points;
}

}  // namespace moe::tools
