// The clock the benchmarks time with.
#pragma once

#include <chrono>

namespace moe::tools {

using Clock = std::chrono::steady_clock;

// Seconds elapsed since `start`.
inline double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace moe::tools
