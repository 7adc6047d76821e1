// The CUDA kernels of the row/element-wise ops and their launchers. Every
// kernel is F32 (activation also F16/BF16, for the GEMM's unfused epilogues),
// keeps its per-thread state in registers (no arrays indexed at run time, so
// no local memory: check_resources.py enforces it) and uses grid-stride loops
// so that any row count fits the grid limits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "activation.cuh"
#include "cuda_common.h"

namespace parley::cuda {

namespace {

constexpr int kThreads = 256;     // element-wise kernels
constexpr int kRowThreads = 256;  // one block per row (norms, softmax, top-k)
constexpr unsigned kFull = 0xffffffffu;

// Grid for n independent items of `per_block` each: at most 65535 * 16 blocks
// (grid-stride loops cover the rest).
unsigned grid_for(int64_t n, int64_t per_block) {
  int64_t blocks = (n + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  if (blocks > 65535 * 16) blocks = 65535 * 16;
  return static_cast<unsigned>(blocks);
}
unsigned row_grid(int64_t rows) {
  return static_cast<unsigned>(rows < 65535 * 16 ? rows : 65535 * 16);
}

// ---- activations: the formulas of the cpu plugin (activation.cuh) ----
__device__ __forceinline__ float act_apply(int act, float x) {
  return parley_cuda_activation(act, x);
}

__device__ __forceinline__ float to_float(float v) {
  return v;
}
__device__ __forceinline__ float to_float(__half v) {
  return __half2float(v);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T>
__global__ void activation_kernel(int act, int64_t rows, int64_t cols, const T *__restrict__ x, int64_t ld_x, T *out,
                                  int64_t ld_out) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    out[r * ld_out + c] = from_float<T>(act_apply(act, to_float(x[r * ld_x + c])));
  }
}

__global__ void gated_kernel(int act, int64_t rows, int64_t cols, const float *gate, int64_t ld_gate, const float *up,
                             int64_t ld_up, float *out, int64_t ld_out) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    out[r * ld_out + c] = act_apply(act, gate[r * ld_gate + c]) * up[r * ld_up + c];
  }
}

__global__ void add_kernel(int64_t n, const float *a, const float *b, float *out, float alpha) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = alpha * a[i] + b[i];
}

// ---- block reductions (blockDim.x == kRowThreads, a multiple of 32) ----
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}
// Every thread gets the result. `shared` has 32 floats; the function ends
// with a barrier so that it can be called again right away.
__device__ float block_sum(float v, float *shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : 0.f;
  v = warp_sum(v);
  __syncthreads();
  return v;
}
__device__ float block_max(float v, float *shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : -INFINITY;
  v = warp_max(v);
  __syncthreads();
  return v;
}

// LayerNorm / RMSNorm, one block per row. With a residual, the sum x + r is
// written first (to residual_out, else to out) and normalised from there;
// every element is read and written by the same thread, so x, residual and
// out may alias (as the cpu plugin allows).
__global__ void norm_kernel(bool rms, int64_t rows, int64_t cols, const float *x, int64_t ld_x, const float *res,
                            int64_t ld_res, float *res_out, int64_t ld_res_out, const float *__restrict__ gamma,
                            const float *__restrict__ beta, float eps, float *out, int64_t ld_out) {
  __shared__ float shared[32];
  const float inv_n = 1.f / static_cast<float>(cols);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *src = x + r * ld_x;
    float *dst = out + r * ld_out;
    if (res) {
      float *sum_row = res_out ? res_out + r * ld_res_out : dst;
      const float *rr = res + r * ld_res;
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) sum_row[j] = src[j] + rr[j];
      src = sum_row;
    }
    float mean = 0.f;
    if (!rms) {
      float s = 0.f;
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += src[j];
      mean = block_sum(s, shared) * inv_n;
    }
    float sq = 0.f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float d = src[j] - mean;
      sq += d * d;
    }
    const float var = block_sum(sq, shared) * inv_n;
    const float rstd = 1.f / sqrtf(var + eps);
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float y = (src[j] - mean) * rstd * gamma[j];
      dst[j] = (!rms && beta) ? y + beta[j] : y;
    }
  }
}

// Softmax / log-softmax, one block per row, max-subtracted; the sum is
// accumulated in float per thread, then reduced (the cpu plugin uses double).
__global__ void softmax_kernel(bool log, int64_t rows, int64_t cols, const float *x, int64_t ld_x, float *out,
                               int64_t ld_out) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * ld_x;
    float *o = out + r * ld_out;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, xr[j]);
    m = block_max(m, shared);
    float s = 0.f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += expf(xr[j] - m);
    s = block_sum(s, shared);
    if (log) {
      const float lsum = logf(s);
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) o[j] = (xr[j] - m) - lsum;
    } else {
      const float inv = 1.f / s;
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) o[j] = expf(xr[j] - m) * inv;
    }
  }
}

// RoPE: one thread per (token, head, pair). The angle is position * inv_freq
// in float, as in the cpu plugin; cos/sin with full range reduction below.
__global__ void rotary_kernel(int64_t batch, int64_t seq, int64_t heads, int64_t half, float *x, int64_t stride_batch,
                              int64_t stride_seq, int64_t stride_head, const int32_t *positions, const float *inv_freq,
                              int interleaved, float attention_factor) {
  const int64_t total = batch * seq * heads * half;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t p = i % half;
    const int64_t h = (i / half) % heads;
    const int64_t t = i / (half * heads);
    const int64_t b = t / seq, s = t % seq;
    const float ang = static_cast<float>(positions[t]) * inv_freq[p];
    // sin/cos of the float angle without sincosf's Payne-Hanek slow path
    // (which needs a local-memory array): ang / pi in double, reduced
    // exactly modulo 2, then sincospif on [-1, 1] (no range reduction).
    double turns = static_cast<double>(ang) * 0.31830988618379067154;
    turns -= 2.0 * rint(turns * 0.5);
    float sn, cs;
    sincospif(static_cast<float>(turns), &sn, &cs);
    cs *= attention_factor;
    sn *= attention_factor;
    float *xh = x + b * stride_batch + s * stride_seq + h * stride_head;
    float *p0 = interleaved ? xh + 2 * p : xh + p;
    float *p1 = interleaved ? p0 + 1 : p0 + half;
    const float a0 = *p0, a1 = *p1;
    *p0 = a0 * cs - a1 * sn;
    *p1 = a1 * cs + a0 * sn;
  }
}

// Embedding gather; an id outside [0, vocab) writes zeros and raises *bad_id.
template <bool I8>
__global__ void embedding_kernel(int64_t count, int64_t vocab, int64_t dim, const int32_t *ids, const void *table,
                                 const float *row_scales, float scale, float *out, int64_t ld_out, int *bad_id) {
  const int64_t total = count * dim;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / dim, j = i % dim;
    const int64_t id = ids[row];
    float v = 0.f;
    if (id < 0 || id >= vocab) {
      if (j == 0) *bad_id = 1;
    } else if (I8) {
      v = static_cast<float>(static_cast<const int8_t *>(table)[id * dim + j]) * (row_scales[id] * scale);
    } else {
      v = static_cast<const float *>(table)[id * dim + j] * scale;
    }
    out[row * ld_out + j] = v;
  }
}

// ---- top-k: one block per row, k rounds of a block-wide arg-max ----
// Every element gets a 64-bit key whose order is the required order: the
// value (NaN below every number, -0 == +0) in the high word, the inverted
// index in the low word (lower index wins a tie). Round t finds the largest
// key below the key chosen in round t-1, so no per-element "taken" flags are
// needed: O(k * cols) reads per row, meant for sampling (k <= kTopkMaxK).
__device__ __forceinline__ unsigned long long topk_key(float v, int64_t idx) {
  uint32_t u;
  if (v != v) {
    u = 0;  // NaN: below -inf (whose key is 0x007fffff)
  } else {
    if (v == 0.f) v = 0.f;  // -0 -> +0
    u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  }
  return (static_cast<unsigned long long>(u) << 32) | (0xffffffffull - static_cast<unsigned long long>(idx));
}

__device__ __forceinline__ unsigned long long warp_max_u64(unsigned long long v) {
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long w = __shfl_xor_sync(kFull, v, o);
    v = w > v ? w : v;
  }
  return v;
}

__global__ void topk_kernel(int64_t rows, int64_t cols, int64_t k, const float *x, int64_t ld_x, float *values,
                            int32_t *indices) {
  __shared__ unsigned long long shared[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * ld_x;
    unsigned long long bound = ~0ull;  // keys must be < bound
    for (int64_t t = 0; t < k; ++t) {
      unsigned long long best = 0;
      bool found = false;
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
        const unsigned long long key = topk_key(xr[j], j);
        if (key < bound && (!found || key > best)) {
          best = key;
          found = true;
        }
      }
      // No valid key is 0 (the low word of index < 2^32-1 is never all zero... except
      // index 0xffffffff, impossible since cols <= INT32_MAX), so 0 means "none".
      best = warp_max_u64(found ? best : 0ull);
      if (lane == 0) shared[warp] = best;
      __syncthreads();
      best = lane < warps ? shared[lane] : 0ull;
      best = warp_max_u64(best);
      __syncthreads();
      const int64_t idx = static_cast<int64_t>(0xffffffffull - (best & 0xffffffffull));
      if (threadIdx.x == 0) {
        values[r * k + t] = xr[idx];
        indices[r * k + t] = static_cast<int32_t>(idx);
      }
      bound = best;
    }
  }
}

}  // namespace

void launch_activation(int act, int dtype, int64_t rows, int64_t cols, const void *x, int64_t ld_x, void *out,
                       int64_t ld_out, cudaStream_t s) {
  const unsigned grid = grid_for(rows * cols, kThreads);
  if (dtype == PARLEY_DTYPE_F16)
    activation_kernel<__half><<<grid, kThreads, 0, s>>>(act, rows, cols, static_cast<const __half *>(x), ld_x,
                                                        static_cast<__half *>(out), ld_out);
  else if (dtype == PARLEY_DTYPE_BF16)
    activation_kernel<__nv_bfloat16><<<grid, kThreads, 0, s>>>(act, rows, cols, static_cast<const __nv_bfloat16 *>(x),
                                                               ld_x, static_cast<__nv_bfloat16 *>(out), ld_out);
  else
    activation_kernel<float><<<grid, kThreads, 0, s>>>(act, rows, cols, static_cast<const float *>(x), ld_x,
                                                       static_cast<float *>(out), ld_out);
}

void launch_gated_activation(int act, int64_t rows, int64_t cols, const float *gate, int64_t ld_gate, const float *up,
                             int64_t ld_up, float *out, int64_t ld_out, cudaStream_t s) {
  gated_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, s>>>(act, rows, cols, gate, ld_gate, up, ld_up, out,
                                                                    ld_out);
}

void launch_norm(bool rms, int64_t rows, int64_t cols, const float *x, int64_t ld_x, const float *res, int64_t ld_res,
                 float *res_out, int64_t ld_res_out, const float *gamma, const float *beta, float eps, float *out,
                 int64_t ld_out, cudaStream_t s) {
  norm_kernel<<<row_grid(rows), kRowThreads, 0, s>>>(rms, rows, cols, x, ld_x, res, ld_res, res_out, ld_res_out, gamma,
                                                     beta, eps, out, ld_out);
}

void launch_rotary(const parley_rotary_args &a, cudaStream_t s) {
  const int64_t half = a.rotary_dim / 2;
  rotary_kernel<<<grid_for(a.batch * a.seq * a.heads * half, kThreads), kThreads, 0, s>>>(
      a.batch, a.seq, a.heads, half, static_cast<float *>(a.x), a.stride_batch, a.stride_seq, a.stride_head,
      a.positions, a.inv_freq, a.interleaved != 0 ? 1 : 0, a.attention_factor);
}

void launch_embedding(const parley_embedding_args &a, bool i8, int *bad_id, cudaStream_t s) {
  const unsigned grid = grid_for(a.count * a.dim, kThreads);
  if (i8)
    embedding_kernel<true><<<grid, kThreads, 0, s>>>(a.count, a.vocab, a.dim, a.ids, a.table, a.row_scales, a.scale,
                                                     static_cast<float *>(a.out), a.ld_out, bad_id);
  else
    embedding_kernel<false><<<grid, kThreads, 0, s>>>(a.count, a.vocab, a.dim, a.ids, a.table, a.row_scales, a.scale,
                                                      static_cast<float *>(a.out), a.ld_out, bad_id);
}

void launch_add(int64_t n, const float *a, const float *b, float *out, float alpha, cudaStream_t s) {
  add_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(n, a, b, out, alpha);
}

void launch_softmax(bool log, int64_t rows, int64_t cols, const float *x, int64_t ld_x, float *out, int64_t ld_out,
                    cudaStream_t s) {
  softmax_kernel<<<row_grid(rows), kRowThreads, 0, s>>>(log, rows, cols, x, ld_x, out, ld_out);
}

void launch_topk(int64_t rows, int64_t cols, int64_t k, const float *x, int64_t ld_x, float *values, int32_t *indices,
                 cudaStream_t s) {
  topk_kernel<<<row_grid(rows), kRowThreads, 0, s>>>(rows, cols, k, x, ld_x, values, indices);
}

}  // namespace parley::cuda
