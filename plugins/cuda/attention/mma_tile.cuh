// The tensor-core building block of the FlashAttention-2 prefill kernel: one
// warp computes a 16x8 fp32 tile D = A(16x16) . B(16x8) with fp16/bf16
// inputs staged in shared memory, loaded with ldmatrix into the mma.sync
// m16n8k16 fragments. Both operand layouts of attention occur:
//  - S = Q K^T: B is K, stored [n = key][k = dim]   -> ldmatrix (no .trans)
//  - O = P V:   B is V, stored [k = key][n = dim]   -> ldmatrix .trans
// Like simt_attention.cuh, the body is a template over the execution context
// (simt_device.cuh on a GPU, the SIMT emulator in tests/simt on the CPU).
#ifndef PARLEY_PLUGINS_CUDA_ATTENTION_MMA_TILE_CUH
#define PARLEY_PLUGINS_CUDA_ATTENTION_MMA_TILE_CUH

#include <stdint.h>

#include "simt_attention.cuh"  // PARLEY_KERNEL_BODY

namespace parley::cuda::attn {

// Shared-memory layout (32-bit words, two 16-bit values each): A rows of 16
// values (8 words) at word 0, B after it (128 words in).
constexpr int kTileAWords = 16 * 16 / 2;
constexpr int kTileBWords = 16 * 8 / 2;

// a: 16x16 row-major; b: kTransB ? [16 k][8 n] : [8 n][16 k]; d: 16x8 row-major.
// One warp (32 threads).
template <class Ctx, bool kBf16, bool kTransB>
PARLEY_KERNEL_BODY void mma_tile_16x8x16(Ctx &ctx, const uint16_t *a, const uint16_t *b, float *d) {
  const int lane = ctx.thread() & 31;
  for (int w = lane; w < kTileAWords; w += 32)
    ctx.smem_store_u32(w, static_cast<uint32_t>(a[2 * w]) | (static_cast<uint32_t>(a[2 * w + 1]) << 16));
  for (int w = lane; w < kTileBWords; w += 32)
    ctx.smem_store_u32(kTileAWords + w, static_cast<uint32_t>(b[2 * w]) | (static_cast<uint32_t>(b[2 * w + 1]) << 16));
  ctx.sync();

  // A fragments: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7,
  // k 8-15), (rows 8-15, k 8-15) = a0a1, a2a3, a4a5, a6a7 of the PTX layout.
  uint32_t af[4];
  const int a_row = lane % 16, a_col = (lane / 16) * 8;
  ctx.ldmatrix(af, 4, false, static_cast<size_t>((a_row * 16 + a_col) * 2));
  // B fragments b0b1 (k 0-7) and b2b3 (k 8-15), column n = lane / 4.
  uint32_t bf[2];
  size_t b_off;
  if (kTransB) {
    b_off = static_cast<size_t>(kTileAWords * 4 + (lane % 16) * 8 * 2);  // row k of [k][n]
  } else {
    b_off = static_cast<size_t>(kTileAWords * 4 + ((lane % 8) * 16 + ((lane / 8) % 2) * 8) * 2);  // row n, k half
  }
  ctx.ldmatrix(bf, 2, kTransB, b_off);

  float c[4] = {0.f, 0.f, 0.f, 0.f}, out[4];
  ctx.mma_m16n8k16(out, af, bf, c, kBf16);
  const int g = lane >> 2, t = lane % 4;
  d[g * 8 + t * 2] = out[0];
  d[g * 8 + t * 2 + 1] = out[1];
  d[(g + 8) * 8 + t * 2] = out[2];
  d[(g + 8) * 8 + t * 2 + 1] = out[3];
}

}  // namespace parley::cuda::attn

#endif  // PARLEY_PLUGINS_CUDA_ATTENTION_MMA_TILE_CUH
