#include "configs/layer_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "configs/presets.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"

namespace moe::config {
namespace {

// Keeps the first syntax error with its position.
class FirstErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (error_.empty())
      error_ = absl::StrFormat("line %d column %d: %s", line + 1, column + 1, message);
  }
  void AddWarning(int line, int column, const std::string& message) override {}
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field ", field, ": ", why));
}

}  // namespace

absl::StatusOr<LayerConfig> ParseLayerConfig(absl::string_view text, absl::string_view source) {
  if (static_cast<int64_t>(text.size()) > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": config is ", text.size(), " bytes, more than the limit of ", kMaxConfigBytes));
  }
  google::protobuf::TextFormat::Parser parser;
  FirstErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  parser.SetRecursionLimit(kConfigRecursionLimit);
  LayerConfig config;
  if (!parser.ParseFromString(std::string(text), &config)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", errors.error().empty() ? "cannot parse" : errors.error()));
  }
  absl::Status valid = ValidateLayerConfig(config, source);
  if (!valid.ok()) return valid;
  return config;
}

absl::StatusOr<LayerConfig> LoadLayerConfig(absl::string_view name_or_path) {
  for (const EmbeddedPreset& preset : EmbeddedPresets()) {
    if (preset.name == name_or_path) {
      return ParseLayerConfig(preset.text, absl::StrCat("preset ", preset.name));
    }
  }
  std::string path(name_or_path);
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config \"", path, "\" is a directory, not a .textproto file"));
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    std::string names;
    for (const EmbeddedPreset& preset : EmbeddedPresets()) {
      absl::StrAppend(&names, names.empty() ? "" : ", ", preset.name);
    }
    return absl::NotFoundError(absl::StrCat(
        "config \"", path, "\" is neither a readable file nor a preset (", names, ")"));
  }
  std::string text;
  text.resize(static_cast<size_t>(kMaxConfigBytes) + 1);
  file.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(file.gcount()));
  return ParseLayerConfig(text, path);
}

absl::Status ValidateLayerConfig(const LayerConfig& c, absl::string_view source) {
  if (c.d_model() <= 0) return FieldError(source, "d_model", "must be > 0");
  if (c.d_ff() <= 0) return FieldError(source, "d_ff", "must be > 0");
  if (c.num_experts() <= 0) return FieldError(source, "num_experts", "must be > 0");
  if (c.top_k() <= 0) return FieldError(source, "top_k", "must be > 0");
  if (c.top_k() > c.num_experts()) {
    return FieldError(
        source, "top_k",
        absl::StrCat("top_k (", c.top_k(), ") exceeds num_experts (", c.num_experts(), ")"));
  }
  constexpr int64_t kMaxDim = int64_t{1} << 20;
  if (c.d_model() > kMaxDim) return FieldError(source, "d_model", "must be <= 1048576");
  if (c.d_ff() > kMaxDim) return FieldError(source, "d_ff", "must be <= 1048576");
  if (c.num_experts() > 65536) return FieldError(source, "num_experts", "must be <= 65536");
  if (!Activation_IsValid(c.activation())) return FieldError(source, "activation", "unknown value");

  const RouterConfig& r = c.router();
  if (!ScoreFunction_IsValid(r.score_function())) {
    return FieldError(source, "router.score_function", "unknown value");
  }
  if (r.num_groups() < 0) return FieldError(source, "router.num_groups", "must be >= 0");
  if (r.topk_groups() < 0) return FieldError(source, "router.topk_groups", "must be >= 0");
  if (r.num_groups() > 1) {
    if (c.num_experts() % r.num_groups() != 0) {
      return FieldError(source, "router.num_groups",
                        absl::StrCat("num_groups (", r.num_groups(),
                                     ") does not divide num_experts (", c.num_experts(), ")"));
    }
    if (r.topk_groups() < 1 || r.topk_groups() > r.num_groups()) {
      return FieldError(source, "router.topk_groups",
                        absl::StrCat("topk_groups (", r.topk_groups(),
                                     ") must be in [1, num_groups = ", r.num_groups(), "]"));
    }
    const int64_t experts_kept = int64_t{r.topk_groups()} * (c.num_experts() / r.num_groups());
    if (experts_kept < c.top_k()) {
      return FieldError(source, "router.topk_groups",
                        absl::StrCat("the ", r.topk_groups(), " kept groups hold ", experts_kept,
                                     " experts, fewer than top_k (", c.top_k(), ")"));
    }
    if (r.group_score() == GROUP_SCORE_TOP2_SUM && c.num_experts() / r.num_groups() < 2) {
      return FieldError(source, "router.group_score",
                        "GROUP_SCORE_TOP2_SUM needs at least 2 experts per group");
    }
  } else if (r.topk_groups() > 1) {
    return FieldError(source, "router.topk_groups", "set without num_groups > 1");
  }
  if (r.has_routed_scaling_factor() &&
      !(r.routed_scaling_factor() > 0 && std::isfinite(r.routed_scaling_factor()))) {
    return FieldError(source, "router.routed_scaling_factor", "must be a finite number > 0");
  }

  const SharedExpertConfig& s = c.shared_experts();
  if (s.count() < 0) return FieldError(source, "shared_experts.count", "must be >= 0");
  if (s.count() > 64) return FieldError(source, "shared_experts.count", "must be <= 64");
  if (s.d_ff() < 0) return FieldError(source, "shared_experts.d_ff", "must be >= 0");
  if (s.d_ff() > kMaxDim) return FieldError(source, "shared_experts.d_ff", "must be <= 1048576");
  if (s.count() == 0 && (s.d_ff() != 0 || s.sigmoid_gate())) {
    return FieldError(source, "shared_experts.count",
                      "is 0 but other shared_experts fields are set");
  }

  const CapacityConfig& cap = c.capacity();
  if (cap.policy() != DROPLESS) {
    if (!(cap.factor() > 0 && std::isfinite(cap.factor()))) {
      return FieldError(source, "capacity.factor",
                        "must be a finite number > 0 when the policy drops tokens");
    }
  }
  return absl::OkStatus();
}

std::string ResolvedConfigText(const LayerConfig& config) {
  LayerConfig resolved = config;
  resolved.mutable_router()->set_routed_scaling_factor(RoutedScalingFactor(config));
  if (resolved.shared_experts().count() > 0 && resolved.shared_experts().d_ff() == 0) {
    resolved.mutable_shared_experts()->set_d_ff(config.d_ff());
  }
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(resolved, &out, options).ok()) {
    google::protobuf::TextFormat::PrintToString(resolved, &out);
  }
  return out;
}

float RoutedScalingFactor(const LayerConfig& config) {
  return config.router().has_routed_scaling_factor() ? config.router().routed_scaling_factor()
                                                     : 1.0f;
}

int64_t SharedExpertsDff(const LayerConfig& config) {
  const SharedExpertConfig& s = config.shared_experts();
  return int64_t{s.count()} * (s.d_ff() > 0 ? s.d_ff() : config.d_ff());
}

bool IsGated(Activation activation) {
  return activation == ACTIVATION_SWIGLU || activation == ACTIVATION_GEGLU;
}

int64_t ExpertCapacity(const LayerConfig& config, int64_t num_tokens) {
  if (config.capacity().policy() == DROPLESS) return -1;
  const double slots = static_cast<double>(num_tokens) * config.top_k();
  return static_cast<int64_t>(
      std::ceil(static_cast<double>(config.capacity().factor()) * slots / config.num_experts()));
}

}  // namespace moe::config
