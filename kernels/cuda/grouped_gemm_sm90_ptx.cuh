// Inline-PTX wrappers of the Hopper (sm_90a) instructions the grouped GEMM uses: mbarriers, TMA
// tensor loads, wgmma and its shared-memory matrix descriptors. Device code only, and only in
// the sm_90a compile pass (MOE_GEMM_SM90_ENABLED); the sm_80 pass sees nothing of it.
#pragma once

#include <cuda.h>  // CUtensorMap

#include <cstdint>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MOE_GEMM_SM90_ENABLED 1
#else
#define MOE_GEMM_SM90_ENABLED 0
#endif

#if MOE_GEMM_SM90_ENABLED

namespace moe::kernels::cuda::sm90 {

__device__ __forceinline__ uint32_t SmemAddress(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// ---- mbarrier -------------------------------------------------------------------------------

__device__ __forceinline__ void MbarrierInit(uint64_t* barrier, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(SmemAddress(barrier)), "r"(arrivals)
               : "memory");
}

// NOTE: after initializing barriers, makes the initialization visible to the async proxy (the
// TMA unit completes transactions on them) before any thread uses them; a __syncthreads() must
// follow so the other threads see it too.
__device__ __forceinline__ void FenceBarrierInit() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// One arrival that also announces `bytes` of TMA transactions the phase must wait for.
__device__ __forceinline__ void MbarrierArriveExpectTx(uint64_t* barrier, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(SmemAddress(barrier)),
               "r"(bytes)
               : "memory");
}

// One arrival (release semantics: this thread's prior memory accesses happen before the phase
// completes).
__device__ __forceinline__ void MbarrierArrive(uint64_t* barrier) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(SmemAddress(barrier)) : "memory");
}

// Blocks until the phase with parity `parity` has completed (acquire semantics). A fresh barrier
// is in phase 0, so waiting for parity 1 returns at once: the producer's first pass through the
// "empty" barriers does not block.
__device__ __forceinline__ void MbarrierWait(uint64_t* barrier, uint32_t parity) {
  const uint32_t address = SmemAddress(barrier);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n"
        ".reg .pred complete;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 complete, [%1], %2;\n"
        "selp.u32 %0, 1, 0, complete;\n"
        "}\n"
        : "=r"(done)
        : "r"(address), "r"(parity)
        : "memory");
  } while (done == 0);
}

// ---- TMA ------------------------------------------------------------------------------------

__device__ __forceinline__ void PrefetchTensorMap(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Copies the box at element coordinates (c0 innermost, c1) of `map` into shared memory at `dst`
// and completes its bytes on `barrier`. Out-of-bounds elements of the box are filled with zeros
// (and still count as transferred bytes).
__device__ __forceinline__ void TmaLoad2d(void* dst, const CUtensorMap* map, uint64_t* barrier,
                                          int32_t c0, int32_t c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4}], [%2];" ::"r"(SmemAddress(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(SmemAddress(barrier)), "r"(c0), "r"(c1)
      : "memory");
}

__device__ __forceinline__ void TmaLoad3d(void* dst, const CUtensorMap* map, uint64_t* barrier,
                                          int32_t c0, int32_t c1, int32_t c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5}], [%2];" ::"r"(SmemAddress(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(SmemAddress(barrier)), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

// ---- wgmma ----------------------------------------------------------------------------------

// The descriptor of a K-major operand tile in shared memory written by TMA with
// CU_TENSOR_MAP_SWIZZLE_128B: rows of 128 bytes (64 bf16 or 128 fp8 of k), row r at byte
// 128 * r, 16-byte chunks XOR-swizzled within each 8-row (1024-byte) group.
// NOTE: the tile must start on a 1024-byte boundary (the swizzle is a function of the address
// bits, and the base-offset field is left 0). Fields: start address >> 4 (bits 0-13), leading
// byte offset >> 4 (bits 16-29; unused by swizzled K-major layouts, conventionally 1), stride
// byte offset >> 4 (bits 32-45: 1024 bytes between 8-row groups), layout 1 = 128B swizzle
// (bits 62-63). Advancing along k inside the 128-byte row adds bytes >> 4 to the start address
// (DescriptorAdvance), as the hardware applies the swizzle to the final address.
__device__ __forceinline__ uint64_t SmemDescriptorSw128(const void* tile) {
  uint64_t descriptor = 0;
  descriptor |= static_cast<uint64_t>((SmemAddress(tile) & 0x3FFFF) >> 4);
  descriptor |= uint64_t{16 >> 4} << 16;
  descriptor |= uint64_t{1024 >> 4} << 32;
  descriptor |= uint64_t{1} << 62;
  return descriptor;
}

__device__ __forceinline__ uint64_t DescriptorAdvance(uint64_t descriptor, uint32_t bytes) {
  return descriptor + (bytes >> 4);
}

// NOTE: wgmma.fence orders this thread's register accesses to accumulators before the wgmma that
// follows; needed before the first wgmma of a batch whenever the accumulators were touched by
// ordinary instructions (zeroing, promotion, the epilogue).
__device__ __forceinline__ void WgmmaFence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}

__device__ __forceinline__ void WgmmaCommitGroup() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}

// Waits until at most `kPending` committed wgmma groups of this warpgroup are still running;
// their shared-memory reads and accumulator writes are then complete.
template <int kPending>
__device__ __forceinline__ void WgmmaWaitGroup() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}

// NOTE: the compiler sees a wgmma's accumulators as written when the asm statement issues, not
// when wgmma.wait_group returns; this empty asm "rewrites" every register after the wait so no
// read of an accumulator is hoisted above the wait (and no write sunk below the fence).
__device__ __forceinline__ void FenceAccumulators(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define MOE_WGMMA_D8(i)                                                                       \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
      "+f"(d[i + 6]), "+f"(d[i + 7])
#define MOE_WGMMA_D64                                                                     \
  MOE_WGMMA_D8(0), MOE_WGMMA_D8(8), MOE_WGMMA_D8(16), MOE_WGMMA_D8(24), MOE_WGMMA_D8(32), \
      MOE_WGMMA_D8(40), MOE_WGMMA_D8(48), MOE_WGMMA_D8(56)
#define MOE_WGMMA_D_REGS                                                                   \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, " \
  "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "  \
  "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "  \
  "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// d[64] (+)= A[64 x 16] . B[128 x 16]^T, BF16 inputs from shared memory (both K-major), FP32
// accumulators; scale_d = 0 overwrites d instead of accumulating.
// Accumulator layout (per warpgroup thread t, warp w = t / 32, lane l = t % 32): d[4 * i + j]
// holds row 16 * w + l / 4 + 8 * (j / 2), column 8 * i + 2 * (l % 4) + j % 2, i in [0, 16).
__device__ __forceinline__ void WgmmaM64N128K16Bf16(float (&d)[64], uint64_t desc_a,
                                                    uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred accumulate;\n"
      "setp.ne.b32 accumulate, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " MOE_WGMMA_D_REGS
      ", %64, %65, accumulate, 1, 1, 0, 0;\n"
      "}\n"
      : MOE_WGMMA_D64
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// The same for FP8 e4m3 inputs and k = 32 per instruction (same accumulator layout).
__device__ __forceinline__ void WgmmaM64N128K32E4m3(float (&d)[64], uint64_t desc_a,
                                                    uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred accumulate;\n"
      "setp.ne.b32 accumulate, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " MOE_WGMMA_D_REGS
      ", %64, %65, accumulate, 1, 1;\n"
      "}\n"
      : MOE_WGMMA_D64
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

#undef MOE_WGMMA_D8
#undef MOE_WGMMA_D64
#undef MOE_WGMMA_D_REGS

}  // namespace moe::kernels::cuda::sm90

#endif  // MOE_GEMM_SM90_ENABLED
