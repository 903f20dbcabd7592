// Tensors: an owning, 64-byte-aligned buffer with a dtype and a row-major shape.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "moe/base/dtype.h"

namespace moe {

// Frees memory from AlignedAlloc.
struct AlignedFree {
  void operator()(void* p) const;
};

// 64-byte-aligned, zero-filled allocation of `bytes` (at least one byte is allocated).
std::unique_ptr<void, AlignedFree> AlignedAlloc(size_t bytes);

// An owning row-major tensor. Movable, not copyable (use Clone).
class Tensor {
 public:
  Tensor() = default;

  // A zero-filled tensor; kInvalidArgument for negative dims or a size that overflows.
  static absl::StatusOr<Tensor> Create(DType dtype, std::vector<int64_t> shape);

  // For internal sizes known to be valid: aborts on a bad shape.
  static Tensor Zeros(DType dtype, std::vector<int64_t> shape);

  Tensor Clone() const;

  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[static_cast<size_t>(i)]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t num_elements() const { return num_elements_; }
  int64_t num_bytes() const { return num_elements_ * DTypeSize(dtype_); }
  bool empty() const { return shape_.empty() && data_ == nullptr; }

  void* raw() { return data_.get(); }
  const void* raw() const { return data_.get(); }
  template <typename T>
  T* data() {
    return static_cast<T*>(data_.get());
  }
  template <typename T>
  const T* data() const {
    return static_cast<const T*>(data_.get());
  }

 private:
  DType dtype_ = DType::kF32;
  std::vector<int64_t> shape_;
  int64_t num_elements_ = 0;
  std::unique_ptr<void, AlignedFree> data_;
};

// kInvalidArgument "NAME: expected F32 [2, 3], got BF16 [3]" unless `t` is present with
// this dtype and shape.
absl::Status CheckTensor(const Tensor& t, DType dtype, const std::vector<int64_t>& expected,
                         absl::string_view name);

// "[2, 3]" for messages.
std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace moe
