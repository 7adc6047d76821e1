// GoogleTest side of test_seed.h: a seed per random case of the running test.
//
//   PARLEY_CASE_SEED(seed);   // declares `const uint32_t seed` and traces it
//   std::mt19937 rng(seed);
// or, for a test with many cases, PARLEY_TRACE_BASE_SEED() once and
// case_seed() for each case.
//
// The n-th PARLEY_CASE_SEED of a test gets derive_seed("Suite.Test", n): it
// depends on the base seed, the test's name and the call's position in the
// test only, so a failure replays with PARLEY_TEST_SEED=<base> and
// --gtest_filter=Suite.Test alone. The base seed is printed at program start
// and every failure message carries the case seed and the base seed.
#ifndef PARLEY_TESTS_COMMON_GTEST_SEED_H
#define PARLEY_TESTS_COMMON_GTEST_SEED_H

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "test_seed.h"

namespace parley::test {

namespace seed_detail {
inline uint64_t &case_counter() {
  static uint64_t n = 0;
  return n;
}
// Resets the per-test case counter and prints the base seed before any test.
struct Listener : ::testing::EmptyTestEventListener {
  void OnTestProgramStart(const ::testing::UnitTest &) override { (void)base_seed(); }
  void OnTestStart(const ::testing::TestInfo &) override { case_counter() = 0; }
};
inline const bool kListenerInstalled = (::testing::UnitTest::GetInstance()->listeners().Append(new Listener), true);
}  // namespace seed_detail

inline std::string current_test_name() {
  const ::testing::TestInfo *t = ::testing::UnitTest::GetInstance()->current_test_info();
  return t ? std::string(t->test_suite_name()) + "." + t->name() : std::string("(no test)");
}

// The next case seed of the running test.
inline uint32_t case_seed() {
  (void)seed_detail::kListenerInstalled;
  return derive_seed(current_test_name(), seed_detail::case_counter()++);
}

inline std::string base_seed_note() {
  return "base seed " + std::to_string(base_seed()) + " (replay: PARLEY_TEST_SEED=" + std::to_string(base_seed()) +
         " --gtest_filter=" + current_test_name() + ")";
}

inline std::string seed_note(uint32_t seed) {
  return "case seed " + std::to_string(seed) + " from base seed " + std::to_string(base_seed()) +
         " (replay: PARLEY_TEST_SEED=" + std::to_string(base_seed()) + " --gtest_filter=" + current_test_name() + ")";
}

}  // namespace parley::test

// For tests that draw several case seeds with case_seed() inline.
#define PARLEY_TRACE_BASE_SEED() SCOPED_TRACE(::parley::test::base_seed_note())

#define PARLEY_CASE_SEED(var)                       \
  const uint32_t var = ::parley::test::case_seed(); \
  SCOPED_TRACE(::parley::test::seed_note(var))

#endif
