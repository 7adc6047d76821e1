// Entry points behind decode(); inputs are already validated.
#pragma once

#include "engine/decoding.hpp"

namespace parley::decoding {

// transformers' `_sample` (greedy when !do_sample).
// Coroutines (awaiting the model's advance_task); references must outlive them.
Task<std::vector<std::vector<Hypothesis>>> greedy_or_sample(StepModel &model, std::vector<float> logits,
                                                            const std::vector<std::vector<int32_t>> &prompts,
                                                            const DecodingOptions &options);

// transformers' `_beam_search` (beam sampling when do_sample).
Task<std::vector<std::vector<Hypothesis>>> beam_search(StepModel &model, std::vector<float> logits,
                                                       const std::vector<std::vector<int32_t>> &prompts,
                                                       const DecodingOptions &options);

// Expands every row `times` times in place (row b becomes rows b*times ..
// b*times+times-1), in the model and in `logits`, like
// `_expand_inputs_for_generation`.
void expand_rows(StepModel &model, std::vector<float> &logits, int64_t vocab, int64_t times);

// Indices of the `k` largest of `v`, best first, equal values in index order.
std::vector<size_t> top_indices(const std::vector<float> &v, size_t k);

// Appends the top min(k, vocab) entries of the log-probability row `logp`
// to h's alternatives (one generated step).
void append_alternatives(const float *logp, int64_t vocab, int64_t k, Hypothesis &h);

// Beam search's candidate selection for one item without sampling (steps
// b.-c.) from the raw logits of its n beam rows: log-normaliser, the
// processors' changed tokens and the top raw scores instead of the dense
// beams x vocab scores. Fills `picked` with (flat index, score) pairs equal to
// top_indices over the dense scores and returns true, or returns false when
// it cannot guarantee that (the caller then runs the dense path).
// block_max: the rows' block maxima [n, ceil(vocab / kLogitStatsBlock)]
// (LogitStats), lse: their log_sum_exp, as the dense path uses them.
bool top_candidates_sparse(const DecodingOptions &o, const float *rows, size_t n, int64_t vocab, const float *block_max,
                           const double *lse, const std::vector<float> &beam_scores,
                           const std::vector<const std::vector<int32_t> *> &generated,
                           const std::vector<int32_t> &prompt, int64_t cur_len, int64_t padded, size_t k,
                           std::vector<std::pair<size_t, float>> *picked);
// The same, with the statistics computed here (logit_block_stats, log_sum_exp_of_blocks).
bool top_candidates_sparse(const DecodingOptions &o, const float *rows, size_t n, int64_t vocab,
                           const std::vector<float> &beam_scores,
                           const std::vector<const std::vector<int32_t> *> &generated,
                           const std::vector<int32_t> &prompt, int64_t cur_len, int64_t padded, size_t k,
                           std::vector<std::pair<size_t, float>> *picked);

// Throws CANCELLED when options.cancel is set, TIMEOUT when options.deadline
// has passed; `step` (the number of tokens generated so far) goes into the
// message. Called before each model.advance(); `model` hears of the stop
// first (StepModel::stopped: the serving engine counts it).
void check_run_control(const DecodingOptions &options, int64_t step, StepModel &model);

// The longest prompt: transformers' input_ids.shape[-1] of a left-padded batch.
int64_t padded_prompt_length(const std::vector<std::vector<int32_t>> &prompts);

}  // namespace parley::decoding
