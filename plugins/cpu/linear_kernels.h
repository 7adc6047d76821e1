// The specialised LINEAR kernels of the cpu plugin, one set per instruction
// set (linear_avx2.cpp, linear_avx512.cpp); linear_fast.cpp picks among them.
// Each returns true when it ran the product (with *status set) and false to
// leave it to the next candidate.
#ifndef PARLEY_PLUGINS_CPU_LINEAR_KERNELS_H
#define PARLEY_PLUGINS_CPU_LINEAR_KERNELS_H

#include "linear.h"

namespace parley::cpu {

// Up to this many activation rows take the GEMV kernels (weights streamed once
// and converted in registers, F32 activations); more take the GEMM paths.
constexpr int64_t kSmallM = 8;
// Integer weights take the int8-activation kernels (VNNI, or AVX2) from this
// many rows.
constexpr int64_t kVnniMinM = 1;
// The AVX2 int8-activation kernel serves m from kAvx2IntMinM up to
// kAvx2IntMaxMPerRow rows (I8 per-row weights) or kAvx2IntMaxMGrouped rows
// (group-wise I8 / I4, whose per-group scaling costs the kernel about a
// quarter): above, oneDNN's sgemm on tiles converted to float32 is faster on
// cores whose vector integer multiplier has half the FMA units' throughput
// (Zen 2: vpmaddwd on one pipe, FMA on two). tests/bench/bench_linear.cpp's
// crossover table (k=896, n=4864) puts the crossovers at 22-32 rows per-row
// and 20-24 group-wise, but on the translation model's smaller products
// (k=512) raising the limits to 24 / 16 measured no gain (bench_precision,
// within the ±10 % noise of the 2-thread runs), so they stay where they were.
constexpr int64_t kAvx2IntMinM = 1;
// On VNNI, I8 per-row weights go to oneDNN's int8 GEMM from this many rows
// (the same integers, so the same outputs; linear_avx512.cpp).
constexpr int64_t kOnednnI8MinM = 24;
// ... and group-wise I8 / I4 weights to the packed-block VNNI kernel.
constexpr int64_t kVnniPackedMinM = 24;
constexpr int64_t kAvx2IntMaxMPerRow = 20;
constexpr int64_t kAvx2IntMaxMGrouped = 10;

// GEMV-style small-m product for every weight dtype, F32 activations, F32
// accumulation. Requires m <= kSmallM.
bool gemv_avx2(const Host &host, const parley_linear_args &a, const PackedWeight &w, parley_kernel_status *status);
bool gemv_avx512(const Host &host, const parley_linear_args &a, const PackedWeight &w, parley_kernel_status *status);

// I8 (per-row or group-wise) and I4 (group-wise) weights x dynamically
// int8-quantised activations (AVX512-VNNI). Needs the row sums of prepare
// (row_sums / group_corr); group-wise needs k % 64 == 0.
// *stats_written is set when the path wrote a's block statistics (ABI 1.5)
// itself, while the outputs were in cache (the oneDNN I8 per-row path).
bool gemm_int_vnni_avx512(const Host &host, const parley_linear_args &a, const PackedWeight &w,
                          parley_kernel_status *status, bool *stats_written);

// Lays an I8 per-row weight (k <= 65536) out in VNNI panels
// (PackedWeight::panels), which gemm_int_vnni_avx512 then uses for every row
// count. False (and nothing set) for other weights or without memory.
bool pack_i8_panels(PackedWeight &w);

// The same products on AVX2 (linear_int_avx2.cpp): int8-valued activations
// widened to int16, vpmaddwd. I8 per-row (any k; bit-identical to the VNNI
// kernel) and I8 / I4 group-wise with groups of 32, 64 or 128.
bool gemm_int_avx2(const Host &host, const parley_linear_args &a, const PackedWeight &w, parley_kernel_status *status);

// BF16 weights x activations rounded to bf16 (AVX512-BF16; lossy, m > kSmallM only).
bool gemm_bf16_avx512(const Host &host, const parley_linear_args &a, const PackedWeight &w,
                      parley_kernel_status *status);

// out = act(vals + bias) + res over count outputs, the one LINEAR epilogue of
// every path (bias and res may be NULL). out may alias vals or res: each
// element is read before it is written, and vals is never written.
void epilogue_span(const float *vals, const float *bias, int act, const float *res, float *out, int64_t count);

// parley_linear_args.block_max / block_sum (ABI 1.5) of `len` outputs that
// start on a block boundary: ceil(len / PARLEY_LINEAR_STATS_BLOCK) blocks.
void block_stats(const float *row, int64_t len, float *bmax, float *bsum);

// out[i, j0 .. j0 + count) = act(vals + bias) + residual for activation row i.
void linear_epilogue(const parley_linear_args &a, int64_t i, int64_t j0, const float *vals, int64_t count);

// The epilogue of one output (the RowTiles walks finish outputs one by one):
// a projection with at most a bias (no activation or residual) stores it
// here, in the kernel, without a call per output.
inline void linear_epilogue1(const parley_linear_args &a, int64_t i, int64_t j, float v) {
  if (!a.residual && a.activation == PARLEY_ACT_NONE)
    static_cast<float *>(a.out)[i * a.ld_out + j] = a.bias ? v + a.bias[j] : v;
  else
    linear_epilogue(a, i, j, &v, 1);
}

// The weight rows [begin, end) of one thread, grouped for a micro-kernel that
// reads `cols` rows side by side.
//  * strided (few activation rows: the kernel waits on memory): tile t holds
//    rows begin + t + c * stride (c < cols), so each of the kernel's row
//    pointers walks contiguous rows, one sequential stream each. With tiles of
//    adjacent rows every stream jumps after each tile, and with rows of
//    0.5-2 KiB (decode of small models) Zen 2's prefetchers then delivered
//    about half of what this walk gets (bench_linear, m = 1, 1 thread: int8
//    kernel 10.5 -> 19-23 GB/s, f16 GEMV 9.5 -> 22-24).
//  * adjacent: tile t holds rows begin + t * cols + c. With more rows the
//    kernel is bound by arithmetic, and on the 2-vCPU Zen 2 VM the strided
//    walk then ran 10-20 % slower at 2 threads from 8 rows on, though 5-10 %
//    faster at 1 thread (int8 kernel, bench_linear crossover table, k = 896):
//    strided_tiles() picks by both.
// Which rows share a tile changes no result: each output is computed the same
// way whatever rows are beside it.
constexpr int64_t kStridedTilesMaxM = 4;
inline bool strided_tiles(int64_t m, int threads) {
  return m <= kStridedTilesMaxM || threads <= 1;
}

struct RowTiles {
  int64_t begin, end, stride;
  int cols;
  bool strided;
  RowTiles(int64_t b, int64_t e, int c, bool s) : begin(b), end(e), stride((e - b + c - 1) / c), cols(c), strided(s) {}
  int64_t count() const { return stride; }
  // The rows of tile t into rows[0, cols): returns how many are valid (they
  // come first); the others repeat the last valid row.
  int rows(int64_t t, int64_t *out) const {
    int valid = 0;
    for (int c = 0; c < cols; ++c) {
      const int64_t r = strided ? begin + t + c * stride : begin + t * cols + c;
      if (r < end) valid = c + 1;
      out[c] = r < end || c == 0 ? r : out[c - 1];
    }
    return valid;
  }
};

// Rows of weight per parallel_for index and the grain that gives every thread
// one equal, contiguous slice.
inline int64_t even_grain(int64_t units, int threads) {
  return threads <= 1 ? units : (units + threads - 1) / threads;
}

}  // namespace parley::cpu

#endif
