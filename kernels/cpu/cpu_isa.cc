#include "kernels/cpu/cpu_isa.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moe::kernels {
namespace {

std::atomic<int> g_override{-1};

constexpr CpuIsa kAllIsas[] = {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAmx};

// XCR0: which register states the OS saves (bits 1-2 SSE/AVX, 5-7 AVX-512, 17-18 AMX tiles).
uint64_t Xcr0() {
  uint32_t eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || (ecx & (1u << 27)) == 0) return 0;  // OSXSAVE
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

bool HasAvx512Level() {
  __builtin_cpu_init();
  const bool features = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512vnni") &&
                        __builtin_cpu_supports("avx512bf16");
  return features && (Xcr0() & 0xe6) == 0xe6;  // SSE, AVX and the three AVX-512 states
}

// CPUID leaf 7 EDX: AMX-BF16 (bit 22), AMX-TILE (bit 24); the OS must enable the tile state
// (XCR0 bits 17-18) and grant this process its use (Linux: ARCH_REQ_XCOMP_PERM). The amx
// kernels also use AVX-512 VBMI byte permutes (every AMX CPU has them).
bool HasAmx() {
  if (!__builtin_cpu_supports("avx512vbmi")) return false;
  uint32_t eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  if ((edx & (1u << 22)) == 0 || (edx & (1u << 24)) == 0) return false;
  if ((Xcr0() & (3u << 17)) != (3u << 17)) return false;
#ifdef SYS_arch_prctl
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

}  // namespace

absl::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAmx:
      return "amx";
    case CpuIsa::kAvx512:
      return "avx512";
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
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
      return CpuIsa::kPortable;
    }
    if (!HasAvx512Level()) return CpuIsa::kAvx2;
    return HasAmx() ? CpuIsa::kAmx : CpuIsa::kAvx512;
  }();
  return detected;
}

CpuIsa ActiveCpuIsa() {
  const int forced = g_override.load(std::memory_order_relaxed);
  return forced >= 0 ? static_cast<CpuIsa>(forced) : DetectedCpuIsa();
}

absl::Status SetCpuIsa(absl::string_view name) {
  if (name == "auto") {
    g_override.store(-1);
    return absl::OkStatus();
  }
  for (CpuIsa isa : kAllIsas) {
    if (name != CpuIsaName(isa)) continue;
    if (static_cast<int>(isa) > static_cast<int>(DetectedCpuIsa())) {
      return absl::UnimplementedError(absl::StrCat("--isa: ", name,
                                                   " requested but this CPU lacks it (detected ",
                                                   CpuIsaName(DetectedCpuIsa()), ")"));
    }
    g_override.store(static_cast<int>(isa));
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--isa: unknown ISA '", name, "' (expected auto, amx, avx512, avx2 or portable)"));
}

std::vector<CpuIsa> RunnableCpuIsas() {
  std::vector<CpuIsa> isas;
  for (CpuIsa isa : kAllIsas) {
    if (static_cast<int>(isa) <= static_cast<int>(DetectedCpuIsa())) isas.push_back(isa);
  }
  return isas;
}

std::string CpuIsaReport() {
  std::string report(CpuIsaName(ActiveCpuIsa()));
  if (ActiveCpuIsa() != DetectedCpuIsa()) {
    absl::StrAppend(&report, " (forced; detected ", CpuIsaName(DetectedCpuIsa()), ")");
  } else if (DetectedCpuIsa() == CpuIsa::kAvx2) {
    absl::StrAppend(&report, " (no AVX-512 with BF16 and VNNI enabled on this CPU/OS)");
  }
  return report;
}

}  // namespace moe::kernels
