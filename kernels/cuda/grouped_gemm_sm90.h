// Our Hopper (sm_90a) grouped GEMM over experts: TMA loads, wgmma, a multi-stage mbarrier
// pipeline between a producer warp and two consumer warpgroups, and a persistent tile scheduler
// that reads the expert offsets on the device (no host synchronization) and never pads an expert
// to a full tile. Same op and params as GroupedGemmReference (grouped_gemm_reference.h), which is
// its documentation and test reference; the kernel itself is in grouped_gemm_sm90_kernel.cuh.
#pragma once

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "kernels/cuda/grouped_gemm_params.h"

namespace moe::kernels::cuda {

// Whether `device` can run the kernel: compute capability exactly 9.0 (sm_90a code runs on no
// other) and this library was built with sm_90a code. False when the device cannot be queried.
bool GroupedGemmSm90Supported(int device);

// The host-side checks of GroupedGemmSm90, without touching a device:
//   kInvalidArgument naming the field for params no implementation accepts
//   (ValidateGroupedGemmParams);
//   kUnimplemented with the reason for shapes this kernel does not take: k or n not a multiple of
//   16 (TMA row strides and paired column stores), max_rows, n, k or num_experts past 2^31 - 1
//   (TMA coordinates are 32-bit), a, b, b_up or c not 16-byte aligned.
absl::Status GroupedGemmSm90CanImplement(const GroupedGemmParams& p);

// Computes the grouped GEMM on `stream` (asynchronously; no host synchronization, capturable in a
// CUDA graph). c rows outside [0, offsets[num_experts]) are not written. The kernel never traps:
// offsets outside [0, max_rows] or decreasing are clamped (see ExpertRows in tile_scheduler.h).
// Errors: those of GroupedGemmSm90CanImplement; kUnimplemented when the current device is not an
// sm_90 device (or the library lacks sm_90a code); kInternal naming the CUDA call that failed.
absl::Status GroupedGemmSm90(const GroupedGemmParams& p, cudaStream_t stream);

}  // namespace moe::kernels::cuda
