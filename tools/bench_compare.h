// `moe bench --compare`: every weight format of one layer against the machine's ceilings and
// the plain reference path, measured in the same process and run.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "configs/moe_config.pb.h"
#include "gating/routing_skew.h"
#include "kernels/cpu/packed_weights.h"

namespace moe::tools {

struct CompareOptions {
  config::LayerConfig config;
  std::string config_source;
  std::vector<int64_t> tokens;
  std::vector<kernels::WeightFormat> formats;  // F32 is measured first whether listed or not
  int threads = 0;
  int repeats = 5;  // timed forwards per row (median)
  int warmup = 1;
  int steps = 4;  // input batches the timed forwards rotate through
  bool normal_inputs = true;
  double input_skew = 0;  // > 0: a pass with router-skewed inputs (RandomHidden), "skewS"
  std::optional<gating::SkewSpec> skew;  // a pass with the experts drawn from --skew SPEC
  int64_t check_tokens = 16;
  uint64_t seed = 1;
  bool plain = true;  // also time the plain reference experts (F32)
  std::string json;   // also write the table and its context here (empty: no file)
};

// Prints the header with the ceilings, one row per (routing, format, token count) and the
// formulas; with `json`, writes {"context": {...}, "rows": [{...}]} with the same values (keys
// named as the columns; plain_ms and x_plain null where not measured). Exit code as the other
// commands (1 when a row has #wrong > 0, after the rows are written).
int RunCompareBench(const CompareOptions& options);

}  // namespace moe::tools
