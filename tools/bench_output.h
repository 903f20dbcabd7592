// The sweep table of `moe bench` and the report files: JSON (--json) and CSV (--csv) with every
// row and the run's context.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "tools/bench_report.h"

namespace moe::tools {

// The sweep table: header lines, the column names, one row, the formulas under it. The
// hold_dev% column is there only when `context.hold` is not "none".
std::string SweepTableHeader(const BenchContext& context);
std::string SweepTableRow(const BenchRow& row, const BenchContext& context);
std::string SweepTableFooter(const BenchContext& context);

// The run's context and one row as JSON objects, keys in a fixed order. A row holds scalars
// (the CSV columns), "expert_load" [steps][num_experts] and, with --ep > 1,
// "rank_load": {"before": [ep_ranks], "placement": "contiguous"} (a balancer adds "after").
nlohmann::ordered_json ContextJson(const BenchContext& context);
nlohmann::ordered_json RowJson(const BenchRow& row);

// {"context": context, "rows": rows} to `path` (the layout of every bench JSON file). Errors
// name --json and the path.
absl::Status WriteJsonReport(const std::string& path, const nlohmann::ordered_json& context,
                             const nlohmann::ordered_json& rows);

// {"context": ..., "rows": [...]} to `path`. Errors name --json and the path.
absl::Status WriteBenchJson(const std::string& path, const BenchContext& context,
                            const std::vector<BenchRow>& rows);

// To `path`: one "# key: value" line per context entry (value as compact JSON), a header line
// of the row's scalar keys, one line per row (numbers as in the JSON, null as empty, strings
// quoted when they hold a comma or quote). Errors name --csv and the path.
absl::Status WriteBenchCsv(const std::string& path, const BenchContext& context,
                           const std::vector<BenchRow>& rows);

}  // namespace moe::tools
