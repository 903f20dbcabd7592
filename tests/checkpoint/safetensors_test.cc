// Header validation of safetensors files: valid headers, a corpus of malformed files, and a cheap
// mutation fuzz of ParseSafetensorsHeader.
#include "moe/checkpoint/safetensors.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

// The bytes of a safetensors file: 8-byte little-endian `length` (the header size unless given),
// the header text, then `data_bytes` bytes of data.
std::string FileBytes(const std::string& header, size_t data_bytes = 0,
                      std::optional<uint64_t> length = std::nullopt) {
  const uint64_t n = length.value_or(header.size());
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += header;
  for (size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<char>(i * 7 + 1));
  return out;
}

absl::StatusOr<SafetensorsHeader> Parse(const std::string& bytes) {
  return ParseSafetensorsHeader(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                                "bad.safetensors");
}

// One header entry "name": {dtype, shape, data_offsets [begin, end]}.
std::string Entry(const std::string& name, const std::string& shape, uint64_t begin, uint64_t end,
                  const std::string& dtype = "F32") {
  return absl::StrCat("\"", name, "\":{\"dtype\":\"", dtype, "\",\"shape\":", shape,
                      ",\"data_offsets\":[", begin, ",", end, "]}");
}

TEST(SafetensorsHeaderTest, ParsesTensorsSortedByOffsetAndMetadata) {
  // Listed out of offset order in the text, as some writers do: the reference reader sorts them.
  const std::string header =
      absl::StrCat("{", Entry("b", "[2,3]", 8, 32, "F32"), ",", Entry("a", "[2,2]", 0, 8, "BF16"),
                   ",\"__metadata__\":{\"format\":\"pt\"},", Entry("c", "[]", 32, 40, "I64"), ",",
                   Entry("z", "[0,5]", 40, 40, "I32"), "}     ");
  absl::StatusOr<SafetensorsHeader> parsed = Parse(FileBytes(header, 40));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->tensors.size(), 4u);
  EXPECT_EQ(parsed->tensors[0].name, "a");
  EXPECT_EQ(parsed->tensors[0].dtype, DType::kBF16);
  EXPECT_EQ(parsed->tensors[0].shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(parsed->tensors[1].name, "b");
  EXPECT_EQ(parsed->tensors[1].begin, 8u);
  EXPECT_EQ(parsed->tensors[1].end, 32u);
  EXPECT_EQ(parsed->tensors[2].name, "c");
  EXPECT_TRUE(parsed->tensors[2].shape.empty());
  EXPECT_EQ(parsed->tensors[3].name, "z");
  EXPECT_EQ(parsed->tensors[3].begin, parsed->tensors[3].end);
  EXPECT_EQ(parsed->metadata.at("format"), "pt");
  EXPECT_EQ(parsed->data_offset, 8 + header.size());
}

TEST(SafetensorsHeaderTest, AcceptsEmptyHeaderWithoutData) {
  absl::StatusOr<SafetensorsHeader> parsed = Parse(FileBytes("{}"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->tensors.empty());
}

struct MalformedCase {
  std::string name;
  std::string bytes;
  std::string message;  // a substring the error must contain
};

void PrintTo(const MalformedCase& c, std::ostream* os) { *os << c.name; }

std::vector<MalformedCase> MalformedCases() {
  const std::string f32x2 = Entry("w", "[2]", 0, 8);
  std::vector<MalformedCase> cases = {
      {"EmptyFile", "", "bad.safetensors: empty file"},
      {"ShorterThanLengthPrefix", std::string("\x02\0\0\0\0", 5),
       "only 5 bytes, too short for the 8-byte"},
      {"HeaderLengthZero", FileBytes(""), "header length 0 is too small"},
      {"HeaderLengthPastFile", FileBytes("{}", 0, 100),
       "header length 100 extends past the end of the file (10 bytes)"},
      {"HeaderLengthTooLarge", FileBytes("{}", 0, 200000000),
       "header length 200000000 exceeds the limit of 100000000 bytes"},
      {"HeaderLengthHuge", FileBytes("{}", 0, ~uint64_t{1}), "exceeds the limit"},
      {"HeaderNotJson", FileBytes("{abc}"), "header: not valid JSON (error at byte 2)"},
      {"HeaderTrailingGarbage", FileBytes("{} x"), "header: not valid JSON"},
      {"HeaderTruncatedJson", FileBytes("{\"w\":{\"dtype\":"), "header: not valid JSON"},
      {"HeaderInvalidUtf8", FileBytes("{\"\xff\":1}"), "header: not valid JSON"},
      {"HeaderNulByte", FileBytes(std::string("{\0}", 3)), "header: not valid JSON"},
      {"HeaderIsArray", FileBytes("[1,2]"), "header must be a JSON object, got array"},
      {"HeaderIsString", FileBytes("\"{}\""), "header must be a JSON object, got string"},
      {"EntryNotObject", FileBytes("{\"w\":[0,8]}", 8),
       "tensor \"w\": entry must be an object, got array"},
      {"MissingDtype", FileBytes("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
       "tensor \"w\": missing \"dtype\""},
      {"MissingShape", FileBytes("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8),
       "tensor \"w\": missing \"shape\""},
      {"MissingDataOffsets", FileBytes("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8),
       "tensor \"w\": missing \"data_offsets\""},
      {"ExtraKey",
       FileBytes("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8),
       "tensor \"w\": unexpected key \"x\""},
      {"UnknownDtype", FileBytes(absl::StrCat("{", Entry("w", "[1]", 0, 8, "F64"), "}"), 8),
       "tensor \"w\": unsupported dtype \"F64\""},
      {"DtypeNotString", FileBytes("{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
       "tensor \"w\": dtype must be a string"},
      {"ShapeNotArray", FileBytes(absl::StrCat("{", Entry("w", "2", 0, 8), "}"), 8),
       "tensor \"w\": shape must be an array, got non-negative integer"},
      {"NegativeShape", FileBytes(absl::StrCat("{", Entry("w", "[2,-1]", 0, 8), "}"), 8),
       "tensor \"w\": shape[1] must be a non-negative integer, got -1"},
      {"FractionalShape", FileBytes(absl::StrCat("{", Entry("w", "[2.5]", 0, 8), "}"), 8),
       "tensor \"w\": shape[0] must be a non-negative integer, got 2.5"},
      {"StringShape", FileBytes(absl::StrCat("{", Entry("w", "[\"2\"]", 0, 8), "}"), 8),
       "tensor \"w\": shape[0] must be a non-negative integer, got \"2\""},
      {"ShapeBeyondInt64",
       FileBytes(absl::StrCat("{", Entry("w", "[9223372036854775808]", 0, 8), "}"), 8),
       "shape[0] must be a non-negative integer"},
      {"OffsetsBeginAfterEnd", FileBytes(absl::StrCat("{", Entry("w", "[2]", 8, 0), "}"), 8),
       "tensor \"w\": data_offsets begin 8 is greater than end 0"},
      {"OffsetsOneNumber",
       FileBytes("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8),
       "tensor \"w\": data_offsets must be [begin, end] of non-negative integers, got [8]"},
      {"OffsetsNegative",
       FileBytes("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8),
       "data_offsets must be [begin, end]"},
      {"OffsetsOverlap",
       FileBytes(absl::StrCat("{", f32x2, ",", Entry("v", "[2]", 4, 12), "}"), 12),
       "tensor \"v\" data [4, 12) overlaps tensor \"w\" [0, 8)"},
      {"OffsetsDuplicateRange",
       FileBytes(absl::StrCat("{", f32x2, ",", Entry("v", "[2]", 0, 8), "}"), 8),
       "overlaps tensor"},
      {"OffsetsUnsortedAndOverlapping",
       FileBytes(absl::StrCat("{", Entry("a", "[4]", 4, 20), ",", Entry("b", "[2]", 0, 8), "}"),
                 20),
       "tensor \"a\" data [4, 20) overlaps tensor \"b\" [0, 8)"},
      {"OffsetsGap", FileBytes(absl::StrCat("{", f32x2, ",", Entry("v", "[2]", 12, 20), "}"), 20),
       "gap of 4 unused bytes in the data buffer before tensor \"v\""},
      {"OffsetsNotFromZero", FileBytes(absl::StrCat("{", Entry("w", "[2]", 4, 12), "}"), 12),
       "gap of 4 unused bytes in the data buffer before tensor \"w\" (begins at 4"},
      {"TrailingDataBytes", FileBytes(absl::StrCat("{", f32x2, "}"), 12),
       "data buffer has 4 trailing bytes after the last tensor"},
      {"DataWithoutTensors", FileBytes("{}", 3), "data buffer has 3 trailing bytes"},
      {"TruncatedData", FileBytes(absl::StrCat("{", Entry("w", "[4]", 0, 16), "}"), 10),
       "tensor \"w\": data_offsets end 16 is past the end of the 10-byte data buffer"},
      {"ShapeProductOverflows",
       FileBytes(absl::StrCat("{", Entry("w", "[4294967296,4294967296,16]", 0, 0), "}")),
       "tensor \"w\": shape [4294967296, 4294967296, 16] of F32 overflows 64-bit byte sizes"},
      {"ShapeOverflowsDespiteZeroDim",
       FileBytes(absl::StrCat("{", Entry("w", "[0,4294967296,4294967296]", 0, 0), "}")),
       "overflows 64-bit byte sizes"},
      {"OffsetsDoNotMatchShape", FileBytes(absl::StrCat("{", Entry("w", "[2,2]", 0, 12), "}"), 12),
       "tensor \"w\": data_offsets [0, 12] span 12 bytes but shape [2, 2] of F32 needs 16"},
      {"ZeroSizeShapeWithBytes", FileBytes(absl::StrCat("{", Entry("w", "[3,0]", 0, 4), "}"), 4),
       "span 4 bytes but shape [3, 0] of F32 needs 0"},
      {"DuplicateTensorName",
       FileBytes(absl::StrCat("{", f32x2, ",", Entry("w", "[2]", 8, 16), "}"), 16),
       "bad.safetensors: header: duplicate tensor name \"w\""},
      {"DuplicateKeyInEntry",
       FileBytes(
           "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
       "duplicate key \"dtype\" inside \"w\""},
      {"TooDeepNesting", FileBytes("{\"__metadata__\":{\"a\":[[[\"x\"]]]}}"),
       "nesting deeper than 4 levels inside \"__metadata__\""},
      {"NestingBomb", FileBytes(std::string(100000, '[')), "nesting deeper than 4 levels"},
      {"MetadataNotObject", FileBytes("{\"__metadata__\":[\"a\"]}"),
       "__metadata__ must be an object of string to string, got array"},
      {"MetadataValueNotString", FileBytes("{\"__metadata__\":{\"format\":\"pt\",\"n\":1}}"),
       "__metadata__ must be an object of string to string; key \"n\" holds a non-negative"},
  };
  return cases;
}

class SafetensorsMalformedTest : public testing::TestWithParam<MalformedCase> {};

TEST_P(SafetensorsMalformedTest, IsRejectedWithAMessageNamingTheProblem) {
  absl::StatusOr<SafetensorsHeader> parsed = Parse(GetParam().bytes);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  EXPECT_NE(parsed.status().message().find("bad.safetensors: "), std::string::npos)
      << parsed.status();
  EXPECT_NE(parsed.status().message().find(GetParam().message), std::string::npos)
      << parsed.status() << "\nexpected to contain: " << GetParam().message;
}

INSTANTIATE_TEST_SUITE_P(Corpus, SafetensorsMalformedTest, testing::ValuesIn(MalformedCases()),
                         [](const testing::TestParamInfo<MalformedCase>& info) {
                           return info.param.name;
                         });

// Random mutations of a valid file: the parser must never crash, and whatever it accepts must
// satisfy the documented invariants.
TEST(SafetensorsHeaderTest, SurvivesRandomMutations) {
  const std::string header =
      absl::StrCat("{\"__metadata__\":{\"format\":\"pt\"},", Entry("a", "[2,2]", 0, 8, "BF16"), ",",
                   Entry("b", "[3]", 8, 20), ",", Entry("c", "[1,1]", 20, 28, "I64"), ",",
                   Entry("d", "[0]", 28, 28, "F16"), "}");
  const std::string valid = FileBytes(header, 28);
  ASSERT_TRUE(Parse(valid).ok());
  const std::string alphabet = "{}[]\",:0123456789-.e \\uF3216BI\xff";
  std::mt19937 rng(12345);
  int accepted = 0;
  for (int iteration = 0; iteration < 5000; ++iteration) {
    std::string bytes = valid;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % (bytes.size() + 1);
      switch (rng() % 5) {
        case 0:  // replace with a JSON-ish byte
          if (pos < bytes.size()) bytes[pos] = alphabet[rng() % alphabet.size()];
          break;
        case 1:  // random byte
          if (pos < bytes.size()) bytes[pos] = static_cast<char>(rng());
          break;
        case 2:  // insert
          bytes.insert(pos, 1, alphabet[rng() % alphabet.size()]);
          break;
        case 3:  // delete
          if (pos < bytes.size()) bytes.erase(pos, 1);
          break;
        case 4:  // truncate
          bytes.resize(pos);
          break;
      }
    }
    absl::StatusOr<SafetensorsHeader> parsed = Parse(bytes);
    if (!parsed.ok()) {
      EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    ++accepted;
    uint64_t expected_begin = 0;
    for (const TensorInfo& t : parsed->tensors) {
      EXPECT_EQ(t.begin, expected_begin);
      expected_begin = t.end;
    }
    EXPECT_EQ(parsed->data_offset + expected_begin, bytes.size());
  }
  EXPECT_GT(accepted, 0);  // some mutations (e.g. of data bytes) keep the file valid
}

}  // namespace
}  // namespace moe
