#include "tools/blas_ceilings.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "kernels/cpu/cpu_isa.h"
#include "moe/base/tensor.h"
#include "tools/bench_clock.h"

#if MOE_HAVE_OPENBLAS
#include <cblas.h>
extern "C" char* openblas_get_corename(void);
extern "C" void openblas_set_num_threads(int);
#endif
#if MOE_HAVE_DNNL
#include <dnnl.hpp>
#endif

namespace moe::tools {

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

namespace {

// How well an OpenBLAS kernel family uses x86: 0 pre-AVX2, 1 AVX2, 2 AVX-512, 3 AVX-512 BF16.
// Names it does not list rank highest (never overridden).
int CoreRank(std::string name) {
  absl::AsciiStrToLower(&name);
  for (const char* weak : {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom",
                           "sandybridge", "barcelona", "bobcat", "bulldozer", "piledriver",
                           "katmai", "coppermine", "northwood", "banias", "opteron", "athlon"}) {
    if (name == weak) return 0;
  }
  if (name == "haswell" || name == "zen" || name == "excavator" || name == "steamroller") {
    return 1;
  }
  if (name == "skylakex") return 2;
  return 3;
}

}  // namespace

std::optional<std::string> BetterOpenBlasCore() {
#if MOE_HAVE_OPENBLAS
  const kernels::CpuIsa isa = kernels::DetectedCpuIsa();
  const char* best = isa == kernels::CpuIsa::kAvx512 || isa == kernels::CpuIsa::kAmx ? "Cooperlake"
                     : isa == kernels::CpuIsa::kAvx2                                 ? "Haswell"
                                                                                     : nullptr;
  if (best == nullptr || CoreRank(openblas_get_corename()) >= CoreRank(best)) return std::nullopt;
  return std::string(best);
#else
  return std::nullopt;
#endif
}

struct CeilingProbes::Impl {
  std::vector<float> a, b, c;                     // sgemm operands
  std::unique_ptr<void, AlignedFree> ta, tb, tc;  // triad arrays
  int64_t triad_n = 0;
  bool have_bf16 = false;
  int threads = 1;
#if MOE_HAVE_DNNL
  std::optional<dnnl::engine> engine;
  std::optional<dnnl::stream> stream;
  std::optional<dnnl::memory> da, db, dc;
  std::optional<dnnl::matmul> matmul;
#endif
};

CeilingProbes::CeilingProbes(int64_t m, int64_t n, int64_t k, int64_t triad_bytes)
    : impl_(std::make_unique<Impl>()), m_(m), n_(n), k_(k) {
  Impl& x = *impl_;
  x.threads = omp_get_max_threads();
  x.triad_n = triad_bytes / 4;
  x.ta = AlignedAlloc(static_cast<size_t>(x.triad_n * 4));
  x.tb = AlignedAlloc(static_cast<size_t>(x.triad_n * 4));
  x.tc = AlignedAlloc(static_cast<size_t>(x.triad_n * 4));
  float* b = static_cast<float*>(x.tb.get());
  float* c = static_cast<float*>(x.tc.get());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < x.triad_n; ++i) {
    b[i] = 1.0f;
    c[i] = 2.0f;
  }
#if MOE_HAVE_OPENBLAS
  x.a.assign(static_cast<size_t>(m * k), 0.5f);
  x.b.assign(static_cast<size_t>(n * k), 0.25f);
  x.c.assign(static_cast<size_t>(m * n), 0.0f);
  sgemm_source_ = absl::StrCat("OpenBLAS sgemm, ", OpenBlasCore());
#else
  sgemm_source_ = "none: built without OpenBLAS (install libopenblas-dev)";
#endif
  // BF16: oneDNN's matmul (Debian's OpenBLAS is built without cblas_sbgemm).
  double onednn = 0;
  std::string onednn_error = "built without oneDNN";
#if MOE_HAVE_DNNL
  try {
    using dnnl::memory;
    x.engine.emplace(dnnl::engine::kind::cpu, 0);
    x.stream.emplace(*x.engine);
    const memory::desc ad({m, k}, memory::data_type::bf16, memory::format_tag::ab);
    const memory::desc bd({k, n}, memory::data_type::bf16, memory::format_tag::ba);
    const memory::desc cd({m, n}, memory::data_type::f32, memory::format_tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(ad, bd, cd), *x.engine);
    x.da.emplace(ad, *x.engine);
    x.db.emplace(bd, *x.engine);
    x.dc.emplace(cd, *x.engine);
    x.matmul.emplace(pd);
    x.have_bf16 = true;
    Bf16Gemm();  // warm-up
    for (int r = 0; r < 3; ++r) onednn = std::max(onednn, Bf16Gemm());
  } catch (const dnnl::error& e) {
    onednn_error = e.what();
    x.matmul.reset();
    x.have_bf16 = false;
  }
#endif
  if (onednn > 0) {
    bf16_source_ = absl::StrFormat("oneDNN matmul bf16 (%.0f GFLOP/s at start)", onednn);
  } else {
    bf16_source_ = absl::StrCat("none (oneDNN: ", onednn_error, "); BF16 rows use sgemm");
  }
}

CeilingProbes::~CeilingProbes() = default;

bool CeilingProbes::has_bf16() const { return impl_->have_bf16; }

absl::Status ReexecForCeilings() {
  if (std::getenv(kOpenBlasNoteVariable) != nullptr) {
    return absl::FailedPreconditionError("already re-run once for OpenBLAS");
  }
  const std::optional<std::string> core = BetterOpenBlasCore();
  const bool timeout = std::getenv("OPENBLAS_THREAD_TIMEOUT") == nullptr && HaveOpenBlas();
  if (!core.has_value() && !timeout) return absl::OkStatus();
  std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
  if (all.empty()) return absl::UnavailableError("cannot read /proc/self/cmdline");
  std::vector<std::string> args = absl::StrSplit(all, '\0', absl::SkipEmpty());
  std::string note = "moe bench re-ran itself for OpenBLAS with";
  if (core.has_value()) {
    absl::StrAppend(&note, " OPENBLAS_CORETYPE=", *core,
                    " and without OPENBLAS_L2_SIZE (it had "
                    "picked ",
                    OpenBlasCore(), " for this CPU)");
    setenv("OPENBLAS_CORETYPE", core->c_str(), 1);
    unsetenv("OPENBLAS_L2_SIZE");
  }
  if (timeout) {
    absl::StrAppend(&note, core.has_value() ? "," : "", " OPENBLAS_THREAD_TIMEOUT=4");
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);
  }
  setenv(kOpenBlasNoteVariable, note.c_str(), 1);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  execv("/proc/self/exe", argv.data());
  return absl::UnavailableError(absl::StrCat("execv /proc/self/exe failed: ", strerror(errno)));
}

double CeilingProbes::Sgemm() {
#if MOE_HAVE_OPENBLAS
  Impl& x = *impl_;
  openblas_set_num_threads(x.threads);
  const Clock::time_point start = Clock::now();
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m_), static_cast<int>(n_),
              static_cast<int>(k_), 1.0f, x.a.data(), static_cast<int>(k_), x.b.data(),
              static_cast<int>(k_), 0.0f, x.c.data(), static_cast<int>(n_));
  return 2.0 * m_ * n_ * k_ / Seconds(start) / 1e9;
#else
  return 0;
#endif
}

double CeilingProbes::Bf16Gemm() {
  Impl& x = *impl_;
  if (!x.have_bf16) return 0;
  const Clock::time_point start = Clock::now();
#if MOE_HAVE_DNNL
  x.matmul->execute(*x.stream,
                    {{DNNL_ARG_SRC, *x.da}, {DNNL_ARG_WEIGHTS, *x.db}, {DNNL_ARG_DST, *x.dc}});
  x.stream->wait();
#endif
  return 2.0 * m_ * n_ * k_ / Seconds(start) / 1e9;
}

double CeilingProbes::Triad() {
  Impl& x = *impl_;
  float* a = static_cast<float*>(x.ta.get());
  const float* b = static_cast<const float*>(x.tb.get());
  const float* c = static_cast<const float*>(x.tc.get());
  const int64_t n = x.triad_n;
  const Clock::time_point start = Clock::now();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) a[i] = b[i] + 3.0f * c[i];
  const double gbps = 12.0 * static_cast<double>(n) / Seconds(start) / 1e9;
  volatile float sink = a[n / 2];
  (void)sink;
  return gbps;
}

}  // namespace moe::tools
