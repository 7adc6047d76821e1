// GEMM through oneDNN's dnnl_sgemm (row-major), with bias and activation
// epilogue applied per output tile while it is still in cache.
//
// Why oneDNN: Debian's OpenBLAS 0.3.21 does not know recent Xeons and falls back
// to its SSE3 "Prescott" kernels (~30 GFLOP/s per core here) whereas oneDNN
// JIT-compiles AVX-512/AVX2 code for the machine it runs on (~150 GFLOP/s per
// core); see tests/bench/gemm_backends.cpp.
//
// Threading: the library never starts its own threads. The output is split into
// tiles (over batch, n, then m) that run on the runtime's pool through
// host->parallel_for, and each tile is a single-threaded dnnl_sgemm (the OpenMP
// thread count of the calling thread is set to 1 for the call and restored).
// So the runtime's pool is the only pool, kernels called concurrently from
// several threads do not oversubscribe the cores, and no OpenMP team spins
// between kernels.
//
// Memory: dnnl_sgemm allocates its packing buffers on every call and reports
// a failure as dnnl_out_of_memory (returned here as OUT_OF_MEMORY). Its JIT
// kernels are the exception: see onednn_ready below.
#include <oneapi/dnnl/dnnl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
#include <omp.h>
#endif

#include "cpu_common.h"
#include "cpu_features.h"
#include "cpu_kernels.h"
#include "onednn.h"

namespace parley::cpu {

namespace {

PARLEY_CPU_MULTIVERSION void add_bias(float *c, const float *bias, int64_t n) {
  for (int64_t j = 0; j < n; ++j) c[j] += bias[j];
}

PARLEY_CPU_MULTIVERSION void scale_row(float *c, float beta, int64_t n) {
  if (beta == 0.f) {
    for (int64_t j = 0; j < n; ++j) c[j] = 0.f;  // C is write-only when beta == 0 (BLAS semantics)
  } else {
    for (int64_t j = 0; j < n; ++j) c[j] *= beta;
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

parley_kernel_status library_failure(const Host &host, dnnl_status_t s, const char *what) {
  if (s == dnnl_out_of_memory)
    return host.fail(PARLEY_KERNEL_OUT_OF_MEMORY, "gemm: out of memory: oneDNN could not allocate %s", what);
  return host.fail(PARLEY_KERNEL_DEVICE_ERROR, "gemm: dnnl_sgemm failed with status %d (%s)", static_cast<int>(s),
                   what);
}

}  // namespace

// oneDNN (2.x) JIT-compiles its f32 GEMM kernels the first time each code
// path runs (gemm_info_t::jit_init, the AVX-512 small-n TN kernels, the
// no-copy kernels: each set inside a std::call_once) into code buffers from
// mmap. Its Xbyak is built with XBYAK_NO_EXCEPTION, so when such an mmap
// fails (an address-space limit, `ulimit -v`) the generator writes through
// the missing buffer and the process dies with SIGSEGV; a std::bad_alloc
// raised there unwinds through pthread_once (see preload_unwinder in
// runtime/core/unwinder.hpp). So every kernel is generated once, before the
// first real product: by small products that reach every one of those paths
// (each transposition, m = 1 (gemv), m = 2 (small n / no-copy), m = 64), run
// only after an mmap of kJitAddressSpace bytes with the same protection has
// succeeded and been returned. Measured with oneDNN 2.6.3 on AVX-512: 60
// mappings, 17 MB; after these products no other shape maps code again
// (checked over m, n, k from 1 to 1500 in each transposition; tests/oom runs
// a chat turn and a translation with each allocation and anonymous mmap
// failing in turn). The room checked also covers a glibc malloc arena: a
// thread whose arena could not be created under the limit retries at every
// malloc, so the generator's own mallocs can create it, just after the check
// returned its room, and leave the code buffers without any (seen under
// `ulimit -v` on the serving engine's thread). An arena is 64 MiB reserved
// PROT_NONE, but glibc's new_heap first maps twice that to align it, so the
// check needs 128 MiB for it: with 64 MiB, an AVX-512 Xeon still died in the
// generator in 6 of 21 runs at limits 248-262 MB (tests/oom ulimit sweep),
// and none in 140 runs over 200-340 MB with 128. Another thread of the host may still take the room
// between the check and the generation: that window is this library's to
// close, and it is once per process.
constexpr size_t kJitAddressSpace = (size_t{32} << 20) + (size_t{128} << 20);
constexpr int64_t kWarmDim = 64;

parley_kernel_status onednn_ready(const Host &host) {
  static std::mutex mutex;
  static std::atomic<bool> ready{false};
  if (ready.load(std::memory_order_acquire)) return PARLEY_KERNEL_OK;
  std::lock_guard<std::mutex> lock(mutex);
  if (ready.load(std::memory_order_relaxed)) return PARLEY_KERNEL_OK;
  void *room = mmap(nullptr, kJitAddressSpace, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (room == MAP_FAILED) {
    const int err = errno;
    return host.fail(PARLEY_KERNEL_OUT_OF_MEMORY,
                     "gemm: out of memory: no room for oneDNN's JIT-compiled GEMM kernels (mmap of %zu MiB: %s); they "
                     "are generated once, at the first GEMM of the process",
                     kJitAddressSpace >> 20, std::strerror(err));
  }
  munmap(room, kJitAddressSpace);
  std::vector<float> a(kWarmDim * kWarmDim, 0.5f), b(kWarmDim * kWarmDim, 0.25f), c(kWarmDim * kWarmDim);
  SingleThreadedLibrary single;
  for (char ta : {'N', 'T'})
    for (char tb : {'N', 'T'})
      for (int64_t m : {int64_t{1}, int64_t{2}, kWarmDim}) {
        dnnl_status_t s = dnnl_sgemm(ta, tb, m, kWarmDim, kWarmDim, 1.f, a.data(), ta == 'T' ? m : kWarmDim, b.data(),
                                     kWarmDim, 0.f, c.data(), kWarmDim);
        if (s != dnnl_success) return library_failure(host, s, "its first kernels");
      }
  // The int8 GEMM of the LINEAR path for I8 weights on AVX512-VNNI
  // (linear_avx512.cpp), in the one form it is called.
  if (cpu_features().avx512_vnni) {
    std::vector<uint8_t> ua(kWarmDim * kWarmDim, 130);
    std::vector<int8_t> sb(kWarmDim * kWarmDim, 3);
    std::vector<int32_t> ic(kWarmDim * kWarmDim);
    const int32_t co = 0;
    for (int64_t m : {int64_t{1}, int64_t{2}, int64_t{16}, kWarmDim}) {
      dnnl_status_t s = dnnl_gemm_u8s8s32('N', 'T', 'F', m, kWarmDim, kWarmDim, 1.f, ua.data(), kWarmDim, 0, sb.data(),
                                          kWarmDim, 0, 0.f, ic.data(), kWarmDim, &co);
      if (s != dnnl_success) return library_failure(host, s, "its first int8 kernels");
    }
  }
  ready.store(true, std::memory_order_release);
  return PARLEY_KERNEL_OK;
}

parley_kernel_status gemm_f32(const parley_kernel_context *ctx, const void *args) {
  return guarded("gemm", ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    const parley_gemm_args *g = nullptr;
    if (auto st = begin_call("gemm", ctx, args, &host, &g)) return st;
    const int64_t m = g->m, n = g->n, k = g->k, batch = g->batch;
    PARLEY_CHECK(host, m >= 0 && n >= 0 && k >= 0, "gemm: negative shape m=%lld n=%lld k=%lld", ll(m), ll(n), ll(k));
    PARLEY_CHECK(host, batch >= 1, "gemm: batch (%lld) < 1", ll(batch));
    int64_t epi = enum_value(g->epilogue);
    PARLEY_CHECK(host, valid_activation(epi), "gemm: unknown epilogue %lld", ll(epi));
    const bool ta = g->trans_a != 0, tb = g->trans_b != 0;
    const int64_t a_cols = ta ? m : k, b_cols = tb ? k : n;
    PARLEY_CHECK(host, g->lda >= std::max<int64_t>(1, a_cols), "gemm: lda (%lld) < %s (%lld)", ll(g->lda),
                 ta ? "m" : "k", ll(a_cols));
    PARLEY_CHECK(host, g->ldb >= std::max<int64_t>(1, b_cols), "gemm: ldb (%lld) < %s (%lld)", ll(g->ldb),
                 tb ? "k" : "n", ll(b_cols));
    PARLEY_CHECK(host, g->ldc >= std::max<int64_t>(1, n), "gemm: ldc (%lld) < n (%lld)", ll(g->ldc), ll(n));
    PARLEY_CHECK(host, g->stride_a >= 0 && g->stride_b >= 0 && g->stride_c >= 0,
                 "gemm: negative batch stride (a=%lld b=%lld c=%lld)", ll(g->stride_a), ll(g->stride_b),
                 ll(g->stride_c));
    if (m == 0 || n == 0) return PARLEY_KERNEL_OK;
    if (batch > 1)
      PARLEY_CHECK(host, g->stride_c >= (m - 1) * g->ldc + n,
                   "gemm: stride_c (%lld) < (m-1)*ldc+n (%lld): output matrices overlap", ll(g->stride_c),
                   ll((m - 1) * g->ldc + n));
    PARLEY_CHECK(host, g->c != nullptr, "gemm: c is NULL");
    if (k > 0) PARLEY_CHECK(host, g->a && g->b, "gemm: a or b is NULL");

    const float *A = static_cast<const float *>(g->a);
    const float *B = static_cast<const float *>(g->b);
    float *C = static_cast<float *>(g->c);
    const float *bias = static_cast<const float *>(g->bias);
    const int act = static_cast<int>(epi);
    if (k > 0)
      if (auto st = onednn_ready(host)) return st;

    // Tiling: enough tasks for every thread (x2 for balance), tiles of at least
    // 64 columns / 32 rows; n first, so each thread streams its own slice of
    // the weights (the decode case, m = 1, is bound by reading B).
    const int64_t threads = host.num_threads();
    const double flops = 2.0 * double(m) * double(n) * double(std::max<int64_t>(k, 1));
    int64_t want = 1;
    if (threads > 1 && flops >= 2.0 * 64 * 64 * 64 && batch < 2 * threads) want = ceil_div(2 * threads, batch);
    const int64_t n_parts = std::max<int64_t>(1, std::min(want, n / 64));
    const int64_t m_parts = std::max<int64_t>(1, std::min(ceil_div(want, n_parts), m / 32));
    const int64_t nb = ceil_div(ceil_div(n, n_parts), 16) * 16;
    const int64_t mb = ceil_div(m, m_parts);
    const int64_t n_tiles = ceil_div(n, nb), m_tiles = ceil_div(m, mb);
    const int64_t tasks = batch * n_tiles * m_tiles;

    std::atomic<dnnl_status_t> lib_status{dnnl_success};
    parley_kernel_status st = host.parallel_for(tasks, 1, [&](int64_t t0, int64_t t1) {
      SingleThreadedLibrary single;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t bi = t / (n_tiles * m_tiles);
        const int64_t rest = t % (n_tiles * m_tiles);
        const int64_t m0 = (rest / n_tiles) * mb, n0 = (rest % n_tiles) * nb;
        const int64_t mc = std::min(mb, m - m0), nc = std::min(nb, n - n0);
        float *c = C + bi * g->stride_c + m0 * g->ldc + n0;
        if (k == 0) {
          for (int64_t i = 0; i < mc; ++i) scale_row(c + i * g->ldc, g->beta, nc);
        } else {
          const float *a = A + bi * g->stride_a + (ta ? m0 : m0 * g->lda);
          const float *b = B + bi * g->stride_b + (tb ? n0 * g->ldb : n0);
          dnnl_status_t s =
              dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', mc, nc, k, g->alpha, a, g->lda, b, g->ldb, g->beta, c, g->ldc);
          if (s != dnnl_success) {
            dnnl_status_t none = dnnl_success;
            lib_status.compare_exchange_strong(none, s);
            return s == dnnl_out_of_memory ? PARLEY_KERNEL_OUT_OF_MEMORY : PARLEY_KERNEL_DEVICE_ERROR;
          }
        }
        if (bias || act != PARLEY_ACT_NONE) {
          for (int64_t i = 0; i < mc; ++i) {
            float *row = c + i * g->ldc;
            if (bias) add_bias(row, bias + n0, nc);
            if (act != PARLEY_ACT_NONE) apply_activation(act, row, row, nc);
          }
        }
      }
      return PARLEY_KERNEL_OK;
    });
    if (st == PARLEY_KERNEL_OK) return PARLEY_KERNEL_OK;
    if (lib_status.load() != dnnl_success) {
      char what[160];
      std::snprintf(what, sizeof what, "its packing buffers for a %lldx%lldx%lld product", ll(m), ll(n), ll(k));
      return library_failure(host, lib_status.load(), what);
    }
    if (st == PARLEY_KERNEL_OUT_OF_MEMORY)
      return host.fail(st, "gemm: out of memory in a %lldx%lldx%lld product", ll(m), ll(n), ll(k));
    if (st != PARLEY_KERNEL_OK) return host.fail(st, "gemm: failed (status %d)", static_cast<int>(st));
    return PARLEY_KERNEL_OK;
  });
}

}  // namespace parley::cpu
