// ScratchBuffer: 64-byte aligned at every size, grows only when asked for more, zero-filled.
#include "moe/base/scratch_buffer.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace moe {
namespace {

TEST(ScratchBufferTest, AlignedZeroFilledAndGrowsOnlyWhenTooSmall) {
  ScratchBuffer<uint16_t> b;
  EXPECT_EQ(b.size(), 0);
  for (int64_t n : {int64_t{1}, int64_t{33}, int64_t{4097}, int64_t{3} << 20}) {
    b.Reserve(n);
    ASSERT_GE(b.size(), n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u) << n;
    EXPECT_EQ(b.data()[n - 1], 0) << n;
  }
  const uint16_t* before = b.data();
  b.data()[5] = 7;
  b.Reserve(10);  // large enough already: same memory, contents kept
  EXPECT_EQ(b.data(), before);
  EXPECT_EQ(b.data()[5], 7);
}

}  // namespace
}  // namespace moe
