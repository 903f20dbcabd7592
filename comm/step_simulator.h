// A cluster step simulator: predicts the time of one expert-parallel MoE forward step on
// num_ranks ranks (up to 4096) from the rows each rank computes, a model of the links and a
// model of the expert GEMMs, and says where the time goes.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::comm {

// The interconnect. Ranks [n * ranks_per_node, (n + 1) * ranks_per_node) share node n.
struct LinkModel {
  int32_t ranks_per_node = 8;
  double intra_gbps = 150;  // GB/s per rank and direction inside a node (NVLink class)
  double inter_gbps = 45;   // GB/s per rank and direction across nodes (a 400 Gb/s NIC)
  double latency_us = 3;    // per hop: a message inside a node takes 1 hop, across nodes 2
};

// Compute times as affine functions; all in microseconds.
struct ComputeModel {
  double route_us_per_token = 0;    // router GEMM + top-k, per source token
  double expert_fixed_us = 0;       // per rank that computes >= 1 row in a step
  double expert_us_per_row = 0;     // per expert row (routed slot) a rank computes
  double combine_us_per_token = 0;  // weighted sum of a token's k results, per source token
};

// The step's shape. Every rank routes tokens_per_rank tokens.
struct StepShape {
  int32_t num_ranks = 1;
  int64_t tokens_per_rank = 0;
  int32_t top_k = 1;
  int64_t d_model = 0;
  int32_t bytes_per_value = 4;  // payload dtype (the Dispatcher moves F32 rows: 4)
};

// Time of one phase of an all-to-all: the slowest rank's, and the mean over ranks.
struct PhaseTime {
  double max_s = 0;
  double mean_s = 0;
  double max_rank_bytes = 0;  // max over ranks of max(bytes out, bytes in), both link kinds
};

// Where the time of one step goes. total_s = route_s + dispatch.max_s + expert.max_s +
// combine.max_s + combine_local_s (the phases are separated by collectives, so each waits for
// its slowest rank).
struct StepBreakdown {
  double route_s = 0;
  PhaseTime dispatch;  // token rows to the expert ranks
  PhaseTime expert;    // expert GEMMs: max_s the slowest rank, mean_s the mean rank
  PhaseTime combine;   // result rows back
  double combine_local_s = 0;
  double total_s = 0;
  // total_s minus the total of the same step with every rank computing the mean rows: what
  // the imbalance costs (in the expert phase and in the skewed all-to-all traffic).
  double imbalance_s = 0;
  double rows_max_over_mean = 0;  // of rank_rows
};

// Traffic model: a slot goes to rank d with probability q_d = rank_rows[d] / sum(rank_rows),
// independently for every slot of every source rank. A token row (top_k int32 header + d_model
// values, as the Dispatcher sends it) travels once to each destination rank holding >= 1 of
// its k slots: expected 1 - (1 - q_d)^k rows per token to rank d; results come back one row
// (d_model values) per slot: k * q_d per token. Rows to the rank itself cost nothing. A rank's
// all-to-all time is max(intra bytes / intra_gbps, inter bytes / inter_gbps) (NVLink and NIC
// work in parallel; bytes = max(sent, received) of that kind, full duplex) + latency_us x hops
// (2 when the step spans several nodes, 1 inside one node, 0 on one rank).
// Expert time of rank r: rank_rows[r] > 0 ? expert_fixed_us + expert_us_per_row *
// rank_rows[r] : 0. rank_rows [num_ranks] need not be integers (a planner's prediction).
// kInvalidArgument naming the field for a bad shape, a negative or non-finite value, or
// num_ranks outside [1, 4096].
absl::StatusOr<StepBreakdown> SimulateStep(const StepShape& shape,
                                           const std::vector<double>& rank_rows,
                                           const LinkModel& links, const ComputeModel& compute);

// Least-squares y = intercept + slope * x (microseconds vs rows or tokens, e.g. from the rows
// of a `moe bench --json` file). One point, or all x equal: a line through the origin and the
// mean point. kInvalidArgument when empty, sizes differ, or a value is not finite / x < 0.
struct AffineFit {
  double intercept = 0;
  double slope = 0;
};
absl::StatusOr<AffineFit> FitAffine(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace moe::comm
