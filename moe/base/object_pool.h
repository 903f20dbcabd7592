// A pool of reusable objects (workspaces): a call takes one, or a new one when all are in use,
// and gives it back, so that steady-state calls allocate nothing. Thread-safe.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

namespace moe {

template <typename T>
class ObjectPool {
 public:
  ObjectPool() { idle_.reserve(8); }

  std::unique_ptr<T> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.empty()) return std::make_unique<T>();
    std::unique_ptr<T> object = std::move(idle_.back());
    idle_.pop_back();
    return object;
  }

  void Give(std::unique_ptr<T> object) {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(std::move(object));
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<T>> idle_;
};

}  // namespace moe
