#include "kernels/cpu/packed_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace moe::kernels {
namespace {

// W[col, kk] or 0 outside the matrix.
float At(const float* w, int64_t ldw, int64_t n, int64_t k, int64_t col, int64_t kk) {
  return col < n && kk < k ? w[col * ldw + kk] : 0.0f;
}

// The symmetric INT4 scale of one group minimising the squared error over a small grid of
// clipping points (amax / 8 .. amax / 6); 0 for an all-zero group.
float Int4GroupScale(const float* values, int64_t count) {
  float amax = 0.0f;
  for (int64_t i = 0; i < count; ++i) amax = std::max(amax, std::fabs(values[i]));
  if (amax == 0.0f) return 0.0f;
  float best_scale = amax / 7.0f;
  double best_error = -1.0;
  for (int step = 0; step <= 16; ++step) {
    const float scale = amax / (6.0f + 0.125f * static_cast<float>(step));
    double error = 0.0;
    for (int64_t i = 0; i < count; ++i) {
      const float q = std::min(7.0f, std::max(-8.0f, std::nearbyint(values[i] / scale)));
      const double d = static_cast<double>(values[i]) - static_cast<double>(q * scale);
      error += d * d;
    }
    if (best_error < 0 || error < best_error) {
      best_error = error;
      best_scale = scale;
    }
  }
  return best_scale;
}

int8_t QuantizeTo(float x, float scale, float lo, float hi) {
  if (scale == 0.0f) return 0;
  return static_cast<int8_t>(std::min(hi, std::max(lo, std::nearbyint(x / scale))));
}

}  // namespace

absl::string_view WeightFormatName(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32:
      return "f32";
    case WeightFormat::kBF16:
      return "bf16";
    case WeightFormat::kInt8:
      return "int8";
    case WeightFormat::kInt4:
      return "int4";
  }
  return "?";
}

absl::StatusOr<WeightFormat> ParseWeightFormat(absl::string_view name) {
  for (WeightFormat f :
       {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kInt8, WeightFormat::kInt4}) {
    if (name == WeightFormatName(f)) return f;
  }
  return absl::InvalidArgumentError(absl::StrCat("--weight-dtype: unknown weight format '", name,
                                                 "' (expected f32, bf16, int8 or int4)"));
}

uint16_t FloatToBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float Bf16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

PackedMatrix PackMatrix(const float* w, int64_t ldw, int64_t n, int64_t k, WeightFormat format) {
  PackedMatrix m;
  m.format = format;
  m.n = n;
  m.k = k;
  m.num_panels = CeilDiv(n, kPanelWidth);
  const int64_t groups = CeilDiv(k, kInt4Group);
  switch (format) {
    case WeightFormat::kF32:
      m.panel_bytes = k * kPanelWidth * 4;
      break;
    case WeightFormat::kBF16:
      m.panel_bytes = m.stored_inputs() * kPanelWidth * 2;
      break;
    case WeightFormat::kInt8:
      m.panel_bytes = k * kPanelWidth;
      m.panel_scales = kPanelWidth;
      break;
    case WeightFormat::kInt4:
      m.panel_bytes = groups * kInt4Group * kPanelWidth / 2;
      m.panel_scales = groups * kPanelWidth;
      break;
  }
  m.data = AlignedAlloc(static_cast<size_t>(std::max<int64_t>(1, m.num_panels * m.panel_bytes)));
  m.scales =
      AlignedAlloc(static_cast<size_t>(std::max<int64_t>(1, m.num_panels * m.panel_scales * 4)));
  float* scales = static_cast<float*>(m.scales.get());
  for (int64_t p = 0; p < m.num_panels; ++p) {
    uint8_t* out = static_cast<uint8_t*>(m.data.get()) + p * m.panel_bytes;
    float* panel_scales = scales + p * m.panel_scales;
    const int64_t c0 = p * kPanelWidth;
    switch (format) {
      case WeightFormat::kF32: {
        float* f = reinterpret_cast<float*>(out);
        for (int64_t kk = 0; kk < k; ++kk) {
          for (int64_t j = 0; j < kPanelWidth; ++j) f[kk * 16 + j] = At(w, ldw, n, k, c0 + j, kk);
        }
        break;
      }
      case WeightFormat::kBF16: {
        uint32_t* words = reinterpret_cast<uint32_t*>(out);
        for (int64_t i = 0; i < m.stored_inputs() / 2; ++i) {
          for (int64_t j = 0; j < kPanelWidth; ++j) {
            words[i * 16 + j] =
                FloatToBf16(At(w, ldw, n, k, c0 + j, 2 * i)) |
                static_cast<uint32_t>(FloatToBf16(At(w, ldw, n, k, c0 + j, 2 * i + 1))) << 16;
          }
        }
        break;
      }
      case WeightFormat::kInt8: {
        int8_t* q = reinterpret_cast<int8_t*>(out);
        for (int64_t j = 0; j < kPanelWidth; ++j) {
          float amax = 0.0f;
          for (int64_t kk = 0; kk < k; ++kk)
            amax = std::max(amax, std::fabs(At(w, ldw, n, k, c0 + j, kk)));
          panel_scales[j] = amax / 127.0f;
          for (int64_t kk = 0; kk < k; ++kk) {
            q[kk * 16 + j] = QuantizeTo(At(w, ldw, n, k, c0 + j, kk), panel_scales[j], -127, 127);
          }
        }
        break;
      }
      case WeightFormat::kInt4: {
        float group[kInt4Group];
        for (int64_t g = 0; g < groups; ++g) {
          for (int64_t j = 0; j < kPanelWidth; ++j) {
            for (int64_t i = 0; i < kInt4Group; ++i)
              group[i] = At(w, ldw, n, k, c0 + j, g * 32 + i);
            const float scale = Int4GroupScale(group, kInt4Group);
            panel_scales[g * 16 + j] = scale;
            const int64_t half = j / 8;
            const int64_t c = j % 8;
            for (int64_t octet = 0; octet < 4; ++octet) {
              uint8_t* bytes = out + ((g * 4 + octet) * 2 + half) * 32 + 4 * c;
              for (int64_t i = 0; i < 4; ++i) {
                const int lo = QuantizeTo(group[octet * 8 + i], scale, -8, 7) + 8;
                const int hi = QuantizeTo(group[octet * 8 + 4 + i], scale, -8, 7) + 8;
                bytes[i] = static_cast<uint8_t>(lo | (hi << 4));
              }
            }
          }
        }
        break;
      }
    }
  }
  return m;
}

void UnpackMatrix(const PackedMatrix& m, float* out) {
  for (int64_t col = 0; col < m.n; ++col) {
    const int64_t p = col / kPanelWidth;
    const int64_t j = col % kPanelWidth;
    const uint8_t* panel = m.panel(p);
    const float* scales = m.panel_scale(p);
    for (int64_t kk = 0; kk < m.k; ++kk) {
      float v = 0.0f;
      switch (m.format) {
        case WeightFormat::kF32:
          v = reinterpret_cast<const float*>(panel)[kk * 16 + j];
          break;
        case WeightFormat::kBF16: {
          const uint32_t word = reinterpret_cast<const uint32_t*>(panel)[kk / 2 * 16 + j];
          v = Bf16ToFloat(static_cast<uint16_t>(kk % 2 == 0 ? word & 0xffffu : word >> 16));
          break;
        }
        case WeightFormat::kInt8:
          v = reinterpret_cast<const int8_t*>(panel)[kk * 16 + j] * scales[j];
          break;
        case WeightFormat::kInt4: {
          const int64_t g = kk / 32;
          const int64_t octet = (kk % 32) / 8;
          const int64_t i = kk % 8;
          const uint8_t byte = panel[((g * 4 + octet) * 2 + j / 8) * 32 + 4 * (j % 8) + i % 4];
          const int q = (i < 4 ? byte & 0xf : byte >> 4) - 8;
          v = static_cast<float>(q) * scales[g * 16 + j];
          break;
        }
      }
      out[col * m.k + kk] = v;
    }
  }
}

}  // namespace moe::kernels
