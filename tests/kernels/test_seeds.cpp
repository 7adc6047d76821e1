// The seeds of the randomised tests (tests/common/test_seed.h, gtest_seed.h):
// a fixed default unless PARLEY_TEST_SEED says otherwise, a malformed value
// refused, case seeds that depend only on (base seed, test name, index) and
// agree with the Python helper (tests/common/parley_test_seed.py).
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <string>

#include "../common/gtest_seed.h"

namespace parley::test {
namespace {

// Sets or clears PARLEY_TEST_SEED for one scope.
class SeedEnv {
 public:
  explicit SeedEnv(const char *value) {
    if (const char *old = std::getenv("PARLEY_TEST_SEED")) old_ = old, had_ = true;
    if (value)
      setenv("PARLEY_TEST_SEED", value, 1);
    else
      unsetenv("PARLEY_TEST_SEED");
  }
  ~SeedEnv() {
    if (had_)
      setenv("PARLEY_TEST_SEED", old_.c_str(), 1);
    else
      unsetenv("PARLEY_TEST_SEED");
  }

 private:
  std::string old_;
  bool had_ = false;
};

TEST(TestSeeds, FixedDefaultUnlessOverridden) {
  {
    SeedEnv env(nullptr);
    EXPECT_EQ(read_base_seed().value, kDefaultTestSeed);
    EXPECT_STREQ(read_base_seed().source, "default");
  }
  {
    SeedEnv env("");
    EXPECT_EQ(read_base_seed().value, kDefaultTestSeed);
  }
  {
    SeedEnv env("123");
    EXPECT_EQ(read_base_seed().value, 123u);
    EXPECT_STREQ(read_base_seed().source, "PARLEY_TEST_SEED");
  }
  {
    SeedEnv env("4294967295");
    EXPECT_EQ(read_base_seed().value, 4294967295u);
  }
  {
    SeedEnv env("random");
    EXPECT_STREQ(read_base_seed().source, "PARLEY_TEST_SEED=random");
  }
}

TEST(TestSeedsDeathTest, MalformedOverrideIsRefused) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  for (const char *bad : {"12x", "-1", "+5", " 5", "4294967296", "0x10"}) {
    SeedEnv env(bad);
    EXPECT_EXIT(read_base_seed(), ::testing::ExitedWithCode(2), "PARLEY_TEST_SEED") << bad;
  }
}

TEST(TestSeeds, DerivationIsFixedAndMatchesPython) {
  // Values from tests/common/parley_test_seed.py (hash_label, derive_seed
  // with PARLEY_TEST_SEED=7 and unset).
  EXPECT_EQ(hash_label("Suite.Test"), 0xeeea99f5573ab3b7ull);
  EXPECT_EQ(derive_seed_from(7, hash_label("Suite.Test"), 0), 1167718875u);
  EXPECT_EQ(derive_seed_from(7, hash_label("Suite.Test"), 1), 1152247243u);
  EXPECT_EQ(derive_seed_from(kDefaultTestSeed, hash_label("Suite.Test"), 0), 1085329371u);
  // Different bases, labels and indices give different seeds.
  std::set<uint32_t> seen;
  for (uint32_t base : {1u, 2u, 3u})
    for (const char *label : {"A.a", "A.b", "B.a"})
      for (uint64_t i = 0; i < 4; ++i) seen.insert(derive_seed_from(base, hash_label(label), i));
  EXPECT_EQ(seen.size(), 36u);
}

TEST(TestSeeds, CaseSeedsFollowTheTestNameAndIndex) {
  const uint32_t a = case_seed(), b = case_seed();
  EXPECT_EQ(a, derive_seed("TestSeeds.CaseSeedsFollowTheTestNameAndIndex", 0));
  EXPECT_EQ(b, derive_seed("TestSeeds.CaseSeedsFollowTheTestNameAndIndex", 1));
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace parley::test
