// Config parsing and validation: presets, defaults, and every rejection named.
#include "configs/layer_config.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "configs/presets.h"
#include "gtest/gtest.h"

namespace moe::config {
namespace {

constexpr char kBase[] = "d_model: 16 d_ff: 8 num_experts: 8 top_k: 2 ";

void ExpectRejected(const std::string& text, const std::string& message_part) {
  absl::StatusOr<LayerConfig> c = ParseLayerConfig(text, "bad.textproto");
  ASSERT_FALSE(c.ok()) << "accepted: " << text;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find(message_part), std::string::npos)
      << "message: " << c.status().message() << "\nexpected to contain: " << message_part;
  EXPECT_EQ(c.status().message().rfind("bad.textproto: ", 0), 0u) << c.status().message();
}

TEST(LayerConfigTest, EveryPresetParsesAndValidates) {
  ASSERT_EQ(EmbeddedPresets().size(), 7u);
  for (const char* name : {"mixtral-8x7b", "qwen1.5-moe-a2.7b", "qwen3-30b-a3b", "deepseek-v3",
                           "olmoe-1b-7b", "switch-base-8", "tiny"}) {
    absl::StatusOr<LayerConfig> c = LoadLayerConfig(name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status();
    EXPECT_EQ(c->name(), name);
  }
}

TEST(LayerConfigTest, PresetsCarryThePublishedShapes) {
  absl::StatusOr<LayerConfig> v3 = LoadLayerConfig("deepseek-v3");
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ(v3->d_model(), 7168);
  EXPECT_EQ(v3->num_experts(), 256);
  EXPECT_EQ(v3->router().score_function(), SCORE_SIGMOID);
  EXPECT_FLOAT_EQ(RoutedScalingFactor(*v3), 2.5f);
  EXPECT_EQ(SharedExpertsDff(*v3), 2048);
  absl::StatusOr<LayerConfig> qwen = LoadLayerConfig("qwen1.5-moe-a2.7b");
  ASSERT_TRUE(qwen.ok());
  EXPECT_TRUE(qwen->shared_experts().sigmoid_gate());
  EXPECT_EQ(SharedExpertsDff(*qwen), 5632);
  absl::StatusOr<LayerConfig> sw = LoadLayerConfig("switch-base-8");
  ASSERT_TRUE(sw.ok());
  EXPECT_EQ(ExpertCapacity(*sw, 64), 10);  // ceil(1.25 * 64 * 1 / 8)
}

TEST(LayerConfigTest, DefaultsAreTheZeroValues) {
  absl::StatusOr<LayerConfig> c = ParseLayerConfig(kBase, "min.textproto");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->activation(), ACTIVATION_SWIGLU);
  EXPECT_EQ(c->router().score_function(), SCORE_SOFTMAX);
  EXPECT_FALSE(c->router().renormalize());
  EXPECT_FLOAT_EQ(RoutedScalingFactor(*c), 1.0f);
  EXPECT_EQ(ExpertCapacity(*c, 100), -1);
  const std::string resolved = ResolvedConfigText(*c);
  EXPECT_NE(resolved.find("\"routed_scaling_factor\": 1"), std::string::npos) << resolved;
  EXPECT_NE(resolved.find("ACTIVATION_SWIGLU"), std::string::npos) << resolved;
}

TEST(LayerConfigTest, BadValuesAreRejectedNamingTheField) {
  ExpectRejected("d_ff: 8 num_experts: 8 top_k: 2", "field d_model: must be > 0");
  ExpectRejected("d_model: -4 d_ff: 8 num_experts: 8 top_k: 2", "field d_model: must be > 0");
  ExpectRejected("d_model: 16 d_ff: 0 num_experts: 8 top_k: 2", "field d_ff: must be > 0");
  ExpectRejected("d_model: 16 d_ff: 8 num_experts: 0 top_k: 1", "field num_experts: must be > 0");
  ExpectRejected("d_model: 16 d_ff: 8 num_experts: 8 top_k: 9",
                 "field top_k: top_k (9) exceeds num_experts (8)");
  ExpectRejected(std::string(kBase) + "router { num_groups: 3 topk_groups: 1 }",
                 "field router.num_groups: num_groups (3) does not divide num_experts (8)");
  ExpectRejected(std::string(kBase) + "router { num_groups: 4 topk_groups: 5 }",
                 "field router.topk_groups: topk_groups (5) must be in [1, num_groups = 4]");
  ExpectRejected(std::string(kBase) + "router { num_groups: 4 }", "field router.topk_groups");
  ExpectRejected(
      "d_model: 16 d_ff: 8 num_experts: 8 top_k: 4 router { num_groups: 4 "
      "topk_groups: 1 }",
      "fewer than top_k (4)");
  ExpectRejected(std::string(kBase) + "router { routed_scaling_factor: 0 }",
                 "field router.routed_scaling_factor");
  ExpectRejected(std::string(kBase) + "router { routed_scaling_factor: -1 }",
                 "field router.routed_scaling_factor");
  ExpectRejected(std::string(kBase) + "shared_experts { count: -1 }",
                 "field shared_experts.count: must be >= 0");
  ExpectRejected(std::string(kBase) + "shared_experts { sigmoid_gate: true }",
                 "field shared_experts.count: is 0");
  ExpectRejected(std::string(kBase) + "capacity { policy: DROP_IN_TOKEN_ORDER }",
                 "field capacity.factor");
}

TEST(LayerConfigTest, SyntaxErrorsAndUnknownFieldsNameThePosition) {
  ExpectRejected(std::string(kBase) + "\nexperts_per_token: 3",
                 "line 2 column 18: Message type \"moe.config.LayerConfig\" has no field named "
                 "\"experts_per_token\"");
  ExpectRejected(std::string(kBase) + "activation: ACTIVATION_TANH", "ACTIVATION_TANH");
  ExpectRejected("d_model: 16 d_ff: {", "line 1");
  ExpectRejected("d_model: \"big\"", "line 1");
}

TEST(LayerConfigTest, NestingPastTheRecursionLimitIsRejected) {
  std::string deep = std::string(kBase) + "router ";
  // Unknown-but-nested input must not recurse without bound either.
  for (int i = 0; i < 200; ++i) deep += "{ ";
  ExpectRejected(deep, "bad.textproto: ");
}

TEST(LayerConfigTest, OversizedInputIsRejectedBeforeParsing) {
  std::string huge(static_cast<size_t>(kMaxConfigBytes) + 1, ' ');
  ExpectRejected(huge, "more than the limit of 1048576");
}

TEST(LayerConfigTest, LoadNamesAMissingFileAndListsPresets) {
  absl::StatusOr<LayerConfig> c = LoadLayerConfig("/nonexistent/x.textproto");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("/nonexistent/x.textproto"), std::string::npos);
  EXPECT_NE(c.status().message().find("mixtral-8x7b"), std::string::npos);
}

TEST(LayerConfigTest, LoadReadsAFile) {
  const std::string path = ::testing::TempDir() + "/layer.textproto";
  std::ofstream(path) << kBase << "name: \"from-file\"\n";
  absl::StatusOr<LayerConfig> c = LoadLayerConfig(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name(), "from-file");
  std::ofstream(path) << "d_model: 16 d_ff: 8 num_experts: 8 top_k: 9\n";
  c = LoadLayerConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), path + ": field top_k: top_k (9) exceeds num_experts (8)");
  std::remove(path.c_str());
}

}  // namespace
}  // namespace moe::config
