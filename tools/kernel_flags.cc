#include "tools/kernel_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/cpu/cpu_isa.h"
#include "moe/base/status_macros.h"

ABSL_FLAG(std::string, weight_dtype, "f32",
          "Expert weight format, packed (and quantized) at load: f32, bf16, int8 (per output "
          "channel) or int4 (groups of 32). bench --compare: a comma-separated list.");
ABSL_FLAG(std::string, isa, "auto",
          "CPU microkernels: auto (the best this CPU has), amx, avx512, avx2 or portable.");
ABSL_FLAG(bool, compare, false,
          "bench: also measure OpenBLAS sgemm, oneDNN BF16 GEMM, a STREAM triad and the plain "
          "reference path in the same run, and print each row against them (--json writes "
          "the rows too; --csv and --trace are not available with it).");

namespace moe::tools {

absl::StatusOr<std::vector<kernels::WeightFormat>> WeightFormatsFlag() {
  std::vector<kernels::WeightFormat> formats;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_weight_dtype), ',')) {
    MOE_ASSIGN_OR_RETURN(kernels::WeightFormat f, kernels::ParseWeightFormat(name));
    formats.push_back(f);
  }
  return formats;
}

absl::Status ApplyIsaFlag() { return kernels::SetCpuIsa(absl::GetFlag(FLAGS_isa)); }

std::string KernelsDescription(const experts::ExpertKernelOptions& options) {
  if (options.plain) return "f32 weights, plain reference kernels";
  return absl::StrCat(kernels::WeightFormatName(options.weight_format), " weights, packed ",
                      kernels::CpuIsaName(kernels::ActiveCpuIsa()), " kernels");
}

}  // namespace moe::tools
