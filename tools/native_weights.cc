#include "tools/native_weights.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "configs/layer_config.h"
#include "moe/base/status_macros.h"
#include "moe/checkpoint/checkpoint.h"
#include "moe/checkpoint/safetensors_writer.h"
#include "tools/cli.h"

namespace moe::tools {
namespace {

// The MoeLayerWeights member that holds the tensor called `name` (const or not), or null.
template <typename W>
auto Slot(W& w, const std::string& name) -> decltype(&w.router) {
  if (name == "router") return &w.router;
  if (name == "selection_bias") return &w.selection_bias;
  if (name == "experts.gate") return &w.experts.gate;
  if (name == "experts.up") return &w.experts.up;
  if (name == "experts.down") return &w.experts.down;
  if (name == "shared.gate") return &w.shared.gate;
  if (name == "shared.up") return &w.shared.up;
  if (name == "shared.down") return &w.shared.down;
  if (name == "shared_gate") return &w.shared_gate;
  return nullptr;
}

std::string SpecNames(const std::vector<NativeTensorSpec>& specs) {
  return absl::StrJoin(specs, ", ", [](std::string* out, const NativeTensorSpec& s) {
    absl::StrAppend(out, s.name);
  });
}

}  // namespace

std::vector<NativeTensorSpec> NativeTensorSpecs(const config::LayerConfig& c) {
  const int64_t e = c.num_experts();
  const int64_t d = c.d_model();
  const bool gated = config::IsGated(c.activation());
  std::vector<NativeTensorSpec> specs = {{"router", {e, d}}};
  if (c.router().selection_bias()) specs.push_back({"selection_bias", {e}});
  if (gated) specs.push_back({"experts.gate", {e, c.d_ff(), d}});
  specs.push_back({"experts.up", {e, c.d_ff(), d}});
  specs.push_back({"experts.down", {e, d, c.d_ff()}});
  const int64_t shared_dff = config::SharedExpertsDff(c);
  if (shared_dff > 0) {
    if (gated) specs.push_back({"shared.gate", {1, shared_dff, d}});
    specs.push_back({"shared.up", {1, shared_dff, d}});
    specs.push_back({"shared.down", {1, d, shared_dff}});
    if (c.shared_experts().sigmoid_gate()) specs.push_back({"shared_gate", {1, d}});
  }
  return specs;
}

int64_t NativeWeightCount(const config::LayerConfig& config) {
  int64_t count = 0;
  for (const NativeTensorSpec& spec : NativeTensorSpecs(config)) {
    int64_t n = 1;
    for (int64_t d : spec.shape) n *= d;
    count += n;
  }
  return count;
}

absl::StatusOr<MoeLayerWeights> LoadNativeWeights(const config::LayerConfig& config,
                                                  const std::string& path) {
  MOE_ASSIGN_OR_RETURN(Checkpoint checkpoint, Checkpoint::Open(path));
  MOE_RETURN_IF_ERROR(
      CheckFitsInMemory(4.0 * static_cast<double>(NativeWeightCount(config)),
                        absl::StrCat(path, ": the F32 weights of ", config.name())));
  const std::vector<NativeTensorSpec> specs = NativeTensorSpecs(config);
  for (const std::string& name : checkpoint.TensorNames()) {
    bool expected = false;
    for (const NativeTensorSpec& spec : specs) expected = expected || spec.name == name;
    if (!expected) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": unexpected tensor '", name,
                                                     "' (config ", config.name(),
                                                     " takes exactly: ", SpecNames(specs), ")"));
    }
  }
  MoeLayerWeights weights;
  for (const NativeTensorSpec& spec : specs) {
    if (!checkpoint.Contains(spec.name)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": missing tensor '", spec.name,
                                                     "' (expected ", ShapeString(spec.shape),
                                                     " for config ", config.name(), ")"));
    }
    MOE_ASSIGN_OR_RETURN(*Slot(weights, spec.name), checkpoint.ReadF32(spec.name, spec.shape));
  }
  return weights;
}

absl::Status WriteNativeWeights(const config::LayerConfig& config, const MoeLayerWeights& weights,
                                DType dtype, const std::string& path) {
  MOE_RETURN_IF_ERROR(CheckLayerWeights(config, weights));
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("native weights are stored as F32 or BF16, not ", DTypeName(dtype)));
  }
  // NOTE: reserved up front so that `named` may point into it.
  std::vector<Tensor> converted;
  const std::vector<NativeTensorSpec> specs = NativeTensorSpecs(config);
  converted.reserve(specs.size());
  NamedTensors named;
  for (const NativeTensorSpec& spec : specs) {
    const Tensor* source = Slot(weights, spec.name);
    if (dtype == DType::kBF16) {
      Tensor bf16 = Tensor::Zeros(DType::kBF16, source->shape());
      const float* src = source->data<float>();
      uint16_t* dst = bf16.data<uint16_t>();
      for (int64_t i = 0; i < bf16.num_elements(); ++i) dst[i] = F32ToBf16(src[i]);
      converted.push_back(std::move(bf16));
      source = &converted.back();
    }
    named.emplace_back(spec.name, source);
  }
  return WriteSafetensors(path, named, {{"format", "moe-native-layer"}, {"config", config.name()}});
}

}  // namespace moe::tools
