#include "moe/checkpoint/checkpoint.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "moe/base/status_macros.h"
#include "moe/checkpoint/safetensors_json.h"
#include "moe/checkpoint/safetensors_writer.h"

namespace moe {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxIndexBytes = 100 * 1000 * 1000;
constexpr int kMaxIndexJsonDepth = 8;

struct Shard {
  std::string path;
  bool opened = false;
  absl::Status open_status;  // of the first open attempt
  std::unique_ptr<SafetensorsFile> file;
};

// stat() of `path`: 0 when missing, else its st_mode.
mode_t FileMode(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_mode : 0;
}

bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos &&
         !absl::StrContains(name, "..") && name != ".";
}

}  // namespace

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int error = errno;
    return absl::Status(absl::ErrnoToStatusCode(error),
                        absl::StrCat(path, ": cannot open: ", std::strerror(error)));
  }
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) {
    text.append(buffer, n);
    if (text.size() > max_bytes) {
      std::fclose(f);
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": larger than the limit of ", max_bytes, " bytes"));
    }
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return text;
}

struct Checkpoint::State {
  std::string path;  // the single file or the index
  bool sharded = false;
  std::vector<Shard> shards;
  std::map<std::string, size_t> tensor_to_shard;
  std::mutex mu;  // guards the lazy opening of shards
};

Checkpoint::Checkpoint(std::unique_ptr<State> state) : state_(std::move(state)) {}
Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&&) noexcept = default;
Checkpoint::~Checkpoint() = default;

namespace {

absl::Status ParseIndex(const std::string& index_path, const std::string& dir,
                        std::vector<Shard>* shards, std::map<std::string, size_t>* tensors) {
  MOE_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(index_path, kMaxIndexBytes));
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  json index;
  absl::Status parsed =
      ParseStrictJson(bytes, bytes + text.size(), kMaxIndexJsonDepth, "key", &index);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": ", parsed.message()));
  }
  if (!index.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": must be a JSON object, got ", JsonTypeName(index)));
  }
  if (index.contains("metadata") && !index["metadata"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": \"metadata\" must be an object"));
  }
  if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": \"weight_map\" must be an object of tensor name to file"));
  }
  std::map<std::string, size_t> shard_of_file;
  for (const auto& item : index["weight_map"].items()) {
    const std::string what =
        absl::StrCat(index_path, ": weight_map[", QuoteForMessage(item.key()), "]");
    if (!item.value().is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " must be a file name string, got ", JsonTypeName(item.value())));
    }
    const std::string& file = item.value().get_ref<const std::string&>();
    if (!IsPlainFileName(file)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " = ", QuoteForMessage(file),
                       " is not a plain file name (no '/', '\\' or \"..\" allowed)"));
    }
    auto [it, inserted] = shard_of_file.emplace(file, shards->size());
    if (inserted) {
      Shard shard;
      shard.path = absl::StrCat(dir, "/", file);
      if (!S_ISREG(FileMode(shard.path))) {
        return absl::NotFoundError(absl::StrCat(what, " names shard ", QuoteForMessage(file),
                                                ", but ", shard.path,
                                                " does not exist or is not a file"));
      }
      shards->push_back(std::move(shard));
    }
    (*tensors)[item.key()] = it->second;
  }
  return absl::OkStatus();
}

std::string Directory(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

absl::StatusOr<Checkpoint> Checkpoint::Open(const std::string& path_or_dir) {
  auto state = std::make_unique<State>();
  const mode_t mode = FileMode(path_or_dir);
  if (mode == 0) {
    return absl::NotFoundError(absl::StrCat(path_or_dir, ": no such checkpoint file or folder"));
  }
  std::string single;
  if (S_ISDIR(mode)) {
    const std::string index = absl::StrCat(path_or_dir, "/", kSafetensorsIndexFile);
    const std::string model = absl::StrCat(path_or_dir, "/model.safetensors");
    if (S_ISREG(FileMode(index))) {
      state->path = index;
      state->sharded = true;
    } else if (S_ISREG(FileMode(model))) {
      single = model;
    } else {
      return absl::NotFoundError(absl::StrCat(path_or_dir, ": holds neither ",
                                              kSafetensorsIndexFile, " nor model.safetensors"));
    }
  } else if (absl::EndsWith(path_or_dir, ".index.json")) {
    state->path = path_or_dir;
    state->sharded = true;
  } else {
    single = path_or_dir;
  }

  if (state->sharded) {
    MOE_RETURN_IF_ERROR(
        ParseIndex(state->path, Directory(state->path), &state->shards, &state->tensor_to_shard));
  } else {
    // A single file is opened now: its header is the only list of its tensors.
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(single));
    state->path = single;
    for (const TensorInfo& t : file->tensors()) state->tensor_to_shard[t.name] = 0;
    Shard shard;
    shard.path = single;
    shard.opened = true;
    shard.file = std::move(file);
    state->shards.push_back(std::move(shard));
  }
  return Checkpoint(std::move(state));
}

bool Checkpoint::Contains(absl::string_view name) const {
  return state_->tensor_to_shard.count(std::string(name)) > 0;
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(state_->tensor_to_shard.size());
  for (const auto& entry : state_->tensor_to_shard) names.push_back(entry.first);
  return names;
}

const std::string& Checkpoint::path() const { return state_->path; }

absl::Status Checkpoint::Locate(absl::string_view name, const SafetensorsFile** file,
                                const TensorInfo** info) const {
  auto it = state_->tensor_to_shard.find(std::string(name));
  if (it == state_->tensor_to_shard.end()) {
    return absl::NotFoundError(absl::StrCat(state_->path, ": no tensor ", QuoteForMessage(name)));
  }
  Shard& shard = state_->shards[it->second];
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!shard.opened) {
      shard.opened = true;
      absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened = SafetensorsFile::Open(shard.path);
      shard.open_status = opened.status();
      if (opened.ok()) shard.file = std::move(opened).value();
    }
  }
  MOE_RETURN_IF_ERROR(shard.open_status);
  *file = shard.file.get();
  *info = shard.file->Find(name);
  if (*info == nullptr) {
    return absl::NotFoundError(absl::StrCat(state_->path, " maps tensor ", QuoteForMessage(name),
                                            " to ", shard.path, ", which does not contain it"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorInfo> Checkpoint::Info(absl::string_view name) const {
  const SafetensorsFile* file;
  const TensorInfo* info;
  MOE_RETURN_IF_ERROR(Locate(name, &file, &info));
  return *info;
}

absl::StatusOr<Tensor> Checkpoint::Read(absl::string_view name) const {
  const SafetensorsFile* file;
  const TensorInfo* info;
  MOE_RETURN_IF_ERROR(Locate(name, &file, &info));
  absl::StatusOr<Tensor> tensor = Tensor::Create(info->dtype, info->shape);
  if (!tensor.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor ", QuoteForMessage(name),
                                                   ": ", tensor.status().message()));
  }
  std::memcpy(tensor->raw(), file->data(*info), static_cast<size_t>(info->end - info->begin));
  return tensor;
}

absl::StatusOr<Tensor> Checkpoint::ReadF32(absl::string_view name,
                                           const std::vector<int64_t>& expected_shape) const {
  const SafetensorsFile* file;
  const TensorInfo* info;
  MOE_RETURN_IF_ERROR(Locate(name, &file, &info));
  const std::string what = absl::StrCat(file->path(), ": tensor ", QuoteForMessage(name));
  if (info->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has shape ", ShapeString(info->shape),
                                                   ", expected ", ShapeString(expected_shape)));
  }
  if (info->dtype != DType::kF32 && info->dtype != DType::kBF16 && info->dtype != DType::kF16) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has dtype ", DTypeName(info->dtype), ", expected F32, BF16 or F16"));
  }
  absl::StatusOr<Tensor> out = Tensor::Create(DType::kF32, info->shape);
  if (!out.ok())
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", out.status().message()));
  const uint8_t* src = file->data(*info);
  const size_t bytes = static_cast<size_t>(info->end - info->begin);
  std::unique_ptr<void, AlignedFree> aligned;
  if (reinterpret_cast<uintptr_t>(src) % static_cast<uintptr_t>(DTypeSize(info->dtype)) != 0) {
    aligned = AlignedAlloc(bytes);  // the converters read whole elements
    std::memcpy(aligned.get(), src, bytes);
    src = static_cast<const uint8_t*>(aligned.get());
  }
  MOE_RETURN_IF_ERROR(ConvertToF32(info->dtype, src, out->num_elements(), out->data<float>()));
  return out;
}

absl::Status Checkpoint::ValidateAll() const {
  for (const auto& [name, shard] : state_->tensor_to_shard) {
    const SafetensorsFile* file;
    const TensorInfo* info;
    MOE_RETURN_IF_ERROR(Locate(name, &file, &info));
  }
  return absl::OkStatus();
}

}  // namespace moe
