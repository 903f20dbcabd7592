// Writing and reading checkpoints: single files, sharded folders, dtype conversion, and the errors
// of bad paths, shapes and indexes.
#include "moe/checkpoint/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "moe/checkpoint/safetensors_writer.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

bool Contains(absl::string_view haystack, absl::string_view needle) {
  return haystack.find(needle) != absl::string_view::npos;
}

// A fresh folder per test (ctest may run tests in parallel).
class CheckpointTest : public testing::Test {
 protected:
  void SetUp() override {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    dir_ = absl::StrCat(testing::TempDir(), "/moe_checkpoint_", info->name(), "_", getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return absl::StrCat(dir_, "/", name); }

  void WriteText(const std::string& name, const std::string& text) const {
    std::ofstream(Path(name), std::ios::binary) << text;
  }

  std::string dir_;
};

// A tensor whose bytes are i * 37 + seed: distinct per tensor and per position.
Tensor Patterned(DType dtype, std::vector<int64_t> shape, int seed) {
  Tensor t = Tensor::Zeros(dtype, std::move(shape));
  auto* bytes = static_cast<uint8_t*>(t.raw());
  for (int64_t i = 0; i < t.num_bytes(); ++i) bytes[i] = static_cast<uint8_t>(i * 37 + seed);
  return t;
}

void ExpectSameTensor(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.dtype(), want.dtype());
  EXPECT_EQ(got.shape(), want.shape());
  ASSERT_EQ(got.num_bytes(), want.num_bytes());
  EXPECT_EQ(std::memcmp(got.raw(), want.raw(), static_cast<size_t>(want.num_bytes())), 0);
}

TEST_F(CheckpointTest, RoundTripsEveryDtypeInWrittenOrder) {
  std::vector<Tensor> tensors;
  tensors.push_back(Patterned(DType::kF32, {3, 5}, 1));
  tensors.push_back(Patterned(DType::kBF16, {7}, 2));
  tensors.push_back(Patterned(DType::kF16, {1, 3, 1}, 3));
  tensors.push_back(Patterned(DType::kI32, {2, 0}, 4));  // zero elements
  tensors.push_back(Patterned(DType::kI64, {}, 5));      // a scalar
  const std::vector<std::string> names = {"z.f32", "y.bf16", "x.f16", "w.i32", "v.i64"};
  NamedTensors named;
  for (size_t i = 0; i < names.size(); ++i) named.emplace_back(names[i], &tensors[i]);
  const std::string path = Path("model.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, named, {{"format", "pt"}}).ok());
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  ASSERT_EQ((*file)->tensors().size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ((*file)->tensors()[i].name, names[i]);  // data laid out in the given order
  }
  std::ifstream in(path, std::ios::binary);
  uint64_t header_size = 0;
  in.read(reinterpret_cast<char*>(&header_size), 8);
  EXPECT_EQ(header_size % 8, 0u);

  for (const Checkpoint& checkpoint : {*Checkpoint::Open(path), *Checkpoint::Open(dir_)}) {
    EXPECT_EQ(checkpoint.TensorNames(),
              (std::vector<std::string>{"v.i64", "w.i32", "x.f16", "y.bf16", "z.f32"}));
    for (size_t i = 0; i < names.size(); ++i) {
      SCOPED_TRACE(names[i]);
      EXPECT_TRUE(checkpoint.Contains(names[i]));
      absl::StatusOr<Tensor> read = checkpoint.Read(names[i]);
      ASSERT_TRUE(read.ok()) << read.status();
      ExpectSameTensor(*read, tensors[i]);
    }
  }
}

TEST_F(CheckpointTest, ShardedRoundTripOpensOnlyTheShardsItNeeds) {
  std::vector<Tensor> tensors;
  NamedTensors named;
  for (int i = 0; i < 5; ++i) tensors.push_back(Patterned(DType::kF32, {i + 1, 3}, i));
  for (int i = 0; i < 5; ++i) named.emplace_back(absl::StrCat("layers.", i, ".w"), &tensors[i]);
  const std::string dir = Path("sharded");
  ASSERT_TRUE(WriteShardedSafetensors(dir, named, 3).ok());
  for (int shard = 0; shard < 3; ++shard) {
    EXPECT_TRUE(fs::exists(absl::StrCat(dir, "/", ShardFileName(shard, 3))));
  }
  EXPECT_EQ(ShardFileName(0, 3), "model-00001-of-00003.safetensors");

  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->path(), absl::StrCat(dir, "/model.safetensors.index.json"));
  EXPECT_EQ(checkpoint->TensorNames().size(), 5u);
  EXPECT_FALSE(checkpoint->Contains("layers.5.w"));
  ASSERT_TRUE(checkpoint->ValidateAll().ok());
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<Tensor> read = checkpoint->Read(named[static_cast<size_t>(i)].first);
    ASSERT_TRUE(read.ok()) << read.status();
    ExpectSameTensor(*read, tensors[static_cast<size_t>(i)]);
  }

  // Corrupt the last shard before a fresh Open: the other shards still read, the bad one names
  // itself when first needed.
  const std::string last_shard = absl::StrCat(dir, "/", ShardFileName(2, 3));
  fs::resize_file(last_shard, fs::file_size(last_shard) - 4);
  absl::StatusOr<Checkpoint> lazy = Checkpoint::Open(absl::StrCat(dir, "/", kSafetensorsIndexFile));
  ASSERT_TRUE(lazy.ok()) << lazy.status();
  EXPECT_TRUE(lazy->Read("layers.0.w").ok());
  absl::StatusOr<Tensor> bad = lazy->Read("layers.4.w");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(bad.status().message(), last_shard)) << bad.status();
  EXPECT_TRUE(Contains(bad.status().message(), "past the end of the")) << bad.status();
  EXPECT_EQ(lazy->ValidateAll().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CheckpointTest, ReadF32ConvertsBf16AndF16Exactly) {
  const std::vector<float> values = {1.0f, -2.0f, 0.5f, 65504.0f, 0.0f, -0.25f};
  Tensor bf16 = Tensor::Zeros(DType::kBF16, {2, 3});
  for (size_t i = 0; i < values.size(); ++i) bf16.data<uint16_t>()[i] = F32ToBf16(values[i]);
  // IEEE half bits of the same values, and the smallest subnormal 2^-24.
  const std::vector<uint16_t> f16_bits = {0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0xB400};
  Tensor f16 = Tensor::Zeros(DType::kF16, {3, 2});
  for (size_t i = 0; i < f16_bits.size(); ++i) f16.data<uint16_t>()[i] = f16_bits[i];
  Tensor f32 = Patterned(DType::kF32, {4}, 9);
  const std::string path = Path("mixed.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"bf16", &bf16}, {"f16", &f16}, {"f32", &f32}}).ok());
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(path);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();

  absl::StatusOr<Tensor> from_bf16 = checkpoint->ReadF32("bf16", {2, 3});
  ASSERT_TRUE(from_bf16.ok()) << from_bf16.status();
  EXPECT_EQ(from_bf16->dtype(), DType::kF32);
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(from_bf16->data<float>()[i], i == 3 ? 65536.0f : values[i]);  // 65504 rounds up
  }
  absl::StatusOr<Tensor> from_f16 = checkpoint->ReadF32("f16", {3, 2});
  ASSERT_TRUE(from_f16.ok()) << from_f16.status();
  const std::vector<float> f16_values = {1.0f,  -2.0f, 0.5f, 65504.0f, std::ldexp(1.0f, -24),
                                         -0.25f};
  for (size_t i = 0; i < f16_values.size(); ++i) {
    EXPECT_EQ(from_f16->data<float>()[i], f16_values[i]);
  }
  absl::StatusOr<Tensor> from_f32 = checkpoint->ReadF32("f32", {4});
  ASSERT_TRUE(from_f32.ok()) << from_f32.status();
  ExpectSameTensor(*from_f32, f32);
}

TEST_F(CheckpointTest, ReadF32HandlesUnalignedData) {
  // A hand-made file whose 3-byte header puts the BF16 data at an odd file offset.
  const std::string header = "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
  std::string bytes;
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((header.size() >> (8 * i)) & 255));
  bytes += header;
  ASSERT_EQ(bytes.size() % 2, 1u);
  const uint16_t bits[2] = {F32ToBf16(3.0f), F32ToBf16(-0.5f)};
  bytes.append(reinterpret_cast<const char*>(bits), sizeof(bits));
  WriteText("odd.safetensors", bytes);
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(Path("odd.safetensors"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  absl::StatusOr<Tensor> w = checkpoint->ReadF32("w", {2});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->data<float>()[0], 3.0f);
  EXPECT_EQ(w->data<float>()[1], -0.5f);
}

TEST_F(CheckpointTest, ReadF32ShapeMismatchNamesTensorFileAndShapes) {
  Tensor w = Patterned(DType::kBF16, {2, 3}, 0);
  Tensor ids = Patterned(DType::kI32, {4}, 0);
  const std::string path = Path("model.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"experts.0.w1", &w}, {"ids", &ids}}).ok());
  absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(path);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();

  absl::StatusOr<Tensor> read = checkpoint->ReadF32("experts.0.w1", {3, 2});
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(read.status().message(),
                       absl::StrCat(path,
                                    ": tensor \"experts.0.w1\" has shape [2, 3], expected "
                                    "[3, 2]")))
      << read.status();

  absl::StatusOr<Tensor> integer = checkpoint->ReadF32("ids", {4});
  EXPECT_EQ(integer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(integer.status().message(), "\"ids\" has dtype I32, expected F32, BF16"))
      << integer.status();

  absl::StatusOr<Tensor> missing = checkpoint->Read("experts.1.w1");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(
      Contains(missing.status().message(), absl::StrCat(path, ": no tensor \"experts.1.w1\"")))
      << missing.status();
}

TEST_F(CheckpointTest, OpenRejectsMissingPaths) {
  absl::StatusOr<Checkpoint> missing = Checkpoint::Open(Path("nothing.safetensors"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(missing.status().message(), "nothing.safetensors")) << missing.status();
  absl::StatusOr<Checkpoint> empty_dir = Checkpoint::Open(dir_);
  EXPECT_EQ(empty_dir.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(empty_dir.status().message(), "neither model.safetensors.index.json"))
      << empty_dir.status();
  WriteText("empty.safetensors", "");
  absl::StatusOr<Checkpoint> empty = Checkpoint::Open(Path("empty.safetensors"));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(empty.status().message(), "empty.safetensors: empty file"))
      << empty.status();
}

class CheckpointIndexTest : public CheckpointTest {
 protected:
  // Writes shard.safetensors holding tensor "a" and an index with `index_text`, then opens it.
  absl::StatusOr<Checkpoint> OpenWithIndex(const std::string& index_text) {
    Tensor a = Patterned(DType::kF32, {2}, 0);
    EXPECT_TRUE(WriteSafetensors(Path("shard.safetensors"), {{"a", &a}}).ok());
    WriteText(kSafetensorsIndexFile, index_text);
    return Checkpoint::Open(dir_);
  }
  void ExpectError(const absl::StatusOr<Checkpoint>& opened, absl::StatusCode code,
                   const std::string& message) {
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.status().code(), code) << opened.status();
    EXPECT_TRUE(Contains(opened.status().message(), Path(kSafetensorsIndexFile)))
        << opened.status();
    EXPECT_TRUE(Contains(opened.status().message(), message)) << opened.status();
  }
};

TEST_F(CheckpointIndexTest, AcceptsAValidIndex) {
  absl::StatusOr<Checkpoint> opened = OpenWithIndex(
      "{\"metadata\":{\"total_size\":8},\"weight_map\":{\"a\":\"shard.safetensors\"}}");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_TRUE(opened->Read("a").ok());
}

TEST_F(CheckpointIndexTest, RejectsAMissingShardFile) {
  ExpectError(
      OpenWithIndex("{\"weight_map\":{\"a\":\"shard.safetensors\",\"b\":\"gone.safetensors\"}}"),
      absl::StatusCode::kNotFound, "weight_map[\"b\"] names shard \"gone.safetensors\", but");
}

TEST_F(CheckpointIndexTest, RejectsPathsLeavingTheFolder) {
  ExpectError(OpenWithIndex("{\"weight_map\":{\"a\":\"../shard.safetensors\"}}"),
              absl::StatusCode::kInvalidArgument,
              "weight_map[\"a\"] = \"../shard.safetensors\" is not a plain file name");
  ExpectError(OpenWithIndex("{\"weight_map\":{\"a\":\"/etc/passwd\"}}"),
              absl::StatusCode::kInvalidArgument, "is not a plain file name");
  ExpectError(OpenWithIndex("{\"weight_map\":{\"a\":\"..\"}}"), absl::StatusCode::kInvalidArgument,
              "is not a plain file name");
}

TEST_F(CheckpointIndexTest, RejectsMalformedIndexJson) {
  ExpectError(OpenWithIndex("[]"), absl::StatusCode::kInvalidArgument,
              "must be a JSON object, got array");
  ExpectError(OpenWithIndex("{\"weight_map\":"), absl::StatusCode::kInvalidArgument,
              "not valid JSON");
  ExpectError(OpenWithIndex("{\"metadata\":{}}"), absl::StatusCode::kInvalidArgument,
              "\"weight_map\" must be an object");
  ExpectError(OpenWithIndex("{\"weight_map\":{\"a\":3}}"), absl::StatusCode::kInvalidArgument,
              "weight_map[\"a\"] must be a file name string");
  ExpectError(OpenWithIndex("{\"metadata\":3,\"weight_map\":{}}"),
              absl::StatusCode::kInvalidArgument, "\"metadata\" must be an object");
  ExpectError(OpenWithIndex("{\"weight_map\":{\"a\":\"shard.safetensors\"},\"weight_map\":{}}"),
              absl::StatusCode::kInvalidArgument, "duplicate key \"weight_map\"");
}

TEST_F(CheckpointIndexTest, TensorMissingFromItsShardIsNotFoundWhenRead) {
  absl::StatusOr<Checkpoint> opened =
      OpenWithIndex("{\"weight_map\":{\"a\":\"shard.safetensors\",\"b\":\"shard.safetensors\"}}");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_TRUE(opened->Contains("b"));
  absl::StatusOr<Tensor> b = opened->Read("b");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(b.status().message(),
                       absl::StrCat("maps tensor \"b\" to ", Path("shard.safetensors"),
                                    ", which does not contain it")))
      << b.status();
  EXPECT_EQ(opened->ValidateAll().code(), absl::StatusCode::kNotFound);
}

TEST_F(CheckpointTest, WriterRejectsBadInputAndLeavesNoFile) {
  Tensor a = Patterned(DType::kF32, {2}, 0);
  const std::string path = Path("out.safetensors");
  absl::Status repeated = WriteSafetensors(path, {{"a", &a}, {"a", &a}});
  EXPECT_EQ(repeated.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(repeated.message(), absl::StrCat(path, ": tensor \"a\": name repeated")))
      << repeated;
  Tensor empty;
  EXPECT_EQ(WriteSafetensors(path, {{"e", &empty}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(path, {{"__metadata__", &a}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(path));

  const std::string unwritable = Path("no/such/dir/out.safetensors");
  absl::Status io = WriteSafetensors(unwritable, {{"a", &a}});
  EXPECT_EQ(io.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(io.message(), unwritable)) << io;

  absl::Status shards = WriteShardedSafetensors(Path("s"), {{"a", &a}}, 2);
  EXPECT_EQ(shards.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(shards.message(), "cannot split 1 tensors into 2 shards")) << shards;
}

}  // namespace
}  // namespace moe
