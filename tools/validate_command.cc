// `moe validate CONFIG`: check a config and print it with every default filled in.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "tools/cli.h"

namespace moe::tools {

int ValidateCommand(const std::vector<std::string>& positional) {
  if (positional.empty()) {
    return Fail("moe validate needs a CONFIG: a preset name or a .textproto file", kExitUsageError);
  }
  if (positional.size() > 1) {
    return Fail(
        absl::StrCat("unexpected argument '", positional[1], "' (moe validate takes one CONFIG)"),
        kExitUsageError);
  }
  absl::StatusOr<config::LayerConfig> config = config::LoadLayerConfig(positional[0]);
  if (!config.ok()) return Fail(config.status(), kExitRuntimeError);
  std::fputs(config::ResolvedConfigText(*config).c_str(), stdout);
  return kExitOk;
}

}  // namespace moe::tools
