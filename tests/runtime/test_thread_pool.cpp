#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "core/thread_pool.hpp"

namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 8})
    for (int64_t spin_us : {0, 50}) {  // workers that sleep between jobs, and workers that poll
      parley::ThreadPool pool(threads, spin_us);
      for (int64_t n : {0, 1, 7, 64, 1001}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.parallel_for(
            n, 3,
            [](void *u, int64_t b, int64_t e) {
              auto &h = *static_cast<std::vector<std::atomic<int>> *>(u);
              for (int64_t i = b; i < e; ++i) h[static_cast<size_t>(i)]++;
            },
            &hits);
        for (int64_t i = 0; i < n; ++i)
          EXPECT_EQ(hits[static_cast<size_t>(i)].load(), 1) << threads << " " << spin_us << " " << n;
      }
    }
}

// Back-to-back short jobs: a polling worker finds jobs that already ended
// (it must not join them: the caller's Job is gone), jobs it joins late, and
// jobs it sleeps through; each job must still see every index once, and
// the pool must shut down from any of those states.
TEST(ThreadPool, ManyShortJobsWhilePollingOrSleeping) {
  for (int64_t spin_us : {0, 1, 20, 1000}) {
    parley::ThreadPool pool(4, spin_us);
    std::vector<int> hits(64);
    for (int rep = 0; rep < 3000; ++rep) {
      std::fill(hits.begin(), hits.end(), 0);
      pool.parallel_for(
          static_cast<int64_t>(hits.size()), 1,
          [](void *u, int64_t b, int64_t e) {
            auto &h = *static_cast<std::vector<int> *>(u);
            for (int64_t i = b; i < e; ++i) h[static_cast<size_t>(i)]++;
          },
          &hits);
      for (size_t i = 0; i < hits.size(); ++i) ASSERT_EQ(hits[i], 1) << "spin " << spin_us << " rep " << rep;
      if (rep % 500 == 0)
        std::this_thread::sleep_for(std::chrono::microseconds(spin_us * 2 + 50));  // let workers sleep
    }
  }
}

TEST(ThreadPool, NestedAndConcurrentCallersComplete) {
  parley::ThreadPool pool(3, 100);
  struct Ctx {
    parley::ThreadPool *pool;
    std::atomic<int64_t> sum{0};
  };
  auto outer = [](void *u, int64_t b, int64_t e) {
    auto *c = static_cast<Ctx *>(u);
    for (int64_t i = b; i < e; ++i)
      c->pool->parallel_for(
          10, 1, [](void *u2, int64_t b2, int64_t e2) { static_cast<Ctx *>(u2)->sum += e2 - b2; }, c);
  };
  // Every context exists before any thread starts: the vector must not grow under them.
  std::vector<std::unique_ptr<Ctx>> ctxs;
  for (int t = 0; t < 4; ++t) {
    ctxs.push_back(std::make_unique<Ctx>());
    ctxs.back()->pool = &pool;
  }
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    Ctx *ctx = ctxs[static_cast<size_t>(t)].get();
    callers.emplace_back([&pool, outer, ctx] {
      for (int rep = 0; rep < 50; ++rep) pool.parallel_for(16, 1, outer, ctx);
    });
  }
  for (auto &c : callers) c.join();
  for (auto &c : ctxs) EXPECT_EQ(c->sum.load(), 50 * 16 * 10);
}

}  // namespace
