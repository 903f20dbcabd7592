#include "tools/bench_report.h"

#include <omp.h>

#include <algorithm>
#include <fstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "configs/layer_config.h"
#include "kernels/cpu/matmul.h"
#include "tools/bench_check.h"
#include "tools/bench_clock.h"
#include "tools/blas_ceilings.h"
#include "tools/moe_git_commit.h"  // generated at build time: MOE_GIT_COMMIT

namespace moe::tools {
namespace {

constexpr char kFlopFormula[] =
    "GFLOP/s = 2*P*d_model*(d_ff*(T*top_k - dropped) + shared_d_ff*T) / time, P = 3 if gated "
    "else 2";
constexpr char kFlopNote[] = "routed and shared expert FFNs; the router GEMM is not counted";
constexpr char kBytesFormula[] =
    "GB/s = 4*(P*d_model*(d_ff*active_experts + shared_d_ff) + num_experts*d_model) / time";
constexpr char kBytesNote[] =
    "F32 weight bytes read once: experts with >= 1 slot, shared experts, router";

// Each ceiling is the best of at least this many passes over at least this long, so that a
// short burst of other work on the machine does not lower it.
constexpr int kMinCeilingPasses = 3;
constexpr double kMinCeilingSeconds = 0.25;

int64_t Projections(const config::LayerConfig& c) {
  return config::IsGated(c.activation()) ? 3 : 2;
}

}  // namespace

std::string ActivationName(const config::LayerConfig& c) {
  const std::string& name = config::Activation_Name(c.activation());
  return std::string(absl::StripPrefix(name, "ACTIVATION_"));
}

double RooflineSeconds(double flop, double bytes, const Ceilings& ceilings) {
  const double compute = ceilings.gemm_gflops > 0 ? flop / (ceilings.gemm_gflops * 1e9) : 0;
  const double memory = ceilings.read_gbps > 0 ? bytes / (ceilings.read_gbps * 1e9) : 0;
  return std::max(compute, memory);
}

int32_t ContiguousRank(int64_t index, int64_t count, int32_t num_ranks) {
  const int64_t base = count / num_ranks;
  const int64_t extra = count % num_ranks;  // ranks [0, extra) hold base + 1
  if (index < extra * (base + 1)) return static_cast<int32_t>(index / (base + 1));
  return static_cast<int32_t>(extra + (index - extra * (base + 1)) / base);
}

double UsefulFlop(const config::LayerConfig& c, int64_t tokens, int64_t kept_slots) {
  const double per_row =
      2.0 * static_cast<double>(Projections(c)) * static_cast<double>(c.d_model());
  return per_row * static_cast<double>(c.d_ff()) * static_cast<double>(kept_slots) +
         per_row * static_cast<double>(config::SharedExpertsDff(c)) * static_cast<double>(tokens);
}

double ActiveWeightBytes(const config::LayerConfig& c, int64_t active_experts) {
  const double d_model = static_cast<double>(c.d_model());
  const double projections = static_cast<double>(Projections(c));
  return 4.0 * (projections * d_model * static_cast<double>(c.d_ff()) *
                    static_cast<double>(active_experts) +
                projections * d_model * static_cast<double>(config::SharedExpertsDff(c)) +
                static_cast<double>(c.num_experts()) * d_model);
}

Ceilings MeasureCeilings(const config::LayerConfig& c) {
  Ceilings ceilings;
  // Memory read: a buffer well past the last-level cache, best of the passes. 16 independent
  // partial sums per thread so that the loop vectorizes without reassociation.
  constexpr int kLanes = 16;
  const int64_t n = int64_t{64} << 20;  // floats: 256 MiB
  std::vector<float> buffer(static_cast<size_t>(n), 1.0f);
  double best = 1e30;
  volatile float sink = 0;
  Clock::time_point begin = Clock::now();
  for (int pass = 0; pass < kMinCeilingPasses || Seconds(begin) < kMinCeilingSeconds; ++pass) {
    const Clock::time_point start = Clock::now();
    float total = 0;
#pragma omp parallel reduction(+ : total)
    {
      const int64_t threads = omp_get_num_threads();
      const int64_t id = omp_get_thread_num();
      const int64_t blocks = n / kLanes;
      const float* p = buffer.data();
      float acc[kLanes] = {};
      for (int64_t b = blocks * id / threads; b < blocks * (id + 1) / threads; ++b) {
        for (int l = 0; l < kLanes; ++l) acc[l] += p[b * kLanes + l];
      }
      for (float a : acc) total += a;
    }
    best = std::min(best, Seconds(start));
    sink = sink + total;
  }
  ceilings.read_gbps = static_cast<double>(n) * sizeof(float) / best / 1e9;

  // Dense GEMM: OpenBLAS sgemm when the build has it, else the plain MatmulNT, columns split
  // over the threads.
  const int64_t m = 256;
  const int64_t k = std::clamp<int64_t>(c.d_model(), 1024, 4096);
  const int64_t cols = std::clamp<int64_t>(c.d_ff(), 1024, 4096);
  absl::StatusOr<double> sgemm = SgemmGflops(m, cols, k, omp_get_max_threads(), 5);
  if (sgemm.ok()) {
    ceilings.gemm_gflops = *sgemm;
    ceilings.gemm_name = absl::StrCat("OpenBLAS sgemm, ", OpenBlasCore());
  } else {
    std::vector<float> a(static_cast<size_t>(m * k), 0.5f);
    std::vector<float> b(static_cast<size_t>(cols * k), 0.25f);
    std::vector<float> out(static_cast<size_t>(m * cols));
    best = 1e30;
    begin = Clock::now();
    for (int pass = 0; pass < kMinCeilingPasses || Seconds(begin) < kMinCeilingSeconds; ++pass) {
      const Clock::time_point start = Clock::now();
#pragma omp parallel
      {
        const int64_t threads = omp_get_num_threads();
        const int64_t id = omp_get_thread_num();
        const int64_t begin = cols * id / threads;
        const int64_t end = cols * (id + 1) / threads;
        kernels::MatmulNT({.a = a.data(),
                           .lda = k,
                           .b = b.data() + begin * k,
                           .ldb = k,
                           .c = out.data() + begin,
                           .ldc = cols,
                           .m = m,
                           .n = end - begin,
                           .k = k});
      }
      best = std::min(best, Seconds(start));
    }
    ceilings.gemm_gflops = 2.0 * static_cast<double>(m * cols * k) / best / 1e9;
    ceilings.gemm_name = "plain MatmulNT";
  }
  ceilings.gemm_m = m;
  ceilings.gemm_n = cols;
  ceilings.gemm_k = k;
  return ceilings;
}

std::string CpuModel() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (absl::StartsWith(line, "model name")) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    }
  }
  return "unknown";
}

const std::vector<std::string>& KnownIsaFeatures() {
  static const auto* features = new std::vector<std::string>{
      "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"};
  return *features;
}

std::vector<std::string> CpuIsaFeatures() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  std::vector<std::string> present;
  while (std::getline(cpuinfo, line)) {
    if (!absl::StartsWith(line, "flags")) continue;
    const std::vector<std::string> flags =
        absl::StrSplit(line.substr(line.find(':') + 1), ' ', absl::SkipEmpty());
    for (const std::string& feature : KnownIsaFeatures()) {
      if (std::find(flags.begin(), flags.end(), feature) != flags.end()) {
        present.push_back(feature);
      }
    }
    break;
  }
  return present;
}

std::string GitCommit() { return MOE_GIT_COMMIT; }

std::string TableHeader(const BenchContext& x) {
  const config::LayerConfig& c = x.config;
  std::string capacity =
      c.capacity().policy() == config::DROPLESS
          ? "dropless"
          : absl::StrFormat("capacity factor %g, drop in token order", c.capacity().factor());
  std::string text = absl::StrFormat(
      "# moe bench: %s (%s): d_model %d, d_ff %d, experts %d, top_k %d, %s, shared d_ff %d, "
      "%s\n",
      c.name(), x.config_source, c.d_model(), c.d_ff(), c.num_experts(), c.top_k(),
      ActivationName(c), config::SharedExpertsDff(c), capacity);
  absl::StrAppendFormat(&text,
                        "# weights: %.2f GB F32, random (seed %d), initialized in %.1f s; "
                        "inputs: %s (seed %d)%s\n",
                        x.weight_gb, x.seed, x.weight_init_seconds, x.input_dist, x.seed,
                        x.skew.empty() ? "" : absl::StrCat(", experts drawn from --skew ", x.skew));
  absl::StrAppendFormat(&text, "# machine: %s, %d cores; threads %d; commit %s\n", x.cpu, x.cores,
                        x.threads, x.commit);
  absl::StrAppendFormat(&text, "# experts: %s\n", x.kernels);
  absl::StrAppendFormat(&text, "# timing: %d warm-up + median of %d forwards per row\n", x.warmup,
                        x.repeats);
  absl::StrAppendFormat(&text,
                        "# ceilings (measured now): dense GEMM %.1f GFLOP/s (%s, 256 x "
                        "%d x %d), memory read %.1f GB/s (256 MiB sum)\n",
                        x.ceilings.gemm_gflops, x.ceilings.gemm_name, x.ceilings.gemm_n,
                        x.ceilings.gemm_k, x.ceilings.read_gbps);
  absl::StrAppendFormat(&text, "\n%8s %10s %11s %8s %6s %8s %6s %9s %8s %11s %11s %9s %8s %7s\n",
                        "tokens", "time_ms", "tokens/s", "GFLOP/s", "%gemm", "GB/s", "%read",
                        "route_ms", "plan_ms", "experts_ms", "combine_ms", "load_max", "dropped",
                        "#wrong");
  return text;
}

std::string TableRow(const BenchRow& r, const Ceilings& ceilings) {
  auto percent = [](double value, double ceiling) {
    return ceiling > 0 ? 100 * value / ceiling : 0;
  };
  return absl::StrFormat(
      "%8d %10.3f %11.1f %8.1f %5.0f%% %8.2f %5.0f%% %9.3f %8.3f %11.3f %11.3f %9.2f %8d %7d\n",
      r.tokens, r.seconds * 1e3, r.tokens_per_second, r.gflops,
      percent(r.gflops, ceilings.gemm_gflops), r.gbps, percent(r.gbps, ceilings.read_gbps),
      r.route_seconds * 1e3, r.plan_seconds * 1e3, r.experts_seconds * 1e3, r.combine_seconds * 1e3,
      r.load_max_over_mean, r.dropped_slots, r.wrong);
}

std::string TableFooter() {
  return absl::StrCat("\n# ", kFlopFormula, "\n#   (", kFlopNote, ")\n# ", kBytesFormula, "\n#   (",
                      kBytesNote,
                      ")\n# %gemm, %read: of the ceilings above. Stage columns: medians of "
                      "StageTimes.\n# load_max: max/mean of expert_load. #wrong: up to "
                      "--check_tokens evenly spaced tokens recomputed\n#   in float64 from the "
                      "layer's own top-k; wrong when " MOE_BENCH_CHECK_RULE
                      ",\n#   plus routing slots with a bad id or weight.\n");
}

std::string FlopFormula() { return absl::StrCat(kFlopFormula, " (", kFlopNote, ")"); }

std::string BytesFormula() { return absl::StrCat(kBytesFormula, " (", kBytesNote, ")"); }

}  // namespace moe::tools
