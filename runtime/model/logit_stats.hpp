// Block statistics of logits rows, as the output projection's LINEAR kernel
// writes them while the rows are in its caches (plugin ABI 1.5,
// parley_linear_args.block_max / block_sum): decoding takes a row's
// log-normaliser and its largest entries from them without reading the
// whole row again.
#pragma once

#include <cstdint>
#include <vector>

namespace parley {

// Entries per block; equals PARLEY_LINEAR_STATS_BLOCK (checked where the
// plugin header is seen).
constexpr int64_t kLogitStatsBlock = 64;

struct LogitStats {
  // [rows, blocks]: per block of a row its maximum (NaN ignored) and the sum
  // of exp(entry - maximum) in float; the sum is NaN when the block holds a
  // NaN or +inf, 0 when the maximum is -inf.
  std::vector<float> block_max, block_sum;
  int64_t blocks = 0;  // per row: ceil(vocab / kLogitStatsBlock)
  bool valid = false;  // false: the model did not produce them this step
};

}  // namespace parley
