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

#include "logit_stats_check.hpp"
#include "parity_util.hpp"

namespace {

TEST(LogitStats, OutputProjectionStatisticsDescribeTheLogits) {
  for (const char *file : {"", "models/llama.int8.parley", "models/llama.int4.parley"})
    for (int64_t rows : {1, 26}) {
      SCOPED_TRACE(testing::Message() << "file '" << file << "' rows " << rows);
      auto l = parity::load("llama", file);
      const parley::Transformer &t = *l->transformer;
      const int64_t V = t.vocab();
      auto st = t.start(rows, 8);
      std::vector<int32_t> tokens;
      for (int64_t r = 0; r < rows * 3; ++r) tokens.push_back(static_cast<int32_t>((r * 37 + 5) % V));
      std::vector<float> logits;
      parley::LogitStats stats;
      t.step_into(st, tokens, 3, /*last_only=*/true, logits, {}, &stats);
      parity::expect_stats_describe_rows(logits, rows, V, stats);
    }
}

}  // namespace
