// The KV cache rounding plugin.h specifies for F16 / I8 caches (ABI 1.2),
// written out independently of the kernel for the attention tests.
#ifndef PARLEY_TESTS_KERNELS_KV_ROUNDING_H
#define PARLEY_TESTS_KERNELS_KV_ROUNDING_H

#include <parley/plugin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace parley::test {

// The header's rounding of one cache row: F16 round to nearest even; I8
// scale = max|x| / 127, q = nearest-even(x / scale) (all-zero row: scale 0).
// Writes the bytes at dst and returns the scale (1 for F16); `deq` receives
// the dequantized values q * scale.
inline float quantize_row(int32_t dtype, const float *x, int64_t n, uint8_t *dst, float *deq) {
  if (dtype == PARLEY_DTYPE_F16) {
    for (int64_t i = 0; i < n; ++i) {
      _Float16 h = static_cast<_Float16>(x[i]);
      std::memcpy(dst + 2 * i, &h, 2);
      deq[i] = static_cast<float>(h);
    }
    return 1.f;
  }
  float m = 0.f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  const float s = m / 127.f;
  for (int64_t i = 0; i < n; ++i) {
    const float r = s > 0.f ? std::min(127.f, std::max(-127.f, std::nearbyint(x[i] / s))) : 0.f;
    const int8_t q = static_cast<int8_t>(r);
    std::memcpy(dst + i, &q, 1);
    deq[i] = static_cast<float>(double(q) * double(s));
  }
  return s;
}

}  // namespace parley::test

#endif
