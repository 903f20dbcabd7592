// Seeded standard-normal random values, the weights and activations of the kernel benchmarks
// and tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace moe {

// n values drawn from N(0, 1) by std::mt19937_64 seeded with `seed` (the same on every run).
inline std::vector<float> RandomNormal(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0, 1);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

}  // namespace moe
