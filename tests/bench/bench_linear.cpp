// LINEAR micro-benchmark of the cpu plugin: every instruction-set path
// (forced through set_isa_cap, the in-process form of PARLEY_CPU_ISA) on the
// nn.Linear shapes of Qwen2.5-0.5B and SmolLM2-135M, per weight dtype, 1 and
// 2 threads. Not a test; never fails on timing. The machine is shared: trust
// ratios and 1-thread numbers most.
//
// Decode (m = 1..8): GB/s of weight bytes read per call against the memory
// bandwidth measured here by a streaming read of 1 GiB (same threads). So that
// weights come from DRAM as in a real model (whose layers together far exceed
// the L3), every call uses the next of several copies of the weight, at least
// 256 MiB in all.
// Prefill / batched (m > 8): GFLOP/s (2 m n k per call) of each path, and of
// oneDNN sgemm on float32 weights (the general path with F32 weights).
//
// Usage: bench_linear [--quick] [--threads 1,2] [--vnni-ukernel] [--file-layout]
// --file-layout: I8 per-row weights keep the file's layout on VNNI (no VNNI
// panels): the micro-kernel and oneDNN's int8 GEMM, as before the panels.
// --hot: one copy of each weight (it stays in the caches), as a model that
// fits the L3 runs, instead of copies that make every call read memory.
#include <immintrin.h>
#include <parley/plugin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../../plugins/cpu/cpu_features.h"
#include "bench_pool.h"

extern "C" const parley_plugin_desc *parley_cpu_plugin_entry(uint32_t host_abi_version,
                                                             const parley_host_services *host);

namespace {

using parley::bench::median;
using parley::bench::Pool;
using parley::cpu::Isa;
using Clock = std::chrono::steady_clock;

// Sums `bytes` (a multiple of 4 * 64) with 256-bit loads from `streams` (1 or
// 4) equal parts read side by side, as the GEMV kernels read 4 weight rows:
// a VM's cores often fetch more per cycle from several streams than from one.
__attribute__((target("avx2"))) long long read_sum(const char *p, size_t bytes, int streams) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  if (streams == 1) {
    for (size_t o = 0; o < bytes; o += 128) {
      a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + o)));
      a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + o + 32)));
      a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + o + 64)));
      a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + o + 96)));
    }
  } else {
    const size_t part = bytes / 4 / 64 * 64;
    const char *q0 = p, *q1 = p + part, *q2 = p + 2 * part, *q3 = p + 3 * part;
    for (size_t o = 0; o < part; o += 64) {
      a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q0 + o)));
      a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q1 + o)));
      a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q2 + o)));
      a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q3 + o)));
      a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q0 + o + 32)));
      a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q1 + o + 32)));
      a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q2 + o + 32)));
      a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q3 + o + 32)));
    }
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  return _mm256_extract_epi64(s, 0);
}

// Streaming read bandwidth, GB/s: the buffer is read in 16 MiB pieces (the
// size of one large layer's weight, i.e. of one kernel call), each split
// evenly over the pool's threads and timed on its own; the best piece over
// 1 or 4 streams per thread. Timed like the kernels (best of many short
// calls), so that a busy neighbour does not lower the bound more than the
// kernels' numbers.
double read_bandwidth(Pool &pool, int threads, const std::vector<char> &buf, int reps) {
  double best = 0;
  std::atomic<long long> sink{0};
  const size_t piece = size_t(16) << 20;
  const size_t per = piece / size_t(threads) / 256 * 256;
  for (int streams : {1, 4}) {
    for (int r = 0; r < reps; ++r) {
      for (size_t o = 0; o + piece <= buf.size(); o += piece) {
        const auto t0 = Clock::now();
        pool.on_all([&](int64_t i) { sink.fetch_add(read_sum(buf.data() + o + size_t(i) * per, per, streams)); });
        const double t = std::chrono::duration<double>(Clock::now() - t0).count();
        best = std::max(best, double(per) * threads / t / 1e9);
      }
    }
  }
  return best;
}

struct Spec {
  const char *name;
  int32_t dtype, quant;
  int64_t group;
};
const Spec kSpecs[] = {
    {"f32", PARLEY_DTYPE_F32, PARLEY_QUANT_NONE, 0},        {"f16", PARLEY_DTYPE_F16, PARLEY_QUANT_NONE, 0},
    {"bf16", PARLEY_DTYPE_BF16, PARLEY_QUANT_NONE, 0},      {"i8row", PARLEY_DTYPE_I8, PARLEY_QUANT_PER_ROW, 0},
    {"i8g32", PARLEY_DTYPE_I8, PARLEY_QUANT_GROUPWISE, 32}, {"i4g32", PARLEY_DTYPE_I4, PARLEY_QUANT_GROUPWISE, 32}};

int64_t row_bytes(const Spec &s, int64_t k) {
  switch (s.dtype) {
    case PARLEY_DTYPE_F32:
      return 4 * k;
    case PARLEY_DTYPE_F16:
    case PARLEY_DTYPE_BF16:
      return 2 * k;
    case PARLEY_DTYPE_I8:
      return k;
    default:
      return k / 2;
  }
}

// Weight bytes read per call: the rows plus the scales.
int64_t weight_bytes(const Spec &s, int64_t n, int64_t k) {
  int64_t b = n * row_bytes(s, k);
  if (s.quant == PARLEY_QUANT_PER_ROW) b += 4 * n;
  if (s.quant == PARLEY_QUANT_GROUPWISE) b += 4 * n * (k / s.group);
  return b;
}

const parley_kernel_desc *linear_desc(int32_t wdt) {
  static Pool pool(1);
  const parley_plugin_desc *d = parley_cpu_plugin_entry(PARLEY_PLUGIN_ABI_VERSION, nullptr);
  (void)pool;
  for (size_t i = 0; i < d->num_kernels; ++i)
    if (d->kernels[i].op == PARLEY_OP_LINEAR && d->kernels[i].weight_dtype == wdt) return &d->kernels[i];
  return nullptr;
}

// Several copies of one random weight, prepared.
struct Weights {
  const parley_kernel_desc *kd;
  const parley_kernel_context *ctx;
  std::vector<std::vector<uint8_t>> data;
  std::vector<std::vector<float>> scales;
  std::vector<void *> handles;
  Weights(const Spec &s, int64_t n, int64_t k, int copies, const parley_kernel_context *c) : ctx(c) {
    kd = linear_desc(s.dtype);
    std::mt19937 rng(7);
    const int64_t rb = row_bytes(s, k);
    for (int i = 0; i < copies; ++i) {
      std::vector<uint8_t> d(size_t(n * rb));
      if (s.dtype == PARLEY_DTYPE_F32 || s.dtype == PARLEY_DTYPE_F16 || s.dtype == PARLEY_DTYPE_BF16) {
        // Values in [-1, 1] in the stored format (bf16/f16 halves of small floats).
        std::uniform_real_distribution<float> u(-1.f, 1.f);
        for (size_t e = 0; e < d.size() / (s.dtype == PARLEY_DTYPE_F32 ? 4 : 2); ++e) {
          const float f = u(rng);
          if (s.dtype == PARLEY_DTYPE_F32) {
            std::memcpy(d.data() + 4 * e, &f, 4);
          } else if (s.dtype == PARLEY_DTYPE_F16) {
            const _Float16 h = _Float16(f);
            std::memcpy(d.data() + 2 * e, &h, 2);
          } else {
            uint32_t b;
            std::memcpy(&b, &f, 4);
            const uint16_t h = uint16_t(b >> 16);
            std::memcpy(d.data() + 2 * e, &h, 2);
          }
        }
      } else {
        for (auto &b : d) b = uint8_t(rng());
      }
      std::vector<float> sc(s.quant == PARLEY_QUANT_PER_ROW     ? size_t(n)
                            : s.quant == PARLEY_QUANT_GROUPWISE ? size_t(n * (k / s.group))
                                                                : 0,
                            0.01f);
      parley_weight_desc wd{};
      wd.struct_size = sizeof wd;
      wd.name = "bench";
      wd.dtype = s.dtype;
      wd.quant = s.quant;
      wd.n = n;
      wd.k = k;
      wd.data = d.data();
      wd.ld_bytes = rb;
      wd.scales = sc.empty() ? nullptr : sc.data();
      wd.group_size = s.group;
      parley_prepared_weight pw{};
      pw.struct_size = sizeof pw;
      if (kd->prepare_weight(ctx, &wd, &pw) != PARLEY_KERNEL_OK) {
        std::fprintf(stderr, "prepare failed\n");
        std::exit(1);
      }
      data.push_back(std::move(d));
      scales.push_back(std::move(sc));
      handles.push_back(pw.handle);
    }
  }
  ~Weights() {
    for (void *h : handles) kd->release_weight(ctx, h);
  }
};

struct Timing {
  double best, median;  // seconds per call
};

// Seconds per call over `reps` calls (after a warm-up round over every copy):
// the best and the median. On a loaded machine the best is the closer estimate
// of the kernel's own speed (a call preempted by a neighbour only gets slower).
Timing time_linear(Pool &pool, Weights &w, int64_t m, int64_t n, int64_t k, int reps) {
  std::vector<float> x(size_t(m * k)), out(size_t(m * n));
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto &v : x) v = u(rng);
  parley_linear_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.m = m, a.n = n, a.k = k;
  a.x = x.data(), a.ld_x = k;
  a.out = out.data(), a.ld_out = n;
  const size_t copies = w.handles.size();
  for (size_t c = 0; c < copies; ++c) {
    a.weight = w.handles[c];
    if (w.kd->run(pool.context(), &a) != PARLEY_KERNEL_OK) std::exit(1);
  }
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    a.weight = w.handles[size_t(r) % copies];
    const auto t0 = Clock::now();
    w.kd->run(pool.context(), &a);
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return {*std::min_element(t.begin(), t.end()), median(t)};
}

struct Path {
  const char *name;
  Isa cap;
  bool vnni;
};
const Path kPaths[] = {{"generic", Isa::kGeneric, false},
                       {"avx2", Isa::kAvx2, false},
                       {"avx2+int8", Isa::kAvx2, true},
                       {"avx512", Isa::kAvx512, false},
                       {"avx512+vnni", Isa::kAvx512, true}};

}  // namespace

int main(int argc, char **argv) {
  bool quick = false, hot = false;
  std::vector<int> thread_counts = {1, 2};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    // VNNI's dot-product micro-kernel at every m (no oneDNN int8 GEMM, no
    // packed-block kernel): the crossover table then shows where they win.
    if (std::strcmp(argv[i], "--vnni-ukernel") == 0) {
      parley::cpu::set_onednn_i8_min_m(int64_t{1} << 40);
      parley::cpu::set_vnni_packed_min_m(int64_t{1} << 40);
    }
    if (std::strcmp(argv[i], "--file-layout") == 0) parley::cpu::set_i8_panels(false);
    if (std::strcmp(argv[i], "--hot") == 0) hot = true;
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      thread_counts.clear();
      for (char *s = argv[++i]; *s;) {
        thread_counts.push_back(int(std::strtol(s, &s, 10)));
        if (*s == ',') ++s;
      }
    }
  }
  std::printf("%s\n", parley::cpu::isa_description().c_str());
  const auto &f = parley::cpu::cpu_features();
  struct Shape {
    const char *what;
    int64_t k, n;
  };
  const Shape decode_shapes[] = {{"qwen0.5b mlp up", 896, 4864},    {"qwen0.5b mlp down", 4864, 896},
                                 {"qwen0.5b lm_head", 896, 151936}, {"smollm2 mlp up", 576, 1536},
                                 {"smollm2 mlp down", 1536, 576},   {"smollm2 lm_head", 576, 49152}};
  std::vector<char> bwbuf(size_t(1) << 30, 1);
  for (int threads : thread_counts) {
    Pool pool(threads);
    const double bw = read_bandwidth(pool, threads, bwbuf, quick ? 2 : 3);
    std::printf("\n== %d thread(s): streaming-read bandwidth %.1f GB/s\n", threads, bw);
    std::printf("decode (m=1): weight GB/s per call (best of the calls), %% of that bandwidth, median GB/s\n");
    std::printf("%-18s %-6s %7s |", "shape", "dtype", "MiB");
    for (const Path &p : kPaths) std::printf(" %-24s|", p.name);
    std::printf("\n");
    for (const Shape &s : decode_shapes) {
      for (const Spec &spec : kSpecs) {
        if (quick && spec.dtype == PARLEY_DTYPE_BF16) continue;
        const int64_t bytes = weight_bytes(spec, s.n, s.k);
        const int copies = hot ? 1 : int(std::max<int64_t>(1, ((int64_t(256) << 20) + bytes - 1) / bytes));
        parley::cpu::set_isa_cap(Isa::kAvx512, true, false);  // prepared as a VNNI host does (i8row: panels)
        Weights w(spec, s.n, s.k, copies, pool.context());
        std::printf("%-18s %-6s %7.1f |", s.what, spec.name, bytes / 1048576.0);
        for (const Path &p : kPaths) {
          if ((p.cap == Isa::kAvx512 && !f.avx512) || (p.cap == Isa::kAvx2 && !f.avx2) ||
              (p.vnni && p.cap == Isa::kAvx512 && !f.avx512_vnni) ||
              (p.vnni && spec.dtype != PARLEY_DTYPE_I8 && spec.dtype != PARLEY_DTYPE_I4)) {
            std::printf(" %-24s|", p.vnni ? "(same as without int8)" : "(cpu lacks it)");
            continue;
          }
          parley::cpu::set_isa_cap(p.cap, p.vnni, false);
          const Timing t = time_linear(pool, w, 1, s.n, s.k, quick ? 15 : 41);
          std::printf(" %5.1f GB/s %3.0f%% (med %5.1f)|", bytes / t.best / 1e9, 100 * bytes / t.best / 1e9 / bw,
                      bytes / t.median / 1e9);
        }
        std::printf("\n");
        std::fflush(stdout);
      }
    }
    std::printf("\nsmall m crossover (qwen0.5b mlp up, k=896 n=4864): GFLOP/s (best) by m\n");
    std::printf("%-6s %4s |", "dtype", "m");
    for (const Path &p : kPaths) std::printf(" %-11s|", p.name);
    std::printf("\n");
    for (const Spec &spec : kSpecs) {
      if (spec.dtype != PARLEY_DTYPE_F32 && spec.dtype != PARLEY_DTYPE_I8 && spec.dtype != PARLEY_DTYPE_I4 &&
          spec.dtype != PARLEY_DTYPE_F16)
        continue;
      const int64_t k = 896, n = 4864;
      const int64_t bytes = weight_bytes(spec, n, k);
      const int copies = hot ? 1 : int(std::max<int64_t>(1, ((int64_t(256) << 20) + bytes - 1) / bytes));
      parley::cpu::set_isa_cap(Isa::kAvx512, true, false);  // prepared as a VNNI host does (i8row: panels)
      Weights w(spec, n, k, copies, pool.context());
      // The avx2+int8 column forces the AVX2 int8 kernel at every m
      // (set_avx2_int8_max_m) to show where it stops winning.
      for (int64_t m : {1, 2, 4, 8, 10, 12, 16, 20, 24, 32}) {
        std::printf("%-6s %4lld |", spec.name, static_cast<long long>(m));
        for (const Path &p : kPaths) {
          if ((p.cap == Isa::kAvx512 && !f.avx512) || (p.vnni && p.cap == Isa::kAvx512 && !f.avx512_vnni)) {
            std::printf(" %-11s|", "-");
            continue;
          }
          parley::cpu::set_isa_cap(p.cap, p.vnni, false);
          parley::cpu::set_avx2_int8_max_m(m);
          const Timing t = time_linear(pool, w, m, n, k, quick ? 9 : 21);
          parley::cpu::set_avx2_int8_max_m(-1);
          std::printf(" %7.1f GF |", 2.0 * m * n * k / t.best / 1e9);
        }
        std::printf("\n");
      }
    }
    std::printf(
        "\nprefill / batched: GFLOP/s, best of the calls (general = tile convert + oneDNN sgemm; f32 general = sgemm "
        "on f32; vnni = the VNNI path as prepared (i8row: VNNI panels); file = i8row on the file's layout (oneDNN "
        "int8 GEMM from 24 rows); ukernel = the file-layout micro-kernel at every m)\n");
    const Shape prefill_shapes[] = {{"qwen0.5b mlp up", 896, 4864},
                                    {"qwen0.5b mlp down", 4864, 896},
                                    {"smollm2 mlp up", 576, 1536},
                                    {"opus-mt ffn", 512, 2048}};
    for (const Shape &s : prefill_shapes) {
      for (int64_t m : {32, 128, 512}) {
        if (quick && m == 512) continue;
        std::printf("%-18s m=%-4lld |", s.what, static_cast<long long>(m));
        for (const Spec &spec : kSpecs) {
          if (quick && spec.dtype == PARLEY_DTYPE_BF16) continue;
          // Prepared while VNNI is in use: I8 per-row weights get their
          // VNNI panels (unless --file-layout).
          parley::cpu::set_isa_cap(Isa::kAvx512, true, false);
          Weights w(spec, s.n, s.k, 1, pool.context());
          parley::cpu::set_isa_cap(Isa::kAvx512, false, false);
          const double tg = time_linear(pool, w, m, s.n, s.k, quick ? 5 : 11).best;
          std::printf(" %s %6.1f", spec.name, 2.0 * m * s.n * s.k / tg / 1e9);
          if ((spec.dtype == PARLEY_DTYPE_I8 || spec.dtype == PARLEY_DTYPE_I4) && f.avx512_vnni) {
            parley::cpu::set_isa_cap(Isa::kAvx512, true, false);
            const double tv = time_linear(pool, w, m, s.n, s.k, quick ? 5 : 11).best;
            std::printf(" (vnni %6.1f)", 2.0 * m * s.n * s.k / tv / 1e9);
            // The same path on the file's layout with the dot-product
            // micro-kernel at every m (without oneDNN's int8 GEMM / the
            // packed-block kernel).
            const bool panels = parley::cpu::i8_panels_enabled();
            parley::cpu::set_i8_panels(false);
            Weights wf(spec, s.n, s.k, 1, pool.context());
            parley::cpu::set_i8_panels(panels);
            const int64_t saved_onednn = parley::cpu::onednn_i8_min_m(),
                          saved_packed = parley::cpu::vnni_packed_min_m();
            if (spec.dtype == PARLEY_DTYPE_I8 && spec.quant == PARLEY_QUANT_PER_ROW && panels) {
              const double tf = time_linear(pool, wf, m, s.n, s.k, quick ? 5 : 11).best;
              std::printf(" (file %6.1f)", 2.0 * m * s.n * s.k / tf / 1e9);
            }
            parley::cpu::set_onednn_i8_min_m(int64_t{1} << 40);
            parley::cpu::set_vnni_packed_min_m(int64_t{1} << 40);
            const double tu = time_linear(pool, wf, m, s.n, s.k, quick ? 5 : 11).best;
            parley::cpu::set_onednn_i8_min_m(saved_onednn);
            parley::cpu::set_vnni_packed_min_m(saved_packed);
            std::printf(" (ukernel %6.1f)", 2.0 * m * s.n * s.k / tu / 1e9);
          }
          if (spec.dtype == PARLEY_DTYPE_BF16 && f.avx512_bf16) {
            parley::cpu::set_isa_cap(Isa::kAvx512, false, true);
            const double tv = time_linear(pool, w, m, s.n, s.k, quick ? 5 : 11).best;
            std::printf(" (dpbf16 %6.1f)", 2.0 * m * s.n * s.k / tv / 1e9);
          }
          std::printf(" |");
        }
        std::printf("\n");
        std::fflush(stdout);
      }
    }
  }
  parley::cpu::set_isa_cap(Isa::kAvx512, true, true);
  return 0;
}
