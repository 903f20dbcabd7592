// `moe bench --ep N`: the expert-parallel layer over N MPI ranks, with per-rank loads, bytes,
// all-to-all bandwidth against MPI_Alltoallv, skewed routing and rebalancing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "configs/moe_config.pb.h"
#include "tools/bench_runner.h"

namespace moe::tools {

struct EpBenchOptions {
  config::LayerConfig config;
  std::string config_source;
  std::vector<int64_t> tokens;  // T per row, split over the ranks (TokenBlockBegin)
  RowOptions row;               // repeats, warmup, steps, inputs, skew, check_tokens, seed
  int threads = 0;
  int ep = 1;
  double timeout_seconds = 60;
  std::string placement_file;  // "" = contiguous blocks
  bool rebalance = false;
  std::string json;
  std::string trace;  // every rank's events merged into one file by rank 0; "" = none
};

// Runs the EP bench (every rank calls it); rank 0 prints the table. Returns the exit code.
int RunEpBench(const EpBenchOptions& options);

}  // namespace moe::tools
