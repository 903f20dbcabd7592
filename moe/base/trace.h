// A process-wide timeline recorder that writes Chrome / Perfetto trace event JSON.
//
// Off by default. While off, a TraceScope costs one relaxed atomic load and a branch: it
// reads no clock, builds no name and takes no lock. While on, each scope reads the clock twice
// and appends one complete event ("ph": "X") to a buffer owned by the calling thread.
//
//   moe::trace::Enable();
//   {
//     moe::trace::TraceScope scope("route", "stage");
//     moe::trace::TraceScope item([&] { return absl::StrCat("expert ", e, " down"); }, "expert");
//     item.Arg("rows", rows);
//     ...
//   }
//   MOE_RETURN_IF_ERROR(moe::trace::WriteJson("trace.json"));
//
// Tracks: pid = the rank set with SetRank (default 0); tid = the OpenMP thread number of the
// thread's first event (0 for the main thread), or a fresh number >= 1000 when another OS
// thread already took that number. Every OS thread keeps its own tid, so the scopes of one
// track nest exactly (a child lies within its parent's interval).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace moe::trace {

namespace internal {
inline std::atomic<bool> enabled{false};
}  // namespace internal

// Whether scopes record now. Thread-safe; one relaxed atomic load.
inline bool Enabled() { return internal::enabled.load(std::memory_order_relaxed); }

// Starts recording: drops every event recorded so far and sets time 0 to now. Call while no
// scope is open (between forwards).
void Enable();
// Stops recording; the events recorded so far stay until Enable or Clear.
void Disable();
// Drops every recorded event.
void Clear();

// The trace's process (pid) and its name in the metadata; default 0 and "rank 0".
void SetRank(int rank);

// Events kept per thread; later ones are counted in DroppedEvents and not kept.
inline constexpr int64_t kMaxEventsPerThread = int64_t{1} << 20;

inline constexpr int kMaxArgs = 4;

// One complete event. Times in nanoseconds since Enable.
struct Event {
  std::string name;
  const char* category = "";  // a string literal: not copied
  int64_t begin_ns = 0;
  int64_t duration_ns = 0;
  int tid = 0;
  int num_args = 0;
  const char* arg_names[kMaxArgs] = {};  // string literals
  int64_t arg_values[kMaxArgs] = {};
};

// The events recorded so far, of every thread, sorted by (tid, begin, longer first).
// Call while no scope is open.
std::vector<Event> Collect();
// Events not kept because a thread's buffer was full.
int64_t DroppedEvents();

// The trace as one JSON object: {"traceEvents": [...], "displayTimeUnit": "ns",
// "otherData": {...}}: metadata events ("ph": "M") naming the process ("rank R") and each
// thread ("omp thread T"), then complete events ("ph": "X") with name, cat, ts and dur in
// microseconds (nanosecond resolution), pid, tid and args.
std::string ToJson();
// Writes ToJson() to `path`; kNotFound / kDataLoss naming the path when it cannot.
absl::Status WriteJson(const std::string& path);

namespace internal {
struct ThreadBuffer;
}  // namespace internal

// Records [construction, destruction) on the calling thread as one event, when tracing is on
// at construction. `name` is a string literal, or a callable returning std::string that is
// called only when tracing is on. `category` is a string literal. Not copyable; destroy on
// the thread that constructed it.
class TraceScope {
 public:
  TraceScope(const char* name, const char* category) {
    if (Enabled()) Begin(std::string(name), category);
  }
  template <typename NameFn,
            typename = std::enable_if_t<std::is_invocable_r_v<std::string, NameFn>>>
  TraceScope(NameFn&& name, const char* category) {
    if (Enabled()) Begin(std::forward<NameFn>(name)(), category);
  }
  ~TraceScope() {
    if (buffer_ != nullptr) End();
  }
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

  // Attaches "args": {name: value} to the event (at most kMaxArgs; more are ignored). `name`
  // is a string literal.
  void Arg(const char* name, int64_t value) {
    if (buffer_ != nullptr) AddArg(name, value);
  }

 private:
  void Begin(std::string name, const char* category);
  void End();
  void AddArg(const char* name, int64_t value);

  // NOTE: the event lives in the thread's buffer from Begin on (so a thread's events are in
  // begin order); `index_` finds it again unless Enable or Clear ran since (`generation_`).
  internal::ThreadBuffer* buffer_ = nullptr;
  int64_t index_ = -1;
  uint64_t generation_ = 0;
};

}  // namespace moe::trace
