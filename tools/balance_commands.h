// `moe plan` (replicated expert placement) and `moe sim` (step-time simulator): entry points,
// their table entries and their flags (defined in plan_command.cc and sim_command.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "tools/cli.h"

ABSL_DECLARE_FLAG(std::string, loads);
ABSL_DECLARE_FLAG(std::string, skew);
ABSL_DECLARE_FLAG(int32_t, experts);
ABSL_DECLARE_FLAG(int32_t, ranks);
ABSL_DECLARE_FLAG(int32_t, nodes);
ABSL_DECLARE_FLAG(int32_t, redundant);
ABSL_DECLARE_FLAG(std::string, placement);
ABSL_DECLARE_FLAG(int32_t, ranks_per_node);
ABSL_DECLARE_FLAG(double, intra_gbps);
ABSL_DECLARE_FLAG(double, inter_gbps);
ABSL_DECLARE_FLAG(double, latency_us);
ABSL_DECLARE_FLAG(std::string, expert_model);
ABSL_DECLARE_FLAG(double, expert_us_per_row);
ABSL_DECLARE_FLAG(double, expert_fixed_us);
ABSL_DECLARE_FLAG(double, route_us_per_token);
ABSL_DECLARE_FLAG(double, combine_us_per_token);

namespace moe::tools {

// The subcommands. Exit codes as in cli.h.
int RunPlanCommand(const std::vector<std::string>& positional);
int RunSimCommand(const std::vector<std::string>& positional);

// Their entries for the table of Commands() (name, synopsis, summary, details, flags, run).
Command PlanCommandEntry();
Command SimCommandEntry();

// Per-expert loads from --loads FILE or --skew SPEC (exactly one), for `num_experts` experts
// (--skew needs it > 0; with --loads, 0 accepts the file's count and > 0 must match it).
struct LoadsInput {
  std::vector<double> loads;  // [num_experts]
  std::string description;    // "zipf:1.2 (seed 1)", "loads.txt"
};
// On error, *exit_code says whether it is a usage error (a flag or spec) or a runtime one (a
// file that cannot be read or parsed).
absl::StatusOr<LoadsInput> LoadsFromFlags(int32_t num_experts, const char* command, int* exit_code);

}  // namespace moe::tools
