// CUDA kernels against the CPU path (kernels/cpu): permute, combine, activations, the router
// GEMM and the cuBLAS grouped GEMM (routing: cuda_routing_test.cc).
// Outputs are poisoned before each run and their guard regions checked after; integer
// metadata compared exactly; floats by NMSE (F32 1e-7, BF16 5e-4); NaN anywhere fails.
// Labelled `gpu`; every test skips with "no CUDA device visible" when there is none.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

#ifdef MOE_HAVE_CUDA

#include <cublas_v2.h>

#include "gating/routing_plan.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/permute.h"
#include "kernels/cuda/activation.h"
#include "kernels/cuda/grouped_gemm_cublas.h"
#include "kernels/cuda/permute.h"
#include "kernels/cuda/router_gemm.h"
#include "moe/base/dtype.h"
#include "tests/cuda/gpu_test_util.h"

namespace moe::kernels::cuda {
namespace {

using ::moe::cuda::CudaDeviceCount;
using ::moe::cuda::testing::BitwiseEqual;
using ::moe::cuda::testing::FromBf16;
using ::moe::cuda::testing::GuardedBuffer;
using ::moe::cuda::testing::kNmseBf16;
using ::moe::cuda::testing::kNmseF32;
using ::moe::cuda::testing::Nmse;
using ::moe::cuda::testing::Random;
using ::moe::cuda::testing::RandomIds;
using ::moe::cuda::testing::ToBf16;

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device visible";
  }
};

// ---- Permute and combine ----

TEST_F(CudaOpsTest, PermuteGathersAndCastsLikeTheCpu) {
  for (int64_t d : {13, 64}) {  // scalar and vector paths
    const int64_t T = 29;
    const int32_t k = 3, E = 7;
    const std::vector<int32_t> ids = RandomIds(T, k, E, 13);
    absl::StatusOr<gating::RoutingPlan> plan = gating::BuildRoutingPlan(ids.data(), T, k, E, 10);
    ASSERT_TRUE(plan.ok());
    const std::vector<float> src = Random(static_cast<size_t>(T * d), 14);
    std::vector<float> want(static_cast<size_t>(plan->num_rows() * d));
    kernels::PermuteRows(
        {src.data(), plan->slot_of_row.data(), want.data(), plan->num_rows(), d, k});
    // Device slot_of_row: the plan's rows, then -1 rows (zero-filled) up to T * k.
    std::vector<int64_t> slot_of_row = plan->slot_of_row;
    slot_of_row.resize(static_cast<size_t>(T * k), -1);
    want.resize(static_cast<size_t>(T * k * d), 0.0f);
    GuardedBuffer<float> d_src(src.size()), dst_f32(want.size());
    GuardedBuffer<int64_t> d_slots(slot_of_row.size());
    GuardedBuffer<uint16_t> dst_bf16(want.size());
    d_src.Upload(src);
    d_slots.Upload(slot_of_row);
    PermuteRowsParams p{.src = d_src.get(),
                        .src_dtype = RowDtype::kF32,
                        .slot_of_row = d_slots.get(),
                        .dst = dst_f32.get(),
                        .dst_dtype = RowDtype::kF32,
                        .num_tokens = T,
                        .num_rows = T * k,
                        .d_model = d,
                        .top_k = k};
    EXPECT_EQ(PermuteUsesVectors(p), d == 64);
    ASSERT_TRUE(PermuteRows(p, nullptr).ok());
    EXPECT_TRUE(BitwiseEqual(dst_f32.ToHost(), want)) << "d=" << d;
    p.dst = dst_bf16.get();
    p.dst_dtype = RowDtype::kBF16;
    ASSERT_TRUE(PermuteRows(p, nullptr).ok());
    EXPECT_EQ(dst_bf16.ToHost(), ToBf16(want)) << "d=" << d;
    EXPECT_TRUE(dst_f32.GuardsIntact() && dst_bf16.GuardsIntact());
    // The identity gather is a plain cast.
    p.slot_of_row = nullptr;
    p.num_rows = T;
    dst_bf16.Poison();
    ASSERT_TRUE(PermuteRows(p, nullptr).ok());
    std::vector<uint16_t> cast = dst_bf16.ToHost();
    cast.resize(src.size());
    EXPECT_EQ(cast, ToBf16(src));
  }
}

TEST_F(CudaOpsTest, UnpermuteReduceEqualsTheCpuCombineBitwise) {
  for (int64_t d : {13, 64}) {
    for (bool bf16_rows : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "d=" << d << " bf16_rows=" << bf16_rows);
      const int64_t T = 31;
      const int32_t k = 4, E = 9;
      const std::vector<int32_t> ids = RandomIds(T, k, E, 15);
      absl::StatusOr<gating::RoutingPlan> plan = gating::BuildRoutingPlan(ids.data(), T, k, E, 12);
      ASSERT_TRUE(plan.ok());
      ASSERT_GT(plan->dropped_slots, 0);
      const int64_t R = T * k;
      std::vector<float> rows = Random(static_cast<size_t>(R * d), 16);
      std::vector<uint16_t> rows_bf16 = ToBf16(rows);
      if (bf16_rows) rows = FromBf16(rows_bf16);
      const std::vector<float> weights = Random(static_cast<size_t>(T * k), 17, 0, 1);
      const std::vector<float> shared = Random(static_cast<size_t>(T * d), 18);
      const std::vector<float> scale = Random(static_cast<size_t>(T), 19, 0, 1);
      const int64_t valid = T - 2;
      std::vector<float> want(static_cast<size_t>(T * d), 0.0f);
      kernels::UnpermuteReduce({rows.data(), plan->row_of_slot.data(), weights.data(),
                                shared.data(), scale.data(), want.data(), T, d, k},
                               0, valid);
      GuardedBuffer<float> d_rows(rows.size()), d_weights(weights.size()), d_shared(shared.size()),
          d_scale(scale.size()), out(want.size());
      GuardedBuffer<uint16_t> d_rows_bf16(rows.size());
      GuardedBuffer<int64_t> d_row_of_slot(plan->row_of_slot.size()), d_valid(1);
      d_rows.Upload(rows);
      d_rows_bf16.Upload(rows_bf16);
      d_weights.Upload(weights);
      d_shared.Upload(shared);
      d_scale.Upload(scale);
      d_row_of_slot.Upload(plan->row_of_slot);
      d_valid.Upload({valid});
      UnpermuteReduceParams p{
          .rows = bf16_rows ? static_cast<const void*>(d_rows_bf16.get()) : d_rows.get(),
          .rows_dtype = bf16_rows ? RowDtype::kBF16 : RowDtype::kF32,
          .row_of_slot = d_row_of_slot.get(),
          .weights = d_weights.get(),
          .shared = d_shared.get(),
          .shared_dtype = RowDtype::kF32,
          .shared_scale = d_scale.get(),
          .num_valid_tokens = d_valid.get(),
          .out = out.get(),
          .num_tokens = T,
          .num_rows = R,
          .d_model = d,
          .top_k = k};
      ASSERT_TRUE(UnpermuteReduce(p, nullptr).ok());
      EXPECT_TRUE(BitwiseEqual(out.ToHost(), want));
      EXPECT_TRUE(out.GuardsIntact());
    }
  }
}

// ---- Activations ----

TEST_F(CudaOpsTest, ActivationsMatchTheCpuFormulas) {
  const int64_t rows = 37, width = 24, row_count = 30;
  const std::vector<float> gate = Random(static_cast<size_t>(rows * width), 20, -6, 6);
  const std::vector<float> up = Random(gate.size(), 21, -2, 2);
  struct Case {
    ActivationOp op;
    kernels::ActivationKind cpu;
    bool gated;
  };
  for (const Case& c : {Case{ActivationOp::kSilu, kernels::ActivationKind::kSilu, true},
                        Case{ActivationOp::kGelu, kernels::ActivationKind::kGelu, true},
                        Case{ActivationOp::kGelu, kernels::ActivationKind::kGelu, false},
                        Case{ActivationOp::kRelu, kernels::ActivationKind::kRelu, false}}) {
    std::vector<float> want = c.gated ? gate : up;
    if (c.gated) {
      kernels::ApplyGatedActivation(c.cpu, want.data(), up.data(), row_count * width);
    } else {
      kernels::ApplyActivation(c.cpu, want.data(), row_count * width);
    }
    GuardedBuffer<float> d_gate(gate.size()), d_up(up.size()), out(gate.size());
    GuardedBuffer<int64_t> d_count(1);
    d_gate.Upload(gate);
    d_up.Upload(up);
    d_count.Upload({row_count});
    ASSERT_TRUE(Activation({.gate = c.gated ? d_gate.get() : nullptr,
                            .up = d_up.get(),
                            .out = out.get(),
                            .out_dtype = RowDtype::kF32,
                            .row_count = d_count.get(),
                            .num_rows = rows,
                            .width = width,
                            .op = c.op},
                           nullptr)
                    .ok());
    std::vector<float> got = out.ToHost();
    for (int64_t i = row_count * width; i < rows * width; ++i) {
      ASSERT_TRUE(std::isnan(got[i])) << "row past row_count written at " << i;
    }
    got.resize(static_cast<size_t>(row_count * width));
    want.resize(got.size());
    EXPECT_LE(Nmse(got, want), kNmseF32) << static_cast<int>(c.op) << " gated=" << c.gated;
    EXPECT_TRUE(out.GuardsIntact());
  }
}

// ---- Router GEMM and grouped GEMM (cuBLAS) ----

class CublasTest : public CudaOpsTest {
 protected:
  void SetUp() override {
    CudaOpsTest::SetUp();
    if (IsSkipped()) return;
    ASSERT_EQ(cublasCreate(&handle_), CUBLAS_STATUS_SUCCESS);
  }
  void TearDown() override {
    if (handle_ != nullptr) cublasDestroy(handle_);
  }
  cublasHandle_t handle_ = nullptr;
};

TEST_F(CublasTest, RouterGemmMatchesCpuMatmul) {
  const int64_t T = 33, d = 72, E = 12;
  for (bool bf16 : {false, true}) {
    std::vector<float> hidden = Random(static_cast<size_t>(T * d), 22);
    std::vector<float> weight = Random(static_cast<size_t>(E * d), 23);
    if (bf16) {
      hidden = FromBf16(ToBf16(hidden));
      weight = FromBf16(ToBf16(weight));
    }
    std::vector<float> want(static_cast<size_t>(T * E));
    kernels::MatmulNT({hidden.data(), d, weight.data(), d, want.data(), E, T, E, d});
    GuardedBuffer<float> h32(hidden.size()), w32(weight.size()), logits(want.size());
    GuardedBuffer<uint16_t> h16(hidden.size()), w16(weight.size());
    h32.Upload(hidden);
    w32.Upload(weight);
    h16.Upload(ToBf16(hidden));
    w16.Upload(ToBf16(weight));
    ASSERT_TRUE(RouterGemm(handle_,
                           {.hidden = bf16 ? static_cast<const void*>(h16.get()) : h32.get(),
                            .router_weight = bf16 ? static_cast<const void*>(w16.get()) : w32.get(),
                            .dtype = bf16 ? RowDtype::kBF16 : RowDtype::kF32,
                            .logits = logits.get(),
                            .num_tokens = T,
                            .d_model = d,
                            .num_experts = E},
                           nullptr)
                    .ok());
    EXPECT_LE(Nmse(logits.ToHost(), want), kNmseF32) << "bf16=" << bf16;
    EXPECT_TRUE(logits.GuardsIntact());
  }
}

TEST_F(CublasTest, GroupedGemmMatchesPerExpertProducts) {
  const int64_t n = 24, k = 40;
  const std::vector<int64_t> offsets = {0, 3, 3, 20, 21, 30};  // expert 1 empty, 2 large
  const int64_t E = 5, max_rows = 34, rows = offsets.back();
  const std::vector<uint16_t> a = ToBf16(Random(static_cast<size_t>(max_rows * k), 24));
  const std::vector<uint16_t> b = ToBf16(Random(static_cast<size_t>(E * n * k), 25));
  const std::vector<uint16_t> b_up = ToBf16(Random(static_cast<size_t>(E * n * k), 26));
  // References in double from the BF16 inputs.
  std::vector<double> gate(static_cast<size_t>(rows * n)), up(gate.size()), swiglu(gate.size());
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        double g = 0, u = 0;
        for (int64_t p = 0; p < k; ++p) {
          const double x = Bf16ToF32(a[r * k + p]);
          g += x * Bf16ToF32(b[(e * n + j) * k + p]);
          u += x * Bf16ToF32(b_up[(e * n + j) * k + p]);
        }
        gate[r * n + j] = g;
        up[r * n + j] = u;
        swiglu[r * n + j] = g / (1 + std::exp(-g)) * u;
      }
    }
  }
  GuardedBuffer<uint16_t> d_a(a.size()), d_b(b.size()), d_b_up(b_up.size());
  GuardedBuffer<int64_t> d_offsets(offsets.size());
  d_a.Upload(a);
  d_b.Upload(b);
  d_b_up.Upload(b_up);
  d_offsets.Upload(offsets);
  absl::StatusOr<std::unique_ptr<CublasGroupedGemm>> gemm = CublasGroupedGemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  for (GemmEpilogue epilogue : {GemmEpilogue::kStore, GemmEpilogue::kSwiGLU}) {
    for (GemmOutDtype out_dtype : {GemmOutDtype::kF32, GemmOutDtype::kBF16}) {
      const bool f32 = out_dtype == GemmOutDtype::kF32;
      SCOPED_TRACE(::testing::Message()
                   << "swiglu=" << (epilogue == GemmEpilogue::kSwiGLU) << " f32=" << f32);
      GuardedBuffer<float> c32(static_cast<size_t>(max_rows * n));
      GuardedBuffer<uint16_t> c16(static_cast<size_t>(max_rows * n));
      GroupedGemmParams p;
      p.a = d_a.get();
      p.b = d_b.get();
      p.b_up = d_b_up.get();
      p.offsets = d_offsets.get();
      p.c = f32 ? static_cast<void*>(c32.get()) : c16.get();
      p.num_experts = E;
      p.n = n;
      p.k = k;
      p.max_rows = max_rows;
      p.epilogue = epilogue;
      p.out_dtype = out_dtype;
      const absl::Status ran = (*gemm)->Run(p, nullptr);
      ASSERT_TRUE(ran.ok()) << ran;
      std::vector<float> got = f32 ? c32.ToHost() : FromBf16(c16.ToHost());
      for (size_t i = static_cast<size_t>(rows * n); i < got.size(); ++i) {
        ASSERT_TRUE(std::isnan(got[i])) << "row past offsets[E] written at " << i;
      }
      got.resize(static_cast<size_t>(rows * n));
      const std::vector<double>& want = epilogue == GemmEpilogue::kSwiGLU ? swiglu : gate;
      EXPECT_LE(Nmse(got, want), f32 ? kNmseF32 : kNmseBf16);
      EXPECT_TRUE(c32.GuardsIntact() && c16.GuardsIntact());
    }
  }
}

}  // namespace
}  // namespace moe::kernels::cuda

#else  // !MOE_HAVE_CUDA

TEST(CudaOpsTest, SkippedWithoutTheCudaToolkit) {
  GTEST_SKIP() << "built without CUDA (no toolkit found, or -DMOE_ENABLE_CUDA=OFF)";
}

#endif  // MOE_HAVE_CUDA
