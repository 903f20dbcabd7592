// CudaMoeLayer against the CPU MoeLayer for every family; the CUDA-graph decode path (replay
// equals eager, padded rows masked); repeated runs bitwise equal; bad rows named as on the CPU.
// Labelled `gpu`; every test skips with "no CUDA device visible" when there is none.
#include <string>
#include <vector>

#include "gtest/gtest.h"

#ifdef MOE_HAVE_CUDA

#include "configs/layer_config.h"
#include "kernels/cuda/fp8_block_scale.h"
#include "moe/cuda/cuda_layer.h"
#include "moe/moe_layer.h"
#include "tests/cuda/gpu_test_util.h"
#include "tests/support/test_inputs.h"

namespace moe::cuda {
namespace {

using testing::BitwiseEqual;
using testing::kNmseBf16;
using testing::kNmseF32;
using testing::Nmse;

std::vector<float> Floats(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.num_elements());
}
std::vector<int32_t> Ints(const Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.num_elements());
}

// Rows [0, n) of a [T, d] F32 tensor.
Tensor FirstRows(const Tensor& t, int64_t n) {
  Tensor out = Tensor::Zeros(t.dtype(), {n, t.dim(1)});
  std::copy(t.data<float>(), t.data<float>() + n * t.dim(1), out.data<float>());
  return out;
}

// A family's test config with widths the sm90 kernel takes (multiples of 16); FamilyConfig's
// own (d_model 40, d_ff 24, shared 56) are the odd shapes.
config::LayerConfig AlignedFamilyConfig(const std::string& family, int32_t E, int32_t k) {
  config::LayerConfig c = moe::testing::FamilyConfig(family, E, k);
  c.set_d_model(64);
  c.set_d_ff(32);
  if (c.shared_experts().d_ff() > 0) c.mutable_shared_experts()->set_d_ff(48);
  return c;
}

// The implementations to test on this machine for `config`: cublas always, the others when
// built and supported by the device and the shapes (Create says kUnimplemented otherwise).
std::vector<GroupedGemmImpl> Impls(const config::LayerConfig& c = AlignedFamilyConfig("mixtral", 4,
                                                                                      2)) {
  std::vector<GroupedGemmImpl> impls;
  for (GroupedGemmImpl impl :
       {GroupedGemmImpl::kCublas, GroupedGemmImpl::kReference, GroupedGemmImpl::kSm90}) {
    if (!GroupedGemmImplBuilt(impl)) continue;
    absl::StatusOr<std::unique_ptr<CudaMoeLayer>> layer =
        CudaMoeLayer::Create(c, RandomLayerWeights(c, 1), {.gemm = impl});
    if (layer.ok()) {
      impls.push_back(impl);
    } else {
      EXPECT_EQ(layer.status().code(), absl::StatusCode::kUnimplemented) << layer.status();
    }
  }
  return impls;
}

// A graph-capturable implementation (reference or sm90), if this build and GPU have one.
bool CapturableImpl(GroupedGemmImpl* impl) {
  for (GroupedGemmImpl i : Impls()) {
    if (i != GroupedGemmImpl::kCublas) {
      *impl = i;
      return true;
    }
  }
  return false;
}

void ExpectMatchesCpu(const LayerOutput& gpu, const LayerOutput& cpu) {
  EXPECT_EQ(Ints(gpu.topk_ids), Ints(cpu.topk_ids));
  EXPECT_LE(Nmse(Floats(gpu.topk_weights), Floats(cpu.topk_weights)), kNmseF32);
  EXPECT_LE(Nmse(Floats(gpu.output), Floats(cpu.output)), kNmseBf16);
  EXPECT_EQ(gpu.expert_load, cpu.expert_load);
  EXPECT_EQ(gpu.dropped_slots, cpu.dropped_slots);
}

class CudaLayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device visible";
  }
};

TEST_F(CudaLayerTest, ForwardMatchesCpuLayerForEveryFamily) {
  const char* families[] = {"mixtral",     "qwen2_moe", "qwen3_moe",        "olmoe", "deepseek_v2",
                            "deepseek_v3", "switch",    "geglu_topk_first", "gelu"};
  // The implementations each shape takes (sm90 needs widths that are multiples of 16).
  const std::vector<GroupedGemmImpl> odd_impls =
      Impls(moe::testing::FamilyConfig("qwen2_moe", 6, 2));
  const std::vector<GroupedGemmImpl> aligned_impls = Impls(AlignedFamilyConfig("qwen2_moe", 6, 2));
  int checked = 0;
  for (const char* family : families) {
    for (auto [E, k] : std::vector<std::pair<int32_t, int32_t>>{{5, 1}, {6, 2}, {12, 4}, {6, 6}}) {
      for (bool aligned : {false, true}) {
        const config::LayerConfig c =
            aligned ? AlignedFamilyConfig(family, E, k) : moe::testing::FamilyConfig(family, E, k);
        if (!config::ValidateLayerConfig(c, "test").ok()) continue;
        absl::StatusOr<MoeLayer> cpu = MoeLayer::Create(c, RandomLayerWeights(c, 7));
        ASSERT_TRUE(cpu.ok()) << cpu.status();
        for (GroupedGemmImpl impl : aligned ? aligned_impls : odd_impls) {
          absl::StatusOr<std::unique_ptr<CudaMoeLayer>> gpu =
              CudaMoeLayer::Create(c, RandomLayerWeights(c, 7), {.gemm = impl});
          ASSERT_TRUE(gpu.ok()) << gpu.status();
          for (int64_t T : {1, 33}) {
            SCOPED_TRACE(::testing::Message()
                         << GroupedGemmImplName(impl) << " " << family << " E=" << E << " k=" << k
                         << " T=" << T << " aligned=" << aligned);
            const Tensor hidden = moe::testing::RandomHidden(T, c.d_model(), 100 + T);
            absl::StatusOr<LayerOutput> want = cpu->Forward(hidden);
            ASSERT_TRUE(want.ok()) << want.status();
            absl::StatusOr<LayerOutput> got = (*gpu)->Forward(hidden);
            ASSERT_TRUE(got.ok()) << got.status();
            ExpectMatchesCpu(*got, *want);
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 80);
}

TEST_F(CudaLayerTest, ZeroTokensGiveEmptyOutputs) {
  const config::LayerConfig c = moe::testing::FamilyConfig("olmoe", 6, 2);
  absl::StatusOr<std::unique_ptr<CudaMoeLayer>> gpu =
      CudaMoeLayer::Create(c, RandomLayerWeights(c, 1));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  absl::StatusOr<LayerOutput> out = (*gpu)->Forward(Tensor::Zeros(DType::kF32, {0, c.d_model()}));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->output.dim(0), 0);
  EXPECT_EQ(out->expert_load, std::vector<int64_t>(6, 0));
}

TEST_F(CudaLayerTest, RepeatedRunsAreBitwiseEqual) {
  for (GroupedGemmImpl impl : Impls()) {
    const config::LayerConfig c = AlignedFamilyConfig("deepseek_v3", 12, 4);
    absl::StatusOr<std::unique_ptr<CudaMoeLayer>> gpu =
        CudaMoeLayer::Create(c, RandomLayerWeights(c, 3), {.gemm = impl});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    const Tensor hidden = moe::testing::RandomHidden(57, c.d_model(), 4);
    absl::StatusOr<LayerOutput> first = (*gpu)->Forward(hidden);
    ASSERT_TRUE(first.ok()) << first.status();
    for (int run = 0; run < 3; ++run) {
      absl::StatusOr<LayerOutput> again = (*gpu)->Forward(hidden);
      ASSERT_TRUE(again.ok());
      EXPECT_TRUE(BitwiseEqual(Floats(again->output), Floats(first->output)))
          << GroupedGemmImplName(impl);
      EXPECT_EQ(Ints(again->topk_ids), Ints(first->topk_ids));
    }
  }
}

TEST_F(CudaLayerTest, BadRowsAreNamedAsOnTheCpu) {
  const config::LayerConfig c = moe::testing::FamilyConfig("mixtral", 6, 2);
  absl::StatusOr<MoeLayer> cpu = MoeLayer::Create(c, RandomLayerWeights(c, 1));
  absl::StatusOr<std::unique_ptr<CudaMoeLayer>> gpu =
      CudaMoeLayer::Create(c, RandomLayerWeights(c, 1));
  ASSERT_TRUE(cpu.ok() && gpu.ok());
  Tensor nan_row = moe::testing::RandomHidden(5, c.d_model(), 2);
  nan_row.data<float>()[3 * c.d_model() + 1] = NAN;
  Tensor huge_row = moe::testing::RandomHidden(5, c.d_model(), 2);
  for (int64_t i = 0; i < c.d_model(); ++i) huge_row.data<float>()[2 * c.d_model() + i] = 3e38f;
  for (const Tensor* hidden : {&nan_row, &huge_row}) {
    const absl::Status want = cpu->Forward(*hidden).status();
    const absl::Status got = (*gpu)->Forward(*hidden).status();
    EXPECT_EQ(got.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(got.message(), want.message());
  }
}

TEST_F(CudaLayerTest, EagerDecodeMasksPaddedRows) {
  for (const char* family : {"deepseek_v3", "switch", "qwen2_moe"}) {
    const config::LayerConfig c = moe::testing::FamilyConfig(family, 12, 2);
    absl::StatusOr<std::unique_ptr<CudaMoeLayer>> gpu =
        CudaMoeLayer::Create(c, RandomLayerWeights(c, 5));
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    ASSERT_TRUE((*gpu)->PrepareDecode(16, /*use_graph=*/false).ok());
    for (int64_t T : {1, 5, 16}) {
      SCOPED_TRACE(::testing::Message() << family << " T=" << T);
      const Tensor hidden = moe::testing::RandomHidden(T, c.d_model(), 40 + T);
      absl::StatusOr<LayerOutput> decoded = (*gpu)->Decode(hidden);
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      absl::StatusOr<LayerOutput> forward = (*gpu)->Forward(hidden);
      ASSERT_TRUE(forward.ok()) << forward.status();
      EXPECT_EQ(Ints(decoded->topk_ids), Ints(forward->topk_ids));
      EXPECT_EQ(decoded->expert_load, forward->expert_load);  // padding routes nowhere
      EXPECT_EQ(decoded->dropped_slots, forward->dropped_slots);
      EXPECT_LE(Nmse(Floats(decoded->output), Floats(forward->output)), kNmseF32);
    }
    EXPECT_EQ((*gpu)->Decode(moe::testing::RandomHidden(17, c.d_model(), 1)).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(CudaLayerTest, GraphDecodeNeedsADeviceOffsetGemm) {
  const config::LayerConfig c = moe::testing::FamilyConfig("mixtral", 6, 2);
  absl::StatusOr<std::unique_ptr<CudaMoeLayer>> gpu =
      CudaMoeLayer::Create(c, RandomLayerWeights(c, 1), {.gemm = GroupedGemmImpl::kCublas});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ((*gpu)->PrepareDecode(8, /*use_graph=*/true).code(), absl::StatusCode::kUnimplemented);
}

TEST_F(CudaLayerTest, GraphReplayEqualsEagerDecode) {
  GroupedGemmImpl impl;
  if (!CapturableImpl(&impl)) {
    GTEST_SKIP() << "needs the reference or sm90 grouped GEMM (built and supported here)";
  }
  for (const char* family : {"deepseek_v3", "mixtral", "qwen2_moe", "switch", "gelu"}) {
    const config::LayerConfig c = AlignedFamilyConfig(family, 12, 2);
    absl::StatusOr<std::unique_ptr<CudaMoeLayer>> graph =
        CudaMoeLayer::Create(c, RandomLayerWeights(c, 6), {.gemm = impl});
    absl::StatusOr<std::unique_ptr<CudaMoeLayer>> eager =
        CudaMoeLayer::Create(c, RandomLayerWeights(c, 6), {.gemm = impl});
    ASSERT_TRUE(graph.ok() && eager.ok());
    const absl::Status captured = (*graph)->PrepareDecode(32, /*use_graph=*/true);
    ASSERT_TRUE(captured.ok()) << captured;
    ASSERT_TRUE((*eager)->PrepareDecode(32, /*use_graph=*/false).ok());
    absl::StatusOr<MoeLayer> cpu = MoeLayer::Create(c, RandomLayerWeights(c, 6));
    ASSERT_TRUE(cpu.ok());
    for (int64_t T : {1, 7, 32, 3}) {  // replays with different real counts
      SCOPED_TRACE(::testing::Message() << family << " T=" << T);
      const Tensor hidden = moe::testing::RandomHidden(T, c.d_model(), 70 + T);
      absl::StatusOr<LayerOutput> replayed = (*graph)->Decode(hidden);
      absl::StatusOr<LayerOutput> ran = (*eager)->Decode(hidden);
      ASSERT_TRUE(replayed.ok()) << replayed.status();
      ASSERT_TRUE(ran.ok()) << ran.status();
      EXPECT_TRUE(BitwiseEqual(Floats(replayed->output), Floats(ran->output)));
      EXPECT_EQ(Ints(replayed->topk_ids), Ints(ran->topk_ids));
      EXPECT_EQ(replayed->expert_load, ran->expert_load);
      absl::StatusOr<LayerOutput> want = cpu->Forward(hidden);
      ASSERT_TRUE(want.ok());
      ExpectMatchesCpu(*replayed, *want);
    }
  }
}

// The quantization-aware reference of FP8 experts: the same weights after an e4m3 round trip
// with 128x128 block scales (kernels/cuda/fp8_block_scale.h), computed by the CPU layer.
MoeLayerWeights DequantizedExperts(MoeLayerWeights w) {
  for (Tensor* t : {&w.experts.gate, &w.experts.up, &w.experts.down, &w.shared.gate, &w.shared.up,
                    &w.shared.down}) {
    if (t->empty()) continue;
    const int64_t E = t->dim(0), n = t->dim(1), k = t->dim(2);
    const int64_t b = kernels::cuda::kFp8BlockSize;
    std::vector<uint8_t> q(static_cast<size_t>(t->num_elements()));
    std::vector<float> scales(static_cast<size_t>(E * ((n + b - 1) / b) * ((k + b - 1) / b)));
    kernels::cuda::QuantizeWeightsE4M3(t->data<float>(), E, n, k, q.data(), scales.data());
    kernels::cuda::DequantizeWeightsE4M3(q.data(), scales.data(), E, n, k, t->data<float>());
  }
  return w;
}

TEST_F(CudaLayerTest, Fp8ExpertsMatchAQuantizationAwareCpuReference) {
  int checked = 0;
  for (const char* family : {"deepseek_v3", "mixtral", "gelu"}) {
    config::LayerConfig c = moe::testing::FamilyConfig(family, 12, 2);
    c.set_d_model(256);
    c.set_d_ff(128);
    if (c.shared_experts().d_ff() > 0) c.mutable_shared_experts()->set_d_ff(128);
    absl::StatusOr<MoeLayer> cpu =
        MoeLayer::Create(c, DequantizedExperts(RandomLayerWeights(c, 8)));
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    for (GroupedGemmImpl impl : {GroupedGemmImpl::kReference, GroupedGemmImpl::kSm90}) {
      absl::StatusOr<std::unique_ptr<CudaMoeLayer>> gpu =
          CudaMoeLayer::Create(c, RandomLayerWeights(c, 8), {.gemm = impl, .fp8_experts = true});
      if (!gpu.ok()) {
        EXPECT_EQ(gpu.status().code(), absl::StatusCode::kUnimplemented) << gpu.status();
        continue;
      }
      SCOPED_TRACE(::testing::Message() << GroupedGemmImplName(impl) << " " << family);
      const Tensor hidden = moe::testing::RandomHidden(45, c.d_model(), 9);
      absl::StatusOr<LayerOutput> want = cpu->Forward(hidden);
      absl::StatusOr<LayerOutput> got = (*gpu)->Forward(hidden);
      ASSERT_TRUE(want.ok() && got.ok()) << got.status();
      EXPECT_EQ(Ints(got->topk_ids), Ints(want->topk_ids));
      // The activations are quantized to e4m3 per 1x128 block too (3 mantissa bits).
      EXPECT_LE(Nmse(Floats(got->output), Floats(want->output)), 1e-2);
      ++checked;
    }
  }
  if (checked == 0) GTEST_SKIP() << "no FP8-capable grouped GEMM (reference or sm90) here";
}

}  // namespace
}  // namespace moe::cuda

#else  // !MOE_HAVE_CUDA

TEST(CudaLayerTest, SkippedWithoutTheCudaToolkit) {
  GTEST_SKIP() << "built without CUDA (no toolkit found, or -DMOE_ENABLE_CUDA=OFF)";
}

#endif  // MOE_HAVE_CUDA
