// Device helpers: 8 consecutive row elements moved as one 16-byte access (BF16) or two
// (F32), converted to and from float. Shared by the permute, combine and activation kernels.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace moe::kernels::cuda {

// Elements per vector access: 8 BF16 = 16 bytes, 8 F32 = 2 x 16 bytes.
inline constexpr int kRowVector = 8;

// NOTE: the vector forms need `p + i` 16-byte aligned; launchers choose them only when every
// row start and the base pointer are (see VectorRowsOk).
template <typename T>
__device__ __forceinline__ void LoadFloats(const T* p, int64_t i, float (&v)[kRowVector]);

template <>
__device__ __forceinline__ void LoadFloats<float>(const float* p, int64_t i,
                                                  float (&v)[kRowVector]) {
  const float4 a = *reinterpret_cast<const float4*>(p + i);
  const float4 b = *reinterpret_cast<const float4*>(p + i + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

template <>
__device__ __forceinline__ void LoadFloats<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i,
                                                          float (&v)[kRowVector]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p + i);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(h[j]);
    v[2 * j] = f.x;
    v[2 * j + 1] = f.y;
  }
}

template <typename T>
__device__ __forceinline__ void StoreFloats(T* p, int64_t i, const float (&v)[kRowVector]);

template <>
__device__ __forceinline__ void StoreFloats<float>(float* p, int64_t i,
                                                   const float (&v)[kRowVector]) {
  *reinterpret_cast<float4*>(p + i) = make_float4(v[0], v[1], v[2], v[3]);
  *reinterpret_cast<float4*>(p + i + 4) = make_float4(v[4], v[5], v[6], v[7]);
}

template <>
__device__ __forceinline__ void StoreFloats<__nv_bfloat16>(__nv_bfloat16* p, int64_t i,
                                                           const float (&v)[kRowVector]) {
  uint4 raw;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
  for (int j = 0; j < 4; ++j) h[j] = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
  *reinterpret_cast<uint4*>(p + i) = raw;
}

// Scalar forms, for rows whose width or alignment rules out the vector ones.
__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

}  // namespace moe::kernels::cuda
