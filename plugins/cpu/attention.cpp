// Fused scaled dot-product attention with online softmax (Milakov & Gimelshein
// 2018, "Online normalizer calculation for softmax"; the FlashAttention loop).
// Work is split over batch x heads x blocks of queries; each task walks the
// keys in blocks, keeping per-query running max / sum / output accumulators,
// so no score matrix is materialised (unless probs are requested, in which
// case the scores are staged in the probs rows the caller provides).
//
// With k_new (fused KV-cache append, ABI 1.1) the new rows are first copied
// into the cache, then the attention runs over the cache as usual.
//
// F16 / BF16 / I8 caches (ABI 1.2 kv_dtype; BF16 from 1.6): an F16 cache is read in place where
// the CPU has AVX2 + F16C (halves widened in registers, the same arithmetic
// as the f32 loop); otherwise each task converts one key block of K and V
// (kKeyBlock rows) to f32 in a per-thread tile as it reaches it, and the f32
// loop above runs on the tile; the cache itself is never widened.
// Appended rows are rounded into the cache dtype (F16: round to nearest
// even; I8: scale = max|row| / 127, q = nearest-even(x / scale)), so the
// attention of this call already sees the rounded values, as later calls do.
//
// Paged caches (ABI 1.3 block_table): k / v (and the I8 scales) are pools of
// blocks. A task splits its current key block into runs of consecutive rows
// of one cache block (one table look-up per run; a contiguous cache is a
// single run), and the loops above walk the runs: F32 rows are read in
// place, F16 / I8 rows are widened into the tile run by run. The loops over
// head_dim never see the table, and the arithmetic (the softmax correction
// once per key block, then every key in order) is the contiguous path's, so
// a paged call returns the contiguous result bit for bit. The fused append
// writes each new row into its block.
//
// Masks reduce to a range [first, limit) of visible keys per query row:
//   L     = key_lengths[b] with KEY_PADDING, else kv_len
//   limit = L, and with CAUSAL min(L, i + L - q_len + 1)  (bottom-right aligned)
//   first = 0, and with a sliding window (ABI 1.4) max(0, i + L - q_len + 1 - window):
//           the window newest keys up to the query's own position (transformers'
//           sliding_window_overlay, kv_idx > q_idx - sliding_window).
// The key blocks lie on a fixed grid (multiples of kKeyBlock); the first
// one read holds the smallest `first` of the task's rows, so blocks no row
// sees are never read, and a row's blocks do not depend on its neighbours.
//
// Grouped-query attention: a task takes the same query rows of several query
// heads of one kv head (up to kTaskRows rows in all), so each key block is
// read, and an F16 / I8 one widened, once for all of them instead of once per
// head. Decode (q_len 1) of a model with 3 or 7 query heads per kv head thus
// reads the cache a third or a seventh as often. Every row's arithmetic is
// that of a task of its own (the same key blocks, in the same order), so the
// packing never changes a result.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_common.h"
#include "cpu_features.h"
#include "cpu_kernels.h"
#include "linear.h"

namespace parley::cpu {

namespace {

constexpr int64_t kQueryBlock = 8;
constexpr int64_t kTaskRows = 16;  // query rows of one task, over its heads
constexpr int64_t kKeyBlock = 64;
constexpr int64_t kStackHeadDim = 256;  // larger head_dim takes its accumulators from scratch

// Scores q . k_j * scale of `count` keys k + j * k_stride. Four keys share a
// pass over q (four loads of k per load of q, no horizontal sum per key);
// each key sums in 8 lanes added in a fixed order, so its score is the same
// whichever keys it was grouped with (a paged run or a contiguous block).
typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

// By reference: a vector by value would change the ABI of the default
// (pre-AVX) clone.
typedef float v8f_u __attribute__((vector_size(32), aligned(4), may_alias));
#define PARLEY_LOAD8(p) (*reinterpret_cast<const v8f_u *>(p))

inline float lanes_sum(const v8f &l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

// Horizontal sums of several keys at once, in lanes_sum()'s order (so a
// score stays the same bit for bit): hadd(a, b) adds neighbouring lanes of
// a and b within each 128-bit half, as vhaddps does; halves4() of four keys'
// accumulators holds, in lanes 0..3, their ((x0+x1)+(x2+x3)) and in lanes
// 4..7 their ((x4+x5)+(x6+x7)); sums8() adds those halves for two such
// groups: eight lanes_sum()s for about the cost of two.
// (Results through a reference: a vector returned by value would change the
// ABI of the default clone.)
inline void hadd(const v8f &a, const v8f &b, v8f &out) {
  out = __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14) +
        __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}
inline void halves4(const v8f &l0, const v8f &l1, const v8f &l2, const v8f &l3, v8f &out) {
  v8f h01, h23;
  hadd(l0, l1, h01);
  hadd(l2, l3, h23);
  hadd(h01, h23, out);
}
inline void sums8(const v8f &g0, const v8f &g1, v8f &out) {
  out = __builtin_shufflevector(g0, g1, 0, 1, 2, 3, 8, 9, 10, 11) +
        __builtin_shufflevector(g0, g1, 4, 5, 6, 7, 12, 13, 14, 15);
}
// One unaligned vector store (a memcpy went through the stack in 16-byte
// halves, and the next call's 32-byte load of the accumulators then stalled
// on store forwarding).
inline void store8(float *dst, const v8f &v) {
  *reinterpret_cast<v8f_u *>(dst) = v;
}

PARLEY_CPU_MULTIVERSION void scores(const float *q, const float *k, int64_t k_stride, int64_t count, int64_t d,
                                    float scale, float *s) {
  const int64_t d8 = d & ~int64_t{7};
  auto tail = [&](const float *kj) {
    float t = 0.f;
    for (int64_t i = d8; i < d; ++i) t += q[i] * kj[i];
    return t;
  };
  int64_t j = 0;
  for (; j + 8 <= count; j += 8) {
    const float *k0 = k + j * k_stride, *k1 = k0 + k_stride, *k2 = k1 + k_stride, *k3 = k2 + k_stride,
                *k4 = k3 + k_stride, *k5 = k4 + k_stride, *k6 = k5 + k_stride, *k7 = k6 + k_stride;
    v8f l0 = {}, l1 = {}, l2 = {}, l3 = {}, l4 = {}, l5 = {}, l6 = {}, l7 = {};
    for (int64_t i = 0; i < d8; i += 8) {
      const v8f qv = PARLEY_LOAD8(q + i);
      l0 += qv * PARLEY_LOAD8(k0 + i);
      l1 += qv * PARLEY_LOAD8(k1 + i);
      l2 += qv * PARLEY_LOAD8(k2 + i);
      l3 += qv * PARLEY_LOAD8(k3 + i);
      l4 += qv * PARLEY_LOAD8(k4 + i);
      l5 += qv * PARLEY_LOAD8(k5 + i);
      l6 += qv * PARLEY_LOAD8(k6 + i);
      l7 += qv * PARLEY_LOAD8(k7 + i);
    }
    v8f t = {};
    if (d8 < d) t = v8f{tail(k0), tail(k1), tail(k2), tail(k3), tail(k4), tail(k5), tail(k6), tail(k7)};
    v8f g0, g1, sums;
    halves4(l0, l1, l2, l3, g0);
    halves4(l4, l5, l6, l7, g1);
    sums8(g0, g1, sums);
    store8(s + j, scale * (sums + t));
  }
  for (; j + 4 <= count; j += 4) {
    const float *k0 = k + j * k_stride, *k1 = k0 + k_stride, *k2 = k1 + k_stride, *k3 = k2 + k_stride;
    v8f l0 = {}, l1 = {}, l2 = {}, l3 = {};
    for (int64_t i = 0; i < d8; i += 8) {
      const v8f qv = PARLEY_LOAD8(q + i);
      l0 += qv * PARLEY_LOAD8(k0 + i);
      l1 += qv * PARLEY_LOAD8(k1 + i);
      l2 += qv * PARLEY_LOAD8(k2 + i);
      l3 += qv * PARLEY_LOAD8(k3 + i);
    }
    v8f g;
    halves4(l0, l1, l2, l3, g);
    s[j] = scale * ((g[0] + g[4]) + tail(k0));
    s[j + 1] = scale * ((g[1] + g[5]) + tail(k1));
    s[j + 2] = scale * ((g[2] + g[6]) + tail(k2));
    s[j + 3] = scale * ((g[3] + g[7]) + tail(k3));
  }
  for (; j < count; ++j) {
    const float *k0 = k + j * k_stride;
    v8f l0 = {};
    for (int64_t i = 0; i < d8; i += 8) l0 += PARLEY_LOAD8(q + i) * PARLEY_LOAD8(k0 + i);
    s[j] = scale * (lanes_sum(l0) + tail(k0));
  }
}

// scores() for R query rows at once (query heads of one kv head at the same
// position): each key row loaded once for all of them, 4R accumulators. Each
// score's arithmetic is scores()'s (8 lanes, lanes_sum()'s order, the tail,
// the scale), so it is the same bit for bit. Inlined into scores2 / scores3,
// so each of their target clones compiles it for its instruction set.
template <int R>
__attribute__((always_inline)) inline void scores_rows(const float *const *q, const float *k, int64_t k_stride,
                                                       int64_t count, int64_t d, float scale, float *const *s) {
  const int64_t d8 = d & ~int64_t{7};
  auto tail = [&](const float *qr, const float *kj) {
    float t = 0.f;
    for (int64_t i = d8; i < d; ++i) t += qr[i] * kj[i];
    return t;
  };
  int64_t j = 0;
  for (; j + 4 <= count; j += 4) {
    const float *kr[4] = {k + j * k_stride, k + (j + 1) * k_stride, k + (j + 2) * k_stride, k + (j + 3) * k_stride};
    v8f acc[R][4] = {};
    for (int64_t i = 0; i < d8; i += 8) {
      const v8f e0 = PARLEY_LOAD8(kr[0] + i), e1 = PARLEY_LOAD8(kr[1] + i), e2 = PARLEY_LOAD8(kr[2] + i),
                e3 = PARLEY_LOAD8(kr[3] + i);
      for (int r = 0; r < R; ++r) {
        const v8f x = PARLEY_LOAD8(q[r] + i);
        acc[r][0] += x * e0, acc[r][1] += x * e1, acc[r][2] += x * e2, acc[r][3] += x * e3;
      }
    }
    float t[R][4] = {};
    if (d8 < d)
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < 4; ++c) t[r][c] = tail(q[r], kr[c]);
    v8f g[R];
    for (int r = 0; r < R; ++r) halves4(acc[r][0], acc[r][1], acc[r][2], acc[r][3], g[r]);
    int r = 0;
    for (; r + 1 < R; r += 2) {  // a pair of rows: their four keys' sums in one vector
      v8f both;
      sums8(g[r], g[r + 1], both);
      const v8f tails = {t[r][0], t[r][1], t[r][2], t[r][3], t[r + 1][0], t[r + 1][1], t[r + 1][2], t[r + 1][3]};
      const v8f out = scale * (both + tails);
      std::memcpy(s[r] + j, &out, 4 * sizeof(float));
      std::memcpy(s[r + 1] + j, reinterpret_cast<const float *>(&out) + 4, 4 * sizeof(float));
    }
    if (r < R) {  // an odd last row: from its two halves
      const v4f lo = __builtin_shufflevector(g[r], g[r], 0, 1, 2, 3),
                hi = __builtin_shufflevector(g[r], g[r], 4, 5, 6, 7);
      const v4f out = scale * ((lo + hi) + v4f{t[r][0], t[r][1], t[r][2], t[r][3]});
      std::memcpy(s[r] + j, &out, sizeof out);
    }
  }
  if (j < count)
    for (int r = 0; r < R; ++r) scores(q[r], k + j * k_stride, k_stride, count - j, d, scale, s[r] + j);
}

PARLEY_CPU_MULTIVERSION void scores2(const float *q0, const float *q1, const float *k, int64_t k_stride, int64_t count,
                                     int64_t d, float scale, float *s0, float *s1) {
  const float *q[2] = {q0, q1};
  float *s[2] = {s0, s1};
  scores_rows<2>(q, k, k_stride, count, d, scale, s);
}

// Three rows: decode of SmolLM2's 9 / 3 heads, 12 accumulators.
PARLEY_CPU_MULTIVERSION void scores3(const float *q0, const float *q1, const float *q2, const float *k,
                                     int64_t k_stride, int64_t count, int64_t d, float scale, float *s0, float *s1,
                                     float *s2) {
  const float *q[3] = {q0, q1, q2};
  float *s[3] = {s0, s1, s2};
  scores_rows<3>(q, k, k_stride, count, d, scale, s);
}

// s[j] = exp(s[j] - m), vectorised (exp_vectorizable, about 1 ulp; a
// library exp per key cost a quarter of a decode step's attention).
PARLEY_CPU_MULTIVERSION void exp_shifted(float *s, int64_t n, float m) {
  for (int64_t j = 0; j < n; ++j) s[j] = exp_vectorizable(s[j] - m);
}

// max(m, s[0], ..., s[n-1]) skipping NaN scores, as a chain of std::max
// does; max is exact, so 8 lanes (vmaxps, not a 4-cycle latency per key)
// give the chain's value whatever the order (up to the sign of a zero
// maximum, which changes no exp(s - max) and no max + log(sum)).
PARLEY_CPU_MULTIVERSION float block_max(const float *s, int64_t n, float m) {
  v8f l = {m, m, m, m, m, m, m, m};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const v8f x = PARLEY_LOAD8(s + j);
    l = x > l ? x : l;
  }
  for (int u = 0; u < 8; ++u) m = std::max(m, l[u]);
  for (; j < n; ++j) m = std::max(m, s[j]);
  return m;
}

// s[0] + ... + s[n-1] in 8 lanes (lane l takes every 8th element from l),
// then lanes_sum() and the tail in order: a fixed order for given (s, n).
PARLEY_CPU_MULTIVERSION float ordered_sum(const float *s, int64_t n) {
  v8f l = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) l += PARLEY_LOAD8(s + j);
  float t = lanes_sum(l);
  for (; j < n; ++j) t += s[j];
  return t;
}

// acc = acc * corr + sum_j p[j] * v_j. Each element adds key after key in
// order (the arithmetic of one key at a time); acc is walked in slices of up
// to 64 floats that stay in registers for all `count` keys, so a key costs
// one load and one FMA per 8 elements instead of a load and store of acc too.
template <int V>
inline void axpy_slice(float *acc, const float *p, const float *v, int64_t v_stride, int64_t count) {
  v8f a[V];
  for (int u = 0; u < V; ++u) a[u] = PARLEY_LOAD8(acc + 8 * u);
  for (int64_t j = 0; j < count; ++j) {
    const float pj = p[j];
    const float *vj = v + j * v_stride;
    for (int u = 0; u < V; ++u) a[u] += pj * PARLEY_LOAD8(vj + 8 * u);
  }
  for (int u = 0; u < V; ++u) store8(acc + 8 * u, a[u]);
}

PARLEY_CPU_MULTIVERSION void scale_axpy(float *acc, float corr, const float *p, const float *v, int64_t v_stride,
                                        int64_t count, int64_t d) {
  if (corr != 1.f)
    for (int64_t i = 0; i < d; ++i) acc[i] *= corr;
  int64_t i = 0;
  for (; i + 64 <= d; i += 64) axpy_slice<8>(acc + i, p, v + i, v_stride, count);
  for (; i + 32 <= d; i += 32) axpy_slice<4>(acc + i, p, v + i, v_stride, count);
  for (; i + 8 <= d; i += 8) axpy_slice<1>(acc + i, p, v + i, v_stride, count);
  if (i < d)
    for (int64_t j = 0; j < count; ++j) {
      const float pj = p[j];
      const float *vj = v + j * v_stride;
      for (int64_t e = i; e < d; ++e) acc[e] += pj * vj[e];
    }
}

// scale_axpy(acc_r, 1, p_r, v, ...) for three rows r over the same keys: a
// slice of 32 elements of all three accumulators (12 registers) stays in
// registers while every key's slice of v is loaded once for the three.
// Each element adds key after key in order, as scale_axpy does: the same
// result bit for bit.
PARLEY_CPU_MULTIVERSION void axpy3(float *acc0, float *acc1, float *acc2, const float *p0, const float *p1,
                                   const float *p2, const float *v, int64_t v_stride, int64_t count, int64_t d) {
  int64_t i = 0;
  for (; i + 32 <= d; i += 32) {
    v8f a[3][4];
    float *accs[3] = {acc0 + i, acc1 + i, acc2 + i};
    for (int r = 0; r < 3; ++r)
      for (int u = 0; u < 4; ++u) a[r][u] = PARLEY_LOAD8(accs[r] + 8 * u);
    for (int64_t j = 0; j < count; ++j) {
      const float *vj = v + j * v_stride + i;
      const v8f w0 = PARLEY_LOAD8(vj), w1 = PARLEY_LOAD8(vj + 8), w2 = PARLEY_LOAD8(vj + 16),
                w3 = PARLEY_LOAD8(vj + 24);
      const float x = p0[j], y = p1[j], z = p2[j];
      a[0][0] += x * w0, a[0][1] += x * w1, a[0][2] += x * w2, a[0][3] += x * w3;
      a[1][0] += y * w0, a[1][1] += y * w1, a[1][2] += y * w2, a[1][3] += y * w3;
      a[2][0] += z * w0, a[2][1] += z * w1, a[2][2] += z * w2, a[2][3] += z * w3;
    }
    for (int r = 0; r < 3; ++r)
      for (int u = 0; u < 4; ++u) store8(accs[r] + 8 * u, a[r][u]);
  }
  if (i < d) {
    const float *ps[3] = {p0, p1, p2};
    float *accs[3] = {acc0, acc1, acc2};
    for (int r = 0; r < 3; ++r) {
      int64_t e = i;
      for (; e + 8 <= d; e += 8) axpy_slice<1>(accs[r] + e, ps[r], v + e, v_stride, count);
      if (e < d)
        for (int64_t j = 0; j < count; ++j) {
          const float pj = ps[r][j];
          const float *vj = v + j * v_stride;
          for (int64_t c = e; c < d; ++c) accs[r][c] += pj * vj[c];
        }
    }
  }
}

// Attention over an F16 cache without the f32 tile (AVX2 + FMA + F16C): R
// rows that see the same keys (run_task groups them) read each key and value row once,
// widening 8 halves in a register per load. The arithmetic is written as
// scores() / scale_axpy() write it (acc += x * y on vectors, lane sums, a
// zero tail, keys in order), so an optimising compiler contracts both into
// the same FMAs and a result equals the tile path's bit for bit. (At -O0 GCC
// contracts in this target function but not in a target_clones clone: there
// the two differ by FMA rounding.)
// head_dim must be a multiple of 8.
#define PARLEY_F16C __attribute__((target("avx2,fma,f16c")))

PARLEY_F16C inline v8f load8h(const uint16_t *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

template <int R>
PARLEY_F16C void scores_f16(const float *const *q, const uint16_t *k, int64_t k_stride, int64_t count, int64_t d,
                            float scale, float *const *s) {
  int64_t j = 0;
  for (; j + 4 <= count; j += 4) {
    const uint16_t *k0 = k + j * k_stride, *k1 = k0 + k_stride, *k2 = k1 + k_stride, *k3 = k2 + k_stride;
    v8f acc[R][4] = {};
    for (int64_t i = 0; i < d; i += 8) {
      const v8f e0 = load8h(k0 + i), e1 = load8h(k1 + i), e2 = load8h(k2 + i), e3 = load8h(k3 + i);
      for (int r = 0; r < R; ++r) {
        const v8f x = PARLEY_LOAD8(q[r] + i);
        acc[r][0] += x * e0, acc[r][1] += x * e1, acc[r][2] += x * e2, acc[r][3] += x * e3;
      }
    }
    // scores()'s sums, four keys of a row per 128-bit store: a pair of rows
    // in one vector (sums8), an odd last row from its two halves.
    v8f g[R];
    for (int r = 0; r < R; ++r) halves4(acc[r][0], acc[r][1], acc[r][2], acc[r][3], g[r]);
    int r = 0;
    for (; r + 1 < R; r += 2) {
      v8f both;
      sums8(g[r], g[r + 1], both);
      const v8f out = scale * (both + v8f{});
      std::memcpy(s[r] + j, &out, 4 * sizeof(float));
      std::memcpy(s[r + 1] + j, reinterpret_cast<const float *>(&out) + 4, 4 * sizeof(float));
    }
    if (r < R) {
      const v4f lo = __builtin_shufflevector(g[r], g[r], 0, 1, 2, 3),
                hi = __builtin_shufflevector(g[r], g[r], 4, 5, 6, 7);
      const v4f out = scale * ((lo + hi) + v4f{});
      std::memcpy(s[r] + j, &out, sizeof out);
    }
  }
  for (; j < count; ++j) {
    const uint16_t *kj = k + j * k_stride;
    for (int r = 0; r < R; ++r) {
      v8f l = {};
      for (int64_t i = 0; i < d; i += 8) l += PARLEY_LOAD8(q[r] + i) * load8h(kj + i);
      s[r][j] = scale * (lanes_sum(l) + 0.f);
    }
  }
}

// acc_r += sum_j p_r[j] * v_j for R rows, keys in order per element.
template <int R>
PARLEY_F16C void axpy_f16(float *const *acc, const float *const *p, const uint16_t *v, int64_t v_stride, int64_t count,
                          int64_t d) {
  int64_t i = 0;
  for (; i + 32 <= d; i += 32) {
    v8f a[R][4];
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < 4; ++u) a[r][u] = PARLEY_LOAD8(acc[r] + i + 8 * u);
    for (int64_t j = 0; j < count; ++j) {
      const uint16_t *vj = v + j * v_stride + i;
      const v8f w0 = load8h(vj), w1 = load8h(vj + 8), w2 = load8h(vj + 16), w3 = load8h(vj + 24);
      for (int r = 0; r < R; ++r) {
        const float x = p[r][j];
        a[r][0] += x * w0, a[r][1] += x * w1, a[r][2] += x * w2, a[r][3] += x * w3;
      }
    }
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < 4; ++u) store8(acc[r] + i + 8 * u, a[r][u]);
  }
  for (; i < d; i += 8) {
    v8f a[R];
    for (int r = 0; r < R; ++r) a[r] = PARLEY_LOAD8(acc[r] + i);
    for (int64_t j = 0; j < count; ++j) {
      const v8f w = load8h(v + j * v_stride + i);
      for (int r = 0; r < R; ++r) a[r] += p[r][j] * w;
    }
    for (int r = 0; r < R; ++r) store8(acc[r] + i, a[r]);
  }
}

// The same two loops 16 lanes wide (AVX-512F), for the CPUs that have it:
// every output takes exactly the arithmetic of the 8-lane versions above, so
// a result does not depend on the ISA (the test compares them bit for bit).
// scores: a 16-lane accumulator holds two keys' 8-lane sums side by side
// (the query's 8 values broadcast to both halves), then the halves go
// through halves4 / sums8 as before: eight keys per pass over q, half the
// FMAs. axpy: elementwise already, a key's 64 values in four vectors.
// (GCC 12 reports its own _mm512_undefined_* inside the intrinsics' headers
// as maybe-uninitialized: a known false positive, silenced for these alone.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define PARLEY_F16C512 __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma,f16c")))
typedef float v16f __attribute__((vector_size(64)));

PARLEY_F16C512 inline v16f load2x8h(const uint16_t *a, const uint16_t *b) {
  const __m256i x =
      _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(a))),
                              _mm_loadu_si128(reinterpret_cast<const __m128i *>(b)), 1);
  return reinterpret_cast<v16f>(_mm512_cvtph_ps(x));
}
PARLEY_F16C512 inline v16f load16h(const uint16_t *p) {
  return reinterpret_cast<v16f>(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p))));
}
PARLEY_F16C512 inline v16f broadcast8(const float *p) {
  return reinterpret_cast<v16f>(_mm512_broadcast_f32x8(_mm256_loadu_ps(p)));
}
PARLEY_F16C512 inline void halves(const v16f &x, v8f &lo, v8f &hi) {
  lo = __builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7);
  hi = __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15);
}

template <int R>
PARLEY_F16C512 void scores_f16_512(const float *const *q, const uint16_t *k, int64_t k_stride, int64_t count, int64_t d,
                                   float scale, float *const *s) {
  int64_t j = 0;
  for (; j + 8 <= count; j += 8) {
    const uint16_t *kj[8];
    for (int u = 0; u < 8; ++u) kj[u] = k + (j + u) * k_stride;
    v16f acc[R][4] = {};
    for (int64_t i = 0; i < d; i += 8) {
      const v16f e01 = load2x8h(kj[0] + i, kj[1] + i), e23 = load2x8h(kj[2] + i, kj[3] + i),
                 e45 = load2x8h(kj[4] + i, kj[5] + i), e67 = load2x8h(kj[6] + i, kj[7] + i);
      for (int r = 0; r < R; ++r) {
        const v16f x = broadcast8(q[r] + i);
        acc[r][0] += x * e01, acc[r][1] += x * e23, acc[r][2] += x * e45, acc[r][3] += x * e67;
      }
    }
    for (int r = 0; r < R; ++r) {
      v8f l[8], g0, g1, both;
      for (int u = 0; u < 4; ++u) halves(acc[r][u], l[2 * u], l[2 * u + 1]);
      halves4(l[0], l[1], l[2], l[3], g0);
      halves4(l[4], l[5], l[6], l[7], g1);
      sums8(g0, g1, both);  // keys j .. j + 3, then j + 4 .. j + 7
      store8(s[r] + j, scale * (both + v8f{}));
    }
  }
  if (j < count) {
    float *tail[R];
    for (int r = 0; r < R; ++r) tail[r] = s[r] + j;
    scores_f16<R>(q, k + j * k_stride, k_stride, count - j, d, scale, tail);
  }
}

template <int R>
PARLEY_F16C512 void axpy_f16_512(float *const *acc, const float *const *p, const uint16_t *v, int64_t v_stride,
                                 int64_t count, int64_t d) {
  int64_t i = 0;
  for (; i + 64 <= d; i += 64) {
    v16f a[R][4];
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < 4; ++u) std::memcpy(&a[r][u], acc[r] + i + 16 * u, sizeof(v16f));
    for (int64_t j = 0; j < count; ++j) {
      const uint16_t *vj = v + j * v_stride + i;
      const v16f w0 = load16h(vj), w1 = load16h(vj + 16), w2 = load16h(vj + 32), w3 = load16h(vj + 48);
      for (int r = 0; r < R; ++r) {
        const float x = p[r][j];
        a[r][0] += x * w0, a[r][1] += x * w1, a[r][2] += x * w2, a[r][3] += x * w3;
      }
    }
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < 4; ++u) std::memcpy(acc[r] + i + 16 * u, &a[r][u], sizeof(v16f));
  }
  for (; i + 16 <= d; i += 16) {
    v16f a[R];
    for (int r = 0; r < R; ++r) std::memcpy(&a[r], acc[r] + i, sizeof(v16f));
    for (int64_t j = 0; j < count; ++j) {
      const v16f w = load16h(v + j * v_stride + i);
      for (int r = 0; r < R; ++r) a[r] += p[r][j] * w;
    }
    for (int r = 0; r < R; ++r) std::memcpy(acc[r] + i, &a[r], sizeof(v16f));
  }
  if (i < d) {  // head_dim % 16 == 8
    float *tail[R];
    for (int r = 0; r < R; ++r) tail[r] = acc[r] + i;
    axpy_f16<R>(tail, p, v + i, v_stride, count, d - i);
  }
}

#pragma GCC diagnostic pop

// The widest of the two for `wide` (AVX-512 in use), R = 1..3 rows.
void scores_f16_rows(bool wide, int64_t R, const float *const *q, const uint16_t *k, int64_t k_stride, int64_t count,
                     int64_t d, float scale, float *const *s) {
  if (wide) {
    if (R == 3) return scores_f16_512<3>(q, k, k_stride, count, d, scale, s);
    if (R == 2) return scores_f16_512<2>(q, k, k_stride, count, d, scale, s);
    return scores_f16_512<1>(q, k, k_stride, count, d, scale, s);
  }
  if (R == 3) return scores_f16<3>(q, k, k_stride, count, d, scale, s);
  if (R == 2) return scores_f16<2>(q, k, k_stride, count, d, scale, s);
  scores_f16<1>(q, k, k_stride, count, d, scale, s);
}
void axpy_f16_rows(bool wide, int64_t R, float *const *acc, const float *const *p, const uint16_t *v, int64_t v_stride,
                   int64_t count, int64_t d) {
  if (wide) {
    if (R == 3) return axpy_f16_512<3>(acc, p, v, v_stride, count, d);
    if (R == 2) return axpy_f16_512<2>(acc, p, v, v_stride, count, d);
    return axpy_f16_512<1>(acc, p, v, v_stride, count, d);
  }
  if (R == 3) return axpy_f16<3>(acc, p, v, v_stride, count, d);
  if (R == 2) return axpy_f16<2>(acc, p, v, v_stride, count, d);
  axpy_f16<1>(acc, p, v, v_stride, count, d);
}

using half = _Float16;

// `rows` I8 cache rows, `stride` bytes apart, times their scales (one per
// row, `scale_stride` apart), into packed f32 rows of `d`.
PARLEY_CPU_MULTIVERSION void widen_i8_rows(const int8_t *src, int64_t stride, const float *scales, int64_t scale_stride,
                                           int64_t rows, int64_t d, float *dst) {
  for (int64_t r = 0; r < rows; ++r, src += stride, dst += d) {
    const float scale = scales[r * scale_stride];
    for (int64_t i = 0; i < d; ++i) dst[i] = static_cast<float>(src[i]) * scale;
  }
}

void narrow_f16(const float *src, half *dst, int64_t n) {
  f32_to_f16(src, reinterpret_cast<uint16_t *>(dst), n);  // round to nearest even
}

// BF16 cache rows (ABI 1.6): the upper half of the float, rounded to nearest
// even (NaN kept quiet); widened by a shift.
void narrow_bf16(const float *src, uint16_t *dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t x;
    std::memcpy(&x, &src[i], 4);
    dst[i] = (x & 0x7fffffffu) > 0x7f800000u ? static_cast<uint16_t>((x >> 16) | 0x40u)
                                             : static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
  }
}
PARLEY_CPU_MULTIVERSION void widen_bf16_rows(const uint16_t *src, int64_t stride, int64_t rows, int64_t d, float *dst) {
  for (int64_t r = 0; r < rows; ++r, src += stride, dst += d)
    for (int64_t i = 0; i < d; ++i) {
      const uint32_t x = static_cast<uint32_t>(src[i]) << 16;
      std::memcpy(&dst[i], &x, 4);
    }
}

// scale = max|x| / 127 and q = nearest-even(x / scale) in [-127, 127]; an
// all-zero row stores scale 0, a row holding a NaN or infinity scale NaN
// (it reads back as NaN, as the F32 cache would propagate it).
void narrow_i8(const float *src, int8_t *dst, float *scale, int64_t n) {
  float m = 0.f;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    finite = finite && std::isfinite(src[i]);
    m = std::max(m, std::fabs(src[i]));
  }
  const float s = m / 127.f;
  if (!finite || !(s > 0.f)) {
    *scale = finite ? 0.f : std::numeric_limits<float>::quiet_NaN();
    std::fill(dst, dst + n, int8_t{0});
    return;
  }
  *scale = s;
  for (int64_t i = 0; i < n; ++i) {
    const float r = std::nearbyint(src[i] / s);
    dst[i] = static_cast<int8_t>(std::min(127.f, std::max(-127.f, r)));
  }
}

struct Attn {
  const parley_attention_args *a;
  int64_t group;      // query heads per kv head
  int64_t head_pack;  // query heads per task: a divisor of group
  int64_t q_block;    // query rows per head per task
  int64_t q_blocks;   // ceil(q_len / q_block)
  int32_t kv_dtype;   // F32, F16, BF16 or I8
  // ABI 1.3 paged cache: NULL for a contiguous one.
  const int32_t *block_table;
  int64_t block_table_stride, block_size;
  int64_t window;   // ABI 1.4: 0 = none
  bool f16_direct;  // F16 cache, head_dim % 8 == 0, AVX2 + F16C in use: scores_f16 / axpy_f16
  bool f16_512;     // ...and AVX-512 in use: their 16-lane forms
};

// n consecutive cache rows of one kv head, the first at element offset
// `row0` (its scale at scales + `srow0`), as f32 rows of head_dim in `dst`
// (F16 / I8 caches).
void widen_rows(const Attn &at, const void *cache, int64_t row0, int64_t stride_seq, const float *scales, int64_t srow0,
                int64_t n, float *dst) {
  const int64_t D = at.a->head_dim;
  if (at.kv_dtype == PARLEY_DTYPE_F16)
    f16_rows_to_f32(reinterpret_cast<const uint16_t *>(static_cast<const half *>(cache) + row0), stride_seq, n, D, dst);
  else if (at.kv_dtype == PARLEY_DTYPE_BF16)
    widen_bf16_rows(static_cast<const uint16_t *>(cache) + row0, stride_seq, n, D, dst);
  else
    widen_i8_rows(static_cast<const int8_t *>(cache) + row0, stride_seq, scales + srow0, at.a->scale_stride_seq, n, D,
                  dst);
}

size_t element_size(int32_t dtype) {
  return dtype == PARLEY_DTYPE_F16 || dtype == PARLEY_DTYPE_BF16 ? 2 : dtype == PARLEY_DTYPE_I8 ? 1 : 4;
}

parley_kernel_status run_task(const Attn &at, int64_t task, float *acc, float *ktile, float *vtile) {
  const parley_attention_args &a = *at.a;
  const int64_t D = a.head_dim;
  const int64_t qb = task % at.q_blocks;
  const int64_t packs = a.num_heads / at.head_pack;
  const int64_t b = task / at.q_blocks / packs;
  const int64_t h0 = (task / at.q_blocks) % packs * at.head_pack;
  const int64_t g = h0 / at.group;
  const int64_t i0 = qb * at.q_block, i1 = std::min(a.q_len, i0 + at.q_block);
  const int64_t qrows = i1 - i0;              // query rows per head
  const int64_t rows = qrows * at.head_pack;  // row r: head h0 + r / qrows, query i0 + r % qrows

  const size_t es = element_size(at.kv_dtype);
  // A paged cache: the kv head's rows in every block; block blk's row r is
  // at blk * stride_batch + r * stride_seq from there.
  const bool paged = at.block_table != nullptr;
  const int64_t kb = paged ? 0 : b * a.k_stride_batch, vb = paged ? 0 : b * a.v_stride_batch;
  const void *kc = static_cast<const char *>(a.k) + (kb + g * a.k_stride_head) * es;
  const void *vc = static_cast<const char *>(a.v) + (vb + g * a.v_stride_head) * es;
  const bool wide = at.kv_dtype == PARLEY_DTYPE_F32;
  // An F16 cache is read in place (decode and prefill chunks alike).
  const bool direct = at.f16_direct;
  const float *ks = nullptr, *vs = nullptr;
  if (at.kv_dtype == PARLEY_DTYPE_I8) {
    const int64_t sb = paged ? 0 : b * a.scale_stride_batch;
    ks = a.k_scales + sb + g * a.scale_stride_head;
    vs = a.v_scales + sb + g * a.scale_stride_head;
  }
  const int32_t *table = paged ? at.block_table + b * at.block_table_stride : nullptr;
  // A key block in memory: runs of consecutive cache rows. Run n holds keys
  // j0 + run_at[n] .. j0 + run_at[n + 1] - 1, its first row at element
  // offset run_k[n] / run_v[n] from kc / vc (scale offset run_s[n]); rows
  // then follow at the cache's stride_seq. A contiguous cache is one run; a
  // paged one a run per cache block the key block touches, so the loops
  // below look at the table once per run, never per element.
  int64_t run_at[kKeyBlock + 1], run_k[kKeyBlock], run_v[kKeyBlock], run_s[kKeyBlock];
  int64_t tile_at_jc[2] = {0, 0};
  const int64_t tile_off[1] = {0};
  // Per row: its query position, query, output row, probs row and lse slot.
  int64_t qi_of[kTaskRows];
  const float *q_of[kTaskRows];
  float *out_of[kTaskRows], *probs_of[kTaskRows], *lse_of[kTaskRows];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t h = h0 + r / qrows, i = i0 + r % qrows, bh = b * a.num_heads + h;
    qi_of[r] = i;
    q_of[r] = static_cast<const float *>(a.q) + b * a.q_stride_batch + h * a.q_stride_head + i * a.q_stride_seq;
    out_of[r] = static_cast<float *>(a.out) + b * a.out_stride_batch + h * a.out_stride_head + i * a.out_stride_seq;
    probs_of[r] = a.probs ? a.probs + (bh * a.q_len + i) * a.kv_len : nullptr;
    lse_of[r] = a.lse ? a.lse + bh * a.q_len + i : nullptr;
  }

  const int64_t L = (a.mask & PARLEY_MASK_KEY_PADDING) ? a.key_lengths[b] : a.kv_len;
  int64_t limit[kTaskRows], first[kTaskRows];
  float mx[kTaskRows], sum[kTaskRows];
  float pair_s[kTaskRows][kKeyBlock];  // every row's scores of one key block
  int64_t max_limit = 0, min_first = std::numeric_limits<int64_t>::max();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = qi_of[r];
    int64_t lim = L;
    if (a.mask & PARLEY_MASK_CAUSAL) lim = std::min(L, i + L - a.q_len + 1);
    limit[r] = std::max<int64_t>(lim, 0);
    // The window counts back from the query's own position (the causal
    // diagonal, i + L - q_len), whether or not key padding cut it shorter.
    first[r] = at.window > 0 ? std::max<int64_t>(0, i + L - a.q_len + 1 - at.window) : 0;
    if (first[r] >= limit[r]) first[r] = limit[r] = 0;  // nothing visible
    max_limit = std::max(max_limit, limit[r]);
    if (limit[r] > 0) min_first = std::min(min_first, first[r]);
    mx[r] = -std::numeric_limits<float>::infinity();
    sum[r] = 0.f;
    std::fill(acc + r * D, acc + (r + 1) * D, 0.f);
  }

  if (min_first > max_limit) min_first = max_limit;
  // Key blocks on a fixed grid of kKeyBlock keys: a row's blocks (and so its
  // softmax corrections and sums) must not depend on the other rows of the
  // task, whose sliding windows may start earlier or later (a row skips the
  // keys of a block before its own window).
  for (int64_t j0 = min_first - min_first % kKeyBlock; j0 < max_limit; j0 += kKeyBlock) {
    const int64_t jc = std::min(kKeyBlock, max_limit - j0);
    int64_t runs = 0;
    if (paged) {
      // Reads a table entry only for a block holding a key of this block.
      for (int64_t j = 0; j < jc; ++runs) {
        const int64_t key = j0 + j, blk = table[key / at.block_size], r = key % at.block_size;
        run_at[runs] = j;
        run_k[runs] = blk * a.k_stride_batch + r * a.k_stride_seq;
        run_v[runs] = blk * a.v_stride_batch + r * a.v_stride_seq;
        run_s[runs] = ks ? blk * a.scale_stride_batch + r * a.scale_stride_seq : 0;  // scale strides: I8 only
        j += std::min(at.block_size - r, jc - j);
      }
    } else {
      runs = 1;
      run_at[0] = 0;
      run_k[0] = j0 * a.k_stride_seq, run_v[0] = j0 * a.v_stride_seq;
      run_s[0] = ks ? j0 * a.scale_stride_seq : 0;
    }
    run_at[runs] = jc;
    // k / v with the runs to read them by: the cache itself (F32), or the
    // f32 tile of this key block, one run.
    const float *k, *v;
    int64_t k_stride = a.k_stride_seq, v_stride = a.v_stride_seq;
    const int64_t *at_ = run_at, *koff = run_k, *voff = run_v;
    int64_t nruns = runs;
    if (direct) {
      k = v = nullptr;  // read as halves below
    } else if (wide) {
      k = static_cast<const float *>(kc);
      v = static_cast<const float *>(vc);
    } else {
      for (int64_t n = 0; n < runs; ++n) {
        const int64_t cnt = run_at[n + 1] - run_at[n];
        widen_rows(at, kc, run_k[n], a.k_stride_seq, ks, run_s[n], cnt, ktile + run_at[n] * D);
        widen_rows(at, vc, run_v[n], a.v_stride_seq, vs, run_s[n], cnt, vtile + run_at[n] * D);
      }
      k_stride = v_stride = D;
      k = ktile;
      v = vtile;
      tile_at_jc[1] = jc;
      at_ = tile_at_jc, koff = voff = tile_off;
      nruns = 1;
    }
    // Rows that see the same keys of this block (the heads of a kv head at
    // one query position always do; the positions of a prefill chunk below
    // the causal diagonal, and the beams of a source in cross-attention, do
    // too) go in groups of up to three, each key row read once per group;
    // with 4 rows left, two twos. A row's arithmetic does not depend on its
    // group (scores / scores2 / scores3 and scale_axpy / axpy3 sum alike).
    int64_t ngroups = 0, gsize[kTaskRows], grow[kTaskRows][3], glo[kTaskRows], gnv[kTaskRows];
    bool taken[kTaskRows] = {}, in_triple[kTaskRows] = {};
    for (int64_t r = 0; r < rows; ++r) {
      if (taken[r] || j0 >= limit[r]) continue;
      const int64_t nv = std::min(jc, limit[r] - j0), lo = std::max<int64_t>(0, first[r] - j0);
      if (lo >= nv) continue;
      const int64_t left = rows - r, want = left == 4 ? 2 : std::min<int64_t>(3, left);
      int64_t n = 0;
      grow[ngroups][n++] = r;
      for (int64_t r2 = r + 1; r2 < rows && n < want; ++r2) {
        if (taken[r2] || j0 >= limit[r2]) continue;
        if (std::min(jc, limit[r2] - j0) == nv && std::max<int64_t>(0, first[r2] - j0) == lo) {
          grow[ngroups][n++] = r2;
          taken[r2] = true;
        }
      }
      if (n == 3 && !direct)
        for (int64_t u = 0; u < 3; ++u) in_triple[grow[ngroups][u]] = true;
      gsize[ngroups] = n, glo[ngroups] = lo, gnv[ngroups] = nv;
      ++ngroups;
    }
    for (int64_t gi = 0; gi < ngroups; ++gi) {
      const int64_t *gr = grow[gi], gs = gsize[gi];
      const float *qg[3] = {q_of[gr[0]], q_of[gr[gs > 1]], q_of[gr[(gs > 2) * 2]]};
      for (int64_t n = 0; n < nruns && at_[n] < gnv[gi]; ++n) {
        const int64_t j = std::max(at_[n], glo[gi]), e = std::min(at_[n + 1], gnv[gi]);
        if (j >= e) continue;
        float *sr[3] = {pair_s[gr[0]] + j, pair_s[gr[gs > 1]] + j, pair_s[gr[(gs > 2) * 2]] + j};
        if (direct) {
          const uint16_t *kr = static_cast<const uint16_t *>(kc) + koff[n] + (j - at_[n]) * k_stride;
          scores_f16_rows(at.f16_512, gs, qg, kr, k_stride, e - j, D, a.scale, sr);
          continue;
        }
        const float *kr = k + koff[n] + (j - at_[n]) * k_stride;
        if (gs == 3)
          scores3(qg[0], qg[1], qg[2], kr, k_stride, e - j, D, a.scale, sr[0], sr[1], sr[2]);
        else if (gs == 2)
          scores2(qg[0], qg[1], kr, k_stride, e - j, D, a.scale, sr[0], sr[1]);
        else
          scores(qg[0], kr, k_stride, e - j, D, a.scale, sr[0]);
      }
    }
    float row_corr[kTaskRows];
    for (int64_t r = 0; r < rows; ++r) {
      if (j0 >= limit[r]) continue;
      const int64_t nv = std::min(jc, limit[r] - j0);
      // Keys j0 + lo .. j0 + nv - 1 of this block are in the row's window.
      const int64_t lo = std::max<int64_t>(0, first[r] - j0);
      if (lo >= nv) continue;
      float *s = pair_s[r];
      const float bmax = block_max(s + lo, nv - lo, -std::numeric_limits<float>::infinity());
      if (probs_of[r]) std::copy(s + lo, s + nv, probs_of[r] + j0 + lo);
      const float mnew = std::max(mx[r], bmax);
      // exp(-inf - finite) = 0 on the first block; a row whose scores are all
      // -inf (infinite inputs) keeps mnew = -inf and is guarded below.
      const float corr = mx[r] == mnew ? 1.f : std::exp(mx[r] - mnew);
      if (mnew == -std::numeric_limits<float>::infinity())
        std::fill(s + lo, s + nv, 0.f);
      else
        exp_shifted(s + lo, nv - lo, mnew);
      sum[r] = sum[r] * corr + ordered_sum(s + lo, nv - lo);
      mx[r] = mnew;
      row_corr[r] = corr;
      if (in_triple[r] || direct) continue;  // accumulated with its group below
      // The correction once, then every run's keys in order: the arithmetic
      // of one call over the whole block.
      bool corrected = false;
      for (int64_t n = 0; n < nruns && at_[n] < nv; ++n) {
        const int64_t j = std::max(at_[n], lo), e = std::min(at_[n + 1], nv);
        if (j >= e) continue;
        scale_axpy(acc + r * D, corrected ? 1.f : corr, s + j, v + voff[n] + (j - at_[n]) * v_stride, v_stride, e - j,
                   D);
        corrected = true;
      }
    }
    // Groups accumulated together (every group when direct, else the
    // triples): scale_axpy's arithmetic, the correction, then the keys in order.
    for (int64_t gi = 0; gi < ngroups; ++gi) {
      const int64_t *gr = grow[gi], gs = gsize[gi];
      if (!direct && gs != 3) continue;
      for (int64_t u = 0; u < gs; ++u)
        if (row_corr[gr[u]] != 1.f)
          for (int64_t i = 0; i < D; ++i) acc[gr[u] * D + i] *= row_corr[gr[u]];
      float *ar[3] = {acc + gr[0] * D, acc + gr[gs > 1] * D, acc + gr[(gs > 2) * 2] * D};
      for (int64_t n = 0; n < nruns && at_[n] < gnv[gi]; ++n) {
        const int64_t j = std::max(at_[n], glo[gi]), e = std::min(at_[n + 1], gnv[gi]);
        if (j >= e) continue;
        const float *pr[3] = {pair_s[gr[0]] + j, pair_s[gr[gs > 1]] + j, pair_s[gr[(gs > 2) * 2]] + j};
        if (direct)
          axpy_f16_rows(at.f16_512, gs, ar, pr, static_cast<const uint16_t *>(vc) + voff[n] + (j - at_[n]) * v_stride,
                        v_stride, e - j, D);
        else
          axpy3(ar[0], ar[1], ar[2], pr[0], pr[1], pr[2], v + voff[n] + (j - at_[n]) * v_stride, v_stride, e - j, D);
      }
    }
  }

  for (int64_t r = 0; r < rows; ++r) {
    float *o = out_of[r];
    const bool empty = limit[r] == 0 || !(sum[r] > 0.f);
    if (empty) {
      std::fill(o, o + D, 0.f);
    } else {
      const float inv = 1.f / sum[r];
      const float *ac = acc + r * D;
      for (int64_t d = 0; d < D; ++d) o[d] = ac[d] * inv;
    }
    if (lse_of[r]) *lse_of[r] = empty ? -std::numeric_limits<float>::infinity() : mx[r] + std::log(sum[r]);
    if (float *p = probs_of[r]) {
      const int64_t lim = empty ? 0 : limit[r], lo = empty ? 0 : first[r];
      const float inv = empty ? 0.f : 1.f / sum[r];
      std::fill(p, p + lo, 0.f);
      for (int64_t j = lo; j < lim; ++j) p[j] = exp_vectorizable(p[j] - mx[r]) * inv;
      std::fill(p + lim, p + a.kv_len, 0.f);
    }
  }
  return PARLEY_KERNEL_OK;
}

}  // namespace

parley_kernel_status attention_f32(const parley_kernel_context *ctx, const void *args) {
  return guarded("attention", ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    const parley_attention_args *a = nullptr;
    if (auto st = begin_call("attention", ctx, args, &host, &a, PARLEY_ATTENTION_ARGS_SIZE_V1_0)) return st;
    const bool append = a->struct_size >= PARLEY_ATTENTION_ARGS_SIZE_V1_1 && a->k_new != nullptr;
    const int32_t kv_dtype = a->struct_size >= PARLEY_ATTENTION_ARGS_SIZE_V1_2 ? a->kv_dtype : PARLEY_DTYPE_F32;
    // ABI 1.3 paged cache; an older struct has none.
    const bool has_paging = a->struct_size >= PARLEY_ATTENTION_ARGS_SIZE_V1_3;
    // ABI 1.4 sliding window; an older struct has none.
    const int64_t window = a->struct_size >= sizeof(parley_attention_args) ? a->window : 0;
    const int32_t *table = has_paging ? a->block_table : nullptr;
    const int64_t bs = has_paging ? a->block_size : 0, table_stride = has_paging ? a->block_table_stride : 0;
    PARLEY_CHECK(host,
                 kv_dtype == PARLEY_DTYPE_F32 || kv_dtype == PARLEY_DTYPE_F16 || kv_dtype == PARLEY_DTYPE_BF16 ||
                     kv_dtype == PARLEY_DTYPE_I8,
                 "attention: kv_dtype %d is not F32, F16, BF16 or I8", kv_dtype);
    PARLEY_CHECK(host, a->batch >= 0 && a->q_len >= 0 && a->kv_len >= 0,
                 "attention: negative shape batch=%lld q_len=%lld kv_len=%lld", ll(a->batch), ll(a->q_len),
                 ll(a->kv_len));
    PARLEY_CHECK(host, a->num_heads >= 1 && a->num_kv_heads >= 1 && a->head_dim >= 1,
                 "attention: num_heads (%lld), num_kv_heads (%lld) and head_dim (%lld) must be >= 1", ll(a->num_heads),
                 ll(a->num_kv_heads), ll(a->head_dim));
    PARLEY_CHECK(host, a->num_heads % a->num_kv_heads == 0,
                 "attention: num_heads (%lld) is not a multiple of num_kv_heads (%lld)", ll(a->num_heads),
                 ll(a->num_kv_heads));
    PARLEY_CHECK(host, (a->mask & ~(PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING)) == 0,
                 "attention: unknown mask bits 0x%x", a->mask);
    PARLEY_CHECK(host, window >= 0, "attention: negative window %lld", ll(window));
    PARLEY_CHECK(host, window == 0 || (a->mask & PARLEY_MASK_CAUSAL),
                 "attention: a sliding window (%lld) needs PARLEY_MASK_CAUSAL", ll(window));
    if (table) {
      PARLEY_CHECK(host, (a->mask & PARLEY_MASK_KEY_PADDING) != 0,
                   "attention: a block_table (paged KV cache) needs PARLEY_MASK_KEY_PADDING and key_lengths");
      PARLEY_CHECK(host, bs >= 1, "attention: block_size (%lld) must be >= 1 with a block_table", ll(bs));
      PARLEY_CHECK(host, table_stride >= 0, "attention: negative block_table_stride %lld", ll(table_stride));
    } else {
      // A paged call whose table went missing must not read the pool as one
      // contiguous cache.
      PARLEY_CHECK(host, bs == 0 && table_stride == 0,
                   "attention: block_size (%lld) or block_table_stride (%lld) is set but block_table is NULL (a paged "
                   "KV cache needs its block table)",
                   ll(bs), ll(table_stride));
    }
    if (a->batch == 0 || a->q_len == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->q && a->out, "attention: q or out is NULL");
    // max_len: the most keys a sequence has (kv_len for a contiguous cache,
    // the longest key_lengths for a paged one, where kv_len is unused).
    int64_t max_len = a->kv_len;
    if (a->mask & PARLEY_MASK_KEY_PADDING) {
      PARLEY_CHECK(host, a->key_lengths != nullptr, "attention: KEY_PADDING mask without key_lengths");
      if (!table) {
        for (int64_t b = 0; b < a->batch; ++b)
          PARLEY_CHECK(host, a->key_lengths[b] >= 0 && a->key_lengths[b] <= a->kv_len,
                       "attention: key_lengths[%lld] = %d is outside [0, kv_len=%lld]", ll(b), a->key_lengths[b],
                       ll(a->kv_len));
      } else {
        max_len = 0;
        for (int64_t b = 0; b < a->batch; ++b) {
          PARLEY_CHECK(host, a->key_lengths[b] >= 0, "attention: key_lengths[%lld] = %d is negative", ll(b),
                       a->key_lengths[b]);
          // probs rows stay kv_len wide with a paged cache.
          PARLEY_CHECK(host, !a->probs || a->key_lengths[b] <= a->kv_len,
                       "attention: key_lengths[%lld] = %d exceeds kv_len (%lld), the width of the probs rows", ll(b),
                       a->key_lengths[b], ll(a->kv_len));
          max_len = std::max<int64_t>(max_len, a->key_lengths[b]);
        }
      }
    }
    if (max_len > 0) PARLEY_CHECK(host, a->k && a->v, "attention: k or v is NULL");
    const int64_t D = a->head_dim;
    const int64_t strides[] = {a->q_stride_batch, a->q_stride_head,    a->q_stride_seq,    a->k_stride_batch,
                               a->k_stride_head,  a->k_stride_seq,     a->v_stride_batch,  a->v_stride_head,
                               a->v_stride_seq,   a->out_stride_batch, a->out_stride_head, a->out_stride_seq};
    for (int64_t st : strides) PARLEY_CHECK(host, st >= 0, "attention: negative stride %lld", ll(st));
    const int64_t cache_rows = table ? std::min(bs, max_len) : a->kv_len;  // rows per sequence or block
    struct {
      const char *name;
      int64_t stride, count;
    } rows[] = {{"q_stride_seq", a->q_stride_seq, a->q_len},     {"q_stride_head", a->q_stride_head, a->num_heads},
                {"k_stride_seq", a->k_stride_seq, cache_rows},   {"k_stride_head", a->k_stride_head, a->num_kv_heads},
                {"v_stride_seq", a->v_stride_seq, cache_rows},   {"v_stride_head", a->v_stride_head, a->num_kv_heads},
                {"out_stride_seq", a->out_stride_seq, a->q_len}, {"out_stride_head", a->out_stride_head, a->num_heads}};
    for (const auto &r : rows)
      PARLEY_CHECK(host, r.count <= 1 || r.stride >= D, "attention: %s (%lld) < head_dim (%lld)", r.name, ll(r.stride),
                   ll(D));
    if (kv_dtype == PARLEY_DTYPE_I8 && max_len > 0) {
      PARLEY_CHECK(host, a->k_scales && a->v_scales, "attention: an I8 cache (kv_dtype) needs k_scales and v_scales");
      PARLEY_CHECK(host, a->scale_stride_batch >= 0 && a->scale_stride_head >= 0 && a->scale_stride_seq >= 0,
                   "attention: negative scale stride");
    }
    if (table) {
      // Every block a key lives in must be named: ceil(L / block_size)
      // indices per sequence, each >= 0 (the pool's size is the caller's).
      const int64_t need = (max_len + bs - 1) / bs;
      PARLEY_CHECK(host, table_stride >= need,
                   "attention: block_table_stride (%lld) < %lld blocks of the longest sequence (%lld keys, block_size "
                   "%lld)",
                   ll(table_stride), ll(need), ll(max_len), ll(bs));
      PARLEY_CHECK(host, table_stride == 0 || a->batch - 1 <= std::numeric_limits<int64_t>::max() / table_stride,
                   "attention: batch (%lld) x block_table_stride (%lld) overflows", ll(a->batch), ll(table_stride));
      for (int64_t b = 0; b < a->batch; ++b) {
        const int64_t n = (a->key_lengths[b] + bs - 1) / bs;
        for (int64_t i = 0; i < n; ++i)
          PARLEY_CHECK(host, table[b * table_stride + i] >= 0,
                       "attention: block_table[%lld] = %d (sequence %lld, block %lld) is negative",
                       ll(b * table_stride + i), table[b * table_stride + i], ll(b), ll(i));
      }
    }

    if (append) {
      PARLEY_CHECK(host, a->v_new, "attention: k_new without v_new");
      if (!table)
        PARLEY_CHECK(host, a->kv_len >= a->q_len, "attention: q_len (%lld) > kv_len (%lld) with k_new", ll(a->q_len),
                     ll(a->kv_len));
      const int64_t news[] = {a->k_new_stride_batch, a->k_new_stride_head, a->k_new_stride_seq,
                              a->v_new_stride_batch, a->v_new_stride_head, a->v_new_stride_seq};
      for (int64_t st : news) PARLEY_CHECK(host, st >= 0, "attention: negative k_new/v_new stride %lld", ll(st));
      const size_t es = element_size(kv_dtype);
      char *k = static_cast<char *>(const_cast<void *>(a->k));
      char *v = static_cast<char *>(const_cast<void *>(a->v));
      const float *kn = static_cast<const float *>(a->k_new), *vn = static_cast<const float *>(a->v_new);
      // One cache row (head_dim values) from src, in the cache's dtype, at
      // element offset `row` (an I8 row's scale at scales + srow + g *
      // scale_stride_head; scale strides are only read for an I8 cache).
      auto put = [&](const float *src, char *cache, float *scales, int64_t row, int64_t srow, int64_t g) {
        char *dst = cache + row * static_cast<int64_t>(es);
        if (kv_dtype == PARLEY_DTYPE_F32)
          std::copy_n(src, D, reinterpret_cast<float *>(dst));
        else if (kv_dtype == PARLEY_DTYPE_F16)
          narrow_f16(src, reinterpret_cast<half *>(dst), D);
        else if (kv_dtype == PARLEY_DTYPE_BF16)
          narrow_bf16(src, reinterpret_cast<uint16_t *>(dst), D);
        else
          narrow_i8(src, reinterpret_cast<int8_t *>(dst), scales + srow + g * a->scale_stride_head, D);
      };
      for (int64_t b = 0; b < a->batch; ++b) {
        const int64_t L = (a->mask & PARLEY_MASK_KEY_PADDING) ? a->key_lengths[b] : a->kv_len;
        for (int64_t i = 0; i < a->q_len; ++i) {
          const int64_t pos = L - a->q_len + i;
          if (pos < 0) continue;
          // The position's row in its sequence, or in its block of the pool.
          int64_t kr = b * a->k_stride_batch + pos * a->k_stride_seq,
                  vr = b * a->v_stride_batch + pos * a->v_stride_seq;
          const bool i8 = kv_dtype == PARLEY_DTYPE_I8;
          int64_t sr = i8 ? b * a->scale_stride_batch + pos * a->scale_stride_seq : 0;
          if (table) {
            const int64_t blk = table[b * table_stride + pos / bs], r = pos % bs;
            kr = blk * a->k_stride_batch + r * a->k_stride_seq;
            vr = blk * a->v_stride_batch + r * a->v_stride_seq;
            sr = i8 ? blk * a->scale_stride_batch + r * a->scale_stride_seq : 0;
          }
          for (int64_t g = 0; g < a->num_kv_heads; ++g) {
            put(kn + b * a->k_new_stride_batch + g * a->k_new_stride_head + i * a->k_new_stride_seq, k, a->k_scales,
                kr + g * a->k_stride_head, sr, g);
            put(vn + b * a->v_new_stride_batch + g * a->v_new_stride_head + i * a->v_new_stride_seq, v, a->v_scales,
                vr + g * a->v_stride_head, sr, g);
          }
        }
      }
    }

    // Queries per task: kQueryBlock rows of one head, or, for fewer rows,
    // the rows of as many heads of a kv head as fit in kTaskRows.
    const int64_t group = a->num_heads / a->num_kv_heads;
    const int64_t q_block = std::min(a->q_len, kQueryBlock);
    const int64_t q_blocks = (a->q_len + q_block - 1) / q_block;
    // The largest divisor of group not above n.
    auto divisor_upto = [group](int64_t n) {
      n = std::max<int64_t>(1, std::min(group, n));
      while (group % n) --n;
      return n;
    };
    int64_t head_pack = divisor_upto(kTaskRows / q_block);
    // ...but not so few tasks that threads idle (decode of one sequence on
    // many cores): then fewer heads per task.
    while (head_pack > 1 && a->batch * (a->num_heads / head_pack) * q_blocks < host.num_threads())
      head_pack = divisor_upto(head_pack - 1);
    const bool f16_direct = kv_dtype == PARLEY_DTYPE_F16 && D % 8 == 0 && active_isa() >= Isa::kAvx2;
    const bool f16_512 = f16_direct && active_isa() >= Isa::kAvx512;
    Attn at{a, group, head_pack, q_block, q_blocks, kv_dtype, table, table_stride, bs, window, f16_direct, f16_512};
    const int64_t tasks = a->batch * (a->num_heads / head_pack) * at.q_blocks;
    return host.parallel_for(tasks, 1, [&](int64_t t0, int64_t t1) -> parley_kernel_status {
      alignas(64) float stack_acc[kTaskRows * kStackHeadDim];
      float *acc = stack_acc;
      std::vector<float> heap;
      if (D > kStackHeadDim) {
        acc = static_cast<float *>(host.scratch(sizeof(float) * kTaskRows * D));
        if (!acc) {
          heap.resize(kTaskRows * D);
          acc = heap.data();
        }
      }
      std::vector<float> tiles;  // F16 / I8 caches read through a tile: one key block of K and of V in f32
      if (kv_dtype != PARLEY_DTYPE_F32 && !f16_direct) tiles.resize(static_cast<size_t>(2 * kKeyBlock * D));
      float *ktile = tiles.empty() ? nullptr : tiles.data();
      float *vtile = tiles.empty() ? nullptr : tiles.data() + kKeyBlock * D;
      for (int64_t t = t0; t < t1; ++t)
        if (auto st = run_task(at, t, acc, ktile, vtile)) return st;
      return PARLEY_KERNEL_OK;
    });
  });
}

}  // namespace parley::cpu
