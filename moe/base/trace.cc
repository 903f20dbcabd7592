#include "moe/base/trace.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

// NOTE: moe_base does not link OpenMP. The binaries that run parallel regions do, and there
// this weak reference resolves to the runtime's function; elsewhere it is null and every
// thread starts from tid 0.
extern "C" int omp_get_thread_num() __attribute__((weak));

namespace moe::trace {
namespace internal {

struct ThreadBuffer {
  int tid = 0;
  std::atomic<uint64_t> generation{0};
  std::vector<Event> events;  // in begin order
  int64_t dropped = 0;
};

}  // namespace internal
namespace {

using internal::ThreadBuffer;

struct Registry {
  std::mutex mutex;
  std::vector<std::unique_ptr<ThreadBuffer>> buffers;  // never freed: events outlive threads
  std::set<int> tids;
  int next_extra_tid = 1000;
  int rank = 0;
};

Registry& GetRegistry() {
  static auto* registry = new Registry();
  return *registry;
}

std::atomic<int64_t> epoch_ns{0};

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The calling thread's buffer, registered on its first event.
ThreadBuffer* ThisThreadBuffer() {
  thread_local ThreadBuffer* buffer = nullptr;
  if (buffer != nullptr) return buffer;
  Registry& registry = GetRegistry();
  const int omp_tid = omp_get_thread_num != nullptr ? omp_get_thread_num() : 0;
  std::lock_guard<std::mutex> lock(registry.mutex);
  auto owned = std::make_unique<ThreadBuffer>();
  owned->tid = registry.tids.count(omp_tid) == 0 ? omp_tid : registry.next_extra_tid++;
  registry.tids.insert(owned->tid);
  buffer = owned.get();
  registry.buffers.push_back(std::move(owned));
  return buffer;
}

void ClearLocked(Registry& registry) {
  for (auto& buffer : registry.buffers) {
    buffer->events.clear();
    buffer->dropped = 0;
    buffer->generation.fetch_add(1, std::memory_order_relaxed);
  }
}

std::string Escaped(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", static_cast<int>(c));
        } else {
          out += c;
        }
    }
  }
  return out;
}

// Nanoseconds as microseconds with three decimals, exactly.
std::string Micros(int64_t ns) { return absl::StrFormat("%d.%03d", ns / 1000, ns % 1000); }

}  // namespace

void Enable() {
  Registry& registry = GetRegistry();
  std::lock_guard<std::mutex> lock(registry.mutex);
  ClearLocked(registry);
  epoch_ns.store(NowNs(), std::memory_order_relaxed);
  internal::enabled.store(true, std::memory_order_relaxed);
}

void Disable() { internal::enabled.store(false, std::memory_order_relaxed); }

void Clear() {
  Registry& registry = GetRegistry();
  std::lock_guard<std::mutex> lock(registry.mutex);
  ClearLocked(registry);
}

void SetRank(int rank) {
  Registry& registry = GetRegistry();
  std::lock_guard<std::mutex> lock(registry.mutex);
  registry.rank = rank;
}

void TraceScope::Begin(std::string name, const char* category) {
  ThreadBuffer* buffer = ThisThreadBuffer();
  if (static_cast<int64_t>(buffer->events.size()) >= kMaxEventsPerThread) {
    ++buffer->dropped;
    return;
  }
  buffer_ = buffer;
  generation_ = buffer->generation.load(std::memory_order_relaxed);
  index_ = static_cast<int64_t>(buffer->events.size());
  Event& event = buffer->events.emplace_back();
  event.name = std::move(name);
  event.category = category;
  event.tid = buffer->tid;
  event.begin_ns = NowNs() - epoch_ns.load(std::memory_order_relaxed);
}

void TraceScope::End() {
  const int64_t end_ns = NowNs() - epoch_ns.load(std::memory_order_relaxed);
  if (buffer_->generation.load(std::memory_order_relaxed) != generation_) return;
  Event& event = buffer_->events[static_cast<size_t>(index_)];
  event.duration_ns = std::max<int64_t>(end_ns - event.begin_ns, 0);
}

void TraceScope::AddArg(const char* name, int64_t value) {
  if (buffer_->generation.load(std::memory_order_relaxed) != generation_) return;
  Event& event = buffer_->events[static_cast<size_t>(index_)];
  if (event.num_args == kMaxArgs) return;
  event.arg_names[event.num_args] = name;
  event.arg_values[event.num_args++] = value;
}

std::vector<Event> Collect() {
  Registry& registry = GetRegistry();
  std::vector<Event> events;
  {
    std::lock_guard<std::mutex> lock(registry.mutex);
    for (const auto& buffer : registry.buffers) {
      events.insert(events.end(), buffer->events.begin(), buffer->events.end());
    }
  }
  std::stable_sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    if (a.tid != b.tid) return a.tid < b.tid;
    if (a.begin_ns != b.begin_ns) return a.begin_ns < b.begin_ns;
    return a.duration_ns > b.duration_ns;
  });
  return events;
}

int64_t DroppedEvents() {
  Registry& registry = GetRegistry();
  std::lock_guard<std::mutex> lock(registry.mutex);
  int64_t dropped = 0;
  for (const auto& buffer : registry.buffers) dropped += buffer->dropped;
  return dropped;
}

std::string ToJson() {
  const std::vector<Event> events = Collect();
  int rank = 0;
  {
    Registry& registry = GetRegistry();
    std::lock_guard<std::mutex> lock(registry.mutex);
    rank = registry.rank;
  }
  std::string json = "{\"traceEvents\": [\n";
  absl::StrAppendFormat(&json,
                        "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": 0, "
                        "\"args\": {\"name\": \"rank %d\"}}",
                        rank, rank);
  std::set<int> tids;
  for (const Event& e : events) tids.insert(e.tid);
  for (int tid : tids) {
    absl::StrAppendFormat(&json,
                          ",\n{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": %d, "
                          "\"args\": {\"name\": \"%s %d\"}}",
                          rank, tid, tid < 1000 ? "omp thread" : "thread", tid);
  }
  for (const Event& e : events) {
    absl::StrAppendFormat(&json,
                          ",\n{\"name\": \"%s\", \"cat\": \"%s\", \"ph\": \"X\", \"ts\": %s, "
                          "\"dur\": %s, \"pid\": %d, \"tid\": %d",
                          Escaped(e.name), Escaped(e.category), Micros(e.begin_ns),
                          Micros(e.duration_ns), rank, e.tid);
    if (e.num_args > 0) {
      json += ", \"args\": {";
      for (int i = 0; i < e.num_args; ++i) {
        absl::StrAppendFormat(&json, "%s\"%s\": %d", i > 0 ? ", " : "", Escaped(e.arg_names[i]),
                              e.arg_values[i]);
      }
      json += "}";
    }
    json += "}";
  }
  absl::StrAppendFormat(&json,
                        "\n],\n\"displayTimeUnit\": \"ns\",\n\"otherData\": {\"clock\": "
                        "\"steady_clock\", \"dropped_events\": %d}}\n",
                        DroppedEvents());
  return json;
}

absl::Status WriteJson(const std::string& path) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) return absl::NotFoundError(absl::StrCat("trace ", path, ": cannot open for writing"));
  file << ToJson();
  file.close();
  if (!file) return absl::DataLossError(absl::StrCat("trace ", path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace moe::trace
