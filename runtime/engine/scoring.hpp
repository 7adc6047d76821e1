// Scoring of given targets (CTranslate2's score_batch): the model's raw
// log-probabilities of each target token given the tokens before it, by
// teacher-forced passes over the KV cache. No logits processor applies: the
// value is log_softmax(logits)[token], as transformers' logits for `labels`.
#pragma once

#include <cstdint>
#include <vector>

#include "model/transformer.hpp"

namespace parley {

struct ScoredTarget {
  std::vector<int32_t> tokens;  // the scored ids
  std::vector<float> logprobs;  // one per token
  double sum = 0.0;             // of the log-probabilities, in double
};

// Per item b: `contexts[b]` (>= 1 ids) is fed first and not scored; then
// every token of `targets[b]` (>= 1 ids) is scored given the context and
// the targets before it. Encoder-decoder models: `sources[b]` is encoded and
// the context is the decoder prompt (the decoder start token); decoder-only
// models: `sources` is empty. Throws parley::Error: INVALID_ARGUMENT for
// empty or mismatched inputs, ids outside the vocabulary, sequences past
// the model's positions; OUT_OF_MEMORY when a KV cache cannot fit; DEVICE
// for non-finite logits.
std::vector<ScoredTarget> score_targets(const Transformer &model, const std::vector<std::vector<int32_t>> &sources,
                                        const std::vector<std::vector<int32_t>> &contexts,
                                        const std::vector<std::vector<int32_t>> &targets);

}  // namespace parley
