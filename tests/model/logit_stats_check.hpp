// Whether the block statistics a model returned with its logits rows
// (LogitStats: the output projection's LINEAR kernel writes them) describe
// those rows: valid, each block's maximum exactly that of the row, its sum
// of exp(x - max) and the row's log-normaliser within float tolerance of
// the runtime's own pass (logit_block_stats, log_sum_exp). Shared by the
// contiguous (test_logit_stats.cpp) and serving-engine (test_engine.cpp)
// tests.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "engine/logits_processors.hpp"
#include "model/logit_stats.hpp"

namespace parity {

inline void expect_stats_describe_rows(const std::vector<float> &logits, int64_t rows, int64_t V,
                                       const parley::LogitStats &stats) {
  const int64_t blocks = (V + parley::kLogitStatsBlock - 1) / parley::kLogitStatsBlock;
  ASSERT_TRUE(stats.valid) << "the cpu plugin declares PARLEY_KERNEL_FLAG_LINEAR_STATS";
  ASSERT_EQ(stats.blocks, blocks);
  ASSERT_EQ(stats.block_max.size(), size_t(rows * blocks));
  ASSERT_EQ(logits.size(), size_t(rows * V));
  std::vector<float> want_max(static_cast<size_t>(blocks)), want_sum(static_cast<size_t>(blocks));
  for (int64_t r = 0; r < rows; ++r) {
    const float *row = logits.data() + r * V;
    parley::decoding::logit_block_stats(row, V, want_max.data(), want_sum.data());
    const float *got_max = stats.block_max.data() + r * blocks, *got_sum = stats.block_sum.data() + r * blocks;
    for (int64_t b = 0; b < blocks; ++b) {
      ASSERT_EQ(got_max[b], want_max[size_t(b)]) << "row " << r << " block " << b;
      // Two float sums of <= 64 exps in [0, 1] (about 1 ulp each), in
      // different orders: within 64 * 2 * 2^-24 of the sum, say 1e-5.
      EXPECT_NEAR(got_sum[b], want_sum[size_t(b)], 1e-5 * want_sum[size_t(b)]) << "row " << r << " block " << b;
    }
    // The log-normaliser from either: the sums' relative error, at most 1e-5.
    EXPECT_NEAR(parley::decoding::log_sum_exp_of_blocks(got_max, got_sum, blocks),
                parley::decoding::log_sum_exp(row, V), 1e-5)
        << "row " << r;
  }
}

}  // namespace parity
