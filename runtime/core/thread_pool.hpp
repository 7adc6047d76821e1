// A fixed pool of worker threads serving parallel_for for kernels. The caller
// takes part in its own loop; a parallel_for issued from inside a worker (a
// kernel calling another) runs serially on that thread instead of deadlocking.
#pragma once

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

  // Throws Error(OUT_OF_MEMORY) when a worker thread cannot be started.
  explicit ThreadPool(int num_threads);
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
  std::mutex mutex_;         // guards job_, generation_, stop_
  std::mutex submit_mutex_;  // one parallel_for at a time uses the workers
  std::condition_variable wake_;
  std::condition_variable done_;
  Job *job_ = nullptr;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace parley
