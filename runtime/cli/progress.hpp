// The progress line of long `parley translate` runs.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>

namespace parley_cli {

// Drawn on stderr, and only when stderr is a terminal while stdout is not (the
// translations go to a file or a pipe: on a terminal they would mix with the
// bar), only once the run has taken a second (short runs print nothing), at
// most ten times a second; erased when the run ends. `total_bytes` (0:
// unknown, e.g. a pipe) gives a percentage and an estimate of the time left.
class Progress {
 public:
  Progress(uint64_t total_bytes, const char *what)
      : enabled_(isatty(STDERR_FILENO) && !isatty(STDOUT_FILENO)),
        total_(total_bytes),
        what_(what),
        start_(Clock::now()),
        last_(start_) {}
  Progress(const Progress &) = delete;
  Progress &operator=(const Progress &) = delete;
  ~Progress() {
    if (drawn_) std::fputs("\r\033[K", stderr);  // erase the line: stderr keeps only real messages
  }

  // Erases the bar before another message goes to stderr (the next update redraws it).
  void clear() {
    if (drawn_) std::fputs("\r\033[K", stderr);
    drawn_ = false;
  }

  // `items` translated so far, `bytes` of the input consumed.
  void update(size_t items, uint64_t bytes) {
    if (!enabled_) return;
    const auto now = Clock::now();
    const double elapsed = seconds(now - start_);
    if (elapsed < 1.0 || seconds(now - last_) < 0.1) return;
    last_ = now;
    drawn_ = true;
    const double rate = items / elapsed;
    if (total_ > 0) {
      const double done = bytes >= total_ ? 1.0 : static_cast<double>(bytes) / static_cast<double>(total_);
      const int width = 30, filled = static_cast<int>(done * width);
      char bar[width + 1];
      for (int i = 0; i < width; ++i) bar[i] = i < filled ? '#' : '-';
      bar[width] = 0;
      const double left = done > 0 ? elapsed * (1 - done) / done : 0;
      std::fprintf(stderr, "\r\033[K[%s] %3.0f%%  %zu %s  %.1f/s  %.0f s left", bar, done * 100, items, what_, rate,
                   left);
    } else {
      std::fprintf(stderr, "\r\033[K%zu %s  %.1f/s  %.0f s", items, what_, rate, elapsed);
    }
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
  bool enabled_, drawn_ = false;
  uint64_t total_;
  const char *what_;
  Clock::time_point start_, last_;
};

}  // namespace parley_cli
