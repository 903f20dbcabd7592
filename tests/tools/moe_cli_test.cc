// The `moe` command line: help, validate, bench, flag and argument errors.
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/packed_gemm.h"
#include "kernels/cpu/packed_weights.h"
#include "nlohmann/json.hpp"
#include "tests/tools/cli_runner.h"

namespace moe::testing {
namespace {

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << text;
}

TEST(MoeCliTest, HelpListsEveryCommandAndFlag) {
  for (const char* help : {"--help", "help", "-h"}) {
    CliResult r = RunMoe({help});
    EXPECT_EQ(r.exit_code, 0) << help << r.err;
    EXPECT_TRUE(r.err.empty()) << r.err;
    for (const char* word :
         {"run",       "init",     "bench",        "validate",       "--model",
          "--layer",   "--config", "--weights",    "--input",        "--output",
          "--threads", "--seed",   "--dtype",      "--tokens",       "--repeats",
          "--warmup",  "--json",   "--input_dist", "--check_tokens", "olmoe-1b-7b"}) {
      EXPECT_NE(r.out.find(word), std::string::npos) << help << " lacks " << word;
    }
  }
}

TEST(MoeCliTest, CommandHelpShowsItsFlagsOnly) {
  CliResult r = RunMoe({"bench", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--tokens"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1e-4"), std::string::npos) << "the #wrong rule: " << r.out;
  EXPECT_EQ(r.out.find("--model "), std::string::npos) << r.out;
  CliResult h = RunMoe({"help", "run"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("--model"), std::string::npos) << h.out;
}

TEST(MoeCliTest, NoCommandOrUnknownCommandIsAUsageError) {
  CliResult none = RunMoe({});
  EXPECT_EQ(none.exit_code, 2);
  ExpectOneErrorLine(none);
  CliResult unknown = RunMoe({"frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  ExpectOneErrorLine(unknown);
  EXPECT_NE(unknown.err.find("frobnicate"), std::string::npos) << unknown.err;
}

TEST(MoeCliTest, ValidatePresetPrintsTheResolvedConfig) {
  CliResult r = RunMoe({"validate", "tiny"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("d_model"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("64"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("top_k"), std::string::npos) << r.out;
}

TEST(MoeCliTest, ValidateBadFileFailsWithOneLineNamingTheField) {
  const std::string path = TempPath("bad.textproto");
  WriteText(path, "d_model: 64\nd_ff: 128\nnum_experts: 8\ntop_k: 9\n");
  CliResult r = RunMoe({"validate", path});
  EXPECT_EQ(r.exit_code, 1);
  ExpectOneErrorLine(r);
  EXPECT_NE(r.err.find("top_k"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST(MoeCliTest, ValidateSyntaxErrorIsOneLine) {
  const std::string path = TempPath("syntax.textproto");
  WriteText(path, "d_model: 64\nd_ff: {\n");
  CliResult r = RunMoe({"validate", path});
  EXPECT_EQ(r.exit_code, 1);
  ExpectOneErrorLine(r);
}

TEST(MoeCliTest, ValidateMissingFileNamesIt) {
  CliResult r = RunMoe({"validate", "/nonexistent/x.textproto"});
  EXPECT_EQ(r.exit_code, 1);
  ExpectOneErrorLine(r);
  EXPECT_NE(r.err.find("/nonexistent/x.textproto"), std::string::npos) << r.err;
}

TEST(MoeCliTest, ValidateArgumentCountIsAUsageError) {
  CliResult none = RunMoe({"validate"});
  EXPECT_EQ(none.exit_code, 2);
  ExpectOneErrorLine(none);
  CliResult two = RunMoe({"validate", "tiny", "extra"});
  EXPECT_EQ(two.exit_code, 2);
  ExpectOneErrorLine(two);
  EXPECT_NE(two.err.find("extra"), std::string::npos) << two.err;
}

TEST(MoeCliTest, UnknownFlagExitsNonZeroNamingIt) {
  CliResult r = RunMoe({"bench", "--no_such_flag=3"});
  EXPECT_EQ(r.exit_code, 2);
  ExpectOneErrorLine(r);
  EXPECT_NE(r.err.find("--no_such_flag"), std::string::npos) << r.err;
  // absl's own flags are not the command's.
  CliResult absl_flag = RunMoe({"bench", "--flagfile=/dev/null"});
  EXPECT_EQ(absl_flag.exit_code, 2);
  ExpectOneErrorLine(absl_flag);
}

TEST(MoeCliTest, FlagOfAnotherCommandIsRejected) {
  CliResult r = RunMoe({"validate", "--tokens=4", "tiny"});
  EXPECT_EQ(r.exit_code, 2);
  ExpectOneErrorLine(r);
  EXPECT_NE(r.err.find("--tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("validate"), std::string::npos) << r.err;
}

TEST(MoeCliTest, BadFlagValuesAreUsageErrorsNamingTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"bench", "--tokens", "1,x"}, "--tokens"},
      {{"bench", "--tokens=0"}, "--tokens"},
      {{"bench", "--threads=abc"}, "--threads"},
      {{"bench", "--threads=-1"}, "--threads"},
      {{"bench", "--repeats=0"}, "--repeats"},
      {{"bench", "--input_dist=cauchy"}, "--input_dist"},
      {{"bench", "--seed"}, "--seed"},
      {{"bench", "leftover"}, "leftover"},
      {{"init", "--config=tiny", "--weights=/tmp/x", "--dtype=f64"}, "--dtype"},
  };
  for (const auto& [args, name] : cases) {
    CliResult r = RunMoe(args);
    EXPECT_EQ(r.exit_code, 2) << args.back() << ": " << r.err;
    ExpectOneErrorLine(r);
    EXPECT_NE(r.err.find(name), std::string::npos) << r.err;
  }
}

TEST(MoeCliTest, BenchUnknownConfigIsARuntimeError) {
  CliResult r = RunMoe({"bench", "--config=no-such-preset"});
  EXPECT_EQ(r.exit_code, 1);
  ExpectOneErrorLine(r);
  EXPECT_NE(r.err.find("no-such-preset"), std::string::npos) << r.err;
}

TEST(MoeCliTest, BenchTinyPrintsZeroWrongAndWritesJson) {
  const std::string json_path = TempPath("bench.json");
  CliResult r = RunMoe({"bench", "--config", "tiny", "--tokens", "1,7", "--json", json_path,
                        "--repeats=2", "--threads=2"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("#wrong"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("GFLOP/s ="), std::string::npos) << "formula under the table: " << r.out;
  EXPECT_NE(r.out.find("threads 2"), std::string::npos) << r.out;
  nlohmann::json json = nlohmann::json::parse(ReadWholeFile(json_path), nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << ReadWholeFile(json_path);
  ASSERT_TRUE(json["rows"].is_array());
  ASSERT_EQ(json["rows"].size(), 2u);
  EXPECT_EQ(json["rows"][0]["tokens"], 1);
  EXPECT_EQ(json["rows"][1]["tokens"], 7);
  for (const auto& row : json["rows"]) {
    EXPECT_EQ(row["wrong"], 0);
    EXPECT_EQ(row["dropped_slots"], 0);
    EXPECT_GT(row["time_ms"].get<double>(), 0.0);
    EXPECT_GT(row["checked_tokens"].get<int>(), 0);
  }
  EXPECT_EQ(json["context"]["config"], "tiny");
  EXPECT_EQ(json["context"]["threads"], 2);
  EXPECT_EQ(json["context"]["d_model"], 64);
  // Each data row of the table ends in its #wrong count: 0.
  size_t rows_seen = 0;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#' || line.find("tokens") != std::string::npos) continue;
    ++rows_seen;
    EXPECT_EQ(line.substr(line.find_last_not_of(' ')), "0") << line;
  }
  EXPECT_EQ(rows_seen, 2u) << r.out;
}

// bench --compare on the tiny preset: the ceilings header, a row per format and token count,
// each with 0 wrong; --json holds the same rows (--csv and --trace are refused with --compare).
TEST(MoeCliTest, BenchCompareRowsEveryFormatAgainstCeilingsWithZeroWrong) {
  const std::string json_path = TempPath("compare.json");
  CliResult r = RunMoe({"bench", "--compare", "--config", "tiny", "--tokens", "1,5", "--repeats=1",
                        "--weight_dtype", "f32,bf16,int8,int4", "--json", json_path});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("# ceilings: sgemm: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("triad"), std::string::npos) << r.out;
  size_t rows = 0;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("uniform", 0) != 0) continue;
    ++rows;
    EXPECT_EQ(line.substr(line.find_last_not_of(' ')), "0") << line;
  }
  EXPECT_EQ(rows, 8u) << r.out;

  nlohmann::json json = nlohmann::json::parse(ReadWholeFile(json_path), nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << ReadWholeFile(json_path);
  EXPECT_EQ(json["context"]["config"], "tiny");
  ASSERT_EQ(json["rows"].size(), 8u);
  const char* dtypes[] = {"f32", "bf16", "int8", "int4"};
  for (size_t i = 0; i < 8; ++i) {
    const auto& row = json["rows"][i];
    EXPECT_EQ(row["routing"], "uniform");
    EXPECT_EQ(row["dtype"], dtypes[i / 2]);
    EXPECT_EQ(row["tokens"], i % 2 == 0 ? 1 : 5);
    EXPECT_GT(row["time_ms"].get<double>(), 0);
    EXPECT_GT(row["ceil_gflops"].get<double>(), 0);
    // The BF16 GEMM for BF16 weights and for INT8 where its kernels compute in BF16 (amx),
    // when oneDNN is there; sgemm otherwise.
    const kernels::WeightFormat formats[] = {
        kernels::WeightFormat::kF32, kernels::WeightFormat::kBF16, kernels::WeightFormat::kInt8,
        kernels::WeightFormat::kInt4};
    const kernels::WeightFormat format = formats[i / 2];
    const bool bf16 =
        json["context"]["bf16_gemm"].get<std::string>().rfind("none", 0) != 0 &&
        (format == kernels::WeightFormat::kBF16 ||
         kernels::GemmInputFor(format, kernels::ActiveCpuIsa()) == kernels::GemmInput::kBF16);
    EXPECT_EQ(row["ceiling"], bf16 ? "bf16_gemm" : "sgemm") << dtypes[i / 2];
    EXPECT_GT(row["pct_roofline"].get<double>(), 0);
    // The serial bound adds the two times the roofline takes the larger of.
    EXPECT_GT(row["pct_serial_roofline"].get<double>(), row["pct_roofline"].get<double>());
    EXPECT_LE(row["pct_serial_roofline"].get<double>(), 2 * row["pct_roofline"].get<double>());
    EXPECT_EQ(row["wrong"], 0);
    EXPECT_EQ(row["plain_ms"].is_null(), false);
  }
  EXPECT_EQ(json["rows"][0]["err_f32"], 0.0);
  EXPECT_GT(json["rows"][6]["err_f32"].get<double>(), 0.0);  // int4

  for (const char* flag : {"--csv", "--trace"}) {
    CliResult refused = RunMoe(
        {"bench", "--compare", "--config", "tiny", "--tokens", "1", flag, TempPath("x.out")});
    EXPECT_EQ(refused.exit_code, 2) << refused.err;
    ExpectOneErrorLine(refused);
    EXPECT_NE(refused.err.find(std::string(flag) + ": not supported with --compare"),
              std::string::npos)
        << refused.err;
  }
}

// --skew without --ep: the real router selects the drawn experts (hot:1:1 puts one expert in
// every token's top-k), the header and JSON name the spec; --compare adds rows routed so.
TEST(MoeCliTest, BenchSkewDrawsTheExpertsTheRouterSelects) {
  const std::string json_path = TempPath("skew.json");
  CliResult r = RunMoe({"bench", "--config", "tiny", "--tokens", "256", "--repeats=1", "--skew",
                        "hot:1:1", "--json", json_path});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("experts drawn from --skew hot:1:1"), std::string::npos) << r.out;
  nlohmann::json json = nlohmann::json::parse(ReadWholeFile(json_path), nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << ReadWholeFile(json_path);
  EXPECT_EQ(json["context"]["skew"], "hot:1:1");
  const auto& load = json["rows"][0]["expert_load"][0];
  ASSERT_EQ(load.size(), 8u);
  int64_t hot = 0, total = 0;
  for (const auto& x : load)
    hot = std::max<int64_t>(hot, x.get<int64_t>()), total += x.get<int64_t>();
  EXPECT_EQ(total, 512);  // 256 tokens x top-2
  EXPECT_EQ(hot, 256) << load;
  EXPECT_EQ(json["rows"][0]["wrong"], 0);

  // Without --skew the same inputs spread over the experts.
  CliResult plain =
      RunMoe({"bench", "--config", "tiny", "--tokens", "256", "--repeats=1", "--json", json_path});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  json = nlohmann::json::parse(ReadWholeFile(json_path), nullptr, false);
  ASSERT_FALSE(json.is_discarded());
  for (const auto& x : json["rows"][0]["expert_load"][0]) EXPECT_LT(x.get<int64_t>(), 128) << x;

  CliResult compare =
      RunMoe({"bench", "--compare", "--config", "tiny", "--tokens", "64", "--repeats=1",
              "--weight_dtype", "f32,int8", "--skew", "zipf:1.2", "--json", json_path});
  ASSERT_EQ(compare.exit_code, 0) << compare.err << compare.out;
  json = nlohmann::json::parse(ReadWholeFile(json_path), nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << ReadWholeFile(json_path);
  ASSERT_EQ(json["rows"].size(), 4u);
  const char* routings[] = {"uniform", "zipf:1.2", "uniform", "zipf:1.2"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(json["rows"][i]["routing"], routings[i]);
    EXPECT_EQ(json["rows"][i]["wrong"], 0);
  }
  EXPECT_EQ(json["context"]["skew"], "zipf:1.2");
  EXPECT_NE(compare.out.find("\nzipf:1.2 f32"), std::string::npos) << compare.out;
}

TEST(MoeCliTest, BenchBadSkewIsAUsageErrorNamingTheSpec) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"bench", "--config", "tiny", "--skew", "zipf:x"},
        std::vector<std::string>{"bench", "--config", "tiny", "--skew", "hot:9:0.5"},
        std::vector<std::string>{"bench", "--compare", "--config", "tiny", "--skew",
                                 "hot:9:0.5"}}) {
    CliResult r = RunMoe(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    ExpectOneErrorLine(r);
    EXPECT_NE(r.err.find("--skew '" + args.back() + "'"), std::string::npos) << r.err;
  }
}

TEST(MoeCliTest, UnknownIsaIsRefusedNamingTheFlagAndValue) {
  CliResult unknown = RunMoe({"bench", "--config", "tiny", "--isa", "sse9"});
  EXPECT_NE(unknown.exit_code, 0);
  ExpectOneErrorLine(unknown);
  EXPECT_NE(unknown.err.find("--isa"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("sse9"), std::string::npos) << unknown.err;
}

TEST(MoeCliTest, BenchChecksDroppingAndSharedExpertConfigs) {
  // Capacity drops (switch-base-8 drops in token order) and a gated shared expert.
  const std::string path = TempPath("shared.textproto");
  WriteText(path,
            "name: \"small-shared\" d_model: 48 d_ff: 40 num_experts: 6 top_k: 2 "
            "activation: ACTIVATION_GEGLU router { renormalize: true routed_scaling_factor: 2 } "
            "shared_experts { count: 2 d_ff: 24 sigmoid_gate: true } "
            "capacity { policy: DROP_IN_TOKEN_ORDER factor: 0.5 }\n");
  CliResult r = RunMoe({"bench", "--config", path, "--tokens", "5,64", "--repeats=1", "--warmup=0",
                        "--input_dist=uniform", "--json", TempPath("b.json")});
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
  nlohmann::json json = nlohmann::json::parse(ReadWholeFile(TempPath("b.json")), nullptr, false);
  ASSERT_FALSE(json.is_discarded());
  EXPECT_GT(json["rows"][1]["dropped_slots"].get<int>(), 0);
  EXPECT_EQ(json["rows"][1]["wrong"], 0);
}

}  // namespace
}  // namespace moe::testing
