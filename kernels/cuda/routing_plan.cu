#include <cub/block/block_scan.cuh>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/routing_plan.h"

namespace moe::kernels::cuda {
namespace {

constexpr size_t kAlign = 256;

size_t AlignUp(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

absl::Status FieldError(const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("DeviceRoutingPlanParams.", field, ": ", what));
}

// Workspace views.
struct PlanWorkspace {
  int64_t* chunk_counts;  // [chunks, num_experts]: counts, then each chunk's exclusive base
  int32_t* slot_rank;     // [num_slots]: rank of the slot among its chunk's slots of its expert
};

PlanWorkspace Views(const DeviceRoutingPlanParams& p) {
  const int64_t chunks = DeviceRoutingPlanChunks(p.num_tokens, p.top_k);
  char* base = static_cast<char*>(p.workspace);
  return {reinterpret_cast<int64_t*>(base),
          reinterpret_cast<int32_t*>(
              base + AlignUp(sizeof(int64_t) * static_cast<size_t>(chunks * p.num_experts)))};
}

__device__ __forceinline__ int64_t ValidSlots(const DeviceRoutingPlanParams& p) {
  const int64_t tokens = p.num_valid_tokens != nullptr ? *p.num_valid_tokens : p.num_tokens;
  return (tokens < p.num_tokens ? (tokens > 0 ? tokens : 0) : p.num_tokens) * p.top_k;
}

// Pass 1, one block per chunk of kPlanChunk slots: the chunk's per-expert histogram and every
// slot's rank among the chunk's earlier slots of the same expert (stable by slot).
__global__ void __launch_bounds__(kPlanChunk)
    PlanCountKernel(const DeviceRoutingPlanParams p, PlanWorkspace ws) {
  extern __shared__ int32_t histogram[];  // [num_experts]
  __shared__ int32_t chunk_ids[kPlanChunk];
  const int32_t E = p.num_experts;
  const int64_t num_slots = p.num_tokens * p.top_k;
  const int64_t valid_slots = ValidSlots(p);
  const int64_t chunk = blockIdx.x;
  const int64_t s = chunk * kPlanChunk + threadIdx.x;
  for (int32_t e = threadIdx.x; e < E; e += kPlanChunk) histogram[e] = 0;

  int32_t e = -1;  // -1: padding, out of range or repeated (the slot is dropped)
  if (s < valid_slots) {
    e = p.topk_ids[s];
    bool bad = e < 0 || e >= E;
    const int64_t first_of_token = s - s % p.top_k;
    for (int64_t i = first_of_token; i < s && !bad; ++i) bad = p.topk_ids[i] == e;
    if (bad) {
      atomicMin(p.first_bad_slot, static_cast<unsigned long long>(s));
      e = -1;
    }
  }
  chunk_ids[threadIdx.x] = e;
  __syncthreads();
  int32_t rank = -1;
  if (e >= 0) {
    rank = 0;
    for (int i = 0; i < static_cast<int>(threadIdx.x); ++i) rank += chunk_ids[i] == e;
    atomicAdd(&histogram[e], 1);
  }
  if (s < num_slots) ws.slot_rank[s] = rank;
  __syncthreads();
  for (int32_t x = threadIdx.x; x < E; x += kPlanChunk) {
    ws.chunk_counts[chunk * E + x] = histogram[x];
  }
}

// Pass 2, one block: per expert, the chunk histograms become exclusive chunk bases and their
// total the demand; capacity gives the counts; a block scan over experts gives the offsets.
__global__ void __launch_bounds__(kPlanScanThreads)
    PlanScanKernel(const DeviceRoutingPlanParams p, PlanWorkspace ws, int64_t chunks) {
  using BlockScan = cub::BlockScan<int64_t, kPlanScanThreads>;
  __shared__ typename BlockScan::TempStorage scan_storage;
  __shared__ unsigned long long dropped;
  const int32_t E = p.num_experts;
  const int64_t valid_slots = ValidSlots(p);
  // config::ExpertCapacity in the same double arithmetic: ceil(factor * slots / E).
  const int64_t capacity =
      p.capacity_factor > 0.0f
          ? static_cast<int64_t>(ceil(static_cast<double>(p.capacity_factor) *
                                      static_cast<double>(valid_slots) / static_cast<double>(E)))
          : -1;
  if (threadIdx.x == 0) dropped = 0;
  __syncthreads();
  int64_t carry = 0;
  for (int32_t base = 0; base < E; base += kPlanScanThreads) {
    const int32_t e = base + threadIdx.x;
    int64_t kept = 0;
    if (e < E) {
      int64_t demand = 0;
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t n = ws.chunk_counts[c * E + e];
        ws.chunk_counts[c * E + e] = demand;
        demand += n;
      }
      kept = capacity < 0 || demand < capacity ? demand : capacity;
      p.demand[e] = demand;
      p.counts[e] = kept;
      if (demand > kept) atomicAdd(&dropped, static_cast<unsigned long long>(demand - kept));
    }
    int64_t exclusive = 0, tile_total = 0;
    BlockScan(scan_storage).ExclusiveSum(kept, exclusive, tile_total);
    if (e < E) p.offsets[e] = carry + exclusive;
    carry += tile_total;
    __syncthreads();  // scan_storage is reused by the next tile
  }
  if (threadIdx.x == 0) {
    p.offsets[E] = carry;
    *p.dropped_slots = static_cast<int64_t>(dropped);
  }
}

// Pass 3, one block per chunk: every kept slot lands at offsets[e] + its rank within expert e;
// rows past the last kept one are marked -1.
__global__ void __launch_bounds__(kPlanChunk)
    PlanScatterKernel(const DeviceRoutingPlanParams p, PlanWorkspace ws) {
  const int32_t E = p.num_experts;
  const int64_t num_slots = p.num_tokens * p.top_k;
  const int64_t chunk = blockIdx.x;
  const int64_t s = chunk * kPlanChunk + threadIdx.x;
  if (s >= num_slots) return;
  int64_t row = -1;
  const int32_t rank_in_chunk = ws.slot_rank[s];
  if (rank_in_chunk >= 0) {  // a valid slot with a good id
    const int32_t e = p.topk_ids[s];
    const int64_t rank = ws.chunk_counts[chunk * E + e] + rank_in_chunk;
    if (rank < p.counts[e]) {
      row = p.offsets[e] + rank;
      p.slot_of_row[row] = s;
    }
  }
  p.row_of_slot[s] = row;
  // Row s (as a row index) past the kept rows: no slot writes it, so mark it here.
  if (s >= p.offsets[E]) p.slot_of_row[s] = -1;
}

}  // namespace

int64_t DeviceRoutingPlanChunks(int64_t num_tokens, int32_t top_k) {
  return (num_tokens * top_k + kPlanChunk - 1) / kPlanChunk;
}

size_t DeviceRoutingPlanWorkspaceBytes(int64_t num_tokens, int32_t top_k, int32_t num_experts) {
  const int64_t chunks = DeviceRoutingPlanChunks(num_tokens, top_k);
  return AlignUp(sizeof(int64_t) * static_cast<size_t>(chunks * num_experts)) +
         AlignUp(sizeof(int32_t) * static_cast<size_t>(num_tokens * top_k));
}

absl::Status CheckDeviceRoutingPlanParams(const DeviceRoutingPlanParams& p) {
  if (p.num_experts < 1 || p.num_experts > kPlanMaxExperts) {
    return FieldError("num_experts",
                      absl::StrCat("expected 1 to ", kPlanMaxExperts, ", got ", p.num_experts));
  }
  if (p.top_k < 1 || p.top_k > p.num_experts) {
    return FieldError(
        "top_k", absl::StrCat("expected 1 to num_experts (", p.num_experts, "), got ", p.top_k));
  }
  constexpr int64_t kMaxSlots = int64_t{1} << 38;  // chunks fit a 1-D grid
  if (p.num_tokens < 0 || p.num_tokens > kMaxSlots / p.top_k) {
    return FieldError("num_tokens", absl::StrCat("expected 0 to 2^38 / top_k, got ", p.num_tokens));
  }
  if (!(p.capacity_factor >= 0.0f) || p.capacity_factor > 1e30f) {
    return FieldError(
        "capacity_factor",
        absl::StrCat("expected 0 (dropless) or a finite factor > 0, got ", p.capacity_factor));
  }
  const size_t needed = DeviceRoutingPlanWorkspaceBytes(p.num_tokens, p.top_k, p.num_experts);
  if (p.workspace_bytes < needed) {
    return FieldError("workspace_bytes",
                      absl::StrCat("expected at least ", needed, ", got ", p.workspace_bytes));
  }
  if (reinterpret_cast<uintptr_t>(p.workspace) % kAlign != 0) {
    return FieldError("workspace", "must be 256-byte aligned");
  }
  const std::pair<const char*, const void*> required[] = {{"demand", p.demand},
                                                          {"counts", p.counts},
                                                          {"offsets", p.offsets},
                                                          {"dropped_slots", p.dropped_slots},
                                                          {"first_bad_slot", p.first_bad_slot}};
  for (const auto& [name, ptr] : required) {
    if (ptr == nullptr) return FieldError(name, "null");
  }
  if (p.num_tokens > 0) {
    const std::pair<const char*, const void*> per_slot[] = {{"topk_ids", p.topk_ids},
                                                            {"slot_of_row", p.slot_of_row},
                                                            {"row_of_slot", p.row_of_slot},
                                                            {"workspace", p.workspace}};
    for (const auto& [name, ptr] : per_slot) {
      if (ptr == nullptr) return FieldError(name, "null");
    }
  }
  return absl::OkStatus();
}

absl::Status BuildDeviceRoutingPlan(const DeviceRoutingPlanParams& p, cudaStream_t stream) {
  MOE_RETURN_IF_ERROR(CheckDeviceRoutingPlanParams(p));
  const int64_t chunks = DeviceRoutingPlanChunks(p.num_tokens, p.top_k);
  const PlanWorkspace ws = Views(p);
  MOE_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(p.first_bad_slot, 0xff, sizeof(unsigned long long), stream));
  const size_t histogram_bytes = sizeof(int32_t) * static_cast<size_t>(p.num_experts);
  if (chunks > 0) {
    PlanCountKernel<<<static_cast<unsigned>(chunks), kPlanChunk, histogram_bytes, stream>>>(p, ws);
    MOE_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "PlanCountKernel launch"));
  }
  PlanScanKernel<<<1, kPlanScanThreads, 0, stream>>>(p, ws, chunks);
  MOE_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "PlanScanKernel launch"));
  if (chunks > 0) {
    PlanScatterKernel<<<static_cast<unsigned>(chunks), kPlanChunk, 0, stream>>>(p, ws);
    MOE_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "PlanScatterKernel launch"));
  }
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda
