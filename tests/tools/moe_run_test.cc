// `moe init` and `moe run`: native and Hugging Face layers, outputs equal to MoeLayer::Forward,
// and the errors for bad input files.
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>

#include "configs/layer_config.h"
#include "gtest/gtest.h"
#include "moe/checkpoint/safetensors.h"
#include "moe/checkpoint/safetensors_writer.h"
#include "moe/hf_import.h"
#include "moe/hf_tensor_names.h"
#include "moe/layer_weights.h"
#include "moe/moe_layer.h"
#include "tests/tools/cli_runner.h"

namespace moe::testing {
namespace {

// F32 [num_tokens, d_model], uniform in [-1, 1).
Tensor Hidden(int64_t num_tokens, int64_t d_model, uint64_t seed) {
  Tensor t = Tensor::Zeros(DType::kF32, {num_tokens, d_model});
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int64_t i = 0; i < t.num_elements(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

Tensor ToBf16(const Tensor& f32) {
  Tensor t = Tensor::Zeros(DType::kBF16, f32.shape());
  for (int64_t i = 0; i < t.num_elements(); ++i) {
    t.data<uint16_t>()[i] = F32ToBf16(f32.data<float>()[i]);
  }
  return t;
}

// The tensor `name` of a safetensors file, copied out.
Tensor ReadTensor(const std::string& path, const std::string& name) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return Tensor();
  const TensorInfo* info = (*file)->Find(name);
  EXPECT_NE(info, nullptr) << name;
  if (info == nullptr) return Tensor();
  Tensor t = Tensor::Zeros(info->dtype, info->shape);
  std::memcpy(t.raw(), (*file)->data(*info), static_cast<size_t>(t.num_bytes()));
  return t;
}

void ExpectSameBytes(const Tensor& got, const Tensor& want, const std::string& name) {
  ASSERT_EQ(got.dtype(), want.dtype()) << name;
  ASSERT_EQ(got.shape(), want.shape()) << name;
  EXPECT_EQ(std::memcmp(got.raw(), want.raw(), static_cast<size_t>(got.num_bytes())), 0) << name;
}

// Runs `moe run` with `layer_args` on `hidden` and compares the output file with Forward.
void ExpectRunMatchesForward(const std::vector<std::string>& layer_args, const Tensor& hidden,
                             const MoeLayer& layer) {
  const std::string input = TempPath("in.safetensors");
  const std::string output = TempPath("out.safetensors");
  ASSERT_TRUE(WriteSafetensors(input, {{"hidden_states", &hidden}}).ok());
  std::vector<std::string> args = {"run", "--input", input, "--output", output};
  args.insert(args.end(), layer_args.begin(), layer_args.end());
  CliResult r = RunMoe(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(absl::StrCat(hidden.dim(0), " tokens")), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dropped"), std::string::npos) << r.out;
  absl::StatusOr<LayerOutput> want = layer.Forward(hidden);
  ASSERT_TRUE(want.ok()) << want.status();
  ExpectSameBytes(ReadTensor(output, "output"), want->output, "output");
  ExpectSameBytes(ReadTensor(output, "topk_ids"), want->topk_ids, "topk_ids");
  ExpectSameBytes(ReadTensor(output, "topk_weights"), want->topk_weights, "topk_weights");
}

TEST(MoeRunTest, NativeF32WeightsMatchForwardExactly) {
  const std::string weights = TempPath("w.safetensors");
  CliResult init = RunMoe({"init", "--config=tiny", "--weights", weights, "--seed=7"});
  ASSERT_EQ(init.exit_code, 0) << init.err;
  EXPECT_NE(init.out.find("F32"), std::string::npos) << init.out;
  absl::StatusOr<config::LayerConfig> config = config::LoadLayerConfig("tiny");
  ASSERT_TRUE(config.ok());
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(*config, RandomLayerWeights(*config, 7));
  ASSERT_TRUE(layer.ok()) << layer.status();
  ExpectRunMatchesForward({"--config=tiny", "--weights", weights}, Hidden(13, 64, 3), *layer);
}

TEST(MoeRunTest, NativeBf16WeightsAndBf16InputMatchForward) {
  // A config file with a shared, gated expert and a selection bias; weights stored as BF16.
  const std::string config_path = TempPath("layer.textproto");
  std::ofstream(config_path) << "name: \"mixed\" d_model: 32 d_ff: 24 num_experts: 5 top_k: 2 "
                                "router { score_function: SCORE_SIGMOID selection_bias: true "
                                "renormalize: true } shared_experts { count: 1 sigmoid_gate: "
                                "true }\n";
  const std::string weights = TempPath("w.safetensors");
  CliResult init =
      RunMoe({"init", "--config", config_path, "--weights", weights, "--seed=11", "--dtype=bf16"});
  ASSERT_EQ(init.exit_code, 0) << init.err;
  absl::StatusOr<config::LayerConfig> config = config::LoadLayerConfig(config_path);
  ASSERT_TRUE(config.ok()) << config.status();
  MoeLayerWeights w = RandomLayerWeights(*config, 11);
  for (Tensor* t : {&w.router, &w.selection_bias, &w.experts.gate, &w.experts.up, &w.experts.down,
                    &w.shared.gate, &w.shared.up, &w.shared.down, &w.shared_gate}) {
    for (int64_t i = 0; i < t->num_elements(); ++i) {
      t->data<float>()[i] = Bf16ToF32(F32ToBf16(t->data<float>()[i]));
    }
  }
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(*config, std::move(w));
  ASSERT_TRUE(layer.ok()) << layer.status();
  ExpectRunMatchesForward({"--config", config_path, "--weights", weights, "--threads=1"},
                          ToBf16(Hidden(9, 32, 5)), *layer);
}

TEST(MoeRunTest, HuggingFaceFolderMatchesForward) {
  const std::string dir = TempPath("mixtral");
  ASSERT_EQ(std::system(("mkdir -p " + ShellQuote(dir)).c_str()), 0);
  const std::string config_json =
      R"({"model_type": "mixtral", "num_hidden_layers": 2, "hidden_size": 32,
          "intermediate_size": 48, "num_local_experts": 4, "num_experts_per_tok": 2,
          "hidden_act": "silu", "torch_dtype": "float32"})";
  std::ofstream(dir + "/config.json") << config_json;
  absl::StatusOr<config::LayerConfig> config = ImportHfConfig(config_json, 1, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  MoeLayerWeights w = RandomLayerWeights(*config, 5);
  absl::StatusOr<HfMoeTensorNames> names = HfMoeTensorNames::For("mixtral", 1);
  ASSERT_TRUE(names.ok()) << names.status();
  std::vector<Tensor> slices;  // one [out, in] tensor per expert and projection
  slices.reserve(3 * 4);
  NamedTensors named = {{names->router(), &w.router}};
  for (int64_t e = 0; e < 4; ++e) {
    for (auto [p, stacked] : {std::pair{HfProjection::kGate, &w.experts.gate},
                              std::pair{HfProjection::kUp, &w.experts.up},
                              std::pair{HfProjection::kDown, &w.experts.down}}) {
      Tensor slice = Tensor::Zeros(DType::kF32, {stacked->dim(1), stacked->dim(2)});
      std::memcpy(slice.raw(), stacked->data<float>() + e * slice.num_elements(),
                  static_cast<size_t>(slice.num_bytes()));
      slices.push_back(std::move(slice));
      named.emplace_back(names->Expert(e, p), &slices.back());
    }
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", named).ok());
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(*config, std::move(w));
  ASSERT_TRUE(layer.ok()) << layer.status();
  ExpectRunMatchesForward({"--model", dir, "--layer=1"}, Hidden(6, 32, 9), *layer);
}

// `moe run` on the tiny layer with `input` and extra arguments; expects exit code `code` and
// one error line containing every string of `needles`.
void ExpectRunError(const std::string& input, const std::vector<std::string>& extra, int code,
                    const std::vector<std::string>& needles) {
  const std::string weights = TempPath("w.safetensors");
  ASSERT_EQ(RunMoe({"init", "--config=tiny", "--weights", weights}).exit_code, 0);
  std::vector<std::string> args = {
      "run",     "--config=tiny", "--weights", weights,
      "--input", input,           "--output",  TempPath("out.safetensors")};
  args.insert(args.end(), extra.begin(), extra.end());
  CliResult r = RunMoe(args);
  EXPECT_EQ(r.exit_code, code) << r.err;
  ExpectOneErrorLine(r);
  for (const std::string& needle : needles) {
    EXPECT_NE(r.err.find(needle), std::string::npos) << needle << " not in " << r.err;
  }
  std::ifstream out(TempPath("out.safetensors"));
  EXPECT_FALSE(out.good()) << "no output file after an error";
}

TEST(MoeRunTest, MissingInputFileIsNamed) {
  ExpectRunError(TempPath("absent.safetensors"), {}, 1, {TempPath("absent.safetensors")});
}

TEST(MoeRunTest, InputWithoutHiddenStatesIsNamed) {
  const std::string input = TempPath("in.safetensors");
  Tensor other = Hidden(2, 64, 1);
  ASSERT_TRUE(WriteSafetensors(input, {{"activations", &other}}).ok());
  ExpectRunError(input, {}, 1, {input, "hidden_states", "activations"});
}

TEST(MoeRunTest, HiddenStatesOfTheWrongWidthOrDtypeAreNamed) {
  const std::string input = TempPath("in.safetensors");
  Tensor narrow = Hidden(2, 32, 1);
  ASSERT_TRUE(WriteSafetensors(input, {{"hidden_states", &narrow}}).ok());
  ExpectRunError(input, {}, 1, {"hidden_states", "[2, 32]", "64"});
  Tensor ints = Tensor::Zeros(DType::kI32, {2, 64});
  ASSERT_TRUE(WriteSafetensors(input, {{"hidden_states", &ints}}).ok());
  ExpectRunError(input, {}, 1, {"hidden_states", "I32"});
}

TEST(MoeRunTest, NonFiniteHiddenStatesAreRejected) {
  const std::string input = TempPath("in.safetensors");
  Tensor hidden = Hidden(4, 64, 1);
  hidden.data<float>()[2 * 64 + 5] = NAN;
  ASSERT_TRUE(WriteSafetensors(input, {{"hidden_states", &hidden}}).ok());
  ExpectRunError(input, {}, 1, {input});
}

TEST(MoeRunTest, NotASafetensorsFileIsRejected) {
  const std::string input = TempPath("in.safetensors");
  std::ofstream(input) << "this is not a safetensors file";
  ExpectRunError(input, {}, 1, {input});
}

TEST(MoeRunTest, FlagCombinationsAreUsageErrors) {
  const std::string input = TempPath("in.safetensors");
  ExpectRunError(input, {"--model=/tmp"}, 2, {"--model"});  // both layer sources
  CliResult none = RunMoe({"run", "--input=a", "--output=b"});
  EXPECT_EQ(none.exit_code, 2);
  ExpectOneErrorLine(none);
  CliResult no_layer = RunMoe({"run", "--model=/tmp", "--input=a", "--output=b"});
  EXPECT_EQ(no_layer.exit_code, 2);
  EXPECT_NE(no_layer.err.find("--layer"), std::string::npos) << no_layer.err;
  CliResult no_output = RunMoe({"run", "--config=tiny", "--weights=w", "--input=a"});
  EXPECT_EQ(no_output.exit_code, 2);
  EXPECT_NE(no_output.err.find("--output"), std::string::npos) << no_output.err;
}

TEST(MoeRunTest, WeightsFileMissingATensorIsNamed) {
  const std::string weights = TempPath("partial.safetensors");
  absl::StatusOr<config::LayerConfig> config = config::LoadLayerConfig("tiny");
  ASSERT_TRUE(config.ok());
  MoeLayerWeights w = RandomLayerWeights(*config, 1);
  ASSERT_TRUE(WriteSafetensors(weights, {{"router", &w.router},
                                         {"experts.gate", &w.experts.gate},
                                         {"experts.up", &w.experts.up}})
                  .ok());
  const std::string input = TempPath("in.safetensors");
  Tensor hidden = Hidden(2, 64, 1);
  ASSERT_TRUE(WriteSafetensors(input, {{"hidden_states", &hidden}}).ok());
  CliResult r = RunMoe({"run", "--config=tiny", "--weights", weights, "--input", input, "--output",
                        TempPath("out.safetensors")});
  EXPECT_EQ(r.exit_code, 1);
  ExpectOneErrorLine(r);
  EXPECT_NE(r.err.find("experts.down"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(weights), std::string::npos) << r.err;
}

TEST(MoeRunTest, WeightsOfAnotherConfigAreRejected) {
  const std::string config_path = TempPath("narrow.textproto");
  std::ofstream(config_path) << "name: \"narrow\" d_model: 64 d_ff: 96 num_experts: 8 top_k: 2\n";
  const std::string weights = TempPath("w.safetensors");
  ASSERT_EQ(RunMoe({"init", "--config", config_path, "--weights", weights}).exit_code, 0);
  CliResult r = RunMoe({"run", "--config=tiny", "--weights", weights, "--input", "x", "--output",
                        TempPath("out.safetensors")});
  EXPECT_EQ(r.exit_code, 1);
  ExpectOneErrorLine(r);
  EXPECT_NE(r.err.find(weights), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("experts.gate"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[8, 96, 64]"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moe::testing
