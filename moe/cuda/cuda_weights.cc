#include "moe/cuda/cuda_weights.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "configs/layer_config.h"
#include "kernels/cuda/fp8_block_scale.h"
#include "kernels/cuda/random_fill.h"
#include "moe/base/dtype.h"

namespace moe::cuda {
namespace {

using kernels::cuda::RowDtype;

// F32 host tensor -> BF16 device buffer, converted in chunks to bound the host scratch.
absl::StatusOr<DeviceBuffer> UploadBf16(const Tensor& t) {
  const int64_t n = t.num_elements();
  MOE_ASSIGN_OR_RETURN(DeviceBuffer device, DeviceBuffer::Allocate(sizeof(uint16_t) * n));
  constexpr int64_t kChunk = int64_t{1} << 24;
  std::vector<uint16_t> bf16(static_cast<size_t>(std::min(n, kChunk)));
  const float* src = t.data<float>();
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t count = std::min(kChunk, n - begin);
    for (int64_t i = 0; i < count; ++i) bf16[i] = F32ToBf16(src[begin + i]);
    MOE_CUDA_RETURN_IF_ERROR(cudaMemcpy(device.as<uint16_t>() + begin, bf16.data(),
                                        sizeof(uint16_t) * count, cudaMemcpyHostToDevice));
  }
  return device;
}

absl::StatusOr<DeviceBuffer> UploadF32(const Tensor& t) {
  std::vector<float> host(t.data<float>(), t.data<float>() + t.num_elements());
  return DeviceBuffer::FromHost(host);
}

// F32 host tensor [num_experts, n, k] -> FP8 e4m3 codes and 128x128 block scales on the device.
absl::Status UploadFp8(const Tensor& t, DeviceBuffer* codes, DeviceBuffer* scales) {
  const int64_t experts = t.dim(0), n = t.dim(1), k = t.dim(2);
  const int64_t blocks = experts *
                         ((n + kernels::cuda::kFp8BlockSize - 1) / kernels::cuda::kFp8BlockSize) *
                         ((k + kernels::cuda::kFp8BlockSize - 1) / kernels::cuda::kFp8BlockSize);
  std::vector<uint8_t> q(static_cast<size_t>(t.num_elements()));
  std::vector<float> s(static_cast<size_t>(blocks));
  kernels::cuda::QuantizeWeightsE4M3(t.data<float>(), experts, n, k, q.data(), s.data());
  MOE_ASSIGN_OR_RETURN(*codes, DeviceBuffer::FromHost(q));
  MOE_ASSIGN_OR_RETURN(*scales, DeviceBuffer::FromHost(s));
  return absl::OkStatus();
}

absl::StatusOr<DeviceFfnWeights> UploadFfn(const experts::ExpertWeights& w, bool fp8) {
  DeviceFfnWeights d;
  d.num_experts = w.num_experts();
  d.d_model = w.d_model();
  d.d_ff = w.d_ff();
  d.fp8 = fp8;
  if (fp8) {
    if (!w.gate.empty()) MOE_RETURN_IF_ERROR(UploadFp8(w.gate, &d.gate, &d.gate_scales));
    MOE_RETURN_IF_ERROR(UploadFp8(w.up, &d.up, &d.up_scales));
    MOE_RETURN_IF_ERROR(UploadFp8(w.down, &d.down, &d.down_scales));
    return d;
  }
  if (!w.gate.empty()) {
    MOE_ASSIGN_OR_RETURN(d.gate, UploadBf16(w.gate));
  }
  MOE_ASSIGN_OR_RETURN(d.up, UploadBf16(w.up));
  MOE_ASSIGN_OR_RETURN(d.down, UploadBf16(w.down));
  return d;
}

// Seeds per tensor, so tensors do not repeat each other's values.
enum SeedSalt : uint64_t {
  kRouter = 1,
  kBias,
  kGate,
  kUp,
  kDown,
  kSharedGateProj,
  kSharedUp,
  kSharedDown,
  kSharedGate
};

absl::StatusOr<DeviceBuffer> RandomBuffer(RowDtype dtype, int64_t n, uint64_t seed, float bound) {
  MOE_ASSIGN_OR_RETURN(DeviceBuffer b,
                       DeviceBuffer::Allocate(static_cast<size_t>(n * RowDtypeSize(dtype))));
  MOE_RETURN_IF_ERROR(kernels::cuda::FillUniform(b.get(), dtype, n, seed, bound, nullptr));
  return b;
}

absl::StatusOr<DeviceFfnWeights> RandomFfn(bool gated, int64_t num_experts, int64_t d_model,
                                           int64_t d_ff, uint64_t seed, uint64_t salt) {
  DeviceFfnWeights d;
  d.num_experts = num_experts;
  d.d_model = d_model;
  d.d_ff = d_ff;
  const int64_t n = num_experts * d_model * d_ff;
  const float in_bound = 1.0f / std::sqrt(static_cast<float>(d_model));
  const float ff_bound = 1.0f / std::sqrt(static_cast<float>(d_ff));
  if (gated) {
    MOE_ASSIGN_OR_RETURN(d.gate, RandomBuffer(RowDtype::kBF16, n, seed * 16 + salt, in_bound));
  }
  MOE_ASSIGN_OR_RETURN(d.up, RandomBuffer(RowDtype::kBF16, n, seed * 16 + salt + 1, in_bound));
  MOE_ASSIGN_OR_RETURN(d.down, RandomBuffer(RowDtype::kBF16, n, seed * 16 + salt + 2, ff_bound));
  return d;
}

}  // namespace

absl::StatusOr<DeviceLayerWeights> UploadLayerWeights(const config::LayerConfig& config,
                                                      const MoeLayerWeights& weights,
                                                      bool fp8_experts) {
  DeviceLayerWeights d;
  MOE_ASSIGN_OR_RETURN(d.router, UploadF32(weights.router));
  if (config.router().selection_bias()) {
    MOE_ASSIGN_OR_RETURN(d.selection_bias, UploadF32(weights.selection_bias));
  }
  MOE_ASSIGN_OR_RETURN(d.experts, UploadFfn(weights.experts, fp8_experts));
  if (config::SharedExpertsDff(config) > 0) {
    MOE_ASSIGN_OR_RETURN(d.shared, UploadFfn(weights.shared, fp8_experts));
  }
  if (config.shared_experts().sigmoid_gate()) {
    MOE_ASSIGN_OR_RETURN(d.shared_gate, UploadF32(weights.shared_gate));
  }
  return d;
}

absl::StatusOr<DeviceLayerWeights> RandomDeviceLayerWeights(const config::LayerConfig& config,
                                                            uint64_t seed) {
  DeviceLayerWeights d;
  const int64_t d_model = config.d_model();
  const int64_t num_experts = config.num_experts();
  const bool gated = config::IsGated(config.activation());
  const float in_bound = 1.0f / std::sqrt(static_cast<float>(d_model));
  MOE_ASSIGN_OR_RETURN(
      d.router, RandomBuffer(RowDtype::kF32, num_experts * d_model, seed * 16 + kRouter, in_bound));
  if (config.router().selection_bias()) {
    MOE_ASSIGN_OR_RETURN(d.selection_bias,
                         RandomBuffer(RowDtype::kF32, num_experts, seed * 16 + kBias, 0.1f));
  }
  MOE_ASSIGN_OR_RETURN(d.experts,
                       RandomFfn(gated, num_experts, d_model, config.d_ff(), seed, kGate));
  const int64_t shared_dff = config::SharedExpertsDff(config);
  if (shared_dff > 0) {
    MOE_ASSIGN_OR_RETURN(d.shared, RandomFfn(gated, 1, d_model, shared_dff, seed, kSharedGateProj));
  }
  if (config.shared_experts().sigmoid_gate()) {
    MOE_ASSIGN_OR_RETURN(d.shared_gate,
                         RandomBuffer(RowDtype::kF32, d_model, seed * 16 + kSharedGate, in_bound));
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return d;
}

}  // namespace moe::cuda
