// Overflow-checked integer arithmetic for sizes read from untrusted input.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace moe {

// a * b, or nullopt when the product does not fit in uint64_t.
inline std::optional<uint64_t> CheckedMul(uint64_t a, uint64_t b) {
  uint64_t out;
  if (__builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

// a + b, or nullopt on overflow.
inline std::optional<uint64_t> CheckedAdd(uint64_t a, uint64_t b) {
  uint64_t out;
  if (__builtin_add_overflow(a, b, &out)) return std::nullopt;
  return out;
}

// The product of all dims (1 for an empty shape), or nullopt when it overflows
// int64_t or a dim is negative.
inline std::optional<int64_t> CheckedNumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t dim : shape) {
    if (dim < 0 || __builtin_mul_overflow(n, dim, &n)) return std::nullopt;
  }
  return n;
}

}  // namespace moe
