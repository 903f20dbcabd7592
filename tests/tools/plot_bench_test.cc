// tools/plot_bench.py runs headless on reports `moe bench` writes and produces non-empty PNGs.
// Needs python3 with matplotlib (Debian: python3-matplotlib, installed by tools/setup.sh): the
// test fails, saying so, when it is missing.
#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tools/cli_runner.h"

#ifndef MOE_PYTHON3
#define MOE_PYTHON3 "/usr/bin/python3"
#endif

namespace moe::testing {
namespace {

// Runs `python3 tools/plot_bench.py args`; exit code and combined output.
CliResult RunPlot(const std::string& args) {
  const std::string log = TempPath("plot.log");
  const std::string command = std::string(ShellQuote(MOE_PYTHON3)) + " " +
                              ShellQuote(MOE_SOURCE_DIR "/tools/plot_bench.py") + " " + args +
                              " >" + ShellQuote(log) + " 2>&1 </dev/null";
  const int status = std::system(command.c_str());
  CliResult result;
  if (status != -1 && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  result.out = ReadWholeFile(log);
  return result;
}

void ExpectPng(const std::string& path) {
  const std::string bytes = ReadWholeFile(path);
  ASSERT_GT(bytes.size(), 1000u) << path << " missing or empty";
  EXPECT_EQ(bytes.substr(0, 8), "\x89PNG\r\n\x1a\n") << path;
  EXPECT_LT(bytes.size(), 400u * 1024) << path;
}

class PlotBenchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string check =
        std::string(ShellQuote(MOE_PYTHON3)) + " -c 'import matplotlib' >/dev/null 2>&1";
    ASSERT_EQ(std::system(check.c_str()), 0)
        << "matplotlib is not importable by " << MOE_PYTHON3
        << ": install the Debian package python3-matplotlib (tools/setup.sh does); "
           "tools/plot_bench.py needs it";
  }
};

TEST_F(PlotBenchTest, DrawsEveryFigureFromASweepJson) {
  const std::string json_path = TempPath("sweep.json");
  CliResult bench = RunMoe({"bench", "--config=tiny", "--sweep=experts=4,8",
                            "--sweep=tokens=2,9,33", "--repeats=1", "--warmup=0", "--steps=3",
                            "--model_ranks=2", "--check_tokens=2", "--json", json_path});
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  // A balancer would add "after"; the script draws both bars when it is there.
  nlohmann::json json = nlohmann::json::parse(ReadWholeFile(json_path), nullptr, false);
  ASSERT_FALSE(json.is_discarded());
  json["rows"][0]["rank_load"]["after"] = {1, 1};
  std::ofstream(json_path, std::ios::trunc) << json.dump();

  const std::string dir = TempPath("figs");
  CliResult plot = RunPlot("-o " + ShellQuote(dir) + " " + ShellQuote(json_path));
  ASSERT_EQ(plot.exit_code, 0) << plot.out;
  for (const char* figure :
       {"throughput.png", "roofline.png", "expert_load.png", "rank_load.png"}) {
    ExpectPng(dir + "/" + figure);
    EXPECT_NE(plot.out.find(std::string("wrote ") + dir + "/" + figure), std::string::npos)
        << plot.out;
  }
}

TEST_F(PlotBenchTest, SkipsRankLoadWithANoteAndReadsCsv) {
  const std::string json_path = TempPath("plain.json");
  const std::string csv_path = TempPath("plain.csv");
  CliResult bench = RunMoe({"bench", "--config=tiny", "--tokens=3,17", "--repeats=1", "--warmup=0",
                            "--check_tokens=2", "--json", json_path, "--csv", csv_path});
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  const std::string dir = TempPath("figs");
  CliResult plot = RunPlot("-o " + ShellQuote(dir) + " --prefix j_ " + ShellQuote(json_path));
  ASSERT_EQ(plot.exit_code, 0) << plot.out;
  ExpectPng(dir + "/j_throughput.png");
  ExpectPng(dir + "/j_expert_load.png");
  EXPECT_NE(plot.out.find("skipped " + dir + "/j_rank_load.png"), std::string::npos) << plot.out;
  EXPECT_TRUE(ReadWholeFile(dir + "/j_rank_load.png").empty());

  CliResult from_csv = RunPlot("-o " + ShellQuote(dir) + " --prefix c_ " + ShellQuote(csv_path));
  ASSERT_EQ(from_csv.exit_code, 0) << from_csv.out;
  ExpectPng(dir + "/c_throughput.png");
  ExpectPng(dir + "/c_roofline.png");
}

TEST_F(PlotBenchTest, BadReportIsAClearError) {
  const std::string path = TempPath("bad.json");
  std::ofstream(path, std::ios::trunc) << "{\"not\": \"a report\"}";
  CliResult plot = RunPlot(ShellQuote(path));
  EXPECT_EQ(plot.exit_code, 2) << plot.out;
  EXPECT_NE(plot.out.find("rows"), std::string::npos) << plot.out;
}

}  // namespace
}  // namespace moe::testing
