// GEMM backend benchmark: OpenBLAS (cblas_sgemm) vs oneDNN (dnnl_sgemm) on
// shapes typical of Transformer inference. Prints GFLOP/s medians; not a test,
// never fails on timing. The machine is shared: compare ratios, not absolutes.
//
// C[m,n] = A[m,k] @ W[n,k]^T  (nn.Linear layout, trans_b), as the runtime calls it.
// Columns:
//   openblas      cblas_sgemm with openblas_set_num_threads(T)
//   onednn        dnnl_sgemm with omp_set_num_threads(T) (Debian's oneDNN uses OpenMP)
//   openblas-split T std::threads, each a single-threaded cblas_sgemm on a slice of n
//                  (what a kernel does when it runs BLAS single-threaded inside the
//                  runtime's parallel_for)
//   onednn-split   the same with dnnl_sgemm, omp_set_num_threads(1) on each thread
//                  (the strategy the cpu plugin uses)
// The split columns start T-1 std::threads per call (tens of microseconds), which a
// persistent pool does not pay: they understate the split strategy on tiny shapes.
#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

extern "C" char *openblas_get_corename(void);

namespace {

struct Shape {
  const char *what;
  int m, n, k;
};

template <typename G>
void split_n(int t, int n, G &&g) {
  std::vector<std::thread> th;
  int chunk = (n + t - 1) / t;
  for (int i = 1; i < t; ++i) {
    int n0 = i * chunk, n1 = std::min(n, n0 + chunk);
    if (n0 >= n1) break;
    th.emplace_back([&g, n0, n1] { g(n0, n1); });
  }
  g(0, std::min(chunk, n));
  for (auto &x : th) x.join();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double gflops(const Shape &s, F &&f) {
  const double flop = 2.0 * s.m * s.n * s.k;
  // Warm up and pick an iteration count giving ~20 ms per sample.
  f();
  auto t0 = std::chrono::steady_clock::now();
  f();
  double one = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int iters = std::max(1, static_cast<int>(0.02 / std::max(one, 1e-7)));
  std::vector<double> samples;
  for (int r = 0; r < 9; ++r) {
    auto a = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) f();
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count() / iters;
    samples.push_back(flop / dt * 1e-9);
  }
  return median(samples);
}

}  // namespace

int main(int argc, char **argv) {
  const Shape shapes[] = {
      {"decode", 1, 512, 512},     {"decode", 1, 2048, 512},    {"decode", 1, 512, 2048},
      {"decode", 1, 2048, 2048},   {"decode", 4, 2048, 2048},   {"prefill", 128, 512, 512},
      {"prefill", 128, 2048, 512}, {"prefill", 128, 512, 2048}, {"prefill", 512, 512, 512},
      {"prefill", 512, 2048, 512}, {"prefill", 512, 512, 2048}, {"prefill", 512, 2048, 2048},
  };
  int max_threads = argc > 1 ? std::atoi(argv[1]) : 2;
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::printf("GEMM C[m,n] = A[m,k] @ W[n,k]^T, fp32, GFLOP/s (median of 9)\n");
  std::printf("OpenBLAS core: %s, oneDNN %d.%d.%d\n", openblas_get_corename(), dnnl_version()->major,
              dnnl_version()->minor, dnnl_version()->patch);
  std::printf("%-8s %5s %5s %5s %3s %10s %10s %15s %13s\n", "kind", "m", "n", "k", "thr", "openblas", "onednn",
              "openblas-split", "onednn-split");
  for (const Shape &s : shapes) {
    std::vector<float> a(size_t(s.m) * s.k), w(size_t(s.n) * s.k), c(size_t(s.m) * s.n);
    for (auto &x : a) x = dist(rng);
    for (auto &x : w) x = dist(rng);
    for (int t = 1; t <= max_threads; ++t) {
      openblas_set_num_threads(t);
      double ob = gflops(s, [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.m, s.n, s.k, 1.f, a.data(), s.k, w.data(), s.k, 0.f,
                    c.data(), s.n);
      });
      omp_set_num_threads(t);
      double dn = gflops(
          s, [&] { dnnl_sgemm('N', 'T', s.m, s.n, s.k, 1.f, a.data(), s.k, w.data(), s.k, 0.f, c.data(), s.n); });
      openblas_set_num_threads(1);
      double sp = gflops(s, [&] {
        split_n(t, s.n, [&](int n0, int n1) {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.m, n1 - n0, s.k, 1.f, a.data(), s.k,
                      w.data() + size_t(n0) * s.k, s.k, 0.f, c.data() + n0, s.n);
        });
      });
      double ds = gflops(s, [&] {
        split_n(t, s.n, [&](int n0, int n1) {
          omp_set_num_threads(1);
          dnnl_sgemm('N', 'T', s.m, n1 - n0, s.k, 1.f, a.data(), s.k, w.data() + size_t(n0) * s.k, s.k, 0.f,
                     c.data() + n0, s.n);
        });
      });
      std::printf("%-8s %5d %5d %5d %3d %10.1f %10.1f %15.1f %13.1f\n", s.what, s.m, s.n, s.k, t, ob, dn, sp, ds);
      std::fflush(stdout);
    }
  }
  return 0;
}
