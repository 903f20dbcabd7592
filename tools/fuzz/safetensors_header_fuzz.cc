// libFuzzer target: ParseSafetensorsHeader on arbitrary bytes. Built by tools/fuzz/build_fuzzer.sh.
//
// Each input is tried twice: as a whole file, and as the header text of a file whose length
// prefix is right and whose data buffer holds kDataBytes bytes (so mutations reach the entry
// checks instead of dying on the length prefix). Whatever is accepted must tile the data buffer.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "moe/checkpoint/safetensors.h"

namespace {

constexpr size_t kDataBytes = 64;

void ParseAndCheck(const uint8_t* bytes, size_t size) {
  absl::StatusOr<moe::SafetensorsHeader> header =
      moe::ParseSafetensorsHeader(bytes, size, "fuzz.safetensors");
  if (!header.ok()) {
    if (header.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return;
  }
  uint64_t expected_begin = 0;
  for (const moe::TensorInfo& t : header->tensors) {
    if (t.begin != expected_begin || t.end < t.begin) std::abort();
    expected_begin = t.end;
  }
  if (header->data_offset + expected_begin != size) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ParseAndCheck(data, size);

  std::vector<uint8_t> file(8 + size + kDataBytes, 0);
  for (int i = 0; i < 8; ++i) file[static_cast<size_t>(i)] = static_cast<uint8_t>(size >> (8 * i));
  if (size > 0) std::memcpy(file.data() + 8, data, size);
  ParseAndCheck(file.data(), file.size());
  return 0;
}
