// Kernel bodies of the cuda plugin's row- and element-wise ops that a model
// runs between its products: LayerNorm / RMSNorm, rotary embedding, gated
// activation, add and the embedding gather, for F32 activations and 16-bit
// ones (T = float, uint16_t holding IEEE binary16 bits, or Bf16). Every
// element is loaded as float, the arithmetic is the F32 kernel's, and each
// output is rounded once to T (to nearest even), as plugin.h's 16-bit
// activation contract states.
//
// Like the attention and LINEAR bodies these are templates over an execution
// context `Ctx` (thread / block index, __syncthreads, warp shuffles, shared
// memory as 32-bit words): kernels.cu instantiates them with the GPU's
// context, tests/simt with the SIMT emulator's, so the same source runs on
// both. Grids are capped, so every body loops grid-stride over its rows or
// elements (`grid` comes with the parameters: the context has no gridDim).
#ifndef PARLEY_PLUGINS_CUDA_ROWWISE_ROWWISE_BODY_CUH
#define PARLEY_PLUGINS_CUDA_ROWWISE_ROWWISE_BODY_CUH

#include <math.h>
#include <stdint.h>

#include <type_traits>

#include "../activation.cuh"
#include "../attention/simt_attention.cuh"  // half_to_float, float_to_bits (portable conversions)
#include "rowwise_params.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace parley::cuda::row {

// ---- activation elements: float, F16 bits (uint16_t) or BF16 (Bf16) ----
template <class T>
PARLEY_HD inline float load(const T *p, int64_t i) {
  if constexpr (sizeof(T) == 4) {
    return p[i];
  } else if constexpr (std::is_same_v<T, Bf16>) {
    return attn::bf16_bits_to_float(p[i].bits);
  } else {
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(p[i]));
#else
    return attn::half_to_float(p[i]);
#endif
  }
}
template <class T>
PARLEY_HD inline void store(T *p, int64_t i, float v) {
  if constexpr (sizeof(T) == 4) {
    p[i] = v;
  } else if constexpr (std::is_same_v<T, Bf16>) {
#if defined(__CUDA_ARCH__)
    p[i].bits = __bfloat16_as_ushort(__float2bfloat16_rn(v));
#else
    p[i].bits = attn::float_to_bits(v, true);
#endif
  } else {
#if defined(__CUDA_ARCH__)
    p[i] = __half_as_ushort(__float2half_rn(v));
#else
    p[i] = attn::float_to_bits(v, false);
#endif
  }
}

// ---- block reduction: every thread gets the CTA's sum (kRowThreads threads) ----
template <class Ctx>
PARLEY_HD inline float block_sum(Ctx &ctx, float v) {
  const int lane = ctx.thread() & 31, warp = ctx.thread() >> 5;
  for (int o = 16; o > 0; o >>= 1) v += ctx.shfl_xor(v, o);
  if (lane == 0) ctx.smem_store(static_cast<size_t>(warp), v);
  ctx.sync();
  v = lane < kRowSmemWords ? ctx.smem_load(static_cast<size_t>(lane)) : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += ctx.shfl_xor(v, o);
  ctx.sync();  // the slots may be written again right away
  return v;
}

// ---- LayerNorm / RMSNorm (parley_norm_args), one CTA of kRowThreads per row ----

// With a residual, x + r is stored first (to res_out, else to out) and
// normalised from what was stored; every element is read and written by the
// same thread, so x, res and out may alias (as the cpu plugin allows).
template <class Ctx, class T>
PARLEY_KERNEL_BODY void norm_rows(Ctx &ctx, const NormParams &p) {
  const int64_t tid = ctx.thread();
  const float inv_n = 1.f / static_cast<float>(p.cols);
  for (int64_t r = ctx.block_x(); r < p.rows; r += p.grid) {
    const T *src = static_cast<const T *>(p.x) + r * p.ld_x;
    T *dst = static_cast<T *>(p.out) + r * p.ld_out;
    if (p.res) {
      T *sum_row = p.res_out ? static_cast<T *>(p.res_out) + r * p.ld_res_out : dst;
      const T *rr = static_cast<const T *>(p.res) + r * p.ld_res;
      for (int64_t j = tid; j < p.cols; j += kRowThreads) store(sum_row, j, load(src, j) + load(rr, j));
      src = sum_row;
    }
    float mean = 0.f;
    if (!p.rms) {
      float s = 0.f;
      for (int64_t j = tid; j < p.cols; j += kRowThreads) s += load(src, j);
      mean = block_sum(ctx, s) * inv_n;
    }
    float sq = 0.f;
    for (int64_t j = tid; j < p.cols; j += kRowThreads) {
      const float d = load(src, j) - mean;
      sq += d * d;
    }
    const float var = block_sum(ctx, sq) * inv_n;
    const float rstd = 1.f / sqrtf(var + p.eps);
    for (int64_t j = tid; j < p.cols; j += kRowThreads) {
      const float y = (load(src, j) - mean) * rstd * p.gamma[j];
      store(dst, j, p.beta ? y + p.beta[j] : y);
    }
  }
}

// ---- rotary embedding (parley_rotary_args), one thread per rotated pair ----

// sin and cos of pi * t for t in [-1, 1]: sincospif on the GPU (no range
// reduction, so no local memory); on the host the same value in double,
// rounded once (within an ulp of the GPU's).
PARLEY_HD inline void sincos_pi(float t, float *s, float *c) {
#if defined(__CUDA_ARCH__)
  sincospif(t, s, c);
#else
  const double a = 3.14159265358979323846 * static_cast<double>(t);
  *s = static_cast<float>(sin(a));
  *c = static_cast<float>(cos(a));
#endif
}

// The angle is position * inv_freq in float, as in the cpu plugin; its sin
// and cos come from angle / pi in double reduced exactly modulo 2.
template <class Ctx, class T>
PARLEY_KERNEL_BODY void rotary(Ctx &ctx, const RotaryParams &p) {
  const int64_t total = p.batch * p.seq * p.heads * p.half;
  for (int64_t i = ctx.block_x() * int64_t{kElemThreads} + ctx.thread(); i < total; i += p.grid * kElemThreads) {
    const int64_t pair = i % p.half, h = (i / p.half) % p.heads, t = i / (p.half * p.heads);
    const int64_t b = t / p.seq, s = t % p.seq;
    const float ang = static_cast<float>(p.positions[t]) * p.inv_freq[pair];
    double turns = static_cast<double>(ang) * 0.31830988618379067154;
    turns -= 2.0 * rint(turns * 0.5);
    float sn, cs;
    sincos_pi(static_cast<float>(turns), &sn, &cs);
    cs *= p.attention_factor;
    sn *= p.attention_factor;
    T *xh = static_cast<T *>(p.x) + b * p.stride_batch + s * p.stride_seq + h * p.stride_head;
    const int64_t i0 = p.interleaved ? 2 * pair : pair, i1 = p.interleaved ? i0 + 1 : i0 + p.half;
    const float a0 = load(xh, i0), a1 = load(xh, i1);
    store(xh, i0, a0 * cs - a1 * sn);
    store(xh, i1, a1 * cs + a0 * sn);
  }
}

// ---- gated activation: out = act(gate) * up (parley_gated_activation_args) ----

template <class Ctx, class T>
PARLEY_KERNEL_BODY void gated(Ctx &ctx, const GatedParams &p) {
  const int64_t total = p.rows * p.cols;
  for (int64_t i = ctx.block_x() * int64_t{kElemThreads} + ctx.thread(); i < total; i += p.grid * kElemThreads) {
    const int64_t r = i / p.cols, c = i % p.cols;
    const float g = load(static_cast<const T *>(p.gate), r * p.ld_gate + c);
    const float u = load(static_cast<const T *>(p.up), r * p.ld_up + c);
    store(static_cast<T *>(p.out), r * p.ld_out + c, parley_cuda_activation(p.act, g) * u);
  }
}

// ---- add: out = alpha * a + b (parley_add_args) ----

template <class Ctx, class T>
PARLEY_KERNEL_BODY void add(Ctx &ctx, const AddParams &p) {
  for (int64_t i = ctx.block_x() * int64_t{kElemThreads} + ctx.thread(); i < p.n; i += p.grid * kElemThreads)
    store(static_cast<T *>(p.out), i,
          p.alpha * load(static_cast<const T *>(p.a), i) + load(static_cast<const T *>(p.b), i));
}

// ---- embedding gather (parley_embedding_args): an F32 or per-row I8 table
// into activations of T; an id outside [0, vocab) writes zeros and sets *bad_id ----

template <class Ctx, class T>
PARLEY_KERNEL_BODY void embedding(Ctx &ctx, const EmbeddingParams &p) {
  const int64_t total = p.count * p.dim;
  for (int64_t i = ctx.block_x() * int64_t{kElemThreads} + ctx.thread(); i < total; i += p.grid * kElemThreads) {
    const int64_t row = i / p.dim, j = i % p.dim;
    const int64_t id = p.ids[row];
    float v = 0.f;
    if (id < 0 || id >= p.vocab) {
      if (j == 0) *p.bad_id = 1;
    } else if (p.i8) {
      v = static_cast<float>(static_cast<const int8_t *>(p.table)[id * p.dim + j]) * (p.row_scales[id] * p.scale);
    } else {
      v = static_cast<const float *>(p.table)[id * p.dim + j] * p.scale;
    }
    store(static_cast<T *>(p.out), row * p.ld_out + j, v);
  }
}

}  // namespace parley::cuda::row

#endif  // PARLEY_PLUGINS_CUDA_ROWWISE_ROWWISE_BODY_CUH
