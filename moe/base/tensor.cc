#include "moe/base/tensor.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "moe/base/checked_math.h"
#include "moe/base/status_macros.h"

namespace moe {

void AlignedFree::operator()(void* p) const { std::free(p); }

std::unique_ptr<void, AlignedFree> AlignedAlloc(size_t bytes) {
  constexpr size_t kAlign = 64;
  // Buffers of several MiB (packed weights, workspaces) are streamed: they go on 2 MiB pages
  // where the kernel allows it (transparent huge pages in `madvise` mode), so that streaming
  // them costs a TLB miss per 2 MiB instead of per 4 KiB.
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t align = bytes >= 2 * kHugePage ? kHugePage : kAlign;
  size_t rounded = (bytes + align - 1) / align * align;
  if (rounded == 0) rounded = kAlign;
  void* p = std::aligned_alloc(align, rounded);
  MOE_CHECK(p != nullptr);
#ifdef MADV_HUGEPAGE
  if (align == kHugePage) madvise(p, rounded, MADV_HUGEPAGE);  // a hint: failure is harmless
#endif
  std::memset(p, 0, rounded);
  return std::unique_ptr<void, AlignedFree>(p);
}

absl::StatusOr<Tensor> Tensor::Create(DType dtype, std::vector<int64_t> shape) {
  std::optional<int64_t> n = CheckedNumElements(shape);
  std::optional<uint64_t> bytes;
  if (n) bytes = CheckedMul(static_cast<uint64_t>(*n), static_cast<uint64_t>(DTypeSize(dtype)));
  if (!n || !bytes || *bytes > (uint64_t{1} << 46)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid tensor shape ", ShapeString(shape), " for dtype ", DTypeName(dtype)));
  }
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.num_elements_ = *n;
  t.data_ = AlignedAlloc(static_cast<size_t>(*bytes));
  return t;
}

Tensor Tensor::Zeros(DType dtype, std::vector<int64_t> shape) {
  absl::StatusOr<Tensor> t = Create(dtype, std::move(shape));
  MOE_CHECK(t.ok());
  return std::move(t).value();
}

Tensor Tensor::Clone() const {
  if (data_ == nullptr) return Tensor();
  Tensor t = Zeros(dtype_, shape_);
  std::memcpy(t.raw(), raw(), static_cast<size_t>(num_bytes()));
  return t;
}

absl::Status CheckTensor(const Tensor& t, DType dtype, const std::vector<int64_t>& expected,
                         absl::string_view name) {
  if (t.empty() || t.dtype() != dtype || t.shape() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": expected ", DTypeName(dtype), " ", ShapeString(expected), ", got ",
        t.empty() ? "nothing" : absl::StrCat(DTypeName(t.dtype()), " ", ShapeString(t.shape()))));
  }
  return absl::OkStatus();
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace moe
