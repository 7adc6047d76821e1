// What the decoding algorithms (greedy, beam search, sampling) see of a
// model: a set of live rows (hypotheses), each fed one token per step, and a
// way to reorder rows when beams are pruned or expanded. Keeping decoding
// behind this interface lets it be tested on a scripted model too.
#pragma once

#include <parley/parley.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/task.hpp"
#include "model/logit_stats.hpp"

namespace parley {

class StepModel {
 public:
  virtual ~StepModel() = default;
  virtual int64_t vocab() const = 0;
  virtual int64_t rows() const = 0;
  // Feed one token to every live row; returns logits [rows, vocab].
  virtual std::vector<float> advance(const std::vector<int32_t> &tokens) = 0;
  // The same into `logits`, whose storage a model may reuse.
  virtual void advance_into(const std::vector<int32_t> &tokens, std::vector<float> &logits) {
    logits = advance(tokens);
  }
  // ... and the rows' block statistics where the model's output projection
  // writes them (stats->valid; decoding computes them itself otherwise).
  virtual void advance_into(const std::vector<int32_t> &tokens, std::vector<float> &logits, LogitStats *stats) {
    advance_into(tokens, logits);
    stats->valid = false;
  }
  // co_await model.advance_task(...): advance_into (with `stats` when not
  // NULL) for the decoding coroutines. A model that can wait without a
  // thread (the serving engine's, for an asynchronous request) suspends
  // there; the others run it at once.
  virtual Task<void> advance_task(const std::vector<int32_t> &tokens, std::vector<float> &logits, LogitStats *stats) {
    if (stats)
      advance_into(tokens, logits, stats);
    else
      advance_into(tokens, logits);
    co_return;
  }
  // Row r of the new state continues old row parents[r] (rows may be
  // duplicated or dropped; parents.size() becomes the new row count).
  virtual void reorder(const std::vector<int32_t> &parents) = 0;
  // Runs fn over [0, n) in chunks, possibly on several threads (the model's
  // pool); fn(begin, end) must touch only its own items. Default: serially.
  virtual void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)> &fn) { fn(0, n); }
  // Who produced the logits, for errors about them (e.g. "the output
  // projection (gemm kernel 'x') served by plugin 'y'"); "" when unknown.
  virtual std::string logits_source() const { return ""; }
  // The decoding loop stops here: its request was cancelled
  // (PARLEY_ERROR_CANCELLED) or its deadline passed (PARLEY_ERROR_TIMEOUT).
  virtual void stopped(parley_status) {}
};

}  // namespace parley
