#include "tools/bench_progress.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "absl/strings/str_format.h"

namespace moe::tools {
namespace {

std::atomic<bool> interrupt_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");

void OnInterrupt(int) {
  interrupt_requested.store(true, std::memory_order_relaxed);
  static const char kMessage[] =
      "\nmoe bench: interrupted; finishing the current point, then writing the results "
      "(Ctrl-C again to abort)\n";
  ssize_t ignored = write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
  (void)ignored;
  signal(SIGINT, SIG_DFL);  // async-signal-safe
}

}  // namespace

void InstallInterruptHandler() {
  struct sigaction old_action = {};
  if (sigaction(SIGINT, nullptr, &old_action) == 0 && old_action.sa_handler == SIG_IGN) return;
  struct sigaction action = {};
  action.sa_handler = OnInterrupt;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
}

bool InterruptRequested() { return interrupt_requested.load(std::memory_order_relaxed); }

std::string FormatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

Progress::Progress(int64_t total, bool enabled)
    : total_(total),
      enabled_(enabled),
      terminal_(isatty(STDERR_FILENO) == 1),
      start_(Clock::now()),
      last_(start_) {}

void Progress::PointDone(int64_t done, const std::string& label) {
  if (!enabled_ || total_ <= 0) return;
  const Clock::time_point now = Clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double point = std::chrono::duration<double>(now - last_).count();
  last_ = now;
  const double eta = done > 0 ? elapsed / static_cast<double>(done) * (total_ - done) : 0;
  if (terminal_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * done / total_);
    std::string bar(static_cast<size_t>(filled), '=');
    if (filled < kWidth) bar += '>';
    bar.resize(kWidth, ' ');
    std::string line = absl::StrFormat("[%s] %d/%d points, %s elapsed, ETA %s  %s", bar, done,
                                       total_, FormatDuration(elapsed), FormatDuration(eta), label);
    if (line.size() > 119) line.resize(119);
    std::fprintf(stderr, "\r%-119s", line.c_str());
    bar_open_ = true;
  } else {
    std::fprintf(stderr, "moe bench: point %lld/%lld done (%s) in %.2f s; elapsed %s, ETA %s\n",
                 static_cast<long long>(done), static_cast<long long>(total_), label.c_str(), point,
                 FormatDuration(elapsed).c_str(), FormatDuration(eta).c_str());
  }
  std::fflush(stderr);
}

void Progress::ClearLine() {
  if (!bar_open_) return;
  std::fprintf(stderr, "\r%119s\r", "");
  std::fflush(stderr);
  bar_open_ = false;
}

void Progress::Finish() {
  if (bar_open_) std::fputc('\n', stderr);
  bar_open_ = false;
}

}  // namespace moe::tools
