// Runs the built `moe` binary and captures its exit code, stdout and stderr (for CLI tests).
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace moe::testing {

struct CliResult {
  int exit_code = -1;  // -1 when the process did not exit normally (a crash or abort)
  std::string out;
  std::string err;
};

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// A path in the test's temporary directory, unique per test and `name`.
inline std::string TempPath(const std::string& name) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return ::testing::TempDir() + "moe_cli_" + info->test_suite_name() + "_" + info->name() + "_" +
         name;
}

// Single-quotes `arg` for /bin/sh.
inline std::string ShellQuote(const std::string& arg) {
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// Runs MOE_BINARY_DIR/bin/moe with `args`, OMP_NUM_THREADS=2.
inline CliResult RunMoe(const std::vector<std::string>& args) {
  const std::string out_path = TempPath("stdout");
  const std::string err_path = TempPath("stderr");
  std::string command = "OMP_NUM_THREADS=2 " + ShellQuote(MOE_BINARY_DIR "/bin/moe");
  for (const std::string& arg : args) command += " " + ShellQuote(arg);
  command += " >" + ShellQuote(out_path) + " 2>" + ShellQuote(err_path) + " </dev/null";
  const int status = std::system(command.c_str());
  CliResult result;
  if (status != -1 && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  result.out = ReadWholeFile(out_path);
  result.err = ReadWholeFile(err_path);
  return result;
}

// The error convention: exactly one line "moe: error: ..." on stderr.
inline void ExpectOneErrorLine(const CliResult& r) {
  EXPECT_EQ(r.err.rfind("moe: error: ", 0), 0u) << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
}

}  // namespace moe::testing
