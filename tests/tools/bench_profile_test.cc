// `moe bench` profiling: sweeps (hold invariant, table <-> CSV <-> JSON), the trace file and
// stopping a sweep with SIGINT. Tiny configs only: every run takes well under a second.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tools/cli_runner.h"

namespace moe::testing {
namespace {

using Json = nlohmann::json;

struct Table {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
};

// The data table of `moe bench` stdout: the first line that is neither empty nor a comment
// names the columns; the lines after it, up to the next comment, are rows.
Table ParseTable(const std::string& out) {
  Table table;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      if (!table.columns.empty()) break;
      continue;
    }
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (table.columns.empty()) {
      table.columns = fields;
    } else {
      table.rows.push_back(fields);
    }
  }
  return table;
}

// The CSV lines that are not "# context" comments, split on commas (no field here quotes one).
std::vector<std::vector<std::string>> ParseCsv(const std::string& text) {
  std::vector<std::vector<std::string>> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    lines.push_back(absl::StrSplit(line, ','));
  }
  return lines;
}

Json ReadJson(const std::string& path) {
  Json json = Json::parse(ReadWholeFile(path), nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(json.is_discarded()) << path << ": " << ReadWholeFile(path);
  return json;
}

// How a printed column relates to a JSON row key: printed = json[key] * scale.
struct ColumnKey {
  const char* key;
  double scale;
};
const std::map<std::string, ColumnKey>& SweepColumns() {
  static const auto* columns = new std::map<std::string, ColumnKey>{
      {"experts", {"experts", 1}},
      {"top_k", {"top_k", 1}},
      {"d_model", {"d_model", 1}},
      {"d_ff", {"d_ff", 1}},
      {"tokens", {"tokens", 1}},
      {"time_ms", {"time_ms", 1}},
      {"tokens/s", {"tokens_per_s", 1}},
      {"GFLOP/s", {"gflops", 1}},
      {"%roof", {"roofline_percent", 1}},
      {"act_MB/tok", {"active_bytes_per_token", 1e-6}},
      {"total_Mparam", {"total_params", 1e-6}},
      {"load_max", {"load_max_over_mean", 1}},
      {"ep_KB/tok", {"ep_bytes_per_token", 1e-3}},
      {"hold_dev%", {"hold_deviation_percent", 1}},
      {"#wrong", {"wrong", 1}},
  };
  return *columns;
}

// Half a unit of the last printed digit of `text`.
double PrintedHalfUlp(const std::string& text) {
  const size_t dot = text.find('.');
  const int decimals = dot == std::string::npos ? 0 : static_cast<int>(text.size() - dot - 1);
  return 0.5 * std::pow(10.0, -decimals);
}

TEST(BenchProfileTest, SweepTableRoundTripsThroughCsvAndJson) {
  const std::string json_path = TempPath("sweep.json");
  const std::string csv_path = TempPath("sweep.csv");
  CliResult r = RunMoe({"bench", "--config=tiny", "--sweep", "experts=4,8", "--sweep", "top_k=1,2",
                        "--hold", "active-params", "--sweep", "tokens=3,20", "--repeats=2",
                        "--model_ranks=2", "--steps=2", "--json", json_path, "--csv", csv_path});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const Table table = ParseTable(r.out);
  ASSERT_EQ(table.rows.size(), 8u) << r.out;
  const Json json = ReadJson(json_path);
  ASSERT_EQ(json["rows"].size(), 8u);
  const std::vector<std::vector<std::string>> csv = ParseCsv(ReadWholeFile(csv_path));
  ASSERT_EQ(csv.size(), 9u) << ReadWholeFile(csv_path);
  EXPECT_EQ(json["context"]["sweep"], "experts=4,8 x top_k=1,2 x tokens=3,20");
  EXPECT_EQ(json["context"]["hold"], "active-params");
  EXPECT_EQ(json["context"]["points_total"], 8);
  EXPECT_EQ(json["context"]["interrupted"], false);
  for (const char* key : {"cpu", "isa", "threads", "ranks", "commit", "config_text"}) {
    EXPECT_TRUE(json["context"].contains(key)) << key;
  }
  EXPECT_TRUE(json["context"]["isa"].contains("avx512f"));
  EXPECT_NE(ReadWholeFile(csv_path).find("# isa: {"), std::string::npos);

  for (const std::string& column : table.columns) {
    EXPECT_EQ(SweepColumns().count(column), 1u) << "unexpected column " << column;
  }
  for (size_t i = 0; i < table.rows.size(); ++i) {
    const Json& row = json["rows"][i];
    ASSERT_EQ(table.rows[i].size(), table.columns.size()) << i;
    for (size_t c = 0; c < table.columns.size(); ++c) {
      const ColumnKey& key = SweepColumns().at(table.columns[c]);
      const std::string& printed = table.rows[i][c];
      const double value = row[key.key].get<double>() * key.scale;
      EXPECT_NEAR(std::stod(printed), value, PrintedHalfUlp(printed) * 1.0001 + 1e-9)
          << "row " << i << " column " << table.columns[c];
    }
    // CSV: the same values as the JSON, column by column.
    const std::vector<std::string>& header = csv[0];
    const std::vector<std::string>& line = csv[i + 1];
    ASSERT_EQ(line.size(), header.size()) << i;
    for (size_t c = 0; c < header.size(); ++c) {
      const Json& value = row[header[c]];
      if (value.is_string()) {
        EXPECT_EQ(line[c], value.get<std::string>()) << header[c];
      } else if (value.is_null()) {
        EXPECT_EQ(line[c], "") << header[c];
      } else {
        EXPECT_EQ(std::stod(line[c]), value.get<double>()) << "row " << i << " " << header[c];
      }
    }
    EXPECT_EQ(row["expert_load"].size(), 2u) << "one load vector per step";
    EXPECT_EQ(row["expert_load"][0].size(), row["experts"].get<size_t>());
    EXPECT_EQ(row["rank_load"]["before"].size(), 2u);
    EXPECT_GT(row["ep_bytes_per_token"].get<double>(), 0.0);
  }
}

TEST(BenchProfileTest, SweepHoldsActiveOrTotalParamsWithinOnePercent) {
  for (const char* hold : {"active-params", "total-params"}) {
    const std::string json_path = TempPath(std::string(hold) + ".json");
    CliResult r = RunMoe({"bench", "--config=tiny", "--sweep=experts=4,8,12", "--sweep",
                          "top_k=1,2,4", "--hold", hold, "--tokens=4", "--repeats=1", "--warmup=0",
                          "--check_tokens=2", "--json", json_path});
    ASSERT_EQ(r.exit_code, 0) << hold << r.err << r.out;
    const Json json = ReadJson(json_path);
    const bool active = std::string(hold) == "active-params";
    const double base =
        json["context"][active ? "base_active_params" : "base_total_params"].get<double>();
    ASSERT_EQ(json["rows"].size(), 9u);
    for (const Json& row : json["rows"]) {
      const double held = row[active ? "active_params" : "total_params"].get<double>();
      EXPECT_LE(std::abs(held / base - 1), 0.01) << hold << " " << row["label"];
      EXPECT_NEAR(row["hold_deviation_percent"].get<double>(), 100 * (held / base - 1), 1e-9);
    }
    EXPECT_NE(r.out.find("hold_dev%"), std::string::npos) << r.out;
  }
}

TEST(BenchProfileTest, EpBytesFollowTheFormulaOnExactRoutings) {
  // top_k = num_experts: every token uses every expert, so under N ranks it reaches exactly
  // N - 1 remote ranks: 2 * d_model * 4 bytes * (N - 1); each rank gets 2 experts' slots.
  const std::string json_path = TempPath("ep.json");
  CliResult r =
      RunMoe({"bench", "--config=tiny", "--sweep=top_k=8", "--sweep=tokens=6,11", "--model_ranks=4",
              "--steps=2", "--repeats=1", "--warmup=0", "--check_tokens=1", "--json", json_path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json json = ReadJson(json_path);
  for (const Json& row : json["rows"]) {
    EXPECT_EQ(row["ep_remote_ranks_per_token"].get<double>(), 3.0);
    EXPECT_EQ(row["ep_bytes_per_token"].get<double>(), 2 * 64 * 4 * 3.0);
    const int64_t slots_per_rank = 2 * row["tokens"].get<int64_t>() * 2;  // 2 experts, 2 steps
    EXPECT_EQ(row["rank_load"]["before"],
              Json({slots_per_rank, slots_per_rank, slots_per_rank, slots_per_rank}));
  }
  // One rank: nothing moves and no rank_load.
  CliResult one =
      RunMoe({"bench", "--config=tiny", "--tokens=5", "--repeats=1", "--json", json_path});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const Json row = ReadJson(json_path)["rows"][0];
  EXPECT_EQ(row["ep_bytes_per_token"].get<double>(), 0.0);
  EXPECT_FALSE(row.contains("rank_load"));
}

TEST(BenchProfileTest, SweepUsageErrors) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"bench", "--config=tiny", "--hold=total-params"}, "--hold"},
      {{"bench", "--config=tiny", "--sweep=d_ff=8", "--hold=total-params"}, "d_ff"},
      {{"bench", "--config=tiny", "--sweep=heads=2"}, "--sweep"},
      {{"bench", "--config=tiny", "--sweep=tokens=2", "--tokens=3"}, "--tokens"},
      {{"bench", "--config=tiny", "--sweep=top_k=9"}, "top_k=9"},
      {{"bench", "--config=tiny", "--model_ranks=0"}, "--model_ranks"},
      {{"bench", "--config=tiny", "--steps=0"}, "--steps"},
  };
  for (const auto& [args, name] : cases) {
    CliResult r = RunMoe(args);
    EXPECT_EQ(r.exit_code, 2) << args.back() << ": " << r.err;
    ExpectOneErrorLine(r);
    EXPECT_NE(r.err.find(name), std::string::npos) << r.err;
  }
}

// Checks that the complete events of each (pid, tid) nest: sorted by begin (longer first),
// every event ends before the enclosing open one does.
void ExpectNestedPerTrack(const std::vector<const Json*>& events) {
  std::map<std::pair<int, int>, std::vector<std::pair<double, double>>> tracks;
  for (const Json* e : events) {
    const double ts = (*e)["ts"].get<double>();
    tracks[{(*e)["pid"].get<int>(), (*e)["tid"].get<int>()}].push_back(
        {ts, ts + (*e)["dur"].get<double>()});
  }
  constexpr double kEps = 1e-3;  // µs: the file has nanosecond resolution
  for (auto& [track, spans] : tracks) {
    std::sort(spans.begin(), spans.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first < b.first : a.second > b.second;
    });
    std::vector<std::pair<double, double>> open;
    for (const auto& span : spans) {
      while (!open.empty() && open.back().second <= span.first + kEps) open.pop_back();
      if (!open.empty()) {
        EXPECT_LE(span.second, open.back().second + kEps)
            << "tid " << track.second << ": [" << span.first << ", " << span.second
            << "] overlaps its parent [" << open.back().first << ", " << open.back().second << "]";
      }
      open.push_back(span);
    }
  }
}

TEST(BenchProfileTest, TraceFileHoldsWellFormedNestedEvents) {
  const std::string trace_path = TempPath("trace.json");
  CliResult r = RunMoe({"bench", "--config=tiny", "--tokens=5,40", "--repeats=2", "--threads=2",
                        "--trace", trace_path});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const Json trace = ReadJson(trace_path);
  ASSERT_TRUE(trace.is_object());
  ASSERT_TRUE(trace["traceEvents"].is_array());
  std::vector<const Json*> complete;
  std::map<std::string, int> count;
  std::set<int> tids, named_tids;
  bool process_named = false;
  for (const Json& e : trace["traceEvents"]) {
    ASSERT_TRUE(e.is_object());
    ASSERT_TRUE(e["ph"].is_string()) << e;
    ASSERT_TRUE(e["name"].is_string()) << e;
    ASSERT_TRUE(e["pid"].is_number_integer()) << e;
    ASSERT_TRUE(e["tid"].is_number_integer()) << e;
    EXPECT_EQ(e["pid"], 0) << "one rank: pid 0";
    if (e["ph"] == "M") {
      if (e["name"] == "process_name") process_named = e["args"]["name"] == "rank 0";
      if (e["name"] == "thread_name") named_tids.insert(e["tid"].get<int>());
      continue;
    }
    ASSERT_EQ(e["ph"], "X") << e;
    ASSERT_TRUE(e["cat"].is_string()) << e;
    ASSERT_TRUE(e["ts"].is_number()) << e;
    ASSERT_TRUE(e["dur"].is_number()) << e;
    EXPECT_GE(e["ts"].get<double>(), 0.0);
    EXPECT_GE(e["dur"].get<double>(), 0.0);
    complete.push_back(&e);
    tids.insert(e["tid"].get<int>());
    const std::string name = e["name"];
    const bool expert_gemm = name.rfind("expert ", 0) == 0 &&
                             (name.size() > 8 && (name.substr(name.size() - 8) == " gate_up" ||
                                                  name.substr(name.size() - 5) == " down"));
    if (expert_gemm) {
      ++count[name.substr(name.rfind(' ') + 1)];
      EXPECT_GT(e["args"]["rows"].get<int>(), 0) << e;
      EXPECT_EQ(e["cat"], "expert");
    } else {
      ++count[name];
    }
  }
  EXPECT_TRUE(process_named);
  EXPECT_EQ(tids, named_tids) << "every track has a thread_name";
  EXPECT_EQ(count["forward"], 4) << "2 rows x 2 repeats";
  EXPECT_EQ(count["warm-up forward"], 2);
  EXPECT_EQ(count["point tokens=5"], 1);
  EXPECT_GE(count["grouped_gemm"], 6);
  EXPECT_GE(count["gate_up"], 6);
  EXPECT_EQ(count["gate_up"], count["down"]);
  ExpectNestedPerTrack(complete);
  // Across threads: every expert GEMM lies within a grouped_gemm of the calling thread.
  for (const Json* e : complete) {
    if ((*e)["cat"] != "expert") continue;
    const double begin = (*e)["ts"].get<double>();
    const double end = begin + (*e)["dur"].get<double>();
    bool inside = false;
    for (const Json* g : complete) {
      if ((*g)["name"] != "grouped_gemm") continue;
      const double g_begin = (*g)["ts"].get<double>();
      inside =
          inside || (g_begin <= begin + 1e-3 && end <= g_begin + (*g)["dur"].get<double>() + 1e-3);
    }
    EXPECT_TRUE(inside) << *e;
  }
}

// Starts MOE_BINARY_DIR/bin/moe with `args`, stdout and stderr to files, SIGINT at default.
pid_t SpawnMoe(const std::vector<std::string>& args, const std::string& out,
               const std::string& err) {
  for (const std::string& path : {out, err}) std::ofstream(path, std::ios::trunc);  // no stale text
  const pid_t pid = fork();
  if (pid != 0) return pid;
  signal(SIGINT, SIG_DFL);
  setenv("OMP_NUM_THREADS", "2", 1);
  const int in_fd = open("/dev/null", O_RDONLY);
  const int out_fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int err_fd = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(in_fd, 0);
  dup2(out_fd, 1);
  dup2(err_fd, 2);
  std::vector<std::string> argv_strings = {MOE_BINARY_DIR "/bin/moe"};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  execv(argv[0], argv.data());
  _exit(127);
}

// Waits up to `seconds` for `pid`; its exit code, or -1 (killed when still running).
int WaitFor(pid_t pid, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

TEST(BenchProfileTest, SigintStopsAfterTheCurrentPointAndKeepsFinishedRows) {
  const std::string out = TempPath("stdout"), err = TempPath("stderr");
  const std::string json_path = TempPath("int.json"), csv_path = TempPath("int.csv");
  const std::string trace_path = TempPath("int_trace.json");
  // 300 points of ~50 ms each: far longer than the test waits.
  std::string tokens = "tokens=64";
  for (int i = 1; i < 300; ++i) tokens += ",64";
  const pid_t pid = SpawnMoe({"bench", "--config=tiny", "--sweep", tokens, "--sweep", "top_k=2",
                              "--repeats=100", "--warmup=0", "--check_tokens=1", "--json",
                              json_path, "--csv", csv_path, "--trace", trace_path},
                             out, err);
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (ReadWholeFile(err).find("point 1/300 done") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_NE(ReadWholeFile(err).find("point 1/300 done"), std::string::npos) << ReadWholeFile(err);
  ASSERT_EQ(kill(pid, SIGINT), 0);
  const int exit_code = WaitFor(pid, 60);
  const std::string stderr_text = ReadWholeFile(err);
  EXPECT_EQ(exit_code, 130) << stderr_text;
  EXPECT_NE(stderr_text.find("interrupted after"), std::string::npos) << stderr_text;

  const Table table = ParseTable(ReadWholeFile(out));
  const size_t done = table.rows.size();
  EXPECT_GE(done, 1u);
  EXPECT_LT(done, 300u);
  const Json json = ReadJson(json_path);
  EXPECT_EQ(json["context"]["interrupted"], true);
  EXPECT_EQ(json["context"]["points_total"], 300);
  ASSERT_EQ(json["rows"].size(), done) << "the JSON holds exactly the printed rows";
  for (size_t i = 0; i < done; ++i) {
    EXPECT_EQ(json["rows"][i]["tokens"], 64);
    EXPECT_EQ(json["rows"][i]["wrong"], 0);
    EXPECT_NEAR(std::stod(table.rows[i][5]), json["rows"][i]["time_ms"].get<double>(), 5e-4);
  }
  EXPECT_EQ(ParseCsv(ReadWholeFile(csv_path)).size(), done + 1);
  const Json trace = ReadJson(trace_path);
  EXPECT_FALSE(trace["traceEvents"].empty());
}

}  // namespace
}  // namespace moe::testing
