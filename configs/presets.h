// Text-format presets compiled into the binary (configs/presets/*.textproto).
#pragma once

#include <vector>

#include "absl/strings/string_view.h"

namespace moe::config {

struct EmbeddedPreset {
  absl::string_view name;  // file stem, e.g. "mixtral-8x7b"
  absl::string_view text;  // text-format LayerConfig
};

// All presets, sorted by name.
const std::vector<EmbeddedPreset>& EmbeddedPresets();

}  // namespace moe::config
