// The instruction set the packed CPU kernels run with: detected once, overridable for tests.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::kernels {

// Kernel families, from the plainest up; each level includes the ones below it.
//   kAvx2:   AVX2 + FMA.
//   kAvx512: AVX-512 F/BW/VL/DQ with BF16 dot products (AVX512_BF16) and VNNI (Zen 4/5, Cooper
//            Lake, Sapphire Rapids and later).
//   kAmx:    kAvx512 plus AMX tiles with BF16 and AVX-512 VBMI (Sapphire Rapids and later),
//            with the Linux permission to use the tile state granted to this process.
enum class CpuIsa { kPortable, kAvx2, kAvx512, kAmx };

// "portable", "avx2", "avx512", "amx".
absl::string_view CpuIsaName(CpuIsa isa);

// The best level this CPU and OS support (CPUID, the OS-enabled register state, and for AMX
// the arch_prctl permission, requested on the first call).
CpuIsa DetectedCpuIsa();

// The ISA every packed kernel uses from now on: the override if one was set, else the detected
// one. Reading it is cheap and thread-safe.
CpuIsa ActiveCpuIsa();

// Forces an ISA (for tests and `--isa`): "auto" or a name above. kInvalidArgument naming the
// flag value for an unknown name, kUnimplemented when the CPU lacks it ("--isa: avx512
// requested but this CPU lacks it (detected avx2)"). Not thread-safe against running kernels:
// set it before the first forward; weights packed before the change stay valid.
absl::Status SetCpuIsa(absl::string_view name);

// Every ISA at or below the detected one, plainest first (what tests run through).
std::vector<CpuIsa> RunnableCpuIsas();

// A line for `moe bench`: "amx (detected amx: AVX-512 BF16/VNNI, AMX-BF16)".
std::string CpuIsaReport();

}  // namespace moe::kernels
