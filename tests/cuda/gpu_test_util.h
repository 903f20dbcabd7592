// Helpers of the GPU tests (tests/cuda): the skip when no GPU is visible, device buffers
// poisoned before each run with guard regions checked after, NMSE and NaN checks.
#pragma once

#ifdef MOE_HAVE_CUDA

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "moe/base/dtype.h"
#include "moe/cuda/cuda_layer.h"

namespace moe::cuda::testing {

// In a TEST body or SetUp: skips unless a CUDA device is visible.
#define MOE_SKIP_WITHOUT_GPU()                                                         \
  do {                                                                                 \
    if (::moe::cuda::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device visible"; \
  } while (0)

// Device memory for `count` elements of T between two guard regions. Every byte (guards
// included) is set to `poison` by Poison(); GuardsIntact() says whether a kernel wrote past
// either end. Poison 0xff makes F32/BF16 elements NaN, so an element a kernel should have
// written and did not shows up as NaN.
template <typename T>
class GuardedBuffer {
 public:
  static constexpr size_t kGuardBytes = 256;  // keeps data() 256-byte aligned
  explicit GuardedBuffer(size_t count, unsigned char poison = 0xff)
      : count_(count), poison_(poison) {
    EXPECT_EQ(cudaMalloc(&base_, Bytes() + 2 * kGuardBytes), cudaSuccess);
    Poison();
  }
  ~GuardedBuffer() { cudaFree(base_); }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;

  T* get() const { return reinterpret_cast<T*>(static_cast<char*>(base_) + kGuardBytes); }
  size_t count() const { return count_; }
  void Poison() { EXPECT_EQ(cudaMemset(base_, poison_, Bytes() + 2 * kGuardBytes), cudaSuccess); }
  void Upload(const std::vector<T>& host) {
    ASSERT_LE(host.size(), count_);
    EXPECT_EQ(cudaMemcpy(get(), host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  std::vector<T> ToHost() const {
    std::vector<T> host(count_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(host.data(), get(), Bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }
  bool GuardsIntact() const {
    std::vector<unsigned char> before(kGuardBytes), after(kGuardBytes);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(before.data(), base_, kGuardBytes, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(after.data(), static_cast<char*>(base_) + kGuardBytes + Bytes(),
                         kGuardBytes, cudaMemcpyDeviceToHost),
              cudaSuccess);
    for (size_t i = 0; i < kGuardBytes; ++i) {
      if (before[i] != poison_ || after[i] != poison_) return false;
    }
    return true;
  }

 private:
  size_t Bytes() const {
    return (sizeof(T) * count_ + kGuardBytes - 1) / kGuardBytes * kGuardBytes;
  }
  size_t count_;
  unsigned char poison_;
  void* base_ = nullptr;
};

// NMSE = sum (out - ref)^2 / sum ref^2 (0 when both are all zeros); NaN anywhere in `out` or
// `ref` gives +inf, so a threshold check fails.
template <typename A, typename B>
double Nmse(const A& out, const B& ref) {
  EXPECT_EQ(out.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size() && i < ref.size(); ++i) {
    const double o = static_cast<double>(out[i]), r = static_cast<double>(ref[i]);
    if (std::isnan(o) || std::isnan(r)) return INFINITY;
    num += (o - r) * (o - r);
    den += r * r;
  }
  return den == 0 ? (num == 0 ? 0 : INFINITY) : num / den;
}

inline std::vector<float> Random(size_t n, uint64_t seed, float lo = -1, float hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<uint16_t> ToBf16(const std::vector<float>& x) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = F32ToBf16(x[i]);
  return out;
}

inline std::vector<float> FromBf16(const std::vector<uint16_t>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = Bf16ToF32(x[i]);
  return out;
}

// Distinct random experts per token: [num_tokens, top_k], drawn from [0, num_used).
inline std::vector<int32_t> RandomIds(int64_t num_tokens, int32_t top_k, int32_t num_used,
                                      uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> all(static_cast<size_t>(num_used));
  std::iota(all.begin(), all.end(), 0);
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    ids.insert(ids.end(), all.begin(), all.begin() + top_k);
  }
  return ids;
}

// Per-dtype NMSE bounds (README "CUDA backend").
inline constexpr double kNmseF32 = 1e-7;
inline constexpr double kNmseBf16 = 5e-4;

// Bitwise equality of two float vectors (NaN payloads included).
inline bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0);
}

}  // namespace moe::cuda::testing

#endif  // MOE_HAVE_CUDA
