// Replaces the global operator new/delete of a test binary to count allocations while
// counting is on. Include in exactly one source file of a test executable.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace moe::testing {
inline std::atomic<bool> g_count_allocations{false};
inline std::atomic<int64_t> g_allocations{0};
}  // namespace moe::testing

void* operator new(size_t size) {
  if (moe::testing::g_count_allocations.load(std::memory_order_relaxed)) {
    moe::testing::g_allocations.fetch_add(1);
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
