// Seeds of the randomised tests (ENGINEERING.md: a fixed, printed seed that an
// environment variable may override; CI must be deterministic).
//
// Every test process has one base seed: kDefaultTestSeed, or the value of
// PARLEY_TEST_SEED (a decimal number; "random" draws one from
// std::random_device, to explore). It is printed once per process. Each case
// gets its own seed derived from (base seed, a label of the case), so a case's
// inputs do not depend on which other tests ran (gtest filters, shuffling) and
// different base seeds give unrelated inputs to every case.
//
// Plain C++ (no GoogleTest): tests/gpu/gpu_check uses it too. The gtest side
// (a seed per case of the running test, traced into failure messages) is in
// gtest_seed.h.
#ifndef PARLEY_TESTS_COMMON_TEST_SEED_H
#define PARLEY_TESTS_COMMON_TEST_SEED_H

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string_view>

namespace parley::test {

inline constexpr uint32_t kDefaultTestSeed = 20240611;

// splitmix64's finaliser: a bijective 64-bit mix (Steele et al., "Fast
// splittable pseudorandom number generators", OOPSLA 2014).
constexpr uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// FNV-1a over the bytes of a label.
constexpr uint64_t hash_label(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;
  return h;
}

struct BaseSeed {
  uint32_t value;
  const char *source;  // "default", "PARLEY_TEST_SEED" or "PARLEY_TEST_SEED=random"
};

// Parses PARLEY_TEST_SEED once; a malformed value ends the process with a
// message (a typo must not silently run the default).
inline BaseSeed read_base_seed() {
  const char *s = std::getenv("PARLEY_TEST_SEED");
  if (!s || !*s) return {kDefaultTestSeed, "default"};
  if (std::strcmp(s, "random") == 0) return {std::random_device{}(), "PARLEY_TEST_SEED=random"};
  errno = 0;
  char *end = nullptr;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (s[0] < '0' || s[0] > '9' || errno != 0 || *end != '\0' || v > 0xFFFFFFFFull) {
    std::fprintf(stderr, "PARLEY_TEST_SEED='%s' is not a decimal number in [0, 2^32) or 'random'\n", s);
    std::exit(2);
  }
  return {static_cast<uint32_t>(v), "PARLEY_TEST_SEED"};
}

// The base seed of this process; printed on first use.
inline const BaseSeed &base_seed_info() {
  static const BaseSeed b = [] {
    const BaseSeed r = read_base_seed();
    std::printf("[   SEED   ] base seed %u (%s); replay with PARLEY_TEST_SEED=%u\n", r.value, r.source, r.value);
    std::fflush(stdout);
    return r;
  }();
  return b;
}
inline uint32_t base_seed() {
  return base_seed_info().value;
}

// A seed for one case, derived from a base seed and the case's label/index
// (parley_test_seed.derive_seed computes the same values).
constexpr uint32_t derive_seed_from(uint32_t base, uint64_t label, uint64_t index) {
  return static_cast<uint32_t>(mix64(mix64(base ^ mix64(label)) + index) >> 32);
}
inline uint32_t derive_seed(uint64_t label, uint64_t index = 0) {
  return derive_seed_from(base_seed(), label, index);
}
inline uint32_t derive_seed(std::string_view label, uint64_t index = 0) {
  return derive_seed(hash_label(label), index);
}

}  // namespace parley::test

#endif
