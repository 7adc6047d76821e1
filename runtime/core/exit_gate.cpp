#include "core/exit_gate.hpp"

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <unordered_set>

namespace parley::exit_gate {

namespace {

// seq_cst on both sides: either the handler sees a call's increment and
// waits for it, or the call sees `closing` and backs out.
std::atomic<long> running{0};
std::atomic<bool> closing{false};

void on_exit() {
  closing.store(true);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kExitWaitSeconds);
  while (running.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

// Never destroyed: exit handlers and late calls may still use them.
std::mutex &seen_mutex() {
  static std::mutex *m = new std::mutex;
  return *m;
}
std::unordered_set<const void *> &seen() {
  static auto *s = new std::unordered_set<const void *>;
  return *s;
}

}  // namespace

bool enter() noexcept {
  running.fetch_add(1);
  if (!closing.load()) return true;
  running.fetch_sub(1);
  return false;
}

void leave() noexcept {
  running.fetch_sub(1);
}

void completed_first_call(const void *entry) noexcept {
  try {
    std::lock_guard<std::mutex> lock(seen_mutex());
    if (!seen().insert(entry).second) return;
  } catch (...) {
    // No memory to remember it: register anyway (a duplicate entry is harmless).
  }
  std::atexit(on_exit);  // fails only when out of memory; the gate then stays where it was
}

void forget_first_calls() noexcept {
  std::lock_guard<std::mutex> lock(seen_mutex());
  seen().clear();
}

const char *refusal_message() noexcept {
  return "the process is exiting (exit() or a return from main was called while this request ran): kernel calls "
         "are refused";
}

}  // namespace parley::exit_gate
