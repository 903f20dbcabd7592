// `--backend` of `moe run` and `moe bench`: bad values and flag combinations are usage errors,
// and without a GPU (or without a CUDA build) `--backend cuda` is one clear error, exit 1.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/tools/cli_runner.h"

#ifdef MOE_HAVE_CUDA
#include "moe/cuda/cuda_layer.h"
#endif

namespace moe::testing {
namespace {

bool GpuVisible() {
#ifdef MOE_HAVE_CUDA
  return moe::cuda::CudaDeviceCount() > 0;
#else
  return false;
#endif
}

TEST(CudaCliTest, UnknownBackendIsAUsageError) {
  const CliResult r = RunMoe({"bench", "--backend", "tpu"});
  EXPECT_EQ(r.exit_code, 2);
  ExpectOneErrorLine(r);
  EXPECT_EQ(r.err, "moe: error: flag --backend: expected cpu or cuda, got 'tpu'\n");
}

TEST(CudaCliTest, CudaBenchRejectsCpuOnlyFlags) {
  const CliResult r = RunMoe({"bench", "--backend", "cuda", "--sweep", "experts=8,16"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "moe: error: flag --sweep is not supported with --backend cuda\n");
}

TEST(CudaCliTest, CudaRunRejectsExpertParallelism) {
  const CliResult r = RunMoe({"run", "--backend", "cuda", "--ep", "2", "--config", "tiny",
                              "--weights", "w", "--input", "i", "--output", "o"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "moe: error: flag --backend cuda: not supported with --ep\n");
}

TEST(CudaCliTest, CudaBackendWithoutAGpuIsOneClearError) {
  if (GpuVisible()) GTEST_SKIP() << "a CUDA device is visible (tools/gpu_check.sh runs the bench)";
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"bench", "--backend", "cuda", "--tokens", "1"},
        std::vector<std::string>{"run", "--backend", "cuda", "--config", "tiny", "--weights",
                                 "w.safetensors", "--input", "i", "--output", "o"}}) {
    const CliResult r = RunMoe(args);
    EXPECT_EQ(r.exit_code, 1) << args[0];
    ExpectOneErrorLine(r);
    EXPECT_EQ(r.err.rfind("moe: error: --backend cuda: ", 0), 0u) << r.err;
  }
}

}  // namespace
}  // namespace moe::testing
