// A growable scratch array: 64-byte aligned (AVX-512 vectors and AMX tile rows never straddle
// cache lines) and on 2 MiB pages when large (AlignedAlloc).
#pragma once

#include <cstdint>
#include <memory>
#include <type_traits>

#include "moe/base/tensor.h"

namespace moe {

template <class T>
class ScratchBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "scratch holds plain values");

 public:
  T* data() { return static_cast<T*>(memory_.get()); }
  const T* data() const { return static_cast<const T*>(memory_.get()); }
  int64_t size() const { return size_; }

  // Makes room for at least `n` elements. Growing reallocates (zero-filled) and does not keep
  // the old contents; a buffer that is large enough is left as it is (no allocation).
  void Reserve(int64_t n) {
    if (n <= size_) return;
    memory_ = AlignedAlloc(static_cast<size_t>(n) * sizeof(T));
    size_ = n;
  }

 private:
  std::unique_ptr<void, AlignedFree> memory_;
  int64_t size_ = 0;
};

}  // namespace moe
