#include "tools/blas_ceilings.h"

#include <chrono>
#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"
#include "moe/base/tensor.h"

#if MOE_HAVE_OPENBLAS
#include <cblas.h>
extern "C" char* openblas_get_corename(void);
extern "C" void openblas_set_num_threads(int);
#endif
#if MOE_HAVE_DNNL
#include <dnnl.hpp>
#endif

namespace moe::tools {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

bool HaveOpenBlas() { return MOE_HAVE_OPENBLAS != 0; }
bool HaveOneDnn() { return MOE_HAVE_DNNL != 0; }

std::string OpenBlasCore() {
#if MOE_HAVE_OPENBLAS
  std::string core = openblas_get_corename();
  for (const char* var : {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}) {
    if (const char* value = std::getenv(var)) absl::StrAppend(&core, ", ", var, "=", value);
  }
  return core;
#else
  return "none";
#endif
}

absl::StatusOr<double> SgemmGflops(int64_t m, int64_t n, int64_t k, int threads, int repeats) {
#if MOE_HAVE_OPENBLAS
  std::vector<float> a(static_cast<size_t>(m * k), 0.5f), b(static_cast<size_t>(n * k), 0.25f);
  std::vector<float> c(static_cast<size_t>(m * n));
  openblas_set_num_threads(threads);
  double best = 0;
  for (int r = 0; r <= repeats; ++r) {  // the first call warms up
    const Clock::time_point start = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.0f, a.data(), static_cast<int>(k), b.data(),
                static_cast<int>(k), 0.0f, c.data(), static_cast<int>(n));
    const double gflops = 2.0 * m * n * k / Seconds(start) / 1e9;
    if (r > 0 && gflops > best) best = gflops;
  }
  return best;
#else
  return absl::UnimplementedError("built without OpenBLAS (install libopenblas-dev)");
#endif
}

absl::StatusOr<double> Bf16GemmGflops(int64_t m, int64_t n, int64_t k, int threads, int repeats) {
#if MOE_HAVE_DNNL
  using dnnl::memory;
  try {
    dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    dnnl::stream stream(engine);
    const memory::desc a({m, k}, memory::data_type::bf16, memory::format_tag::ab);
    const memory::desc b({k, n}, memory::data_type::bf16, memory::format_tag::ba);
    const memory::desc c({m, n}, memory::data_type::f32, memory::format_tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), engine);
    memory a_mem(a, engine), b_mem(b, engine), c_mem(c, engine);
    const dnnl::matmul matmul(pd);
    double best = 0;
    for (int r = 0; r <= repeats; ++r) {
      const Clock::time_point start = Clock::now();
      matmul.execute(stream,
                     {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
      stream.wait();
      const double gflops = 2.0 * m * n * k / Seconds(start) / 1e9;
      if (r > 0 && gflops > best) best = gflops;
    }
    (void)threads;  // oneDNN uses the OpenMP thread count
    return best;
  } catch (const dnnl::error& e) {
    return absl::UnimplementedError(
        absl::StrCat("oneDNN has no BF16 matmul for this CPU (", e.what(), ")"));
  }
#else
  return absl::UnimplementedError("built without oneDNN (install libdnnl-dev)");
#endif
}

double TriadGbps(int64_t bytes_per_array, int repeats) {
  const int64_t n = bytes_per_array / 4;
  std::unique_ptr<void, AlignedFree> a_buf = AlignedAlloc(static_cast<size_t>(n * 4));
  std::unique_ptr<void, AlignedFree> b_buf = AlignedAlloc(static_cast<size_t>(n * 4));
  std::unique_ptr<void, AlignedFree> c_buf = AlignedAlloc(static_cast<size_t>(n * 4));
  float* a = static_cast<float*>(a_buf.get());
  float* b = static_cast<float*>(b_buf.get());
  float* c = static_cast<float*>(c_buf.get());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    b[i] = 1.0f;
    c[i] = 2.0f;
  }
  double best = 0;
  for (int r = 0; r <= repeats; ++r) {
    const Clock::time_point start = Clock::now();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] = b[i] + 3.0f * c[i];
    const double gbps = 12.0 * static_cast<double>(n) / Seconds(start) / 1e9;
    if (r > 0 && gbps > best) best = gbps;
  }
  volatile float sink = a[n / 2];
  (void)sink;
  return best;
}

}  // namespace moe::tools
