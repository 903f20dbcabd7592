// Strict JSON parsing for untrusted checkpoint metadata (safetensors headers, shard indexes).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace moe {

// Parses the bytes [begin, end) as one JSON value into `out`. Rejects, with kInvalidArgument:
// invalid JSON (syntax, bad UTF-8, trailing garbage), nesting deeper than `max_depth` containers
// (the outermost object or array is depth 1), and a key repeated within one object (nlohmann's
// DOM would silently keep the last one). `key_noun` names a top-level key in messages, e.g.
// "tensor name". Messages carry no file name: the caller prefixes it. Never throws.
absl::Status ParseStrictJson(const uint8_t* begin, const uint8_t* end, int max_depth,
                             absl::string_view key_noun, nlohmann::json* out);

// `s` for an error message: bytes outside printable ASCII written as \xNN.
std::string EscapeForMessage(absl::string_view s);

// `s` quoted for an error message: non-printable bytes hex-escaped, cut after 128 bytes.
std::string QuoteForMessage(absl::string_view s);

// The JSON type of `j` for messages: "object", "array", "string", "number", ...
std::string JsonTypeName(const nlohmann::json& j);

}  // namespace moe
