// A layer's weights in GPU memory: the router in F32 (routing as precise as the CPU's), the
// expert FFNs in BF16 (the grouped GEMMs' compute dtype).
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "configs/moe_config.pb.h"
#include "experts/expert_weights.h"
#include "moe/cuda/device_buffer.h"
#include "moe/layer_weights.h"

namespace moe::cuda {

// Stacked expert FFNs in Hugging Face layout [out, in]: BF16, or FP8 e4m3 codes with
// DeepSeek-V3's 128x128 block scales (value = code * scale).
struct DeviceFfnWeights {
  DeviceBuffer gate;  // [num_experts, d_ff, d_model]; empty unless the activation is gated
  DeviceBuffer up;    // [num_experts, d_ff, d_model]
  DeviceBuffer down;  // [num_experts, d_model, d_ff]
  // FP8 only, F32 [num_experts, ceil(out / 128), ceil(in / 128)] for each tensor above.
  DeviceBuffer gate_scales, up_scales, down_scales;
  bool fp8 = false;
  int64_t num_experts = 0;
  int64_t d_model = 0;
  int64_t d_ff = 0;
};

struct DeviceLayerWeights {
  DeviceBuffer router;          // F32 [num_experts, d_model]
  DeviceBuffer selection_bias;  // F32 [num_experts]; empty unless router.selection_bias
  DeviceFfnWeights experts;     // routed experts
  DeviceFfnWeights shared;      // the shared experts as one FFN; num_experts 0 when none
  DeviceBuffer shared_gate;     // F32 [1, d_model]; empty unless shared_experts.sigmoid_gate
};

// Copies F32 host weights to the device, experts rounded to BF16 (round to nearest even) or,
// with fp8_experts, quantized on the host by kernels/cuda/fp8_block_scale.h (routed and shared
// experts alike). `weights` must have passed CheckLayerWeights.
absl::StatusOr<DeviceLayerWeights> UploadLayerWeights(const config::LayerConfig& config,
                                                      const MoeLayerWeights& weights,
                                                      bool fp8_experts = false);

// Random weights made on the device (no host copy: DeepSeek-V3's 256 experts are 22 GB in
// BF16): uniform in +-1/sqrt(fan_in) like RandomLayerWeights, biases in [-0.1, 0.1), but from
// kernels/cuda/random_fill.h's generator, so the values differ from RandomLayerWeights'.
absl::StatusOr<DeviceLayerWeights> RandomDeviceLayerWeights(const config::LayerConfig& config,
                                                            uint64_t seed);

}  // namespace moe::cuda
