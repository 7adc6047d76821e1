// Beam search picks its candidates from the raw logits (top_candidates_sparse:
// log-normaliser, the processors' changed tokens, the top raw scores) instead
// of the dense beams x vocab log-probabilities. Whenever it answers, it must
// pick exactly what the dense path picks (same flat indices, same float
// scores, same order); it must decline when a processor rewrites the row; and
// it must answer in the common case (or it would be dead code).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "../common/gtest_seed.h"
#include "engine/decoding_internal.hpp"
#include "engine/logits_processors.hpp"

namespace parley::decoding {
namespace {

struct Trial {
  std::vector<float> rows;  // n x vocab
  std::vector<float> scores;
  std::vector<std::vector<int32_t>> generated;
  std::vector<int32_t> prompt;
};

std::vector<std::pair<size_t, float>> dense(const DecodingOptions &o, const Trial &t, size_t n, int64_t vocab,
                                            int64_t cur_len, int64_t padded, size_t k) {
  std::vector<float> lp(static_cast<size_t>(vocab)), acc(n * static_cast<size_t>(vocab));
  for (size_t j = 0; j < n; ++j) {
    log_softmax(t.rows.data() + j * static_cast<size_t>(vocab), lp.data(), vocab);
    apply_processors(o, lp.data(), vocab, RowHistory{&t.prompt, &t.generated[j]}, cur_len, padded);
    for (int64_t v = 0; v < vocab; ++v)
      acc[j * static_cast<size_t>(vocab) + static_cast<size_t>(v)] = lp[static_cast<size_t>(v)] + t.scores[j];
  }
  std::vector<std::pair<size_t, float>> out;
  for (size_t i : top_indices(acc, k)) out.emplace_back(i, acc[i]);
  return out;
}

TEST(BeamCandidates, SparseSelectionEqualsDense) {
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  int answered = 0, trials = 0;
  for (int trial = 0; trial < 600; ++trial) {
    const int64_t vocab = std::uniform_int_distribution<int64_t>(40, 400)(rng);
    const size_t n = std::uniform_int_distribution<size_t>(1, 5)(rng);
    const size_t k = 2 * n;
    DecodingOptions o;
    o.num_beams = static_cast<int64_t>(n);
    o.eos_token_ids = {2};
    o.max_new_tokens = 20;
    if (trial % 3 == 1) o.repetition_penalty = 1.3;
    if (trial % 4 == 1) o.no_repeat_ngram_size = 2;
    if (trial % 5 == 2) o.suppress_tokens = {3, 5};
    if (trial % 7 == 3) o.min_new_tokens = 5;
    // logit_bias raises or lowers a token (listed twice: the sum); raised ones must still be candidates.
    if (trial % 8 == 5) o.logit_bias = {{1, 2.5f}, {4, -100.f}, {1, 0.5f}, {static_cast<int32_t>(vocab - 1), 6.f}};
    Trial t;
    std::normal_distribution<float> nd(0.f, trial % 2 ? 3.f : 0.3f);
    t.rows.resize(n * static_cast<size_t>(vocab));
    for (float &x : t.rows) x = nd(rng);
    // Ties and masked tokens: repeated values, some -inf.
    for (size_t i = 0; i < t.rows.size(); i += 7) t.rows[i] = t.rows[i / 2];
    for (size_t i = 3; i < t.rows.size(); i += 11) t.rows[i] = -std::numeric_limits<float>::infinity();
    for (size_t j = 0; j < n; ++j) {
      t.scores.push_back(j == 0 || trial % 6 ? -static_cast<float>(j) * 0.5f : -1.0e9f);
      std::vector<int32_t> g;
      for (int i = 0; i < 6; ++i) g.push_back(std::uniform_int_distribution<int32_t>(0, 9)(rng));
      t.generated.push_back(g);
    }
    t.prompt = {0, 7, 4};
    const int64_t padded = 3, cur_len = padded + 6;
    std::vector<float> scores = t.scores;
    std::vector<const std::vector<int32_t> *> gen;
    for (const auto &g : t.generated) gen.push_back(&g);
    std::vector<std::pair<size_t, float>> sparse;
    ++trials;
    if (!top_candidates_sparse(o, t.rows.data(), n, vocab, scores, gen, t.prompt, cur_len, padded, k, &sparse))
      continue;
    ++answered;
    const auto want = dense(o, t, n, vocab, cur_len, padded, k);
    ASSERT_EQ(sparse.size(), want.size()) << "trial " << trial;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(sparse[i].first, want[i].first) << "trial " << trial << " pick " << i;
      EXPECT_EQ(std::memcmp(&sparse[i].second, &want[i].second, sizeof(float)), 0)
          << "trial " << trial << " pick " << i;
    }
  }
  EXPECT_GT(answered, trials * 9 / 10) << "the sparse path declined too often to be the one that runs";
}

TEST(BeamCandidates, RoundingTiesAtTheBoundaryFallBackToDense) {
  // Raw scores 1e-8 apart all round to the same log-probability (about
  // -log(100)), so the dense path picks the lowest indices while the top raw
  // scores are the highest indices: the sparse path must decline.
  std::vector<float> row(100);
  for (size_t i = 0; i < row.size(); ++i) row[i] = 1e-8f * static_cast<float>(i);
  Trial t;
  t.rows = row;
  t.scores = {0.f};
  t.generated = {{}};
  t.prompt = {0};
  DecodingOptions o;
  std::vector<std::pair<size_t, float>> picked;
  const bool answered =
      top_candidates_sparse(o, row.data(), 1, 100, {0.f}, {&t.generated[0]}, t.prompt, 2, 1, 2, &picked);
  EXPECT_FALSE(answered);
  if (answered) {
    EXPECT_EQ(picked, dense(o, t, 1, 100, 2, 1, 2));
  }
}

TEST(BeamCandidates, DeclinesWhenAProcessorRewritesTheRow) {
  DecodingOptions o;
  o.forced_bos_token_id = 4;
  std::vector<float> row(50, 0.5f);
  std::vector<int32_t> prompt = {0}, none;
  std::vector<std::pair<size_t, float>> picked;
  EXPECT_FALSE(top_candidates_sparse(o, row.data(), 1, 50, {0.f}, {&none}, prompt, 1, 1, 2, &picked));
  o.forced_bos_token_id.reset();
  row.assign(50, -std::numeric_limits<float>::infinity());  // fully masked
  EXPECT_FALSE(top_candidates_sparse(o, row.data(), 1, 50, {0.f}, {&none}, prompt, 2, 1, 2, &picked));
}

// The sparse path reads each row once for its 64-entry block statistics
// (logit_block_stats); a NaN or +inf anywhere, in a full block or in the
// short last one, must make it decline (the dense path then reports the
// row), and the statistics must be each block's own: maximum with NaN
// dropped, sum NaN for a block with NaN or +inf, 0 for a block of -inf.
TEST(BeamCandidates, NonFiniteRowsDeclineWhereverTheEntryIs) {
  DecodingOptions o;
  std::vector<int32_t> prompt = {0}, none;
  std::vector<std::pair<size_t, float>> picked;
  const int64_t vocab = 200;  // three full blocks and a tail of 8
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t at : {int64_t{0}, int64_t{70}, int64_t{195}})
    for (float bad : {nan, inf}) {
      std::vector<float> row(static_cast<size_t>(vocab));
      for (int64_t v = 0; v < vocab; ++v) row[static_cast<size_t>(v)] = std::sin(0.37f * static_cast<float>(v));
      ASSERT_TRUE(top_candidates_sparse(o, row.data(), 1, vocab, {0.f}, {&none}, prompt, 1, 1, 2, &picked));
      row[static_cast<size_t>(at)] = bad;
      EXPECT_FALSE(top_candidates_sparse(o, row.data(), 1, vocab, {0.f}, {&none}, prompt, 1, 1, 2, &picked))
          << "entry " << at << " = " << bad;
      EXPECT_TRUE(std::isnan(log_sum_exp(row.data(), vocab))) << "entry " << at << " = " << bad;
    }
  std::vector<float> row(static_cast<size_t>(vocab), -1.f), maxima(4, 0.f), sums(4, -1.f);
  row[5] = 3.f, row[130] = 7.f, row[199] = 2.f;
  for (int64_t v = 64; v < 128; ++v) row[static_cast<size_t>(v)] = -inf;
  logit_block_stats(row.data(), vocab, maxima.data(), sums.data());
  EXPECT_EQ(maxima, (std::vector<float>{3.f, -inf, 7.f, 2.f}));
  EXPECT_EQ(sums[1], 0.f) << "a block of -inf";
  // Each sum against float64: 1 + 63 e^-4 (block 0), 1 + 63 e^-8, 1 + 7 e^-3.
  const double want[] = {1 + 63 * std::exp(-4.0), 0.0, 1 + 63 * std::exp(-8.0), 1 + 7 * std::exp(-3.0)};
  for (int b = 0; b < 4; ++b) EXPECT_NEAR(sums[static_cast<size_t>(b)], want[b], 64 * 4e-7 * want[b]) << "block " << b;
  // The row's log-normaliser from the blocks, against float64 over the row.
  double direct = 0;
  for (float x : row) direct += std::exp(static_cast<double>(x));
  EXPECT_NEAR(log_sum_exp(row.data(), vocab), std::log(direct), 1e-6);
  row[10] = nan;
  logit_block_stats(row.data(), vocab, maxima.data(), sums.data());
  EXPECT_EQ(maxima[0], 3.f) << "a block's maximum drops NaN";
  EXPECT_TRUE(std::isnan(sums[0]));
  EXPECT_FALSE(std::isnan(sums[2]));
  const std::vector<float> masked(70, -inf);
  EXPECT_EQ(log_sum_exp(masked.data(), 70), -std::numeric_limits<double>::infinity()) << "every entry -inf";
}

}  // namespace
}  // namespace parley::decoding
