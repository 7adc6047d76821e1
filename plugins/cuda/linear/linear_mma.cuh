// Tensor-core LINEAR for more than kGemvMaxM activation rows (prefill,
// batched decode): out = act(x @ W^T + bias) + residual with mma.sync
// m16n8k16, fp32 accumulation. F16 / BF16 weights are used as stored; I8 /
// I4 ones (per-row or group-wise scales) are dequantised while staged, each
// w * s rounded to F16.
//
// A CTA of 8 warps owns a 64 x 64 output tile (as linear_tiled); warp w
// computes rows 16 (w mod 4) .. +15 and columns 32 (w / 4) .. +31, four n-tiles
// of 8. Per k-tile of 64 the CTA stages 64 rows of x, rounded to the weight's
// 16-bit type (round to nearest even), and 64 weight rows as stored, in shared
// memory as rows of 8 16-byte chunks with the XOR swizzle of the attention
// kernel (chunk c of row r at c ^ (r mod 8): ldmatrix phases hit 8 different
// bank groups); a warp loads its x fragment with ldmatrix.x4 and each n-tile's
// weight fragment with ldmatrix.x2 (the weight's [n][k] rows are the "col"
// B operand, as K is in Q K^T), and runs four k-steps of 16.
//
// Accuracy: F16 / BF16 weights are used exactly; x is rounded to 16 bits
// (relative u16 = 2^-11 for F16, 2^-8 for BF16), the products of 16-bit
// values are exact and summed in fp32: |out - exact| <= (u16 + gamma_k) *
// sum |w x| (plus the epilogue's rounding); I8 / I4 weights add their own
// rounding to F16: (2 u16 + gamma_k) * sum |w x|. The cpu plugin's BF16 kernel (vdpbf16ps) rounds its
// activations the same way above 8 rows; PARLEY_CUDA_EXACT=1 sends these
// products to linear_tiled (fp32 activations) instead.
#ifndef PARLEY_PLUGINS_CUDA_LINEAR_LINEAR_MMA_CUH
#define PARLEY_PLUGINS_CUDA_LINEAR_LINEAR_MMA_CUH

#include "../attention/mma_attention.cuh"  // float_to_bits, pack2, swizzled_word
#include "linear_body.cuh"

namespace parley::cuda::lin {

constexpr int kMmaLinK = 64;                                           // k per staged tile
constexpr int kMmaLinThreads = 256;                                    // 8 warps
constexpr int kMmaLinRowWords = kMmaLinK / 2;                          // 16-bit pairs per staged row
constexpr int kMmaLinXWords = kTileM * kMmaLinRowWords;                // the x tile
constexpr int kMmaLinSmemWords = (kTileM + kTileN) * kMmaLinRowWords;  // x, then the weight tile

// grid (ceil(n / 64), grid_y), kMmaLinThreads threads, kMmaLinSmemWords words.
template <class Ctx, int WT>
PARLEY_KERNEL_BODY void linear_mma(Ctx &ctx, const LinearParams &p) {
  static_assert(WT != PARLEY_DTYPE_F32, "linear_mma: F32 weights go to cuBLASLt");
  constexpr bool kBf16 = WT == PARLEY_DTYPE_BF16;  // I8 / I4: dequantised to F16
  constexpr bool kStored16 = WT == PARLEY_DTYPE_F16 || WT == PARLEY_DTYPE_BF16;
  constexpr int kChunks = kMmaLinK / 8;  // 16-byte chunks per staged row
  const int tid = ctx.thread(), warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
  const int wr0 = (warp & 3) * 16, wc0 = (warp >> 2) * 32;
  const int64_t n0 = static_cast<int64_t>(ctx.block_x()) * kTileN;
  const int64_t m_tiles = (p.m + kTileM - 1) / kTileM;
  for (int64_t mt = ctx.block_y(); mt < m_tiles; mt += p.grid_y) {
    const int64_t m0 = mt * kTileM;
    float acc[4][4];
    PARLEY_LIN_UNROLL
    for (int nt = 0; nt < 4; ++nt) PARLEY_LIN_UNROLL
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
    for (int64_t k0 = 0; k0 < p.kp; k0 += kMmaLinK) {
      // Stage: chunk ch (8 elements) of row r of both tiles per step; zeros
      // past m and k (x) and past n and kp (the weight; its k..kp tail is zero).
      for (int idx = tid; idx < kTileM * kChunks; idx += kMmaLinThreads) {
        const int r = idx / kChunks, ch = idx % kChunks;
        const int64_t col = k0 + ch * 8, xr = m0 + r, wrow = n0 + r;
        const int word = attn::swizzled_word<kMmaLinK, true>(r, ch);
        PARLEY_LIN_UNROLL
        for (int i = 0; i < 4; ++i) {
          const int64_t c0 = col + 2 * i;
          const float v0 = xr < p.m && c0 < p.k ? load_x(p, xr, c0) : 0.f;
          const float v1 = xr < p.m && c0 + 1 < p.k ? load_x(p, xr, c0 + 1) : 0.f;
          ctx.smem_store_u32(static_cast<size_t>(word + i),
                             attn::pack2(attn::float_to_bits(v0, kBf16), attn::float_to_bits(v1, kBf16)));
        }
        uint32_t w[4] = {0u, 0u, 0u, 0u};
        if (wrow < p.n && col < p.kp) {
          if constexpr (kStored16) {
            load_words<4>(p.w + wrow * p.pitch + col * 2, w);
          } else {  // 8 integers of one scale group (groups are 32, 64 or 128), w * s rounded to F16
            float v[8];
            load8<WT>(p.w + wrow * p.pitch, col, v);
            const float sc = p.scales[wrow * p.groups_per_row + col / p.group];
            PARLEY_LIN_UNROLL
            for (int i = 0; i < 4; ++i)
              w[i] =
                  attn::pack2(attn::float_to_bits(v[2 * i] * sc, false), attn::float_to_bits(v[2 * i + 1] * sc, false));
          }
        }
        PARLEY_LIN_UNROLL
        for (int i = 0; i < 4; ++i) ctx.smem_store_u32(static_cast<size_t>(kMmaLinXWords + word + i), w[i]);
      }
      ctx.sync();
      PARLEY_LIN_UNROLL
      for (int ks = 0; ks < kMmaLinK / 16; ++ks) {
        uint32_t a[4];
        ctx.ldmatrix(a, 4, false,
                     static_cast<size_t>(attn::swizzled_word<kMmaLinK, true>(wr0 + lane % 16, ks * 2 + lane / 16) * 4));
        PARLEY_LIN_UNROLL
        for (int nt = 0; nt < 4; ++nt) {
          uint32_t b[2];
          const int wrow = wc0 + nt * 8 + lane % 8, chunk = ks * 2 + (lane / 8) % 2;
          ctx.ldmatrix(b, 2, false,
                       static_cast<size_t>((kMmaLinXWords + attn::swizzled_word<kMmaLinK, true>(wrow, chunk)) * 4));
          float d[4];
          ctx.mma_m16n8k16(d, a, b, acc[nt], kBf16);
          PARLEY_LIN_UNROLL
          for (int e = 0; e < 4; ++e) acc[nt][e] = d[e];
        }
      }
      ctx.sync();  // the next k-tile overwrites the staged tiles
    }
    // C fragment: elements 0, 1 at row g, columns 2t, 2t+1 of the n-tile; 2, 3 at row g + 8.
    PARLEY_LIN_UNROLL
    for (int nt = 0; nt < 4; ++nt) PARLEY_LIN_UNROLL
    for (int e = 0; e < 4; ++e) {
      const int64_t row = m0 + wr0 + g + (e / 2) * 8, col = n0 + wc0 + nt * 8 + t * 2 + (e & 1);
      if (row < p.m && col < p.n) store_output(p, row, col, acc[nt][e]);
    }
  }
}

}  // namespace parley::cuda::lin

#endif  // PARLEY_PLUGINS_CUDA_LINEAR_LINEAR_MMA_CUH
