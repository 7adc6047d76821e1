// The block statistics the output projection returns with the logits
// (plugin ABI 1.5, Transformer::step_into's LogitStats): on the cpu plugin
// they are written (valid), and they are those of the rows returned: each
// block's maximum exactly, its sum of exp(x - max) and the row's
// log-normaliser as the runtime's own pass computes them from the row
// (logit_block_stats, log_sum_exp) within float tolerance. Rows: 1 (the
// GEMV path) and 26 (with an int8 file, oneDNN's int8 GEMM, which computes
// them from its tile; float32, a pass after sgemm).
#include <gtest/gtest.h>

#include <cmath>

#include "engine/logits_processors.hpp"
#include "parity_util.hpp"

namespace {

TEST(LogitStats, OutputProjectionStatisticsDescribeTheLogits) {
  for (const char *file : {"", "models/llama.int8.parley", "models/llama.int4.parley"})
    for (int64_t rows : {1, 26}) {
      SCOPED_TRACE(testing::Message() << "file '" << file << "' rows " << rows);
      auto l = parity::load("llama", file);
      const parley::Transformer &t = *l->transformer;
      const int64_t V = t.vocab(), blocks = (V + parley::kLogitStatsBlock - 1) / parley::kLogitStatsBlock;
      auto st = t.start(rows, 8);
      std::vector<int32_t> tokens;
      for (int64_t r = 0; r < rows * 3; ++r) tokens.push_back(static_cast<int32_t>((r * 37 + 5) % V));
      std::vector<float> logits;
      parley::LogitStats stats;
      t.step_into(st, tokens, 3, /*last_only=*/true, logits, {}, &stats);
      ASSERT_TRUE(stats.valid) << "the cpu plugin declares PARLEY_KERNEL_FLAG_LINEAR_STATS";
      ASSERT_EQ(stats.blocks, blocks);
      ASSERT_EQ(stats.block_max.size(), size_t(rows * blocks));
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
}

}  // namespace
