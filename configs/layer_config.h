// Parsing, validation and resolved defaults of moe.config.LayerConfig.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "configs/moe_config.pb.h"

namespace moe::config {

// Largest text-format config accepted, in bytes.
inline constexpr int64_t kMaxConfigBytes = 1 << 20;
// Deepest message nesting accepted by the text-format parser.
inline constexpr int kConfigRecursionLimit = 16;

// Parses and validates a text-format LayerConfig. `source` names the file (or
// preset) in error messages, which carry the line and column of a syntax error.
absl::StatusOr<LayerConfig> ParseLayerConfig(absl::string_view text, absl::string_view source);

// `name_or_path` is a preset name ("mixtral-8x7b") or a path to a .textproto file.
absl::StatusOr<LayerConfig> LoadLayerConfig(absl::string_view name_or_path);

// Checks every field; the error names `source`, the field and why.
absl::Status ValidateLayerConfig(const LayerConfig& config, absl::string_view source);

// The config as JSON with every field shown, defaults filled in (what `moe validate` prints).
std::string ResolvedConfigText(const LayerConfig& config);

// Resolved defaults.
float RoutedScalingFactor(const LayerConfig& config);  // 1.0 when unset
int64_t SharedExpertsDff(const LayerConfig& config);   // count * d_ff (0 when none)
bool IsGated(Activation activation);                   // SwiGLU and GeGLU have a gate projection
int64_t ExpertCapacity(const LayerConfig& config, int64_t num_tokens);  // -1 when dropless

}  // namespace moe::config
