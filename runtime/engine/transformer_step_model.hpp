// StepModel over the Transformer and its KV cache (DecoderState).
#pragma once

#include "engine/step_model.hpp"
#include "model/transformer.hpp"

namespace parley {

// "the output projection (linear kernel 'x') served by plugin 'y'": where
// logits come from, for errors about them.
std::string logits_source_of(const Transformer &model);

class TransformerStepModel : public StepModel {
 public:
  TransformerStepModel(const Transformer &model, DecoderState state) : model_(model), state_(std::move(state)) {}
  int64_t vocab() const override { return model_.vocab(); }
  int64_t rows() const override { return state_.batch; }
  std::vector<float> advance(const std::vector<int32_t> &tokens) override {
    return model_.step(state_, tokens, 1, /*last_only=*/true);
  }
  void advance_into(const std::vector<int32_t> &tokens, std::vector<float> &logits) override {
    model_.step_into(state_, tokens, 1, /*last_only=*/true, logits);
  }
  void advance_into(const std::vector<int32_t> &tokens, std::vector<float> &logits, LogitStats *stats) override {
    model_.step_into(state_, tokens, 1, /*last_only=*/true, logits, {}, stats);
  }
  void reorder(const std::vector<int32_t> &parents) override;
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)> &fn) override;
  std::string logits_source() const override;
  DecoderState &state() { return state_; }

 private:
  const Transformer &model_;
  DecoderState state_;
};

}  // namespace parley
