// An owning buffer of device memory (cudaMalloc / cudaFree), and copies to and from host
// vectors. For the CUDA layer, its tests and the CUDA bench.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_status.h"

namespace moe::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // `bytes` of uninitialized device memory (cudaMalloc: 256-byte aligned). 0 bytes: null.
  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) {
    DeviceBuffer b;
    if (bytes > 0) MOE_CUDA_RETURN_IF_ERROR(cudaMalloc(&b.data_, bytes));
    b.bytes_ = bytes;
    return b;
  }
  // A device copy of `host`.
  template <typename T>
  static absl::StatusOr<DeviceBuffer> FromHost(const std::vector<T>& host) {
    MOE_ASSIGN_OR_RETURN(DeviceBuffer b, Allocate(sizeof(T) * host.size()));
    if (!host.empty()) {
      MOE_CUDA_RETURN_IF_ERROR(
          cudaMemcpy(b.data_, host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice));
    }
    return b;
  }
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

  // The first `count` elements as a host vector (synchronous copy).
  template <typename T>
  absl::StatusOr<std::vector<T>> ToHost(size_t count) const {
    std::vector<T> host(count);
    if (count > 0) {
      MOE_CUDA_RETURN_IF_ERROR(
          cudaMemcpy(host.data(), data_, sizeof(T) * count, cudaMemcpyDeviceToHost));
    }
    return host;
  }

 private:
  void Reset() {
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
    bytes_ = 0;
  }
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace moe::cuda
