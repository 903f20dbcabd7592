// The instruction set the packed CPU kernels run with: detected once, overridable for tests.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::kernels {

// Kernel families, from the plainest up. kAvx2 needs AVX2 + FMA.
enum class CpuIsa { kPortable, kAvx2 };

// "portable", "avx2".
absl::string_view CpuIsaName(CpuIsa isa);

// What this CPU and OS support (CPUID and the OS-enabled register state, via the compiler's
// cpu-feature probe).
CpuIsa DetectedCpuIsa();

// The ISA every packed kernel uses from now on: the override if one was set, else the detected
// one. Chosen once per process; reading it is cheap and thread-safe.
CpuIsa ActiveCpuIsa();

// Forces an ISA (for tests and `--isa`). kInvalidArgument naming the flag value for an unknown
// name, kUnimplemented when the CPU lacks it ("avx2 requested but this CPU lacks AVX2/FMA").
// Not thread-safe against running kernels: set it before the first forward.
absl::Status SetCpuIsa(absl::string_view name);

// A line for `moe bench`: "avx2 (detected avx2; AVX-512 not enabled by this CPU/OS)".
std::string CpuIsaReport();

}  // namespace moe::kernels
