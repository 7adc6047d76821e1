// The CUDA plugin's attention kernels on a paged KV cache (plugin ABI 1.3:
// block_table / block_table_stride / block_size) under the SIMT emulator:
// the F32 split-KV kernel (simt_attention.cuh, with its fused append; over an
// F32 cache and over an I8 one with a scale per row, which it writes and
// reads as the cpu plugin's narrow_i8 / widen_i8_rows do) and the F16/BF16
// tensor-core kernel (mma_attention.cuh). Each case stores random
// K/V in a pool of blocks through a shuffled table (two sequences sharing
// their first, read-only blocks; block sizes 1, 16, 24, 32 against lengths
// that are no multiple of them; unused rows, unused blocks and the table
// entries past a sequence's length pointing at NaN) and checks
//  * the output and lse against a float64 attention over each sequence's
//    logical keys (fp32: 1e-5, 16-bit inputs: 1e-2 relative, ENGINEERING.md);
//  * bit-for-bit equality with the same kernel on the contiguous layout (the
//    same keys in the same order: the arithmetic is identical);
//  * with the fused append: the new rows land in their blocks' rows, and no
//    other element of the NaN-poisoned pool changes;
//  * with a sliding window (plugin ABI 1.4): the rows no CTA may read (before
//    each sequence's first window; for the tensor-core kernel, whole 16-key
//    tiles before it) are never stored, so they stay NaN in the pool.
// Inputs come from tests/common/gtest_seed.h seeds (PARLEY_TEST_SEED).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "../common/gtest_seed.h"
#include "mma_attention.cuh"
#include "rel_error.hpp"
#include "simt_attention.cuh"
#include "simt_emulator.hpp"

using namespace parley::cuda::attn;
using parley::simt::Ctx;
using parley::simt::Dim3;
using parley::simt::Emulator;
using parley::test::rel_error;

namespace {

enum class Elem { kF32, kF16, kBF16, kI8 };

struct Case {
  int batch = 2, heads = 4, kv_heads = 2, q_len = 1, dim = 64;
  uint32_t mask = 3u;  // KEY_PADDING (required with a table), | CAUSAL
  std::vector<int32_t> lens{37, 45};
  int block_size = 16;
  int shared_keys = 32;  // sequences 1.. read sequence 0's first shared_keys / block_size blocks
  int splits = 1;        // key splits (combined by simt_attention_combine)
  int align = 8;         // split bounds: multiples of it (the tensor-core kernel: of 16)
  bool append = false;   // the q_len newest rows come in k_new / v_new
  Elem elem = Elem::kF32;
  bool async = true;  // the tensor-core kernel: cp.async (else plain loads)
  // The tensor-core kernel with fp32 queries, output and appended rows over
  // the 16-bit cache (a model computing in F32 with an F16 KV cache): the
  // queries keep their fp32 values (the kernel rounds them).
  bool f32_q = false;
  int window = 0;  // sliding window (needs mask & 1), 0: none
  int max_len() const { return *std::max_element(lens.begin(), lens.end()); }
  int shared_blocks() const { return shared_keys / block_size; }
};

// An I8 cache row as parley_attention_args specifies it (the cpu plugin's
// narrow_i8): scale = max|x| / 127, q = nearest-even(x / scale) clamped to
// [-127, 127]; all zero: scale 0; a NaN or infinity: scale NaN, q 0.
float narrow_i8_row(const float *x, int8_t *q, int n) {
  float m = 0.f;
  bool finite = true;
  for (int i = 0; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    m = std::max(m, std::fabs(x[i]));
  }
  const float scale = m / 127.f;
  if (!finite || !(scale > 0.f)) {
    std::fill(q, q + n, int8_t{0});
    return finite ? 0.f : std::nanf("");
  }
  for (int i = 0; i < n; ++i) q[i] = int8_t(std::min(127.f, std::max(-127.f, std::nearbyint(x[i] / scale))));
  return scale;
}

// Element storage: fp32 values, or fp16 / bf16 bits (int8 rows: narrow_i8_row).
template <class E>
E to_elem(float x, Elem e) {
  if constexpr (sizeof(E) == 4)
    return x;
  else
    return float_to_bits(x, e == Elem::kBF16);
}
template <class E>
float from_elem(E x, Elem e) {
  if constexpr (sizeof(E) == 4)
    return x;
  else
    return e == Elem::kBF16 ? bf16_bits_to_float(x) : half_to_float(x);
}
template <class E>
E poison() {
  if constexpr (sizeof(E) == 4)
    return std::nanf("");
  else if constexpr (sizeof(E) == 1)
    return 127;  // with its NaN scale (Store::ks / vs), a NaN row
  else
    return 0x7FFF;  // NaN as fp16 and as bf16
}

// Logical inputs (values representable in the element type): q [b][i][h][d];
// k, v [b][j][g][d] for j < max_len; sequence b > 0 repeats sequence 0's first
// shared_blocks * block_size keys (they are read from the same blocks).
struct Logical {
  std::vector<float> q, k, v;
  // I8: k / v before quantisation (what k_new / v_new carry and what the
  // cache rows are quantised from); k / v are then their dequantised rows.
  std::vector<float> k_raw, v_raw;
  const std::vector<float> &k_in(Elem e) const { return e == Elem::kI8 ? k_raw : k; }
  const std::vector<float> &v_in(Elem e) const { return e == Elem::kI8 ? v_raw : v; }
};

Logical make_logical(const Case &c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int D = c.dim, N = c.max_len();
  Logical x;
  x.q.resize(size_t(c.batch) * c.q_len * c.heads * D);
  x.k.resize(size_t(c.batch) * N * c.kv_heads * D);
  x.v.resize(x.k.size());
  auto round = [&](float f) {
    if (c.elem == Elem::kF32 || c.elem == Elem::kI8) return f;
    return from_elem<uint16_t>(to_elem<uint16_t>(f, c.elem), c.elem);
  };
  for (auto *vec : {&x.q, &x.k, &x.v})
    for (float &f : *vec) f = vec == &x.q && c.f32_q ? nd(rng) * 1.5f : round(nd(rng) * 1.5f);
  const size_t row = size_t(c.kv_heads) * D, shared_rows = size_t(c.shared_blocks()) * c.block_size;
  for (int b = 1; b < c.batch; ++b) {
    std::copy_n(x.k.begin(), shared_rows * row, x.k.begin() + size_t(b) * N * row);
    std::copy_n(x.v.begin(), shared_rows * row, x.v.begin() + size_t(b) * N * row);
  }
  if (c.elem == Elem::kI8) {  // K / V rows as an I8 cache holds them (q keeps fp32)
    x.k_raw = x.k, x.v_raw = x.v;
    for (auto *vec : {&x.k, &x.v})
      for (size_t r = 0; r < vec->size(); r += size_t(D)) {
        std::vector<int8_t> q8(size_t(D), 0);
        const float sc = narrow_i8_row(&(*vec)[r], q8.data(), D);
        for (int d = 0; d < D; ++d) (*vec)[r + size_t(d)] = float(q8[size_t(d)]) * sc;
      }
  }
  return x;
}

// The cache as a kernel sees it: contiguous, or a pool of blocks (K as
// [block][row][g][d], V as [block][g][row][d]: both stride orders occur).
template <class E>
struct Store {
  std::vector<E> k, v;
  std::vector<float> ks, vs;  // int8: a scale per (block or sequence, row, KV head), NaN-poisoned
  std::vector<int32_t> table;
  int64_t k_sb = 0, k_sh = 0, k_ss = 0, v_sb = 0, v_sh = 0, v_ss = 0;
  int64_t s_sb = 0, s_sh = 0, s_ss = 0;
  KvBlocks kv;
  int kv_len = 0;     // contiguous: max length; paged: table_stride * block_size (the clamp)
  int pool_rows = 0;  // paged: blocks * block_size
  int64_t k_row(int b, int j) const { return kv.row_offset(b, j, k_sb, k_ss); }
  int64_t v_row(int b, int j) const { return kv.row_offset(b, j, v_sb, v_ss); }
  int64_t s_row(int b, int j) const { return kv.row_offset(b, j, s_sb, s_ss); }
  // int8: scales for rows of `rows_per_block` positions in `blocks` blocks.
  void init_scales(int blocks, int rows_per_block, int kv_heads) {
    if constexpr (sizeof(E) == 1) {
      s_sb = int64_t{rows_per_block} * kv_heads, s_sh = 1, s_ss = kv_heads;
      ks.assign(size_t(blocks) * size_t(s_sb), std::nanf(""));
      vs = ks;
    }
  }
};

// Keys of sequence b no CTA may read with a sliding window: those before the
// first query's window (the F32 kernel reads from each row's window start;
// the tensor-core kernel loads whole 16-key tiles from there).
int unread_keys(const Case &c, int b) {
  if (c.window <= 0) return 0;
  const int begin = std::max(0, c.lens[size_t(b)] - c.q_len + 1 - c.window);
  return c.elem == Elem::kF32 ? begin : begin / kMmaKeys * kMmaKeys;
}

// Whether key j of sequence b is stored before the launch (appended rows are
// not; rows no CTA may read stay NaN).
bool stored_before(const Case &c, int b, int j) {
  return j < c.lens[size_t(b)] && !(c.append && j >= c.lens[size_t(b)] - c.q_len) && j >= unread_keys(c, b);
}

template <class E>
void fill_rows(const Case &c, const Logical &x, Store<E> &s) {
  const int D = c.dim, N = c.max_len();
  for (int b = 0; b < c.batch; ++b)
    for (int j = 0; j < c.lens[size_t(b)]; ++j) {
      if (!stored_before(c, b, j)) continue;
      for (int g = 0; g < c.kv_heads; ++g) {
        const size_t src = ((size_t(b) * N + j) * c.kv_heads + g) * D;
        if constexpr (sizeof(E) == 1) {
          const int64_t srow = s.s_row(b, j) + g * s.s_sh;
          s.ks[size_t(srow)] = narrow_i8_row(&x.k_raw[src], &s.k[size_t(s.k_row(b, j) + g * s.k_sh)], D);
          s.vs[size_t(srow)] = narrow_i8_row(&x.v_raw[src], &s.v[size_t(s.v_row(b, j) + g * s.v_sh)], D);
        } else {
          for (int d = 0; d < D; ++d) {
            s.k[size_t(s.k_row(b, j) + g * s.k_sh + d)] = to_elem<E>(x.k[src + size_t(d)], c.elem);
            s.v[size_t(s.v_row(b, j) + g * s.v_sh + d)] = to_elem<E>(x.v[src + size_t(d)], c.elem);
          }
        }
      }
    }
}

template <class E>
Store<E> make_contiguous(const Case &c, const Logical &x) {
  Store<E> s;
  const int D = c.dim, N = c.max_len();
  s.k.assign(size_t(c.batch) * N * c.kv_heads * D, poison<E>());
  s.v = s.k;
  s.k_sb = s.v_sb = int64_t{N} * c.kv_heads * D, s.k_sh = s.v_sh = D, s.k_ss = s.v_ss = int64_t{c.kv_heads} * D;
  s.kv_len = N;
  s.init_scales(c.batch, N, c.kv_heads);
  fill_rows(c, x, s);
  return s;
}

template <class E>
Store<E> make_paged(const Case &c, const Logical &x, std::mt19937 &rng) {
  Store<E> s;
  const int D = c.dim, bs = c.block_size, shared = c.shared_blocks();
  std::vector<int> nb(static_cast<size_t>(c.batch));
  int own = 0, widest = 0;
  for (int b = 0; b < c.batch; ++b) {
    nb[size_t(b)] = ceil_div(c.lens[size_t(b)], bs);
    own += nb[size_t(b)] - (b > 0 ? shared : 0);
    widest = std::max(widest, nb[size_t(b)]);
  }
  const int blocks = own + 2;  // + spare blocks, one of them the NaN target of unused table entries
  std::vector<int32_t> perm(static_cast<size_t>(blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const int64_t stride = widest + 1;  // one entry more than any sequence needs
  s.table.assign(size_t(c.batch * stride), perm[size_t(own)]);
  size_t next = 0;
  for (int b = 0; b < c.batch; ++b)
    for (int lb = 0; lb < nb[size_t(b)]; ++lb)
      s.table[size_t(b * stride + lb)] = b > 0 && lb < shared ? s.table[size_t(lb)] : perm[next++];
  s.pool_rows = blocks * bs;
  s.k.assign(size_t(blocks) * bs * c.kv_heads * D, poison<E>());
  s.v = s.k;
  s.k_sb = int64_t{bs} * c.kv_heads * D, s.k_sh = D, s.k_ss = int64_t{c.kv_heads} * D;
  s.v_sb = int64_t{c.kv_heads} * bs * D, s.v_sh = int64_t{bs} * D, s.v_ss = D;
  s.kv.table = s.table.data(), s.kv.table_stride = stride, s.kv.block_size = bs;
  s.kv_len = static_cast<int>(stride * bs);
  s.init_scales(blocks, bs, c.kv_heads);
  fill_rows(c, x, s);
  return s;
}

// The appended rows [b][i][g][d] (positions L - q_len + i).
template <class E>
std::vector<E> fresh_rows(const Case &c, const std::vector<float> &kv) {
  const int D = c.dim, N = c.max_len();
  std::vector<E> out(size_t(c.batch) * c.q_len * c.kv_heads * D, poison<E>());
  for (int b = 0; b < c.batch; ++b)
    for (int i = 0; i < c.q_len; ++i) {
      const int j = c.lens[size_t(b)] - c.q_len + i;
      if (j < 0) continue;
      for (size_t e = 0; e < size_t(c.kv_heads) * D; ++e)
        out[(size_t(b) * c.q_len + i) * c.kv_heads * D + e] =
            to_elem<E>(kv[(size_t(b) * N + j) * c.kv_heads * D + e], c.elem);
    }
  return out;
}

struct Out {
  std::vector<float> out, lse;
};

// The F32 kernel over an fp32 (E = float) or int8 (E = int8_t) cache.
template <int D, class E>
Out run_simt(const Case &c, const Logical &x, Store<E> &s) {
  const int G = c.heads / c.kv_heads, rows = G * c.q_len;
  const std::vector<float> kn = fresh_rows<float>(c, x.k_in(c.elem)), vn = fresh_rows<float>(c, x.v_in(c.elem));
  SimtParams p{};
  p.q = x.q.data(), p.k = s.k.data(), p.v = s.v.data();
  Out r;
  r.out.assign(x.q.size(), std::nanf(""));
  r.lse.assign(size_t(c.batch) * c.heads * c.q_len, std::nanf(""));
  p.out = r.out.data(), p.lse = r.lse.data();
  p.q_sb = int64_t{c.q_len} * c.heads * D, p.q_sh = D, p.q_ss = int64_t{c.heads} * D;
  p.o_sb = p.q_sb, p.o_sh = p.q_sh, p.o_ss = p.q_ss;
  p.k_sb = s.k_sb, p.k_sh = s.k_sh, p.k_ss = s.k_ss, p.v_sb = s.v_sb, p.v_sh = s.v_sh, p.v_ss = s.v_ss;
  p.kv = s.kv;
  p.batch = c.batch, p.heads = c.heads, p.kv_heads = c.kv_heads, p.q_len = c.q_len, p.kv_len = s.kv_len;
  p.scale = 1.f / std::sqrt(float(D));
  p.mask = c.mask;
  p.key_lengths = c.lens.data();
  p.window = c.window;
  p.splits = c.splits;
  p.align = 8;
  p.k_scales = s.ks.empty() ? nullptr : s.ks.data(), p.v_scales = s.vs.empty() ? nullptr : s.vs.data();
  p.s_sb = s.s_sb, p.s_sh = s.s_sh, p.s_ss = s.s_ss;
  p.row_tiles = ceil_div(rows, kSimtRows);
  if (c.append) {
    p.k_new = kn.data(), p.v_new = vn.data();
    p.kn_sb = p.vn_sb = int64_t{c.q_len} * c.kv_heads * D, p.kn_sh = p.vn_sh = D,
    p.kn_ss = p.vn_ss = int64_t{c.kv_heads} * D;
  }
  const size_t slots = size_t(c.batch) * c.kv_heads * rows * c.splits;
  std::vector<float> pm(slots, std::nanf("")), pl(slots, std::nanf("")), pa(slots * D, std::nanf(""));
  p.part_m = pm.data(), p.part_l = pl.data(), p.part_acc = pa.data();
  Emulator emu;
  emu.launch(Dim3{c.batch * c.kv_heads * p.row_tiles, c.splits, 1}, kSimtThreads, kSimtRows * D,
             [&](Ctx &ctx) { simt_attention_split<Ctx, float, D, E>(ctx, p); });
  if (c.splits > 1)
    emu.launch(Dim3{c.batch * c.kv_heads * rows, 1, 1}, 32, 0,
               [&](Ctx &ctx) { simt_attention_combine<Ctx, D>(ctx, p); });
  return r;
}

// The tensor-core kernel (and the combine of its splits); QT: the element of
// q, out and the appended rows (uint16_t: the cache's 16-bit type; float).
template <int D, bool kBf16, bool kAsync, class QT>
Out run_mma(const Case &c, const Logical &x, Store<uint16_t> &s) {
  const int G = c.heads / c.kv_heads, rows = G * c.q_len;
  std::vector<QT> q(x.q.size()), out(x.q.size(), poison<QT>());
  for (size_t i = 0; i < q.size(); ++i) q[i] = to_elem<QT>(x.q[i], c.elem);
  const std::vector<QT> kn = fresh_rows<QT>(c, x.k), vn = fresh_rows<QT>(c, x.v);
  MmaParams p{};
  p.q = q.data(), p.k = s.k.data(), p.v = s.v.data(), p.out = out.data();
  Out r;
  r.lse.assign(size_t(c.batch) * c.heads * c.q_len, std::nanf(""));
  p.lse = r.lse.data();
  p.q_sb = int64_t{c.q_len} * c.heads * D, p.q_sh = D, p.q_ss = int64_t{c.heads} * D;
  p.o_sb = p.q_sb, p.o_sh = p.q_sh, p.o_ss = p.q_ss;
  p.k_sb = s.k_sb, p.k_sh = s.k_sh, p.k_ss = s.k_ss, p.v_sb = s.v_sb, p.v_sh = s.v_sh, p.v_ss = s.v_ss;
  p.kv = s.kv;
  p.batch = c.batch, p.heads = c.heads, p.kv_heads = c.kv_heads, p.q_len = c.q_len, p.kv_len = s.kv_len;
  p.scale = 1.f / std::sqrt(float(D));
  p.mask = c.mask;
  p.key_lengths = c.lens.data();
  p.window = c.window;
  p.row_tiles = mma_row_tiles(c.heads, c.kv_heads, c.q_len);
  p.splits = c.splits, p.align = c.align;
  if (c.append) {
    p.k_new = kn.data(), p.v_new = vn.data();
    p.kn_sb = p.vn_sb = int64_t{c.q_len} * c.kv_heads * D, p.kn_sh = p.vn_sh = D,
    p.kn_ss = p.vn_ss = int64_t{c.kv_heads} * D;
  }
  const size_t slots = size_t(c.batch) * c.kv_heads * rows * c.splits;
  std::vector<float> pm(slots, std::nanf("")), pl(slots, std::nanf("")), pa(slots * D, std::nanf(""));
  if (c.splits > 1) p.part_m = pm.data(), p.part_l = pl.data(), p.part_acc = pa.data();
  Emulator emu;
  emu.launch(Dim3{c.batch * c.kv_heads * p.row_tiles, c.splits, 1}, kMmaThreads, mma_smem_words<D>(),
             [&](Ctx &ctx) { mma_attention_prefill<Ctx, D, kBf16, kAsync, true, QT>(ctx, p); });
  if (c.splits > 1) {
    const SimtParams cp = combine_params(p);
    emu.launch(Dim3{c.batch * c.kv_heads * rows, 1, 1}, 32, 0,
               [&](Ctx &ctx) { simt_attention_combine<Ctx, D, QT, kBf16>(ctx, cp); });
  }
  r.out.resize(out.size());
  for (size_t i = 0; i < out.size(); ++i) r.out[i] = from_elem(out[i], c.elem);
  return r;
}

template <int D, bool kBf16, bool kAsync>
Out run_mma(const Case &c, const Logical &x, Store<uint16_t> &s) {
  return c.f32_q ? run_mma<D, kBf16, kAsync, float>(c, x, s) : run_mma<D, kBf16, kAsync, uint16_t>(c, x, s);
}

template <class E>
Out run_kernel(const Case &c, const Logical &x, Store<E> &s) {
  if constexpr (sizeof(E) != 2) {
    return c.dim == 64 ? run_simt<64>(c, x, s) : run_simt<128>(c, x, s);
  } else {
    const bool bf16 = c.elem == Elem::kBF16;
    if (c.dim == 64) {
      if (bf16) return c.async ? run_mma<64, true, true>(c, x, s) : run_mma<64, true, false>(c, x, s);
      return c.async ? run_mma<64, false, true>(c, x, s) : run_mma<64, false, false>(c, x, s);
    }
    if (bf16) return c.async ? run_mma<128, true, true>(c, x, s) : run_mma<128, true, false>(c, x, s);
    return c.async ? run_mma<128, false, true>(c, x, s) : run_mma<128, false, false>(c, x, s);
  }
}

// float64 attention over each sequence's logical keys (bottom-right causal,
// keys d - window < j <= d with a sliding window).
Out reference(const Case &c, const Logical &x) {
  const int D = c.dim, N = c.max_len(), G = c.heads / c.kv_heads;
  const double scale = 1.f / std::sqrt(float(D));  // the fp32 scale the kernels get
  Out r;
  r.out.assign(x.q.size(), 0.f);
  r.lse.assign(size_t(c.batch) * c.heads * c.q_len, -INFINITY);
  for (int b = 0; b < c.batch; ++b)
    for (int h = 0; h < c.heads; ++h)
      for (int i = 0; i < c.q_len; ++i) {
        const int L = c.lens[size_t(b)];
        const int end = (c.mask & 1u) ? std::clamp(i + L - c.q_len + 1, 0, L) : L;
        const int begin = (c.mask & 1u) && c.window > 0 ? std::max(0, i + L - c.q_len + 1 - c.window) : 0;
        if (end == 0) continue;
        const float *q = &x.q[((size_t(b) * c.q_len + i) * c.heads + h) * D];
        auto krow = [&](const std::vector<float> &t, int j) {
          return &t[((size_t(b) * N + j) * c.kv_heads + h / G) * D];
        };
        std::vector<double> s(static_cast<size_t>(end), -INFINITY);  // keys before the window stay -inf
        double mx = -INFINITY;
        for (int j = begin; j < end; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += double(q[d]) * krow(x.k, j)[d];
          s[size_t(j)] = dot * scale;
          mx = std::max(mx, s[size_t(j)]);
        }
        double sum = 0;
        for (double v : s) sum += std::exp(v - mx);
        float *o = &r.out[((size_t(b) * c.q_len + i) * c.heads + h) * D];
        for (int d = 0; d < D; ++d) {
          double acc = 0;
          for (int j = begin; j < end; ++j) acc += std::exp(s[size_t(j)] - mx) * krow(x.v, j)[d];
          o[d] = float(acc / sum);
        }
        r.lse[(size_t(b) * c.heads + h) * c.q_len + i] = float(mx + std::log(sum));
      }
  return r;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

std::string describe(const Case &c) {
  std::string s = "block_size " + std::to_string(c.block_size) + " q_len " + std::to_string(c.q_len) + " heads " +
                  std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) + " dim " + std::to_string(c.dim) +
                  " mask " + std::to_string(c.mask) + " splits " + std::to_string(c.splits) + " align " +
                  std::to_string(c.align) + (c.append ? " append" : "") +
                  (c.elem == Elem::kF32   ? " f32"
                   : c.elem == Elem::kF16 ? " f16"
                   : c.elem == Elem::kI8  ? " i8"
                                          : " bf16") +
                  (c.f32_q ? " f32-queries" : "") + (c.async ? "" : " plain-loads") + " window " +
                  std::to_string(c.window) + " lens";
  for (int L : c.lens) s += " " + std::to_string(L);
  return s;
}

double g_worst = 0;  // largest error of the running test (printed)
struct PrintWorst {
  PrintWorst() { g_worst = 0; }
  ~PrintWorst() { std::printf("  largest error vs float64: %.3g\n", g_worst); }
};

// Runs the case paged and contiguous; returns the paged error against float64
// and checks bit equality with contiguous and, with the append, the pool.
template <class E>
double paged_error(const Case &c, uint32_t seed) {
  SCOPED_TRACE(describe(c) + ", " + parley::test::seed_note(seed));
  const Logical x = make_logical(c, seed);
  std::mt19937 rng(seed ^ 0x9E3779B9u);
  Store<E> paged = make_paged<E>(c, x, rng), flat = make_contiguous<E>(c, x);
  // What the pool must hold afterwards: the same, plus the appended rows.
  Store<E> want_pool = paged;
  if (c.append) {
    Case all = c;
    all.append = false;  // every row < L stored
    want_pool.k.assign(paged.k.size(), poison<E>());
    want_pool.v = want_pool.k;
    std::fill(want_pool.ks.begin(), want_pool.ks.end(), std::nanf(""));
    std::fill(want_pool.vs.begin(), want_pool.vs.end(), std::nanf(""));
    want_pool.kv.table = want_pool.table.data();
    fill_rows(all, x, want_pool);
  }
  const Out got = run_kernel(c, x, paged);
  const Out flat_out = run_kernel(c, x, flat);
  EXPECT_TRUE(same_bits(got.out, flat_out.out) && same_bits(got.lse, flat_out.lse))
      << "paged and contiguous differ (same keys in the same order)";
  EXPECT_TRUE(std::memcmp(paged.k.data(), want_pool.k.data(), paged.k.size() * sizeof(E)) == 0 &&
              std::memcmp(paged.v.data(), want_pool.v.data(), paged.v.size() * sizeof(E)) == 0)
      << "the pool is not the old pool plus the appended rows in their blocks";
  EXPECT_TRUE(same_bits(paged.ks, want_pool.ks) && same_bits(paged.vs, want_pool.vs))
      << "the int8 pool's scales are not the old ones plus the appended rows'";
  const Out want = reference(c, x);
  const double e = std::max(rel_error(got.out, want.out), rel_error(got.lse, want.lse));
  g_worst = std::max(g_worst, e);
  return e;
}

constexpr double kTol32 = 1e-5, kTol16 = 1e-2;  // ENGINEERING.md

}  // namespace

TEST(SimtPaged, SplitKvKernelReadsBlocks) {
  PARLEY_TRACE_BASE_SEED();
  PrintWorst worst;
  for (int bs : {1, 16, 32}) {
    const bool odd = bs == 16;  // masks and split counts alternate over the block sizes
    Case c;                     // decode, GQA 2, lengths 37 / 45 sharing 32 keys
    c.block_size = bs, c.mask = odd ? 2u : 3u, c.splits = odd ? 3 : 1;
    EXPECT_LE(paged_error<float>(c, parley::test::case_seed()), kTol32) << describe(c);
    c.q_len = 5, c.heads = 8, c.kv_heads = 2;  // 20 packed rows: two row tiles
    c.lens = {41, 34}, c.mask = odd ? 3u : 2u, c.splits = odd ? 1 : 3;
    EXPECT_LE(paged_error<float>(c, parley::test::case_seed()), kTol32) << describe(c);
  }
  Case c;  // D 128, MQA, a sequence shorter than a block, no sharing
  c.dim = 128, c.heads = 4, c.kv_heads = 1, c.q_len = 3, c.lens = {9, 70}, c.shared_keys = 0, c.splits = 2;
  EXPECT_LE(paged_error<float>(c, parley::test::case_seed()), kTol32) << describe(c);
}

TEST(SimtPaged, FusedAppendWritesIntoTheBlocks) {
  PARLEY_TRACE_BASE_SEED();
  PrintWorst worst;
  for (int bs : {1, 16, 32}) {
    Case c;
    c.append = true, c.block_size = bs, c.splits = 3;
    EXPECT_LE(paged_error<float>(c, parley::test::case_seed()), kTol32) << describe(c);
    c.q_len = 5, c.heads = 8, c.kv_heads = 2, c.lens = {47, 38}, c.splits = 1;  // new rows across a block boundary
    EXPECT_LE(paged_error<float>(c, parley::test::case_seed()), kTol32) << describe(c);
  }
  Case c;  // a prompt's first chunk: every row new, one sequence shorter than q_len
  c.append = true, c.block_size = 16, c.shared_keys = 0, c.q_len = 6, c.lens = {6, 4}, c.mask = 3u;
  EXPECT_LE(paged_error<float>(c, parley::test::case_seed()), kTol32) << describe(c);
}

// kv_dtype I8 (a model computing in F32 with an int8 KV cache): the split-KV
// kernel dequantises each cached row with its scale, appends new rows
// quantised bit for bit as the cpu plugin's narrow_i8 (values and scales; the
// rows it appends are read as the cache will hold them), on contiguous and
// paged caches, with GQA, splits, D 128 and a sliding window.
TEST(SimtPaged, SplitKvKernelReadsAndAppendsAnI8Cache) {
  PARLEY_TRACE_BASE_SEED();
  PrintWorst worst;
  for (int bs : {1, 16, 32})
    for (bool append : {false, true}) {
      Case c;  // decode, GQA 2, lengths 37 / 45 sharing 32 keys
      c.elem = Elem::kI8, c.block_size = bs, c.append = append, c.splits = append ? 3 : 1;
      EXPECT_LE(paged_error<int8_t>(c, parley::test::case_seed()), kTol32) << describe(c);
      c.q_len = 5, c.heads = 8, c.kv_heads = 2, c.lens = {47, 38}, c.splits = append ? 1 : 3;  // two row tiles
      c.window = append ? 0 : 20;
      EXPECT_LE(paged_error<int8_t>(c, parley::test::case_seed()), kTol32) << describe(c);
    }
  Case c;  // D 128, MQA, a prompt's first chunk (every row new, one sequence shorter than it)
  c.elem = Elem::kI8, c.dim = 128, c.heads = 4, c.kv_heads = 1, c.q_len = 6, c.lens = {6, 4}, c.shared_keys = 0;
  c.append = true, c.splits = 2;
  EXPECT_LE(paged_error<int8_t>(c, parley::test::case_seed()), kTol32) << describe(c);
}

TEST(SimtPaged, TensorCoreKernelReadsBlocks) {
  PARLEY_TRACE_BASE_SEED();
  PrintWorst worst;
  for (int bs : {1, 16, 24, 32})  // 1 and 24: one table lookup per key; 16 and 32: per tile of 16
    for (int q_len : {1, 20}) {
      Case c;  // GQA 2 (one KV head: half the CTAs of the default case)
      c.heads = 2, c.kv_heads = 1;
      c.elem = (bs + q_len) % 2 ? Elem::kBF16 : Elem::kF16;  // each block size with both
      c.block_size = bs, c.q_len = q_len, c.mask = q_len == 1 ? 2u : 3u;
      if (bs == 24) c.shared_keys = 24;
      EXPECT_LE(paged_error<uint16_t>(c, parley::test::case_seed()), kTol16) << describe(c);
    }
  Case c;  // D 128, plain loads (no cp.async), 70 query rows: two row tiles
  c.elem = Elem::kF16, c.dim = 128, c.heads = 2, c.kv_heads = 1, c.q_len = 70, c.lens = {75, 40}, c.async = false;
  EXPECT_LE(paged_error<uint16_t>(c, parley::test::case_seed()), kTol16) << describe(c);
}

// Sliding windows over paged caches: window starts inside a block, on a
// block bound, windows smaller than a block and spanning several, equal to
// and larger than the sequence; decode and chunks of 5 over past keys, one
// and several splits, the fused append, block sizes 1, 16, 24 and 32. The
// rows before each sequence's first window are never stored (NaN).
TEST(SimtPaged, SlidingWindowSplitKvKernel) {
  PARLEY_TRACE_BASE_SEED();
  PrintWorst worst;
  for (int bs : {1, 16, 32})
    for (int window : {5, 16, 29, 45, 60}) {
      Case c;  // decode, lengths 37 / 45 sharing 32 keys
      c.block_size = bs, c.window = window, c.splits = window % 2 ? 3 : 1;
      EXPECT_LE(paged_error<float>(c, parley::test::case_seed()), kTol32) << describe(c);
      if (window > 29) continue;                                    // chunks: windows inside the sequence
      c.q_len = 5, c.heads = 8, c.kv_heads = 2, c.lens = {41, 34};  // two row tiles
      EXPECT_LE(paged_error<float>(c, parley::test::case_seed()), kTol32) << describe(c);
      c.append = true, c.splits = 2;
      EXPECT_LE(paged_error<float>(c, parley::test::case_seed()), kTol32) << describe(c);
    }
  Case c;  // a long sequence, a short window, D 128, MQA
  c.dim = 128, c.heads = 4, c.kv_heads = 1, c.lens = {9, 170}, c.shared_keys = 0, c.splits = 3, c.window = 40;
  EXPECT_LE(paged_error<float>(c, parley::test::case_seed()), kTol32) << describe(c);
}

TEST(SimtPaged, SlidingWindowTensorCoreKernel) {
  PARLEY_TRACE_BASE_SEED();
  PrintWorst worst;
  for (int bs : {1, 16, 24, 32})
    for (int window : {3, 17, 40})
      for (int q_len : {1, 20}) {
        if (window == 17 && bs != 16) continue;  // a window start off the tile bound, once
        Case c;
        c.heads = 2, c.kv_heads = 1, c.lens = {37, 75};
        c.elem = (bs + q_len + window) % 2 ? Elem::kBF16 : Elem::kF16;
        c.block_size = bs, c.q_len = q_len, c.window = window;
        if (bs == 24) c.shared_keys = 24;
        EXPECT_LE(paged_error<uint16_t>(c, parley::test::case_seed()), kTol16) << describe(c);
      }
  Case c;  // D 128, plain loads, 70 query rows: two row tiles
  c.elem = Elem::kF16, c.dim = 128, c.heads = 2, c.kv_heads = 1, c.q_len = 70, c.lens = {75, 140}, c.async = false;
  c.window = 33;
  EXPECT_LE(paged_error<uint16_t>(c, parley::test::case_seed()), kTol16) << describe(c);
}

// The tensor-core kernel's decode features: GQA packing (G = 7 query heads of
// one KV head in a CTA, as Qwen2.5-0.5B's 14 / 2; G = 4 chunks of 20 queries:
// 80 packed rows, two row tiles), split-KV (1 / 3 / 4 splits, bounds on
// multiples of 16 or 64 keys, combined by simt_attention_combine) and the
// fused append (the q_len newest rows from k_new / v_new, written into their
// blocks), with 16-bit queries and with fp32 queries over an F16 cache (the
// kv_dtype F16 path of a model computing in F32), on contiguous and paged
// caches (block sizes 1, 16, 24, 32), with and without a sliding window.
TEST(SimtPaged, TensorCoreKernelPacksHeadsSplitsKeysAndAppends) {
  PARLEY_TRACE_BASE_SEED();
  PrintWorst worst;
  int n = 0;
  for (int bs : {1, 16, 24, 32})
    for (int splits : {1, 3})
      for (bool append : {false, true}) {
        ++n;
        Case c;  // decode, GQA 7, lengths 150 / 203 sharing 48 keys
        c.heads = 14, c.kv_heads = 2, c.lens = {150, 203}, c.shared_keys = bs == 1 ? 48 : (48 / bs) * bs;
        c.block_size = bs, c.splits = splits, c.append = append, c.align = n % 2 ? 16 : 64;
        c.elem = n % 3 == 2 ? Elem::kBF16 : Elem::kF16;
        c.f32_q = c.elem == Elem::kF16 && n % 3 == 0;
        c.async = n % 4 != 1;
        EXPECT_LE(paged_error<uint16_t>(c, parley::test::case_seed()), kTol16) << describe(c);
        c.q_len = 20, c.heads = 8, c.kv_heads = 2, c.lens = {90, 41};  // 80 packed rows: two row tiles
        c.shared_keys = bs == 1 ? 32 : (32 / bs) * bs;
        c.window = append ? 0 : 37;
        EXPECT_LE(paged_error<uint16_t>(c, parley::test::case_seed()), kTol16) << describe(c);
      }
  Case c;  // D 128, MQA 4, a prompt's first chunk (every row new, one sequence shorter than it), 4 splits
  c.dim = 128, c.heads = 4, c.kv_heads = 1, c.q_len = 6, c.lens = {6, 4}, c.shared_keys = 0, c.append = true;
  c.elem = Elem::kF16, c.f32_q = true, c.splits = 4, c.align = 16;
  EXPECT_LE(paged_error<uint16_t>(c, parley::test::case_seed()), kTol16) << describe(c);
  c.q_len = 1, c.lens = {300, 17}, c.window = 100, c.append = false, c.splits = 3;  // a window over a long cache
  EXPECT_LE(paged_error<uint16_t>(c, parley::test::case_seed()), kTol16) << describe(c);
}

// The comparison can fail: the kernel reading the pool as if it were
// contiguous (the table ignored) is caught.
TEST(SimtPaged, IgnoringTheTableIsCaught) {
  PARLEY_CASE_SEED(seed);
  Case c;
  c.shared_keys = 0;
  const Logical x = make_logical(c, seed);
  std::mt19937 rng(seed);
  Store<float> s = make_paged<float>(c, x, rng);
  s.kv = KvBlocks{};  // contiguous addressing of the pool: sequence b at b * k_sb
  const Out got = run_simt<64>(c, x, s);
  EXPECT_GT(rel_error(got.out, reference(c, x).out), 1e-2);
}
