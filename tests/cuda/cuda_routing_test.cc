// The GPU routing kernels against the CPU router and plan (gating/): fused scoring and
// selection for every family, ties, bad and padding rows; the device routing plan with drops,
// valid-token counts and bad ids. Outputs poisoned, guard regions checked, ids and plan metadata
// compared exactly, weights by NMSE (F32 1e-7). Labelled `gpu`; every test skips with "no CUDA
// device visible" when there is none.
#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

#ifdef MOE_HAVE_CUDA

#include "configs/layer_config.h"
#include "gating/router.h"
#include "gating/routing_plan.h"
#include "kernels/cuda/router_select.h"
#include "kernels/cuda/routing_plan.h"
#include "tests/cuda/gpu_test_util.h"
#include "tests/support/test_inputs.h"

namespace moe::kernels::cuda {
namespace {

using ::moe::cuda::CudaDeviceCount;
using ::moe::cuda::testing::GuardedBuffer;
using ::moe::cuda::testing::kNmseF32;
using ::moe::cuda::testing::Nmse;
using ::moe::cuda::testing::Random;
using ::moe::cuda::testing::RandomIds;

// Values on a grid of `step` in [lo, hi]: distinct values differ by far more than the CPU and GPU
// scores' rounding differences (expf, summation order), and equal values tie exactly on both,
// so the two routers must pick the same ids.
std::vector<float> OnGrid(size_t n, uint64_t seed, float lo, float hi, float step) {
  std::vector<float> v = Random(n, seed, lo, hi);
  for (float& x : v) x = std::round(x / step) * step;
  return v;
}

class CudaRoutingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device visible";
  }
};

// ---- Router scoring and selection ----

struct CpuRoute {
  std::vector<int32_t> ids;
  std::vector<float> weights;
  absl::Status status;
};

// gating::Route on given logits: with d_model = T, hidden = I_T and router_weight = logits^T,
// the CPU router's GEMM reproduces every logit exactly (one product by 1, the rest add 0).
CpuRoute RouteOnCpu(config::LayerConfig c, const std::vector<float>& logits,
                    const std::vector<float>& bias, int64_t T) {
  const int32_t E = c.num_experts();
  c.set_d_model(T);
  std::vector<float> hidden(static_cast<size_t>(T * T), 0.0f);
  for (int64_t t = 0; t < T; ++t) hidden[t * T + t] = 1.0f;
  std::vector<float> weight(static_cast<size_t>(E * T));
  for (int64_t t = 0; t < T; ++t) {
    for (int32_t e = 0; e < E; ++e) weight[e * T + t] = logits[t * E + e];
  }
  CpuRoute r;
  r.ids.resize(static_cast<size_t>(T * c.top_k()));
  r.weights.resize(r.ids.size());
  std::vector<float> scratch(static_cast<size_t>(T * E));
  r.status =
      gating::Route(c, {hidden.data(), weight.data(), bias.empty() ? nullptr : bias.data(), T},
                    {r.ids.data(), r.weights.data(), scratch.data()});
  return r;
}

struct GpuRoute {
  std::vector<int32_t> ids;
  std::vector<float> weights;
  std::vector<int32_t> status;
};

GpuRoute RouteOnGpu(const config::LayerConfig& c, const std::vector<float>& logits,
                    const std::vector<float>& bias, int64_t T, int64_t valid = -1) {
  const int32_t E = c.num_experts(), k = c.top_k();
  GuardedBuffer<float> d_logits(logits.size()), d_bias(std::max<size_t>(bias.size(), 1));
  GuardedBuffer<int32_t> ids(static_cast<size_t>(T * k)), status(static_cast<size_t>(T));
  GuardedBuffer<float> weights(static_cast<size_t>(T * k));
  GuardedBuffer<int64_t> d_valid(1);
  d_logits.Upload(logits);
  if (!bias.empty()) d_bias.Upload(bias);
  if (valid >= 0) d_valid.Upload({valid});
  RouterSelectParams p;
  p.logits = d_logits.get();
  p.selection_bias = bias.empty() ? nullptr : d_bias.get();
  p.num_valid_tokens = valid >= 0 ? d_valid.get() : nullptr;
  p.topk_ids = ids.get();
  p.topk_weights = weights.get();
  p.row_status = status.get();
  p.num_tokens = T;
  p.num_experts = E;
  p.top_k = k;
  p.spec = ::moe::cuda::RouterSpecOf(c);
  const absl::Status launched = RouterSelect(p, nullptr);
  EXPECT_TRUE(launched.ok()) << launched;
  EXPECT_TRUE(ids.GuardsIntact() && weights.GuardsIntact() && status.GuardsIntact());
  return {ids.ToHost(), weights.ToHost(), status.ToHost()};
}

// Ids in range and distinct per token.
void ExpectIdsWellFormed(const std::vector<int32_t>& ids, int32_t k, int32_t E) {
  for (size_t t = 0; t * k < ids.size(); ++t) {
    for (int32_t j = 0; j < k; ++j) {
      const int32_t e = ids[t * k + j];
      ASSERT_GE(e, 0);
      ASSERT_LT(e, E);
      for (int32_t i = 0; i < j; ++i) ASSERT_NE(ids[t * k + i], e) << "token " << t;
    }
  }
}

TEST_F(CudaRoutingTest, RouterSelectMatchesCpuRouterForEveryFamily) {
  const char* families[] = {"mixtral",     "qwen2_moe", "qwen3_moe",        "olmoe", "deepseek_v2",
                            "deepseek_v3", "switch",    "geglu_topk_first", "gelu"};
  int checked = 0;
  for (const char* family : families) {
    for (int32_t E : {5, 6, 12, 64, 160, 256, 384, 512}) {
      for (int32_t k : {1, 2, 8, E}) {
        if (k > E) continue;
        const config::LayerConfig c = moe::testing::FamilyConfig(family, E, k);
        if (!config::ValidateLayerConfig(c, "test").ok()) continue;
        for (int64_t T : {1, 33}) {
          SCOPED_TRACE(::testing::Message() << family << " E=" << E << " k=" << k << " T=" << T);
          const std::vector<float> logits =
              OnGrid(static_cast<size_t>(T * E), E * 31 + k, -4, 4, 1.0f / 16);
          std::vector<float> bias;
          if (c.router().selection_bias()) {
            bias = OnGrid(static_cast<size_t>(E), 5, -0.5f, 0.5f, 0.25f);
          }
          const CpuRoute cpu = RouteOnCpu(c, logits, bias, T);
          ASSERT_TRUE(cpu.status.ok()) << cpu.status;
          const GpuRoute gpu = RouteOnGpu(c, logits, bias, T);
          EXPECT_EQ(gpu.ids, cpu.ids);
          EXPECT_LE(Nmse(gpu.weights, cpu.weights), kNmseF32);
          EXPECT_EQ(gpu.status, std::vector<int32_t>(static_cast<size_t>(T), kRouterRowOk));
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 100);
}

TEST_F(CudaRoutingTest, RouterSelectTiesGoToTheLowerExpertIndex) {
  // Integer logits from {0, 1, 2}: many exact ties, in experts and in groups.
  for (const char* family : {"mixtral", "olmoe", "deepseek_v2", "geglu_topk_first"}) {
    const config::LayerConfig c = moe::testing::FamilyConfig(family, 12, 3);
    const int64_t T = 17;
    std::vector<float> logits = Random(static_cast<size_t>(T * 12), 9, 0, 3);
    for (float& x : logits) x = std::floor(x);
    const CpuRoute cpu = RouteOnCpu(c, logits, {}, T);
    ASSERT_TRUE(cpu.status.ok());
    const GpuRoute gpu = RouteOnGpu(c, logits, {}, T);
    EXPECT_EQ(gpu.ids, cpu.ids) << family;
    EXPECT_LE(Nmse(gpu.weights, cpu.weights), kNmseF32) << family;
  }
}

TEST_F(CudaRoutingTest, RouterSelectFlagsNonFiniteRowsAndMasksPadding) {
  const config::LayerConfig c = moe::testing::FamilyConfig("deepseek_v3", 12, 4);
  const int64_t T = 9;
  std::vector<float> logits = OnGrid(static_cast<size_t>(T * 12), 3, -4, 4, 1.0f / 16);
  logits[2 * 12 + 5] = NAN;
  logits[4 * 12 + 0] = INFINITY;
  const std::vector<float> bias = OnGrid(12, 4, -0.5f, 0.5f, 0.25f);
  const CpuRoute cpu = RouteOnCpu(c, logits, bias, T);  // errors, but routes the good rows
  EXPECT_FALSE(cpu.status.ok());
  const GpuRoute gpu = RouteOnGpu(c, logits, bias, T, /*valid=*/7);
  ExpectIdsWellFormed(gpu.ids, 4, 12);
  for (int64_t t = 0; t < T; ++t) {
    const bool bad = t == 2 || t == 4, padding = t >= 7;
    EXPECT_EQ(gpu.status[t], bad ? kRouterRowBadLogits : kRouterRowOk) << t;
    for (int32_t j = 0; j < 4; ++j) {
      if (bad || padding) {
        EXPECT_EQ(gpu.ids[t * 4 + j], j);
        EXPECT_EQ(gpu.weights[t * 4 + j], 0.0f);
      } else {
        EXPECT_EQ(gpu.ids[t * 4 + j], cpu.ids[t * 4 + j]);
        EXPECT_NEAR(gpu.weights[t * 4 + j], cpu.weights[t * 4 + j], 1e-6);
      }
    }
  }
}

// ---- Routing plan ----

struct DevicePlan {
  std::vector<int64_t> demand, counts, offsets, slot_of_row, row_of_slot, dropped;
  std::vector<unsigned long long> first_bad;
};

DevicePlan PlanOnGpu(const std::vector<int32_t>& ids, int64_t T, int32_t k, int32_t E, float factor,
                     int64_t valid = -1) {
  const size_t slots = static_cast<size_t>(T * k), experts = static_cast<size_t>(E);
  GuardedBuffer<int32_t> d_ids(std::max<size_t>(slots, 1));
  GuardedBuffer<int64_t> demand(experts), counts(experts), offsets(experts + 1),
      slot_of_row(std::max<size_t>(slots, 1)), row_of_slot(std::max<size_t>(slots, 1)), dropped(1),
      d_valid(1);
  GuardedBuffer<unsigned long long> first_bad(1);
  GuardedBuffer<char> workspace(std::max<size_t>(DeviceRoutingPlanWorkspaceBytes(T, k, E), 1));
  d_ids.Upload(ids);
  if (valid >= 0) d_valid.Upload({valid});
  DeviceRoutingPlanParams p;
  p.topk_ids = d_ids.get();
  p.num_valid_tokens = valid >= 0 ? d_valid.get() : nullptr;
  p.num_tokens = T;
  p.top_k = k;
  p.num_experts = E;
  p.capacity_factor = factor;
  p.demand = demand.get();
  p.counts = counts.get();
  p.offsets = offsets.get();
  p.slot_of_row = slot_of_row.get();
  p.row_of_slot = row_of_slot.get();
  p.dropped_slots = dropped.get();
  p.first_bad_slot = first_bad.get();
  p.workspace = workspace.get();
  p.workspace_bytes = workspace.count();
  const absl::Status built = BuildDeviceRoutingPlan(p, nullptr);
  EXPECT_TRUE(built.ok()) << built;
  for (const GuardedBuffer<int64_t>* b :
       {&demand, &counts, &offsets, &slot_of_row, &row_of_slot, &dropped}) {
    EXPECT_TRUE(b->GuardsIntact());
  }
  DevicePlan out{demand.ToHost(),      counts.ToHost(),  offsets.ToHost(),  slot_of_row.ToHost(),
                 row_of_slot.ToHost(), dropped.ToHost(), first_bad.ToHost()};
  out.slot_of_row.resize(slots);
  out.row_of_slot.resize(slots);
  return out;
}

void ExpectSamePlan(const std::vector<int32_t>& ids, int64_t T, int32_t k, int32_t E, float factor,
                    int64_t valid = -1) {
  SCOPED_TRACE(::testing::Message() << "T=" << T << " k=" << k << " E=" << E << " factor=" << factor
                                    << " valid=" << valid);
  const int64_t routed = valid >= 0 ? valid : T;
  config::LayerConfig c = moe::testing::FamilyConfig("switch", E, k);
  c.mutable_capacity()->set_factor(factor);
  const int64_t capacity = factor > 0 ? config::ExpertCapacity(c, routed) : -1;
  absl::StatusOr<gating::RoutingPlan> cpu =
      gating::BuildRoutingPlan(ids.data(), routed, k, E, capacity);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  const DevicePlan gpu = PlanOnGpu(ids, T, k, E, factor, valid);
  EXPECT_EQ(gpu.demand, cpu->demand);
  EXPECT_EQ(gpu.counts, cpu->counts);
  EXPECT_EQ(gpu.offsets, cpu->offsets);
  EXPECT_EQ(gpu.dropped[0], cpu->dropped_slots);
  EXPECT_EQ(gpu.first_bad[0], ~0ull);
  std::vector<int64_t> want_slot_of_row = cpu->slot_of_row;
  want_slot_of_row.resize(static_cast<size_t>(T * k), -1);
  std::vector<int64_t> want_row_of_slot = cpu->row_of_slot;
  want_row_of_slot.resize(static_cast<size_t>(T * k), -1);
  EXPECT_EQ(gpu.slot_of_row, want_slot_of_row);
  EXPECT_EQ(gpu.row_of_slot, want_row_of_slot);
}

TEST_F(CudaRoutingTest, RoutingPlanMatchesCpuPlan) {
  ExpectSamePlan(RandomIds(1, 1, 1, 1), 1, 1, 1, 0);
  ExpectSamePlan(RandomIds(33, 2, 6, 2), 33, 2, 6, 0);
  ExpectSamePlan(RandomIds(33, 2, 5, 3), 33, 2, 6, 0);  // expert 5 gets no token
  ExpectSamePlan(RandomIds(33, 2, 6, 4), 33, 2, 6, 1.0f);
  ExpectSamePlan(RandomIds(1000, 8, 256, 5), 1000, 8, 256, 0);  // 32 chunks
  ExpectSamePlan(RandomIds(1000, 8, 256, 6), 1000, 8, 256, 1.25f);
  ExpectSamePlan(RandomIds(257, 3, 3, 7), 257, 3, 5, 0);     // everything on 3 experts
  ExpectSamePlan(RandomIds(300, 1, 1, 8), 300, 1, 7, 0.5f);  // all on one expert, drops
  ExpectSamePlan(RandomIds(99, 6, 6, 9), 99, 6, 6, 0);       // k = E
  ExpectSamePlan(RandomIds(0, 2, 6, 10), 0, 2, 6, 0);        // no tokens
}

TEST_F(CudaRoutingTest, RoutingPlanRoutesOnlyValidTokens) {
  const std::vector<int32_t> ids = RandomIds(100, 4, 12, 11);
  ExpectSamePlan(ids, 100, 4, 12, 0, /*valid=*/37);
  ExpectSamePlan(ids, 100, 4, 12, 1.0f, /*valid=*/37);  // capacity from the valid count
  ExpectSamePlan(ids, 100, 4, 12, 0, /*valid=*/0);
}

TEST_F(CudaRoutingTest, RoutingPlanReportsTheFirstBadSlotAndDropsIt) {
  std::vector<int32_t> ids = RandomIds(40, 3, 8, 12);
  ids[5 * 3 + 2] = ids[5 * 3 + 0];  // token 5 repeats an expert
  ids[20 * 3 + 1] = 8;              // token 20: out of range
  const DevicePlan gpu = PlanOnGpu(ids, 40, 3, 8, 0);
  EXPECT_EQ(gpu.first_bad[0], 5u * 3 + 2);
  EXPECT_EQ(gpu.row_of_slot[5 * 3 + 2], -1);
  EXPECT_EQ(gpu.row_of_slot[20 * 3 + 1], -1);
  EXPECT_EQ(gpu.offsets.back(), 40 * 3 - 2);
}

}  // namespace
}  // namespace moe::kernels::cuda

#else  // !MOE_HAVE_CUDA

TEST(CudaRoutingTest, SkippedWithoutTheCudaToolkit) {
  GTEST_SKIP() << "built without CUDA (no toolkit found, or -DMOE_ENABLE_CUDA=OFF)";
}

#endif  // MOE_HAVE_CUDA
