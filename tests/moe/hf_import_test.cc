// ImportHfConfig: each family's config.json keys mapped to LayerConfig, and the errors.
#include "moe/hf_import.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/support/hf_folder.h"

namespace moe {
namespace {

using ::moe::testing::HfConfigJson;
using ::moe::testing::HfExpectedConfig;
using ::moe::testing::HfFolderSpec;
using ::testing::AllOf;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kSource[] = "/models/x/config.json";

HfFolderSpec Spec(const std::string& model_type) {
  HfFolderSpec s;
  s.model_type = model_type;
  if (model_type == "qwen2_moe") {
    s.num_experts = 12;
    s.top_k = 4;
    s.shared_d_ff = 40;
    s.norm_topk_prob = false;
  } else if (model_type == "deepseek_v2") {
    s.num_experts = 12;
    s.top_k = 3;
    s.num_shared = 2;
    s.group_limited = true;
    s.num_groups = 4;
    s.topk_groups = 2;
    s.routed_scaling_factor = 16.0;
    s.first_k_dense_replace = 1;
  } else if (model_type == "deepseek_v3") {
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

absl::StatusOr<config::LayerConfig> Import(const json& j, int layer) {
  return ImportHfConfig(j.dump(), layer, kSource);
}

TEST(HfImportTest, EveryFamilyMapsToTheConfigItsModelingCodeDefines) {
  for (const char* type :
       {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3"}) {
    SCOPED_TRACE(type);
    const HfFolderSpec spec = Spec(type);
    absl::StatusOr<config::LayerConfig> c = Import(HfConfigJson(spec), 1);
    ASSERT_TRUE(c.ok()) << c.status();
    const config::LayerConfig expected = HfExpectedConfig(spec, 1);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*c, expected))
        << c->DebugString() << "\nexpected:\n"
        << expected.DebugString();
  }
}

TEST(HfImportTest, MixtralIsSoftmaxTopkRenormalizedSwiGlu) {
  HfFolderSpec spec = Spec("mixtral");
  spec.d_model = 48;
  spec.d_ff = 40;
  spec.num_experts = 7;
  spec.top_k = 3;
  auto c = Import(HfConfigJson(spec), 0);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->d_model(), 48);
  EXPECT_EQ(c->d_ff(), 40);
  EXPECT_EQ(c->num_experts(), 7);
  EXPECT_EQ(c->top_k(), 3);
  EXPECT_EQ(c->activation(), config::ACTIVATION_SWIGLU);
  EXPECT_EQ(c->router().score_function(), config::SCORE_SOFTMAX);
  EXPECT_EQ(c->router().score_order(), config::SCORE_THEN_TOPK);
  EXPECT_TRUE(c->router().renormalize());
  EXPECT_FALSE(c->router().has_routed_scaling_factor());
  EXPECT_EQ(c->shared_experts().count(), 0);
  EXPECT_EQ(c->weight_dtype(), config::DTYPE_F32);
}

TEST(HfImportTest, Qwen2HasOneSigmoidGatedSharedExpertAndNoRenormalizationByDefault) {
  json j = HfConfigJson(Spec("qwen2_moe"));
  j.erase("norm_topk_prob");
  j.erase("decoder_sparse_step");
  j.erase("mlp_only_layers");
  j["torch_dtype"] = "bfloat16";
  auto c = Import(j, 1);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->d_ff(), 16);  // moe_intermediate_size, not intermediate_size
  EXPECT_EQ(c->num_experts(), 12);
  EXPECT_FALSE(c->router().renormalize());
  EXPECT_EQ(c->shared_experts().count(), 1);
  EXPECT_EQ(c->shared_experts().d_ff(), 40);
  EXPECT_TRUE(c->shared_experts().sigmoid_gate());
  EXPECT_EQ(c->weight_dtype(), config::DTYPE_BF16);
}

TEST(HfImportTest, Qwen3HasNoSharedExpertAndRenormalizesWhenNormTopkProb) {
  HfFolderSpec spec = Spec("qwen3_moe");
  spec.shared_d_ff = 40;  // not a qwen3 key: ignored
  auto c = Import(HfConfigJson(spec), 0);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->router().renormalize());
  EXPECT_EQ(c->shared_experts().count(), 0);
}

TEST(HfImportTest, OlmoeUsesIntermediateSizeAndNormTopkProbDefaultFalse) {
  json j = HfConfigJson(Spec("olmoe"));
  j.erase("norm_topk_prob");
  auto c = Import(j, 1);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->d_ff(), 16);
  EXPECT_FALSE(c->router().renormalize());
  EXPECT_EQ(c->router().score_function(), config::SCORE_SOFTMAX);
}

TEST(HfImportTest, DeepseekV2GroupLimitedGreedyUsesGroupMaxAndRenormalizesWithoutScaling) {
  auto c = Import(HfConfigJson(Spec("deepseek_v2")), 1);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->router().score_function(), config::SCORE_SOFTMAX);
  EXPECT_EQ(c->router().num_groups(), 4);
  EXPECT_EQ(c->router().topk_groups(), 2);
  EXPECT_EQ(c->router().group_score(), config::GROUP_SCORE_MAX);
  EXPECT_FALSE(c->router().selection_bias());
  EXPECT_TRUE(c->router().renormalize());
  EXPECT_FALSE(c->router().has_routed_scaling_factor());  // renormalized weights are not scaled
  EXPECT_EQ(c->shared_experts().count(), 2);
  EXPECT_EQ(c->shared_experts().d_ff(), 16);
  EXPECT_FALSE(c->shared_experts().sigmoid_gate());
}

TEST(HfImportTest, DeepseekV2ScalesInsteadOfRenormalizingWhenNormIsOffOrTopkIsOne) {
  HfFolderSpec spec = Spec("deepseek_v2");
  spec.group_limited = false;
  spec.norm_topk_prob = false;
  auto c = Import(HfConfigJson(spec), 1);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->router().num_groups(), 0);  // greedy: no groups
  EXPECT_FALSE(c->router().renormalize());
  EXPECT_FLOAT_EQ(c->router().routed_scaling_factor(), 16.0f);

  spec.norm_topk_prob = true;
  spec.top_k = 1;
  c = Import(HfConfigJson(spec), 1);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->router().renormalize());
  EXPECT_FLOAT_EQ(c->router().routed_scaling_factor(), 16.0f);
}

TEST(HfImportTest, DeepseekV3IsSigmoidWithBiasTop2SumGroupsRenormalizedThenScaled) {
  HfFolderSpec spec = Spec("deepseek_v3");
  auto c = Import(HfConfigJson(spec), 1);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->router().score_function(), config::SCORE_SIGMOID);
  EXPECT_TRUE(c->router().selection_bias());
  EXPECT_EQ(c->router().group_score(), config::GROUP_SCORE_TOP2_SUM);
  EXPECT_EQ(c->router().num_groups(), 4);
  EXPECT_EQ(c->router().topk_groups(), 2);
  EXPECT_TRUE(c->router().renormalize());
  EXPECT_FLOAT_EQ(c->router().routed_scaling_factor(), 2.5f);
  EXPECT_EQ(c->shared_experts().count(), 1);

  spec.norm_topk_prob = false;
  c = Import(HfConfigJson(spec), 1);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->router().renormalize());
  EXPECT_FLOAT_EQ(c->router().routed_scaling_factor(), 2.5f);  // always scaled
}

TEST(HfImportTest, UnknownModelTypeListsTheSupportedOnes) {
  json j = HfConfigJson(Spec("mixtral"));
  j["model_type"] = "llama";
  auto c = Import(j, 0);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(),
              AllOf(HasSubstr(kSource), HasSubstr("\"llama\""), HasSubstr("mixtral"),
                    HasSubstr("qwen2_moe"), HasSubstr("olmoe"), HasSubstr("deepseek_v3")));
  j.erase("model_type");
  c = Import(j, 0);
  EXPECT_THAT(c.status().message(), AllOf(HasSubstr(kSource), HasSubstr("\"model_type\"")));
}

TEST(HfImportTest, MissingRequiredKeyNamesKeyAndFile) {
  const std::pair<const char*, const char*> cases[] = {
      {"mixtral", "num_local_experts"},
      {"mixtral", "intermediate_size"},
      {"qwen2_moe", "shared_expert_intermediate_size"},
      {"qwen3_moe", "moe_intermediate_size"},
      {"olmoe", "num_experts"},
      {"deepseek_v2", "n_routed_experts"},
      {"deepseek_v3", "n_group"},
      {"deepseek_v3", "num_experts_per_tok"},
      {"olmoe", "hidden_size"},
      {"mixtral", "num_hidden_layers"}};
  for (const auto& [type, key] : cases) {
    SCOPED_TRACE(absl::StrCat(type, " ", key));
    json j = HfConfigJson(Spec(type));
    j.erase(key);
    auto c = Import(j, 1);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(
        c.status().message(),
        AllOf(HasSubstr(kSource), HasSubstr(absl::StrCat("\"", key, "\"")), HasSubstr("missing")));
  }
}

TEST(HfImportTest, BadKeyTypesAndValuesAreNamed) {
  json j = HfConfigJson(Spec("mixtral"));
  j["hidden_size"] = "4096";
  EXPECT_THAT(Import(j, 0).status().message(),
              AllOf(HasSubstr(kSource), HasSubstr("\"hidden_size\""), HasSubstr("integer")));
  j = HfConfigJson(Spec("mixtral"));
  j["num_local_experts"] = -3;
  EXPECT_THAT(Import(j, 0).status().message(), HasSubstr("\"num_local_experts\" must be in"));
  j = HfConfigJson(Spec("mixtral"));
  j["num_experts_per_tok"] = 7;
  EXPECT_THAT(Import(j, 0).status().message(),
              AllOf(HasSubstr("\"num_experts_per_tok\""), HasSubstr("exceeds num_local_experts")));
  j = HfConfigJson(Spec("qwen3_moe"));
  j["norm_topk_prob"] = 1;
  EXPECT_THAT(Import(j, 0).status().message(),
              AllOf(HasSubstr("\"norm_topk_prob\""), HasSubstr("boolean")));
  j = HfConfigJson(Spec("deepseek_v3"));
  j["n_group"] = 3;
  EXPECT_THAT(Import(j, 1).status().message(),
              AllOf(HasSubstr("\"n_group\""), HasSubstr("does not divide")));
  j = HfConfigJson(Spec("deepseek_v2"));
  j["routed_scaling_factor"] = 0;
  j["norm_topk_prob"] = false;
  EXPECT_THAT(Import(j, 1).status().message(), HasSubstr("\"routed_scaling_factor\""));
}

TEST(HfImportTest, UnsupportedVariantsAreUnimplemented) {
  json j = HfConfigJson(Spec("mixtral"));
  j["hidden_act"] = "gelu_pytorch_tanh";
  auto c = Import(j, 0);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(c.status().message(), HasSubstr("\"hidden_act\""));
  j = HfConfigJson(Spec("deepseek_v3"));
  j["scoring_func"] = "softmax";
  EXPECT_EQ(Import(j, 1).status().code(), absl::StatusCode::kUnimplemented);
  j = HfConfigJson(Spec("deepseek_v2"));
  j["topk_method"] = "noaux_tc";
  c = Import(j, 1);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(c.status().message(), HasSubstr("\"topk_method\""));
}

TEST(HfImportTest, GeluMapsToGeGlu) {
  json j = HfConfigJson(Spec("olmoe"));
  j["hidden_act"] = "gelu";
  auto c = Import(j, 0);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->activation(), config::ACTIVATION_GEGLU);
}

TEST(HfImportTest, LayerOutOfRangeIsRejected) {
  const json j = HfConfigJson(Spec("olmoe"));  // 2 layers
  for (int layer : {-1, 2, 1000}) {
    auto c = Import(j, layer);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(),
                AllOf(HasSubstr(kSource), HasSubstr(absl::StrCat("layer ", layer)),
                      HasSubstr("num_hidden_layers = 2")));
  }
}

TEST(HfImportTest, DenseLayersAreRejectedWithTheReason) {
  auto c = Import(HfConfigJson(Spec("deepseek_v3")), 0);  // first_k_dense_replace = 1
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(),
              AllOf(HasSubstr(kSource), HasSubstr("layer 0 is dense in this model"),
                    HasSubstr("first_k_dense_replace = 1")));
  EXPECT_THAT(Import(HfConfigJson(Spec("deepseek_v2")), 0).status().message(),
              HasSubstr("layer 0 is dense"));

  json j = HfConfigJson(Spec("deepseek_v2"));
  j["first_k_dense_replace"] = 0;
  j["moe_layer_freq"] = 2;
  EXPECT_TRUE(Import(j, 0).ok());
  EXPECT_THAT(Import(j, 1).status().message(),
              AllOf(HasSubstr("layer 1 is dense"), HasSubstr("moe_layer_freq = 2")));
  j["n_routed_experts"] = nullptr;
  EXPECT_THAT(Import(j, 0).status().message(),
              AllOf(HasSubstr("layer 0 is dense"), HasSubstr("n_routed_experts")));

  HfFolderSpec qwen = Spec("qwen2_moe");
  qwen.mlp_only_layers = {1};
  EXPECT_TRUE(Import(HfConfigJson(qwen), 0).ok());
  EXPECT_THAT(Import(HfConfigJson(qwen), 1).status().message(),
              AllOf(HasSubstr("layer 1 is dense"), HasSubstr("mlp_only_layers")));

  j = HfConfigJson(Spec("qwen3_moe"));
  j["decoder_sparse_step"] = 2;
  EXPECT_THAT(Import(j, 0).status().message(),
              AllOf(HasSubstr("layer 0 is dense"), HasSubstr("decoder_sparse_step = 2")));
  EXPECT_TRUE(Import(j, 1).ok());  // (1 + 1) % 2 == 0
  j["num_experts"] = 0;
  EXPECT_THAT(Import(j, 1).status().message(),
              AllOf(HasSubstr("layer 1 is dense"), HasSubstr("num_experts = 0")));
}

TEST(HfImportTest, MalformedJsonNamesTheFile) {
  for (const std::string text : {"", "{", "[1, 2]", "{\"model_type\": \"mixtral\",}",
                                 "{\"model_type\": \"mixtral\", \"model_type\": \"olmoe\"}"}) {
    SCOPED_TRACE(text);
    auto c = ImportHfConfig(text, 0, kSource);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), HasSubstr(kSource));
  }
}

}  // namespace
}  // namespace moe
