// Fused attention on CUDA cores (fp32 arithmetic, fp32 or fp16 inputs, and
// fp32 inputs over an int8 KV cache with a scale per row):
// split-KV flash attention with GQA row packing, the combine of splits, and
// the optional probabilities pass. This is the plugin's general attention
// path (any q_len, every mask kind, head_dim 64 or 128); the tensor-core
// FlashAttention-2 prefill kernel is separate work (README.md).
//
// The kernel bodies are templates over an execution context `Ctx` that
// provides thread/block indices, __syncthreads, warp shuffles and shared
// memory. plugins/cuda/attention.cu instantiates them with DeviceCtx
// (simt_device.cuh: the CUDA intrinsics); tests/simt instantiates them with
// the SIMT emulator's context and runs them on the CPU, one CTA at a time,
// with shared memory poisoned and races reported. Same source, both places.
//
// Layout and semantics are those of parley_attention_args (plugin.h),
// including the paged KV cache of plugin ABI 1.3 (SimtParams::kv) and the
// sliding window of ABI 1.4 (SimtParams::window): the keys before the window
// of a CTA's first row are never read, the splits share out the rest, and
// visible() masks the keys of the partial ranges per row.
#ifndef PARLEY_PLUGINS_CUDA_ATTENTION_SIMT_ATTENTION_CUH
#define PARLEY_PLUGINS_CUDA_ATTENTION_SIMT_ATTENTION_CUH

#include <stdint.h>

#include "tile_math.cuh"

#ifndef PARLEY_KERNEL_BODY
#if defined(__CUDACC__)
#define PARLEY_KERNEL_BODY __device__
#else
#define PARLEY_KERNEL_BODY
#endif
#endif

namespace parley::cuda::attn {

constexpr int kSimtThreads = 128;  // 4 warps per CTA
constexpr int kSimtWarps = kSimtThreads / 32;
constexpr int kSimtRowsPerWarp = 4;
constexpr int kSimtRows = kSimtWarps * kSimtRowsPerWarp;  // packed query rows per CTA

// IEEE half -> float, portable (device code may also use __half2float).
PARLEY_HD inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
  if (exp == 0x1Fu) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
  }
  union {
    uint32_t u;
    float f;
  } v{bits};
  return v.f;
}

// bfloat16 bits -> float (exact).
PARLEY_HD inline float bf16_bits_to_float(uint16_t h) {
  union {
    uint32_t u;
    float f;
  } v{static_cast<uint32_t>(h) << 16};
  return v.f;
}

// float -> fp16 / bf16 bits, round to nearest even (portable; infinities
// and NaN kept, overflow to infinity as IEEE rounding does).
PARLEY_HD inline uint16_t float_to_bits(float f, bool bf16) {
  union {
    float f;
    uint32_t u;
  } v{f};
  const uint32_t x = v.u;
  if (bf16) {
    if ((x & 0x7F800000u) == 0x7F800000u)  // inf stays inf, NaN stays NaN (quiet)
      return static_cast<uint16_t>((x >> 16) | ((x & 0x7FFFFFu) ? 0x40u : 0u));
    return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
  }
  const uint32_t sign = (x >> 16) & 0x8000u;
  if ((x & 0x7F800000u) == 0x7F800000u)  // inf stays inf, NaN stays NaN (quiet)
    return static_cast<uint16_t>(sign | 0x7C00u | ((x & 0x7FFFFFu) ? 0x200u : 0u));
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

template <class T>
PARLEY_HD inline float load_elem(const T *p, int64_t i);
template <>
PARLEY_HD inline float load_elem<float>(const float *p, int64_t i) {
  return p[i];
}
template <>
PARLEY_HD inline float load_elem<uint16_t>(const uint16_t *p, int64_t i) {
  return half_to_float(p[i]);
}

// An int8 cache row (parley_attention_args, kv_dtype I8): value = q * scale,
// written as the cpu plugin's narrow_i8 does: scale = max|x| / 127 in F32,
// q = nearest-even(x / scale) clamped to [-127, 127]; an all-zero row has
// scale 0, a row holding a NaN or an infinity scale NaN (it reads back as
// NaN). The row's D values are spread over a warp, kLaneDims per lane.
struct I8Row {
  float scale;
  bool finite;
};
template <class Ctx, int N>
PARLEY_HD inline I8Row i8_row_scale(Ctx &ctx, const float (&x)[N]) {
  float m = 0.f, bad = 0.f;
  for (int t = 0; t < N; ++t) {
    if (!isfinite(x[t])) bad = 1.f;
    m = fmaxf(m, fabsf(x[t]));
  }
  for (int off = 16; off > 0; off >>= 1) {
    m = fmaxf(m, ctx.shfl_xor(m, off));
    bad = fmaxf(bad, ctx.shfl_xor(bad, off));
  }
  return {m / 127.f, bad == 0.f};
}
PARLEY_HD inline int8_t i8_quantize(float x, const I8Row &r) {
  if (!r.finite || !(r.scale > 0.f)) return 0;
  return static_cast<int8_t>(fminf(127.f, fmaxf(-127.f, rintf(x / r.scale))));
}
PARLEY_HD inline float i8_stored_scale(const I8Row &r) {
  return r.finite ? r.scale : NAN;
}

// Everything a launch needs, strides in elements (as parley_attention_args).
struct SimtParams {
  const void *q, *k, *v;
  float *out;  // fp32 output (the combine may also write 16-bit outputs here)
  float *lse;  // optional, [batch, heads, q_len]
  int64_t q_sb, q_sh, q_ss, k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, o_sb, o_sh, o_ss;
  int batch, heads, kv_heads, q_len, kv_len;
  float scale;
  uint32_t mask;
  const int32_t *key_lengths;
  int splits;     // >= 1; > 1 writes partials for the combine
  int align;      // key alignment of split bounds
  int row_tiles;  // ceil(G * q_len / kSimtRows)
  // Split partials (splits > 1): per packed row and split, m and l (base-2
  // units) and the unnormalised accumulator [D].
  float *part_m, *part_l, *part_acc;
  // Fused KV append (optional): the q_len newest rows of each sequence,
  // [batch, q_len, kv_heads, D] through the strides. Keys at positions
  // >= key_len - q_len are read from here, and one CTA per (sequence, KV head)
  // writes them into k / v: no CTA of the launch reads those cache rows, so
  // the writes race with nothing.
  const void *k_new, *v_new;
  int64_t kn_sb, kn_sh, kn_ss, vn_sb, vn_sh, vn_ss;
  // K/V layout: contiguous (default) or paged (plugin ABI 1.3: k / v are
  // pools of blocks, k_sb / v_sb the strides between blocks, KEY_PADDING
  // required). kv_len is then the most keys a table row can address
  // (table_stride * block_size): key lengths, read on the device, are
  // clamped to it, so a bad length never reads past the sequence's row of the
  // table. The split kernel and the append are paged-aware; the
  // probabilities pass is not (the op refuses probs with a block table).
  KvBlocks kv;
  // Sliding window (plugin ABI 1.4; tile_math.cuh's MaskInfo): 0 none, else
  // with CAUSAL query i sees keys max(0, i + L - q_len + 1 - window) ..
  // i + L - q_len.
  int window;
  // An int8 cache (the kernel's C = int8_t): one F32 scale per (sequence or
  // block, KV head, position) row, at s_sb / s_sh / s_ss strides (floats).
  float *k_scales, *v_scales;
  int64_t s_sb, s_sh, s_ss;
};

// Packed row index over the whole launch: ((b * kv_heads + g) * G*q_len + r).
PARLEY_HD inline int64_t global_row(const SimtParams &p, int b, int g, int r) {
  const int rows = (p.heads / p.kv_heads) * p.q_len;
  return (static_cast<int64_t>(b) * p.kv_heads + g) * rows + r;
}

// One CTA: kSimtRows packed query rows of one (sequence, KV head) against the
// keys of one split. grid.x = batch * kv_heads * row_tiles, grid.y = splits.
// Shared memory: kSimtRows * D floats (the CTA's queries). T: the element of
// q, k_new and v_new; C: the cache's (T, or int8_t with T = float: the rows
// appended by this launch are read as the cache will hold them).
template <class Ctx, class T, int D, class C = T>
PARLEY_KERNEL_BODY void simt_attention_split(Ctx &ctx, const SimtParams &p) {
  constexpr bool kI8 = sizeof(C) == 1;
  static_assert(!kI8 || sizeof(T) == 4, "an int8 cache is read with fp32 inputs");
  static_assert(D % 32 == 0, "head_dim must be a multiple of 32");
  constexpr int kLaneDims = D / 32;
  const int tid = ctx.thread(), warp = tid / 32, lane = tid % 32;
  const int rt = ctx.block_x() % p.row_tiles;
  const int bg = ctx.block_x() / p.row_tiles;
  const int g = bg % p.kv_heads, b = bg / p.kv_heads;
  const int split = ctx.block_y();
  const DecodePack pack{p.heads / p.kv_heads, p.q_len};
  const int rows = pack.rows();
  const int r0 = rt * kSimtRows;
  MaskInfo mi = make_mask(p.mask, p.q_len, p.kv_len, p.key_lengths, b, p.window);
  // key_lengths live in device memory and cannot be checked by the host:
  // clamp, so that a bad length never reads outside the cache.
  mi.key_len = mi.key_len < 0 ? 0 : (mi.key_len > p.kv_len ? p.kv_len : mi.key_len);
  // With a sliding window no row of this CTA sees a key before its first
  // row's window (visible_begin is non-decreasing): the splits share out
  // [cta_begin, L) only, so the cost follows the window, not the cache.
  const int cta_begin = r0 < rows ? visible_begin(mi, pack.query_of(r0)) : 0;
  KeyRange kr = split_range(split, p.splits, mi.key_len - cta_begin, p.align);
  kr.begin += cta_begin, kr.end += cta_begin;
  const int new_begin = p.k_new ? mi.key_len - p.q_len : mi.key_len;  // first key taken from k_new

  if (p.k_new && rt == 0 && split == 0) {  // the append, once per (sequence, KV head)
    const T *kn = static_cast<const T *>(p.k_new) + b * p.kn_sb + g * p.kn_sh;
    const T *vn = static_cast<const T *>(p.v_new) + b * p.vn_sb + g * p.vn_sh;
    C *kc = static_cast<C *>(const_cast<void *>(p.k)) + g * p.k_sh;
    C *vc = static_cast<C *>(const_cast<void *>(p.v)) + g * p.v_sh;
    // One new row per warp at a time: its block is resolved once, the lanes copy its dims.
    for (int i = warp; i < p.q_len; i += kSimtWarps) {
      const int pos = new_begin + i;
      if (pos < 0) continue;  // uniform per warp (the int8 rows' shuffles need every lane)
      const int64_t blk = p.kv.block_index(b, pos), in_blk = pos % p.kv.block_size;
      C *kd = kc + blk * p.k_sb + in_blk * p.k_ss, *vd = vc + blk * p.v_sb + in_blk * p.v_ss;
      if constexpr (kI8) {
        float kx[kLaneDims], vx[kLaneDims];
        for (int t = 0; t < kLaneDims; ++t) {
          kx[t] = load_elem(kn, i * p.kn_ss + lane + 32 * t);
          vx[t] = load_elem(vn, i * p.vn_ss + lane + 32 * t);
        }
        const I8Row kr8 = i8_row_scale(ctx, kx), vr8 = i8_row_scale(ctx, vx);
        for (int t = 0; t < kLaneDims; ++t) {
          kd[lane + 32 * t] = i8_quantize(kx[t], kr8);
          vd[lane + 32 * t] = i8_quantize(vx[t], vr8);
        }
        if (lane == 0) {
          const int64_t srow = blk * p.s_sb + g * p.s_sh + in_blk * p.s_ss;
          p.k_scales[srow] = i8_stored_scale(kr8);
          p.v_scales[srow] = i8_stored_scale(vr8);
        }
      } else {
        for (int d = lane; d < D; d += 32) {
          kd[d] = kn[i * p.kn_ss + d];
          vd[d] = vn[i * p.vn_ss + d];
        }
      }
    }
  }

  // Stage the CTA's queries in shared memory (rows past the end are zeros).
  const T *q = static_cast<const T *>(p.q);
  for (int idx = tid; idx < kSimtRows * D; idx += kSimtThreads) {
    const int r = r0 + idx / D, d = idx % D;
    float x = 0.f;
    if (r < rows) {
      const int h = pack.head_of(g, r), i = pack.query_of(r);
      x = load_elem(q, b * p.q_sb + h * p.q_sh + i * p.q_ss + d);
    }
    ctx.smem_store(idx, x);
  }
  ctx.sync();

  // Each warp owns kSimtRowsPerWarp rows; lane l holds dims l, l+32, ...
  float qr[kSimtRowsPerWarp][kLaneDims], acc[kSimtRowsPerWarp][kLaneDims];
  RowState st[kSimtRowsPerWarp];
  int first_query = -1, last_query = -1;
  for (int k = 0; k < kSimtRowsPerWarp; ++k) {
    const int lr = warp * kSimtRowsPerWarp + k;
    for (int t = 0; t < kLaneDims; ++t) {
      qr[k][t] = ctx.smem_load(lr * D + lane + 32 * t);
      acc[k][t] = 0.f;
    }
    st[k] = row_init();
    if (r0 + lr < rows) {
      last_query = pack.query_of(r0 + lr);
      if (first_query < 0) first_query = last_query;
    }
  }
  // Keys beyond the last visible one of the warp's last row, and before the
  // window of its first row, are never needed.
  int key_begin = kr.begin, key_end = kr.end;
  if (last_query >= 0) {
    const int ve = visible_end(mi, last_query), vb = visible_begin(mi, first_query);
    if (ve < key_end) key_end = ve;
    if (vb > key_begin) key_begin = vb;
  } else {
    key_end = kr.begin;  // no rows: skip the loop (uniform per warp)
  }
  const float c = score_factor<Base2>(p.scale);
  const C *kh = static_cast<const C *>(p.k) + g * p.k_sh;
  const C *vh = static_cast<const C *>(p.v) + g * p.v_sh;
  // The current key's block: resolved at the first key and when the walk
  // enters the next block (never for keys past key_end, whose table entries
  // may not exist). Contiguous: one block per sequence.
  const C *kblk = kh, *vblk = vh;
  int64_t sblk = 0;  // int8: the block's scale offset
  int in_blk = -1;
  for (int j = key_begin; j < key_end; ++j) {
    if (in_blk < 0 || in_blk == p.kv.block_size) {
      const int64_t blk = p.kv.block_index(b, j);
      in_blk = j % p.kv.block_size;
      kblk = kh + blk * p.k_sb, vblk = vh + blk * p.v_sb;
      if constexpr (kI8) sblk = blk * p.s_sb + g * p.s_sh;
    }
    const bool fresh = j >= new_begin;  // a row appended by this launch: read it from k_new / v_new
    float kf[kLaneDims], vf[kLaneDims];
    if (fresh) {
      const T *krow = static_cast<const T *>(p.k_new) + b * p.kn_sb + g * p.kn_sh + (j - new_begin) * p.kn_ss;
      const T *vrow = static_cast<const T *>(p.v_new) + b * p.vn_sb + g * p.vn_sh + (j - new_begin) * p.vn_ss;
      for (int t = 0; t < kLaneDims; ++t) {
        kf[t] = load_elem(krow, lane + 32 * t);
        vf[t] = load_elem(vrow, lane + 32 * t);
      }
      if constexpr (kI8) {  // as the append stores them
        const I8Row kr8 = i8_row_scale(ctx, kf), vr8 = i8_row_scale(ctx, vf);
        const float ks = i8_stored_scale(kr8), vs = i8_stored_scale(vr8);
        for (int t = 0; t < kLaneDims; ++t) {
          kf[t] = static_cast<float>(i8_quantize(kf[t], kr8)) * ks;
          vf[t] = static_cast<float>(i8_quantize(vf[t], vr8)) * vs;
        }
      }
    } else {
      const C *krow = kblk + static_cast<int64_t>(in_blk) * p.k_ss;
      const C *vrow = vblk + static_cast<int64_t>(in_blk) * p.v_ss;
      if constexpr (kI8) {
        const float ks = p.k_scales[sblk + in_blk * p.s_ss], vs = p.v_scales[sblk + in_blk * p.s_ss];
        for (int t = 0; t < kLaneDims; ++t) {
          kf[t] = static_cast<float>(krow[lane + 32 * t]) * ks;
          vf[t] = static_cast<float>(vrow[lane + 32 * t]) * vs;
        }
      } else {
        for (int t = 0; t < kLaneDims; ++t) {
          kf[t] = load_elem(krow, lane + 32 * t);
          vf[t] = load_elem(vrow, lane + 32 * t);
        }
      }
    }
    ++in_blk;
    for (int k = 0; k < kSimtRowsPerWarp; ++k) {
      float dot = 0.f;
      for (int t = 0; t < kLaneDims; ++t) dot = fmaf(qr[k][t], kf[t], dot);
      for (int off = 16; off > 0; off >>= 1) dot += ctx.shfl_xor(dot, off);
      const int r = r0 + warp * kSimtRowsPerWarp + k;
      const bool seen = r < rows && visible(mi, pack.query_of(r), j);
      const float x = seen ? dot : -INFINITY;
      const float alpha = online_begin_tile<Base2>(st[k], x, c);
      const float pr = online_prob<Base2>(x, c, st[k].m);
      st[k].l += pr;
      for (int t = 0; t < kLaneDims; ++t) acc[k][t] = fmaf(pr, vf[t], acc[k][t] * alpha);
    }
  }

  for (int k = 0; k < kSimtRowsPerWarp; ++k) {
    const int r = r0 + warp * kSimtRowsPerWarp + k;
    if (r >= rows) continue;
    if (p.splits == 1) {
      const RowResult res = row_finalize<Base2>(st[k]);
      const int h = pack.head_of(g, r), i = pack.query_of(r);
      float *o = p.out + b * p.o_sb + h * p.o_sh + i * p.o_ss;
      for (int t = 0; t < kLaneDims; ++t) o[lane + 32 * t] = acc[k][t] * res.inv_l;
      if (p.lse && lane == 0) p.lse[(static_cast<int64_t>(b) * p.heads + h) * p.q_len + i] = res.lse;
    } else {
      const int64_t slot = global_row(p, b, g, r) * p.splits + split;
      for (int t = 0; t < kLaneDims; ++t) p.part_acc[slot * D + lane + 32 * t] = acc[k][t];
      if (lane == 0) {
        p.part_m[slot] = st[k].m;
        p.part_l[slot] = st[k].l;
      }
    }
  }
}

// Combine of splits: one warp per packed row; grid.x = batch * kv_heads * G*q_len.
// OutT: float (p.out as declared), or uint16_t when p.out holds 16-bit
// outputs of the tensor-core kernel (fp16, or bf16 with kBf16), rounded to
// nearest even.
template <class Ctx, int D, class OutT = float, bool kBf16 = false>
PARLEY_KERNEL_BODY void simt_attention_combine(Ctx &ctx, const SimtParams &p) {
  constexpr int kLaneDims = D / 32;
  const int lane = ctx.thread() % 32;
  const int rows = (p.heads / p.kv_heads) * p.q_len;
  const int64_t gr = ctx.block_x();
  const int r = static_cast<int>(gr % rows);
  const int bg = static_cast<int>(gr / rows);
  const int g = bg % p.kv_heads, b = bg / p.kv_heads;
  const DecodePack pack{p.heads / p.kv_heads, p.q_len};
  const int64_t base = gr * p.splits;
  const RowState total = merge_states<Base2>(p.part_m + base, p.part_l + base, p.splits, 1);
  float out[kLaneDims];
  for (int t = 0; t < kLaneDims; ++t) out[t] = 0.f;
  for (int s = 0; s < p.splits; ++s) {
    const float ls = p.part_l[base + s];
    const float w = merge_weight<Base2>(p.part_m[base + s], ls, total);
    if (w == 0.f) continue;
    const float f = w / ls;  // the partial accumulators are unnormalised
    for (int t = 0; t < kLaneDims; ++t) out[t] = fmaf(f, p.part_acc[(base + s) * D + lane + 32 * t], out[t]);
  }
  const int h = pack.head_of(g, r), i = pack.query_of(r);
  OutT *o = reinterpret_cast<OutT *>(p.out) + b * p.o_sb + h * p.o_sh + i * p.o_ss;
  for (int t = 0; t < kLaneDims; ++t) {
    if constexpr (sizeof(OutT) == 2)
      o[lane + 32 * t] = float_to_bits(out[t], kBf16);
    else
      o[lane + 32 * t] = out[t];
  }
  if (p.lse && lane == 0) p.lse[(static_cast<int64_t>(b) * p.heads + h) * p.q_len + i] = row_finalize<Base2>(total).lse;
}

// Probabilities (optional output): probs[b,h,i,j] = exp(q.k_j * scale - lse)
// for visible keys, else 0; needs the lse of the main pass. One warp per
// (b, h, i) row, lanes over keys; grid.x = batch * heads * q_len.
template <class Ctx, class T, int D>
PARLEY_KERNEL_BODY void simt_attention_probs(Ctx &ctx, const SimtParams &p, float *probs) {
  const int lane = ctx.thread() % 32;
  const int64_t row = ctx.block_x();
  const int i = static_cast<int>(row % p.q_len);
  const int h = static_cast<int>((row / p.q_len) % p.heads);
  const int b = static_cast<int>(row / (static_cast<int64_t>(p.q_len) * p.heads));
  const int g = kv_head_of(h, p.heads, p.kv_heads);
  MaskInfo mi = make_mask(p.mask, p.q_len, p.kv_len, p.key_lengths, b, p.window);
  mi.key_len = mi.key_len < 0 ? 0 : (mi.key_len > p.kv_len ? p.kv_len : mi.key_len);
  const float lse = p.lse[row];
  const T *q = static_cast<const T *>(p.q) + b * p.q_sb + h * p.q_sh + i * p.q_ss;
  const T *kp = static_cast<const T *>(p.k) + b * p.k_sb + g * p.k_sh;
  float *out = probs + row * p.kv_len;
  for (int j = lane; j < p.kv_len; j += 32) {
    float pr = 0.f;
    if (visible(mi, i, j) && lse != -INFINITY) {
      float dot = 0.f;
      for (int d = 0; d < D; ++d) dot = fmaf(load_elem(q, d), load_elem(kp, j * p.k_ss + d), dot);
      pr = expf(dot * p.scale - lse);
    }
    out[j] = pr;
  }
}

}  // namespace parley::cuda::attn

#endif  // PARLEY_PLUGINS_CUDA_ATTENTION_SIMT_ATTENTION_CUH
