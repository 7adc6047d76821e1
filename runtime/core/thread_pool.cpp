#include "core/thread_pool.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <system_error>

#include "core/environment.hpp"
#include "core/error.hpp"

namespace parley {

namespace {
thread_local bool t_inside_pool = false;  // true on workers and on a caller during its loop

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Polls ready() for up to spin_us microseconds; returns its last value.
template <class Ready>
bool spin_until(int64_t spin_us, Ready ready) {
  if (spin_us <= 0) return ready();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us);
  for (unsigned i = 1;; ++i) {
    if (ready()) return true;
    cpu_relax();
    if ((i & 63) == 0 && std::chrono::steady_clock::now() >= deadline) return ready();
  }
}
}  // namespace

int64_t ThreadPool::spin_us_from_environment() {
  static const int64_t value = integer_from_environment("PARLEY_SPIN_US", 0, 1000000, kDefaultSpinUs, "microseconds");
  return value;
}

struct ThreadPool::Job {
  RangeFn fn;
  void *user;
  int64_t n;
  int64_t chunk;
  std::atomic<int64_t> next{0};
  std::atomic<int> active{0};  // workers still inside run_chunks
};

ThreadPool::ThreadPool(int num_threads, int64_t spin_us)
    : spin_us_(spin_us < 0 ? spin_us_from_environment() : spin_us) {
  int extra = std::max(0, num_threads - 1);
  workers_.reserve(static_cast<size_t>(extra));
  for (int i = 0; i < extra; ++i) {
    try {
      workers_.emplace_back([this] { worker_loop(); });
    } catch (const std::system_error &e) {
      // No stack or no thread left (pthread_create: EAGAIN): the workers
      // already started must be joined here, since the destructor will not
      // run (a joinable std::thread destroyed is std::terminate).
      stop_workers();
      fail(PARLEY_ERROR_OUT_OF_MEMORY, "cannot start kernel thread " + std::to_string(i + 2) + " of " +
                                           std::to_string(num_threads) + ": " + e.what() +
                                           " (fewer threads, options->num_threads, need less memory)");
    }
  }
}

ThreadPool::~ThreadPool() {
  stop_workers();
}

void ThreadPool::stop_workers() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto &t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::run_chunks(Job &job) {
  for (;;) {
    int64_t begin = job.next.fetch_add(job.chunk);
    if (begin >= job.n) break;
    job.fn(job.user, begin, std::min(job.n, begin + job.chunk));
  }
}

void ThreadPool::worker_loop() {
  t_inside_pool = true;
  uint64_t seen = 0;
  for (;;) {
    spin_until(spin_us_, [&] {
      return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
    });
    Job *job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (!stop_ && job_ == nullptr && generation_ != seen) {
        seen = generation_;  // a job came and went while this worker was away: poll for the next
        continue;
      }
      if (!stop_ && generation_ == seen) {
        ++sleepers_;
        wake_.wait(lock, [&] { return stop_ || (job_ != nullptr && generation_ != seen); });
        --sleepers_;
      }
      if (stop_) return;
      seen = generation_;
      job = job_;
      job->active.fetch_add(1);  // under mutex_ while job_ is set: the caller waits for it
    }
    run_chunks(*job);
    if (job->active.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, RangeFn fn, void *user) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int threads = num_threads();
  if (t_inside_pool || threads == 1 || n <= grain) {
    fn(user, 0, n);
    return;
  }
  // Several chunks per thread balance uneven rows without tiny tasks.
  int64_t chunk = std::max(grain, (n + threads * 4 - 1) / (threads * 4));
  std::unique_lock<std::mutex> submit(submit_mutex_, std::try_to_lock);
  if (!submit.owns_lock()) {  // another thread's loop owns the workers: run ours alone
    fn(user, 0, n);
    return;
  }
  Job job;
  job.fn = fn;
  job.user = user;
  job.n = n;
  job.chunk = chunk;
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &job;
    generation_.fetch_add(1, std::memory_order_release);
    wake = sleepers_ > 0;
  }
  if (wake) wake_.notify_all();
  t_inside_pool = true;
  run_chunks(job);
  t_inside_pool = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = nullptr;  // no new worker may join this job
  }
  if (spin_until(spin_us_, [&] { return job.active.load(std::memory_order_acquire) == 0; })) return;
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return job.active.load() == 0; });
}

}  // namespace parley
