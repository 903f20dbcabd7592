#include "moe/checkpoint/safetensors_json.h"

#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

using json = nlohmann::json;

// A SAX pass that builds nothing: it tracks nesting depth and the keys seen in every open object,
// and stops at the first violation (returning false from a SAX event aborts the parse).
class StructureChecker {
 public:
  StructureChecker(int max_depth, absl::string_view key_noun)
      : max_depth_(max_depth), key_noun_(key_noun) {}

  const std::string& error() const { return error_; }

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const json::string_t&) { return true; }
  bool string(json::string_t&) { return true; }
  bool binary(json::binary_t&) { return true; }

  bool start_object(std::size_t) {
    if (!Enter()) return false;
    keys_.emplace_back();
    is_object_.push_back(true);
    return true;
  }
  bool end_object() {
    keys_.pop_back();
    is_object_.pop_back();
    return true;
  }
  bool start_array(std::size_t) {
    if (!Enter()) return false;
    is_object_.push_back(false);
    return true;
  }
  bool end_array() {
    is_object_.pop_back();
    return true;
  }

  bool key(json::string_t& key) {
    const bool top_level = is_object_.size() == 1;
    if (top_level) top_key_ = key;
    if (!keys_.back().insert(key).second) {
      error_ = top_level ? absl::StrCat("duplicate ", key_noun_, " ", QuoteForMessage(key))
                         : absl::StrCat("duplicate key ", QuoteForMessage(key), " inside ",
                                        QuoteForMessage(top_key_));
      return false;
    }
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) {
    error_ =
        absl::StrCat("not valid JSON (error at byte ", position, "): ", EscapeForMessage(e.what()));
    return false;
  }

 private:
  bool Enter() {
    if (static_cast<int>(is_object_.size()) >= max_depth_) {
      error_ = absl::StrCat("JSON nesting deeper than ", max_depth_, " levels");
      if (!top_key_.empty()) absl::StrAppend(&error_, " inside ", QuoteForMessage(top_key_));
      return false;
    }
    return true;
  }

  const int max_depth_;
  const std::string key_noun_;
  std::vector<bool> is_object_;                        // one per open container
  std::vector<std::unordered_set<std::string>> keys_;  // one per open object
  std::string top_key_;                                // the last key of the outermost object
  std::string error_;
};

}  // namespace

absl::Status ParseStrictJson(const uint8_t* begin, const uint8_t* end, int max_depth,
                             absl::string_view key_noun, nlohmann::json* out) {
  StructureChecker checker(max_depth, key_noun);
  if (!json::sax_parse(begin, end, &checker)) {
    return absl::InvalidArgumentError(checker.error().empty() ? std::string("not valid JSON")
                                                              : checker.error());
  }
  // The structure is known to be sound: build the DOM.
  *out = json::parse(begin, end, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  return absl::OkStatus();
}

std::string EscapeForMessage(absl::string_view s) {
  std::string out;
  for (char c : s) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f) {
      out.push_back(c);
    } else {
      absl::StrAppend(&out, "\\x", absl::Hex(byte, absl::kZeroPad2));
    }
  }
  return out;
}

std::string QuoteForMessage(absl::string_view s) {
  constexpr size_t kMaxBytes = 128;
  if (s.size() <= kMaxBytes) return absl::StrCat("\"", EscapeForMessage(s), "\"");
  return absl::StrCat("\"", EscapeForMessage(s.substr(0, kMaxBytes)), "\"...");
}

std::string JsonTypeName(const nlohmann::json& j) {
  if (j.is_number_unsigned()) return "non-negative integer";
  if (j.is_number_integer()) return "negative integer";
  if (j.is_number_float()) return "non-integer number";
  return j.type_name();
}

}  // namespace moe
