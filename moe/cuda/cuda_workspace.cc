#include "moe/cuda/cuda_workspace.h"

#include <algorithm>
#include <utility>

#include "configs/layer_config.h"
#include "kernels/cuda/routing_plan.h"
#include "moe/base/status_macros.h"

namespace moe::cuda {

namespace kc = ::moe::kernels::cuda;

absl::StatusOr<std::unique_ptr<CudaLayerWorkspace>> AllocateWorkspace(const config::LayerConfig& c,
                                                                      int64_t max_tokens,
                                                                      bool fp8) {
  auto ws = std::make_unique<CudaLayerWorkspace>();
  ws->max_tokens = max_tokens;
  const size_t T = static_cast<size_t>(std::max<int64_t>(max_tokens, 1));
  const size_t d = static_cast<size_t>(c.d_model());
  const size_t E = static_cast<size_t>(c.num_experts());
  const size_t slots = T * static_cast<size_t>(c.top_k());
  const size_t width = static_cast<size_t>(std::max(c.d_ff(), config::SharedExpertsDff(c)));
  const std::pair<DeviceBuffer*, size_t> buffers[] = {
      {&ws->hidden, 4 * T * d},
      {&ws->logits, 4 * T * E},
      {&ws->topk_ids, 4 * slots},
      {&ws->topk_weights, 4 * slots},
      {&ws->row_status, 4 * T},
      {&ws->demand, 8 * E},
      {&ws->counts, 8 * E},
      {&ws->offsets, 8 * (E + 1)},
      {&ws->slot_of_row, 8 * slots},
      {&ws->row_of_slot, 8 * slots},
      {&ws->dropped, 8},
      {&ws->first_bad_slot, 8},
      {&ws->plan_workspace,
       std::max<size_t>(256, kc::DeviceRoutingPlanWorkspaceBytes(static_cast<int64_t>(T), c.top_k(),
                                                                 c.num_experts()))},
      {&ws->x_rows, 2 * slots * d},
      {&ws->ffn_gate, 4 * slots * width},
      {&ws->ffn_up, 4 * slots * width},
      {&ws->ffn_h, 2 * slots * width},
      {&ws->y_rows, 4 * slots * d},
      {&ws->x_shared, 2 * T * d},
      {&ws->y_shared, 4 * T * d},
      {&ws->shared_scale, 4 * T},
      {&ws->shared_offsets, 16},
      {&ws->fp8_x, fp8 ? slots * std::max(d, width) : 0},
      {&ws->fp8_x_scales, fp8 ? 4 * slots * ((std::max(d, width) + 127) / 128) : 0},
      {&ws->out, 4 * T * d},
      {&ws->valid, 8},
  };
  for (const auto& [buffer, bytes] : buffers) {
    MOE_ASSIGN_OR_RETURN(*buffer, DeviceBuffer::Allocate(bytes));
  }
  return ws;
}

}  // namespace moe::cuda
