// LINEAR kernels for AVX-512 (F, BW, VL, DQ) and AVX512-VNNI, compiled for
// those instruction sets function by function (the target pragmas below, not
// a global -march), run only when cpu_features() reports them.
// GCC 12's AVX-512 intrinsics start some results from _mm512_undefined_*(),
// which -Wmaybe-uninitialized reports inside the header (a known false
// positive, GCC bug 105593; -Wuninitialized for _mm512_reduce_*_ps).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu_features.h"
#include "linear_kernels.h"
#include "onednn.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")
#endif

namespace parley::cpu {

namespace {

using vf = __m512;
constexpr int V = 16;
constexpr int RB = 4;  // weight rows per block: 4 streams per thread
constexpr int MB = 4;  // activation rows per pass: 16 accumulators + 4 x + 1 w of 32 registers

inline vf vzero() {
  return _mm512_setzero_ps();
}
inline vf vset1(float s) {
  return _mm512_set1_ps(s);
}
inline vf vload(const float *p) {
  return _mm512_loadu_ps(p);
}
inline vf vfma(vf a, vf b, vf c) {
  return _mm512_fmadd_ps(a, b, c);
}
inline vf vmul(vf a, vf b) {
  return _mm512_mul_ps(a, b);
}
inline float vhsum(vf v) {
  return _mm512_reduce_add_ps(v);
}
inline vf load_f16(const uint16_t *p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
}
inline vf load_bf16(const uint16_t *p) {
  const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
inline vf load_i8(const int8_t *p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))));
}
inline void load_i4(const uint8_t *p, vf *lo, vf *hi) {
  const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
  // Sign-extend each nibble: move it to the top of the lane, shift back arithmetically.
  *lo = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(b, 28), 28));
  *hi = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(b, 24), 28));
}

}  // namespace

#define PARLEY_GEMV_NAME gemv_avx512
#include "linear_gemv.inc"
#undef PARLEY_GEMV_NAME

}  // namespace parley::cpu

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ---------------------------------------------------------------------------
// Integer weights x int8 activations with AVX512-VNNI, for m > kSmallM.
//
// Each activation row is quantised on the fly, symmetric, per row:
// s_x = max|x| / 127, q = round(x / s_x) in [-127, 127] (a zero row gets
// s_x = 0 and q = 0). vpdpbusd multiplies unsigned by signed bytes, so the
// kernel feeds u = q + 128 and corrects with the weight row's sum, made once
// in prepare_weight:  sum_p q_p w_p = sum_p u_p w_p - 128 * sum_p w_p.
//  * I8 per-row: int32 sums over the whole row (no overflow for k <= 65536:
//    255 * 128 * 65536 < 2^31), then (dot - 128 * row_sum) * s_x * s_w.
//  * I8 / I4 group-wise: the int32 sums of each 64-byte step are converted to
//    float and multiplied by their group's scale per lane (a group of 32 is
//    half a vector), accumulated in float; the correction
//    128 * sum_g s_g * sum(group g) is one float per row (group_corr).
//    I4 nibbles are widened to signed bytes in registers (low nibbles = even
//    elements in the first 32 bytes, high = odd in the last 32), and x's
//    bytes are permuted the same way within every 64 elements.
// The only extra error over float32 is the rounding of x to q * s_x,
// |x - q s_x| <= s_x / 2: at most s_x / 2 * sum_p |w[j][p]| per output (the
// tests check this bound). Weights are used in the file's layout (row-major
// [n, k]): 64 bytes of a weight row against 64 bytes of an activation row per
// instruction, 4 x 4 outputs at a time, lanes added at the end.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#endif

namespace parley::cpu {

namespace {

enum class QKind { kI8Row, kI8Group, kI4Group };

constexpr int kMR = 4;         // activation rows per micro-kernel
constexpr int kNR = 4;         // weight rows per micro-kernel
constexpr int64_t kUnit = 32;  // weight rows per parallel_for index
// The oneDNN path for I8 per-row weights (gemm_i8_row_onednn, from
// onednn_i8_min_m() rows): tiles of up to kOnednnI8MaxN outputs, kOnednnI8MaxM rows.
constexpr int64_t kOnednnI8MaxN = 512;
constexpr int64_t kOnednnI8MaxM = 256;

// Quantises one activation row into kp bytes (u = q + 128, padded with 128,
// i.e. q = 0); for I4 weights the bytes of every 64 are then ordered even
// elements first, odd ones after. Returns s_x, or a negative value if the row
// is not finite.
float quantize_row(const float *x, int64_t k, int64_t kp, bool i4_order, uint8_t *u) {
  __m512 mx = _mm512_setzero_ps();
  __mmask16 bad = 0;  // lanes where x - x is not 0: NaN or infinity
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    const __m512 v = _mm512_loadu_ps(x + p);
    mx = _mm512_max_ps(mx, _mm512_abs_ps(v));
    bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), _mm512_setzero_ps(), _CMP_NEQ_UQ);
  }
  float amax = _mm512_reduce_max_ps(mx);
  bool finite = bad == 0;
  for (; p < k; ++p) {
    amax = std::max(amax, std::fabs(x[p]));
    finite = finite && std::isfinite(x[p]);
  }
  if (!finite) return -1.f;
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i bias = _mm512_set1_epi32(128);
  for (p = 0; p < kp; p += 16) {
    const int64_t rem = k - p;
    const __mmask16 mask = rem >= 16 ? __mmask16(0xFFFF) : rem <= 0 ? __mmask16(0) : __mmask16((1u << rem) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + p);
    // Round to nearest even (the default MXCSR mode); |v * inv| <= 127 up to rounding.
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v, vinv));
    q = _mm512_max_epi32(_mm512_min_epi32(q, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(u + p), _mm512_cvtepi32_epi8(_mm512_add_epi32(q, bias)));
  }
  if (i4_order) {
    uint8_t tmp[64];
    for (p = 0; p < kp; p += 64) {
      for (int t = 0; t < 32; ++t) {
        tmp[t] = u[p + 2 * t];
        tmp[32 + t] = u[p + 2 * t + 1];
      }
      std::memcpy(u + p, tmp, 64);
    }
  }
  return amax / 127.f;
}

// Four 16-lane int32 vectors -> their four sums.
inline __m128i sum4(__m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  const __m512i s = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
  const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

// 64 signed weight bytes of row `row` at element p (a multiple of 64). I4:
// 32 bytes -> the 32 even elements, then the 32 odd ones, as signed bytes.
template <QKind K>
inline __m512i load_wq(const int8_t *row, int64_t p) {
  if constexpr (K == QKind::kI4Group) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(row + p / 2));
    const __m256i nib = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
    // (v ^ 8) - 8 sign-extends a nibble held in the low 4 bits of a byte.
    const __m256i lo = _mm256_sub_epi8(_mm256_xor_si256(_mm256_and_si256(b, nib), eight), eight);
    const __m256i hi = _mm256_sub_epi8(_mm256_xor_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), nib), eight), eight);
    return _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
  } else {
    return _mm512_loadu_si512(row + p);
  }
}

// The group scales of the 16 int32 lanes of a 64-element step at element p.
// I8: lane t covers elements p + 4t .. p + 4t + 3. I4 (even elements in lanes
// 0-7, odd ones in lanes 8-15): lane t < 8 covers elements p + 8t .. p + 8t + 6,
// lane t >= 8 covers p + 8(t - 8) + 1 ...
template <QKind K>
inline __m512 group_scales(const float *s, int64_t p, int64_t group) {
  if (group >= 64) return _mm512_set1_ps(s[p / group]);
  const __m512 a = _mm512_set1_ps(s[p / 32]), b = _mm512_set1_ps(s[p / 32 + 1]);
  if constexpr (K == QKind::kI4Group) return _mm512_mask_blend_ps(__mmask16(0xF0F0), a, b);
  return _mm512_mask_blend_ps(__mmask16(0xFF00), a, b);
}

// Per-row weights: dots[i][j] = sum_p u[i][p] * w[j][p] (int32).
template <int MR, int NR>
void vnni_block_row(const uint8_t *const *xu, const int8_t *const *wr, int64_t k, int32_t dots[kMR][kNR]) {
  __m512i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  int64_t p = 0;
  for (; p + 64 <= k; p += 64) {
    __m512i wv[NR];
    for (int j = 0; j < NR; ++j) {
      _mm_prefetch(reinterpret_cast<const char *>(wr[j] + p) + 1024, _MM_HINT_T0);  // as in vnni_block_i4s
      wv[j] = _mm512_loadu_si512(wr[j] + p);
    }
    for (int i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_loadu_si512(xu[i] + p);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xv, wv[j]);
    }
  }
  if (p < k) {  // the weight rows end here: masked loads (zeros) past k; x is padded
    const __mmask64 mask = (~0ull) >> (64 - (k - p));
    __m512i wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_maskz_loadu_epi8(mask, wr[j] + p);
    for (int i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_loadu_si512(xu[i] + p);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xv, wv[j]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    // With NR < 4 the missing rows repeat row 0; their sums are not used.
    alignas(16) int32_t s[4];
    _mm_store_si128(reinterpret_cast<__m128i *>(s),
                    sum4(acc[i][0], acc[i][NR > 1 ? 1 : 0], acc[i][NR > 2 ? 2 : 0], acc[i][NR > 3 ? 3 : 0]));
    for (int j = 0; j < NR; ++j) dots[i][j] = s[j];
  }
}

// Group-wise weights: out[i][j] = sum_g s_g * sum_{p in g} u[i][p] * w[j][p]
// (float). k is a multiple of 64.
template <QKind K, int MR, int NR>
void vnni_block_group(const uint8_t *const *xu, const int8_t *const *wr, const float *const *ws, int64_t k,
                      int64_t group, float out[kMR][kNR]) {
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < k; p += 64) {
    __m512i wv[NR];
    __m512 sv[NR];
    for (int j = 0; j < NR; ++j) {
      _mm_prefetch(reinterpret_cast<const char *>(wr[j] + (K == QKind::kI4Group ? p / 2 : p)) + 1024, _MM_HINT_T0);
      wv[j] = load_wq<K>(wr[j], p);
      sv[j] = group_scales<K>(ws[j], p, group);
    }
    for (int i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_loadu_si512(xu[i] + p);
      for (int j = 0; j < NR; ++j)
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), xv, wv[j])), sv[j],
                                    acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) out[i][j] = _mm512_reduce_add_ps(acc[i][j]);
}

// I4 group-wise weights with few activation rows (decode), where unpacking
// the nibbles to signed bytes (eight instructions per 64 weights) was what
// bound the kernel, not memory. Here the nibbles go to vpdpbusd unsigned
// (w + 8 in 0 .. 15: one XOR flips the sign bits of both nibbles of a byte),
// against signed activation bytes q:
// sum w q = sum (w + 8) q - 8 sum q, the second term per 8 elements made once
// per activation row (i4s_corr) and loaded as the accumulator's start. 64
// weight bytes are 128 weights: low nibbles the even elements, high nibbles
// the odd ones, so the activation row is stored per 128 elements as its 64
// even elements then its 64 odd ones; int32 lane t then sums elements
// 8t .. 8t+7 of the block (both halves), one group's scale per lane (groups
// of 32, 64 or 128), one conversion and FMA per lane and block. Per 128
// weights of a weight row: a load, two ANDs and a shift, the scales, and per
// activation row two vpdpbusd, a conversion and an FMA. The integer sums are
// the same as the general micro-kernel's; only the float order differs.
constexpr int64_t kI4Block = 128;

// kp: k padded to 128. Bytes [0, kp) of the row: the signed q, per 128
// elements even then odd (zeros past k); then kp / 128 x 16 int32:
// -8 x the sum of q over elements 8t .. 8t+7 of each block.
// (quantize_row pads u with 128, i.e. q = 0, up to kp.)
int64_t i4s_row_bytes(int64_t kp) {
  return kp + kp / kI4Block * 16 * int64_t(sizeof(int32_t));
}

float quantize_row_i4s(const float *x, int64_t k, int64_t kp, uint8_t *row) {
  // u = q + 128 in natural order first (the shared quantiser; u = 128 past k),
  // then per block, in place: the lanes' sums (vpsadbw adds 8 bytes) and the
  // bytes split even / odd (vpshufb within 16 bytes, then 8-byte halves).
  const float sx = quantize_row(x, k, kp, false, row);
  if (sx < 0.f) return sx;
  const __m512i split = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
  const __m512i even_idx = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14),
                odd_idx = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
  const __m512i flip = _mm512_set1_epi8(char(0x80)), zero = _mm512_setzero_si512();
  for (int64_t b = 0; b < kp; b += kI4Block) {
    const __m512i lo = _mm512_loadu_si512(row + b), hi = _mm512_loadu_si512(row + b + 64);
    // Lane t: sum of u over elements 8t .. 8t+7; -8 x sum q = 8 * 1024 - 8 x sum u.
    const __m512i sums = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(_mm512_sad_epu8(lo, zero))),
                                            _mm512_cvtepi64_epi32(_mm512_sad_epu8(hi, zero)), 1);
    _mm512_storeu_si512(row + kp + b / kI4Block * 64,
                        _mm512_sub_epi32(_mm512_set1_epi32(8 * 1024), _mm512_slli_epi32(sums, 3)));
    const __m512i l2 = _mm512_shuffle_epi8(lo, split), h2 = _mm512_shuffle_epi8(hi, split);
    _mm512_storeu_si512(row + b, _mm512_xor_si512(_mm512_permutex2var_epi64(l2, even_idx, h2), flip));
    _mm512_storeu_si512(row + b + 64, _mm512_xor_si512(_mm512_permutex2var_epi64(l2, odd_idx, h2), flip));
  }
  return sx;
}

// The 16 lanes' scales of the 128-element block at element p (lane t: group
// (p + 8t) / group). `valid`: the block's elements inside k (64 or 128).
inline __m512 i4s_scales(const float *s, int64_t p, int64_t group, int64_t valid) {
  if (group >= kI4Block) return _mm512_set1_ps(s[p / group]);
  const int n = int(valid / group);  // scales of this block (no read past the row's last)
  const __m512 v = _mm512_castps128_ps512(_mm_maskz_loadu_ps(__mmask8((1u << n) - 1), s + p / group));
  const __m512i idx = group == 32 ? _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0)
                                  : _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_permutexvar_ps(idx, v);
}

// out[i][j] = sum over blocks and lanes of scale * (int32 sum), for MR
// activation rows (quantize_row_i4s) and NR I4 weight rows.
template <int MR, int NR>
void vnni_block_i4s(const uint8_t *const *xr, const int8_t *const *wr, const float *const *ws, int64_t k, int64_t kp,
                    int64_t group, float out[kMR][kNR]) {
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  const __m512i nib = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8(char(0x88));
  for (int64_t p = 0; p < kp; p += kI4Block) {
    const int64_t valid = std::min<int64_t>(kI4Block, k - p);
    const __mmask64 wmask = valid == kI4Block ? ~__mmask64(0) : (~__mmask64(0)) >> (64 - valid / 2);
    __m512i lo[NR], hi[NR];
    __m512 sv[NR];
    for (int j = 0; j < NR; ++j) {
      // The file's nibbles are two's complement; ^ 8 makes each w + 8 (0 .. 15).
      // Prefetch 512 bytes ahead: within the row, or into the row the next tile
      // reads (RowTiles: each row pointer streams on through adjacent rows);
      // the hardware prefetchers alone left decode well under the bandwidth.
      _mm_prefetch(reinterpret_cast<const char *>(wr[j] + p / 2) + 512, _MM_HINT_T0);
      const __m512i b = _mm512_xor_si512(_mm512_maskz_loadu_epi8(wmask, wr[j] + p / 2), flip);
      lo[j] = _mm512_and_si512(b, nib);
      hi[j] = _mm512_and_si512(_mm512_srli_epi16(b, 4), nib);
      sv[j] = i4s_scales(ws[j], p, group, valid);
    }
    for (int i = 0; i < MR; ++i) {
      const __m512i xe = _mm512_loadu_si512(xr[i] + p), xo = _mm512_loadu_si512(xr[i] + p + 64);
      const __m512i c = _mm512_loadu_si512(xr[i] + kp + p / kI4Block * 64);
      for (int j = 0; j < NR; ++j) {
        const __m512i d = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(c, lo[j], xe), hi[j], xo);
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sv[j], acc[i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) out[i][j] = _mm512_reduce_add_ps(acc[i][j]);
}

}  // namespace

#include "linear_int_driver.inc"

namespace {

// I4 group-wise weights, few activation rows: vnni_block_i4s (above).
bool gemm_vnni_i4s(const Host &host, const parley_linear_args &a, const PackedWeight &w, parley_kernel_status *status) {
  const int64_t k = a.k, kp = (k + kI4Block - 1) / kI4Block * kI4Block;
  auto quantize = [&](const float *x, uint8_t *row) { return quantize_row_i4s(x, k, kp, row); };
  auto tile = [&]<int MR, int NR>(const uint8_t *const *xr, const int8_t *const *wr, const float *const *ws,
                                  const int64_t *, const float *sx, float(*vals)[kNR]) {
    float fdots[kMR][kNR];
    vnni_block_i4s<MR, NR>(xr, wr, ws, k, kp, w.group_size, fdots);
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) vals[i][j] = fdots[i][j] * sx[i];
  };
  return int_activation_gemm<uint8_t, kMR, kNR>(host, a, w, i4s_row_bytes(kp), kUnit, kMR, kNR, quantize, tile, status);
}

template <QKind K>
bool gemm_vnni(const Host &host, const parley_linear_args &a, const PackedWeight &w, parley_kernel_status *status) {
  const int64_t k = a.k, kp = (k + 63) / 64 * 64;
  auto quantize = [&](const float *x, uint8_t *u) { return quantize_row(x, k, kp, K == QKind::kI4Group, u); };
  auto tile = [&]<int MR, int NR>(const uint8_t *const *xr, const int8_t *const *wr, const float *const *ws,
                                  const int64_t *rows, const float *sx, float(*vals)[kNR]) {
    int32_t dots[kMR][kNR];
    float fdots[kMR][kNR];
    if constexpr (K == QKind::kI8Row)
      vnni_block_row<MR, NR>(xr, wr, k, dots);
    else
      vnni_block_group<K, MR, NR>(xr, wr, ws, k, w.group_size, fdots);
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) {
        if constexpr (K == QKind::kI8Row)
          vals[i][j] = float(dots[i][j] - 128 * w.row_sums[size_t(rows[j])]) * (sx[i] * w.scales[rows[j]]);
        else
          vals[i][j] = (fdots[i][j] - w.group_corr[size_t(rows[j])]) * sx[i];
      }
  };
  return int_activation_gemm<uint8_t, kMR, kNR>(host, a, w, kp, kUnit, kMR, kNR, quantize, tile, status);
}

// Every activation row quantised (quantize_row, natural order) into xq, kp
// bytes a row, split over the threads. kFailed: *status says why (out of
// memory, or a pool error); kNonFinite: a row holds NaN or infinity.
enum class QuantizedRows { kOk, kNonFinite, kFailed };
QuantizedRows quantize_rows(const Host &host, const parley_linear_args &a, int64_t kp, std::vector<uint8_t> &xq,
                            std::vector<float> &sx, parley_kernel_status *status) {
  const int64_t m = a.m, k = a.k;
  try {
    xq.resize(size_t(m * kp));
    sx.resize(size_t(m));
  } catch (const std::bad_alloc &) {
    *status = PARLEY_KERNEL_OUT_OF_MEMORY;
    return QuantizedRows::kFailed;
  }
  std::atomic<bool> nonfinite{false};
  const float *x = static_cast<const float *>(a.x);
  const parley_kernel_status st =
      host.parallel_for(m, even_grain(m, host.num_threads()), [&](int64_t i0, int64_t i1) -> parley_kernel_status {
        for (int64_t i = i0; i < i1; ++i) {
          sx[size_t(i)] = quantize_row(x + i * a.ld_x, k, kp, false, xq.data() + i * kp);
          if (sx[size_t(i)] < 0.f) nonfinite.store(true);
        }
        return PARLEY_KERNEL_OK;
      });
  if (st != PARLEY_KERNEL_OK) {
    *status = st;
    return QuantizedRows::kFailed;
  }
  return nonfinite.load() ? QuantizedRows::kNonFinite : QuantizedRows::kOk;
}

// Group-wise I8 / I4 weights, kVnniPackedMinM rows and more. The
// dot-product micro-kernel above spends three instructions per 64 products
// on group-wise weights (vpdpbusd, the conversion and the scaling FMA) and
// sums lanes at the end of every output. Here each thread converts a block of
// kPackCols weight rows once per call into VNNI order (for every 4 elements
// of k, the 4 bytes of each of the block's rows side by side: one vector = 16
// outputs x 4 elements) with the scales of each group side by side, and the
// micro-kernel keeps kPackRows x 32 outputs in registers: int32 sums over a
// group (a broadcast of 4 activation bytes x 2 weight vectors per step),
// then one conversion and one FMA with the group's 16 scales per vector.
// Same math as the micro-kernel: (sum_g s_g * sum_{p in g} u_p w_p -
// group_corr) * s_x, the float sums over groups in another order.
// bench_linear, 1 thread, group 32, m = 128: I8 210-305 GOP/s and I4 220-290
// against 110-180 and 100-135 for the micro-kernel (and ~135 for float32
// tiles through sgemm); from ~24 rows it wins with cold weights.
constexpr int64_t kPackCols = 32;
constexpr int kPackRows = 6;

// Writes the block of weight rows r0 .. r0 + cols (cols <= kPackCols; the
// other columns get zero weights and scales) in VNNI order: int32 element
// (q, j) of `packed` holds elements 4q .. 4q + 3 of row r0 + j, for q < k / 4;
// scales (g, j) = row r0 + j's scale of group g.
template <QKind K>
void pack_group_block(const PackedWeight &w, int64_t r0, int64_t cols, int8_t *natural, int32_t *packed,
                      float *scales) {
  const int64_t k = w.k, groups = k / w.group_size;
  // kChunk elements of k at a time: the 32 rows' part of the block written
  // (kChunk * 32 bytes) stays in L1 while the rows are gathered into it.
  constexpr int64_t kChunk = 256;
  for (int64_t p0 = 0; p0 < k; p0 += kChunk) {
    const int64_t p1 = std::min(k, p0 + kChunk);
    for (int64_t j = 0; j < kPackCols; ++j) {
      if (j >= cols) {
        for (int64_t q = p0 / 4; q < p1 / 4; ++q) packed[q * kPackCols + j] = 0;
        continue;
      }
      const uint8_t *row = w.data + (r0 + j) * w.ld_bytes;
      const int32_t *src;
      if constexpr (K == QKind::kI4Group) {
        // Nibbles to signed bytes in element order: low nibble = even element.
        const __m256i nib = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
        for (int64_t p = p0; p < p1; p += 64) {
          const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(row + p / 2));
          const __m256i lo = _mm256_sub_epi8(_mm256_xor_si256(_mm256_and_si256(b, nib), eight), eight);
          const __m256i hi =
              _mm256_sub_epi8(_mm256_xor_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), nib), eight), eight);
          const __m256i a = _mm256_unpacklo_epi8(lo, hi), c = _mm256_unpackhi_epi8(lo, hi);
          _mm256_storeu_si256(reinterpret_cast<__m256i *>(natural + p - p0), _mm256_permute2x128_si256(a, c, 0x20));
          _mm256_storeu_si256(reinterpret_cast<__m256i *>(natural + p - p0 + 32),
                              _mm256_permute2x128_si256(a, c, 0x31));
        }
        src = reinterpret_cast<const int32_t *>(natural) - p0 / 4;
      } else {
        src = reinterpret_cast<const int32_t *>(row);
      }
      for (int64_t q = p0 / 4; q < p1 / 4; ++q) {
        int32_t v;
        std::memcpy(&v, src + q, 4);
        packed[q * kPackCols + j] = v;
      }
    }
  }
  for (int64_t j = 0; j < kPackCols; ++j) {
    const float *s = j < cols ? w.scales + (r0 + j) * groups : nullptr;
    for (int64_t g = 0; g < groups; ++g) scales[g * kPackCols + j] = s ? s[g] : 0.f;
  }
}

// out[i][j] for MR activation rows x kPackCols outputs of a packed block.
template <int MR>
void packed_group_tile(const uint8_t *const *xu, const int32_t *packed, const float *scales, int64_t k, int64_t group,
                       float out[kPackRows][kPackCols]) {
  __m512 facc[MR][2];
  for (int i = 0; i < MR; ++i) facc[i][0] = facc[i][1] = _mm512_setzero_ps();
  const int64_t gq = group / 4;
  for (int64_t q0 = 0, g = 0; q0 < k / 4; q0 += gq, ++g) {
    __m512i iacc[MR][2];
    for (int i = 0; i < MR; ++i) iacc[i][0] = iacc[i][1] = _mm512_setzero_si512();
    for (int64_t q = q0; q < q0 + gq; ++q) {
      const __m512i w0 = _mm512_loadu_si512(packed + q * kPackCols),
                    w1 = _mm512_loadu_si512(packed + q * kPackCols + 16);
      for (int i = 0; i < MR; ++i) {
        int32_t xv;
        std::memcpy(&xv, xu[i] + 4 * q, 4);
        const __m512i xb = _mm512_set1_epi32(xv);
        iacc[i][0] = _mm512_dpbusd_epi32(iacc[i][0], xb, w0);
        iacc[i][1] = _mm512_dpbusd_epi32(iacc[i][1], xb, w1);
      }
    }
    const __m512 s0 = _mm512_loadu_ps(scales + g * kPackCols), s1 = _mm512_loadu_ps(scales + g * kPackCols + 16);
    for (int i = 0; i < MR; ++i) {
      facc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[i][0]), s0, facc[i][0]);
      facc[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[i][1]), s1, facc[i][1]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    _mm512_storeu_ps(out[i], facc[i][0]);
    _mm512_storeu_ps(out[i] + 16, facc[i][1]);
  }
}

using PackedTile = void (*)(const uint8_t *const *, const int32_t *, const float *, int64_t, int64_t,
                            float (*)[kPackCols]);
constexpr PackedTile kPackedTiles[kPackRows] = {packed_group_tile<1>, packed_group_tile<2>, packed_group_tile<3>,
                                                packed_group_tile<4>, packed_group_tile<5>, packed_group_tile<6>};

template <QKind K>
bool gemm_vnni_group_packed(const Host &host, const parley_linear_args &a, const PackedWeight &w,
                            parley_kernel_status *status) {
  const int64_t m = a.m, n = a.n, k = a.k, groups = k / w.group_size;  // k % 64 == 0: rows of k bytes
  std::vector<uint8_t> xq;
  std::vector<float> sx;
  if (const QuantizedRows q = quantize_rows(host, a, k, xq, sx, status); q != QuantizedRows::kOk)
    return q == QuantizedRows::kFailed;  // non-finite: the float paths propagate NaN and infinity
  const int64_t blocks = (n + kPackCols - 1) / kPackCols;
  *status = host.parallel_for(
      blocks, even_grain(blocks, host.num_threads()), [&](int64_t b0, int64_t b1) -> parley_kernel_status {
        const size_t packed_bytes = size_t(k) * kPackCols, scale_bytes = size_t(groups) * kPackCols * sizeof(float);
        uint8_t *mem = static_cast<uint8_t *>(host.scratch(packed_bytes + scale_bytes + 256 + 64));
        if (!mem) return PARLEY_KERNEL_OUT_OF_MEMORY;
        int32_t *packed = reinterpret_cast<int32_t *>(mem);
        float *scales = reinterpret_cast<float *>(mem + packed_bytes);
        int8_t *natural = reinterpret_cast<int8_t *>(mem + packed_bytes + scale_bytes);
        float vals[kPackRows][kPackCols];
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t r0 = b * kPackCols, cols = std::min(kPackCols, n - r0);
          pack_group_block<K>(w, r0, cols, natural, packed, scales);
          for (int64_t i0 = 0; i0 < m; i0 += kPackRows) {
            const int mr = int(std::min<int64_t>(kPackRows, m - i0));
            const uint8_t *xr[kPackRows];
            for (int i = 0; i < kPackRows; ++i) xr[i] = xq.data() + (i0 + std::min(i, mr - 1)) * k;
            kPackedTiles[mr - 1](xr, packed, scales, k, w.group_size, vals);
            for (int i = 0; i < mr; ++i) {
              const float si = sx[size_t(i0 + i)];
              for (int64_t j = 0; j < cols; ++j) vals[i][j] = (vals[i][j] - w.group_corr[size_t(r0 + j)]) * si;
              linear_epilogue(a, i0 + i, r0, vals[i], cols);
            }
          }
        }
        return PARLEY_KERNEL_OK;
      });
  return true;
}

// dst[0 .. n) = src[0 .. n), non-temporal stores where dst is 64-byte
// aligned: a row that is not read whole again (logits with their block
// statistics) goes to memory without first being read in for ownership,
// half the traffic of a cached store. The caller fences (_mm_sfence) before
// its results are used.
void stream_out(float *dst, const float *src, int64_t n) {
  int64_t j = 0;
  for (; j < n && (reinterpret_cast<uintptr_t>(dst + j) & 63) != 0; ++j) dst[j] = src[j];
  for (; j + V <= n; j += V) _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
  for (; j < n; ++j) dst[j] = src[j];
}

// I8 per-row weights, kOnednnI8MinM rows and more: oneDNN's u8s8s32 GEMM.
// Its JIT kernels pack both operands into cache-sized blocks and keep 16
// outputs per register (no lane sums), which the dot-product micro-kernel
// above, reading weights in the file's layout, cannot (bench_linear, 1 thread,
// Xeon with AVX512-VNNI, m = 128: 300-415 GOP/s against 155-245; from ~24
// rows it wins with the weights coming from DRAM). It returns the plain
// dot sum_p u_p w_p and the epilogue subtracts 128 * row_sum (prepared once):
// sum_p (u_p - 128) w_p exactly, the integer the micro-kernel computes, so the
// outputs are the same bits for every m. (Passing the zero point ao = 128
// instead made oneDNN re-sum every weight row in scalar code on each call,
// as many instructions as its VNNI GEMM itself at 32 rows.)
bool gemm_i8_row_onednn(const Host &host, const parley_linear_args &a, const PackedWeight &w,
                        parley_kernel_status *status, bool *stats_written) {
  if (auto st = onednn_ready(host)) {
    *status = st;
    return true;
  }
  const int64_t m = a.m, n = a.n, k = a.k, kp = (k + 63) / 64 * 64;
  std::vector<uint8_t> xq;
  std::vector<float> sx;
  if (const QuantizedRows q = quantize_rows(host, a, kp, xq, sx, status); q != QuantizedRows::kOk)
    return q == QuantizedRows::kFailed;  // non-finite: the float paths propagate NaN and infinity
  // As many tiles of output features per thread, each up to kOnednnI8MaxN
  // wide, rows in blocks of at most kOnednnI8MaxM.
  const int64_t threads = std::max(1, host.num_threads());
  const int64_t tiles = threads * ((n + threads * kOnednnI8MaxN - 1) / (threads * kOnednnI8MaxN));
  // With statistics, tiles on their block grid, so each tile finishes its
  // blocks (otherwise 16 columns, for an even split of a 576-wide layer).
  constexpr int64_t kStatsBlock = PARLEY_LINEAR_STATS_BLOCK;
  const bool stats = a.block_max != nullptr;
  const int64_t grid = stats ? kStatsBlock : 16;
  const int64_t nb = ((n + tiles - 1) / tiles + grid - 1) / grid * grid, mb = std::min(m, kOnednnI8MaxM);
  std::atomic<int> lib_error{0};
  const bool plain = !a.residual && a.activation == PARLEY_ACT_NONE;  // at most a bias
  const parley_kernel_status st =
      host.parallel_for((n + nb - 1) / nb, 1, [&](int64_t t0, int64_t t1) -> parley_kernel_status {
        void *mem = host.scratch(size_t(mb * nb) * (sizeof(int32_t) + sizeof(float)));
        if (!mem) return PARLEY_KERNEL_OUT_OF_MEMORY;
        int32_t *c = static_cast<int32_t *>(mem);
        float *vals = reinterpret_cast<float *>(c + mb * nb);
        const int32_t co = 0;
        SingleThreadedLibrary single;
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t n0 = t * nb, nc = std::min(nb, n - n0);
          const int8_t *wt = reinterpret_cast<const int8_t *>(w.data + n0 * w.ld_bytes);
          for (int64_t i0 = 0; i0 < m; i0 += mb) {
            const int64_t mc = std::min(mb, m - i0);
            const dnnl_status_t s = dnnl_gemm_u8s8s32('N', 'T', 'F', mc, nc, k, 1.f, xq.data() + i0 * kp, kp, 0, wt,
                                                      w.ld_bytes, 0, 0.f, c, nc, &co);
            if (s != dnnl_success) {
              lib_error.store(int(s));
              return s == dnnl_out_of_memory ? PARLEY_KERNEL_OUT_OF_MEMORY : PARLEY_KERNEL_DEVICE_ERROR;
            }
            for (int64_t i = 0; i < mc; ++i) {
              const float si = sx[size_t(i0 + i)];
              const int32_t *ci = c + i * nc;
              const float *sw = w.scales + n0;
              float *o = static_cast<float *>(a.out) + (i0 + i) * a.ld_out + n0;
              const int64_t s0 = (i0 + i) * a.ld_stats + n0 / kStatsBlock;
              // The scaled products, then the one epilogue of every path
              // (epilogue_span, also what the micro-kernel below
              // onednn_i8_min_m() rows runs): a bias added in the same
              // expression contracted into an FMA here, one rounding fewer,
              // so a logit changed with the batch's row count.
              const int32_t *rs = w.row_sums.data() + n0;
              for (int64_t j = 0; j < nc; ++j) vals[j] = float(ci[j] - 128 * rs[j]) * (si * sw[j]);
              if (plain && stats) {
                // The statistics from the tile in L1, then one streamed
                // copy out: a logits row is not read from memory again for
                // its log-normaliser and top entries (and reading `o` right
                // after storing it waited for the stores).
                epilogue_span(vals, a.bias ? a.bias + n0 : nullptr, PARLEY_ACT_NONE, nullptr, vals, nc);
                block_stats(vals, nc, a.block_max + s0, a.block_sum + s0);
                stream_out(o, vals, nc);
              } else {
                linear_epilogue(a, i0 + i, n0, vals, nc);
                if (stats) block_stats(o, nc, a.block_max + s0, a.block_sum + s0);
              }
            }
          }
        }
        if (plain && stats) _mm_sfence();  // the streamed rows, before the join publishes them
        return PARLEY_KERNEL_OK;
      });
  *status = st;
  if (stats_written) *stats_written = stats;
  if (st != PARLEY_KERNEL_OK && lib_error.load() && lib_error.load() != int(dnnl_out_of_memory))
    *status = host.fail(st, "linear: oneDNN u8s8s32 GEMM failed with status %d (weight '%.200s')", lib_error.load(),
                        w.name.c_str());
  return true;
}

// ---- I8 per-row weights in VNNI panels ----------------------------------------
//
// prepare_weight lays the weight out once (pack_i8_panels) in tiles of 64
// output features: per step of 4 elements of k, 256 bytes = 4 vectors of 16
// features x 4 bytes, the operand vpdpbusd takes against a broadcast of 4
// activation bytes. No lane sums at the end, no packing per call, and a
// tile is one sequential stream. Every row count runs on it: decode (1 row)
// streams the tiles once; batched products keep 6 rows x 64 outputs in 24
// registers, each weight vector used 6 times. Tiles are whole (zeros past n
// and k), so every tile runs the same micro-kernel, and a tile is one
// block of the output statistics.
// The integers are those of the other VNNI paths (sum_p u_p w_p, then
// - 128 * row_sum), and so are the outputs, bit for bit: the tests compare
// them (i8_panels_enabled() off runs the file-layout paths).
// bench_linear --hot (weights in cache), 1 thread, AMX Xeon, k = 896, n =
// 4864: 1.6x the file-layout paths from 8 rows (at 32: 601 against 386
// GFLOP/s of oneDNN's u8s8s32 GEMM, which packs both operands every call),
// equal at 2.
constexpr int64_t kPanelCols = 16;
constexpr int kTilePanels = 4;  // 64 outputs a tile: one statistics block
constexpr int kPanelRows = 6;

// The micro-kernel, in assembly: c[i][0 .. 64) = the int32 dots of
// activation row x + i * ldx (i < MR) with the tile at b, over `steps` steps.
// GCC 12 spilled the accumulators of this loop written with intrinsics to
// the stack from 3 rows on (at 6 rows: 40 % of the instruction rate clang
// reaches on that source); here they stay in zmm8-zmm31 (4 a row), the
// weight vectors in zmm0-zmm3, the broadcasts in zmm4 / zmm5. The tile is
// prefetched 1,024 bytes ahead, as the file-layout kernels do.
// clang-format off
#define PARLEY_PZ4(a, b, c, d)                        \
  "vpxord %%zmm" #a ", %%zmm" #a ", %%zmm" #a "\n\t" \
  "vpxord %%zmm" #b ", %%zmm" #b ", %%zmm" #b "\n\t" \
  "vpxord %%zmm" #c ", %%zmm" #c ", %%zmm" #c "\n\t" \
  "vpxord %%zmm" #d ", %%zmm" #d ", %%zmm" #d "\n\t"
#define PARLEY_PDP4(x, a, b, c, d)                 \
  "vpdpbusd %%zmm0, %%zmm" #x ", %%zmm" #a "\n\t" \
  "vpdpbusd %%zmm1, %%zmm" #x ", %%zmm" #b "\n\t" \
  "vpdpbusd %%zmm2, %%zmm" #x ", %%zmm" #c "\n\t" \
  "vpdpbusd %%zmm3, %%zmm" #x ", %%zmm" #d "\n\t"
#define PARLEY_PST4(off, a, b, c, d)                \
  "vmovdqu64 %%zmm" #a ", " #off "(%[c])\n\t"      \
  "vmovdqu64 %%zmm" #b ", " #off "+64(%[c])\n\t"   \
  "vmovdqu64 %%zmm" #c ", " #off "+128(%[c])\n\t"  \
  "vmovdqu64 %%zmm" #d ", " #off "+192(%[c])\n\t"
// clang-format on
// Per row r: zero its accumulators, its step (broadcast, 4 products), its stores.
#define PARLEY_Z0 PARLEY_PZ4(8, 9, 10, 11)
#define PARLEY_Z1 PARLEY_PZ4(12, 13, 14, 15)
#define PARLEY_Z2 PARLEY_PZ4(16, 17, 18, 19)
#define PARLEY_Z3 PARLEY_PZ4(20, 21, 22, 23)
#define PARLEY_Z4 PARLEY_PZ4(24, 25, 26, 27)
#define PARLEY_Z5 PARLEY_PZ4(28, 29, 30, 31)
#define PARLEY_B0 "vpbroadcastd (%[x]), %%zmm4\n\t" PARLEY_PDP4(4, 8, 9, 10, 11)
#define PARLEY_B1 "vpbroadcastd (%[x],%[lx],1), %%zmm5\n\t" PARLEY_PDP4(5, 12, 13, 14, 15)
#define PARLEY_B2 "vpbroadcastd (%[x],%[lx],2), %%zmm4\n\t" PARLEY_PDP4(4, 16, 17, 18, 19)
#define PARLEY_B3 "vpbroadcastd (%[x3]), %%zmm5\n\t" PARLEY_PDP4(5, 20, 21, 22, 23)
#define PARLEY_B4 "vpbroadcastd (%[x3],%[lx],1), %%zmm4\n\t" PARLEY_PDP4(4, 24, 25, 26, 27)
#define PARLEY_B5 "vpbroadcastd (%[x3],%[lx],2), %%zmm5\n\t" PARLEY_PDP4(5, 28, 29, 30, 31)
#define PARLEY_S0 PARLEY_PST4(0, 8, 9, 10, 11)
#define PARLEY_S1 PARLEY_PST4(256, 12, 13, 14, 15)
#define PARLEY_S2 PARLEY_PST4(512, 16, 17, 18, 19)
#define PARLEY_S3 PARLEY_PST4(768, 20, 21, 22, 23)
#define PARLEY_S4 PARLEY_PST4(1024, 24, 25, 26, 27)
#define PARLEY_S5 PARLEY_PST4(1280, 28, 29, 30, 31)
#define PARLEY_PANEL_TILE(name, ZEROS, BODY, STORES)                                                                  \
  void name(const uint8_t *x, int64_t ldx, const int8_t *b, int64_t steps, int32_t(*c)[kTilePanels * kPanelCols]) {   \
    const uint8_t *x3 = x + 3 * ldx;                                                                                  \
    asm volatile(ZEROS                                                                                                \
                 "test %[n], %[n]\n\t"                                                                                \
                 "jz 2f\n\t"                                                                                          \
                 "1:\n\t"                                                                                             \
                 "prefetcht0 1024(%[b])\n\t"                                                                          \
                 "prefetcht0 1088(%[b])\n\t"                                                                          \
                 "prefetcht0 1152(%[b])\n\t"                                                                          \
                 "prefetcht0 1216(%[b])\n\t"                                                                          \
                 "vmovdqu64 (%[b]), %%zmm0\n\t"                                                                       \
                 "vmovdqu64 64(%[b]), %%zmm1\n\t"                                                                     \
                 "vmovdqu64 128(%[b]), %%zmm2\n\t"                                                                    \
                 "vmovdqu64 192(%[b]), %%zmm3\n\t" BODY                                                               \
                 "add $256, %[b]\n\t"                                                                                 \
                 "add $4, %[x]\n\t"                                                                                   \
                 "add $4, %[x3]\n\t"                                                                                  \
                 "dec %[n]\n\t"                                                                                       \
                 "jnz 1b\n\t"                                                                                         \
                 "2:\n\t" STORES                                                                                      \
                 : [b] "+r"(b), [x] "+r"(x), [x3] "+r"(x3), [n] "+r"(steps)                                           \
                 : [lx] "r"(ldx), [c] "r"(c)                                                                          \
                 : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm8", "xmm9", "xmm10", "xmm11",  \
                   "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", \
                   "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31");                  \
  }
static_assert(kPanelRows == 6 && kTilePanels == 4 && kTilePanels * kPanelCols * sizeof(int32_t) == 256,
              "the assembly's registers and offsets");
PARLEY_PANEL_TILE(panel_tile_1, PARLEY_Z0, PARLEY_B0, PARLEY_S0)
PARLEY_PANEL_TILE(panel_tile_2, PARLEY_Z0 PARLEY_Z1, PARLEY_B0 PARLEY_B1, PARLEY_S0 PARLEY_S1)
PARLEY_PANEL_TILE(panel_tile_3, PARLEY_Z0 PARLEY_Z1 PARLEY_Z2, PARLEY_B0 PARLEY_B1 PARLEY_B2,
                  PARLEY_S0 PARLEY_S1 PARLEY_S2)
PARLEY_PANEL_TILE(panel_tile_4, PARLEY_Z0 PARLEY_Z1 PARLEY_Z2 PARLEY_Z3, PARLEY_B0 PARLEY_B1 PARLEY_B2 PARLEY_B3,
                  PARLEY_S0 PARLEY_S1 PARLEY_S2 PARLEY_S3)
PARLEY_PANEL_TILE(panel_tile_5, PARLEY_Z0 PARLEY_Z1 PARLEY_Z2 PARLEY_Z3 PARLEY_Z4,
                  PARLEY_B0 PARLEY_B1 PARLEY_B2 PARLEY_B3 PARLEY_B4, PARLEY_S0 PARLEY_S1 PARLEY_S2 PARLEY_S3 PARLEY_S4)
PARLEY_PANEL_TILE(panel_tile_6, PARLEY_Z0 PARLEY_Z1 PARLEY_Z2 PARLEY_Z3 PARLEY_Z4 PARLEY_Z5,
                  PARLEY_B0 PARLEY_B1 PARLEY_B2 PARLEY_B3 PARLEY_B4 PARLEY_B5,
                  PARLEY_S0 PARLEY_S1 PARLEY_S2 PARLEY_S3 PARLEY_S4 PARLEY_S5)
#undef PARLEY_PANEL_TILE
#undef PARLEY_PZ4
#undef PARLEY_PDP4
#undef PARLEY_PST4
#undef PARLEY_Z0
#undef PARLEY_Z1
#undef PARLEY_Z2
#undef PARLEY_Z3
#undef PARLEY_Z4
#undef PARLEY_Z5
#undef PARLEY_B0
#undef PARLEY_B1
#undef PARLEY_B2
#undef PARLEY_B3
#undef PARLEY_B4
#undef PARLEY_B5
#undef PARLEY_S0
#undef PARLEY_S1
#undef PARLEY_S2
#undef PARLEY_S3
#undef PARLEY_S4
#undef PARLEY_S5

using PanelTile = void (*)(const uint8_t *, int64_t, const int8_t *, int64_t, int32_t (*)[kTilePanels * kPanelCols]);
// [rows - 1]
constexpr PanelTile kPanelTiles[kPanelRows] = {panel_tile_1, panel_tile_2, panel_tile_3,
                                               panel_tile_4, panel_tile_5, panel_tile_6};

bool gemm_i8_row_panels(const Host &host, const parley_linear_args &a, const PackedWeight &w,
                        parley_kernel_status *status, bool *stats_written) {
  const int64_t m = a.m, n = a.n, kp = w.panel_k, steps = kp / 4, tile_bytes = kp * kTilePanels * kPanelCols;
  std::vector<uint8_t> xq;
  std::vector<float> sx;
  if (const QuantizedRows q = quantize_rows(host, a, kp, xq, sx, status); q != QuantizedRows::kOk)
    return q == QuantizedRows::kFailed;  // non-finite: the float paths propagate NaN and infinity
  constexpr int64_t kTileCols = kTilePanels * kPanelCols;
  static_assert(kTileCols == PARLEY_LINEAR_STATS_BLOCK, "a tile finishes its statistics block");
  const int64_t tiles = (n + kTileCols - 1) / kTileCols, threads = std::max(1, host.num_threads());
  // Few tiles for the threads (a narrow product with many rows): the rows
  // are split too, in whole micro-tiles; a task is (tile, row group), the
  // groups of one tile next to each other, so a thread's tasks share weights.
  int64_t per_group = m;
  if (tiles < 4 * threads && m > kPanelRows) {
    const int64_t groups = std::min((m + kPanelRows - 1) / kPanelRows, (4 * threads + tiles - 1) / tiles);
    per_group = ((m + groups - 1) / groups + kPanelRows - 1) / kPanelRows * kPanelRows;
  }
  const int64_t groups = (m + per_group - 1) / per_group, tasks = tiles * groups;
  constexpr int64_t kStatsBlock = PARLEY_LINEAR_STATS_BLOCK;
  const bool stats = a.block_max != nullptr;
  const bool plain = !a.residual && a.activation == PARLEY_ACT_NONE;  // at most a bias
  const parley_kernel_status st =
      host.parallel_for(tasks, even_grain(tasks, threads), [&](int64_t t0, int64_t t1) -> parley_kernel_status {
        alignas(64) int32_t c[kPanelRows][kTileCols];
        alignas(64) float vals[kTileCols];
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t tile = t / groups, i_begin = (t % groups) * per_group, i_end = std::min(m, i_begin + per_group);
          const int64_t j0 = tile * kTileCols, cols = std::min(kTileCols, n - j0);
          const int8_t *b = w.panels.get() + tile * tile_bytes;
          const int32_t *rs = w.row_sums.data() + j0;
          const float *sw = w.scales + j0;
          for (int64_t i0 = i_begin; i0 < i_end; i0 += kPanelRows) {
            const int rows = int(std::min<int64_t>(kPanelRows, i_end - i0));
            kPanelTiles[rows - 1](xq.data() + i0 * kp, kp, b, steps, c);
            for (int r = 0; r < rows; ++r) {
              const int64_t i = i0 + r;
              const float si = sx[size_t(i)];
              // The expression of every VNNI path (and the epilogue of all).
              for (int64_t j = 0; j < cols; ++j) vals[j] = float(c[r][j] - 128 * rs[j]) * (si * sw[j]);
              float *o = static_cast<float *>(a.out) + i * a.ld_out + j0;
              const int64_t s0 = i * a.ld_stats + j0 / kStatsBlock;
              if (plain && stats) {
                epilogue_span(vals, a.bias ? a.bias + j0 : nullptr, PARLEY_ACT_NONE, nullptr, vals, cols);
                block_stats(vals, cols, a.block_max + s0, a.block_sum + s0);
                stream_out(o, vals, cols);
              } else {
                linear_epilogue(a, i, j0, vals, cols);
                if (stats) block_stats(o, cols, a.block_max + s0, a.block_sum + s0);
              }
            }
          }
        }
        if (plain && stats) _mm_sfence();  // the streamed rows, before the join publishes them
        return PARLEY_KERNEL_OK;
      });
  *status = st;
  if (stats_written) *stats_written = stats;
  return true;
}

}  // namespace

bool gemm_int_vnni_avx512(const Host &host, const parley_linear_args &a, const PackedWeight &w,
                          parley_kernel_status *status, bool *stats_written) {
  if (a.k > 65536) return false;
  if (w.panels && w.row_sums.size() == size_t(a.n)) return gemm_i8_row_panels(host, a, w, status, stats_written);
  if (w.dtype == PARLEY_DTYPE_I8 && w.quant == PARLEY_QUANT_PER_ROW && w.row_sums.size() == size_t(a.n))
    return a.m >= onednn_i8_min_m() ? gemm_i8_row_onednn(host, a, w, status, stats_written)
                                    : gemm_vnni<QKind::kI8Row>(host, a, w, status);
  if (w.quant != PARLEY_QUANT_GROUPWISE || a.k % 64 != 0 || w.group_corr.size() != size_t(a.n)) return false;
  const bool packed = a.m >= vnni_packed_min_m();
  if (w.dtype == PARLEY_DTYPE_I8)
    return packed ? gemm_vnni_group_packed<QKind::kI8Group>(host, a, w, status)
                  : gemm_vnni<QKind::kI8Group>(host, a, w, status);
  if (w.dtype == PARLEY_DTYPE_I4)
    return packed ? gemm_vnni_group_packed<QKind::kI4Group>(host, a, w, status) : gemm_vnni_i4s(host, a, w, status);
  return false;
}

bool pack_i8_panels(PackedWeight &w) {
  if (w.dtype != PARLEY_DTYPE_I8 || w.quant != PARLEY_QUANT_PER_ROW || w.k > 65536 || w.n < 1 || w.k < 1) return false;
  const int64_t n = w.n, k = w.k, kp = (k + 63) / 64 * 64;
  const int64_t per_tile = kTilePanels * kPanelCols, panels = (n + per_tile - 1) / per_tile * kTilePanels;
  const uint64_t bytes = uint64_t(panels) * uint64_t(kPanelCols) * uint64_t(kp);
  int8_t *out = static_cast<int8_t *>(std::aligned_alloc(64, size_t(bytes)));
  if (!out) return false;  // the file-layout paths serve the weight instead
  for (int64_t col = 0; col < panels * kPanelCols; ++col) {
    // Column col: tile col / 64, at byte 4 * (col % 64) of each 256-byte step.
    int8_t *dst = out + col / per_tile * per_tile * kp + 4 * (col % per_tile);
    if (col >= n) {
      for (int64_t s = 0; s < kp / 4; ++s) std::memset(dst + s * 4 * per_tile, 0, 4);
      continue;
    }
    const uint8_t *row = w.data + col * w.ld_bytes;
    int64_t s = 0;
    for (; 4 * s + 4 <= k; ++s) std::memcpy(dst + s * 4 * per_tile, row + 4 * s, 4);
    for (; s < kp / 4; ++s)
      for (int64_t t = 0; t < 4; ++t) dst[s * 4 * per_tile + t] = 4 * s + t < k ? int8_t(row[4 * s + t]) : int8_t(0);
  }
  w.panels.reset(out);
  w.panel_k = kp;
  w.panel_bytes = bytes;
  return true;
}

}  // namespace parley::cpu

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ---------------------------------------------------------------------------
// BF16 weights with AVX512-BF16 (vdpbf16ps), for m > kSmallM only.
//
// LOSSY: the activations are rounded to bfloat16 (relative error <= 2^-8 per
// element) so that both operands of vdpbf16ps are bf16; products are exact in
// fp32 and accumulated in fp32 (the instruction flushes denormals). It serves
// only batched / prefill products (m > kSmallM), where it halves the
// instructions of the float32 path; decode (m <= kSmallM) keeps float32
// activations in the GEMV kernel. The bound the tests check:
//   |dv| <= 2^-8 sum_p |w_p x_p| + gamma_{k+3} sum_p |w_p x_p|.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")
#endif

namespace parley::cpu {

namespace {

// x row -> kp bf16 values (round to nearest even), zero padded.
void bf16_row(const float *x, int64_t k, int64_t kp, uint16_t *dst) {
  for (int64_t p = 0; p < kp; p += 32) {
    const int64_t r0 = k - p, r1 = k - p - 16;
    const __mmask16 m0 = r0 >= 16 ? __mmask16(0xFFFF) : r0 <= 0 ? __mmask16(0) : __mmask16((1u << r0) - 1);
    const __mmask16 m1 = r1 >= 16 ? __mmask16(0xFFFF) : r1 <= 0 ? __mmask16(0) : __mmask16((1u << r1) - 1);
    const __m512 lo = _mm512_maskz_loadu_ps(m0, x + p), hi = _mm512_maskz_loadu_ps(m1, x + p + 16);
    _mm512_storeu_si512(dst + p, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
}

template <int MR, int NR>
void bf16_block(const uint16_t *const *xb, const uint16_t *const *wr, int64_t k, float out[kMR][kNR]) {
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < k; p += 32) {
    const int64_t rem = k - p;
    const __mmask32 mask = rem >= 32 ? __mmask32(0xFFFFFFFFu) : __mmask32((1u << rem) - 1);
    __m512i wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_maskz_loadu_epi16(mask, wr[j] + p);
    for (int i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_loadu_si512(xb[i] + p);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], (__m512bh)xv, (__m512bh)wv[j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) out[i][j] = _mm512_reduce_add_ps(acc[i][j]);
}

template <int MR>
void bf16_rows(const uint16_t *const *xb, const uint16_t *const *wr, int nr, int64_t k, float out[kMR][kNR]) {
  switch (nr) {
    case 1:
      bf16_block<MR, 1>(xb, wr, k, out);
      break;
    case 2:
      bf16_block<MR, 2>(xb, wr, k, out);
      break;
    case 3:
      bf16_block<MR, 3>(xb, wr, k, out);
      break;
    default:
      bf16_block<MR, 4>(xb, wr, k, out);
      break;
  }
}

}  // namespace

bool gemm_bf16_avx512(const Host &host, const parley_linear_args &a, const PackedWeight &w,
                      parley_kernel_status *status) {
  if (w.dtype != PARLEY_DTYPE_BF16) return false;
  const int64_t m = a.m, n = a.n, k = a.k;
  const int64_t kp = (k + 31) / 32 * 32;
  std::vector<uint16_t> xb(static_cast<size_t>(m * kp));
  const float *x = static_cast<const float *>(a.x);
  parley_kernel_status st =
      host.parallel_for(m, even_grain(m, host.num_threads()), [&](int64_t i0, int64_t i1) -> parley_kernel_status {
        for (int64_t i = i0; i < i1; ++i) bf16_row(x + i * a.ld_x, k, kp, xb.data() + i * kp);
        return PARLEY_KERNEL_OK;
      });
  if (st != PARLEY_KERNEL_OK) {
    *status = st;
    return true;
  }
  const int64_t row_bytes = kp * 2;
  const int64_t units = (n + kUnit - 1) / kUnit;
  *status = host.parallel_for(
      units, even_grain(units, host.num_threads()), [&](int64_t u0, int64_t u1) -> parley_kernel_status {
        float out[kMR][kNR];
        // Activation rows in blocks of ~256 KiB (they stay in L2 while the
        // thread's weight units pass by), each unit's rows re-read per block.
        const int64_t mb = std::max<int64_t>(kMR, (int64_t(256) << 10) / row_bytes / kMR * kMR);
        for (int64_t ib = 0; ib < m; ib += mb)
          for (int64_t u = u0; u < u1; ++u) {
            const int64_t j_end = std::min(n, (u + 1) * kUnit);
            for (int64_t i0 = ib; i0 < std::min(m, ib + mb); i0 += kMR) {
              const int mr = int(std::min<int64_t>(kMR, m - i0));
              const uint16_t *xr[kMR];
              for (int i = 0; i < kMR; ++i) xr[i] = xb.data() + (i0 + std::min(i, mr - 1)) * kp;
              for (int64_t j0 = u * kUnit; j0 < j_end; j0 += kNR) {
                const int nr = int(std::min<int64_t>(kNR, j_end - j0));
                const uint16_t *wr[kNR];
                for (int j = 0; j < kNR; ++j)
                  wr[j] = reinterpret_cast<const uint16_t *>(w.data + (j0 + std::min(j, nr - 1)) * w.ld_bytes);
                switch (mr) {
                  case 1:
                    bf16_rows<1>(xr, wr, nr, k, out);
                    break;
                  case 2:
                    bf16_rows<2>(xr, wr, nr, k, out);
                    break;
                  case 3:
                    bf16_rows<3>(xr, wr, nr, k, out);
                    break;
                  default:
                    bf16_rows<4>(xr, wr, nr, k, out);
                    break;
                }
                for (int i = 0; i < mr; ++i) linear_epilogue(a, i0 + i, j0, out[i], nr);
              }
            }
          }
        return PARLEY_KERNEL_OK;
      });
  return true;
}

}  // namespace parley::cpu

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
