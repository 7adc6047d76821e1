// The CUDA plugin's SIMT attention kernels (plugins/cuda/attention/
// simt_attention.cuh) run on the CPU under the SIMT emulator and compared
// with the cpu plugin's attention on fresh random inputs: every mask kind,
// head dims 64 and 128, GQA/MQA, q_len = 1 (decode), q_len < kv_len and
// q_len > kv_len (fully masked rows), one and several KV splits, fp32 and
// fp16 inputs, lse and probabilities, sliding windows (inputs from
// tests/common/gtest_seed.h seeds). Then the harness proves it can fail: a
// barrier dropped, a shuffle reading the wrong lane, or the window ignored
// must be caught.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../common/attention_condition.h"
#include "../common/gtest_seed.h"
#include "cpu_reference.hpp"
#include "fault_ctx.hpp"
#include "mma_attention.cuh"  // float_to_bits
#include "rel_error.hpp"
#include "simt_attention.cuh"
#include "simt_emulator.hpp"

using namespace parley::cuda::attn;
using parley::simt::Ctx;
using parley::simt::Dim3;
using parley::simt::Emulator;
using parley::simt::SimtError;
using parley::test::rel_error;

namespace {

struct Case {
  int batch = 2, heads = 4, kv_heads = 2, q_len = 1, kv_len = 37, dim = 64;
  uint32_t mask = 0;
  int splits = 1;
  bool fp16 = false, probs = true;
  // Fused KV append: the q_len newest rows come in k_new/v_new and their
  // cache rows start as NaN; the kernel must attend over them and write them.
  bool append = false;
  std::vector<int32_t> key_lengths;
  // Sliding window (plugin ABI 1.4; needs mask & 1). The kernel's K/V rows
  // before the first query's window of each sequence are NaN (poison): no
  // row sees them, so the kernel must not read them (a masked key read
  // anyway would still put 0 * NaN into the accumulator).
  int window = 0;
  bool poison = true;
  bool kernel_drops_window = false;  // WRONG variant: the kernel gets no window
};

// Keys of sequence b before every query's window (the cpu plugin's first(0)).
int window_start(const Case &c, int b) {
  if (c.window <= 0) return 0;
  const int L = c.mask & 2u ? c.key_lengths[static_cast<size_t>(b)] : c.kv_len;
  return std::max(0, L - c.q_len + 1 - c.window);
}

// Sets rows j < window_start of each sequence ([b][j][g][d] layout) to `bad`.
template <class T>
void poison_before_window(const Case &c, std::vector<T> &kv, T bad) {
  if (!c.poison) return;
  const size_t row = static_cast<size_t>(c.kv_heads) * c.dim;
  for (int b = 0; b < c.batch; ++b)
    for (int j = 0; j < std::min(window_start(c, b), c.kv_len); ++j)
      std::fill_n(kv.begin() + (static_cast<size_t>(b) * c.kv_len + j) * row, row, bad);
}

// The fault-injecting context (fault_ctx.hpp); a wrong lane on mask 1.
using parley::simt::Fault;
template <Fault F>
using KernelCtx = parley::simt::FaultCtx<F, 1, 2>;

struct Result {
  std::vector<float> out, lse, probs;
};

template <Fault F, class T, int D>
Result run_emulated(const Case &c, const std::vector<T> &q, const std::vector<T> &k, const std::vector<T> &v) {
  const int G = c.heads / c.kv_heads, rows = G * c.q_len;
  SimtParams p{};
  p.q = q.data(), p.k = k.data(), p.v = v.data();
  std::vector<T> k_cache, v_cache, k_fresh, v_fresh;  // append: the poisoned cache and the new rows
  const int64_t row = int64_t{c.kv_heads} * D;
  auto newest = [&](int b) { return (c.mask & 2u ? c.key_lengths[static_cast<size_t>(b)] : c.kv_len) - c.q_len; };
  if (c.append) {
    k_cache = k, v_cache = v;
    k_fresh.assign(static_cast<size_t>(c.batch) * c.q_len * row, T{});
    v_fresh = k_fresh;
    T nan_bits;
    if constexpr (sizeof(T) == 2)
      nan_bits = 0x7FFF;
    else
      nan_bits = std::nanf("");
    for (int b = 0; b < c.batch; ++b)
      for (int i = 0; i < c.q_len; ++i) {
        const int pos = newest(b) + i;
        if (pos < 0) continue;  // never written: the kernel reads k_new there
        const size_t src = (static_cast<size_t>(b) * c.kv_len + pos) * row, dst = (size_t(b) * c.q_len + i) * row;
        std::copy_n(k.begin() + src, row, k_fresh.begin() + dst);
        std::copy_n(v.begin() + src, row, v_fresh.begin() + dst);
        std::fill_n(k_cache.begin() + src, row, nan_bits);
        std::fill_n(v_cache.begin() + src, row, nan_bits);
      }
    p.k = k_cache.data(), p.v = v_cache.data(), p.k_new = k_fresh.data(), p.v_new = v_fresh.data();
    p.kn_sb = p.vn_sb = int64_t{c.q_len} * row, p.kn_sh = p.vn_sh = D, p.kn_ss = p.vn_ss = row;
  }
  Result r;
  r.out.assign(static_cast<size_t>(c.batch) * c.heads * c.q_len * D, std::nanf(""));
  r.lse.assign(static_cast<size_t>(c.batch) * c.heads * c.q_len, std::nanf(""));
  p.out = r.out.data(), p.lse = r.lse.data();
  // Layouts: q/out [b, i, h, d]; k/v [b, j, g, d] (a KV cache row per key).
  p.q_sb = int64_t{c.q_len} * c.heads * D, p.q_sh = D, p.q_ss = int64_t{c.heads} * D;
  p.o_sb = p.q_sb, p.o_sh = p.q_sh, p.o_ss = p.q_ss;
  p.k_sb = int64_t{c.kv_len} * c.kv_heads * D, p.k_sh = D, p.k_ss = int64_t{c.kv_heads} * D;
  p.v_sb = p.k_sb, p.v_sh = p.k_sh, p.v_ss = p.k_ss;
  p.batch = c.batch, p.heads = c.heads, p.kv_heads = c.kv_heads, p.q_len = c.q_len, p.kv_len = c.kv_len;
  p.scale = 1.f / std::sqrt(static_cast<float>(D));
  p.mask = c.mask;
  p.key_lengths = c.key_lengths.empty() ? nullptr : c.key_lengths.data();
  p.window = c.kernel_drops_window ? 0 : c.window;
  p.splits = c.splits;
  p.align = 8;
  p.row_tiles = ceil_div(rows, kSimtRows);
  const size_t slots = static_cast<size_t>(c.batch) * c.kv_heads * rows * c.splits;
  std::vector<float> pm(slots, std::nanf("")), pl(slots, std::nanf("")), pa(slots * D, std::nanf(""));
  p.part_m = pm.data(), p.part_l = pl.data(), p.part_acc = pa.data();

  Emulator emu;
  emu.launch(Dim3{c.batch * c.kv_heads * p.row_tiles, c.splits, 1}, kSimtThreads, kSimtRows * D, [&](Ctx &ctx) {
    KernelCtx<F> kc{ctx};
    simt_attention_split<KernelCtx<F>, T, D>(kc, p);
  });
  EXPECT_GT(emu.barriers(), 0u);
  if (c.splits > 1)
    emu.launch(Dim3{c.batch * c.kv_heads * rows, 1, 1}, 32, 0, [&](Ctx &ctx) {
      KernelCtx<F> kc{ctx};
      simt_attention_combine<KernelCtx<F>, D>(kc, p);
    });
  if (c.probs) {
    r.probs.assign(static_cast<size_t>(c.batch) * c.heads * c.q_len * c.kv_len, std::nanf(""));
    emu.launch(Dim3{c.batch * c.heads * c.q_len, 1, 1}, 32, 0, [&](Ctx &ctx) {
      KernelCtx<F> kc{ctx};
      simt_attention_probs<KernelCtx<F>, T, D>(kc, p, r.probs.data());
    });
  }
  if (c.append) {  // every cache row is now what a separate copy would have left
    EXPECT_TRUE(std::memcmp(k_cache.data(), k.data(), k.size() * sizeof(T)) == 0 &&
                std::memcmp(v_cache.data(), v.data(), v.size() * sizeof(T)) == 0)
        << "the appended K/V rows were not written to the cache";
  }
  return r;
}

Result run_cpu(const Case &c, const std::vector<float> &q, const std::vector<float> &k, const std::vector<float> &v) {
  auto r = parley::test::cpu_attention(
      {c.batch, c.heads, c.kv_heads, c.q_len, c.kv_len, c.dim, c.mask, &c.key_lengths, c.window}, q, k, v,
      /*with_probs=*/true);
  return Result{std::move(r.out), std::move(r.lse), std::move(r.probs)};
}

template <Fault F = Fault::kNone>
double max_error(const Case &c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const size_t nq = static_cast<size_t>(c.batch) * c.q_len * c.heads * c.dim;
  const size_t nk = static_cast<size_t>(c.batch) * c.kv_len * c.kv_heads * c.dim;
  std::vector<float> q(nq), k(nk), v(nk);
  for (auto *vec : {&q, &k, &v})
    for (float &x : *vec) x = nd(rng) * 2.f;
  Result got;
  if (c.fp16) {
    std::vector<uint16_t> qh(nq), kh(nk), vh(nk);
    for (size_t i = 0; i < nq; ++i) qh[i] = float_to_bits(q[i], false), q[i] = half_to_float(qh[i]);
    for (size_t i = 0; i < nk; ++i) kh[i] = float_to_bits(k[i], false), k[i] = half_to_float(kh[i]);
    for (size_t i = 0; i < nk; ++i) vh[i] = float_to_bits(v[i], false), v[i] = half_to_float(vh[i]);
    poison_before_window<uint16_t>(c, kh, 0x7FFF), poison_before_window<uint16_t>(c, vh, 0x7FFF);
    got = c.dim == 64 ? run_emulated<F, uint16_t, 64>(c, qh, kh, vh) : run_emulated<F, uint16_t, 128>(c, qh, kh, vh);
  } else {
    std::vector<float> kk = k, vv = v;  // the kernel's copies (the reference reads the clean ones)
    poison_before_window(c, kk, std::nanf("")), poison_before_window(c, vv, std::nanf(""));
    got = c.dim == 64 ? run_emulated<F, float, 64>(c, q, kk, vv) : run_emulated<F, float, 128>(c, q, kk, vv);
  }
  Result want = run_cpu(c, q, k, v);
  double e = std::max(rel_error(got.out, want.out), rel_error(got.lse, want.lse));
  if (c.probs) e = std::max(e, rel_error(got.probs, want.probs));
  return e;
}

constexpr double kTol = 1e-5;  // fp32 arithmetic on both sides (ENGINEERING.md)

}  // namespace

TEST(SimtAttention, EveryMaskHeadDimAndShape) {
  PARLEY_TRACE_BASE_SEED();
  for (int dim : {64, 128})
    for (uint32_t mask : {0u, 1u, 2u, 3u})
      for (int splits : {1, 3}) {
        // decode (q_len 1), GQA, ragged key lengths
        Case c;
        c.dim = dim, c.mask = mask, c.splits = splits;
        c.q_len = 1, c.kv_len = 37;
        if (mask & 2u) c.key_lengths = {37, 19};
        EXPECT_LE(max_error(c, parley::test::case_seed()), kTol)
            << "decode dim " << dim << " mask " << mask << " splits " << splits;
        // prefill-like, q_len < kv_len, MQA
        c.heads = 4, c.kv_heads = 1, c.q_len = 5, c.kv_len = 23;
        if (mask & 2u) c.key_lengths = {23, 6};
        EXPECT_LE(max_error(c, parley::test::case_seed()), kTol)
            << "q<kv dim " << dim << " mask " << mask << " splits " << splits;
        // q_len > kv_len: with a causal mask the first rows see nothing
        c.heads = 2, c.kv_heads = 2, c.q_len = 9, c.kv_len = 4;
        if (mask & 2u) c.key_lengths = {4, 1};
        EXPECT_LE(max_error(c, parley::test::case_seed()), kTol)
            << "q>kv dim " << dim << " mask " << mask << " splits " << splits;
      }
}

TEST(SimtAttention, KvAppendInTheSameLaunch) {
  // Rows past q_len <= kv_len only: positions L - q_len + i, padded and not,
  // decode and a few tokens at once, one and several splits and row tiles.
  PARLEY_TRACE_BASE_SEED();
  for (int dim : {64, 128})
    for (uint32_t mask : {1u, 3u})
      for (int splits : {1, 3}) {
        Case c;
        c.append = true, c.dim = dim, c.mask = mask, c.splits = splits;
        c.q_len = 1, c.kv_len = 37;
        if (mask & 2u) c.key_lengths = {37, 19};
        EXPECT_LE(max_error(c, parley::test::case_seed()), kTol)
            << "decode dim " << dim << " mask " << mask << " splits " << splits;
        c.heads = 8, c.kv_heads = 2, c.q_len = 5, c.kv_len = 23;
        if (mask & 2u) c.key_lengths = {23, 3};  // second sequence: L < q_len, two rows never stored
        EXPECT_LE(max_error(c, parley::test::case_seed()), kTol)
            << "q=5 dim " << dim << " mask " << mask << " splits " << splits;
      }
  Case h;
  h.append = true, h.fp16 = true, h.mask = 3u, h.q_len = 2, h.kv_len = 30, h.splits = 2, h.key_lengths = {30, 12};
  EXPECT_LE(max_error(h, parley::test::case_seed()), kTol);
}

TEST(SimtAttention, HalfInputsAndMoreRowsThanOneCta) {
  Case c;
  c.fp16 = true, c.heads = 8, c.kv_heads = 2, c.q_len = 6, c.kv_len = 29, c.mask = 1u, c.splits = 2;
  EXPECT_LE(max_error(c, parley::test::case_seed()), kTol);  // 24 packed rows: two row tiles
  c.dim = 128, c.mask = 3u, c.key_lengths = {29, 11};
  EXPECT_LE(max_error(c, parley::test::case_seed()), kTol);
}

TEST(SimtAttention, HugeLogitsStayFinite) {
  // Scores of ~1e3 after scaling: the online softmax must not overflow.
  Case c;
  c.q_len = 3, c.kv_len = 40, c.splits = 3, c.probs = false;
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const size_t nq = static_cast<size_t>(c.batch) * c.q_len * c.heads * c.dim;
  const size_t nk = static_cast<size_t>(c.batch) * c.kv_len * c.kv_heads * c.dim;
  std::vector<float> q(nq), k(nk), v(nk);
  for (float &x : q) x = nd(rng) * 30.f;
  for (float &x : k) x = nd(rng) * 30.f;
  for (float &x : v) x = nd(rng);
  Result got = run_emulated<Fault::kNone, float, 64>(c, q, k, v);
  Result want = run_cpu(c, q, k, v);
  // Both sides form the scores as fp32 dot products (in different orders), so
  // each may sit up to the rows' condition bound away from the exact result
  // (tests/common/attention_condition.h) and they may differ by twice it; on
  // top comes ENGINEERING.md's 1e-5 for the well-conditioned rest. With
  // scores of ~1e3 the bound exceeds 1e-5 whenever a row's top scores are
  // close (2.1e-5 was seen with a fixed 1e-5). Computed from these inputs in
  // float64 (no mask: every key visible).
  const int D = c.dim, G = c.heads / c.kv_heads;
  const float scale = 1.f / std::sqrt(static_cast<float>(D));  // as both kernels get it
  double out_num = 0, out_den = 0, lse_num = 0, lse_den = 0;
  std::vector<double> sc(static_cast<size_t>(c.kv_len)), eps(sc.size()), o(static_cast<size_t>(D));
  for (int b = 0; b < c.batch; ++b)
    for (int h = 0; h < c.heads; ++h)
      for (int i = 0; i < c.q_len; ++i) {
        const float *qr = &q[((static_cast<size_t>(b) * c.q_len + i) * c.heads + h) * D];
        auto row = [&](const std::vector<float> &t, int j) {
          return &t[((static_cast<size_t>(b) * c.kv_len + j) * c.kv_heads + h / G) * D];
        };
        double mx = -INFINITY;
        for (int j = 0; j < c.kv_len; ++j) {
          double dot = 0, dot_abs = 0;
          for (int d = 0; d < D; ++d) {
            const double t = static_cast<double>(qr[d]) * row(k, j)[d];
            dot += t, dot_abs += std::fabs(t);
          }
          sc[j] = scale * dot;
          eps[j] = parley::test::gamma_f32(D) * scale * dot_abs;
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (double x : sc) sum += std::exp(x - mx);
        std::fill(o.begin(), o.end(), 0.0);
        for (int j = 0; j < c.kv_len; ++j)
          for (int d = 0; d < D; ++d) o[d] += std::exp(sc[j] - mx) / sum * row(v, j)[d];
        const double lse = mx + std::log(sum);
        const parley::test::RowCondition rc = parley::test::attention_row_condition(
            sc, eps, D, [&](int j) { return row(v, j); }, o.data());
        out_num += rc.out * rc.out, lse_num += rc.lse * rc.lse, lse_den += lse * lse;
        for (double x : o) out_den += x * x;
      }
  const double out_tol = kTol + 2 * std::sqrt(out_num / out_den), lse_tol = kTol + 2 * std::sqrt(lse_num / lse_den);
  EXPECT_LE(rel_error(got.out, want.out), out_tol);
  EXPECT_LE(rel_error(got.lse, want.lse), lse_tol);
  std::printf("  out error %.3g (bound %.3g), lse error %.3g (bound %.3g)\n", rel_error(got.out, want.out), out_tol,
              rel_error(got.lse, want.lse), lse_tol);
}

// Sliding windows (plugin ABI 1.4) against the cpu plugin's windowed
// attention: smaller than, equal to and larger than the sequence; decode,
// prefill chunks over past keys, q_len > kv_len, ragged lengths, GQA/MQA,
// several row tiles (each CTA starts at its own first row's window), one and
// several splits (which share out only the window), the fused append, fp16
// inputs, probabilities. The K/V rows before each sequence's first window are
// NaN in the kernel's input, so reading them (not skipping) fails too.
TEST(SimtAttention, SlidingWindow) {
  PARLEY_TRACE_BASE_SEED();
  for (int dim : {64, 128})
    for (uint32_t mask : {1u, 3u})
      for (int splits : {1, 3}) {
        const std::string where =
            " dim " + std::to_string(dim) + " mask " + std::to_string(mask) + " splits " + std::to_string(splits);
        for (int window : {1, 8, 19, 36, 37, 38, 100}) {  // decode over 37 / 19 keys
          Case c;
          c.dim = dim, c.mask = mask, c.splits = splits, c.window = window;
          if (mask & 2u) c.key_lengths = {37, 19};
          EXPECT_LE(max_error(c, parley::test::case_seed()), kTol) << "decode window " << window << where;
        }
        for (int window : {1, 4, 9, 23, 40}) {  // a chunk of 5 over past keys, MQA
          Case c;
          c.dim = dim, c.mask = mask, c.splits = splits, c.window = window;
          c.heads = 4, c.kv_heads = 1, c.q_len = 5, c.kv_len = 23;
          if (mask & 2u) c.key_lengths = {23, 6};
          EXPECT_LE(max_error(c, parley::test::case_seed()), kTol) << "chunk window " << window << where;
        }
        Case c;  // q_len > kv_len: the first rows see nothing
        c.dim = dim, c.mask = mask, c.splits = splits, c.window = 2;
        c.heads = 2, c.kv_heads = 2, c.q_len = 9, c.kv_len = 4;
        if (mask & 2u) c.key_lengths = {4, 1};
        EXPECT_LE(max_error(c, parley::test::case_seed()), kTol) << "q>kv" << where;
      }
  // 24 packed rows (two row tiles whose windows start apart), fp16 inputs.
  Case c;
  c.heads = 8, c.kv_heads = 2, c.q_len = 6, c.kv_len = 29, c.mask = 1u, c.splits = 2, c.window = 3;
  EXPECT_LE(max_error(c, parley::test::case_seed()), kTol);
  c.fp16 = true, c.dim = 128, c.mask = 3u, c.key_lengths = {29, 11}, c.window = 7;
  EXPECT_LE(max_error(c, parley::test::case_seed()), kTol);
  // A long cache and a short window: the three splits share out the last 50 keys.
  Case d;
  d.kv_len = 200, d.mask = 3u, d.key_lengths = {200, 130}, d.splits = 3, d.window = 50, d.probs = false;
  EXPECT_LE(max_error(d, parley::test::case_seed()), kTol);
}

TEST(SimtAttention, SlidingWindowWithKvAppend) {
  PARLEY_TRACE_BASE_SEED();
  for (int splits : {1, 3})
    for (int window : {1, 6, 30}) {
      Case c;
      c.append = true, c.mask = 3u, c.splits = splits, c.window = window;
      c.q_len = 1, c.kv_len = 37, c.key_lengths = {37, 19};
      EXPECT_LE(max_error(c, parley::test::case_seed()), kTol) << "decode splits " << splits << " window " << window;
      c.heads = 8, c.kv_heads = 2, c.q_len = 5, c.kv_len = 23, c.key_lengths = {23, 3};
      EXPECT_LE(max_error(c, parley::test::case_seed()), kTol) << "q=5 splits " << splits << " window " << window;
    }
}

// The harness can fail: the same kernels with one fault injected.
TEST(SimtHarness, CatchesADroppedBarrier) {
  Case c;
  c.q_len = 2, c.kv_len = 9;
  EXPECT_THROW(max_error<Fault::kDropFirstBarrier>(c, 3), SimtError);
}

TEST(SimtHarness, CatchesAWrongShuffleLane) {
  Case c;
  c.q_len = 2, c.kv_len = 9;
  EXPECT_GT(max_error<Fault::kWrongShuffleLane>(c, parley::test::case_seed()), 1e-2);
}

// A kernel that ignores the window (full causal attention, poison off so
// only the mask differs) is caught, decode and prefill.
TEST(SimtHarness, CatchesAnIgnoredWindow) {
  Case c;
  c.mask = 3u, c.key_lengths = {37, 19}, c.window = 8, c.poison = false, c.kernel_drops_window = true;
  EXPECT_GT(max_error(c, parley::test::case_seed()), 1e-2);
  c.q_len = 5, c.kv_len = 23, c.key_lengths = {23, 9}, c.window = 4, c.splits = 3;
  EXPECT_GT(max_error(c, parley::test::case_seed()), 1e-2);
  // With the poison on, that kernel reads the NaN rows before the window:
  // the error is NaN, never within the tolerance.
  c.poison = true;
  EXPECT_FALSE(max_error(c, parley::test::case_seed()) <= 1e-2);
}

TEST(SimtHarness, ReportsDeadlockAndDivergentBarrier) {
  Emulator emu;
  // Half the threads skip the barrier and exit: divergent __syncthreads.
  EXPECT_THROW(emu.launch(Dim3{}, 64, 4,
                          [](Ctx &ctx) {
                            if (ctx.thread() < 32) ctx.sync();
                          }),
               SimtError);
  // One lane skips a shuffle its warp waits on: deadlock.
  EXPECT_THROW(emu.launch(Dim3{}, 32, 0,
                          [](Ctx &ctx) {
                            if (ctx.thread() != 5) ctx.shfl_xor(1.f, 1);
                          }),
               SimtError);
  // Reading shared memory nobody wrote (the poison), and out of bounds.
  EXPECT_THROW(emu.launch(Dim3{}, 32, 4, [](Ctx &ctx) { (void)ctx.smem_load(0); }), SimtError);
  EXPECT_THROW(emu.launch(Dim3{}, 32, 4, [](Ctx &ctx) { ctx.smem_store(4, 1.f); }), SimtError);
  // And a correct exchange works: lane l gets lane l^3's value.
  std::vector<float> got(32);
  emu.launch(Dim3{}, 32, 0, [&](Ctx &ctx) { got[ctx.thread()] = ctx.shfl_xor(static_cast<float>(ctx.thread()), 3); });
  for (int l = 0; l < 32; ++l) EXPECT_EQ(got[l], static_cast<float>(l ^ 3));
}
