// A fixed pool of worker threads serving parallel_for for kernels. The caller
// takes part in its own loop; a parallel_for issued from inside a worker (a
// kernel calling another) runs serially on that thread instead of deadlocking.
//
// After a job, a worker polls for the next one for a while (spin_us, default
// kDefaultSpinUs, PARLEY_SPIN_US in the environment; 0: never) before it
// sleeps on the condition variable: a decode step issues hundreds of short
// parallel_for calls, and a worker woken through the kernel for each one
// arrived after the caller had done most of the work alone (SmolLM2 decode
// at 2 threads ran 1.2x one thread's speed). The caller spins the same way
// for the workers' last chunks, and signals the condition variable only when
// a worker sleeps.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace parley {

class ThreadPool {
 public:
  using RangeFn = void (*)(void *user, int64_t begin, int64_t end);

  static constexpr int64_t kDefaultSpinUs = 100;
  // PARLEY_SPIN_US when set to a whole number of microseconds (0 ... 1000000),
  // else kDefaultSpinUs (an unusable value is reported on stderr once).
  static int64_t spin_us_from_environment();

  // Throws Error(OUT_OF_MEMORY) when a worker thread cannot be started.
  // spin_us < 0: spin_us_from_environment().
  explicit ThreadPool(int num_threads, int64_t spin_us = -1);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }
  void parallel_for(int64_t n, int64_t grain, RangeFn fn, void *user);

 private:
  struct Job;
  void worker_loop();
  void stop_workers() noexcept;
  static void run_chunks(Job &job);

  std::vector<std::thread> workers_;
  std::mutex mutex_;         // guards job_, stop_, sleepers_ and the writes of generation_
  std::mutex submit_mutex_;  // one parallel_for at a time uses the workers
  std::condition_variable wake_;
  std::condition_variable done_;
  Job *job_ = nullptr;
  std::atomic<uint64_t> generation_{0};  // also read unlocked by spinning workers
  std::atomic<bool> stop_{false};
  int sleepers_ = 0;  // workers waiting on wake_
  int64_t spin_us_;
};

}  // namespace parley
