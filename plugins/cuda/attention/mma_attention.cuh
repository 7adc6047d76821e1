// FlashAttention-2 style attention on tensor cores, prefill and decode (fp16
// / bf16 K and V, fp32 accumulation and softmax): a CTA of 4 warps owns 64
// packed query rows of one (sequence, KV head) (GQA packing, below); each
// warp owns 16 of them. K and V stream through shared
// memory in tiles of 16 keys; per tile a warp computes S = Q K^T with
// mma.sync m16n8k16 (Q fragments loaded once with ldmatrix.x4, K with
// ldmatrix.x2), masks and runs the online softmax on the S fragments in
// registers (row statistics reduced over the 4 lanes that share a row), turns
// P into A fragments without leaving registers (the C layout of two 16x8
// tiles is the A layout of one 16x16 tile), and accumulates O += P V (V with
// ldmatrix.x2.trans). Semantics as parley_attention_args; lse returned.
//
// Shared memory holds rows of D 16-bit values as 16-byte chunks, chunk c of
// row r stored at chunk c ^ (r % 8) (XOR swizzle): the 8 rows an ldmatrix
// phase reads then fall in 8 different bank groups (no conflicts; the
// emulator counts them). With kAsync, 16-bit Q and the cached K and V reach
// shared memory through cp.async (16-byte copies, zero-filled past the ends) and the K/V tiles are
// double-buffered: tile i+1 is in flight while tile i is computed. Without it
// (16-byte alignment not given), plain loads fill the same layout.
// K/V come from a contiguous cache or, through a block table, from a paged
// one (KvBlocks of tile_math.cuh: one table lookup per tile of 16 keys when
// the block size is a multiple of 16, else one per key). With a sliding
// window (plugin ABI 1.4) the CTA starts at the tile holding its first row's
// first visible key (earlier tiles are never loaded) and visible() masks the
// partial tiles.
// GQA packing: a CTA owns 64 packed rows of one (sequence, KV head), row r
// being query r / G of head g * G + r % G (DecodePack, as the F32 kernel), so
// a decode step of G query heads sharing a KV head loads each K/V tile once
// for all of them instead of once per head (and fills G of the 64 rows, not 1).
// Split-KV (grid.y = splits): each CTA takes the tiles of one split of the
// keys its rows see and writes unnormalised partials that
// simt_attention_combine merges, so a long single-query decode spreads over
// the SMs. Fused KV append: the q_len newest keys of each sequence are read
// from k_new / v_new, and one CTA per (sequence, KV head) writes them into the
// cache (converted to its 16-bit type, round to nearest even).
// Query element QT: 16-bit (the inputs' type end to end) or fp32 (a model
// computing in F32 over an F16 KV cache, plugin ABI 1.2 kv_dtype): fp32
// queries are rounded to the cache's 16-bit type as they are staged (the
// tensor cores multiply 16-bit values), the output and appended rows are fp32.
// Not yet: deeper pipelines and warp specialisation for Hopper.
// The body is a template over the execution context (simt_device.cuh on a
// GPU, tests/simt's emulator on the CPU).
#ifndef PARLEY_PLUGINS_CUDA_ATTENTION_MMA_ATTENTION_CUH
#define PARLEY_PLUGINS_CUDA_ATTENTION_MMA_ATTENTION_CUH

#include <stdint.h>

#include "simt_attention.cuh"

// Full unrolling keeps the fragment arrays in registers (nvcc does not
// always unroll loops around inline asm on its own).
#if defined(__CUDACC__)
#define PARLEY_UNROLL _Pragma("unroll")
#else
#define PARLEY_UNROLL
#endif

namespace parley::cuda::attn {

constexpr int kMmaWarps = 4;
constexpr int kMmaThreads = kMmaWarps * 32;
constexpr int kMmaRows = kMmaWarps * 16;  // query rows per CTA
constexpr int kMmaKeys = 16;              // keys per K/V tile

// Shared memory in 32-bit words: Q [64][D/2], then two stages of K [16][D/2]
// and V [16][D/2].
template <int D>
PARLEY_HD constexpr int mma_smem_words() {
  return (kMmaRows + 4 * kMmaKeys) * D / 2;
}

// Word index of 16-byte chunk `chunk` of row `row` (rows of D/8 chunks).
template <int D, bool kSwizzle>
PARLEY_HD inline int swizzled_word(int row, int chunk) {
  return row * (D / 2) + (kSwizzle ? (chunk ^ (row & 7)) : chunk) * 4;
}

struct MmaParams {
  const void *q;          // QT: fp16 / bf16 bits, or fp32
  const uint16_t *k, *v;  // the cache: fp16 or bf16 bits
  void *out;              // QT
  float *lse;             // optional [batch, heads, q_len]
  int64_t q_sb, q_sh, q_ss, k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, o_sb, o_sh, o_ss;
  int batch, heads, kv_heads, q_len, kv_len;
  float scale;
  uint32_t mask;
  const int32_t *key_lengths;
  int row_tiles;  // ceil(G * q_len / kMmaRows): packed rows of one (sequence, KV head)
  // K/V layout: contiguous (default) or paged (plugin ABI 1.3; k_sb / v_sb
  // are then the strides between blocks and kv_len the most keys a table row
  // addresses, the clamp of the key lengths read on the device).
  KvBlocks kv;
  int window;  // sliding window (ABI 1.4), 0: none; as SimtParams::window
  // Split-KV: grid.y = splits. Split s of a CTA covers the keys
  // split_range(s, splits, L - base, align) + base, base the 16-key tile of
  // its first row's first key; align must be a multiple of kMmaKeys, so no
  // tile straddles two splits. With splits > 1 every packed row writes, per
  // split, m and l (base-2 units) and its unnormalised accumulator [D] at
  // slot global_row * splits + split (SimtParams' layout), for
  // simt_attention_combine; out and lse are then written by the combine.
  int splits = 1;
  int align = 64;
  float *part_m = nullptr, *part_l = nullptr, *part_acc = nullptr;
  // Fused KV append (ABI 1.1): the q_len newest rows, QT elements
  // [batch, q_len, kv_heads, D] through the strides (as SimtParams).
  const void *k_new = nullptr, *v_new = nullptr;
  int64_t kn_sb = 0, kn_sh = 0, kn_ss = 0, vn_sb = 0, vn_sh = 0, vn_ss = 0;
};

// The fields simt_attention_combine reads, for merging the tensor-core
// kernel's splits (its out may hold 16-bit values: the combine's OutT).
inline SimtParams combine_params(const MmaParams &m) {
  SimtParams c{};
  c.out = static_cast<float *>(m.out), c.lse = m.lse;
  c.o_sb = m.o_sb, c.o_sh = m.o_sh, c.o_ss = m.o_ss;
  c.batch = m.batch, c.heads = m.heads, c.kv_heads = m.kv_heads, c.q_len = m.q_len, c.kv_len = m.kv_len;
  c.splits = m.splits, c.align = m.align;
  c.part_m = m.part_m, c.part_l = m.part_l, c.part_acc = m.part_acc;
  return c;
}

// Packed row tiles of one (sequence, KV head): G * q_len rows, kMmaRows a CTA.
inline int mma_row_tiles(int heads, int kv_heads, int q_len) {
  return ceil_div((heads / kv_heads) * q_len, kMmaRows);
}

PARLEY_HD inline uint32_t pack2(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

// Element i of a row as 16-bit bits: copied, or an fp32 value rounded.
PARLEY_HD inline uint16_t bits16(const uint16_t *row, int i, bool) {
  return row[i];
}
PARLEY_HD inline uint16_t bits16(const float *row, int i, bool bf16) {
  return float_to_bits(row[i], bf16);
}
PARLEY_HD inline void store_out(uint16_t *row, int i, float x, bool bf16) {
  row[i] = float_to_bits(x, bf16);
}
PARLEY_HD inline void store_out(float *row, int i, float x, bool) {
  row[i] = x;
}

// Copies chunk `chunk` (8 elements) of row `row` of a [rows][D] matrix
// (row_ok: inside the tensor, else zeros) into shared memory at `base`
// (words) as 16-bit values: by cp.async for 16-bit sources when kAsync, else
// by plain stores (fp32 sources are rounded on the way).
template <class Ctx, int D, bool kSwizzle, bool kAsync, bool kBf16, class ST>
PARLEY_KERNEL_BODY inline void stage_chunk(Ctx &ctx, int base, int row, int chunk, const ST *src_row, bool row_ok) {
  const int w = base + swizzled_word<D, kSwizzle>(row, chunk);
  if (kAsync && sizeof(ST) == 2) {
    ctx.cp_async16(static_cast<size_t>(w), row_ok ? src_row + chunk * 8 : nullptr, !row_ok);
  } else {
    PARLEY_UNROLL
    for (int i = 0; i < 4; ++i)
      ctx.smem_store_u32(static_cast<size_t>(w + i), row_ok ? pack2(bits16(src_row, chunk * 8 + 2 * i, kBf16),
                                                                    bits16(src_row, chunk * 8 + 2 * i + 1, kBf16))
                                                            : 0u);
  }
}

// Where the K and V rows of one (sequence, KV head) live: kp / vp point at
// the head (g * stride_head added), the block layout does the rest; keys from
// new_begin are the launch's appended rows, read from kn / vn (QT).
template <class QT>
struct KvSource {
  const uint16_t *kp, *vp;
  int64_t k_sb, k_ss, v_sb, v_ss;
  KvBlocks kv;
  int b;
  const QT *kn, *vn;  // at the (sequence, KV head); NULL: no append
  int64_t kn_ss, vn_ss;
  int new_begin;  // first key read from kn / vn (key_len without an append)
};

// K/V tile `tile` (keys tile*16 ..) into stage `stage` of shared memory. The
// tile's block is resolved once when the tile lies in one block (contiguous,
// or a block size that is a multiple of 16), else once per key row.
template <class Ctx, int D, bool kSwizzle, bool kAsync, bool kBf16, class QT>
PARLEY_KERNEL_BODY inline void stage_kv(Ctx &ctx, int tid, int tile, int stage, const KvSource<QT> &src, int key_len) {
  constexpr int kChunks = D / 8, kKvWords = kMmaKeys * D / 2, kQWords = kMmaRows * D / 2;
  const int j0 = tile * kMmaKeys, kbase = kQWords + stage * 2 * kKvWords, vbase = kbase + kKvWords;
  const bool one_block = src.kv.tiles_in_one_block(kMmaKeys);
  int64_t tile_blk = 0;
  if (one_block && j0 < key_len && j0 < src.new_begin) tile_blk = src.kv.block_index(src.b, j0);
  for (int idx = tid; idx < 2 * kMmaKeys * kChunks; idx += kMmaThreads) {
    const bool is_v = idx >= kMmaKeys * kChunks;
    const int i = is_v ? idx - kMmaKeys * kChunks : idx;
    const int r = i / kChunks, ch = i % kChunks, j = j0 + r;
    const int base = is_v ? vbase : kbase;
    if (j >= src.new_begin && j < key_len) {  // appended by this launch: not in the cache yet
      const QT *row = is_v ? src.vn + (j - src.new_begin) * src.vn_ss : src.kn + (j - src.new_begin) * src.kn_ss;
      stage_chunk<Ctx, D, kSwizzle, false, kBf16>(ctx, base, r, ch, row, true);
      continue;
    }
    const bool ok = j < key_len;
    const uint16_t *row = nullptr;
    if (ok) {
      const int64_t blk = one_block ? tile_blk : src.kv.block_index(src.b, j);
      const int64_t in_blk = j % src.kv.block_size;
      row = is_v ? src.vp + blk * src.v_sb + in_blk * src.v_ss : src.kp + blk * src.k_sb + in_blk * src.k_ss;
    }
    stage_chunk<Ctx, D, kSwizzle, kAsync, kBf16>(ctx, base, r, ch, row, ok);
  }
}

// grid.x = batch * kv_heads * row_tiles, grid.y = splits; kMmaThreads
// threads; mma_smem_words<D>() words. QT: the element of q, out, k_new and
// v_new (uint16_t: the cache's type; float: rounded to it when staged).
template <class Ctx, int D, bool kBf16, bool kAsync, bool kSwizzle = true, class QT = uint16_t>
PARLEY_KERNEL_BODY void mma_attention_prefill(Ctx &ctx, const MmaParams &p) {
  static_assert(D % 64 == 0, "head_dim must be a multiple of 64 (8 chunks per row for the swizzle)");
  constexpr int kRowWords = D / 2, kChunks = D / 8;
  constexpr int kQWords = kMmaRows * kRowWords, kKvWords = kMmaKeys * kRowWords;
  constexpr int kSteps = D / 16;    // k-steps of Q K^T
  constexpr int kOutTiles = D / 8;  // n-tiles of O
  const int tid = ctx.thread(), warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane % 4;
  const int rt = ctx.block_x() % p.row_tiles;
  const int bkv = ctx.block_x() / p.row_tiles;
  const int kvh = bkv % p.kv_heads, b = bkv / p.kv_heads;
  const int split = ctx.block_y();
  const DecodePack pack{p.heads / p.kv_heads, p.q_len};
  const int rows = pack.rows();
  MaskInfo mi = make_mask(p.mask, p.q_len, p.kv_len, p.key_lengths, b, p.window);
  mi.key_len = mi.key_len < 0 ? 0 : (mi.key_len > p.kv_len ? p.kv_len : mi.key_len);
  const int r0 = rt * kMmaRows;
  const QT *qp = static_cast<const QT *>(p.q) + b * p.q_sb;
  const int new_begin = p.k_new ? mi.key_len - p.q_len : mi.key_len;  // first key read from k_new / v_new
  const QT *kn = p.k_new ? static_cast<const QT *>(p.k_new) + b * p.kn_sb + kvh * p.kn_sh : nullptr;
  const QT *vn = p.k_new ? static_cast<const QT *>(p.v_new) + b * p.vn_sb + kvh * p.vn_sh : nullptr;
  const KvSource<QT> kvs{
      p.k + kvh * p.k_sh, p.v + kvh * p.v_sh, p.k_sb, p.k_ss, p.v_sb, p.v_ss, p.kv, b, kn, vn, p.kn_ss, p.vn_ss,
      new_begin};

  if (p.k_new && rt == 0 && split == 0) {  // the append, once per (sequence, KV head)
    // No CTA of this launch reads these cache rows (they come from k_new / v_new), so
    // the writes race with nothing.
    uint16_t *kc = const_cast<uint16_t *>(p.k) + kvh * p.k_sh, *vc = const_cast<uint16_t *>(p.v) + kvh * p.v_sh;
    for (int idx = tid; idx < p.q_len * D; idx += kMmaThreads) {
      const int i = idx / D, d = idx % D, pos = new_begin + i;
      if (pos < 0) continue;  // a sequence shorter than the chunk
      const int64_t blk = p.kv.block_index(b, pos), in_blk = pos % p.kv.block_size;
      kc[blk * p.k_sb + in_blk * p.k_ss + d] = bits16(kn + i * p.kn_ss, d, kBf16);
      vc[blk * p.v_sb + in_blk * p.v_ss + d] = bits16(vn + i * p.vn_ss, d, kBf16);
    }
  }

  // Keys the CTA's rows see: [begin of its first query, end of its last) (both
  // non-decreasing in the packed row), then this split's share of them.
  const int last_row = r0 + kMmaRows - 1 < rows - 1 ? r0 + kMmaRows - 1 : rows - 1;
  const int key_end = visible_end(mi, pack.query_of(last_row));
  const int cta_begin = visible_begin(mi, pack.query_of(r0));
  const int base = cta_begin / kMmaKeys * kMmaKeys;
  KeyRange kr = split_range(split, p.splits, mi.key_len - base, p.align);
  kr.begin += base, kr.end += base;
  const int first_tile = (kr.begin > cta_begin ? kr.begin : cta_begin) / kMmaKeys;
  const int tiles = ceil_div(key_end < kr.end ? key_end : kr.end, kMmaKeys);

  // Q (rows past the packed rows zero-filled), then the first K/V tile.
  for (int idx = tid; idx < kMmaRows * kChunks; idx += kMmaThreads) {
    const int r = idx / kChunks, ch = idx % kChunks, pr = r0 + r;
    const bool ok = pr < rows;
    const QT *row = ok ? qp + pack.head_of(kvh, pr) * p.q_sh + pack.query_of(pr) * p.q_ss : nullptr;
    stage_chunk<Ctx, D, kSwizzle, kAsync, kBf16>(ctx, 0, r, ch, row, ok);
  }
  if (tiles > first_tile) stage_kv<Ctx, D, kSwizzle, kAsync, kBf16>(ctx, tid, first_tile, 0, kvs, mi.key_len);
  if (kAsync) {
    ctx.cp_async_commit();
    ctx.cp_async_wait(0);
  }
  ctx.sync();
  // This warp's Q fragments for every k-step (rows warp*16 .. +15).
  uint32_t qf[kSteps][4];
  PARLEY_UNROLL
  for (int s = 0; s < kSteps; ++s) {
    const int row = warp * 16 + lane % 16, chunk = s * 2 + lane / 16;
    ctx.ldmatrix(qf[s], 4, false, static_cast<size_t>(swizzled_word<D, kSwizzle>(row, chunk) * 4));
  }

  // Rows g and g+8 of this warp (packed rows prow[], queries qi[]; a row past
  // the packed rows gets query q_len, which sees no key): online softmax
  // state (per-lane partial sums).
  const int prow[2] = {r0 + warp * 16 + g, r0 + warp * 16 + g + 8};
  const int qi[2] = {prow[0] < rows ? pack.query_of(prow[0]) : p.q_len,
                     prow[1] < rows ? pack.query_of(prow[1]) : p.q_len};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[kOutTiles][4];
  PARLEY_UNROLL
  for (int j = 0; j < kOutTiles; ++j) PARLEY_UNROLL
  for (int e = 0; e < 4; ++e) o[j][e] = 0.f;
  const float c = score_factor<Base2>(p.scale);

  for (int tile = first_tile; tile < tiles; ++tile) {
    const int stage = (tile - first_tile) & 1, j0 = tile * kMmaKeys;
    if (tile > first_tile) {  // tile `tile` was prefetched (async) or is loaded now
      if (kAsync) {
        ctx.cp_async_wait(0);
      } else {
        stage_kv<Ctx, D, kSwizzle, kAsync, kBf16>(ctx, tid, tile, stage, kvs, mi.key_len);
      }
      ctx.sync();
    }
    if (kAsync && tile + 1 < tiles) {  // prefetch the next tile into the other stage
      stage_kv<Ctx, D, kSwizzle, kAsync, kBf16>(ctx, tid, tile + 1, stage ^ 1, kvs, mi.key_len);
      ctx.cp_async_commit();
    }
    const int kbase = kQWords + stage * 2 * kKvWords, vbase = kbase + kKvWords;

    // S = Q K^T for keys j0..j0+15: two n-tiles of 8 keys.
    float s[2][4];
    PARLEY_UNROLL
    for (int n = 0; n < 2; ++n) {
      PARLEY_UNROLL
      for (int e = 0; e < 4; ++e) s[n][e] = 0.f;
      PARLEY_UNROLL
      for (int st = 0; st < kSteps; ++st) {
        uint32_t kf[2];
        const int key = n * 8 + lane % 8, chunk = st * 2 + (lane / 8) % 2;
        ctx.ldmatrix(kf, 2, false, static_cast<size_t>((kbase + swizzled_word<D, kSwizzle>(key, chunk)) * 4));
        float acc[4];
        ctx.mma_m16n8k16(acc, qf[st], kf, s[n], kBf16);
        PARLEY_UNROLL
        for (int e = 0; e < 4; ++e) s[n][e] = acc[e];
      }
    }
    // Mask, then the online softmax per row (row r uses elements 2r, 2r+1 of each n-tile).
    float tile_max[2] = {-INFINITY, -INFINITY};
    PARLEY_UNROLL
    for (int n = 0; n < 2; ++n) PARLEY_UNROLL
    for (int e = 0; e < 4; ++e) {
      const int r = e / 2, key = j0 + n * 8 + t * 2 + (e & 1);
      if (!visible(mi, qi[r], key)) s[n][e] = -INFINITY;
      tile_max[r] = fmaxf(tile_max[r], s[n][e]);
    }
    float alpha[2];
    PARLEY_UNROLL
    for (int r = 0; r < 2; ++r) {
      PARLEY_UNROLL
      for (int off = 1; off < 4; off <<= 1) tile_max[r] = fmaxf(tile_max[r], ctx.shfl_xor(tile_max[r], off));
      RowState st{m[r], l[r]};
      alpha[r] = online_begin_tile<Base2>(st, tile_max[r], c);
      m[r] = st.m;
      l[r] = st.l;
    }
    uint16_t ph[2][4];
    PARLEY_UNROLL
    for (int n = 0; n < 2; ++n) PARLEY_UNROLL
    for (int e = 0; e < 4; ++e) {
      const int r = e / 2;
      const float pr = online_prob<Base2>(s[n][e], c, m[r]);
      // The sum uses P as the P.V MMA sees it (rounded to 16 bits).
      ph[n][e] = float_to_bits(pr, kBf16);
      l[r] += kBf16 ? bf16_bits_to_float(ph[n][e]) : half_to_float(ph[n][e]);
    }
    // C layout of S n-tiles 0 and 1 = A layout of P (16 rows x 16 keys).
    const uint32_t pf[4] = {pack2(ph[0][0], ph[0][1]), pack2(ph[0][2], ph[0][3]), pack2(ph[1][0], ph[1][1]),
                            pack2(ph[1][2], ph[1][3])};
    // O = alpha * O + P V, per 8-wide slice of the head dimension.
    PARLEY_UNROLL
    for (int j = 0; j < kOutTiles; ++j) {
      PARLEY_UNROLL
      for (int e = 0; e < 4; ++e) o[j][e] *= alpha[e / 2];
      uint32_t vf[2];
      const int key = lane % 16;
      ctx.ldmatrix(vf, 2, true, static_cast<size_t>((vbase + swizzled_word<D, kSwizzle>(key, j)) * 4));
      float acc[4];
      ctx.mma_m16n8k16(acc, pf, vf, o[j], kBf16);
      PARLEY_UNROLL
      for (int e = 0; e < 4; ++e) o[j][e] = acc[e];
    }
    ctx.sync();  // every warp is done with this stage before it is refilled
  }

  // Row sums over the 4 lanes of each row, then normalise and store (or the
  // split's partials: the combine normalises).
  PARLEY_UNROLL
  for (int r = 0; r < 2; ++r) PARLEY_UNROLL
  for (int off = 1; off < 4; off <<= 1) l[r] += ctx.shfl_xor(l[r], off);
  PARLEY_UNROLL
  for (int r = 0; r < 2; ++r) {
    if (prow[r] >= rows) continue;
    if (p.splits > 1) {
      const int64_t slot = ((static_cast<int64_t>(b) * p.kv_heads + kvh) * rows + prow[r]) * p.splits + split;
      float *acc = p.part_acc + slot * D;
      PARLEY_UNROLL
      for (int j = 0; j < kOutTiles; ++j) PARLEY_UNROLL
      for (int e = 0; e < 2; ++e) acc[j * 8 + t * 2 + e] = o[j][r * 2 + e];
      if (t == 0) p.part_m[slot] = m[r], p.part_l[slot] = l[r];
      continue;
    }
    const int h = pack.head_of(kvh, prow[r]);
    const RowResult res = row_finalize<Base2>(RowState{m[r], l[r]});
    QT *op = static_cast<QT *>(p.out) + b * p.o_sb + h * p.o_sh + qi[r] * p.o_ss;
    PARLEY_UNROLL
    for (int j = 0; j < kOutTiles; ++j) PARLEY_UNROLL
    for (int e = 0; e < 2; ++e) store_out(op, j * 8 + t * 2 + e, o[j][r * 2 + e] * res.inv_l, kBf16);
    if (p.lse && t == 0) p.lse[(static_cast<int64_t>(b) * p.heads + h) * p.q_len + qi[r]] = res.lse;
  }
}

}  // namespace parley::cuda::attn

#endif  // PARLEY_PLUGINS_CUDA_ATTENTION_MMA_ATTENTION_CUH
