// LoadHfLayer: one decoder layer's MoE block from a Hugging Face model folder.
// ImportHfConfig lives in hf_config_import.cc, the tensor names in hf_tensor_names.cc.
#include "moe/hf_import.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "moe/base/status_macros.h"
#include "moe/checkpoint/checkpoint.h"
#include "moe/hf_tensor_names.h"

namespace moe {
namespace {

// The largest config.json accepted, in bytes.
constexpr size_t kMaxHfConfigBytes = size_t{16} << 20;

// One tensor to read: its name and shape in the checkpoint, and where its float32 values go.
struct Wanted {
  std::string name;
  std::vector<int64_t> shape;
  Tensor* target;  // allocated after every Wanted was checked
  int64_t offset;  // in elements
};

// The projections of expert `index` (or of the fused shared experts) into `stack`.
void WantExperts(const HfMoeTensorNames& names, bool shared, int64_t index, int64_t d, int64_t f,
                 bool gated, experts::ExpertWeights& stack, std::vector<Wanted>& out) {
  auto name = [&](HfProjection p) { return shared ? names.Shared(p) : names.Expert(index, p); };
  if (gated) out.push_back({name(HfProjection::kGate), {f, d}, &stack.gate, index * f * d});
  out.push_back({name(HfProjection::kUp), {f, d}, &stack.up, index * f * d});
  out.push_back({name(HfProjection::kDown), {d, f}, &stack.down, index * d * f});
}

// Every tensor of the layer's MoE block, targets in `w`.
std::vector<Wanted> ListTensors(const HfMoeTensorNames& names, const config::LayerConfig& c,
                                MoeLayerWeights& w) {
  const int64_t d = c.d_model(), f = c.d_ff(), e = c.num_experts();
  const int64_t shared_f = config::SharedExpertsDff(c);
  const bool gated = config::IsGated(c.activation());
  std::vector<Wanted> out;
  out.push_back({names.router(), {e, d}, &w.router, 0});
  if (c.router().selection_bias())
    out.push_back({names.selection_bias(), {e}, &w.selection_bias, 0});
  for (int64_t i = 0; i < e; ++i) WantExperts(names, false, i, d, f, gated, w.experts, out);
  if (shared_f > 0) {
    WantExperts(names, true, 0, d, shared_f, gated, w.shared, out);
    if (c.shared_experts().sigmoid_gate()) {
      out.push_back({names.shared_expert_gate(), {1, d}, &w.shared_gate, 0});
    }
  }
  return out;
}

absl::Status AllocateStack(config::Activation activation, int64_t n, int64_t d, int64_t f,
                           experts::ExpertWeights& w) {
  if (config::IsGated(activation)) {
    MOE_ASSIGN_OR_RETURN(w.gate, Tensor::Create(DType::kF32, {n, f, d}));
  }
  MOE_ASSIGN_OR_RETURN(w.up, Tensor::Create(DType::kF32, {n, f, d}));
  MOE_ASSIGN_OR_RETURN(w.down, Tensor::Create(DType::kF32, {n, d, f}));
  return absl::OkStatus();
}

absl::Status Allocate(const config::LayerConfig& c, MoeLayerWeights& w) {
  const int64_t d = c.d_model(), e = c.num_experts();
  MOE_ASSIGN_OR_RETURN(w.router, Tensor::Create(DType::kF32, {e, d}));
  if (c.router().selection_bias()) {
    MOE_ASSIGN_OR_RETURN(w.selection_bias, Tensor::Create(DType::kF32, {e}));
  }
  MOE_RETURN_IF_ERROR(AllocateStack(c.activation(), e, d, c.d_ff(), w.experts));
  const int64_t shared_f = config::SharedExpertsDff(c);
  if (shared_f > 0) {
    MOE_RETURN_IF_ERROR(AllocateStack(c.activation(), 1, d, shared_f, w.shared));
    if (c.shared_experts().sigmoid_gate()) {
      MOE_ASSIGN_OR_RETURN(w.shared_gate, Tensor::Create(DType::kF32, {1, d}));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HfLayer> LoadHfLayer(const std::string& model_dir, int layer) {
  const std::string config_path = absl::StrCat(model_dir, "/config.json");
  MOE_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(config_path, kMaxHfConfigBytes));
  HfLayer result;
  MOE_ASSIGN_OR_RETURN(result.config, ImportHfConfig(text, layer, config_path));
  const config::LayerConfig& c = result.config;
  // ImportHfConfig accepted the file, so it is a JSON object with a string model_type.
  const nlohmann::json root = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto type_it = root.is_object() ? root.find("model_type") : root.end();
  if (type_it == root.end() || !type_it->is_string()) {
    return absl::InternalError(absl::StrCat(config_path, ": model_type vanished on re-parse"));
  }
  MOE_ASSIGN_OR_RETURN(HfMoeTensorNames names,
                       HfMoeTensorNames::For(type_it->get<std::string>(), layer));
  MOE_ASSIGN_OR_RETURN(Checkpoint checkpoint, Checkpoint::Open(model_dir));

  MoeLayerWeights& w = result.weights;
  const std::vector<Wanted> wanted = ListTensors(names, c, w);
  // First check that every tensor exists with its expected shape (reading only the headers of
  // the shards that hold them), so a config that disagrees with the files allocates nothing.
  for (const Wanted& t : wanted) {
    if (t.name.empty()) {
      return absl::InternalError(absl::StrCat(config_path, ": no tensor name for a weight that ",
                                              "layer ", layer, " needs"));
    }
    MOE_ASSIGN_OR_RETURN(TensorInfo info, checkpoint.Info(t.name));
    if (info.shape != t.shape) {
      // ReadF32 checks the shape first; its error names the tensor, the file and both shapes.
      MOE_RETURN_IF_ERROR(checkpoint.ReadF32(t.name, t.shape).status());
      return absl::InternalError(absl::StrCat("tensor ", t.name, ": shape checks disagree"));
    }
  }
  // Then read them, converted to float32, into the stacked layout.
  MOE_RETURN_IF_ERROR(Allocate(c, w));
  for (const Wanted& t : wanted) {
    MOE_ASSIGN_OR_RETURN(Tensor values, checkpoint.ReadF32(t.name, t.shape));
    std::memcpy(t.target->data<float>() + t.offset, values.data<float>(),
                static_cast<size_t>(values.num_bytes()));
  }
  MOE_RETURN_IF_ERROR(CheckLayerWeights(c, w));
  return result;
}

}  // namespace moe
