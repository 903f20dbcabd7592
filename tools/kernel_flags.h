// Flags choosing the CPU expert kernels: --weight_dtype (weight format), --isa (microkernels).
#pragma once

#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "experts/expert_bank.h"
#include "kernels/cpu/packed_weights.h"

ABSL_DECLARE_FLAG(std::string, weight_dtype);
ABSL_DECLARE_FLAG(std::string, isa);
ABSL_DECLARE_FLAG(bool, compare);

namespace moe::tools {

// --weight_dtype as a list ("f32,int4"); kInvalidArgument naming the flag for a bad entry.
absl::StatusOr<std::vector<kernels::WeightFormat>> WeightFormatsFlag();

// Applies --isa (auto, avx2, portable); kInvalidArgument / kUnimplemented naming the flag.
absl::Status ApplyIsaFlag();

// "int4 weights, packed avx2 kernels" for headers.
std::string KernelsDescription(const experts::ExpertKernelOptions& options);

}  // namespace moe::tools
