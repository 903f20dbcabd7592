// MoeLayer::ForwardInto allocates nothing once warm at a token count, for every weight format,
// and gives exactly what Forward gives.
#include <atomic>
#include <cstdlib>
#include <new>

#include "gtest/gtest.h"
#include "moe/layer_weights.h"
#include "moe/moe_layer.h"
#include "tests/support/test_inputs.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<int64_t> g_allocations{0};
}  // namespace

// Counts operator new calls while g_counting is set.
void* operator new(size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

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
        g_allocations = 0;
        g_counting = true;
        const absl::Status s = layer->ForwardInto(hidden, &out);
        g_counting = false;
        ASSERT_TRUE(s.ok()) << s;
        EXPECT_EQ(g_allocations.load(), 0)
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
