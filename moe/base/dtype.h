// Element types of tensors and the conversions between them.
#pragma once

#include <cstdint>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

enum class DType : uint8_t { kF32, kBF16, kF16, kI32, kI64 };

// Bytes per element.
int64_t DTypeSize(DType dtype);
// The safetensors spelling: "F32", "BF16", "F16", "I32", "I64".
absl::string_view DTypeName(DType dtype);
// Parses the safetensors spelling; kInvalidArgument for anything else.
absl::StatusOr<DType> ParseDType(absl::string_view name);

inline float Bf16ToF32(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Round to nearest even; NaN stays NaN (quiet).
inline uint16_t F32ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// IEEE half to float, subnormals, infinities and NaN included.
float F16ToF32(uint16_t bits);

// Converts n elements of `src` (dtype F32, BF16 or F16) to float32.
// kInvalidArgument for integer dtypes.
absl::Status ConvertToF32(DType dtype, const void* src, int64_t n, float* dst);

}  // namespace moe
