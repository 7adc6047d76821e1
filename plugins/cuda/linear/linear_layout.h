// The device layout of a weight prepared by the cuda plugin's LINEAR kernels
// (plugin ABI 1.2) and the parameters of their kernels. Plain C++ (no CUDA
// header): the plugin's host code packs weights with it, the kernel bodies
// (linear_body.cuh) read that layout, and tests/simt packs and runs the same
// code on the CPU.
//
// Layout, one device allocation per weight:
//   rows:   n rows of kp = round_up(k, 32) elements in the stored dtype
//           (F32 / F16 / BF16 / I8, or I4 two per byte, element 2i in the low
//           nibble as in the model file), pitch = kp * element bits / 8 bytes
//           (a multiple of 16, so every 16-byte chunk a lane loads is
//           aligned), the k..kp tail zero;
//   scales: at scale_offset (256-byte aligned), F32: PER_ROW [n], GROUPWISE
//           [n, k / group_size], as the file stores them; none for floats.
// The kernels read scale index row * groups_per_row + col / group, where a
// per-row weight has group = kp (one group per row) and groups_per_row = 1.
#ifndef PARLEY_PLUGINS_CUDA_LINEAR_LINEAR_LAYOUT_H
#define PARLEY_PLUGINS_CUDA_LINEAR_LINEAR_LAYOUT_H

#include <parley/plugin.h>

#include <cstdint>
#include <cstring>

namespace parley::cuda::lin {

constexpr int64_t kKAlign = 32;  // row length padding (elements): one k-tile of the tiled kernel
constexpr int64_t kScaleAlign = 256;

// Bits per element of a weight dtype this plugin stores (0: not a weight dtype).
inline int weight_bits(int32_t dtype) {
  switch (dtype) {
    case PARLEY_DTYPE_F32:
      return 32;
    case PARLEY_DTYPE_F16:
    case PARLEY_DTYPE_BF16:
      return 16;
    case PARLEY_DTYPE_I8:
      return 8;
    case PARLEY_DTYPE_I4:
      return 4;
    default:
      return 0;
  }
}

struct Layout {
  int32_t dtype = PARLEY_DTYPE_F32;
  int64_t n = 0, k = 0, kp = 0;
  int64_t pitch = 0;  // bytes between rows on the device
  int64_t src_row_bytes = 0;
  int64_t scale_offset = 0;  // bytes from the start of the allocation
  int64_t scale_count = 0;   // floats (0: none)
  int64_t total = 0;         // bytes of the allocation
  int32_t group = 0;         // elements per scale (kp for per-row)
  int32_t groups_per_row = 0;
};

// The layout of a validated desc (dtype, quant, shape and group already
// checked). Returns false when a size overflows int64.
inline bool make_layout(const parley_weight_desc &d, Layout *out) {
  Layout L;
  L.dtype = d.dtype;
  L.n = d.n, L.k = d.k;
  const int bits = weight_bits(d.dtype);
  if (bits == 0 || d.n < 1 || d.k < 1 || d.k > INT32_MAX - kKAlign || d.n > INT32_MAX) return false;
  L.kp = (d.k + kKAlign - 1) / kKAlign * kKAlign;
  L.pitch = L.kp * bits / 8;
  L.src_row_bytes = d.k * bits / 8;
  int64_t data = 0;
  if (__builtin_mul_overflow(L.n, L.pitch, &data)) return false;
  if (d.quant == PARLEY_QUANT_PER_ROW) {
    L.scale_count = L.n, L.group = static_cast<int32_t>(L.kp), L.groups_per_row = 1;
  } else if (d.quant == PARLEY_QUANT_GROUPWISE) {
    L.group = static_cast<int32_t>(d.group_size);
    L.groups_per_row = static_cast<int32_t>(d.k / d.group_size);
    if (__builtin_mul_overflow(L.n, static_cast<int64_t>(L.groups_per_row), &L.scale_count)) return false;
  } else {
    L.scale_count = 0, L.group = static_cast<int32_t>(L.kp), L.groups_per_row = 0;
  }
  if (data > INT64_MAX - kScaleAlign) return false;
  L.scale_offset = L.scale_count ? (data + kScaleAlign - 1) / kScaleAlign * kScaleAlign : data;
  int64_t scale_bytes = 0;
  if (__builtin_mul_overflow(L.scale_count, int64_t{4}, &scale_bytes)) return false;
  if (__builtin_add_overflow(L.scale_offset, scale_bytes, &L.total)) return false;
  *out = L;
  return true;
}

// Writes rows [r0, r1) of the weight in the device layout to dst
// ((r1 - r0) * pitch bytes): the stored bytes, then zeros up to the pitch.
inline void pack_rows(const parley_weight_desc &d, const Layout &L, int64_t r0, int64_t r1, uint8_t *dst) {
  const auto *src = static_cast<const uint8_t *>(d.data);
  for (int64_t r = r0; r < r1; ++r) {
    uint8_t *row = dst + (r - r0) * L.pitch;
    std::memcpy(row, src + r * d.ld_bytes, static_cast<size_t>(L.src_row_bytes));
    std::memset(row + L.src_row_bytes, 0, static_cast<size_t>(L.pitch - L.src_row_bytes));
  }
}

// Launch geometry of the kernels (linear_body.cuh).
constexpr int kGemvThreads = 128;  // 4 warps
constexpr int kGemvRowsPerWarp = 2;
constexpr int kGemvRows = (kGemvThreads / 32) * kGemvRowsPerWarp;  // output features per CTA
constexpr int kGemvKc = 1024;                                      // x columns staged per step
constexpr int kGemvXStride = kGemvKc + kGemvKc / 32;               // words per staged row (padded)
constexpr int kGemvMaxM = 8;
constexpr int gemv_smem_words(int rows) {
  return rows * kGemvXStride;
}

constexpr int kTileM = 64, kTileN = 64, kTileK = 32, kTileThreads = 256;
constexpr int kTileStride = 65;  // words per k row of a staged tile
constexpr int kTileWOffset = kTileK * kTileStride;
constexpr int kTileSmemWords = 2 * kTileK * kTileStride;

constexpr int kResidualThreads = 256;

// What a LINEAR launch reads: the product out = act(x @ W^T + bias) + residual
// for m rows of x, with W in the layout above.
// x, residual and out are of act_dtype (F32, or F16 / BF16 bits: 16-bit
// activations, plugin.h); bias and scales are always float.
struct LinearParams {
  const void *x = nullptr;
  int64_t ld_x = 0;
  const uint8_t *w = nullptr;  // row 0 of the device layout
  int64_t pitch = 0;
  const float *scales = nullptr;  // NULL for F16 / BF16 / F32
  int32_t group = 1, groups_per_row = 0;
  const float *bias = nullptr;
  const void *residual = nullptr;  // may equal out (same row stride)
  int64_t ld_res = 0;
  void *out = nullptr;
  int64_t ld_out = 0;
  int64_t m = 0, n = 0, k = 0, kp = 0;
  int32_t act = PARLEY_ACT_NONE;
  int32_t grid_y = 1;  // the tiled kernel's grid height (it strides over m tiles)
  int32_t act_dtype = PARLEY_DTYPE_F32;
};

// out = src + residual over rows x cols (after a cuBLASLt product).
struct ResidualParams {
  const float *src = nullptr;
  int64_t ld_src = 0;
  const float *residual = nullptr;
  int64_t ld_res = 0;
  float *out = nullptr;
  int64_t ld_out = 0;
  int64_t rows = 0, cols = 0;
  int32_t grid = 1;
};

}  // namespace parley::cuda::lin

#endif
