// LINEAR kernels for AVX-512 (F, BW, VL, DQ) and AVX512-VNNI, compiled for
// those instruction sets function by function (the target pragmas below, not
// a global -march), run only when cpu_features() reports them.
// GCC 12's AVX-512 intrinsics start some results from _mm512_undefined_*(),
// which -Wmaybe-uninitialized reports inside the header (a known false
// positive, GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu_features.h"
#include "linear_kernels.h"

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
// I8 (per-row) weights x int8 activations with AVX512-VNNI, for m > kSmallM.
//
// Each activation row is quantised on the fly, symmetric, per row:
// s_x = max|x| / 127, q = round(x / s_x) in [-127, 127] (a zero row gets
// s_x = 0 and q = 0). vpdpbusd multiplies unsigned by signed bytes, so the
// kernel feeds u = q + 128 and subtracts 128 * sum_p w[j][p] (row_sums, made
// once in prepare_weight):  sum_p q_p w_p = sum_p u_p w_p - 128 * sum_p w_p.
// The int32 sums cannot overflow for k <= 65536 (255 * 128 * 65536 < 2^31).
// The product is exact in integers; the only extra error is the rounding of
// x to q * s_x, |x - q s_x| <= s_x / 2, i.e. at most
// s_w[j] * s_x * sum_p |w_q[j][p]| / 2 per output (the tests check this bound).
// The weight layout is the file's (row-major [n, k]): 64 bytes of a weight
// row against 64 bytes of an activation row per instruction, 4 x 4 outputs
// at a time, partial sums added across lanes at the end.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#endif

namespace parley::cpu {

namespace {

constexpr int kMR = 4;         // activation rows per micro-kernel
constexpr int kNR = 4;         // weight rows per micro-kernel
constexpr int64_t kUnit = 32;  // weight rows per parallel_for index

// Quantises one activation row into kp bytes (u = q + 128, padded with 128,
// i.e. q = 0). Returns s_x, or a negative value if the row is not finite.
float quantize_row(const float *x, int64_t k, int64_t kp, uint8_t *u) {
  __m512 mx = _mm512_setzero_ps();
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(x + p)));
  float amax = _mm512_reduce_max_ps(mx);
  bool finite = true;
  for (; p < k; ++p) amax = std::max(amax, std::fabs(x[p]));
  for (p = 0; p < k; ++p) finite = finite && std::isfinite(x[p]);
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

// dots[i][j] = sum_p u[i][p] * w[j][p] for MR activation rows and NR weight rows.
template <int MR, int NR>
void vnni_block(const uint8_t *const *xu, const int8_t *const *wr, int64_t k, int32_t dots[kMR][kNR]) {
  __m512i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  int64_t p = 0;
  for (; p + 64 <= k; p += 64) {
    __m512i wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_loadu_si512(wr[j] + p);
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

template <int MR>
void vnni_row_block(const uint8_t *const *xu, const int8_t *const *wr, int nr, int64_t k, int32_t dots[kMR][kNR]) {
  switch (nr) {
    case 1:
      vnni_block<MR, 1>(xu, wr, k, dots);
      break;
    case 2:
      vnni_block<MR, 2>(xu, wr, k, dots);
      break;
    case 3:
      vnni_block<MR, 3>(xu, wr, k, dots);
      break;
    default:
      vnni_block<MR, 4>(xu, wr, k, dots);
      break;
  }
}

}  // namespace

bool gemm_i8_vnni_avx512(const Host &host, const parley_linear_args &a, const PackedWeight &w,
                         parley_kernel_status *status) {
  const int64_t m = a.m, n = a.n, k = a.k;
  if (w.dtype != PARLEY_DTYPE_I8 || w.quant != PARLEY_QUANT_PER_ROW || k > 65536 || w.row_sums.size() != size_t(n))
    return false;
  const int64_t kp = (k + 63) / 64 * 64;
  std::vector<uint8_t> xu(static_cast<size_t>(m * kp));
  std::vector<float> sx(static_cast<size_t>(m));
  std::atomic<bool> nonfinite{false};
  const float *x = static_cast<const float *>(a.x);
  parley_kernel_status st =
      host.parallel_for(m, even_grain(m, host.num_threads()), [&](int64_t i0, int64_t i1) -> parley_kernel_status {
        for (int64_t i = i0; i < i1; ++i) {
          sx[size_t(i)] = quantize_row(x + i * a.ld_x, k, kp, xu.data() + i * kp);
          if (sx[size_t(i)] < 0.f) nonfinite.store(true);
        }
        return PARLEY_KERNEL_OK;
      });
  if (st != PARLEY_KERNEL_OK) {
    *status = st;
    return true;
  }
  // A NaN or infinity in x: the general path propagates it as float32 does.
  if (nonfinite.load()) return false;
  const int64_t units = (n + kUnit - 1) / kUnit;
  *status = host.parallel_for(
      units, even_grain(units, host.num_threads()), [&](int64_t u0, int64_t u1) -> parley_kernel_status {
        int32_t dots[kMR][kNR];
        float vals[kNR];
        for (int64_t u = u0; u < u1; ++u) {
          const int64_t j_end = std::min(n, (u + 1) * kUnit);
          for (int64_t i0 = 0; i0 < m; i0 += kMR) {
            const int mr = int(std::min<int64_t>(kMR, m - i0));
            const uint8_t *xr[kMR];
            for (int i = 0; i < kMR; ++i) xr[i] = xu.data() + (i0 + std::min(i, mr - 1)) * kp;
            for (int64_t j0 = u * kUnit; j0 < j_end; j0 += kNR) {
              const int nr = int(std::min<int64_t>(kNR, j_end - j0));
              const int8_t *wr[kNR];
              for (int j = 0; j < kNR; ++j)
                wr[j] = reinterpret_cast<const int8_t *>(w.data + (j0 + std::min(j, nr - 1)) * w.ld_bytes);
              switch (mr) {
                case 1:
                  vnni_row_block<1>(xr, wr, nr, k, dots);
                  break;
                case 2:
                  vnni_row_block<2>(xr, wr, nr, k, dots);
                  break;
                case 3:
                  vnni_row_block<3>(xr, wr, nr, k, dots);
                  break;
                default:
                  vnni_row_block<4>(xr, wr, nr, k, dots);
                  break;
              }
              for (int i = 0; i < mr; ++i) {
                const float s = sx[size_t(i0 + i)];
                for (int j = 0; j < nr; ++j)
                  vals[j] = float(dots[i][j] - 128 * w.row_sums[size_t(j0 + j)]) * (s * w.scales[j0 + j]);
                linear_epilogue(a, i0 + i, j0, vals, nr);
              }
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
