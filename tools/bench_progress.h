// Progress of long `moe bench` runs on stderr, and stopping them cleanly with Ctrl-C.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace moe::tools {

// Exit status of a run stopped by SIGINT after writing what it finished (128 + SIGINT).
inline constexpr int kExitInterrupted = 130;

// Installs a SIGINT handler that sets the flag InterruptRequested reads, prints one line on
// stderr and restores the default action (a second Ctrl-C ends the process at once). Leaves
// SIGINT alone when it was ignored at start (a background job).
void InstallInterruptHandler();
// Whether SIGINT arrived since InstallInterruptHandler. Async-signal-safe to set; any thread.
bool InterruptRequested();

// Reports finished points on stderr: on a terminal, one bar redrawn in place with the count,
// elapsed time and ETA; otherwise one line per point. Not thread-safe.
class Progress {
 public:
  // `total` points; `enabled` false prints nothing.
  Progress(int64_t total, bool enabled);

  // Point `done` (1-based) finished; `label` names it ("experts=16 top_k=2 tokens=128").
  void PointDone(int64_t done, const std::string& label);
  // Erases the bar (terminal only), so that a table row can be printed; PointDone redraws it.
  void ClearLine();
  // Ends the bar's line (terminal only).
  void Finish();

 private:
  using Clock = std::chrono::steady_clock;
  int64_t total_;
  bool enabled_;
  bool terminal_;
  bool bar_open_ = false;
  Clock::time_point start_;
  Clock::time_point last_;
};

// "1:05" / "1:02:03" for seconds.
std::string FormatDuration(double seconds);

}  // namespace moe::tools
