// Shared pieces of the `moe` command line: the flags, the argument parser, the subcommand
// table and the one-line error convention.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

ABSL_DECLARE_FLAG(std::string, config);
ABSL_DECLARE_FLAG(std::string, weights);
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int32_t, layer);
ABSL_DECLARE_FLAG(std::string, input);
ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(std::string, dtype);
ABSL_DECLARE_FLAG(std::string, tokens);
ABSL_DECLARE_FLAG(int32_t, repeats);
ABSL_DECLARE_FLAG(int32_t, warmup);
ABSL_DECLARE_FLAG(std::string, json);
ABSL_DECLARE_FLAG(std::string, input_dist);
ABSL_DECLARE_FLAG(int32_t, check_tokens);
ABSL_DECLARE_FLAG(std::string, sweep);
ABSL_DECLARE_FLAG(std::string, hold);
ABSL_DECLARE_FLAG(int32_t, model_ranks);
ABSL_DECLARE_FLAG(int32_t, ep);
ABSL_DECLARE_FLAG(double, timeout);
ABSL_DECLARE_FLAG(bool, rebalance);
ABSL_DECLARE_FLAG(int32_t, steps);
ABSL_DECLARE_FLAG(double, input_skew);
ABSL_DECLARE_FLAG(std::string, csv);
ABSL_DECLARE_FLAG(std::string, trace);

// Defaults of `moe bench`, as literals so that flag help strings can include them.
// NOTE: chosen so that a bare `moe bench` (what `make run` does) ends in < 30 s on 2 cores.
#define MOE_DEFAULT_BENCH_CONFIG "olmoe-1b-7b"
#define MOE_DEFAULT_BENCH_TOKENS "1,16,128"

namespace moe::tools {

// Exit codes of every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntimeError = 1;  // a file, config or computation failed
inline constexpr int kExitUsageError = 2;    // a bad flag, flag value or argument

// A subcommand. `run` gets the positional arguments left after the flags.
struct Command {
  const char* name;
  const char* synopsis;            // e.g. "moe validate CONFIG"
  const char* summary;             // one line
  const char* details;             // further paragraphs for `moe help NAME`, may be ""
  std::vector<const char*> flags;  // the flag names this subcommand accepts
  int (*run)(const std::vector<std::string>& positional);
};

// Every subcommand, in the order `moe help` lists them.
const std::vector<Command>& Commands();

// Parses `args` (everything after the subcommand) into the absl flags. Accepts --name=value,
// --name value, -name, '-' for '_' in names, --noname for bools, and "--" to end the flags.
// kInvalidArgument naming the flag for an unknown flag, a flag `command` does not take, a
// missing or unparsable value. A repeatable flag (--sweep) given again appends its value
// after a ';'; any other flag given again keeps the last value. Returns the positional
// arguments.
absl::StatusOr<std::vector<std::string>> ParseFlags(const Command& command,
                                                    const std::vector<std::string>& args);

// Whether --name was given on the command line (after ParseFlags).
bool FlagGiven(absl::string_view name);

// Prints "moe: error: MESSAGE" on one line (newlines in the message become "; ") to stderr
// and returns `exit_code`.
int Fail(absl::string_view message, int exit_code);
int Fail(const absl::Status& status, int exit_code);

// Help text: every subcommand with its flags (`command` null), or one subcommand in detail.
std::string HelpText(const Command* command);

// Sets the OpenMP thread count from --threads (0 = all cores); returns the count in use.
absl::StatusOr<int> ApplyThreadsFlag();

// "1,16,128" -> {1, 16, 128}; every entry an integer in [1, 1 << 24]. Errors name `flag`.
absl::StatusOr<std::vector<int64_t>> ParseTokenCounts(absl::string_view text,
                                                      absl::string_view flag);

// kResourceExhausted naming `what` when `bytes` exceed MemAvailable of /proc/meminfo (OK when
// that is unreadable), so that a layer too large for the machine fails with a message instead
// of an allocation abort.
absl::Status CheckFitsInMemory(double bytes, absl::string_view what);

// The subcommand entry points (*_command.cc).
int RunCommand(const std::vector<std::string>& positional);
int InitCommand(const std::vector<std::string>& positional);
int BenchCommand(const std::vector<std::string>& positional);
int ValidateCommand(const std::vector<std::string>& positional);

}  // namespace moe::tools
