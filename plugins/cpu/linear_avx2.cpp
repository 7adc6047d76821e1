// LINEAR kernels for AVX2 + FMA + F16C (the portable path: every x86-64 core
// since Haswell / Zen 1), compiled for that instruction set function by
// function (the target pragma below), run only when cpu_features() reports it.
#include <immintrin.h>

#include <cstring>

#include "linear_kernels.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace parley::cpu {

namespace {

using vf = __m256;
constexpr int V = 8;
constexpr int RB = 4;  // weight rows per block
constexpr int MB = 2;  // activation rows per pass: 8 accumulators + 4 x + w of 16 registers

inline vf vzero() {
  return _mm256_setzero_ps();
}
inline vf vset1(float s) {
  return _mm256_set1_ps(s);
}
inline vf vload(const float *p) {
  return _mm256_loadu_ps(p);
}
inline vf vfma(vf a, vf b, vf c) {
  return _mm256_fmadd_ps(a, b, c);
}
inline vf vmul(vf a, vf b) {
  return _mm256_mul_ps(a, b);
}
inline float vhsum(vf v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline vf load_f16(const uint16_t *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}
inline vf load_bf16(const uint16_t *p) {
  const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
inline vf load_i8(const int8_t *p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p))));
}
inline void load_i4(const uint8_t *p, vf *lo, vf *hi) {
  const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)));
  // Sign-extend each nibble: move it to the top of the lane, shift back arithmetically.
  *lo = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(b, 28), 28));
  *hi = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(b, 24), 28));
}

}  // namespace

#define PARLEY_GEMV_NAME gemv_avx2
#include "linear_gemv.inc"
#undef PARLEY_GEMV_NAME

}  // namespace parley::cpu

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
