// Logits processors and sampling warpers, one row at a time, transcribed from
// transformers 5.23.0 generation/logits_process.py and applied in the order
// GenerationMixin._get_logits_processor builds them. Internal to the engine;
// exposed in a header so tests can check each one against transformers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/decoding.hpp"
#include "model/logit_stats.hpp"

namespace parley::decoding {

// The tokens a row has seen: its prompt followed by what it generated.
struct RowHistory {
  const std::vector<int32_t> *prompt;
  const std::vector<int32_t> *generated;
  size_t size() const { return prompt->size() + generated->size(); }
  int32_t operator[](size_t i) const { return i < prompt->size() ? (*prompt)[i] : (*generated)[i - prompt->size()]; }
};

// The non-sampling processors for these options, in transformers' order:
// repetition penalty, no-repeat-ngram, min-new-tokens EOS suppression, forced
// BOS, forced EOS, suppress tokens, begin-suppress tokens. `cur_len` is
// transformers' input_ids.shape[-1] (padded prompt length + generated count),
// `padded_prompt_len` the padded prompt length.
void apply_processors(const DecodingOptions &o, float *scores, int64_t vocab, const RowHistory &history,
                      int64_t cur_len, int64_t padded_prompt_len);

// The sampling warpers in transformers' order: temperature, top-k, top-p,
// min-p. `min_tokens_to_keep` is 1, or len(eos) + 1 for beam sampling.
void apply_warpers(const DecodingOptions &o, float *scores, int64_t vocab, int64_t min_tokens_to_keep);

// Individual pieces (used above, and by tests).
void repetition_penalty(float *scores, int64_t vocab, const RowHistory &history, double penalty);
void no_repeat_ngram(float *scores, int64_t vocab, const RowHistory &history, int64_t n);
void temperature(float *scores, int64_t vocab, double t);
void top_k(float *scores, int64_t vocab, int64_t k, int64_t min_tokens_to_keep);
void top_p(float *scores, int64_t vocab, double p, int64_t min_tokens_to_keep);
void min_p(float *scores, int64_t vocab, double p, int64_t min_tokens_to_keep);

// log_softmax / softmax of one row (float32 result, double accumulation).
// log_softmax returns the row's log_sum_exp (check it with check_logits_row).
double log_softmax(const float *in, float *out, int64_t vocab);
// log_softmax with the row's log_sum_exp already known (e.g. from the block
// statistics the model returned with the row): out[v] = float(double(in[v])
// - lse), -inf where in[v] is; all -inf when lse is. Returns lse.
double log_softmax_given_lse(const float *in, float *out, int64_t vocab, double lse);
// log_softmax(in)[token] without writing the row: the value log_softmax()
// would write there, bit for bit.
float token_log_softmax(const float *in, int64_t vocab, int64_t token);
// std::max_element(in, in + vocab) - in, faster: the first maximal index of a
// row without NaN.
int64_t argmax_first(const float *in, int64_t vocab);
// The log-normaliser log_softmax subtracts, log(sum(exp(in))), from the row's
// block statistics (logit_block_stats, then log_sum_exp_of_blocks): -inf
// when every entry is -inf, NaN when any entry is NaN or +inf, so finite
// exactly when the row is a usable distribution. log_softmax(in)[v] ==
// float(double(in[v]) - log_sum_exp(in)) for finite in[v].
double log_sum_exp(const float *in, int64_t vocab);

// The block statistics of one row (LogitStats, model/logit_stats.hpp) into
// block_max / block_sum [ceil(vocab / kLogitStatsBlock)], in one pass: what
// the output projection's kernel returns with the row where it can.
void logit_block_stats(const float *in, int64_t vocab, float *block_max, float *block_sum);
// log(sum(exp(row))) from a row's block statistics: M + log(sum_b sum_b *
// exp(max_b - M)) with M the largest block maximum (exp in float, the sum in
// double); NaN when a block's sum is NaN, -inf when every maximum is -inf.
double log_sum_exp_of_blocks(const float *block_max, const float *block_sum, int64_t blocks);

// Copies a row and returns its maximum in the same pass, NaN if any entry is
// NaN (a plain max drops NaN: every comparison with it is false).
float copy_row_max(const float *in, float *out, int64_t vocab);

// Non-finite logits from the model (issue 10): a NaN or +inf anywhere in a
// raw row, or a row that is all -inf (-inf alone is a legitimate mask), is a
// failing kernel, not a distribution. `row_max` is the row's NaN-propagating
// maximum (copy_row_max) or its log_sum_exp, which are finite exactly for
// usable rows; the check is that one comparison. Otherwise throws
// PARLEY_ERROR_DEVICE describing the row (counted only then) at `step`,
// naming `source` (StepModel::logits_source()).
void check_logits_row(double row_max, const float *row, int64_t vocab, int64_t step, const std::string &source);

// apply_processors() for one log-probability row without materialising it:
// every token the processors would change, with its processed value, given
// the row's raw scores and log-normaliser. Returns false when a processor
// rewrites the whole row this step (forced BOS/EOS): use the dense path.
bool processed_overrides(const DecodingOptions &o, const float *raw, double lse, int64_t vocab,
                         const RowHistory &history, int64_t cur_len, int64_t padded_prompt_len,
                         std::vector<std::pair<int32_t, float>> *overrides);
void softmax(const float *in, double *out, int64_t vocab);

// A counter-based generator: the draw for (seed, stream, counter) does not
// depend on anything else, so a row's samples do not depend on the batch it is
// in. Not torch's generator: sampled outputs cannot match transformers'
// bit for bit, only in distribution.
double uniform01(uint64_t seed, uint64_t stream, uint64_t counter);

}  // namespace parley::decoding
