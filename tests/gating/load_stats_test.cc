#include "gating/load_stats.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::gating {
namespace {

using ::testing::HasSubstr;

std::string TempFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "load_stats_test_" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(MaxOverMeanTest, IsOneWhenBalancedAndZeroWhenEmptyOrIdle) {
  EXPECT_EQ(MaxOverMean(std::vector<double>{2, 2, 2}), 1.0);
  EXPECT_EQ(MaxOverMean(std::vector<int64_t>{4, 0, 0, 0}), 4.0);
  EXPECT_EQ(MaxOverMean(std::vector<double>{3, 1}), 1.5);
  EXPECT_EQ(MaxOverMean(std::vector<double>{}), 0.0);
  EXPECT_EQ(MaxOverMean(std::vector<int64_t>{0, 0}), 0.0);
}

TEST(LoadStatsTest, WindowHoldsTheLastStepsAndTotalEveryStep) {
  auto stats = LoadStats::Create(3, 2);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->LastStep(), (std::vector<int64_t>{0, 0, 0}));
  ASSERT_TRUE(stats->AddStep({1, 0, 0}).ok());
  EXPECT_EQ(stats->steps_in_window(), 1);
  EXPECT_EQ(stats->WindowMean(), (std::vector<double>{1, 0, 0}));
  ASSERT_TRUE(stats->AddStep({0, 2, 0}).ok());
  ASSERT_TRUE(stats->AddStep({0, 0, 4}).ok());  // evicts {1, 0, 0}
  ASSERT_TRUE(stats->AddStep({5, 0, 0}).ok());  // evicts {0, 2, 0}
  EXPECT_EQ(stats->steps_in_window(), 2);
  EXPECT_EQ(stats->steps_total(), 4);
  EXPECT_EQ(stats->WindowSum(), (std::vector<int64_t>{5, 0, 4}));
  EXPECT_EQ(stats->WindowMean(), (std::vector<double>{2.5, 0, 2}));
  EXPECT_EQ(stats->Total(), (std::vector<int64_t>{6, 2, 4}));
  EXPECT_EQ(stats->LastStep(), (std::vector<int64_t>{5, 0, 0}));
  EXPECT_DOUBLE_EQ(stats->WindowImbalance(), 5.0 * 3 / 9);
  EXPECT_DOUBLE_EQ(stats->LastStepImbalance(), 3.0);
}

TEST(LoadStatsTest, WindowOfOneStepIsTheLastStep) {
  auto stats = LoadStats::Create(2, 1);
  ASSERT_TRUE(stats.ok());
  for (int64_t i = 0; i < 5; ++i) ASSERT_TRUE(stats->AddStep({i, 2 * i}).ok());
  EXPECT_EQ(stats->WindowSum(), (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(stats->LastStep(), (std::vector<int64_t>{4, 8}));
}

TEST(LoadStatsTest, CountsSlotsFromTopkIds) {
  auto stats = LoadStats::Create(4, 4);
  ASSERT_TRUE(stats.ok());
  const int32_t ids[] = {0, 3, 3, 1, 2, 3};  // 3 tokens, top_k 2
  ASSERT_TRUE(stats->AddStepFromIds(ids, 3, 2).ok());
  EXPECT_EQ(stats->LastStep(), (std::vector<int64_t>{1, 1, 1, 3}));
  ASSERT_TRUE(stats->AddStepFromIds(nullptr, 0, 2).ok());  // zero tokens
  EXPECT_EQ(stats->LastStep(), (std::vector<int64_t>{0, 0, 0, 0}));
}

TEST(LoadStatsTest, RejectsBadStepsNamingTheEntry) {
  auto stats = LoadStats::Create(3, 2);
  ASSERT_TRUE(stats.ok());
  absl::Status s = stats->AddStep({1, 2});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("2 entries, expected 3"));
  s = stats->AddStep({1, -2, 0});
  EXPECT_THAT(std::string(s.message()), HasSubstr("expert_load[1] is -2"));
  const int32_t ids[] = {0, 1, 2, 7};
  s = stats->AddStepFromIds(ids, 2, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("token 1 position 1 is 7"));
  EXPECT_EQ(stats->steps_total(), 0);  // nothing recorded
  EXPECT_EQ(LoadStats::Create(0, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadStats::Create(4, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LoadStatsTest, JsonNamesEveryField) {
  auto stats = LoadStats::Create(2, 3);
  ASSERT_TRUE(stats.ok());
  ASSERT_TRUE(stats->AddStep({3, 1}).ok());
  const std::string json = stats->ToJson();
  for (const char* field :
       {"\"num_experts\":2", "\"window_steps\":3", "\"steps_in_window\":1", "\"steps_total\":1",
        "\"last_step\":[3,1]", "\"window_sum\":[3,1]", "\"window_mean\":[3,1]",
        "\"window_max_over_mean\":1.5", "\"last_step_max_over_mean\":1.5", "\"total\":[3,1]"}) {
    EXPECT_THAT(json, HasSubstr(field));
  }
}

TEST(LoadsTextTest, RoundTripsExactly) {
  const std::vector<double> loads = {1523, 0.1, 0, 1e-300, 12345678901234.5, 2.0 / 3};
  const std::string text = FormatLoadsText(loads, "two\nlines");
  EXPECT_THAT(text, HasSubstr("# two\n# lines\n"));
  auto back = ParseLoadsText(text, "mem");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, loads);
}

TEST(LoadsTextTest, AcceptsCommentsBlankLinesTabsCrLfAndAnyOrder) {
  auto loads = ParseLoadsText("# header\n\n2\t7 # trailing\r\n0 1.5\n  1   0\n", "mem");
  ASSERT_TRUE(loads.ok()) << loads.status();
  EXPECT_EQ(*loads, (std::vector<double>{1.5, 0, 7}));
}

TEST(LoadsTextTest, FromLoadStatsReadsBackAsTheWindowMean) {
  auto stats = LoadStats::Create(3, 4);
  ASSERT_TRUE(stats.ok());
  ASSERT_TRUE(stats->AddStep({1, 2, 3}).ok());
  ASSERT_TRUE(stats->AddStep({2, 2, 4}).ok());
  auto loads = ParseLoadsText(stats->ToLoadsText(), "stats");
  ASSERT_TRUE(loads.ok()) << loads.status();
  EXPECT_EQ(*loads, (std::vector<double>{1.5, 2, 3.5}));
}

TEST(LoadsTextTest, ErrorsNameTheSourceAndLine) {
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {"0 1\n1\n", "f.txt:2: expected \"expert load\" (2 fields), got 1 fields in '1'"},
           {"0 1 2\n", "f.txt:1: expected \"expert load\" (2 fields), got 3"},
           {"x 1\n", "f.txt:1: expert id 'x' is not an integer"},
           {"-1 1\n", "f.txt:1: expert id '-1' is not an integer in [0, 1048576)"},
           {"99999999 1\n", "f.txt:1: expert id '99999999'"},
           {"0 -1\n", "f.txt:1: load '-1' of expert 0 is not a finite number >= 0"},
           {"0 nan\n", "f.txt:1: load 'nan' of expert 0"},
           {"0 inf\n", "f.txt:1: load 'inf' of expert 0"},
           {"0 1e999\n", "f.txt:1: load '1e999' of expert 0"},
           {"0 1\n\n0 2\n", "f.txt:3: expert 0 appears again (first on line 1)"},
           {"0 1\n2 1\n", "f.txt: expert 1 is missing (ids must cover 0 .. 2, each once)"},
           {"# nothing\n\n", "f.txt: no expert loads"},
           {"", "f.txt: no expert loads"},
       }) {
    auto loads = ParseLoadsText(c.text, "f.txt");
    EXPECT_EQ(loads.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(std::string(loads.status().message()), HasSubstr(c.message)) << c.text;
  }
}

TEST(LoadsTextTest, ReadsFilesAndNamesTheMissingOne) {
  const std::string path = TempFile("ok.txt", "0 2\n1 3\n");
  auto loads = ReadLoadsFile(path);
  ASSERT_TRUE(loads.ok()) << loads.status();
  EXPECT_EQ(*loads, (std::vector<double>{2, 3}));
  auto missing = ReadLoadsFile(path + ".absent");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(path + ".absent"));
  auto dir = ReadLoadsFile(::testing::TempDir());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dir.status().message()), HasSubstr("is a directory"));
  const std::string bad = TempFile("bad.txt", "0 1\n0 1\n");
  EXPECT_THAT(std::string(ReadLoadsFile(bad).status().message()), HasSubstr(bad + ":2:"));
}

}  // namespace
}  // namespace moe::gating
