#include "moe/base/status_macros.h"

#include <cstdio>
#include <cstdlib>

namespace moe::internal {

void CheckFailed(const char* file, int line, const char* condition) {
  std::fprintf(stderr, "%s:%d: internal invariant failed: %s\n", file, line, condition);
  std::abort();
}

}  // namespace moe::internal
