#include "serve/engine_step_model.hpp"

#include "core/error.hpp"
#include "engine/transformer_step_model.hpp"

namespace parley {

std::vector<float> EngineStepModel::advance(const std::vector<int32_t> &tokens) {
  std::vector<float> logits;
  advance_into(tokens, logits, nullptr);
  return logits;
}

void EngineStepModel::advance_into(const std::vector<int32_t> &tokens, std::vector<float> &logits) {
  advance_into(tokens, logits, nullptr);
}

// One engine run; the caller's logits storage is reused from step to step
// (a [rows, vocab] buffer is not cleared and reallocated each time), and
// the rows' block statistics come with them where the model writes them.
void EngineStepModel::advance_into(const std::vector<int32_t> &tokens, std::vector<float> &logits, LogitStats *stats) {
  std::vector<Engine::Sequence *> seqs;
  std::vector<std::vector<int32_t>> feed;
  rows_and_feed(tokens, seqs, feed);
  engine_.run_into(seqs, feed, control_, logits, stats);
}

Task<void> EngineStepModel::advance_task(const std::vector<int32_t> &tokens, std::vector<float> &logits,
                                         LogitStats *stats) {
  std::vector<Engine::Sequence *> seqs;
  std::vector<std::vector<int32_t>> feed;
  rows_and_feed(tokens, seqs, feed);
  co_await engine_.run_await(seqs, feed, control_, logits, stats);
}

void EngineStepModel::rows_and_feed(const std::vector<int32_t> &tokens, std::vector<Engine::Sequence *> &seqs,
                                    std::vector<std::vector<int32_t>> &feed) const {
  if (tokens.size() != rows_.size()) fail(PARLEY_ERROR_INTERNAL, "advance: one token per row is needed");
  for (size_t i = 0; i < rows_.size(); ++i) {
    seqs.push_back(rows_[i].get());
    feed.push_back({tokens[i]});
  }
}

void EngineStepModel::reorder(const std::vector<int32_t> &parents) {
  std::vector<Engine::SequencePtr> next;
  std::vector<bool> taken(rows_.size(), false);
  next.reserve(parents.size());
  for (int32_t p : parents) {
    if (p < 0 || static_cast<size_t>(p) >= rows_.size()) fail(PARLEY_ERROR_INTERNAL, "reorder: parent out of range");
    if (!taken[static_cast<size_t>(p)]) {  // the first child keeps the row itself
      taken[static_cast<size_t>(p)] = true;
      next.push_back(rows_[static_cast<size_t>(p)]);
    } else {
      next.push_back(engine_.fork(*rows_[static_cast<size_t>(p)]));
    }
  }
  rows_ = std::move(next);  // rows nobody continues are closed here
}

std::string EngineStepModel::logits_source() const {
  return logits_source_of(engine_.model());
}

}  // namespace parley
