// The device buffers of one CUDA forward (moe/cuda/cuda_layer.h), sized for a token count.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "configs/moe_config.pb.h"
#include "moe/cuda/device_buffer.h"

namespace moe::cuda {

// Shapes with T = max_tokens; slot rows = T * top_k (every slot kept when dropless).
struct CudaLayerWorkspace {
  int64_t max_tokens = 0;
  int64_t shared_offsets_tokens = -1;  // the T that shared_offsets holds ({0, T})
  DeviceBuffer hidden;                 // F32 [T, d_model]
  DeviceBuffer logits;                 // F32 [T, num_experts]
  DeviceBuffer topk_ids;               // I32 [T, top_k]
  DeviceBuffer topk_weights;           // F32 [T, top_k]
  DeviceBuffer row_status;             // I32 [T]
  DeviceBuffer demand, counts;         // I64 [num_experts]
  DeviceBuffer offsets;                // I64 [num_experts + 1]
  DeviceBuffer slot_of_row;            // I64 [T * top_k]
  DeviceBuffer row_of_slot;            // I64 [T * top_k]
  DeviceBuffer dropped;                // I64 [1]
  DeviceBuffer first_bad_slot;         // U64 [1]
  DeviceBuffer plan_workspace;
  DeviceBuffer x_rows;          // BF16 [T * top_k, d_model], expert-major
  DeviceBuffer ffn_gate;        // F32 [T * top_k, max d_ff], unfused gated activations only
  DeviceBuffer ffn_up;          // F32 [T * top_k, max d_ff]
  DeviceBuffer ffn_h;           // BF16 [T * top_k, max d_ff], the down projection's input
  DeviceBuffer y_rows;          // F32 [T * top_k, d_model]
  DeviceBuffer x_shared;        // BF16 [T, d_model]
  DeviceBuffer y_shared;        // F32 [T, d_model]
  DeviceBuffer shared_scale;    // F32 [T]
  DeviceBuffer shared_offsets;  // I64 [2]
  DeviceBuffer fp8_x;           // FP8 experts: e4m3 [T * top_k, max(d_model, max d_ff)]
  DeviceBuffer fp8_x_scales;    // F32 [T * top_k, ceil(max(d_model, max d_ff) / 128)]
  DeviceBuffer out;             // F32 [T, d_model]
  DeviceBuffer valid;           // I64 [1], the decode path's real token count
};

// Allocates every buffer for `max_tokens` tokens of `config` (uninitialized memory);
// fp8: also the buffers of the activations quantized for FP8 experts.
absl::StatusOr<std::unique_ptr<CudaLayerWorkspace>> AllocateWorkspace(
    const config::LayerConfig& config, int64_t max_tokens, bool fp8 = false);

}  // namespace moe::cuda
