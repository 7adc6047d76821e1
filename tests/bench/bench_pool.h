// The benchmarks' thread pool: a persistent spinning pool standing in for the
// runtime's (no thread start per call), behind the plugin ABI's host
// services, so a kernel is timed as a model runs it.
#pragma once
#include <immintrin.h>
#include <parley/plugin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <thread>
#include <vector>

namespace parley::bench {

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    services_.struct_size = sizeof services_;
    services_.abi_version = PARLEY_PLUGIN_ABI_VERSION;
    services_.host = this;
    services_.log = [](void *, int32_t, const char *) {};  // the level is printed once at the start
    services_.parallel_for = &Pool::parallel_for;
    services_.num_threads = [](void *h) { return static_cast<Pool *>(h)->threads_; };
    services_.scratch = &Pool::scratch;
    services_.set_error = [](void *, const char *msg) { std::fprintf(stderr, "error: %s\n", msg); };
    context_.struct_size = sizeof context_;
    context_.host = &services_;
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~Pool() {
    stop_.store(true);
    epoch_.fetch_add(1);
    for (auto &t : workers_) t.join();
  }
  const parley_kernel_context *context() const { return &context_; }
  // Runs fn(i) for i in [0, threads) on every thread (the bandwidth probe).
  template <class F>
  void on_all(F &&f) {
    struct U {
      F *f;
    } u{&f};
    run_job(
        threads_, 1,
        [](void *p, int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) (*static_cast<U *>(p)->f)(i);
        },
        &u);
  }

 private:
  static void *scratch(void *, size_t bytes) {
    thread_local std::vector<char> buf;
    thread_local void *aligned = nullptr;
    if (buf.size() < bytes + 64) {
      buf.assign(bytes + 64, 0);
      aligned = reinterpret_cast<void *>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
    }
    return aligned;
  }
  static void parallel_for(void *host, int64_t n, int64_t grain, parley_range_fn fn, void *user) {
    static_cast<Pool *>(host)->run_job(n, grain, fn, user);
  }
  void run_job(int64_t n, int64_t grain, parley_range_fn fn, void *user) {
    if (threads_ == 1 || n <= grain) {
      fn(user, 0, n);
      return;
    }
    n_ = n, grain_ = grain, fn_ = fn, user_ = user;
    next_.store(0);
    done_.store(0);
    epoch_.fetch_add(1, std::memory_order_release);
    chunks();
    while (done_.load(std::memory_order_acquire) < threads_ - 1) _mm_pause();
  }
  void chunks() {
    const int64_t count = (n_ + grain_ - 1) / grain_;
    for (int64_t c; (c = next_.fetch_add(1)) < count;) fn_(user_, c * grain_, std::min(n_, (c + 1) * grain_));
  }
  void work() {
    uint64_t seen = 0;  // the epoch at construction: a job posted before this thread runs is not missed
    for (;;) {
      uint64_t e;
      while ((e = epoch_.load(std::memory_order_acquire)) == seen) _mm_pause();
      seen = e;
      if (stop_.load()) return;
      chunks();
      done_.fetch_add(1, std::memory_order_release);
    }
  }
  int threads_;
  parley_host_services services_{};
  parley_kernel_context context_{};
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> epoch_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> done_{0};
  std::atomic<bool> stop_{false};
  int64_t n_ = 0, grain_ = 1;
  parley_range_fn fn_ = nullptr;
  void *user_ = nullptr;
};

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace parley::bench
