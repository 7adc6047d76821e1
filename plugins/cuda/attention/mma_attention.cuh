// FlashAttention-2 style prefill on tensor cores (fp16 / bf16 inputs, fp32
// accumulation and softmax): a CTA of 4 warps owns 64 query rows of one
// (sequence, head); each warp owns 16 of them. K and V stream through shared
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
// emulator counts them). With kAsync, Q, K and V reach shared memory through
// cp.async (16-byte copies, zero-filled past the ends) and the K/V tiles are
// double-buffered: tile i+1 is in flight while tile i is computed. Without it
// (16-byte alignment not given), plain loads fill the same layout.
// K/V come from a contiguous cache or, through a block table, from a paged
// one (KvBlocks of tile_math.cuh: one table lookup per tile of 16 keys when
// the block size is a multiple of 16, else one per key). With a sliding
// window (plugin ABI 1.4) the CTA starts at the tile holding its first row's
// first visible key (earlier tiles are never loaded) and visible() masks the
// partial tiles.
// Not yet: GQA packing of heads in a CTA, split-KV for long single-query
// decode (the F32 path has both), KV append in the launch.
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
  const uint16_t *q, *k, *v;  // fp16 or bf16 bits
  uint16_t *out;              // same type as the inputs
  float *lse;                 // optional [batch, heads, q_len]
  int64_t q_sb, q_sh, q_ss, k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, o_sb, o_sh, o_ss;
  int batch, heads, kv_heads, q_len, kv_len;
  float scale;
  uint32_t mask;
  const int32_t *key_lengths;
  int row_tiles;  // ceil(q_len / kMmaRows)
  // K/V layout: contiguous (default) or paged (plugin ABI 1.3; k_sb / v_sb
  // are then the strides between blocks and kv_len the most keys a table row
  // addresses, the clamp of the key lengths read on the device).
  KvBlocks kv;
  int window;  // sliding window (ABI 1.4), 0: none; as SimtParams::window
};

PARLEY_HD inline uint32_t pack2(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

// float -> fp16 / bf16 bits, round to nearest even (portable; finite inputs).
PARLEY_HD inline uint16_t float_to_bits(float f, bool bf16) {
  union {
    float f;
    uint32_t u;
  } v{f};
  const uint32_t x = v.u;
  if (bf16) {
    if ((x & 0x7F800000u) == 0x7F800000u) return static_cast<uint16_t>(x >> 16);  // inf / nan
    return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
  }
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int exp = static_cast<int>((x >> 23) & 0xFF) - 127 + 15;
  uint32_t mant = x & 0x7FFFFFu;
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7C00u);
  if (exp <= 0) {  // subnormal or zero
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const int shift = 14 - exp;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}

// Copies row `row` of a [rows][D] 16-bit matrix (row_ok: inside the tensor)
// into shared memory at `base` (words), chunk `chunk` only.
template <class Ctx, int D, bool kSwizzle, bool kAsync>
PARLEY_KERNEL_BODY inline void stage_chunk(Ctx &ctx, int base, int row, int chunk, const uint16_t *src_row,
                                           bool row_ok) {
  const int w = base + swizzled_word<D, kSwizzle>(row, chunk);
  if (kAsync) {
    ctx.cp_async16(static_cast<size_t>(w), row_ok ? src_row + chunk * 8 : nullptr, !row_ok);
  } else {
    PARLEY_UNROLL
    for (int i = 0; i < 4; ++i)
      ctx.smem_store_u32(static_cast<size_t>(w + i),
                         row_ok ? pack2(src_row[chunk * 8 + 2 * i], src_row[chunk * 8 + 2 * i + 1]) : 0u);
  }
}

// Where the K and V rows of one (sequence, KV head) live: kp / vp point at
// the head (g * stride_head added), the block layout does the rest.
struct KvSource {
  const uint16_t *kp, *vp;
  int64_t k_sb, k_ss, v_sb, v_ss;
  KvBlocks kv;
  int b;
};

// K/V tile `tile` (keys tile*16 ..) into stage `stage` of shared memory. The
// tile's block is resolved once when the tile lies in one block (contiguous,
// or a block size that is a multiple of 16), else once per key row.
template <class Ctx, int D, bool kSwizzle, bool kAsync>
PARLEY_KERNEL_BODY inline void stage_kv(Ctx &ctx, int tid, int tile, int stage, const KvSource &src, int key_len) {
  constexpr int kChunks = D / 8, kKvWords = kMmaKeys * D / 2, kQWords = kMmaRows * D / 2;
  const int j0 = tile * kMmaKeys, kbase = kQWords + stage * 2 * kKvWords, vbase = kbase + kKvWords;
  const bool one_block = src.kv.tiles_in_one_block(kMmaKeys);
  int64_t tile_blk = 0;
  if (one_block && j0 < key_len) tile_blk = src.kv.block_index(src.b, j0);
  for (int idx = tid; idx < 2 * kMmaKeys * kChunks; idx += kMmaThreads) {
    const bool is_v = idx >= kMmaKeys * kChunks;
    const int i = is_v ? idx - kMmaKeys * kChunks : idx;
    const int r = i / kChunks, ch = i % kChunks, j = j0 + r;
    const bool ok = j < key_len;
    const uint16_t *row = nullptr;
    if (ok) {
      const int64_t blk = one_block ? tile_blk : src.kv.block_index(src.b, j);
      const int64_t in_blk = j % src.kv.block_size;
      row = is_v ? src.vp + blk * src.v_sb + in_blk * src.v_ss : src.kp + blk * src.k_sb + in_blk * src.k_ss;
    }
    stage_chunk<Ctx, D, kSwizzle, kAsync>(ctx, is_v ? vbase : kbase, r, ch, row, ok);
  }
}

// grid.x = batch * heads * row_tiles; kMmaThreads threads; mma_smem_words<D>() words.
template <class Ctx, int D, bool kBf16, bool kAsync, bool kSwizzle = true>
PARLEY_KERNEL_BODY void mma_attention_prefill(Ctx &ctx, const MmaParams &p) {
  static_assert(D % 64 == 0, "head_dim must be a multiple of 64 (8 chunks per row for the swizzle)");
  constexpr int kRowWords = D / 2, kChunks = D / 8;
  constexpr int kQWords = kMmaRows * kRowWords, kKvWords = kMmaKeys * kRowWords;
  constexpr int kSteps = D / 16;    // k-steps of Q K^T
  constexpr int kOutTiles = D / 8;  // n-tiles of O
  const int tid = ctx.thread(), warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane % 4;
  const int rt = ctx.block_x() % p.row_tiles;
  const int bh = ctx.block_x() / p.row_tiles;
  const int h = bh % p.heads, b = bh / p.heads;
  const int kvh = kv_head_of(h, p.heads, p.kv_heads);
  MaskInfo mi = make_mask(p.mask, p.q_len, p.kv_len, p.key_lengths, b, p.window);
  mi.key_len = mi.key_len < 0 ? 0 : (mi.key_len > p.kv_len ? p.kv_len : mi.key_len);
  const int q0 = rt * kMmaRows;
  const uint16_t *qp = p.q + b * p.q_sb + h * p.q_sh;
  const KvSource kvs{p.k + kvh * p.k_sh, p.v + kvh * p.v_sh, p.k_sb, p.k_ss, p.v_sb, p.v_ss, p.kv, b};
  // Keys the CTA's last row can see (the causal bound is non-decreasing).
  const int last_row = q0 + kMmaRows - 1 < p.q_len - 1 ? q0 + kMmaRows - 1 : p.q_len - 1;
  const int key_end = visible_end(mi, last_row);
  const int tiles = ceil_div(key_end, kMmaKeys);
  // ... and none before the first row's window (the begin is non-decreasing too).
  const int first_tile = visible_begin(mi, q0) / kMmaKeys;

  // Q (rows past q_len zero-filled), then the first K/V tile.
  for (int idx = tid; idx < kMmaRows * kChunks; idx += kMmaThreads) {
    const int r = idx / kChunks, ch = idx % kChunks;
    const bool ok = q0 + r < p.q_len;
    stage_chunk<Ctx, D, kSwizzle, kAsync>(ctx, 0, r, ch, ok ? qp + (q0 + r) * p.q_ss : nullptr, ok);
  }
  if (tiles > first_tile) stage_kv<Ctx, D, kSwizzle, kAsync>(ctx, tid, first_tile, 0, kvs, mi.key_len);
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

  // Rows g and g+8 of this warp: online softmax state (per-lane partial sums).
  const int qi[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
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
        stage_kv<Ctx, D, kSwizzle, kAsync>(ctx, tid, tile, stage, kvs, mi.key_len);
      }
      ctx.sync();
    }
    if (kAsync && tile + 1 < tiles) {  // prefetch the next tile into the other stage
      stage_kv<Ctx, D, kSwizzle, kAsync>(ctx, tid, tile + 1, stage ^ 1, kvs, mi.key_len);
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

  // Row sums over the 4 lanes of each row, then normalise and store.
  PARLEY_UNROLL
  for (int r = 0; r < 2; ++r) PARLEY_UNROLL
  for (int off = 1; off < 4; off <<= 1) l[r] += ctx.shfl_xor(l[r], off);
  PARLEY_UNROLL
  for (int r = 0; r < 2; ++r) {
    if (qi[r] >= p.q_len) continue;
    const RowResult res = row_finalize<Base2>(RowState{m[r], l[r]});
    uint16_t *op = p.out + b * p.o_sb + h * p.o_sh + qi[r] * p.o_ss;
    PARLEY_UNROLL
    for (int j = 0; j < kOutTiles; ++j) PARLEY_UNROLL
    for (int e = 0; e < 2; ++e) op[j * 8 + t * 2 + e] = float_to_bits(o[j][r * 2 + e] * res.inv_l, kBf16);
    if (p.lse && t == 0) p.lse[(static_cast<int64_t>(b) * p.heads + h) * p.q_len + qi[r]] = res.lse;
  }
}

}  // namespace parley::cuda::attn

#endif  // PARLEY_PLUGINS_CUDA_ATTENTION_MMA_ATTENTION_CUH
