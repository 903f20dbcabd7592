// The machine's ceilings that `moe bench` measures in the same run: a vendor dense GEMM per
// weight dtype (OpenBLAS sgemm, oneDNN BF16 matmul) and STREAM-like memory bandwidth.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace moe::tools {

// Whether the build links OpenBLAS / oneDNN (CMake found libopenblas-dev / libdnnl-dev).
bool HaveOpenBlas();
bool HaveOneDnn();

// The kernel family OpenBLAS picked for this CPU ("Zen", "SkylakeX", ...), plus a note when
// OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE is set in the environment.
std::string OpenBlasCore();

// Best-of-`repeats` GFLOP/s of C[m, n] = A[m, k] . B[n, k]^T on `threads` threads:
// cblas_sgemm (F32), or oneDNN's matmul with BF16 inputs and F32 output. kUnimplemented with
// the reason when the library is missing or has no such GEMM for this CPU.
absl::StatusOr<double> SgemmGflops(int64_t m, int64_t n, int64_t k, int threads, int repeats);
absl::StatusOr<double> Bf16GemmGflops(int64_t m, int64_t n, int64_t k, int threads, int repeats);

// Best-of-`repeats` GB/s of the STREAM triad a[i] = b[i] + s * c[i] over three float arrays of
// `bytes_per_array` bytes each, OpenMP static split; 12 bytes counted per element.
double TriadGbps(int64_t bytes_per_array, int repeats);

}  // namespace moe::tools
