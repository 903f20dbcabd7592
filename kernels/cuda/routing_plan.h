// The routing plan on the GPU: per-expert histogram, exclusive scan and a stable scatter, with
// no host synchronization (capturable in a CUDA graph). Produces the same counts, offsets and
// slot <-> row permutation as gating::BuildRoutingPlan (gating/routing_plan.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace moe::kernels::cuda {

// Slots per block of the count and scatter kernels.
inline constexpr int kPlanChunk = 256;
// Largest num_experts (the per-block histogram lives in shared memory).
inline constexpr int32_t kPlanMaxExperts = 8192;
// Threads of the single-block scan kernel.
inline constexpr int kPlanScanThreads = 1024;

// Slots are (token, j) pairs, slot = token * top_k + j; rows are the kept slots sorted by
// expert and, within an expert, by slot (stable).
struct DeviceRoutingPlanParams {
  const int32_t* topk_ids = nullptr;  // [num_tokens, top_k]
  // Device scalar: only tokens [0, num_valid_tokens) are routed; null = all num_tokens.
  const int64_t* num_valid_tokens = nullptr;
  int64_t num_tokens = 0;  // static (maximum) token count: sizes the grids and buffers
  int32_t top_k = 0;
  int32_t num_experts = 0;
  // 0: dropless. > 0: each expert keeps its first ceil(factor * valid * top_k / num_experts)
  // slots in token order (config::ExpertCapacity, computed on the device from the valid count).
  float capacity_factor = 0.0f;

  int64_t* demand = nullptr;         // [num_experts] slots routed to each expert
  int64_t* counts = nullptr;         // [num_experts] slots kept
  int64_t* offsets = nullptr;        // [num_experts + 1] first row of each expert
  int64_t* slot_of_row = nullptr;    // [num_tokens * top_k]; rows >= offsets[num_experts]: -1
  int64_t* row_of_slot = nullptr;    // [num_tokens * top_k]; -1 when dropped or padding
  int64_t* dropped_slots = nullptr;  // [1] sum(demand) - sum(counts)
  // [1] the lowest slot whose id is out of [0, num_experts) or repeats an earlier id of its
  // token (that slot is dropped); UINT64_MAX when every id is good.
  unsigned long long* first_bad_slot = nullptr;

  void* workspace = nullptr;  // DeviceRoutingPlanWorkspaceBytes, 256-byte aligned
  size_t workspace_bytes = 0;
};

// Number of kPlanChunk-slot blocks for num_tokens * top_k slots.
int64_t DeviceRoutingPlanChunks(int64_t num_tokens, int32_t top_k);

// Workspace bytes: per-chunk histograms [chunks, num_experts] and each slot's rank within its
// chunk [num_tokens * top_k], both int32, each 256-byte aligned.
size_t DeviceRoutingPlanWorkspaceBytes(int64_t num_tokens, int32_t top_k, int32_t num_experts);

// kInvalidArgument naming the field for a bad value; no device access.
absl::Status CheckDeviceRoutingPlanParams(const DeviceRoutingPlanParams& p);

// Validates, then enqueues a memset and three kernels on `stream` (count, scan, scatter).
absl::Status BuildDeviceRoutingPlan(const DeviceRoutingPlanParams& p, cudaStream_t stream);

}  // namespace moe::kernels::cuda
