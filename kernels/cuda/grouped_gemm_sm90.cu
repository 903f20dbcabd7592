// The launcher of the Hopper grouped GEMM: checks, TMA descriptors, persistent launch sizing.
#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled_v12000

#include <cstdint>
#include <limits>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/grouped_gemm_reference.h"
#include "kernels/cuda/grouped_gemm_sm90.h"
#include "kernels/cuda/grouped_gemm_sm90_kernel.cuh"
#include "kernels/cuda/tile_scheduler.h"

namespace moe::kernels::cuda {
namespace {

using sm90::KernelArgs;

constexpr int64_t kMaxCoordinate = std::numeric_limits<int32_t>::max();

absl::Status Unimplemented(absl::string_view why) {
  return absl::UnimplementedError(absl::StrCat("GroupedGemmSm90: ", why));
}

bool Aligned16(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

// cuTensorMapEncodeTiled from the driver the runtime loaded (no -lcuda at link time).
absl::StatusOr<PFN_cuTensorMapEncodeTiled_v12000> TensorMapEncoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encoder = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult query = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t error = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &function,
                                                               12000, cudaEnableDefault, &query);
    if (error != cudaSuccess || query != cudaDriverEntryPointSuccess) {
      cudaGetLastError();  // not a sticky error; do not leave it for the next call to report
      function = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(function);
  }();
  if (encoder == nullptr) {
    return absl::InternalError(
        "cudaGetDriverEntryPointByVersion(cuTensorMapEncodeTiled, 12000) found no entry point");
  }
  return encoder;
}

// A K-major tensor of `rank` (2: [rows, k]; 3: [experts, rows, k]) read in boxes of 128 bytes of
// k by box_rows rows, 128B-swizzled in shared memory (the layout SmemDescriptorSw128 describes).
// NOTE: dims are innermost first; out-of-bounds box elements are zero-filled.
absl::StatusOr<CUtensorMap> KMajorTensorMap(const void* base, GemmDtype dtype, int64_t k,
                                            int64_t rows, int64_t experts, int box_rows,
                                            const char* name) {
  MOE_ASSIGN_OR_RETURN(PFN_cuTensorMapEncodeTiled_v12000 encode, TensorMapEncoder());
  const bool fp8 = dtype == GemmDtype::kFP8E4M3;
  const uint64_t element_bytes = fp8 ? 1 : 2;
  const cuuint32_t rank = experts > 0 ? 3 : 2;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(k), static_cast<cuuint64_t>(rows),
                              static_cast<cuuint64_t>(experts)};
  // Byte strides of dims 1 and 2 (dim 0 is contiguous).
  const cuuint64_t strides[2] = {k * element_bytes, rows * k * element_bytes};
  const cuuint32_t box[3] = {static_cast<cuuint32_t>(sm90::BlockK(dtype)),
                             static_cast<cuuint32_t>(box_rows), 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  CUtensorMap map;
  const CUresult result =
      encode(&map, fp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank,
             const_cast<void*>(base), dims, strides, box, element_strides,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (result != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("cuTensorMapEncodeTiled(", name, ") failed: CUresult ",
                                            static_cast<int>(result)));
  }
  return map;
}

// The reason `device` cannot run the kernel, or Ok.
absl::Status CheckDevice(int device) {
  int major = 0, minor = 0;
  MOE_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  MOE_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  if (major != 9 || minor != 0) {
    return Unimplemented(absl::StrCat("device ", device, " is sm_", major, minor,
                                      ", not an sm_90 device (the kernel is sm_90a code)"));
  }
  // The library may have been built without sm_90a (CMAKE_CUDA_ARCHITECTURES overridden): the
  // binary loaded for this device would then be the empty sm_80 body.
  cudaFuncAttributes attributes;
  MOE_CUDA_RETURN_IF_ERROR(cudaFuncGetAttributes(
      &attributes,
      sm90::GroupedGemmSm90Kernel<GemmDtype::kBF16, GemmEpilogue::kStore, GemmOutDtype::kBF16>));
  if (attributes.binaryVersion != 90) {
    return Unimplemented(absl::StrCat("this build has no sm_90a code (binary version ",
                                      attributes.binaryVersion, ")"));
  }
  return absl::OkStatus();
}

template <GemmDtype kDtype, GemmEpilogue kEpilogue, GemmOutDtype kOut>
absl::Status Launch(const CUtensorMap& map_a, const CUtensorMap& map_b, const CUtensorMap& map_b_up,
                    const KernelArgs& args, int grid, int64_t smem_bytes, cudaStream_t stream) {
  auto* kernel = sm90::GroupedGemmSm90Kernel<kDtype, kEpilogue, kOut>;
  MOE_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(smem_bytes)));
  kernel<<<grid, sm90::kThreads, static_cast<size_t>(smem_bytes), stream>>>(map_a, map_b, map_b_up,
                                                                            args);
  return CudaStatus(cudaGetLastError(), "GroupedGemmSm90Kernel<<<>>>");
}

template <GemmDtype kDtype, GemmEpilogue kEpilogue>
absl::Status LaunchFor(GemmOutDtype out, const CUtensorMap& map_a, const CUtensorMap& map_b,
                       const CUtensorMap& map_b_up, const KernelArgs& args, int grid,
                       int64_t smem_bytes, cudaStream_t stream) {
  return out == GemmOutDtype::kBF16 ? Launch<kDtype, kEpilogue, GemmOutDtype::kBF16>(
                                          map_a, map_b, map_b_up, args, grid, smem_bytes, stream)
                                    : Launch<kDtype, kEpilogue, GemmOutDtype::kF32>(
                                          map_a, map_b, map_b_up, args, grid, smem_bytes, stream);
}

template <GemmDtype kDtype>
absl::Status LaunchFor(GemmEpilogue epilogue, GemmOutDtype out, const CUtensorMap& map_a,
                       const CUtensorMap& map_b, const CUtensorMap& map_b_up,
                       const KernelArgs& args, int grid, int64_t smem_bytes, cudaStream_t stream) {
  return epilogue == GemmEpilogue::kStore
             ? LaunchFor<kDtype, GemmEpilogue::kStore>(out, map_a, map_b, map_b_up, args, grid,
                                                       smem_bytes, stream)
             : LaunchFor<kDtype, GemmEpilogue::kSwiGLU>(out, map_a, map_b, map_b_up, args, grid,
                                                        smem_bytes, stream);
}

}  // namespace

bool GroupedGemmSm90Supported(int device) { return CheckDevice(device).ok(); }

absl::Status GroupedGemmSm90CanImplement(const GroupedGemmParams& p) {
  MOE_RETURN_IF_ERROR(ValidateGroupedGemmParams(p));
  if (p.k % 16 != 0) {
    return Unimplemented(absl::StrCat(
        "k = ", p.k, " is not a multiple of 16 (TMA needs 16-byte aligned row strides)"));
  }
  if (p.n % 16 != 0) {
    return Unimplemented(absl::StrCat(
        "n = ", p.n, " is not a multiple of 16 (the epilogue stores aligned column pairs)"));
  }
  if (p.max_rows > kMaxCoordinate || p.n > kMaxCoordinate || p.k > kMaxCoordinate ||
      p.num_experts > kMaxCoordinate) {
    return Unimplemented(absl::StrCat("max_rows ", p.max_rows, ", n ", p.n, ", k ", p.k,
                                      " and num_experts ", p.num_experts,
                                      " must stay below 2^31 (32-bit TMA coordinates)"));
  }
  if (p.max_rows == 0) return absl::OkStatus();
  if (!Aligned16(p.a) || !Aligned16(p.b) || !Aligned16(p.c) ||
      (p.epilogue == GemmEpilogue::kSwiGLU && !Aligned16(p.b_up))) {
    return Unimplemented("a, b, b_up and c must be 16-byte aligned (TMA and vector stores)");
  }
  return absl::OkStatus();
}

absl::Status GroupedGemmSm90(const GroupedGemmParams& p, cudaStream_t stream) {
  MOE_RETURN_IF_ERROR(GroupedGemmSm90CanImplement(p));
  int device = 0;
  MOE_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  MOE_RETURN_IF_ERROR(CheckDevice(device));
  if (p.max_rows == 0) return absl::OkStatus();

  int num_sms = 0, smem_optin = 0;
  MOE_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device));
  MOE_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const int block_n = sm90::BlockN(p.epilogue);
  const int64_t max_tiles = MaxGroupedTiles(p.max_rows, p.num_experts, p.n, sm90::kBlockM, block_n);
  const PersistentLaunch launch = PersistentLaunchConfig(
      max_tiles, num_sms, smem_optin, sm90::kStageBytes, sm90::kMinStages, sm90::kMaxStages);
  if (launch.stages == 0) {
    return absl::InternalError(absl::StrCat("GroupedGemmSm90: ", smem_optin,
                                            " bytes of shared memory per block fit no ",
                                            sm90::kMinStages, "-stage pipeline"));
  }
  if (launch.grid == 0) return absl::OkStatus();

  const int b_box_rows = p.epilogue == GemmEpilogue::kSwiGLU ? sm90::kBRows / 2 : sm90::kBRows;
  MOE_ASSIGN_OR_RETURN(CUtensorMap map_a,
                       KMajorTensorMap(p.a, p.dtype, p.k, p.max_rows, 0, sm90::kBlockM, "a"));
  MOE_ASSIGN_OR_RETURN(CUtensorMap map_b,
                       KMajorTensorMap(p.b, p.dtype, p.k, p.n, p.num_experts, b_box_rows, "b"));
  CUtensorMap map_b_up = map_b;  // unused by kStore
  if (p.epilogue == GemmEpilogue::kSwiGLU) {
    MOE_ASSIGN_OR_RETURN(
        map_b_up, KMajorTensorMap(p.b_up, p.dtype, p.k, p.n, p.num_experts, b_box_rows, "b_up"));
  }
  KernelArgs args;
  args.offsets = p.offsets;
  args.a_scales = p.a_scales;
  args.b_scales = p.b_scales;
  args.b_up_scales = p.b_up_scales;
  args.c = p.c;
  args.num_experts = p.num_experts;
  args.n = p.n;
  args.k = p.k;
  args.max_rows = p.max_rows;
  args.stages = launch.stages;
  return p.dtype == GemmDtype::kBF16
             ? LaunchFor<GemmDtype::kBF16>(p.epilogue, p.out_dtype, map_a, map_b, map_b_up, args,
                                           launch.grid, launch.smem_bytes, stream)
             : LaunchFor<GemmDtype::kFP8E4M3>(p.epilogue, p.out_dtype, map_a, map_b, map_b_up, args,
                                              launch.grid, launch.smem_bytes, stream);
}

}  // namespace moe::kernels::cuda
