// MoeLayer::ForwardInto allocates nothing once warm at a token count, for every weight format,
// and gives exactly what Forward gives.
#include <atomic>
#include <cstdlib>
#include <new>

#include "gtest/gtest.h"
#include "moe/layer_weights.h"
#include "moe/moe_layer.h"
#include "tests/support/allocation_counter.h"
#include "tests/support/test_inputs.h"

namespace moe {
namespace {

using kernels::WeightFormat;

TEST(SteadyStateTest, ForwardIntoAllocatesNothingOnceWarm) {
  // olmoe: plain routed experts; qwen2_moe: shared experts with a sigmoid gate; deepseek_v3:
  // expert groups, selection bias, shared experts.
  for (const char* family : {"olmoe", "qwen2_moe", "deepseek_v3"}) {
    const config::LayerConfig c = testing::FamilyConfig(family, 8, 2);
    for (WeightFormat f :
         {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kInt8, WeightFormat::kInt4}) {
      absl::StatusOr<MoeLayer> layer =
          MoeLayer::Create(c, RandomLayerWeights(c, 5), {.experts = {.weight_format = f}});
      ASSERT_TRUE(layer.ok()) << layer.status();
      for (DType dtype : {DType::kF32, DType::kBF16}) {
        const Tensor f32 = testing::RandomHidden(13, c.d_model(), 6);
        Tensor hidden = Tensor::Zeros(dtype, {13, c.d_model()});
        if (dtype == DType::kF32) {
          hidden = f32.Clone();
        } else {
          for (int64_t i = 0; i < f32.num_elements(); ++i) {
            hidden.data<uint16_t>()[i] = kernels::FloatToBf16(f32.data<float>()[i]);
          }
        }
        LayerOutput out;
        ASSERT_TRUE(layer->ForwardInto(hidden, &out).ok());
        ASSERT_TRUE(layer->ForwardInto(hidden, &out).ok());
        moe::testing::g_allocations = 0;
        moe::testing::g_count_allocations = true;
        const absl::Status s = layer->ForwardInto(hidden, &out);
        moe::testing::g_count_allocations = false;
        ASSERT_TRUE(s.ok()) << s;
        EXPECT_EQ(moe::testing::g_allocations.load(), 0)
            << family << " " << kernels::WeightFormatName(f) << " " << DTypeName(dtype);
        const absl::StatusOr<LayerOutput> fresh = layer->Forward(hidden);
        ASSERT_TRUE(fresh.ok());
        for (int64_t i = 0; i < out.output.num_elements(); ++i) {
          ASSERT_EQ(out.output.data<float>()[i], fresh->output.data<float>()[i]) << family;
        }
      }
    }
  }
}

}  // namespace
}  // namespace moe
