#include "moe/checkpoint/safetensors_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "moe/base/status_macros.h"
#include "moe/checkpoint/safetensors_json.h"

namespace moe {
namespace {

using ordered_json = nlohmann::ordered_json;

absl::Status ErrnoError(int error, const std::string& path, absl::string_view what) {
  return absl::Status(absl::ErrnoToStatusCode(error),
                      absl::StrCat(path, ": ", what, ": ", std::strerror(error)));
}

// Serializes `j`; kInvalidArgument when a string in it is not valid UTF-8.
absl::StatusOr<std::string> Dump(const ordered_json& j, const std::string& path) {
  try {
    return j.dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot encode the header as JSON: ", e.what()));
  }
}

// Writes the byte pieces to `path`.tmp and renames it to `path`.
absl::Status WriteAtomically(const std::string& path,
                             const std::vector<std::pair<const void*, size_t>>& pieces) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return ErrnoError(errno, tmp, "cannot create");
  for (const auto& [bytes, size] : pieces) {
    if (size > 0 && std::fwrite(bytes, 1, size, f) != size) {
      const int error = errno;
      std::fclose(f);
      std::remove(tmp.c_str());
      return ErrnoError(error, tmp, "write failed");
    }
  }
  if (std::fclose(f) != 0) {
    const int error = errno;
    std::remove(tmp.c_str());
    return ErrnoError(error, tmp, "write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(tmp.c_str());
    return ErrnoError(error, path, absl::StrCat("cannot rename ", tmp, " to it"));
  }
  return absl::OkStatus();
}

uint64_t DataBytes(const NamedTensors& tensors) {
  uint64_t total = 0;
  for (const auto& named : tensors) total += static_cast<uint64_t>(named.second->num_bytes());
  return total;
}

absl::Status CheckTensors(const std::string& path, const NamedTensors& tensors) {
  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    const std::string what = absl::StrCat(path, ": tensor ", QuoteForMessage(name), ": ");
    if (name.empty() || name == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat(what, "reserved or empty name"));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat(what, "name repeated"));
    }
    if (tensor == nullptr || tensor->raw() == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(what, "null or default-constructed tensor"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata) {
  MOE_RETURN_IF_ERROR(CheckTensors(path, tensors));
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const uint64_t end = offset + static_cast<uint64_t>(tensor->num_bytes());
    header[name] = {{"dtype", std::string(DTypeName(tensor->dtype()))},
                    {"shape", tensor->shape()},
                    {"data_offsets", {offset, end}}};
    offset = end;
  }
  MOE_ASSIGN_OR_RETURN(std::string text, Dump(header, path));
  text.append((8 - text.size() % 8) % 8, ' ');  // the data buffer starts 8-byte aligned
  uint8_t prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<uint8_t>(uint64_t{text.size()} >> (8 * i));

  std::vector<std::pair<const void*, size_t>> pieces = {{prefix, 8}, {text.data(), text.size()}};
  for (const auto& named : tensors) {
    pieces.emplace_back(named.second->raw(), static_cast<size_t>(named.second->num_bytes()));
  }
  return WriteAtomically(path, pieces);
}

std::string ShardFileName(int shard, int num_shards) {
  return absl::StrFormat("model-%05d-of-%05d.safetensors", shard + 1, num_shards);
}

absl::Status WriteShardedSafetensors(const std::string& dir, const NamedTensors& tensors,
                                     int num_shards,
                                     const std::map<std::string, std::string>& metadata) {
  const std::string index_path = absl::StrCat(dir, "/", kSafetensorsIndexFile);
  if (num_shards < 1 || static_cast<size_t>(num_shards) > tensors.size()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": cannot split ", tensors.size(),
                                                   " tensors into ", num_shards, " shards"));
  }
  MOE_RETURN_IF_ERROR(CheckTensors(index_path, tensors));
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::Status(absl::ErrnoToStatusCode(error.value()),
                        absl::StrCat(dir, ": cannot create directory: ", error.message()));
  }
  ordered_json weight_map = ordered_json::object();
  const size_t n = tensors.size();
  for (int shard = 0; shard < num_shards; ++shard) {
    const size_t first = n * static_cast<size_t>(shard) / static_cast<size_t>(num_shards);
    const size_t last = n * static_cast<size_t>(shard + 1) / static_cast<size_t>(num_shards);
    const std::string file = ShardFileName(shard, num_shards);
    NamedTensors part(tensors.begin() + first, tensors.begin() + last);
    MOE_RETURN_IF_ERROR(WriteSafetensors(absl::StrCat(dir, "/", file), part, metadata));
    for (const auto& named : part) weight_map[named.first] = file;
  }
  ordered_json index = {{"metadata", {{"total_size", DataBytes(tensors)}}},
                        {"weight_map", std::move(weight_map)}};
  MOE_ASSIGN_OR_RETURN(std::string text, Dump(index, index_path));
  text += "\n";
  return WriteAtomically(index_path, {{text.data(), text.size()}});
}

}  // namespace moe
