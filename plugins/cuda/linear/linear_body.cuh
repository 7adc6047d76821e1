// Kernel bodies of the cuda plugin's LINEAR op for weights stored as F16,
// BF16, I8 (per-row or group-wise scales) or I4 (group-wise scales), F32
// activations: out = act(x @ W^T + bias) + residual. The weight is read in its
// stored precision (layout: linear_layout.h) and converted in registers; no
// float copy of it exists anywhere.
//
// Like the attention bodies, these are templates over an execution context
// `Ctx` (thread / block indices, __syncthreads, warp shuffles, shared memory
// as 32-bit words): plugins/cuda/linear_kernels.cu instantiates them with the
// GPU's context, tests/simt with the SIMT emulator's, so the same source runs
// on both.
//
//  * linear_gemv<WT, M>: m <= M rows (M = 1, 2, 4, 8: decode and small
//    batches). A CTA of 4 warps owns 8 output features (2 per warp) and reads
//    each of their weight rows exactly once: a lane loads 16 contiguous bytes
//    per step (a warp 512 B of one row, coalesced), converts them in
//    registers and multiplies them with all M rows of x, which the CTA stages
//    in shared memory 1024 columns at a time (one padding word per 32, so the
//    lanes' reads of x hit 32 different banks for every dtype). A warp
//    shuffle butterfly sums the lanes; lane 0 applies bias, activation and
//    residual.
//  * linear_tiled<WT>: larger m. A CTA of 256 threads computes a 64 x 64
//    output tile; per k-tile of 32 it stages 64 rows of x and 64 weight rows
//    converted to float (and scaled) in shared memory, k-major with a stride
//    of 65 words (conflict-free stores and reads), and each thread
//    accumulates a 4 x 4 block (rows ty + 16i, columns tx + 16j). CUDA cores
//    in fp32; the weight is read ceil(m / 64) times.
//  * linear_residual_add: out = src + residual, after a cuBLASLt product (F32
//    weights) whose activation forbids fusing the residual as beta * C.
#ifndef PARLEY_PLUGINS_CUDA_LINEAR_LINEAR_BODY_CUH
#define PARLEY_PLUGINS_CUDA_LINEAR_LINEAR_BODY_CUH

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../activation.cuh"
#include "../attention/simt_attention.cuh"  // float_to_bits (the host's F16 rounding)
#include "linear_layout.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>  // both nvcc passes see the same declarations
#include <cuda_fp16.h>
#endif

#ifndef PARLEY_HD
#if defined(__CUDACC__)
#define PARLEY_HD __host__ __device__
#else
#define PARLEY_HD
#endif
#endif
#ifndef PARLEY_KERNEL_BODY
#if defined(__CUDACC__)
#define PARLEY_KERNEL_BODY __device__
#else
#define PARLEY_KERNEL_BODY
#endif
#endif

// Full unrolling keeps the per-thread arrays (accumulators, loaded words) in
// registers: check_resources.py refuses local memory. Device passes only (the
// host compiler of nvcc's host pass warns about the pragma).
#if defined(__CUDA_ARCH__)
#define PARLEY_LIN_UNROLL _Pragma("unroll")
#define PARLEY_LIN_UNROLL4 _Pragma("unroll 4")
#else
#define PARLEY_LIN_UNROLL
#define PARLEY_LIN_UNROLL4
#endif

namespace parley::cuda::lin {

// ---- element decoding ----
PARLEY_HD inline float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, 4);
  return f;
#endif
}

// IEEE binary16 bits -> float, exact (the hardware conversion on the GPU).
PARLEY_HD inline float half_bits_to_float(uint32_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
#else
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 0x1Fu) return bits_to_float(sign | 0x7F800000u | (mant << 13));
  return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

template <int WT>
struct WeightType;
template <>
struct WeightType<PARLEY_DTYPE_F32> {
  static constexpr int kPerWord = 1;
};
template <>
struct WeightType<PARLEY_DTYPE_F16> {
  static constexpr int kPerWord = 2;
};
template <>
struct WeightType<PARLEY_DTYPE_BF16> {
  static constexpr int kPerWord = 2;
};
template <>
struct WeightType<PARLEY_DTYPE_I8> {
  static constexpr int kPerWord = 4;
};
template <>
struct WeightType<PARLEY_DTYPE_I4> {
  static constexpr int kPerWord = 8;
};

// Element j (0 <= j < kPerWord) of a little-endian 32-bit word of the weight.
template <int WT>
PARLEY_HD inline float decode(uint32_t w, int j) {
  if constexpr (WT == PARLEY_DTYPE_F32) {
    return bits_to_float(w);
  } else if constexpr (WT == PARLEY_DTYPE_F16) {
    return half_bits_to_float((w >> (16 * j)) & 0xFFFFu);
  } else if constexpr (WT == PARLEY_DTYPE_BF16) {
    return bits_to_float(j == 0 ? w << 16 : w & 0xFFFF0000u);
  } else if constexpr (WT == PARLEY_DTYPE_I8) {
    return static_cast<float>(static_cast<int32_t>(w << (24 - 8 * j)) >> 24);
  } else {  // I4: sign-extend nibble j
    return static_cast<float>(static_cast<int32_t>(w << (28 - 4 * j)) >> 28);
  }
}

// Byte offset of element `col` in a row.
template <int WT>
PARLEY_HD inline int64_t byte_offset(int64_t col) {
  return WT == PARLEY_DTYPE_I4 ? col / 2 : col * (4 / WeightType<WT>::kPerWord);
}

// N consecutive 32-bit words from p (aligned to 4 * N bytes when N is 1, 2
// or a multiple of 4): vector loads on the GPU.
template <int N>
PARLEY_HD inline void load_words(const uint8_t *p, uint32_t (&w)[N]) {
#if defined(__CUDA_ARCH__)
  if constexpr (N % 4 == 0) {
    PARLEY_LIN_UNROLL
    for (int i = 0; i < N / 4; ++i) {
      const uint4 v = __ldg(reinterpret_cast<const uint4 *>(p) + i);
      w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
    }
  } else if constexpr (N == 2) {
    const uint2 v = __ldg(reinterpret_cast<const uint2 *>(p));
    w[0] = v.x, w[1] = v.y;
  } else {
    static_assert(N == 1, "load_words: 1, 2 or 4k words");
    w[0] = __ldg(reinterpret_cast<const unsigned int *>(p));
  }
#else
  memcpy(w, p, sizeof w);
#endif
}

// The activations of the cpu plugin, shared with kernels.cu.
PARLEY_HD inline float apply_act(int act, float x) {
  return parley_cuda_activation(act, x);
}

// Activations (x, residual, out): float, or F16 / BF16 bits (p.act_dtype);
// a 16-bit output is the float result rounded once to nearest even.
PARLEY_HD inline float load_act(const void *base, int64_t i, int32_t type) {
  if (type == PARLEY_DTYPE_F32) return static_cast<const float *>(base)[i];
  const uint16_t h = static_cast<const uint16_t *>(base)[i];
  return type == PARLEY_DTYPE_BF16 ? bits_to_float(static_cast<uint32_t>(h) << 16) : half_bits_to_float(h);
}
PARLEY_HD inline void store_act(void *base, int64_t i, float v, int32_t type) {
  if (type == PARLEY_DTYPE_F32) {
    static_cast<float *>(base)[i] = v;
    return;
  }
#if defined(__CUDA_ARCH__)
  static_cast<uint16_t *>(base)[i] = type == PARLEY_DTYPE_BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v))
                                                               : __half_as_ushort(__float2half_rn(v));
#else
  static_cast<uint16_t *>(base)[i] = attn::float_to_bits(v, type == PARLEY_DTYPE_BF16);
#endif
}
PARLEY_HD inline float load_x(const LinearParams &p, int64_t row, int64_t col) {
  return load_act(p.x, row * p.ld_x + col, p.act_dtype);
}

PARLEY_HD inline void store_output(const LinearParams &p, int64_t row, int64_t col, float acc) {
  float v = acc + (p.bias ? p.bias[col] : 0.f);
  v = apply_act(p.act, v);
  if (p.residual) v += load_act(p.residual, row * p.ld_res + col, p.act_dtype);
  store_act(p.out, row * p.ld_out + col, v, p.act_dtype);
}

// ---- small m: one warp per output feature ----
template <class Ctx, int WT, int M>
PARLEY_KERNEL_BODY void linear_gemv(Ctx &ctx, const LinearParams &p) {
  static_assert(M >= 1 && M <= kGemvMaxM, "linear_gemv: 1 <= M <= 8");
  constexpr int kPerWord = WeightType<WT>::kPerWord;
  constexpr int E = 4 * kPerWord;  // elements in the 16 bytes a lane loads
  constexpr int R = kGemvRowsPerWarp;
  const int tid = ctx.thread(), lane = tid & 31, warp = tid >> 5;
  const int64_t row0 = static_cast<int64_t>(ctx.block_x()) * kGemvRows + warp * R;
  float acc[R][M];
  PARLEY_LIN_UNROLL
  for (int r = 0; r < R; ++r) PARLEY_LIN_UNROLL
  for (int mi = 0; mi < M; ++mi) acc[r][mi] = 0.f;

  for (int64_t kc0 = 0; kc0 < p.kp; kc0 += kGemvKc) {
    // Stage x[0..M)[kc0 .. kc0 + 1024) (zeros past m and k).
    for (int idx = tid; idx < M * kGemvKc; idx += kGemvThreads) {
      const int mi = idx / kGemvKc, j = idx % kGemvKc;
      const int64_t col = kc0 + j;
      const float v = (mi < p.m && col < p.k) ? load_x(p, mi, col) : 0.f;
      ctx.smem_store(static_cast<size_t>(mi) * kGemvXStride + j + (j >> 5), v);
    }
    ctx.sync();
    const int64_t left = p.kp - kc0;
    const int kc_end = left < kGemvKc ? static_cast<int>(left) : kGemvKc;
    PARLEY_LIN_UNROLL
    for (int r = 0; r < R; ++r) {
      const int64_t row = row0 + r;
      if (row < p.n) {  // the same for every lane of the warp
        const uint8_t *wrow = p.w + row * p.pitch;
        for (int c = lane * E; c < kc_end; c += 32 * E) {
          const int64_t col = kc0 + c;
          uint32_t w[4];
          load_words<4>(wrow + byte_offset<WT>(col), w);
          // The 16 bytes lie in one scale group (groups are >= 32 elements
          // and aligned, E <= 32 divides 32).
          const float s = p.scales ? p.scales[row * p.groups_per_row + col / p.group] : 1.f;
          const int base = c + (c >> 5);  // c..c+E-1 share one padding offset
          PARLEY_LIN_UNROLL
          for (int mi = 0; mi < M; ++mi) {
            float part = 0.f;
            PARLEY_LIN_UNROLL
            for (int q = 0; q < 4; ++q) PARLEY_LIN_UNROLL
            for (int j = 0; j < kPerWord; ++j)
              part = fmaf(ctx.smem_load(static_cast<size_t>(mi) * kGemvXStride + base + q * kPerWord + j),
                          decode<WT>(w[q], j), part);
            acc[r][mi] = fmaf(part, s, acc[r][mi]);
          }
        }
      }
    }
    ctx.sync();  // the next step overwrites the staged x
  }
  PARLEY_LIN_UNROLL
  for (int r = 0; r < R; ++r) PARLEY_LIN_UNROLL
  for (int mi = 0; mi < M; ++mi) {
    float v = acc[r][mi];
    PARLEY_LIN_UNROLL
    for (int o = 16; o > 0; o >>= 1) v += ctx.shfl_xor(v, o);
    acc[r][mi] = v;
  }
  if (lane == 0) {
    PARLEY_LIN_UNROLL
    for (int r = 0; r < R; ++r) PARLEY_LIN_UNROLL
    for (int mi = 0; mi < M; ++mi)
      if (row0 + r < p.n && mi < p.m) store_output(p, mi, row0 + r, acc[r][mi]);
  }
}

// Eight consecutive weight elements from element `col` (a multiple of 8) of
// a row, as floats.
template <int WT>
PARLEY_HD inline void load8(const uint8_t *row, int64_t col, float (&v)[8]) {
  constexpr int kPerWord = WeightType<WT>::kPerWord;
  constexpr int N = 8 / kPerWord;
  uint32_t w[N];
  load_words<N>(row + byte_offset<WT>(col), w);
  PARLEY_LIN_UNROLL
  for (int q = 0; q < N; ++q) PARLEY_LIN_UNROLL
  for (int j = 0; j < kPerWord; ++j) v[q * kPerWord + j] = decode<WT>(w[q], j);
}

// ---- larger m: 64 x 64 output tiles ----
template <class Ctx, int WT>
PARLEY_KERNEL_BODY void linear_tiled(Ctx &ctx, const LinearParams &p) {
  const int tid = ctx.thread();
  const int tx = tid & 15, ty = tid >> 4;  // compute: rows ty + 16i, columns tx + 16j
  const int lr = tid >> 2, cg = tid & 3;   // staging: tile row lr, columns cg*8 .. cg*8+7
  const int64_t n0 = static_cast<int64_t>(ctx.block_x()) * kTileN;
  const int64_t m_tiles = (p.m + kTileM - 1) / kTileM;
  for (int64_t mt = ctx.block_y(); mt < m_tiles; mt += p.grid_y) {
    const int64_t m0 = mt * kTileM;
    float acc[4][4];
    PARLEY_LIN_UNROLL
    for (int i = 0; i < 4; ++i) PARLEY_LIN_UNROLL
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
    for (int64_t k0 = 0; k0 < p.kp; k0 += kTileK) {
      const int64_t xr = m0 + lr, wr = n0 + lr;
      PARLEY_LIN_UNROLL
      for (int e = 0; e < 8; ++e) {
        const int64_t col = k0 + cg * 8 + e;
        const float v = (xr < p.m && col < p.k) ? load_x(p, xr, col) : 0.f;
        ctx.smem_store(static_cast<size_t>((cg * 8 + e) * kTileStride + lr), v);
      }
      float wv[8];
      float s = 0.f;  // rows past n stage zeros
      if (wr < p.n) {
        load8<WT>(p.w + wr * p.pitch, k0 + cg * 8, wv);
        // A k-tile of 32 lies in one scale group (groups are 32, 64 or 128).
        s = p.scales ? p.scales[wr * p.groups_per_row + k0 / p.group] : 1.f;
      } else {
        PARLEY_LIN_UNROLL
        for (int e = 0; e < 8; ++e) wv[e] = 0.f;
      }
      PARLEY_LIN_UNROLL
      for (int e = 0; e < 8; ++e)
        ctx.smem_store(static_cast<size_t>(kTileWOffset + (cg * 8 + e) * kTileStride + lr), wv[e] * s);
      ctx.sync();
      PARLEY_LIN_UNROLL4
      for (int kk = 0; kk < kTileK; ++kk) {
        float a[4], b[4];
        PARLEY_LIN_UNROLL
        for (int i = 0; i < 4; ++i) a[i] = ctx.smem_load(static_cast<size_t>(kk * kTileStride + ty + 16 * i));
        PARLEY_LIN_UNROLL
        for (int j = 0; j < 4; ++j)
          b[j] = ctx.smem_load(static_cast<size_t>(kTileWOffset + kk * kTileStride + tx + 16 * j));
        PARLEY_LIN_UNROLL
        for (int i = 0; i < 4; ++i) PARLEY_LIN_UNROLL
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      ctx.sync();  // the next k-tile overwrites the staged tiles
    }
    PARLEY_LIN_UNROLL
    for (int i = 0; i < 4; ++i) PARLEY_LIN_UNROLL
    for (int j = 0; j < 4; ++j) {
      const int64_t row = m0 + ty + 16 * i, col = n0 + tx + 16 * j;
      if (row < p.m && col < p.n) store_output(p, row, col, acc[i][j]);
    }
  }
}

// ---- out = src + residual (grid-stride over rows x cols) ----
template <class Ctx>
PARLEY_KERNEL_BODY void linear_residual_add(Ctx &ctx, const ResidualParams &p) {
  const int64_t total = p.rows * p.cols;
  const int64_t step = static_cast<int64_t>(p.grid) * kResidualThreads;
  for (int64_t i = static_cast<int64_t>(ctx.block_x()) * kResidualThreads + ctx.thread(); i < total; i += step) {
    const int64_t r = i / p.cols, c = i % p.cols;
    p.out[r * p.ld_out + c] = p.src[r * p.ld_src + c] + p.residual[r * p.ld_res + c];
  }
}

}  // namespace parley::cuda::lin

#endif  // PARLEY_PLUGINS_CUDA_LINEAR_LINEAR_BODY_CUH
