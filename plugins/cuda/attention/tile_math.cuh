// Tile mathematics of the fused attention kernels (prefill and split-KV
// decode): online softmax, finalisation, the merge of split-KV partials, mask
// and tile bounds, GQA / beam row packing, the split heuristic and paged key
// addressing.
//
// Everything here is __host__ __device__ and free of CUDA headers, so the same
// code is compiled into the kernels by nvcc and into tests/cuda_math by the
// host compiler, where it is checked against float64 references.
// See README.md in this directory for the formulas and how the kernels use it.
//
// Conventions
//  * Scores enter as raw dot products x = q . k (fp32, as the MMA produces
//    them). The softmax scale is folded into a per-call constant c:
//      BaseE: c = scale            probabilities p = exp (x*c - m)
//      Base2: c = scale * log2(e)  probabilities p = exp2(x*c - m)
//    (Base2 is what the kernels use: exp2f is one MUFU.EX2.) c must be > 0
//    (scale > 0), so max(x)*c == max(x*c).
//  * m is the running row maximum already multiplied by c and rounded to
//    fp32 once; p is computed as exp(fmaf(x, c, -m)), so the exponent is
//    formed with a single rounding even for huge logits (x*c ~ 1e4), and all
//    rescale factors are exp(m_old - m_new) of the very same rounded values,
//    which keeps the algebra exact up to that one rounding.
//  * Masked elements are -INFINITY scores. A row that has seen only masked
//    elements has m = -INFINITY, l = 0 and produces zeros and lse = -INFINITY.
//    No expression ever evaluates inf - inf.
#ifndef PARLEY_PLUGINS_CUDA_ATTENTION_TILE_MATH_CUH
#define PARLEY_PLUGINS_CUDA_ATTENTION_TILE_MATH_CUH

#include <math.h>
#include <stdint.h>

#ifndef PARLEY_HD
#if defined(__CUDACC__)
#define PARLEY_HD __host__ __device__
#else
#define PARLEY_HD
#endif
#endif

namespace parley::cuda::attn {

// ---- exponential bases ------------------------------------------------------

struct BaseE {
  static constexpr float kLog2e = 1.0f;      // c = scale * kLog2e
  static constexpr float kToNatural = 1.0f;  // natural log = base-b log * kToNatural
  PARLEY_HD static float exp(float x) { return expf(x); }
  PARLEY_HD static float log(float x) { return logf(x); }
};

struct Base2 {
  static constexpr float kLog2e = 1.44269504088896340736f;
  static constexpr float kToNatural = 0.69314718055994530942f;
  PARLEY_HD static float exp(float x) { return exp2f(x); }
  PARLEY_HD static float log(float x) { return log2f(x); }
};

// The constant c multiplying raw scores for base B.
template <class B>
PARLEY_HD inline float score_factor(float scale) {
  return scale * B::kLog2e;
}

// ---- online softmax ---------------------------------------------------------

// Per query row: m = running max of x*c (fp32), l = running sum of
// exp_b(x*c - m) over the keys seen so far. The output accumulator acc[D]
// holds sum_j exp_b(x_j*c - m) v_j and lives beside it (registers).
struct RowState {
  float m;
  float l;
};

PARLEY_HD inline RowState row_init() {
  return RowState{-INFINITY, 0.f};
}

// Largest raw score of a tile row (masked entries are -INFINITY).
PARLEY_HD inline float tile_row_max(const float *x, int n) {
  float mx = -INFINITY;
  for (int j = 0; j < n; ++j) mx = fmaxf(mx, x[j]);
  return mx;
}

// Starts a key tile for one row whose largest raw score in the tile is
// tile_max_x (reduced over the threads that share the row). Updates st.m,
// rescales st.l and returns alpha, the factor the caller must apply to the
// row's output accumulator before adding this tile's p @ V:
//   m' = max(m, tile_max*c), alpha = exp_b(m - m'), l <- alpha * l.
// alpha = 1 when the max did not move (including m = m' = -inf: nothing seen
// yet and the tile is fully masked), 0 on the first non-empty tile.
template <class B>
PARLEY_HD inline float online_begin_tile(RowState &st, float tile_max_x, float c) {
  const float tile_m = tile_max_x == -INFINITY ? -INFINITY : tile_max_x * c;
  const float m_new = fmaxf(st.m, tile_m);
  const float alpha = st.m == m_new ? 1.f : B::exp(st.m - m_new);
  st.m = m_new;
  st.l *= alpha;
  return alpha;
}

// Unnormalised probability of raw score x against the row's current max m;
// 0 for masked scores and for rows with nothing visible yet.
template <class B>
PARLEY_HD inline float online_prob(float x, float c, float m) {
  return m == -INFINITY ? 0.f : B::exp(fmaf(x, c, -m));
}

// acc[i] *= alpha (the kernels do this on their register fragments).
PARLEY_HD inline void rescale_acc(float *acc, int n, float alpha) {
  for (int i = 0; i < n; ++i) acc[i] *= alpha;
}

// One whole row of one tile on a single thread: x[0..n) raw scores in, p[0..n)
// unnormalised probabilities out, st updated (l includes this tile's sum).
// Returns alpha for the accumulator. p may alias x.
template <class B>
PARLEY_HD inline float online_update_row(RowState &st, const float *x, float *p, int n, float c) {
  const float alpha = online_begin_tile<B>(st, tile_row_max(x, n), c);
  float sum = 0.f;
  for (int j = 0; j < n; ++j) {
    p[j] = online_prob<B>(x[j], c, st.m);
    sum += p[j];
  }
  st.l += sum;
  return alpha;
}

// ---- finalisation -----------------------------------------------------------

struct RowResult {
  float inv_l;  // out = acc * inv_l (0 for an empty row, so out = 0)
  float lse;    // natural-log sum-exp of the scaled, masked scores; -inf if empty
  bool empty;
};

template <class B>
PARLEY_HD inline RowResult row_finalize(const RowState &st) {
  RowResult r;
  r.empty = st.m == -INFINITY || !(st.l > 0.f);
  r.inv_l = r.empty ? 0.f : 1.f / st.l;
  r.lse = r.empty ? -INFINITY : (st.m + B::log(st.l)) * B::kToNatural;
  return r;
}

// ---- merge of split-KV partials (flash-decoding combine) ----------------------
//
// Split s of a row produced out_s = acc_s / l_s (zeros if empty) and its state
// (m_s, l_s) in base-b units. Exact combination:
//   M = max_s m_s,  L = sum_s l_s * exp_b(m_s - M),
//   out = sum_s w_s out_s with w_s = l_s * exp_b(m_s - M) / L,
//   lse = (M + log_b L) * ln(b).
// Splits with l_s = 0 / m_s = -inf (fully masked) get weight 0; if all are
// empty the result is out = 0, lse = -inf. Keeping (m_s, l_s) instead of one
// float lse_s keeps the weights exact when the logits are huge (an fp32 lse of
// ~1e4 is only known to ~1e-3). Partials given as natural lse values only
// (e.g. from two separate attention calls) merge with B = BaseE, m_s = lse_s,
// l_s = 1 (0 if lse_s = -inf).

// Combined state of n splits; m and l are read at m[s*stride], l[s*stride].
template <class B>
PARLEY_HD inline RowState merge_states(const float *m, const float *l, int n, int stride) {
  float mx = -INFINITY;
  for (int s = 0; s < n; ++s)
    if (l[s * stride] > 0.f) mx = fmaxf(mx, m[s * stride]);
  RowState r{mx, 0.f};
  if (mx == -INFINITY) return r;
  for (int s = 0; s < n; ++s) {
    const float ls = l[s * stride];
    if (ls > 0.f && m[s * stride] != -INFINITY) r.l += ls * B::exp(m[s * stride] - mx);
  }
  return r;
}

// Weight of split (m_s, l_s) in the combined output `total` (from merge_states).
template <class B>
PARLEY_HD inline float merge_weight(float m_s, float l_s, const RowState &total) {
  if (!(l_s > 0.f) || m_s == -INFINITY || total.m == -INFINITY || !(total.l > 0.f)) return 0.f;
  return l_s * B::exp(m_s - total.m) / total.l;
}

// ---- masks and tile bounds ---------------------------------------------------
//
// For one sequence: L = key_lengths[b] with PARLEY_MASK_KEY_PADDING, else
// kv_len. Query i (0 <= i < q_len) sees key j iff begin(i) <= j < end(i), with
//   end(i)   = L                                  without CAUSAL
//   end(i)   = clamp(i + L - q_len + 1, 0, L)     with CAUSAL (bottom-right)
//   begin(i) = 0, and with CAUSAL and a sliding window w > 0 (plugin ABI 1.4)
//              max(0, i + L - q_len + 1 - w): the w newest keys up to the
//              query's own position d = i + L - q_len, i.e. d - w < j <= d
//              (transformers' sliding_window_overlay, kv_idx > q_idx - w;
//              the cpu plugin's attention.cpp).
// begin() and end() are non-decreasing in i, and with CAUSAL
// begin(i + 1) <= end(i) (end grows by one key per row, w >= 1), so the keys
// rows i0..i1 see together are [begin(i0), end(i1)) without gaps: tile classification is exact from the
// first and last row of a tile alone, and a kernel skips every key tile
// before begin(first row) (the cost is proportional to the window).

struct MaskInfo {
  int q_len;
  int key_len;  // L
  bool causal;
  int window = 0;  // sliding window (keys), 0: none; only with causal
};

constexpr uint32_t kMaskCausal = 1u;      // == PARLEY_MASK_CAUSAL
constexpr uint32_t kMaskKeyPadding = 2u;  // == PARLEY_MASK_KEY_PADDING

PARLEY_HD inline MaskInfo make_mask(uint32_t mask_flags, int q_len, int kv_len, const int32_t *key_lengths, int b) {
  MaskInfo mi;
  mi.q_len = q_len;
  mi.key_len = (mask_flags & kMaskKeyPadding) ? key_lengths[b] : kv_len;
  mi.causal = (mask_flags & kMaskCausal) != 0;
  mi.window = 0;
  return mi;
}

// make_mask with a sliding window (0: none).
PARLEY_HD inline MaskInfo make_mask(uint32_t mask_flags, int q_len, int kv_len, const int32_t *key_lengths, int b,
                                    int window) {
  MaskInfo mi = make_mask(mask_flags, q_len, kv_len, key_lengths, b);
  mi.window = window > 0 ? window : 0;
  return mi;
}

// Number of visible keys of query i (keys [0, end)).
PARLEY_HD inline int visible_end(const MaskInfo &mi, int i) {
  if (!mi.causal) return mi.key_len;
  const int e = i + mi.key_len - mi.q_len + 1;
  return e < 0 ? 0 : (e > mi.key_len ? mi.key_len : e);
}

// First visible key of query i (0 without a window). A window never exceeds
// the causal end: begin(i) <= end(i) whenever end(i) > 0.
PARLEY_HD inline int visible_begin(const MaskInfo &mi, int i) {
  if (!mi.causal || mi.window <= 0) return 0;
  // i + L - q_len + 1 - window in 64 bits: window may be up to 2^30.
  const int64_t b = static_cast<int64_t>(i) + mi.key_len - mi.q_len + 1 - mi.window;
  return b < 0 ? 0 : static_cast<int>(b);
}

PARLEY_HD inline bool visible(const MaskInfo &mi, int i, int j) {
  return i >= 0 && i < mi.q_len && j >= visible_begin(mi, i) && j < visible_end(mi, i);
}

enum class TileClass : int { kSkip = 0, kPartial = 1, kFull = 2 };

// Tile of query rows i_first..i_last (inclusive, ascending query indices;
// packed decode rows pass the query index of their first and last row) and
// keys [j0, j1). kFull: every element visible (no mask work); kSkip: none
// visible (do not load K/V); kPartial: apply visible() per element.
PARLEY_HD inline TileClass classify_tile(const MaskInfo &mi, int i_first, int i_last, int j0, int j1) {
  if (i_first < 0) i_first = 0;
  if (i_last > mi.q_len - 1) i_last = mi.q_len - 1;
  if (j0 < 0) j0 = 0;
  if (i_first > i_last || j0 >= j1) return TileClass::kSkip;
  const int lo = visible_end(mi, i_first), hi = visible_end(mi, i_last);
  if (j0 >= hi || j1 <= visible_begin(mi, i_first)) return TileClass::kSkip;
  if (j1 <= lo && j0 >= visible_begin(mi, i_last)) return TileClass::kFull;
  return TileClass::kPartial;
}

// Key tiles of width bn over the range [ks, ke) (a whole sequence or one
// split): tile t covers [ks + t*bn, min(ke, ks + (t+1)*bn)) (the last one is
// ragged). For rows i_first..i_last, tiles [0, first) are kSkip (before every
// row's sliding window; 0 without one), [first, full_begin) kPartial,
// [full_begin, n_full) kFull, [n_full, n_total) kPartial and tiles from
// n_total on kSkip: a kernel loops over [first, n_total) and applies the mask
// outside [full_begin, n_full). Without a window first = full_begin = 0.
struct KeyTiles {
  int n_full;
  int n_total;
  int first = 0;
  int full_begin = 0;
};

PARLEY_HD inline int ceil_div(int a, int b) {
  return (a + b - 1) / b;
}

PARLEY_HD inline KeyTiles key_tiles(const MaskInfo &mi, int i_first, int i_last, int ks, int ke, int bn) {
  KeyTiles kt{0, 0};
  if (i_first < 0) i_first = 0;
  if (i_last > mi.q_len - 1) i_last = mi.q_len - 1;
  if (i_first > i_last || ks >= ke || bn <= 0) return kt;
  const int lo = visible_end(mi, i_first), hi = visible_end(mi, i_last);
  const int hi_c = hi < ke ? hi : ke;
  if (hi_c > ks) kt.n_total = ceil_div(hi_c - ks, bn);
  if (lo >= ke)
    kt.n_full = ceil_div(ke - ks, bn);
  else if (lo > ks)
    kt.n_full = (lo - ks) / bn;
  if (kt.n_full > kt.n_total) kt.n_full = kt.n_total;
  // Sliding window: tiles ending at or before the first row's first key are
  // skipped; a full tile also starts at or after the last row's first key.
  const int b_lo = visible_begin(mi, i_first), b_hi = visible_begin(mi, i_last);
  int first = b_lo >= ke ? kt.n_total : (b_lo > ks ? (b_lo - ks) / bn : 0);
  if (first > kt.n_total) first = kt.n_total;
  int full_begin = b_hi > ks ? ceil_div(b_hi - ks, bn) : 0;
  if (full_begin < first) full_begin = first;
  if (full_begin > kt.n_total) full_begin = kt.n_total;
  if (kt.n_full < full_begin) kt.n_full = full_begin;  // no full tile
  kt.first = first;
  kt.full_begin = full_begin;
  return kt;
}

// Keys [j0, j1) of tile t of the window (ragged last tile).
PARLEY_HD inline int tile_key_begin(int ks, int t, int bn) {
  return ks + t * bn;
}
PARLEY_HD inline int tile_key_end(int ks, int ke, int t, int bn) {
  const int e = ks + (t + 1) * bn;
  return e < ke ? e : ke;
}

// ---- GQA and decode row packing ---------------------------------------------

// Query heads per kv head (num_heads is a multiple of num_kv_heads).
PARLEY_HD inline int gqa_group(int num_heads, int num_kv_heads) {
  return num_heads / num_kv_heads;
}
// Query head h reads kv head h / G.
PARLEY_HD inline int kv_head_of(int h, int num_heads, int num_kv_heads) {
  return h / gqa_group(num_heads, num_kv_heads);
}

// Decode packs, for one (sequence, kv head g), the G query heads sharing g
// times the q_rows query rows of the step (1 for greedy, up to the beam for
// several rows per sequence) into tile rows, query-major:
//   r = i * G + hl   (i: query row, hl: head within the group, h = g*G + hl)
// so that the query index r / G is non-decreasing in r and classify_tile /
// key_tiles apply to a tile of packed rows [r0, r1) with
// i_first = r0 / G, i_last = (r1 - 1) / G. Each K/V tile is then loaded once
// for all G*q_rows rows (the point of GQA packing).
struct DecodePack {
  int group;   // G
  int q_rows;  // query rows per sequence in this step
  PARLEY_HD int rows() const { return group * q_rows; }
  PARLEY_HD int row_of(int hl, int i) const { return i * group + hl; }
  PARLEY_HD int query_of(int r) const { return r / group; }
  PARLEY_HD int head_in_group(int r) const { return r % group; }
  PARLEY_HD int head_of(int g, int r) const { return g * group + r % group; }
  PARLEY_HD int row_tiles(int tile_m) const { return ceil_div(rows(), tile_m); }
};

// ---- split-KV heuristic --------------------------------------------------------
//
// base_ctas = batch * kv_heads * row_tiles CTAs exist without splitting. If
// they fill >= 80% of the SMs one split is used. Otherwise, for
// n = 1..n_max with n_max = min(max_splits, max(1, kv_len / min_keys)), the
// wave efficiency eff(n) = base*n / (ceil(base*n / sms) * sms) is computed
// (n whose largest split is as long as with n-1 splits is skipped: no
// latency gain); the smallest n with eff(n) >= 0.85 * max eff is chosen. So
// splits are only added while they fill idle SMs, and every split keeps at
// least min_keys keys (rounded up to the key tile `align`).

struct SplitConfig {
  int num_sms = 132;
  int min_keys = 256;   // minimum keys per split (rounded up to align)
  int align = 64;       // key tile width: interior split bounds are multiples
  int max_splits = 64;  // bound on the combine's scratch
};

PARLEY_HD inline int split_min_keys(const SplitConfig &cfg) {
  const int a = cfg.align > 0 ? cfg.align : 1;
  const int mk = cfg.min_keys > a ? cfg.min_keys : a;
  return ceil_div(mk, a) * a;
}

PARLEY_HD inline float split_wave_efficiency(int64_t base_ctas, int n, int num_sms) {
  const int64_t ctas = base_ctas * n;
  const int64_t waves = (ctas + num_sms - 1) / num_sms;
  return waves == 0 ? 0.f : static_cast<float>(static_cast<double>(ctas) / static_cast<double>(waves * num_sms));
}

// Largest split, in tiles, of n balanced splits over kv_len (see split_range).
PARLEY_HD inline int split_max_tiles(int kv_len, int n, int align) {
  const int full = kv_len / align;
  const int extra = kv_len % align != 0 ? 1 : 0;
  return n == 1 ? full + extra : (ceil_div(full, n) + extra);
}

PARLEY_HD inline int num_splits(int64_t base_ctas, int kv_len, const SplitConfig &cfg) {
  if (kv_len <= 0 || base_ctas <= 0 || cfg.num_sms <= 0) return 1;
  if (base_ctas * 5 >= static_cast<int64_t>(cfg.num_sms) * 4) return 1;  // >= 80% of the SMs
  const int mk = split_min_keys(cfg);
  int n_max = kv_len / mk;
  if (n_max > cfg.max_splits) n_max = cfg.max_splits;
  if (n_max <= 1) return 1;
  const int a = cfg.align > 0 ? cfg.align : 1;
  float best = 0.f;
  for (int n = 1; n <= n_max; ++n) {
    const float e = split_wave_efficiency(base_ctas, n, cfg.num_sms);
    if (e > best) best = e;
  }
  for (int n = 1; n <= n_max; ++n) {
    if (n > 1 && split_max_tiles(kv_len, n, a) == split_max_tiles(kv_len, n - 1, a)) continue;
    if (split_wave_efficiency(base_ctas, n, cfg.num_sms) >= 0.85f * best) return n;
  }
  return 1;
}

struct KeyRange {
  int begin;
  int end;
};

// Keys of split s of n over [0, kv_len): the floor(kv_len/align) whole tiles
// are shared out as evenly as possible (split s gets tiles
// [F*s/n, F*(s+1)/n)), the ragged tail goes to the last split. Covers
// [0, kv_len) exactly once; interior bounds are multiples of align; with
// n <= kv_len / min_keys (num_splits guarantees it) no split is empty and
// each has >= min_keys keys. A kernel may apply this per sequence with its own
// key length: short sequences then get empty splits, which the merge ignores.
PARLEY_HD inline KeyRange split_range(int s, int n, int kv_len, int align) {
  if (align <= 0) align = 1;
  const int64_t full = kv_len / align;
  KeyRange r;
  r.begin = static_cast<int>(align * (full * s / n));
  r.end = s + 1 >= n ? kv_len : static_cast<int>(align * (full * (s + 1) / n));
  return r;
}

// ---- paged KV addressing ------------------------------------------------------
//
// A paged KV cache stores each sequence's keys in pages of page_size rows;
// page_table[b * table_stride + p] is the physical page of logical page p.
// Logical key j of sequence b lives in physical row
//   page_table[b*table_stride + j / page_size] * page_size + j % page_size
// of the pool. With page_size a multiple of the key tile and tiles aligned to
// it (split bounds are multiples of align), a key tile never crosses a page,
// so a tile's rows are contiguous and its base is one table lookup.
struct PagedKv {
  const int32_t *page_table;
  int table_stride;
  int page_size;
  PARLEY_HD int64_t row(int b, int j) const {
    const int page = page_table[static_cast<int64_t>(b) * table_stride + j / page_size];
    return static_cast<int64_t>(page) * page_size + j % page_size;
  }
};

// The plugin ABI's K/V layout (parley_attention_args, ABI 1.3), contiguous or
// paged, for one tensor (K, V) whose head offset g * stride_head the caller
// adds. Contiguous: key j of sequence b at b * stride_batch + j * stride_seq.
// Paged: block blk = table[b * table_stride + j / block_size], key row
// j % block_size, at blk * stride_batch + (j % block_size) * stride_seq
// (stride_batch is then the stride between blocks). Contiguous is the same
// formula with one block of kContiguousBlock rows per sequence whose index is
// b, so a kernel has one code path: it resolves `block_index` once per key
// tile (when the tile lies in one block) or once per key, never per element.
constexpr int kContiguousBlock = 1 << 30;  // > any key index the kernels accept

struct KvBlocks {
  const int32_t *table = nullptr;  // NULL: contiguous
  int64_t table_stride = 0;
  int block_size = kContiguousBlock;
  PARLEY_HD bool paged() const { return table != nullptr; }
  // The block holding key j of sequence b, in units of stride_batch.
  PARLEY_HD int64_t block_index(int b, int j) const {
    return paged() ? static_cast<int64_t>(table[static_cast<int64_t>(b) * table_stride + j / block_size])
                   : static_cast<int64_t>(b);
  }
  // Element offset of key j's row of sequence b (without the head offset).
  PARLEY_HD int64_t row_offset(int b, int j, int64_t stride_batch, int64_t stride_seq) const {
    return block_index(b, j) * stride_batch + static_cast<int64_t>(j % block_size) * stride_seq;
  }
  // Whether every key tile [t*bn, (t+1)*bn) lies in one block.
  PARLEY_HD bool tiles_in_one_block(int bn) const { return block_size % bn == 0; }
};

// Whether keys [j0, j1) lie in a single page.
PARLEY_HD inline bool tile_in_one_page(int j0, int j1, int page_size) {
  return j1 <= j0 || j0 / page_size == (j1 - 1) / page_size;
}

}  // namespace parley::cuda::attn

#endif  // PARLEY_PLUGINS_CUDA_ATTENTION_TILE_MATH_CUH
