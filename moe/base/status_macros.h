// Status propagation helpers (this Abseil release has none).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MOE_STATUS_CONCAT_INNER(a, b) a##b
#define MOE_STATUS_CONCAT(a, b) MOE_STATUS_CONCAT_INNER(a, b)

// Returns the status of `expr` from the enclosing function when it is not OK.
#define MOE_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status moe_status_ = (expr);       \
    if (!moe_status_.ok()) return moe_status_; \
  } while (0)

// `MOE_ASSIGN_OR_RETURN(auto x, F());` assigns the value of a StatusOr or returns its error.
#define MOE_ASSIGN_OR_RETURN(lhs, rexpr) \
  MOE_ASSIGN_OR_RETURN_IMPL(MOE_STATUS_CONCAT(moe_statusor_, __LINE__), lhs, rexpr)

#define MOE_ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr)    \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

// Aborts with a message when an internal invariant does not hold (never for user input).
#define MOE_CHECK(cond)                                                   \
  do {                                                                    \
    if (!(cond)) ::moe::internal::CheckFailed(__FILE__, __LINE__, #cond); \
  } while (0)

namespace moe::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition);
}  // namespace moe::internal
