// Entry points behind decode(); inputs are already validated.
#pragma once

#include "engine/decoding.hpp"

namespace parley::decoding {

// transformers' `_sample` (greedy when !do_sample).
std::vector<std::vector<Hypothesis>> greedy_or_sample(StepModel &model, std::vector<float> logits,
                                                      const std::vector<std::vector<int32_t>> &prompts,
                                                      const DecodingOptions &options);

// transformers' `_beam_search` (beam sampling when do_sample).
std::vector<std::vector<Hypothesis>> beam_search(StepModel &model, std::vector<float> logits,
                                                 const std::vector<std::vector<int32_t>> &prompts,
                                                 const DecodingOptions &options);

// Expands every row `times` times in place (row b becomes rows b*times ..
// b*times+times-1), in the model and in `logits`, like
// `_expand_inputs_for_generation`.
void expand_rows(StepModel &model, std::vector<float> &logits, int64_t vocab, int64_t times);

// The longest prompt: transformers' input_ids.shape[-1] of a left-padded batch.
int64_t padded_prompt_length(const std::vector<std::vector<int32_t>> &prompts);

}  // namespace parley::decoding
