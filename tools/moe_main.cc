// The `moe` command line: `moe COMMAND [FLAGS] [ARGS]`, see `moe help`.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "tools/bench_report.h"
#include "tools/cli.h"

namespace {

bool IsHelpFlag(const std::string& arg) {
  return arg == "--help" || arg == "-help" || arg == "-h" || arg == "--helpfull" ||
         arg == "--helpshort";
}

}  // namespace

int main(int argc, char** argv) {
  using moe::tools::Fail;
  using moe::tools::kExitOk;
  using moe::tools::kExitUsageError;
  absl::SetProgramUsageMessage("moe COMMAND [FLAGS] [ARGS]; see `moe help`");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    return Fail("no command given; commands: run, init, bench, validate, help (see `moe help`)",
                kExitUsageError);
  }
  if (IsHelpFlag(args[0])) {
    std::fputs(moe::tools::HelpText(nullptr).c_str(), stdout);
    return kExitOk;
  }
  if (args[0] == "--version") {
    std::printf("moe (commit %s)\n", moe::tools::GitCommit().c_str());
    return kExitOk;
  }
  for (const moe::tools::Command& command : moe::tools::Commands()) {
    if (args[0] != command.name) continue;
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    for (const std::string& arg : rest) {
      if (arg == "--") break;
      if (IsHelpFlag(arg)) {
        std::fputs(moe::tools::HelpText(&command).c_str(), stdout);
        return kExitOk;
      }
    }
    absl::StatusOr<std::vector<std::string>> positional = moe::tools::ParseFlags(command, rest);
    if (!positional.ok()) return Fail(positional.status(), kExitUsageError);
    return command.run(*positional);
  }
  if (args[0].size() > 1 && args[0][0] == '-') {
    return Fail(absl::StrCat("expected a command before ", args[0],
                             "; commands: run, init, bench, validate, help (see `moe help`)"),
                kExitUsageError);
  }
  return Fail(absl::StrCat("unknown command '", args[0],
                           "'; commands: run, init, bench, validate, help (see `moe help`)"),
              kExitUsageError);
}
