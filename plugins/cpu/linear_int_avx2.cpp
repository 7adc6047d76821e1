// Integer weights x int8-valued activations on AVX2 (no VNNI), for the same
// products as gemm_int_vnni_avx512 (linear_avx512.cpp), which it mirrors:
//
// Each activation row is quantised on the fly, symmetric, per row, exactly as
// there: s_x = max|x| / 127, q = round(x / s_x) in [-127, 127].
// I8 weights: the activation bytes are widened to int16 once per row and the
// products run as vpmaddwd (int16 x int16, adjacent pairs added into int32),
// with each weight vector widened from its stored bytes in registers.
// vpmaddubsw would take bytes directly, but its int16 pair sums saturate for
// u8 x s8 operands, and the sign trick that avoids that costs as many
// instructions as the widening while it breaks on a weight byte of -128.
// I4 weights: nibbles fit vpmaddubsw (block_group).
//  * I8 per-row: one int32 sum per output over the whole row, exact (no
//    overflow for k <= 131072: 127 * 128 * 131072 = 2^31 - 2^24), so the dot
//    products are the very integers the VNNI kernel computes and the outputs
//    are bit-identical to it: float(dot) * (s_x * s_w).
//  * I8 / I4 group-wise: the int32 sums of each group are converted to float
//    and multiplied by the group's scale, accumulated in float.
//    I4 nibbles are unpacked in registers (low nibbles = even elements, high
//    = odd), and q is stored permuted the same way within every 32 elements.
// The only extra error over float32 is the rounding of x to q * s_x (the
// bound is the VNNI kernel's; tests/kernels/test_linear.cpp checks it).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "linear_kernels.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace parley::cpu {

namespace {

enum class QKind { kI8Row, kI8Group, kI4Group };

constexpr int kMR = 4;               // activation rows per micro-kernel
constexpr int kNR = 3;               // weight rows per micro-kernel: 12 accumulators + 3 weights + 1 of 16 registers
constexpr int64_t kUnit = 24;        // weight rows per parallel_for index (a multiple of kNR)
constexpr int64_t kPrefetch = 1024;  // bytes ahead in a weight row

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

inline float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Quantises one activation row into kp values of type T (int16_t for I8
// weights, int8_t for I4; zeros past k); for I4 weights the values of every
// 32 are then ordered even elements first, odd ones after. Returns s_x, or a
// negative value if the row is not finite.
template <typename T>
float quantize_row(const float *x, int64_t k, int64_t kp, bool i4_order, T *q) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 mx = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + 8 <= k; p += 8) mx = _mm256_max_ps(mx, _mm256_and_ps(_mm256_loadu_ps(x + p), abs_mask));
  float amax = hmax(mx);
  for (; p < k; ++p) amax = std::max(amax, std::fabs(x[p]));
  // max() drops NaN lanes, so finiteness is checked on its own.
  bool finite = std::isfinite(amax);
  for (p = 0; finite && p < k; ++p) finite = std::isfinite(x[p]);
  if (!finite) return -1.f;
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  for (p = 0; p + 8 <= k; p += 8) {
    // Round to nearest even (the default MXCSR mode), as the VNNI kernel does.
    __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + p), vinv));
    v = _mm256_max_epi32(_mm256_min_epi32(v, hi), lo);
    const __m128i packed = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    if constexpr (sizeof(T) == 2)
      _mm_storeu_si128(reinterpret_cast<__m128i *>(q + p), packed);
    else
      _mm_storel_epi64(reinterpret_cast<__m128i *>(q + p), _mm_packs_epi16(packed, packed));
  }
  for (; p < k; ++p) {
    const int32_t v = int32_t(std::nearbyint(x[p] * inv));
    q[p] = T(std::clamp(v, -127, 127));
  }
  for (; p < kp; ++p) q[p] = 0;
  if (i4_order) {
    T tmp[32];
    for (p = 0; p < kp; p += 32) {
      for (int t = 0; t < 16; ++t) {
        tmp[t] = q[p + 2 * t];
        tmp[16 + t] = q[p + 2 * t + 1];
      }
      std::memcpy(q + p, tmp, sizeof tmp);
    }
  }
  return amax / 127.f;
}

// The I4 form of a quantised row: the values of quantize_row (I4 order) as
// int8, then, at q + kp, one int32 per group: -8 * (sum of the group's
// values), the correction of the unsigned-nibble product (block_group).
float quantize_row_i4(const float *x, int64_t k, int64_t kp, int64_t group, int8_t *q) {
  const float s = quantize_row(x, k, kp, true, q);
  if (s < 0.f) return s;
  int32_t *corr = reinterpret_cast<int32_t *>(q + kp);
  for (int64_t g0 = 0; g0 < kp; g0 += group) {
    int32_t sum = 0;
    for (int64_t p = g0; p < g0 + group; ++p) sum += q[p];
    corr[g0 / group] = -8 * sum;
  }
  return s;
}

inline __m256i load_x(const int16_t *x, int64_t p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + p));
}

// 16 weights of an I8 row at element p, widened to int16.
inline __m256i load_w8(const int8_t *row, int64_t p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(row + p)));
}

// 32 I4 weights at element p (16 bytes) as unsigned bytes w + 8 (0..15): the
// even elements (low nibbles) in the low 128 bits, the odd ones (high
// nibbles) in the high 128 bits. shifts = 0 in the low lanes, 4 in the high.
inline __m256i load_w4(const uint8_t *row, int64_t p, __m256i shifts) {
  const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(row + p / 2)));
  const __m256i nib = _mm256_and_si256(_mm256_srlv_epi32(b, shifts), _mm256_set1_epi8(0x0F));
  return _mm256_xor_si256(nib, _mm256_set1_epi8(0x08));  // two's complement nibble -> w + 8
}

// Per-row weights: dots[i][j] = sum_p q[i][p] * w[j][p] (int32, exact).
template <int MR, int NR>
void block_row(const int16_t *const *xq, const int8_t *const *wr, int64_t k, int32_t dots[kMR][kNR]) {
  __m256i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_si256();
  auto step = [&](int64_t p) {
    __m256i wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = load_w8(wr[j], p);
    for (int i = 0; i < MR; ++i) {
      const __m256i xv = load_x(xq[i], p);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(xv, wv[j]));
    }
  };
  int64_t p = 0;
  // A cache line of every weight row per pass, the line kPrefetch bytes
  // ahead requested first: at few activation rows the kernel waits on memory
  // (decode), and the hardware prefetcher alone keeps too few lines in flight
  // (SmolLM2 int8 decode, 1 thread: 30 -> 38 tok/s).
  for (; p + 64 <= k; p += 64) {
    for (int j = 0; j < NR; ++j) _mm_prefetch(reinterpret_cast<const char *>(wr[j] + p + kPrefetch), _MM_HINT_T0);
    step(p);
    step(p + 16);
    step(p + 32);
    step(p + 48);
  }
  for (; p + 16 <= k; p += 16) step(p);
  if (p < k) {  // the weight rows end here: the tail through a zeroed copy (x is zero-padded)
    __m256i wv[NR];
    for (int j = 0; j < NR; ++j) {
      alignas(16) int8_t tail[16] = {};
      std::memcpy(tail, wr[j] + p, size_t(k - p));
      wv[j] = load_w8(tail, 0);
    }
    for (int i = 0; i < MR; ++i) {
      const __m256i xv = load_x(xq[i], p);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(xv, wv[j]));
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) dots[i][j] = hsum_epi32(acc[i][j]);
}

// Group-wise weights: out[i][j] = sum_g s_g * sum_{p in g} q[i][p] * w[j][p]
// (float). G (32, 64 or 128) divides k.
// I4: the weights as unsigned bytes w + 8 times the int8 activations with
// vpmaddubsw (pair sums of at most 2 * 15 * 127, so nothing saturates), the
// 16-bit pairs added into int32 by vpmaddwd with ones; every group's int32
// sum starts from its correction -8 * sum q (quantize_row_i4), so it is the
// exact integer dot product. That is 4 weight instructions per 32 elements
// where widening to int16 took 6.
// The group size is a template argument (32, 64 or 128): the loop over a
// group's 32-element steps unrolls, and the group's int32 sums stay in
// registers (with a run-time trip count they were spilled).
template <QKind K, int MR, int NR, int G, typename XT>
void block_group(const XT *const *xq, const int8_t *const *wr, const float *const *ws, int64_t k, float out[kMR][kNR]) {
  constexpr int64_t group = G;
  [[maybe_unused]] const int32_t *corr[MR];
  if constexpr (K == QKind::kI4Group)
    for (int i = 0; i < MR; ++i) corr[i] = reinterpret_cast<const int32_t *>(xq[i] + (k + 31) / 32 * 32);
  [[maybe_unused]] const __m256i shifts = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
  [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);
  __m256 facc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) facc[i][j] = _mm256_setzero_ps();
  for (int64_t g0 = 0, g = 0; g0 < k; g0 += group, ++g) {  // g: a counter, not g0 / group (an idiv per group)
    __m256i acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) {
        if constexpr (K == QKind::kI4Group)
          acc[i][j] = _mm256_setr_epi32(corr[i][g], 0, 0, 0, 0, 0, 0, 0);
        else
          acc[i][j] = _mm256_setzero_si256();
      }
    for (int64_t p = g0; p < g0 + group; p += 32) {
      const int64_t byte = K == QKind::kI4Group ? p / 2 : p;  // as in block_row
      if (byte % 64 == 0)
        for (int j = 0; j < NR; ++j)
          _mm_prefetch(reinterpret_cast<const char *>(wr[j] + byte + kPrefetch), _MM_HINT_T0);
      if constexpr (K == QKind::kI4Group) {
        __m256i wu[NR];
        for (int j = 0; j < NR; ++j) wu[j] = load_w4(reinterpret_cast<const uint8_t *>(wr[j]), p, shifts);
        for (int i = 0; i < MR; ++i) {
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xq[i] + p));
          for (int j = 0; j < NR; ++j)
            acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(_mm256_maddubs_epi16(wu[j], xv), ones));
        }
      } else {
        for (int64_t h = 0; h < 32; h += 16) {
          __m256i wv[NR];
          for (int j = 0; j < NR; ++j) wv[j] = load_w8(wr[j], p + h);
          for (int i = 0; i < MR; ++i) {
            const __m256i xv = load_x(xq[i], p + h);
            for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(xv, wv[j]));
          }
        }
      }
    }
    for (int j = 0; j < NR; ++j) {
      const __m256 s = _mm256_set1_ps(ws[j][g]);
      for (int i = 0; i < MR; ++i) facc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][j]), s, facc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) out[i][j] = hsum_ps(facc[i][j]);
}

}  // namespace

#include "linear_int_driver.inc"

namespace {

template <QKind K>
bool gemm_int(const Host &host, const parley_linear_args &a, const PackedWeight &w, parley_kernel_status *status) {
  // I4 rows: int8 values, then one int32 correction per group.
  using XT = std::conditional_t<K == QKind::kI4Group, int8_t, int16_t>;
  const int64_t k = a.k, kp = (k + 31) / 32 * 32;
  const int64_t row = K == QKind::kI4Group ? kp + 4 * (kp / w.group_size) : kp;
  auto quantize = [&](const float *x, XT *q) {
    if constexpr (K == QKind::kI4Group)
      return quantize_row_i4(x, k, kp, w.group_size, q);
    else
      return quantize_row(x, k, kp, false, q);
  };
  auto tile = [&]<int MR, int NR>(const XT *const *xr, const int8_t *const *wr, const float *const *ws,
                                  const int64_t *rows, const float *sx, float(*vals)[kNR]) {
    int32_t dots[kMR][kNR];
    float fdots[kMR][kNR];
    if constexpr (K == QKind::kI8Row)
      block_row<MR, NR>(xr, wr, k, dots);
    else
      switch (w.group_size) {  // 32, 64 or 128 (gemm_int_avx2 checks)
        case 32:
          block_group<K, MR, NR, 32>(xr, wr, ws, k, fdots);
          break;
        case 64:
          block_group<K, MR, NR, 64>(xr, wr, ws, k, fdots);
          break;
        default:
          block_group<K, MR, NR, 128>(xr, wr, ws, k, fdots);
          break;
      }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) {
        if constexpr (K == QKind::kI8Row)
          vals[i][j] = float(dots[i][j]) * (sx[i] * w.scales[rows[j]]);
        else
          vals[i][j] = fdots[i][j] * sx[i];
      }
  };
  // Group-wise blocks hold float accumulators too: 2 activation rows keep
  // them in registers (4 would spill).
  const int row_step = K == QKind::kI8Row ? kMR : 2;
  return int_activation_gemm<XT, kMR, kNR>(host, a, w, row, kUnit, row_step, kNR, quantize, tile, status);
}

}  // namespace

bool gemm_int_avx2(const Host &host, const parley_linear_args &a, const PackedWeight &w, parley_kernel_status *status) {
  if (a.k > 131072) return false;
  if (w.dtype == PARLEY_DTYPE_I8 && w.quant == PARLEY_QUANT_PER_ROW) return gemm_int<QKind::kI8Row>(host, a, w, status);
  if (w.quant != PARLEY_QUANT_GROUPWISE || (w.group_size != 32 && w.group_size != 64 && w.group_size != 128) ||
      a.k % w.group_size != 0)
    return false;
  if (w.dtype == PARLEY_DTYPE_I8) return gemm_int<QKind::kI8Group>(host, a, w, status);
  if (w.dtype == PARLEY_DTYPE_I4) return gemm_int<QKind::kI4Group>(host, a, w, status);
  return false;
}

}  // namespace parley::cpu

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
