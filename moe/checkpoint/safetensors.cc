#include "moe/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "moe/base/checked_math.h"
#include "moe/base/status_macros.h"
#include "moe/base/tensor.h"
#include "moe/checkpoint/safetensors_json.h"

namespace moe {
namespace {

using json = nlohmann::json;

constexpr uint64_t kLengthPrefixBytes = 8;
constexpr uint64_t kMinHeaderBytes = 2;  // "{}"

// A short rendering of a JSON value for messages (never throws, even on odd strings).
std::string Brief(const json& j) {
  std::string s = j.dump(-1, ' ', /*ensure_ascii=*/true, json::error_handler_t::replace);
  if (s.size() > 64) s = s.substr(0, 64) + "...";
  return s;
}

// Validates one header entry (not "__metadata__"); `data_size` is the data buffer length.
absl::Status ParseEntry(const std::string& name, const json& entry, uint64_t data_size,
                        TensorInfo* info) {
  const std::string tensor = absl::StrCat("tensor ", QuoteForMessage(name), ": ");
  if (!entry.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(tensor, "entry must be an object, got ", JsonTypeName(entry)));
  }
  for (const auto& item : entry.items()) {
    const std::string& key = item.key();
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return absl::InvalidArgumentError(absl::StrCat(tensor, "unexpected key ",
                                                     QuoteForMessage(key),
                                                     " (expected dtype, shape, data_offsets)"));
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) {
      return absl::InvalidArgumentError(absl::StrCat(tensor, "missing \"", key, "\""));
    }
  }
  info->name = name;

  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(tensor, "dtype must be a string, got ", JsonTypeName(dtype)));
  }
  absl::StatusOr<DType> parsed = ParseDType(dtype.get_ref<const std::string&>());
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(tensor, parsed.status().message()));
  }
  info->dtype = *parsed;

  const json& shape = entry["shape"];
  if (!shape.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(tensor, "shape must be an array, got ", JsonTypeName(shape)));
  }
  // The byte size is the checked product of the dtype size and every non-zero dim, then zero if
  // any dim is zero: an overflowing shape is rejected wherever its zeros are (no shortcut).
  uint64_t num_bytes = static_cast<uint64_t>(DTypeSize(info->dtype));
  bool overflow = false;
  bool has_zero = false;
  info->shape.clear();
  for (size_t i = 0; i < shape.size(); ++i) {
    const json& dim = shape[i];
    if (!dim.is_number_unsigned() ||
        dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat(tensor, "shape[", i, "] must be a non-negative integer, got ", Brief(dim)));
    }
    const uint64_t d = dim.get<uint64_t>();
    info->shape.push_back(static_cast<int64_t>(d));
    if (d == 0) {
      has_zero = true;
      continue;
    }
    std::optional<uint64_t> product = CheckedMul(num_bytes, d);
    if (!product) overflow = true;
    if (!overflow) num_bytes = *product;
  }
  if (overflow) {
    return absl::InvalidArgumentError(absl::StrCat(tensor, "shape ", ShapeString(info->shape),
                                                   " of ", DTypeName(info->dtype),
                                                   " overflows 64-bit byte sizes"));
  }
  if (has_zero) num_bytes = 0;

  const json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return absl::InvalidArgumentError(
        absl::StrCat(tensor, "data_offsets must be [begin, end] of non-negative integers, got ",
                     Brief(offsets)));
  }
  info->begin = offsets[0].get<uint64_t>();
  info->end = offsets[1].get<uint64_t>();
  if (info->begin > info->end) {
    return absl::InvalidArgumentError(absl::StrCat(tensor, "data_offsets begin ", info->begin,
                                                   " is greater than end ", info->end));
  }
  if (info->end - info->begin != num_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(tensor, "data_offsets [", info->begin, ", ", info->end, "] span ",
                     info->end - info->begin, " bytes but shape ", ShapeString(info->shape), " of ",
                     DTypeName(info->dtype), " needs ", num_bytes));
  }
  if (info->end > data_size) {
    return absl::InvalidArgumentError(absl::StrCat(tensor, "data_offsets end ", info->end,
                                                   " is past the end of the ", data_size,
                                                   "-byte data buffer (file truncated?)"));
  }
  return absl::OkStatus();
}

absl::Status ParseMetadata(const json& metadata, std::map<std::string, std::string>* out) {
  if (!metadata.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "__metadata__ must be an object of string to string, got ", JsonTypeName(metadata)));
  }
  for (const auto& item : metadata.items()) {
    if (!item.value().is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("__metadata__ must be an object of string to string; key ",
                       QuoteForMessage(item.key()), " holds a ", JsonTypeName(item.value())));
    }
    (*out)[item.key()] = item.value().get_ref<const std::string&>();
  }
  return absl::OkStatus();
}

// The body of ParseSafetensorsHeader; messages without the file prefix.
absl::StatusOr<SafetensorsHeader> ParseHeader(const uint8_t* bytes, uint64_t file_size) {
  if (file_size == 0) return absl::InvalidArgumentError("empty file (0 bytes)");
  if (file_size < kLengthPrefixBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("file is only ", file_size, " bytes, too short for the 8-byte header length"));
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];  // little-endian
  if (header_size < kMinHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("header length ", header_size, " is too small (the minimum is 2: \"{}\")"));
  }
  if (header_size > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("header length ", header_size,
                                                   " exceeds the limit of ",
                                                   kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_size > file_size - kLengthPrefixBytes) {
    return absl::InvalidArgumentError(absl::StrCat("header length ", header_size,
                                                   " extends past the end of the file (", file_size,
                                                   " bytes)"));
  }
  SafetensorsHeader header;
  header.data_offset = kLengthPrefixBytes + header_size;
  const uint64_t data_size = file_size - header.data_offset;

  json root;
  absl::Status parsed = ParseStrictJson(bytes + kLengthPrefixBytes, bytes + header.data_offset,
                                        kMaxSafetensorsJsonDepth, "tensor name", &root);
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat("header: ", parsed.message()));
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("header must be a JSON object, got ", JsonTypeName(root)));
  }
  for (const auto& item : root.items()) {
    if (item.key() == "__metadata__") {
      MOE_RETURN_IF_ERROR(ParseMetadata(item.value(), &header.metadata));
      continue;
    }
    TensorInfo info;
    MOE_RETURN_IF_ERROR(ParseEntry(item.key(), item.value(), data_size, &info));
    header.tensors.push_back(std::move(info));
  }

  // The tensors must tile [0, data_size): sorted, each starting where the previous one ended.
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  uint64_t expected_begin = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : header.tensors) {
    if (t.begin < expected_begin) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", QuoteForMessage(t.name), " data [", t.begin, ", ", t.end, ") overlaps tensor ",
          QuoteForMessage(previous->name), " [", previous->begin, ", ", previous->end, ")"));
    }
    if (t.begin > expected_begin) {
      return absl::InvalidArgumentError(
          absl::StrCat("gap of ", t.begin - expected_begin,
                       " unused bytes in the data buffer before tensor ", QuoteForMessage(t.name),
                       " (begins at ", t.begin, ", previous data ends at ", expected_begin, ")"));
    }
    expected_begin = t.end;
    previous = &t;
  }
  if (expected_begin != data_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data buffer has ", data_size - expected_begin, " trailing bytes after the last tensor (",
        "tensors end at ", expected_begin, ", buffer is ", data_size, " bytes)"));
  }
  return header;
}

}  // namespace

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* file_bytes,
                                                         uint64_t file_size,
                                                         absl::string_view source) {
  absl::StatusOr<SafetensorsHeader> header = ParseHeader(file_bytes, file_size);
  if (!header.ok()) {
    return absl::Status(header.status().code(),
                        absl::StrCat(source, ": ", header.status().message()));
  }
  return header;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    return absl::Status(absl::ErrnoToStatusCode(error),
                        absl::StrCat(path, ": cannot open: ", std::strerror(error)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ > 0) {
    void* map = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      const int error = errno;
      ::close(fd);
      return absl::Status(absl::ErrnoToStatusCode(error),
                          absl::StrCat(path, ": mmap failed: ", std::strerror(error)));
    }
    file->map_ = static_cast<const uint8_t*>(map);
  }
  ::close(fd);  // the mapping stays valid
  MOE_ASSIGN_OR_RETURN(file->header_, ParseSafetensorsHeader(file->map_, file->size_, path));
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) {
    file->index_.emplace(file->header_.tensors[i].name, i);
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<uint8_t*>(map_), size_);
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

const uint8_t* SafetensorsFile::data(const TensorInfo& info) const {
  return map_ + header_.data_offset + info.begin;
}

}  // namespace moe
