// Host-side logic of the CUDA backend: every launcher's parameter checks (code and message),
// plan workspace sizes, launch choices, the router rule taken from configs, the cuBLAS
// baseline's problem list, and the layer's refusal without a GPU. Needs no GPU: every check
// runs before any device call.
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#ifdef MOE_HAVE_CUDA

#include "kernels/cuda/activation.h"
#include "kernels/cuda/grouped_gemm_cublas.h"
#include "kernels/cuda/permute.h"
#include "kernels/cuda/random_fill.h"
#include "kernels/cuda/router_gemm.h"
#include "kernels/cuda/router_select.h"
#include "kernels/cuda/routing_plan.h"
#include "moe/cuda/cuda_layer.h"
#include "tests/support/test_inputs.h"

namespace moe::kernels::cuda {
namespace {

void ExpectError(const absl::Status& status, absl::StatusCode code, const std::string& message) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_EQ(std::string(status.message()), message);
}

RouterSelectParams GoodSelect() {
  static float logits[1];
  static int32_t ids[1];
  static float weights[1];
  static int32_t status[1];
  RouterSelectParams p;
  p.logits = logits;
  p.topk_ids = ids;
  p.topk_weights = weights;
  p.row_status = status;
  p.num_tokens = 3;
  p.num_experts = 12;
  p.top_k = 2;
  return p;
}

TEST(RouterSelectParamsTest, GoodParamsPass) {
  EXPECT_TRUE(CheckRouterSelectParams(GoodSelect()).ok());
  RouterSelectParams p = GoodSelect();
  p.num_experts = kRouterMaxExperts;
  p.top_k = kRouterMaxExperts;
  EXPECT_TRUE(CheckRouterSelectParams(p).ok());
}

TEST(RouterSelectParamsTest, EachBadFieldIsNamed) {
  RouterSelectParams p = GoodSelect();
  p.num_experts = 513;
  ExpectError(CheckRouterSelectParams(p), absl::StatusCode::kInvalidArgument,
              "RouterSelectParams.num_experts: expected 1 to 512, got 513");
  p = GoodSelect();
  p.top_k = 13;
  ExpectError(CheckRouterSelectParams(p), absl::StatusCode::kInvalidArgument,
              "RouterSelectParams.top_k: expected 1 to num_experts (12), got 13");
  p = GoodSelect();
  p.num_tokens = -1;
  ExpectError(CheckRouterSelectParams(p), absl::StatusCode::kInvalidArgument,
              "RouterSelectParams.num_tokens: expected 0 to 2^31-1, got -1");
  p = GoodSelect();
  p.spec.num_groups = 5;
  ExpectError(CheckRouterSelectParams(p), absl::StatusCode::kInvalidArgument,
              "RouterSelectParams.spec.num_groups: 5 does not divide num_experts (12)");
  p = GoodSelect();
  p.spec.num_groups = 4;
  p.spec.topk_groups = 5;
  ExpectError(CheckRouterSelectParams(p), absl::StatusCode::kInvalidArgument,
              "RouterSelectParams.spec.topk_groups: expected 1 to num_groups (4), got 5");
  p = GoodSelect();
  p.spec.num_groups = 6;
  p.spec.topk_groups = 1;
  p.top_k = 3;
  ExpectError(CheckRouterSelectParams(p), absl::StatusCode::kInvalidArgument,
              "RouterSelectParams.spec.topk_groups: the 1 kept groups hold 2 experts, fewer "
              "than top_k (3)");
  p = GoodSelect();
  p.spec.num_groups = 12;
  p.spec.topk_groups = 6;
  ExpectError(CheckRouterSelectParams(p), absl::StatusCode::kInvalidArgument,
              "RouterSelectParams.spec.group_score: kTop2Sum needs at least 2 experts per group");
  p = GoodSelect();
  p.spec.score = RouterScore::kSigmoid;
  p.spec.topk_then_score = true;
  ExpectError(CheckRouterSelectParams(p), absl::StatusCode::kInvalidArgument,
              "RouterSelectParams.spec.topk_then_score: only with softmax scores");
  p = GoodSelect();
  p.spec.routed_scaling_factor = 0;
  ExpectError(CheckRouterSelectParams(p), absl::StatusCode::kInvalidArgument,
              "RouterSelectParams.spec.routed_scaling_factor: expected a finite value > 0, got 0");
  p = GoodSelect();
  p.row_status = nullptr;
  ExpectError(CheckRouterSelectParams(p), absl::StatusCode::kInvalidArgument,
              "RouterSelectParams.row_status: null");
  p.num_tokens = 0;  // nothing to write: null outputs are fine
  EXPECT_TRUE(CheckRouterSelectParams(p).ok());
}

TEST(RouterSelectParamsTest, LauncherRejectsBeforeTouchingTheDevice) {
  RouterSelectParams p = GoodSelect();
  p.top_k = 0;
  EXPECT_EQ(RouterSelect(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(DeviceRoutingPlanTest, WorkspaceHoldsChunkHistogramsAndSlotRanks) {
  EXPECT_EQ(DeviceRoutingPlanChunks(0, 8), 0);
  EXPECT_EQ(DeviceRoutingPlanChunks(1, 1), 1);
  EXPECT_EQ(DeviceRoutingPlanChunks(32, 8), 1);      // 256 slots
  EXPECT_EQ(DeviceRoutingPlanChunks(33, 8), 2);      // 264 slots
  EXPECT_EQ(DeviceRoutingPlanChunks(4096, 8), 128);  // DeepSeek-V3 prefill
  // 128 chunks x 256 experts x 8 bytes, then 32768 slots x 4 bytes.
  EXPECT_EQ(DeviceRoutingPlanWorkspaceBytes(4096, 8, 256), 128u * 256 * 8 + 32768u * 4);
  // Odd sizes round each part up to 256 bytes: 1 chunk x 5 experts x 8 = 40 -> 256; 3 x 4 = 12
  // -> 256.
  EXPECT_EQ(DeviceRoutingPlanWorkspaceBytes(3, 1, 5), 512u);
  EXPECT_EQ(DeviceRoutingPlanWorkspaceBytes(0, 1, 5), 0u);
}

DeviceRoutingPlanParams GoodPlan(std::vector<char>& workspace) {
  static int64_t scratch[64];
  static unsigned long long bad[1];
  static int32_t ids[1];
  DeviceRoutingPlanParams p;
  p.topk_ids = ids;
  p.num_tokens = 5;
  p.top_k = 2;
  p.num_experts = 6;
  p.demand = p.counts = p.offsets = p.slot_of_row = p.row_of_slot = p.dropped_slots = scratch;
  p.first_bad_slot = bad;
  workspace.assign(DeviceRoutingPlanWorkspaceBytes(5, 2, 6) + 256, 0);
  uintptr_t base = reinterpret_cast<uintptr_t>(workspace.data());
  p.workspace = reinterpret_cast<void*>((base + 255) / 256 * 256);
  p.workspace_bytes = DeviceRoutingPlanWorkspaceBytes(5, 2, 6);
  return p;
}

TEST(DeviceRoutingPlanTest, EachBadFieldIsNamed) {
  std::vector<char> ws;
  EXPECT_TRUE(CheckDeviceRoutingPlanParams(GoodPlan(ws)).ok());
  DeviceRoutingPlanParams p = GoodPlan(ws);
  p.num_experts = kPlanMaxExperts + 1;
  ExpectError(CheckDeviceRoutingPlanParams(p), absl::StatusCode::kInvalidArgument,
              "DeviceRoutingPlanParams.num_experts: expected 1 to 8192, got 8193");
  p = GoodPlan(ws);
  p.top_k = 7;
  ExpectError(CheckDeviceRoutingPlanParams(p), absl::StatusCode::kInvalidArgument,
              "DeviceRoutingPlanParams.top_k: expected 1 to num_experts (6), got 7");
  p = GoodPlan(ws);
  p.capacity_factor = -1;
  ExpectError(CheckDeviceRoutingPlanParams(p), absl::StatusCode::kInvalidArgument,
              "DeviceRoutingPlanParams.capacity_factor: expected 0 (dropless) or a finite factor "
              "> 0, got -1");
  p = GoodPlan(ws);
  p.workspace_bytes -= 1;
  ExpectError(CheckDeviceRoutingPlanParams(p), absl::StatusCode::kInvalidArgument,
              "DeviceRoutingPlanParams.workspace_bytes: expected at least 512, got 511");
  p = GoodPlan(ws);
  p.workspace = static_cast<char*>(p.workspace) + 8;
  ExpectError(CheckDeviceRoutingPlanParams(p), absl::StatusCode::kInvalidArgument,
              "DeviceRoutingPlanParams.workspace: must be 256-byte aligned");
  p = GoodPlan(ws);
  p.offsets = nullptr;
  ExpectError(CheckDeviceRoutingPlanParams(p), absl::StatusCode::kInvalidArgument,
              "DeviceRoutingPlanParams.offsets: null");
  p = GoodPlan(ws);
  p.num_tokens = int64_t{1} << 40;
  ExpectError(CheckDeviceRoutingPlanParams(p), absl::StatusCode::kInvalidArgument,
              "DeviceRoutingPlanParams.num_tokens: expected 0 to 2^38 / top_k, got 1099511627776");
}

TEST(PermuteParamsTest, VectorAccessesNeedAlignedRowsOfEightElements) {
  alignas(16) static float rows[64];
  PermuteRowsParams p{.src = rows, .dst = rows, .num_tokens = 1, .num_rows = 1, .d_model = 16};
  EXPECT_TRUE(PermuteUsesVectors(p));
  p.d_model = 12;  // 48-byte F32 rows, 24-byte BF16 rows: not every row start is aligned
  EXPECT_FALSE(PermuteUsesVectors(p));
  p.d_model = 16;
  p.dst = rows + 1;
  EXPECT_FALSE(PermuteUsesVectors(p));
  UnpermuteReduceParams u{.rows = rows, .out = rows, .d_model = 8};
  EXPECT_TRUE(UnpermuteUsesVectors(u));
  u.shared = rows + 2;
  EXPECT_FALSE(UnpermuteUsesVectors(u));
}

TEST(PermuteParamsTest, EachBadFieldIsNamed) {
  PermuteRowsParams p{.num_tokens = 2, .num_rows = 4, .d_model = 0};
  ExpectError(CheckPermuteRowsParams(p), absl::StatusCode::kInvalidArgument,
              "PermuteRowsParams.d_model: expected >= 1, got 0");
  p.d_model = 8;
  ExpectError(CheckPermuteRowsParams(p), absl::StatusCode::kInvalidArgument,
              "PermuteRowsParams.dst: null");
  UnpermuteReduceParams u{.num_tokens = 2, .num_rows = 4, .d_model = 8, .top_k = 0};
  ExpectError(CheckUnpermuteReduceParams(u), absl::StatusCode::kInvalidArgument,
              "UnpermuteReduceParams.top_k: expected >= 1, got 0");
  u.top_k = 2;
  ExpectError(CheckUnpermuteReduceParams(u), absl::StatusCode::kInvalidArgument,
              "UnpermuteReduceParams.out: null");
  EXPECT_EQ(UnpermuteReduce(u, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ActivationParamsTest, EachBadFieldIsNamed) {
  ExpectError(CheckActivationParams({.num_rows = 3, .width = 0}),
              absl::StatusCode::kInvalidArgument, "ActivationParams.width: expected >= 1, got 0");
  ExpectError(CheckActivationParams({.num_rows = 3, .width = 4}),
              absl::StatusCode::kInvalidArgument, "ActivationParams.up: null");
  ExpectError(SigmoidInPlace(nullptr, -2, nullptr), absl::StatusCode::kInvalidArgument,
              "SigmoidInPlace: n must be >= 0, got -2");
}

TEST(RouterGemmParamsTest, EachBadFieldIsNamed) {
  ExpectError(CheckRouterGemmParams({.num_tokens = 1, .d_model = 0, .num_experts = 4}),
              absl::StatusCode::kInvalidArgument, "RouterGemmParams.d_model: expected >= 1, got 0");
  ExpectError(CheckRouterGemmParams({.num_tokens = 1, .d_model = 8, .num_experts = 4}),
              absl::StatusCode::kInvalidArgument, "RouterGemmParams.hidden: null");
  EXPECT_TRUE(CheckRouterGemmParams({.num_tokens = 0, .d_model = 8, .num_experts = 4}).ok());
}

TEST(CublasGroupedGemmTest, ParamsChecksNameTheField) {
  static char dummy[16];
  GroupedGemmParams p;
  p.a = p.b = p.c = dummy;
  p.offsets = reinterpret_cast<const int64_t*>(dummy);
  p.num_experts = 4;
  p.n = 8;
  p.k = 16;
  p.max_rows = 10;
  EXPECT_TRUE(CheckCublasGroupedGemmParams(p).ok());
  p.epilogue = GemmEpilogue::kSwiGLU;
  ExpectError(CheckCublasGroupedGemmParams(p), absl::StatusCode::kInvalidArgument,
              "GroupedGemmParams.b_up: null (required by the kSwiGLU epilogue)");
  p.epilogue = GemmEpilogue::kStore;
  p.n = 0;
  ExpectError(CheckCublasGroupedGemmParams(p), absl::StatusCode::kInvalidArgument,
              "GroupedGemmParams.n: expected 1 to 2^31-1, got 0");
  p.n = 8;
  p.dtype = GemmDtype::kFP8E4M3;
  EXPECT_EQ(CheckCublasGroupedGemmParams(p).code(), absl::StatusCode::kUnimplemented);
}

TEST(CublasGroupedGemmTest, ProblemsSkipEmptyExperts) {
  absl::StatusOr<std::vector<GroupedGemmProblem>> problems =
      GroupedGemmProblems({0, 0, 3, 3, 7}, 7);
  ASSERT_TRUE(problems.ok()) << problems.status();
  ASSERT_EQ(problems->size(), 2u);
  EXPECT_EQ((*problems)[0].expert, 1);
  EXPECT_EQ((*problems)[0].first_row, 0);
  EXPECT_EQ((*problems)[0].rows, 3);
  EXPECT_EQ((*problems)[1].expert, 3);
  EXPECT_EQ((*problems)[1].first_row, 3);
  EXPECT_EQ((*problems)[1].rows, 4);
  ExpectError(GroupedGemmProblems({0, 4, 2}, 7).status(), absl::StatusCode::kInvalidArgument,
              "GroupedGemmParams.offsets: expert 1 spans [4, 2), outside [0, max_rows = 7] or "
              "decreasing");
  ExpectError(GroupedGemmProblems({0, 4, 9}, 7).status(), absl::StatusCode::kInvalidArgument,
              "GroupedGemmParams.offsets: expert 1 spans [4, 9), outside [0, max_rows = 7] or "
              "decreasing");
  EXPECT_EQ(GroupedGemmProblems({1, 4}, 7).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RandomFillTest, ValuesAreInRangeAndDependOnSeedAndIndex) {
  double sum = 0;
  for (int64_t i = 0; i < 10000; ++i) {
    const float v = UniformAt(7, i, 0.5f);
    EXPECT_GE(v, -0.5f);
    EXPECT_LT(v, 0.5f);
    sum += v;
  }
  EXPECT_NEAR(sum / 10000, 0.0, 0.01);
  EXPECT_EQ(UniformAt(7, 3, 1.0f), UniformAt(7, 3, 1.0f));
  EXPECT_NE(UniformAt(7, 3, 1.0f), UniformAt(8, 3, 1.0f));
  EXPECT_NE(UniformAt(7, 3, 1.0f), UniformAt(7, 4, 1.0f));
  EXPECT_EQ(FillUniform(nullptr, RowDtype::kF32, 4, 1, INFINITY, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe::kernels::cuda

namespace moe::cuda {
namespace {

TEST(CudaLayerOptionsTest, GroupedGemmNamesRoundTrip) {
  for (GroupedGemmImpl impl :
       {GroupedGemmImpl::kReference, GroupedGemmImpl::kCublas, GroupedGemmImpl::kSm90}) {
    absl::StatusOr<GroupedGemmImpl> parsed = ParseGroupedGemmImpl(GroupedGemmImplName(impl));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, impl);
  }
  EXPECT_TRUE(GroupedGemmImplBuilt(GroupedGemmImpl::kCublas));
  EXPECT_EQ(std::string(ParseGroupedGemmImpl("cutlass").status().message()),
            "grouped GEMM 'cutlass': expected reference, cublas or sm90");
}

TEST(RouterSpecTest, FollowsEachFamilysConfig) {
  using kernels::cuda::RouterGroupScore;
  using kernels::cuda::RouterScore;
  const kernels::cuda::RouterSpec v3 =
      RouterSpecOf(moe::testing::FamilyConfig("deepseek_v3", 8, 2));
  EXPECT_EQ(v3.score, RouterScore::kSigmoid);
  EXPECT_TRUE(v3.renormalize);
  EXPECT_EQ(v3.num_groups, 4);
  EXPECT_EQ(v3.topk_groups, 2);
  EXPECT_EQ(v3.group_score, RouterGroupScore::kTop2Sum);
  EXPECT_FLOAT_EQ(v3.routed_scaling_factor, 2.5f);
  const kernels::cuda::RouterSpec v2 =
      RouterSpecOf(moe::testing::FamilyConfig("deepseek_v2", 8, 2));
  EXPECT_EQ(v2.score, RouterScore::kSoftmax);
  EXPECT_EQ(v2.group_score, RouterGroupScore::kMax);
  EXPECT_FLOAT_EQ(v2.routed_scaling_factor, 16.0f);
  const kernels::cuda::RouterSpec olmoe = RouterSpecOf(moe::testing::FamilyConfig("olmoe", 8, 2));
  EXPECT_FALSE(olmoe.renormalize);
  EXPECT_FALSE(olmoe.topk_then_score);
  EXPECT_FLOAT_EQ(olmoe.routed_scaling_factor, 1.0f);
  EXPECT_TRUE(RouterSpecOf(moe::testing::FamilyConfig("geglu_topk_first", 8, 2)).topk_then_score);
}

TEST(CudaMoeLayerTest, CreateWithoutAGpuSaysSo) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is visible (the GPU tests cover it)";
  const config::LayerConfig c = moe::testing::FamilyConfig("mixtral", 6, 2);
  absl::StatusOr<std::unique_ptr<CudaMoeLayer>> layer =
      CudaMoeLayer::Create(c, RandomLayerWeights(c, 1));
  EXPECT_EQ(layer.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(std::string(layer.status().message()), "no CUDA device visible");
}

TEST(CudaMoeLayerTest, BadConfigIsRejectedBeforeTheDevice) {
  config::LayerConfig c = moe::testing::FamilyConfig("mixtral", 6, 2);
  c.set_top_k(7);
  absl::StatusOr<std::unique_ptr<CudaMoeLayer>> layer =
      CudaMoeLayer::Create(c, RandomLayerWeights(moe::testing::FamilyConfig("mixtral", 6, 2), 1));
  EXPECT_EQ(layer.status().code(), absl::StatusCode::kInvalidArgument);
  c = moe::testing::FamilyConfig("olmoe", 600, 2);
  layer = CudaMoeLayer::CreateRandom(c, 1);
  EXPECT_EQ(layer.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(std::string(layer.status().message()),
            "the CUDA router handles num_experts up to 512, the config has 600");
}

TEST(CudaMoeLayerTest, Fp8ExpertsNeedADeviceOffsetGemm) {
  const config::LayerConfig c = moe::testing::FamilyConfig("deepseek_v3", 8, 2);
  absl::StatusOr<std::unique_ptr<CudaMoeLayer>> layer = CudaMoeLayer::Create(
      c, RandomLayerWeights(c, 1), {.gemm = GroupedGemmImpl::kCublas, .fp8_experts = true});
  EXPECT_EQ(layer.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(std::string(layer.status().message()),
            "FP8 experts need the reference or sm90 grouped GEMM and the FP8 quantize kernel (the "
            "cublas baseline has no 128x128 block-scaled GEMM)");
}

}  // namespace
}  // namespace moe::cuda

#else  // !MOE_HAVE_CUDA

TEST(CudaHostTest, SkippedWithoutTheCudaToolkit) {
  GTEST_SKIP() << "built without CUDA (no toolkit found, or -DMOE_ENABLE_CUDA=OFF)";
}

#endif  // MOE_HAVE_CUDA
