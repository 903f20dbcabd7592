// Safetensors files: header validation and a memory-mapped, read-only reader.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON header, then the data buffer.
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (byte
// offsets into the data buffer) plus an optional "__metadata__" object of string to string.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "moe/base/dtype.h"

namespace moe {

// The largest header accepted, in bytes (the limit of the reference Rust implementation).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100 * 1000 * 1000;
// The deepest JSON nesting a header may have: header object, entry object, shape array, +1 slack.
inline constexpr int kMaxSafetensorsJsonDepth = 4;

// One tensor of a safetensors file.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offset of the first element in the data buffer
  uint64_t end = 0;    // one past the last byte; end - begin == num_elements * DTypeSize(dtype)
};

// A validated header.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by begin: they tile the data buffer exactly
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // file offset of the data buffer: 8 + header length
};

// Validates the header of a whole safetensors file held in `file_bytes[0, file_size)`; only the
// header and the file size are read, never the tensor data. Checks, in order: the file holds the
// 8-byte length N; 2 <= N <= kMaxSafetensorsHeaderBytes and 8 + N <= file_size; the header is a
// JSON object without duplicate keys or deep nesting; every entry has exactly a whitelisted dtype,
// a shape of non-negative integers and data_offsets [begin <= end] whose span equals the
// overflow-checked shape product times the dtype size; the tensors tile the data buffer with no
// gap, overlap or trailing byte. Errors are kInvalidArgument, prefixed with `source` (the file
// name) and naming the tensor. A pure function of its input: the fuzzing entry point.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* file_bytes,
                                                         uint64_t file_size,
                                                         absl::string_view source);

// A safetensors file mapped read-only into memory (unmapped on destruction). Thread-safe: every
// method is const after Open.
// NOTE: the mapping reflects later changes to the file; truncating it while mapped makes reads
// of the lost pages fault (SIGBUS), as with any mmap reader.
class SafetensorsFile {
 public:
  // Maps `path` and validates its header. kNotFound when the file does not exist,
  // kInvalidArgument when it is malformed; messages name the path.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // The tensor called `name`, or nullptr.
  const TensorInfo* Find(absl::string_view name) const;
  // All tensors, sorted by data offset.
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  // The "__metadata__" entries.
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // The first byte of `info`'s data (info must come from this file). Valid while the file lives;
  // no alignment is guaranteed.
  const uint8_t* data(const TensorInfo& info) const;
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;

  std::string path_;
  const uint8_t* map_ = nullptr;  // the whole file, or nullptr for an empty mapping
  uint64_t size_ = 0;
  SafetensorsHeader header_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in header_.tensors
};

}  // namespace moe
