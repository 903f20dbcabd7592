// The Hopper (sm_90a) grouped GEMM kernel over experts: a persistent, warp-specialized CTA with a
// TMA producer and two wgmma consumer warpgroups around a multi-stage mbarrier pipeline.
//
// CTA = 3 warpgroups (384 threads):
//   warpgroup 0: the producer; one thread walks the tiles and issues the TMA loads of each
//                k-block (an A tile and a B tile per pipeline stage), the other 127 exit.
//   warpgroups 1, 2: consumers; consumer i owns rows [64 * i, 64 * i + 64) of each 128-row tile
//                and runs m64n128 wgmmas on the stage, then stores its rows (masked) directly
//                from the accumulators.
// Every variant multiplies the same stage shape: A [128 rows, 128 bytes of k] by
// B [128 weight rows, 128 bytes of k] into a [64 x 128] FP32 accumulator per consumer.
//   kStore:  the 128 weight rows are output columns [n0, n0 + 128).
//   kSwiGLU: weight rows 0-63 are gate rows [n0, n0 + 64) and rows 64-127 the up rows of the same
//            columns (two TMA boxes), so accumulator columns j and j + 64 pair up in one thread
//            and the epilogue writes silu(gate) * up for 64 output columns.
// FP8 (e4m3, DeepSeek-V3 block scales): one stage is exactly one 128-wide k-block, so each stage
// is accumulated into a scratch accumulator and promoted into the FP32 accumulator scaled by
// a_scale[row, kb] * b_scale[expert, n0 / 128, kb] (per-block promotion as in DeepGEMM).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/cuda/grouped_gemm_params.h"
#include "kernels/cuda/grouped_gemm_sm90_ptx.cuh"
#include "kernels/cuda/tile_scheduler.h"

namespace moe::kernels::cuda::sm90 {

// ---- tile configuration (host and device) -----------------------------------------------------

inline constexpr int kBlockM = 128;       // rows per tile
inline constexpr int kConsumerRows = 64;  // rows per consumer warpgroup (wgmma m64)
inline constexpr int kRowBytes = 128;     // bytes of k per smem row: 64 bf16 / 128 fp8
inline constexpr int kBRows = 128;        // weight rows per stage (wgmma n128)
inline constexpr int kATileBytes = kBlockM * kRowBytes;  // 16 KiB
inline constexpr int kBTileBytes = kBRows * kRowBytes;   // 16 KiB
inline constexpr int kStageBytes = kATileBytes + kBTileBytes;
inline constexpr int kWgmmaKBytes = 32;  // k per wgmma: 16 bf16 (k16) / 32 fp8 (k32)
inline constexpr int kWarpgroupThreads = 128;
inline constexpr int kConsumers = 2;
inline constexpr int kThreads = (1 + kConsumers) * kWarpgroupThreads;
inline constexpr int kMinStages = 3;
inline constexpr int kMaxStages = 8;
inline constexpr int kScaleBlock = 128;  // FP8 scale block (k, and n for weights)

// Output columns per tile.
constexpr int BlockN(GemmEpilogue epilogue) {
  return epilogue == GemmEpilogue::kSwiGLU ? kBRows / 2 : kBRows;
}
// Elements of k per stage.
constexpr int BlockK(GemmDtype dtype) {
  return dtype == GemmDtype::kFP8E4M3 ? kRowBytes : kRowBytes / 2;
}

static_assert(kATileBytes % 1024 == 0 && kStageBytes % 1024 == 0,
              "every tile starts on the 1024-byte 128B-swizzle atom");
static_assert(kConsumers * kConsumerRows == kBlockM, "the consumers split the tile's rows");
static_assert(BlockK(GemmDtype::kFP8E4M3) == kScaleBlock, "one FP8 stage = one scale k-block");
static_assert(kScaleBlock % BlockN(GemmEpilogue::kSwiGLU) == 0 &&
                  kScaleBlock % BlockN(GemmEpilogue::kStore) == 0,
              "a tile's columns lie in one weight scale block");

// Everything but the tensor maps (which go as __grid_constant__ parameters).
struct KernelArgs {
  const int64_t* offsets = nullptr;  // DEVICE [num_experts + 1]
  const float* a_scales = nullptr;   // FP8: [max_rows, k_blocks]
  const float* b_scales = nullptr;   // FP8: [num_experts, ceil(n / 128), k_blocks]
  const float* b_up_scales = nullptr;
  void* c = nullptr;  // [max_rows, n]
  int64_t num_experts = 0;
  int64_t n = 0;
  int64_t k = 0;
  int64_t max_rows = 0;
  int stages = 0;
};

#if MOE_GEMM_SM90_ENABLED

__device__ __forceinline__ float Silu(float x) { return x / (1.0f + expf(-x)); }

template <GemmOutDtype kOut>
__device__ __forceinline__ void StorePair(void* c, int64_t index, float v0, float v1) {
  // NOTE: index is even and c is 16-byte aligned (checked by the launcher), so the pair is one
  // aligned 4-byte (bf16x2) or 8-byte (float2) store.
  if constexpr (kOut == GemmOutDtype::kBF16) {
    *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(c) + index) =
        __floats2bfloat162_rn(v0, v1);
  } else {
    *reinterpret_cast<float2*>(static_cast<float*>(c) + index) = make_float2(v0, v1);
  }
}

// The producer: one thread. Stage s of the ring holds A at tiles + s * kStageBytes and B right
// after it; full[s] completes when the stage's bytes have landed, empty[s] when both consumer
// warpgroups are done reading it.
template <GemmDtype kDtype, GemmEpilogue kEpilogue>
__device__ __forceinline__ void Produce(const CUtensorMap* map_a, const CUtensorMap* map_b,
                                        const CUtensorMap* map_b_up, const KernelArgs& args,
                                        uint8_t* tiles, uint64_t* full, uint64_t* empty) {
  PrefetchTensorMap(map_a);
  PrefetchTensorMap(map_b);
  if constexpr (kEpilogue == GemmEpilogue::kSwiGLU) PrefetchTensorMap(map_b_up);
  const int k_blocks = static_cast<int>(TileCeilDiv(args.k, BlockK(kDtype)));
  GroupedTileWalker walker(args.offsets, args.num_experts, args.max_rows, args.n, kBlockM,
                           BlockN(kEpilogue));
  int stage = 0;
  uint32_t phase = 0;
  Tile tile;
  for (int64_t index = blockIdx.x; walker.Next(index, &tile); index += gridDim.x) {
    const int32_t row = static_cast<int32_t>(tile.row_begin);
    const int32_t col = static_cast<int32_t>(tile.col_begin);
    const int32_t expert = static_cast<int32_t>(tile.expert);
    for (int kb = 0; kb < k_blocks; ++kb) {
      // NOTE: parity phase ^ 1: the first pass over the ring finds every slot free.
      MbarrierWait(&empty[stage], phase ^ 1);
      uint8_t* a_tile = tiles + stage * kStageBytes;
      uint8_t* b_tile = a_tile + kATileBytes;
      // NOTE: the full box bytes are expected even where the box hangs past the tensor (rows past
      // max_rows, k past k, weight rows past n): TMA zero-fills and counts those bytes too.
      MbarrierArriveExpectTx(&full[stage], kStageBytes);
      const int32_t k0 = kb * BlockK(kDtype);
      // NOTE: A rows [row, row + 128) may run into the next expert's rows; their products only
      // reach accumulator rows the epilogue masks (a GEMM row depends on its own A row only).
      TmaLoad2d(a_tile, map_a, &full[stage], k0, row);
      TmaLoad3d(b_tile, map_b, &full[stage], k0, col, expert);
      if constexpr (kEpilogue == GemmEpilogue::kSwiGLU) {
        TmaLoad3d(b_tile + kBTileBytes / 2, map_b_up, &full[stage], k0, col, expert);
      }
      if (++stage == args.stages) {
        stage = 0;
        phase ^= 1;
      }
    }
  }
}

// One consumer warpgroup: accumulates its 64 rows of each tile over all k-blocks, then stores.
template <GemmDtype kDtype, GemmEpilogue kEpilogue, GemmOutDtype kOut>
__device__ __forceinline__ void Consume(int consumer, const KernelArgs& args, uint8_t* tiles,
                                        uint64_t* full, uint64_t* empty) {
  constexpr int kSteps = kRowBytes / kWgmmaKBytes;  // wgmmas per stage
  const int thread = threadIdx.x % kWarpgroupThreads;
  const int warp = thread / 32, lane = thread % 32;
  // This thread's accumulator rows inside the tile (see the layout note of the wgmma wrapper).
  const int tile_row0 = consumer * kConsumerRows + warp * 16 + lane / 4;
  const int tile_row1 = tile_row0 + 8;
  const int k_blocks = static_cast<int>(TileCeilDiv(args.k, BlockK(kDtype)));
  const int64_t n_scale_blocks = TileCeilDiv(args.n, kScaleBlock);

  GroupedTileWalker walker(args.offsets, args.num_experts, args.max_rows, args.n, kBlockM,
                           BlockN(kEpilogue));
  int stage = 0;
  uint32_t phase = 0;
  Tile tile;
  float acc[64];
  for (int64_t index = blockIdx.x; walker.Next(index, &tile); index += gridDim.x) {
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
    const int64_t row0 = tile.row_begin + tile_row0, row1 = tile.row_begin + tile_row1;

    if constexpr (kDtype == GemmDtype::kFP8E4M3) {
      // Scales of this thread's two rows (0 for masked rows: never read past row_end) and of the
      // tile's weight block (one 128-column scale block: BlockN divides 128), loaded before the
      // stage wait so their latency can hide behind it.
      const float* a_scale0 = row0 < tile.row_end ? args.a_scales + row0 * k_blocks : nullptr;
      const float* a_scale1 = row1 < tile.row_end ? args.a_scales + row1 * k_blocks : nullptr;
      const int64_t b_block = (tile.expert * n_scale_blocks + tile.col_begin / kScaleBlock);
      for (int kb = 0; kb < k_blocks; ++kb) {
        const float sa0 = a_scale0 != nullptr ? __ldg(a_scale0 + kb) : 0.0f;
        const float sa1 = a_scale1 != nullptr ? __ldg(a_scale1 + kb) : 0.0f;
        const float sb = __ldg(args.b_scales + b_block * k_blocks + kb);
        const float su = kEpilogue == GemmEpilogue::kSwiGLU
                             ? __ldg(args.b_up_scales + b_block * k_blocks + kb)
                             : sb;
        MbarrierWait(&full[stage], phase);
        const uint8_t* a_tile = tiles + stage * kStageBytes + consumer * kConsumerRows * kRowBytes;
        const uint8_t* b_tile = tiles + stage * kStageBytes + kATileBytes;
        const uint64_t desc_a = SmemDescriptorSw128(a_tile);
        const uint64_t desc_b = SmemDescriptorSw128(b_tile);
        float block[64];  // this k-block's raw fp8 products; overwritten by the first wgmma
        WgmmaFence();
#pragma unroll
        for (int s = 0; s < kSteps; ++s) {
          WgmmaM64N128K32E4m3(block, DescriptorAdvance(desc_a, s * kWgmmaKBytes),
                              DescriptorAdvance(desc_b, s * kWgmmaKBytes), s > 0 ? 1 : 0);
        }
        WgmmaCommitGroup();
        WgmmaWaitGroup<0>();
        FenceAccumulators(block);
        // NOTE: the wait above retired this warpgroup's reads of the stage; the slot is free once
        // all 256 consumer threads have arrived.
        MbarrierArrive(&empty[stage]);
        // Promotion. NOTE: register r = 4 * g + j holds row tile_row0 + 8 * (j / 2) and a column
        // of group g (8 * g + ...): r % 4 < 2 is row0, r < 32 is columns 0-63 (the gate columns
        // under kSwiGLU; r >= 32 the up columns).
#pragma unroll
        for (int r = 0; r < 64; ++r) {
          const float sa = (r % 4) < 2 ? sa0 : sa1;
          const float sw = r < 32 ? sb : su;
          acc[r] += block[r] * (sa * sw);
        }
        if (++stage == args.stages) {
          stage = 0;
          phase ^= 1;
        }
      }
    } else {
      // BF16: accumulate straight into acc, one wgmma group in flight: the stage of k-block
      // kb - 1 is released once the group of k-block kb has been issued and kb - 1 retired.
      int previous_stage = -1;
      for (int kb = 0; kb < k_blocks; ++kb) {
        MbarrierWait(&full[stage], phase);
        const uint8_t* a_tile = tiles + stage * kStageBytes + consumer * kConsumerRows * kRowBytes;
        const uint8_t* b_tile = tiles + stage * kStageBytes + kATileBytes;
        const uint64_t desc_a = SmemDescriptorSw128(a_tile);
        const uint64_t desc_b = SmemDescriptorSw128(b_tile);
        WgmmaFence();
#pragma unroll
        for (int s = 0; s < kSteps; ++s) {
          WgmmaM64N128K16Bf16(acc, DescriptorAdvance(desc_a, s * kWgmmaKBytes),
                              DescriptorAdvance(desc_b, s * kWgmmaKBytes), 1);
        }
        WgmmaCommitGroup();
        WgmmaWaitGroup<1>();
        if (previous_stage >= 0) MbarrierArrive(&empty[previous_stage]);
        previous_stage = stage;
        if (++stage == args.stages) {
          stage = 0;
          phase ^= 1;
        }
      }
      WgmmaWaitGroup<0>();
      FenceAccumulators(acc);
      if (previous_stage >= 0) MbarrierArrive(&empty[previous_stage]);
    }

    // Epilogue: rows at or past tile.row_end belong to the next expert (or to no expert) and are
    // never written; columns at or past n neither. Column pairs (2 * (lane % 4) + {0, 1}).
    const int64_t col_base = tile.col_begin + 2 * (lane % 4);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t row = half == 0 ? row0 : row1;
      if (row >= tile.row_end) continue;
#pragma unroll
      for (int i = 0; i < BlockN(kEpilogue) / 8; ++i) {
        const int64_t col = col_base + 8 * i;
        if (col >= args.n) continue;
        float v0, v1;
        if constexpr (kEpilogue == GemmEpilogue::kSwiGLU) {
          v0 = Silu(acc[4 * i + 2 * half]) * acc[4 * (i + 8) + 2 * half];
          v1 = Silu(acc[4 * i + 2 * half + 1]) * acc[4 * (i + 8) + 2 * half + 1];
        } else {
          v0 = acc[4 * i + 2 * half];
          v1 = acc[4 * i + 2 * half + 1];
        }
        StorePair<kOut>(args.c, row * args.n + col, v0, v1);
      }
    }
  }
}

#endif  // MOE_GEMM_SM90_ENABLED

// The kernel. Launch with kThreads threads, a persistent grid (<= one CTA per SM) and
// PipelineSmemBytes(args.stages, kStageBytes) bytes of dynamic shared memory. Compiled to an
// empty body outside sm_90a; the launcher never launches it there.
template <GemmDtype kDtype, GemmEpilogue kEpilogue, GemmOutDtype kOut>
__global__ void __launch_bounds__(kThreads, 1)
    GroupedGemmSm90Kernel(const __grid_constant__ CUtensorMap map_a,
                          const __grid_constant__ CUtensorMap map_b,
                          const __grid_constant__ CUtensorMap map_b_up, const KernelArgs args) {
#if MOE_GEMM_SM90_ENABLED
  // NOTE: dynamic shared memory is only guaranteed 16-byte aligned; the tiles need the 1024-byte
  // swizzle atom, hence the 1024 bytes of slack in PipelineSmemBytes. Layout after alignment:
  //   [stages x (A 16 KiB | B 16 KiB)] [full barriers: stages x 8 B] [empty barriers: stages x 8 B]
  extern __shared__ uint8_t smem_raw[];
  uint8_t* tiles = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                              ~static_cast<uintptr_t>(1023));
  uint64_t* full = reinterpret_cast<uint64_t*>(tiles + args.stages * kStageBytes);
  uint64_t* empty = full + args.stages;

  if (threadIdx.x == 0) {
    for (int s = 0; s < args.stages; ++s) {
      MbarrierInit(&full[s], 1);  // the producer's arrive.expect_tx (+ the TMA bytes)
      MbarrierInit(&empty[s], kConsumers * kWarpgroupThreads);  // every consumer thread
    }
    FenceBarrierInit();
  }
  __syncthreads();  // NOTE: the last CTA-wide barrier: the producer warpgroup exits below.

  const int warpgroup = threadIdx.x / kWarpgroupThreads;
  if (warpgroup == 0) {
    if (threadIdx.x == 0) {
      Produce<kDtype, kEpilogue>(&map_a, &map_b, &map_b_up, args, tiles, full, empty);
    }
    return;
  }
  Consume<kDtype, kEpilogue, kOut>(warpgroup - 1, args, tiles, full, empty);
#endif
}

}  // namespace moe::kernels::cuda::sm90
