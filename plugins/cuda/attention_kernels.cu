// __global__ entry points of the SIMT attention kernels: the bodies in
// attention/simt_attention.cuh (tested on the CPU under tests/simt's
// emulator) with the device context of attention/simt_device.cuh.
#include <cuda_runtime.h>

#include "attention/mma_attention.cuh"
#include "attention/simt_attention.cuh"
#include "attention/simt_device.cuh"
#include "cuda_common.h"

namespace parley::cuda {

namespace {
using attn::DeviceCtx;
using attn::SimtParams;

// C: the cache's element (float, or int8_t with a scale per row).
template <int D, class C>
__global__ void __launch_bounds__(attn::kSimtThreads) attention_split_kernel(SimtParams p) {
  DeviceCtx ctx;
  attn::simt_attention_split<DeviceCtx, float, D, C>(ctx, p);
}

template <int D>
__global__ void __launch_bounds__(32) attention_combine_kernel(SimtParams p) {
  DeviceCtx ctx;
  attn::simt_attention_combine<DeviceCtx, D>(ctx, p);
}

template <int D>
__global__ void __launch_bounds__(32) attention_probs_kernel(SimtParams p, float *probs) {
  DeviceCtx ctx;
  attn::simt_attention_probs<DeviceCtx, float, D>(ctx, p, probs);
}

template <int D>
void launch(const SimtParams &p, float *probs, bool i8_cache, cudaStream_t s) {
  const int rows = (p.heads / p.kv_heads) * p.q_len;
  const dim3 grid(static_cast<unsigned>(p.batch * p.kv_heads * p.row_tiles), static_cast<unsigned>(p.splits));
  const size_t smem = attn::kSimtRows * D * sizeof(float);
  if (i8_cache)
    attention_split_kernel<D, int8_t><<<grid, attn::kSimtThreads, smem, s>>>(p);
  else
    attention_split_kernel<D, float><<<grid, attn::kSimtThreads, smem, s>>>(p);
  if (p.splits > 1) attention_combine_kernel<D><<<static_cast<unsigned>(p.batch * p.kv_heads * rows), 32, 0, s>>>(p);
  if (probs) attention_probs_kernel<D><<<static_cast<unsigned>(p.batch * p.heads * p.q_len), 32, 0, s>>>(p, probs);
}

template <int D, bool kBf16, bool kAsync, class QT>
__global__ void __launch_bounds__(attn::kMmaThreads, 1) attention_mma_kernel(attn::MmaParams p) {
  DeviceCtx ctx;
  attn::mma_attention_prefill<DeviceCtx, D, kBf16, kAsync, true, QT>(ctx, p);
}

template <int D, class OutT, bool kBf16>
__global__ void __launch_bounds__(32) attention_mma_combine_kernel(SimtParams p) {
  DeviceCtx ctx;
  attn::simt_attention_combine<DeviceCtx, D, OutT, kBf16>(ctx, p);
}

template <int D, bool kBf16, class QT>
void launch_mma(const attn::MmaParams &p, bool async, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(p.batch * p.kv_heads * p.row_tiles), static_cast<unsigned>(p.splits));
  const size_t smem = attn::mma_smem_words<D>() * 4;
  if (async)
    attention_mma_kernel<D, kBf16, true, QT><<<grid, attn::kMmaThreads, smem, s>>>(p);
  else
    attention_mma_kernel<D, kBf16, false, QT><<<grid, attn::kMmaThreads, smem, s>>>(p);
  if (p.splits > 1) {
    const int rows = (p.heads / p.kv_heads) * p.q_len;
    const SimtParams c = attn::combine_params(p);
    attention_mma_combine_kernel<D, QT, kBf16><<<static_cast<unsigned>(p.batch * p.kv_heads * rows), 32, 0, s>>>(c);
  }
}

template <class QT>
void launch_mma_typed(const attn::MmaParams &p, int head_dim, bool bf16, bool async, cudaStream_t s) {
  if (head_dim == 64)
    bf16 ? launch_mma<64, true, QT>(p, async, s) : launch_mma<64, false, QT>(p, async, s);
  else
    bf16 ? launch_mma<128, true, QT>(p, async, s) : launch_mma<128, false, QT>(p, async, s);
}
}  // namespace

// async: every K/V row (and with 16-bit queries every q row) starts on a
// 16-byte boundary (cp.async). f32_queries: q, out, k_new and v_new are fp32
// over a 16-bit cache.
void launch_attention_mma(const attn::MmaParams &p, int head_dim, bool bf16, bool async, bool f32_queries,
                          cudaStream_t s) {
  if (f32_queries)
    launch_mma_typed<float>(p, head_dim, bf16, async, s);
  else
    launch_mma_typed<uint16_t>(p, head_dim, bf16, async, s);
}

void launch_attention(const attn::SimtParams &p, int head_dim, float *probs, bool i8_cache, cudaStream_t s) {
  if (head_dim == 64)
    launch<64>(p, probs, i8_cache, s);
  else
    launch<128>(p, probs, i8_cache, s);
}

}  // namespace parley::cuda
