// StepModel over the serving engine: the decoding loop of one request
// (greedy, sampling, beam search) sees its rows as engine sequences; every
// advance() is one engine run, batched with whatever other requests post
// at the same time. Beam reorders share KV blocks (copy on write).
#pragma once

#include "engine/step_model.hpp"
#include "serve/engine.hpp"

namespace parley {

class EngineStepModel : public StepModel {
 public:
  EngineStepModel(Engine &engine, std::vector<Engine::SequencePtr> rows, RunControl control = {})
      : engine_(engine), rows_(std::move(rows)), control_(control) {}
  int64_t vocab() const override { return engine_.model().vocab(); }
  int64_t rows() const override { return static_cast<int64_t>(rows_.size()); }
  std::vector<float> advance(const std::vector<int32_t> &tokens) override;
  void advance_into(const std::vector<int32_t> &tokens, std::vector<float> &logits) override;
  void advance_into(const std::vector<int32_t> &tokens, std::vector<float> &logits, LogitStats *stats) override;
  // Suspends while the engine runs the rows when the control has a resumer.
  Task<void> advance_task(const std::vector<int32_t> &tokens, std::vector<float> &logits, LogitStats *stats) override;
  void reorder(const std::vector<int32_t> &parents) override;
  std::string logits_source() const override;
  void stopped(parley_status status) override { engine_.count_stopped(status); }
  std::vector<Engine::SequencePtr> &sequences() { return rows_; }

 private:
  // One engine sequence and one token per row, for a run.
  void rows_and_feed(const std::vector<int32_t> &tokens, std::vector<Engine::Sequence *> &seqs,
                     std::vector<std::vector<int32_t>> &feed) const;
  Engine &engine_;
  std::vector<Engine::SequencePtr> rows_;
  RunControl control_;
};

}  // namespace parley
