// The machine's ceilings that `moe bench` measures in the same run: a vendor dense GEMM per
// weight dtype (OpenBLAS sgemm, oneDNN BF16 matmul) and STREAM-like memory bandwidth.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace moe::tools {

// Whether the build links OpenBLAS / oneDNN (CMake found libopenblas-dev / libdnnl-dev).
bool HaveOpenBlas();
bool HaveOneDnn();

// The kernel family OpenBLAS picked for this CPU ("Zen", "SkylakeX", ...), plus a note when
// OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE is set in the environment.
std::string OpenBlasCore();

// Best-of-`repeats` GFLOP/s of C[m, n] = A[m, k] . B[n, k]^T by cblas_sgemm on `threads`
// threads (the plain bench's ceiling). kUnimplemented with the reason when the build has no
// OpenBLAS.
absl::StatusOr<double> SgemmGflops(int64_t m, int64_t n, int64_t k, int threads, int repeats);

// The OpenBLAS kernel family this CPU is best served by ("Cooperlake", "SkylakeX", "Haswell"),
// when OpenBLAS picked a weaker one: it does not know CPUs newer than itself (0.3.21 runs
// Sapphire and Emerald Rapids with its SSE3 "Prescott" kernels) and OPENBLAS_CORETYPE may
// force one. nullopt when the pick is already right or the build has no OpenBLAS.
std::optional<std::string> BetterOpenBlasCore();

// Ceilings timed one call at a time, so that `moe bench --compare` can interleave them with
// the forwards they are compared to: these machines are shared, and their speed changes within
// a run (the AMX and FMA units of a core are shared with another tenant's hyperthread).
class CeilingProbes {
 public:
  // GEMMs of C[m, n] = A[m, k] . B[n, k]^T (cblas_sgemm; oneDNN's matmul with BF16 inputs and
  // F32 output) and a triad over three arrays of `triad_bytes`.
  CeilingProbes(int64_t m, int64_t n, int64_t k, int64_t triad_bytes);
  ~CeilingProbes();

  // GFLOP/s of one call; 0 when the library is missing (or has no BF16 GEMM for this CPU).
  double Sgemm();
  double Bf16Gemm();
  // GB/s of one triad pass a[i] = b[i] + s * c[i] (12 bytes counted per element).
  double Triad();

  // "OpenBLAS sgemm, Cooperlake", "oneDNN matmul bf16 (...)" or why there is none.
  bool has_bf16() const;
  const std::string& sgemm_source() const { return sgemm_source_; }
  const std::string& bf16_source() const { return bf16_source_; }
  int64_t m() const { return m_; }
  int64_t n() const { return n_; }
  int64_t k() const { return k_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string sgemm_source_, bf16_source_;
  int64_t m_, n_, k_;
};

// The environment variable in which ReexecForCeilings leaves its note for the new process.
inline constexpr char kOpenBlasNoteVariable[] = "MOE_OPENBLAS_NOTE";

// OpenBLAS reads its settings once, when it loads. For `moe bench --compare`, this runs the
// process again (same arguments, /proc/self/exe) with OPENBLAS_CORETYPE set to
// BetterOpenBlasCore() (and OPENBLAS_L2_SIZE unset) when there is one, and with
// OPENBLAS_THREAD_TIMEOUT=4 unless set (OpenBLAS's idle threads then sleep at once instead of
// spinning beside the forward timed right after a ceiling call). Leaves a note of what it
// changed in kOpenBlasNoteVariable. Returns only on failure, when there is nothing to change,
// or when the note is already set (no second re-run).
absl::Status ReexecForCeilings();

}  // namespace moe::tools
