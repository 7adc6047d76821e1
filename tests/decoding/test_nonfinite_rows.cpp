// The row checks behind non-finite logits detection (issue 10 item 10):
// copy_row_max (greedy and sampling) and log_sum_exp (beam search) must be
// non-finite exactly for the rows decoding cannot use: a NaN or +inf
// anywhere, or every entry -inf. -inf entries alone (masked tokens) are fine.
// The position of the bad entry is swept over every lane of the vectorised
// loops (and the tails), since a max reduction drops NaN unless made not to.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>

#include "core/error.hpp"
#include "engine/logits_processors.hpp"

namespace parley::decoding {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

uint32_t seed() {
  if (const char *s = std::getenv("PARLEY_TEST_SEED")) return static_cast<uint32_t>(std::strtoul(s, nullptr, 10));
  return 20261204u;  // fixed default: CI is deterministic
}

TEST(NonFiniteRows, RowMaximaFlagExactlyTheUnusableRows) {
  const uint32_t s = seed();
  SCOPED_TRACE("seed " + std::to_string(s) + " (replay with PARLEY_TEST_SEED)");
  std::mt19937 rng(s);
  std::normal_distribution<float> logit(0.f, 8.f);
  for (int64_t vocab : {1, 2, 7, 16, 33, 64, 100, 1023, 1025, 4099}) {
    std::vector<float> row(static_cast<size_t>(vocab)), copy(row.size());
    for (float &x : row) x = rng() % 5 == 0 ? -kInf : logit(rng);
    row[rng() % row.size()] = logit(rng);  // at least one finite entry
    // A usable row: finite, copied exactly.
    const float mx = copy_row_max(row.data(), copy.data(), vocab);
    EXPECT_EQ(mx, *std::max_element(row.begin(), row.end()));
    EXPECT_EQ(copy, row);
    EXPECT_TRUE(std::isfinite(log_sum_exp(row.data(), vocab)));
    EXPECT_NO_THROW(check_logits_row(mx, row.data(), vocab, 0, "x"));
    for (int64_t at = 0; at < vocab; ++at) {
      SCOPED_TRACE("vocab " + std::to_string(vocab) + ", bad entry at " + std::to_string(at));
      for (float bad : {kNaN, kInf}) {
        std::vector<float> r = row;
        r[static_cast<size_t>(at)] = bad;
        EXPECT_FALSE(std::isfinite(copy_row_max(r.data(), copy.data(), vocab))) << bad;
        EXPECT_FALSE(std::isfinite(log_sum_exp(r.data(), vocab))) << bad;
      }
      // NaN in an otherwise fully masked row: a plain max would say -inf.
      std::vector<float> masked(row.size(), -kInf);
      masked[static_cast<size_t>(at)] = kNaN;
      EXPECT_TRUE(std::isnan(copy_row_max(masked.data(), copy.data(), vocab)));
      EXPECT_TRUE(std::isnan(log_sum_exp(masked.data(), vocab)));
    }
    std::vector<float> masked(row.size(), -kInf);
    EXPECT_EQ(copy_row_max(masked.data(), copy.data(), vocab), -kInf);
    EXPECT_EQ(log_sum_exp(masked.data(), vocab), -static_cast<double>(kInf));
  }
}

// Greedy's argmax: the index std::max_element gives (the first maximal
// one), for rows with ties, masked (-inf) tokens, signed zeros, all -inf, and
// the maximum in every lane and block position. (Rows with a NaN never get
// here: check_logits_row stops them first.)
TEST(NonFiniteRows, ArgmaxIsTheFirstMaximalIndex) {
  const uint32_t s = seed();
  SCOPED_TRACE("seed " + std::to_string(s) + " (replay with PARLEY_TEST_SEED)");
  std::mt19937 rng(s);
  for (int64_t vocab : {1, 2, 7, 16, 33, 511, 512, 513, 1025, 4099, 49152}) {
    std::vector<float> row(static_cast<size_t>(vocab));
    for (int trial = 0; trial < 40; ++trial) {
      // Few distinct values, so the maximum is often tied.
      for (float &x : row) {
        const uint32_t r = rng() % 9;
        x = r == 0 ? -kInf : r == 1 ? -0.f : r == 2 ? 0.f : static_cast<float>(static_cast<int>(r) - 6);
      }
      if (trial % 5 == 1) std::fill(row.begin(), row.end(), -kInf);
      if (trial % 5 == 2) row[rng() % row.size()] = 7.f;  // one clear maximum anywhere
      const int64_t want = std::max_element(row.begin(), row.end()) - row.begin();
      ASSERT_EQ(argmax_first(row.data(), vocab), want) << "vocab " << vocab << " trial " << trial;
    }
  }
}

TEST(NonFiniteRows, CheckDescribesTheRowAsADeviceError) {
  std::vector<float> row = {1.f, kNaN, -kInf, kInf, kNaN};
  try {
    check_logits_row(copy_row_max(row.data(), row.data(), 5), row.data(), 5, 3, "plugin 'p'");
    FAIL() << "no error";
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_DEVICE);
    EXPECT_STREQ(e.what(),
                 "decoding: non-finite logits (NaN at 2 of 5 tokens, +inf at 1 of 5 tokens) at step 3 from "
                 "plugin 'p'");
  }
  std::vector<float> masked(4, -kInf);
  try {
    check_logits_row(log_sum_exp(masked.data(), 4), masked.data(), 4, 0, "");
    FAIL() << "no error";
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_DEVICE);
    EXPECT_STREQ(e.what(), "decoding: non-finite logits (every one of the 4 logits is -inf) at step 0 from the model");
  }
}

}  // namespace
}  // namespace parley::decoding
