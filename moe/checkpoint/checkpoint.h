// A checkpoint: one safetensors file, or a Hugging Face folder of shards with an index.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "moe/base/tensor.h"
#include "moe/checkpoint/safetensors.h"

namespace moe {

// The whole of a small file (a JSON index or config). The error names the path: the errno
// status when it cannot be opened, kInvalidArgument when it holds more than max_bytes,
// kDataLoss on a read error.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes);

// Read access to the tensors of a checkpoint. Shard files are mapped lazily: only those holding a
// requested tensor are opened (and validated) on first use, and stay mapped while the Checkpoint
// lives. Movable, not copyable. Thread-safe: const methods may be called concurrently.
class Checkpoint {
 public:
  // `path_or_dir` is a .safetensors file, a model.safetensors.index.json file, or a folder holding
  // model.safetensors.index.json (sharded) or model.safetensors. For a sharded checkpoint the index
  // is validated here: a JSON object whose "weight_map" maps tensor names to plain file names (no
  // '/', '\\' or ".."), every one of which exists beside the index. kNotFound for a missing
  // path or shard, kInvalidArgument for a malformed index or file; messages name the file.
  static absl::StatusOr<Checkpoint> Open(const std::string& path_or_dir);

  Checkpoint(Checkpoint&&) noexcept;
  Checkpoint& operator=(Checkpoint&&) noexcept;
  ~Checkpoint();

  // Whether the checkpoint lists a tensor called `name` (opens no shard).
  bool Contains(absl::string_view name) const;
  // All tensor names, sorted.
  std::vector<std::string> TensorNames() const;
  // The dtype, shape and offsets of `name`; kNotFound when absent.
  absl::StatusOr<TensorInfo> Info(absl::string_view name) const;
  // A copy of `name` in its stored dtype and shape.
  absl::StatusOr<Tensor> Read(absl::string_view name) const;
  // `name` converted to float32 (stored as F32, BF16 or F16) after checking that its shape is
  // `expected_shape`; kInvalidArgument naming the tensor, the file and both shapes otherwise.
  absl::StatusOr<Tensor> ReadF32(absl::string_view name,
                                 const std::vector<int64_t>& expected_shape) const;
  // Opens every shard and checks that each holds the tensors the index assigns to it.
  absl::Status ValidateAll() const;
  // The file that was opened: the single .safetensors file or the index.
  const std::string& path() const;

 private:
  struct State;
  explicit Checkpoint(std::unique_ptr<State> state);
  // The file holding `name`, opening its shard on first use, and the tensor in it.
  absl::Status Locate(absl::string_view name, const SafetensorsFile** file,
                      const TensorInfo** info) const;

  std::unique_ptr<State> state_;
};

}  // namespace moe
