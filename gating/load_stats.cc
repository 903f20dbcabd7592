#include "gating/load_stats.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace moe::gating {
namespace {

template <typename T>
double MaxOverMeanOf(const std::vector<T>& v) {
  if (v.empty()) return 0;
  double sum = 0;
  double max = 0;
  for (const T& x : v) {
    sum += static_cast<double>(x);
    max = std::max(max, static_cast<double>(x));
  }
  return sum > 0 ? max * static_cast<double>(v.size()) / sum : 0;
}

// The shortest of %.15g / %.17g that reads back as the same double.
std::string ExactNumber(double x) {
  std::string text = absl::StrFormat("%.15g", x);
  double back = 0;
  if (absl::SimpleAtod(text, &back) && back == x) return text;
  return absl::StrFormat("%.17g", x);
}

template <typename T>
std::string JsonArray(const std::vector<T>& v) {
  return absl::StrCat("[",
                      absl::StrJoin(v, ",",
                                    [](std::string* out, const T& x) {
                                      out->append(ExactNumber(static_cast<double>(x)));
                                    }),
                      "]");
}

}  // namespace

double MaxOverMean(const std::vector<double>& v) { return MaxOverMeanOf(v); }
double MaxOverMean(const std::vector<int64_t>& v) { return MaxOverMeanOf(v); }

LoadStats::LoadStats(int32_t num_experts, int32_t window_steps)
    : num_experts_(num_experts),
      window_steps_(window_steps),
      ring_(static_cast<size_t>(num_experts) * static_cast<size_t>(window_steps), 0),
      window_sum_(static_cast<size_t>(num_experts), 0),
      total_(static_cast<size_t>(num_experts), 0) {}

absl::StatusOr<LoadStats> LoadStats::Create(int32_t num_experts, int32_t window_steps) {
  if (num_experts < 1 || num_experts > kMaxLoadsExperts) {
    return absl::InvalidArgumentError(absl::StrCat("LoadStats: num_experts must be in [1, ",
                                                   kMaxLoadsExperts, "], got ", num_experts));
  }
  if (window_steps < 1 || window_steps > (1 << 16)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoadStats: window_steps must be in [1, 65536], got ", window_steps));
  }
  return LoadStats(num_experts, window_steps);
}

absl::Status LoadStats::AddStep(const std::vector<int64_t>& expert_load) {
  if (static_cast<int64_t>(expert_load.size()) != num_experts_) {
    return absl::InvalidArgumentError(absl::StrCat("LoadStats: expert_load has ",
                                                   expert_load.size(), " entries, expected ",
                                                   num_experts_, " (num_experts)"));
  }
  for (int32_t e = 0; e < num_experts_; ++e) {
    if (expert_load[static_cast<size_t>(e)] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("LoadStats: expert_load[", e, "] is ",
                                                     expert_load[static_cast<size_t>(e)],
                                                     ", expected >= 0"));
    }
  }
  int64_t* slot = ring_.data() + static_cast<size_t>(next_) * static_cast<size_t>(num_experts_);
  const bool evict = steps_in_window_ == window_steps_;
  for (int32_t e = 0; e < num_experts_; ++e) {
    const int64_t x = expert_load[static_cast<size_t>(e)];
    if (evict) window_sum_[static_cast<size_t>(e)] -= slot[e];
    slot[e] = x;
    window_sum_[static_cast<size_t>(e)] += x;
    total_[static_cast<size_t>(e)] += x;
  }
  if (!evict) ++steps_in_window_;
  next_ = (next_ + 1) % window_steps_;
  ++steps_total_;
  return absl::OkStatus();
}

absl::Status LoadStats::AddStepFromIds(const int32_t* topk_ids, int64_t num_tokens, int32_t top_k) {
  if (num_tokens < 0 || top_k < 1 || (num_tokens > 0 && topk_ids == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoadStats: bad topk_ids: num_tokens ", num_tokens, ", top_k ", top_k));
  }
  std::vector<int64_t> load(static_cast<size_t>(num_experts_), 0);
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int32_t j = 0; j < top_k; ++j) {
      const int32_t id = topk_ids[t * top_k + j];
      if (id < 0 || id >= num_experts_) {
        return absl::InvalidArgumentError(absl::StrCat("LoadStats: topk_ids of token ", t,
                                                       " position ", j, " is ", id,
                                                       ", outside [0, ", num_experts_, ")"));
      }
      ++load[static_cast<size_t>(id)];
    }
  }
  return AddStep(load);
}

std::vector<int64_t> LoadStats::LastStep() const {
  if (steps_total_ == 0) return std::vector<int64_t>(static_cast<size_t>(num_experts_), 0);
  const int32_t last = (next_ + window_steps_ - 1) % window_steps_;
  const int64_t* begin =
      ring_.data() + static_cast<size_t>(last) * static_cast<size_t>(num_experts_);
  return std::vector<int64_t>(begin, begin + num_experts_);
}

std::vector<double> LoadStats::WindowMean() const {
  std::vector<double> mean(static_cast<size_t>(num_experts_), 0.0);
  if (steps_in_window_ == 0) return mean;
  for (size_t e = 0; e < mean.size(); ++e) {
    mean[e] = static_cast<double>(window_sum_[e]) / steps_in_window_;
  }
  return mean;
}

std::string LoadStats::ToJson() const {
  return absl::StrCat("{\"num_experts\":", num_experts_, ",\"window_steps\":", window_steps_,
                      ",\"steps_in_window\":", steps_in_window_, ",\"steps_total\":", steps_total_,
                      ",\"last_step\":", JsonArray(LastStep()),
                      ",\"window_sum\":", JsonArray(window_sum_),
                      ",\"window_mean\":", JsonArray(WindowMean()),
                      ",\"window_max_over_mean\":", ExactNumber(WindowImbalance()),
                      ",\"last_step_max_over_mean\":", ExactNumber(LastStepImbalance()),
                      ",\"total\":", JsonArray(total_), "}");
}

std::string LoadStats::ToLoadsText() const {
  return FormatLoadsText(
      WindowMean(),
      absl::StrFormat("mean slots per step over a window of %d steps (%d recorded, %d total); "
                      "max/mean %.4f",
                      window_steps_, steps_in_window_, steps_total_, WindowImbalance()));
}

std::string FormatLoadsText(const std::vector<double>& loads, absl::string_view comment) {
  std::string text = "# moe expert loads: \"expert load\" per line; '#' starts a comment\n";
  if (!comment.empty()) {
    for (absl::string_view line : absl::StrSplit(comment, '\n')) {
      absl::StrAppend(&text, "# ", line, "\n");
    }
  }
  for (size_t e = 0; e < loads.size(); ++e) {
    absl::StrAppend(&text, e, " ", ExactNumber(loads[e]), "\n");
  }
  return text;
}

absl::StatusOr<std::vector<double>> ParseLoadsText(absl::string_view text,
                                                   absl::string_view source) {
  if (static_cast<int64_t>(text.size()) > kMaxLoadsFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": ", text.size(), " bytes, more than the limit of ", kMaxLoadsFileBytes));
  }
  std::vector<double> loads;
  std::vector<int64_t> line_of;  // [num_experts] line that gave the expert, 0 = none yet
  int64_t line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    const size_t hash = line.find('#');
    if (hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (fields.empty()) continue;
    const std::string where = absl::StrCat(source, ":", line_number, ": ");
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "expected \"expert load\" (2 fields), got ", fields.size(),
                       " fields in '", absl::StripAsciiWhitespace(line), "'"));
    }
    int64_t id = -1;
    if (!absl::SimpleAtoi(fields[0], &id) || id < 0 || id >= kMaxLoadsExperts) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "expert id '", fields[0], "' is not an integer in [0, ", kMaxLoadsExperts, ")"));
    }
    double load = 0;
    if (!absl::SimpleAtod(fields[1], &load) || !std::isfinite(load) || load < 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, "load '", fields[1], "' of expert ", id,
                                                     " is not a finite number >= 0"));
    }
    const size_t e = static_cast<size_t>(id);
    if (e >= loads.size()) {
      loads.resize(e + 1, 0.0);
      line_of.resize(e + 1, 0);
    }
    if (line_of[e] != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "expert ", id, " appears again (first on line ", line_of[e], ")"));
    }
    line_of[e] = line_number;
    loads[e] = load;
  }
  if (loads.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": no expert loads (expected lines \"expert load\")"));
  }
  for (size_t e = 0; e < loads.size(); ++e) {
    if (line_of[e] == 0) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": expert ", e,
                                                     " is missing (ids must cover 0 .. ",
                                                     loads.size() - 1, ", each once)"));
    }
  }
  return loads;
}

absl::StatusOr<std::vector<double>> ReadLoadsFile(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, not a loads file"));
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat(path, ": cannot open the loads file"));
  std::string text;
  char chunk[1 << 16];
  while (file && static_cast<int64_t>(text.size()) <= kMaxLoadsFileBytes) {
    file.read(chunk, sizeof(chunk));
    text.append(chunk, static_cast<size_t>(file.gcount()));
  }
  if (file.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return ParseLoadsText(text, path);
}

}  // namespace moe::gating
