#include "kernels/cpu/cpu_isa.h"

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"

namespace moe::kernels {
namespace {

std::atomic<int> g_override{-1};

bool HasAvx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

}  // namespace

absl::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kPortable:
      return "portable";
  }
  return "?";
}

CpuIsa DetectedCpuIsa() {
  static const CpuIsa detected = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::kAvx2;
    return CpuIsa::kPortable;
  }();
  return detected;
}

CpuIsa ActiveCpuIsa() {
  const int forced = g_override.load(std::memory_order_relaxed);
  return forced >= 0 ? static_cast<CpuIsa>(forced) : DetectedCpuIsa();
}

absl::Status SetCpuIsa(absl::string_view name) {
  CpuIsa isa;
  if (name == "portable") {
    isa = CpuIsa::kPortable;
  } else if (name == "avx2") {
    isa = CpuIsa::kAvx2;
  } else if (name == "auto") {
    g_override.store(-1);
    return absl::OkStatus();
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--isa: unknown ISA '", name, "' (expected auto, avx2 or portable)"));
  }
  if (static_cast<int>(isa) > static_cast<int>(DetectedCpuIsa())) {
    return absl::UnimplementedError(absl::StrCat("--isa: ", name,
                                                 " requested but this CPU lacks it (detected ",
                                                 CpuIsaName(DetectedCpuIsa()), ")"));
  }
  g_override.store(static_cast<int>(isa));
  return absl::OkStatus();
}

std::string CpuIsaReport() {
  std::string report = std::string(CpuIsaName(ActiveCpuIsa()));
  if (ActiveCpuIsa() != DetectedCpuIsa()) {
    absl::StrAppend(&report, " (forced; detected ", CpuIsaName(DetectedCpuIsa()), ")");
  }
  absl::StrAppend(&report, HasAvx512() ? "; AVX-512 present but no AVX-512 kernels yet"
                                       : "; AVX-512 not enabled on this CPU/OS");
  return report;
}

}  // namespace moe::kernels
