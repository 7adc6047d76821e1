// Decoding (greedy, sampling, beam search) over a StepModel, with the
// semantics of Hugging Face transformers' `generate()`.
//
// Reference: transformers 5.23.0, src/transformers/generation/utils.py
// (`_sample`, `_beam_search` and its helpers `_get_top_k_continuations`,
// `_get_running_beams_for_next_iteration`, `_update_finished_beams`,
// `_check_early_stop_heuristic`, `_beam_search_has_unfinished_sequences`,
// `_get_logits_processor`, `_prepare_generated_length`,
// `_prepare_special_tokens`), generation/logits_process.py,
// generation/stopping_criteria.py and generation/configuration_utils.py
// (defaults). In that version beam search keeps finished hypotheses in
// static tensors (there is no BeamHypotheses class any more); the length
// penalty divides by the number of *generated* tokens, prompt excluded.
//
// Thread-safety: decode() is reentrant; it mutates only the StepModel it is
// given (which must not be used concurrently).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "engine/step_model.hpp"

namespace parley {

struct Constraint;  // engine/token_constraint.hpp
struct Hypothesis;

// transformers' `early_stopping`: False, True or "never".
enum class EarlyStopping { kFalse, kTrue, kNever };

// Every field defaults to transformers' GenerationConfig default
// (`_get_default_generation_params`); max_new_tokens = 20 mirrors its
// default `max_length = 20` counted from the prompt.
struct DecodingOptions {
  int64_t max_new_tokens = 20;
  int64_t min_new_tokens = 0;  // EOS ids are suppressed until this many tokens were generated
  int64_t num_beams = 1;
  int64_t num_return_sequences = 1;  // beam search: <= num_beams; sampling: independent samples
  double length_penalty = 1.0;       // beam score = sum logprob / generated_len ** length_penalty
  EarlyStopping early_stopping = EarlyStopping::kFalse;
  int64_t no_repeat_ngram_size = 0;    // 0 = off; n-grams are taken over prompt + generated tokens
  double repetition_penalty = 1.0;     // 1 = off; applies to every token of prompt + generated part
  std::vector<int32_t> eos_token_ids;  // empty = generation stops only at max_new_tokens
  // Only fills generated positions of finished rows in transformers; Parley
  // returns unpadded hypotheses, so this is validated and otherwise unused.
  std::optional<int32_t> pad_token_id;
  // Forced at the first generated position, but (as in transformers) only when
  // the prompt is a single token, i.e. an encoder-decoder decoder start token.
  std::optional<int32_t> forced_bos_token_id;
  std::vector<int32_t> forced_eos_token_ids;   // forced at the last position allowed by max_new_tokens
  std::vector<int32_t> suppress_tokens;        // never generated
  std::vector<int32_t> begin_suppress_tokens;  // not generated at the first free position
  bool do_sample = false;
  double temperature = 1.0;  // sampling only
  int64_t top_k = 50;        // sampling only; 0 = off
  double top_p = 1.0;        // sampling only; 1 = off
  double min_p = 0.0;        // sampling only; 0 = off
  uint64_t seed = 0;         // sampling only
  // Greedy/sampling only (ignored by beam search): called for every token
  // generated for (batch item, sequence index); returning false finishes that
  // sequence after this token. May be empty.
  std::function<bool(int64_t batch, int64_t sequence, int32_t token)> on_token;
  // Greedy/sampling only: called right before on_token with the sequence's
  // hypothesis so far (its token, log-probability and alternatives
  // appended); the hypothesis stays where it is until decode() returns. May
  // be empty.
  std::function<void(int64_t batch, int64_t sequence, const Hypothesis &so_far)> on_hypothesis;
  // Checked before every decoding step (and handed to the serving engine's
  // RunControl by its callers): set by another thread -> Error(CANCELLED);
  // passed -> Error(TIMEOUT). Neither changes any result that finishes.
  const std::atomic<bool> *cancel = nullptr;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  // Fill Hypothesis::logprobs (greedy, sampling and beam search). Changes
  // no token and no score.
  bool return_logprobs = false;
  // 1..kMaxAlternatives: fill Hypothesis::alternative_ids/_logprobs with the
  // top-k tokens of every generated step's distribution (the one `logprobs`
  // reads from). 0: none. Changes no token and no score.
  int64_t num_alternatives = 0;
  // OpenAI's logit_bias: (token id, value) added to that token's score each
  // step before every other processor (transformers'
  // SequenceBiasLogitsProcessor with one-token sequences, first in
  // _get_logits_processor's order). Logprobs/alternatives see the biased
  // distribution. Empty: none.
  std::vector<std::pair<int32_t, float>> logit_bias;
  // A grammar (or converted JSON schema) the output must follow: each step,
  // after the logits processors, every token the grammar does not admit
  // next gets -inf (EOS ids only once the output is a complete sentence),
  // so the scores are those of the constrained distribution. A row whose
  // grammar is finished (nothing may follow) ends there; one left with no
  // admissible token ends early, marked incomplete. Beam search needs EOS
  // ids with a constraint (UNSUPPORTED otherwise). Null = unconstrained.
  std::shared_ptr<const Constraint> constraint;
};

// The most alternatives per step a request may ask for (num_alternatives).
inline constexpr int64_t kMaxAlternatives = 32;

struct Hypothesis {
  // Generated token ids only (prompt excluded), ending with the EOS token when
  // the hypothesis finished on one; never padded.
  std::vector<int32_t> tokens;
  // Beam search: transformers' `sequences_scores` (sum of processed log-probs
  // divided by len(tokens) ** length_penalty). Greedy/sampling: the sum over
  // the generated tokens of log_softmax(processed scores)[token], i.e. what
  // transformers' compute_transition_scores(..., normalize_logits=True) sums
  // to; with sampling the processed scores include temperature and the
  // top-k/top-p/min-p masks (the distribution actually sampled from).
  float score = 0.0f;
  // With DecodingOptions::return_logprobs: per generated token, its
  // log-probability under the distribution the search used at that step —
  // greedy/sampling: log_softmax of the processed scores (transformers'
  // compute_transition_scores(normalize_logits=True)), the terms `score`
  // sums; beam search: the processed log-probabilities that beam search adds
  // to the running score (log_softmax of the raw logits, then processors and
  // warpers; compute_transition_scores with beam_indices), summing to
  // score * len(tokens) ** length_penalty. Empty otherwise.
  std::vector<float> logprobs;
  // With DecodingOptions::num_alternatives = k: per generated token, the k
  // best tokens of the same distribution `logprobs` reads from, best first
  // (equal values in index order): [tokens.size() x alternatives] row-major.
  // alternatives = min(k, vocab); 0 (and both empty) otherwise.
  int64_t alternatives = 0;
  std::vector<int32_t> alternative_ids;
  std::vector<float> alternative_logprobs;
  // With DecodingOptions::constraint: 1 when the tokens form a complete
  // sentence of the grammar, 2 when generation stopped before (max_new_tokens,
  // a callback, no admissible token); 0 without a constraint.
  int8_t constraint = 0;
};

// Checks the options against the model's vocabulary; throws parley::Error
// (PARLEY_ERROR_INVALID_ARGUMENT) naming the offending option.
void validate_decoding_options(const DecodingOptions &options, int64_t vocab);

// Runs decoding. `model` holds one row per batch item with its prompt already
// consumed; `last_logits` are the logits of each row's last prompt position
// ([batch, vocab]); `prompts` are the prompt token ids per row (for
// encoder-decoder models: the decoder prompt, usually the decoder start token),
// non-empty. Rows of different prompt lengths are treated as transformers
// treats a left-padded batch: the position-dependent rules (forced BOS/EOS,
// begin_suppress_tokens) use the longest prompt's length, everything else
// (min/max new tokens, penalties, n-grams) the row's own tokens.
// Returns, per batch item, num_return_sequences hypotheses, best first for
// beam search. The model's rows are reordered/expanded/dropped on the way; its
// final state is unspecified. Throws parley::Error on invalid input.
std::vector<std::vector<Hypothesis>> decode(StepModel &model, const std::vector<float> &last_logits,
                                            const std::vector<std::vector<int32_t>> &prompts,
                                            const DecodingOptions &options);
// The same as a coroutine: it suspends where the model's advance_task does
// (an asynchronous request's engine rows), holding no thread meanwhile.
// Every argument must outlive it.
Task<std::vector<std::vector<Hypothesis>>> decode_task(StepModel &model, const std::vector<float> &last_logits,
                                                       const std::vector<std::vector<int32_t>> &prompts,
                                                       const DecodingOptions &options);

}  // namespace parley
