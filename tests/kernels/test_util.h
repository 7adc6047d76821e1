// Helpers of the kernel tests: seeded random data, NaN poisoning and the
// relative error metric of ENGINEERING.md. Seeds: PARLEY_CASE_SEED
// (tests/common/gtest_seed.h), a fixed default overridable by PARLEY_TEST_SEED.
#ifndef PARLEY_TESTS_KERNELS_TEST_UTIL_H
#define PARLEY_TESTS_KERNELS_TEST_UTIL_H

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../common/gtest_seed.h"

namespace parley::test {

constexpr double kF32Tol = 1e-5;

struct Rng {
  explicit Rng(uint32_t seed) : gen(seed) {}
  std::vector<float> uniform(size_t n, float lo = -1.f, float hi = 1.f) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto &x : v) x = d(gen);
    return v;
  }
  int64_t integer(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen); }
  std::mt19937 gen;
};

inline std::vector<float> poisoned(size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

// ||out - ref|| / ||ref|| over the given element indices; infinity if any
// output is not finite (NaN never passes).
inline double rel_error(const float *out, const double *ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(out[i])) return std::numeric_limits<double>::infinity();
    double d = double(out[i]) - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}
inline double rel_error(const std::vector<float> &out, const std::vector<double> &ref) {
  EXPECT_EQ(out.size(), ref.size());
  return rel_error(out.data(), ref.data(), std::min(out.size(), ref.size()));
}

}  // namespace parley::test

#endif
