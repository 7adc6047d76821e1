// The CUDA kernels of the row/element-wise ops and their launchers. Norms,
// rotary, gated activation, add and embedding are F32, F16 and BF16 (the bodies of
// rowwise/rowwise_body.cuh); activation also F16/BF16, for the GEMM's unfused
// epilogues; softmax and top-k F32. Every kernel keeps its per-thread state in registers (no arrays indexed at run
// time, so no local memory: check_resources.py enforces it) and uses grid-stride loops so that any row count fits the
// grid limits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "activation.cuh"
#include "attention/simt_device.cuh"
#include "cuda_common.h"
#include "rowwise/rowwise_body.cuh"

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

// ---- the model's row- and element-wise ops: the bodies of
// rowwise/rowwise_body.cuh (tested on the CPU under tests/simt's emulator)
// with the device context, for F32 (T = float), F16 (T = uint16_t bits) and
// BF16 (T = row::Bf16).
using attn::DeviceCtx;

template <class T>
__global__ void __launch_bounds__(row::kRowThreads) norm_kernel(row::NormParams p) {
  DeviceCtx ctx;
  row::norm_rows<DeviceCtx, T>(ctx, p);
}
template <class T>
__global__ void __launch_bounds__(row::kElemThreads) rotary_kernel(row::RotaryParams p) {
  DeviceCtx ctx;
  row::rotary<DeviceCtx, T>(ctx, p);
}
template <class T>
__global__ void __launch_bounds__(row::kElemThreads) gated_kernel(row::GatedParams p) {
  DeviceCtx ctx;
  row::gated<DeviceCtx, T>(ctx, p);
}
template <class T>
__global__ void __launch_bounds__(row::kElemThreads) add_kernel(row::AddParams p) {
  DeviceCtx ctx;
  row::add<DeviceCtx, T>(ctx, p);
}
template <class T>
__global__ void __launch_bounds__(row::kElemThreads) embedding_kernel(row::EmbeddingParams p) {
  DeviceCtx ctx;
  row::embedding<DeviceCtx, T>(ctx, p);
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

void launch_gated_activation(int dtype, row::GatedParams p, cudaStream_t s) {
  const unsigned grid = grid_for(p.rows * p.cols, row::kElemThreads);
  p.grid = grid;
  if (dtype == PARLEY_DTYPE_F16)
    gated_kernel<uint16_t><<<grid, row::kElemThreads, 0, s>>>(p);
  else if (dtype == PARLEY_DTYPE_BF16)
    gated_kernel<row::Bf16><<<grid, row::kElemThreads, 0, s>>>(p);
  else
    gated_kernel<float><<<grid, row::kElemThreads, 0, s>>>(p);
}

void launch_norm(int dtype, row::NormParams p, cudaStream_t s) {
  const unsigned grid = row_grid(p.rows);
  const size_t smem = row::kRowSmemWords * sizeof(float);
  p.grid = grid;
  if (dtype == PARLEY_DTYPE_F16)
    norm_kernel<uint16_t><<<grid, row::kRowThreads, smem, s>>>(p);
  else if (dtype == PARLEY_DTYPE_BF16)
    norm_kernel<row::Bf16><<<grid, row::kRowThreads, smem, s>>>(p);
  else
    norm_kernel<float><<<grid, row::kRowThreads, smem, s>>>(p);
}

void launch_rotary(int dtype, row::RotaryParams p, cudaStream_t s) {
  const unsigned grid = grid_for(p.batch * p.seq * p.heads * p.half, row::kElemThreads);
  p.grid = grid;
  if (dtype == PARLEY_DTYPE_F16)
    rotary_kernel<uint16_t><<<grid, row::kElemThreads, 0, s>>>(p);
  else if (dtype == PARLEY_DTYPE_BF16)
    rotary_kernel<row::Bf16><<<grid, row::kElemThreads, 0, s>>>(p);
  else
    rotary_kernel<float><<<grid, row::kElemThreads, 0, s>>>(p);
}

void launch_embedding(int dtype, row::EmbeddingParams p, cudaStream_t s) {
  const unsigned grid = grid_for(p.count * p.dim, row::kElemThreads);
  p.grid = grid;
  if (dtype == PARLEY_DTYPE_F16)
    embedding_kernel<uint16_t><<<grid, row::kElemThreads, 0, s>>>(p);
  else if (dtype == PARLEY_DTYPE_BF16)
    embedding_kernel<row::Bf16><<<grid, row::kElemThreads, 0, s>>>(p);
  else
    embedding_kernel<float><<<grid, row::kElemThreads, 0, s>>>(p);
}

void launch_add(int dtype, row::AddParams p, cudaStream_t s) {
  const unsigned grid = grid_for(p.n, row::kElemThreads);
  p.grid = grid;
  if (dtype == PARLEY_DTYPE_F16)
    add_kernel<uint16_t><<<grid, row::kElemThreads, 0, s>>>(p);
  else if (dtype == PARLEY_DTYPE_BF16)
    add_kernel<row::Bf16><<<grid, row::kElemThreads, 0, s>>>(p);
  else
    add_kernel<float><<<grid, row::kElemThreads, 0, s>>>(p);
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
