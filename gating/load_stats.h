// Expert load statistics: slots routed to each expert per step and over a sliding window of
// steps, their imbalance, and the text file of per-expert loads that `moe plan --loads` reads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::gating {

// max(v) / mean(v); 0 for an empty vector or when every entry is 0. 1 = perfectly balanced.
double MaxOverMean(const std::vector<double>& v);
double MaxOverMean(const std::vector<int64_t>& v);

// Per-expert slot counts of the last `window_steps` steps (a ring buffer), and of every step
// since creation. One instance per MoE layer; not thread-safe (one writer).
class LoadStats {
 public:
  // kInvalidArgument unless num_experts in [1, 1 << 20] and window_steps in [1, 1 << 16].
  static absl::StatusOr<LoadStats> Create(int32_t num_experts, int32_t window_steps);

  // Records one step: expert_load [num_experts] slots per expert (e.g. LayerOutput.expert_load
  // or DispatchStats.expert_load). The oldest step leaves the window once it is full.
  // kInvalidArgument naming the size or the first negative entry; nothing is recorded then.
  absl::Status AddStep(const std::vector<int64_t>& expert_load);

  // Records one step from routing: topk_ids [num_tokens, top_k]. kInvalidArgument naming the
  // token and position of an id outside [0, num_experts).
  absl::Status AddStepFromIds(const int32_t* topk_ids, int64_t num_tokens, int32_t top_k);

  int32_t num_experts() const { return num_experts_; }
  int32_t window_steps() const { return window_steps_; }
  // Steps currently in the window (<= window_steps) and recorded in total.
  int32_t steps_in_window() const { return steps_in_window_; }
  int64_t steps_total() const { return steps_total_; }

  // [num_experts] slots of the last step (zeros before the first).
  std::vector<int64_t> LastStep() const;
  // [num_experts] sum over the window's steps, and that sum / steps_in_window.
  const std::vector<int64_t>& WindowSum() const { return window_sum_; }
  std::vector<double> WindowMean() const;
  // [num_experts] sum over every step recorded.
  const std::vector<int64_t>& Total() const { return total_; }

  // max/mean over experts of the window sum, and of the last step.
  double WindowImbalance() const { return MaxOverMean(window_sum_); }
  double LastStepImbalance() const { return MaxOverMean(LastStep()); }

  // A JSON object: num_experts, window_steps, steps_in_window, steps_total, last_step,
  // window_sum, window_mean, window_max_over_mean, last_step_max_over_mean, total.
  std::string ToJson() const;
  // The window mean in the loads text format (FormatLoadsText), for `moe plan --loads`.
  std::string ToLoadsText() const;

 private:
  LoadStats(int32_t num_experts, int32_t window_steps);

  int32_t num_experts_;
  int32_t window_steps_;
  int32_t steps_in_window_ = 0;
  int32_t next_ = 0;  // ring slot the next step is written to
  int64_t steps_total_ = 0;
  std::vector<int64_t> ring_;        // [window_steps, num_experts]
  std::vector<int64_t> window_sum_;  // [num_experts]
  std::vector<int64_t> total_;       // [num_experts]
};

// The loads text format, one expert per line:
//
//   # moe expert loads: "expert load" per line; '#' starts a comment
//   0 1523
//   1 88.25
//
// Each data line holds an expert id (an integer in [0, 1 << 20)) and its load (a finite
// number >= 0: slots, a mean over steps or a fraction; only ratios matter to the planner),
// separated by spaces or tabs. Ids may come in any order but each of 0 .. num_experts - 1
// exactly once, num_experts being the largest id + 1. '#' starts a comment anywhere on a
// line; blank lines are ignored. At most kMaxLoadsFileBytes bytes.
inline constexpr int64_t kMaxLoadsFileBytes = int64_t{64} << 20;
inline constexpr int32_t kMaxLoadsExperts = 1 << 20;

// Writes `loads` in the format above; `comment` (may hold newlines) goes in '#' lines first.
std::string FormatLoadsText(const std::vector<double>& loads, absl::string_view comment);

// Parses the format above. Errors are kInvalidArgument "SOURCE:LINE: what was expected".
absl::StatusOr<std::vector<double>> ParseLoadsText(absl::string_view text,
                                                   absl::string_view source);

// Reads and parses a loads file; kNotFound naming the path when it cannot be read.
absl::StatusOr<std::vector<double>> ReadLoadsFile(const std::string& path);

}  // namespace moe::gating
