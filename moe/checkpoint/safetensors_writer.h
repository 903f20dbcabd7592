// Writing safetensors files and sharded Hugging Face style checkpoint folders.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "moe/base/tensor.h"

namespace moe {

// (name, tensor) pairs; the tensors are borrowed for the duration of the call.
using NamedTensors = std::vector<std::pair<std::string, const Tensor*>>;

// Writes `tensors` to a safetensors file at `path`, their data laid out in the given order, the
// header padded with spaces so the data buffer starts at a multiple of 8 bytes, `metadata` stored
// as "__metadata__" when non-empty. Writes `path`.tmp, then renames it over `path`, so a failure
// never leaves a partial file. kInvalidArgument for an empty, null, repeated or "__metadata__"
// name or a default-constructed tensor; I/O errors keep their errno code. Messages name the path.
absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// The shard file name Hugging Face uses: "model-00002-of-00005.safetensors" for (1, 5).
std::string ShardFileName(int shard, int num_shards);

// The index file of a sharded checkpoint folder.
inline constexpr char kSafetensorsIndexFile[] = "model.safetensors.index.json";

// Writes a sharded checkpoint folder as Hugging Face does: `dir` (created if missing) gets
// `num_shards` files ShardFileName(i, num_shards), shard i holding the i-th contiguous run of
// `tensors` (in order, counts differing by at most one), plus model.safetensors.index.json with
// {"metadata": {"total_size": <data bytes>}, "weight_map": {name: shard file}}. `metadata` goes
// into every shard's "__metadata__". Requires 1 <= num_shards <= tensors.size(). Every file is
// written atomically (see WriteSafetensors). Messages name the file.
absl::Status WriteShardedSafetensors(const std::string& dir, const NamedTensors& tensors,
                                     int num_shards,
                                     const std::map<std::string, std::string>& metadata = {});

}  // namespace moe
