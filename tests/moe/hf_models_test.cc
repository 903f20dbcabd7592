// LoadHfLayer on generated Hugging Face folders of every family, single-file and sharded, F32
// and BF16: the loaded layer runs through MoeLayer and matches the float64 reference.
#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include "moe/hf_import.h"
#include "moe/moe_layer.h"
#include "tests/support/hf_folder.h"
#include "tests/support/reference_forward.h"
#include "tests/support/test_inputs.h"

namespace moe {
namespace {

using ::moe::testing::HfExpectedConfig;
using ::moe::testing::HfFolder;
using ::moe::testing::HfFolderSpec;
using ::moe::testing::HfLayerIsSparse;
using ::moe::testing::HfLayout;
using ::moe::testing::ScopedTempDir;
using ::moe::testing::WriteHfFolder;
using ::testing::AllOf;
using ::testing::HasSubstr;

// Small shapes per family; E not a power of two where the family allows.
HfFolderSpec FamilySpec(const std::string& type) {
  HfFolderSpec s;
  s.model_type = type;
  if (type == "mixtral") {
    s.d_model = 48;
    s.d_ff = 32;
    s.num_experts = 6;
    s.top_k = 2;
  } else if (type == "qwen2_moe") {
    s.d_model = 32;
    s.d_ff = 16;
    s.num_experts = 12;
    s.top_k = 4;
    s.shared_d_ff = 40;
    s.norm_topk_prob = false;
  } else if (type == "qwen3_moe") {
    s.d_model = 40;
    s.d_ff = 24;
    s.num_experts = 10;
    s.top_k = 3;
    s.mlp_only_layers = {0};
  } else if (type == "olmoe") {
    s.d_model = 64;
    s.d_ff = 48;
    s.num_experts = 6;
    s.top_k = 2;
    s.norm_topk_prob = false;
  } else if (type == "deepseek_v2") {
    s.d_model = 32;
    s.d_ff = 16;
    s.num_experts = 12;
    s.top_k = 3;
    s.num_shared = 2;
    s.group_limited = true;
    s.num_groups = 4;
    s.topk_groups = 2;
    s.routed_scaling_factor = 16.0;
    s.first_k_dense_replace = 1;
  } else if (type == "deepseek_v3") {
    s.d_model = 32;
    s.d_ff = 16;
    s.num_experts = 16;
    s.top_k = 4;
    s.num_shared = 1;
    s.num_groups = 4;
    s.topk_groups = 2;
    s.routed_scaling_factor = 2.5;
    s.first_k_dense_replace = 1;
  }
  return s;
}

void ExpectSameValues(const Tensor& loaded, const Tensor& written, const char* what) {
  ASSERT_EQ(loaded.empty(), written.empty()) << what;
  if (written.empty()) return;
  ASSERT_EQ(loaded.dtype(), DType::kF32) << what;
  ASSERT_EQ(loaded.shape(), written.shape()) << what;
  EXPECT_EQ(std::memcmp(loaded.raw(), written.raw(), static_cast<size_t>(written.num_bytes())), 0)
      << what;
}

void ExpectSameWeights(const MoeLayerWeights& loaded, const MoeLayerWeights& written) {
  ExpectSameValues(loaded.router, written.router, "router");
  ExpectSameValues(loaded.selection_bias, written.selection_bias, "selection_bias");
  ExpectSameValues(loaded.experts.gate, written.experts.gate, "experts.gate");
  ExpectSameValues(loaded.experts.up, written.experts.up, "experts.up");
  ExpectSameValues(loaded.experts.down, written.experts.down, "experts.down");
  ExpectSameValues(loaded.shared.gate, written.shared.gate, "shared.gate");
  ExpectSameValues(loaded.shared.up, written.shared.up, "shared.up");
  ExpectSameValues(loaded.shared.down, written.shared.down, "shared.down");
  ExpectSameValues(loaded.shared_gate, written.shared_gate, "shared_gate");
}

// Runs `layer` and the float64 reference on the same weights and random hidden states.
void ExpectMatchesReference(const MoeLayer& layer, int64_t num_tokens, uint64_t seed) {
  SCOPED_TRACE(absl::StrCat("num_tokens = ", num_tokens));
  const config::LayerConfig& c = layer.config();
  const Tensor hidden = testing::RandomHidden(num_tokens, c.d_model(), seed);
  absl::StatusOr<LayerOutput> out = layer.Forward(hidden);
  ASSERT_TRUE(out.ok()) << out.status();
  const testing::ReferenceOutput ref = testing::ReferenceForward(c, layer.weights(), hidden);
  ASSERT_EQ(ref.output.size(), static_cast<size_t>(num_tokens * c.d_model()));
  EXPECT_LT(testing::RelativeL2(out->output.data<float>(), ref.output), 1e-5);
  const int k = c.top_k();
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int32_t* got = out->topk_ids.data<int32_t>() + t * k;
    std::vector<int32_t> got_set(got, got + k);
    std::vector<int32_t> ref_set(ref.topk_ids.begin() + t * k, ref.topk_ids.begin() + (t + 1) * k);
    std::sort(got_set.begin(), got_set.end());
    std::sort(ref_set.begin(), ref_set.end());
    EXPECT_EQ(got_set, ref_set) << "token " << t;
  }
}

using Param = std::tuple<std::string, HfLayout, DType>;

class HfModelsTest : public ::testing::TestWithParam<Param> {};

TEST_P(HfModelsTest, LoadedLayerMatchesTheWrittenWeightsAndTheReference) {
  const auto& [type, layout, dtype] = GetParam();
  HfFolderSpec spec = FamilySpec(type);
  spec.layout = layout;
  spec.dtype = dtype;
  spec.seed = 17;
  ScopedTempDir dir;
  absl::StatusOr<HfFolder> folder = WriteHfFolder(dir.path(), spec);
  ASSERT_TRUE(folder.ok()) << folder.status();
  int sparse_layers = 0;
  for (int layer = 0; layer < spec.num_layers; ++layer) {
    SCOPED_TRACE(absl::StrCat("layer ", layer));
    absl::StatusOr<HfLayer> loaded = LoadHfLayer(dir.path(), layer);
    if (!HfLayerIsSparse(spec, layer)) {
      EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(loaded.status().message(), HasSubstr("is dense in this model"));
      continue;
    }
    ++sparse_layers;
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(loaded->config,
                                                                   HfExpectedConfig(spec, layer)))
        << loaded->config.DebugString();
    ExpectSameWeights(loaded->weights, folder->layers[static_cast<size_t>(layer)]);
    absl::StatusOr<MoeLayer> moe = MoeLayer::Create(loaded->config, std::move(loaded->weights));
    ASSERT_TRUE(moe.ok()) << moe.status();
    ExpectMatchesReference(*moe, 7, 100 + layer);
    ExpectMatchesReference(*moe, 1, 200 + layer);
  }
  EXPECT_GE(sparse_layers, 1);
}

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  const auto& [type, layout, dtype] = info.param;
  return absl::StrCat(type, layout == HfLayout::kSharded ? "_sharded" : "_single",
                      dtype == DType::kBF16 ? "_bf16" : "_f32");
}

INSTANTIATE_TEST_SUITE_P(
    Families, HfModelsTest,
    ::testing::Combine(::testing::Values("mixtral", "qwen2_moe", "qwen3_moe", "olmoe",
                                         "deepseek_v2", "deepseek_v3"),
                       ::testing::Values(HfLayout::kSingleFile, HfLayout::kSharded),
                       ::testing::Values(DType::kF32, DType::kBF16)),
    ParamName);

TEST(HfLoadErrorsTest, TensorWithWrongShapeIsNamedWithItsFile) {
  for (HfLayout layout : {HfLayout::kSingleFile, HfLayout::kSharded}) {
    HfFolderSpec spec = FamilySpec("qwen2_moe");
    spec.layout = layout;
    spec.misshape_tensor = "model.layers.1.mlp.experts.5.up_proj.weight";
    ScopedTempDir dir;
    absl::StatusOr<HfFolder> folder = WriteHfFolder(dir.path(), spec);
    ASSERT_TRUE(folder.ok()) << folder.status();
    absl::StatusOr<HfLayer> loaded = LoadHfLayer(dir.path(), 1);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(loaded.status().message(), AllOf(HasSubstr(spec.misshape_tensor),
                                                 HasSubstr(folder->file_of[spec.misshape_tensor]),
                                                 HasSubstr("[17, 32]"), HasSubstr("[16, 32]")));
    EXPECT_TRUE(LoadHfLayer(dir.path(), 0).ok());  // the other layer is intact
  }
  HfFolderSpec spec = FamilySpec("deepseek_v3");
  spec.misshape_tensor = "model.layers.1.mlp.gate.e_score_correction_bias";
  ScopedTempDir dir;
  ASSERT_TRUE(WriteHfFolder(dir.path(), spec).ok());
  EXPECT_THAT(LoadHfLayer(dir.path(), 1).status().message(),
              AllOf(HasSubstr(spec.misshape_tensor), HasSubstr("model.safetensors")));
}

TEST(HfLoadErrorsTest, MissingExpertTensorIsNamed) {
  const std::pair<const char*, const char*> cases[] = {
      {"mixtral", "model.layers.0.block_sparse_moe.experts.5.w2.weight"},
      {"olmoe", "model.layers.1.mlp.experts.0.gate_proj.weight"},
      {"deepseek_v2", "model.layers.1.mlp.shared_experts.down_proj.weight"},
      {"qwen2_moe", "model.layers.0.mlp.shared_expert_gate.weight"}};
  for (const auto& [type, name] : cases) {
    for (HfLayout layout : {HfLayout::kSingleFile, HfLayout::kSharded}) {
      SCOPED_TRACE(absl::StrCat(type, " ", name));
      HfFolderSpec spec = FamilySpec(type);
      spec.layout = layout;
      spec.omit_tensor = name;
      ScopedTempDir dir;
      ASSERT_TRUE(WriteHfFolder(dir.path(), spec).ok());
      const int layer = name[13] - '0';  // "model.layers.N."
      absl::StatusOr<HfLayer> loaded = LoadHfLayer(dir.path(), layer);
      EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
      EXPECT_THAT(loaded.status().message(), HasSubstr(name));
    }
  }
}

TEST(HfLoadErrorsTest, OnlyTheShardsHoldingTheLayerAreRead) {
  HfFolderSpec spec = FamilySpec("deepseek_v3");
  spec.layout = HfLayout::kSharded;
  ScopedTempDir dir;
  absl::StatusOr<HfFolder> folder = WriteHfFolder(dir.path(), spec);
  ASSERT_TRUE(folder.ok()) << folder.status();
  // Layer 1 lives in shard 2 of 3: make shards 1 and 3 unreadable garbage.
  const std::string layer_shard = folder->file_of["model.layers.1.mlp.gate.weight"];
  const std::string other_shard = folder->file_of["model.embed_tokens.weight"];
  ASSERT_EQ(layer_shard, "model-00002-of-00003.safetensors");
  for (const std::string& file : {other_shard, folder->file_of["lm_head.weight"]}) {
    ASSERT_NE(file, layer_shard);
    std::ofstream(dir.path() + "/" + file, std::ios::trunc) << "not a safetensors file";
  }
  absl::StatusOr<HfLayer> loaded = LoadHfLayer(dir.path(), 1);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameWeights(loaded->weights, folder->layers[1]);
  // Corrupting the layer's own shard is noticed and named.
  std::ofstream(dir.path() + "/" + layer_shard, std::ios::trunc) << "garbage";
  EXPECT_THAT(LoadHfLayer(dir.path(), 1).status().message(), HasSubstr(layer_shard));
}

TEST(HfLoadErrorsTest, FolderProblemsAreNamed) {
  ScopedTempDir dir;
  absl::StatusOr<HfLayer> loaded = LoadHfLayer(dir.path(), 0);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(loaded.status().message(), HasSubstr("config.json"));

  HfFolderSpec spec = FamilySpec("deepseek_v2");
  ASSERT_TRUE(WriteHfFolder(dir.path(), spec).ok());
  loaded = LoadHfLayer(dir.path(), 0);  // first_k_dense_replace = 1
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(),
              AllOf(HasSubstr("config.json"), HasSubstr("layer 0 is dense")));
  EXPECT_THAT(LoadHfLayer(dir.path(), 2).status().message(), HasSubstr("out of range"));
  std::remove((dir.path() + "/model.safetensors").c_str());
  EXPECT_EQ(LoadHfLayer(dir.path(), 1).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace moe
