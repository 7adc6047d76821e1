// Option validation, dispatch, and greedy/sampling decoding
// (transformers 5.23.0 generation/utils.py `_sample`).
#include "engine/decoding.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <unordered_map>

#include "core/error.hpp"
#include "engine/decoding_internal.hpp"
#include "engine/logits_processors.hpp"
#include "engine/token_constraint.hpp"

namespace parley {

namespace {

[[noreturn]] void invalid(const std::string &message) {
  fail(PARLEY_ERROR_INVALID_ARGUMENT, "decoding: " + message);
}

void check_id(const char *name, int64_t id, int64_t vocab) {
  if (id < 0 || id >= vocab)
    invalid(std::string(name) + " " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(vocab) +
            ")");
}

void check_ids(const char *name, const std::vector<int32_t> &ids, int64_t vocab) {
  for (int32_t id : ids) check_id(name, id, vocab);
}

constexpr double kMaxLogitBias = 1.0e4;

std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

void validate_decoding_options(const DecodingOptions &o, int64_t vocab) {
  if (vocab <= 0) invalid("the model has an empty vocabulary");
  if (o.max_new_tokens < 1) invalid("max_new_tokens must be >= 1, got " + std::to_string(o.max_new_tokens));
  if (o.min_new_tokens < 0) invalid("min_new_tokens must be >= 0, got " + std::to_string(o.min_new_tokens));
  if (o.num_beams < 1) invalid("num_beams must be >= 1, got " + std::to_string(o.num_beams));
  if (o.num_return_sequences < 1)
    invalid("num_return_sequences must be >= 1, got " + std::to_string(o.num_return_sequences));
  if (o.num_beams == 1 && !o.do_sample && o.num_return_sequences != 1)
    invalid("greedy decoding (num_beams = 1, do_sample = false) returns one sequence, got num_return_sequences = " +
            std::to_string(o.num_return_sequences));
  if (o.num_beams > 1 && o.num_return_sequences > o.num_beams)
    invalid("num_return_sequences (" + std::to_string(o.num_return_sequences) + ") must be <= num_beams (" +
            std::to_string(o.num_beams) + ")");
  if (!std::isfinite(o.length_penalty)) invalid("length_penalty must be finite");
  if (o.no_repeat_ngram_size < 0) invalid("no_repeat_ngram_size must be >= 0");
  if (!(o.repetition_penalty > 0.0) || !std::isfinite(o.repetition_penalty))
    invalid("repetition_penalty must be a finite number > 0, got " + std::to_string(o.repetition_penalty));
  check_ids("eos_token_id", o.eos_token_ids, vocab);
  if (o.pad_token_id) check_id("pad_token_id", *o.pad_token_id, vocab);
  if (o.forced_bos_token_id) check_id("forced_bos_token_id", *o.forced_bos_token_id, vocab);
  check_ids("forced_eos_token_id", o.forced_eos_token_ids, vocab);
  check_ids("suppress_tokens entry", o.suppress_tokens, vocab);
  check_ids("begin_suppress_tokens entry", o.begin_suppress_tokens, vocab);
  // Each token's total bias within +-kMaxLogitBias: beyond, float logits
  // lose the model's own scores (and two entries of 3e38 sum to inf).
  std::unordered_map<int32_t, double> bias_sum;
  for (size_t i = 0; i < o.logit_bias.size(); ++i) {
    check_id(("logit_bias entry " + std::to_string(i) + " (token id)").c_str(), o.logit_bias[i].first, vocab);
    if (!std::isfinite(o.logit_bias[i].second))
      invalid("logit_bias entry " + std::to_string(i) + " (token " + std::to_string(o.logit_bias[i].first) +
              ") has a value that is not finite");
    const double sum = bias_sum[o.logit_bias[i].first] += o.logit_bias[i].second;
    if (std::abs(sum) > kMaxLogitBias)
      invalid("logit_bias entry " + std::to_string(i) + " (token " + std::to_string(o.logit_bias[i].first) +
              ") brings the token's bias to " + short_number(sum) + "; a token's bias (the sum of its entries) " +
              "must be within [-" + std::to_string(static_cast<int>(kMaxLogitBias)) + ", " +
              std::to_string(static_cast<int>(kMaxLogitBias)) + "] (-100 already bans a token)");
  }
  if (o.num_alternatives < 0 || o.num_alternatives > kMaxAlternatives)
    invalid("num_alternatives must be in [0, " + std::to_string(kMaxAlternatives) + "] (the limit is " +
            std::to_string(kMaxAlternatives) + " alternatives per step), got " + std::to_string(o.num_alternatives));
  if (o.constraint) {
    if (!o.constraint->grammar || !o.constraint->vocab || o.constraint->vocab->size() != vocab)
      fail(PARLEY_ERROR_INTERNAL, "decoding: the constraint's vocabulary is not the model's");
    if (o.num_beams > 1 && o.eos_token_ids.empty())
      fail(PARLEY_ERROR_UNSUPPORTED,
           "decoding: beam search with a grammar or JSON schema needs EOS token ids (eos_token_ids) to end "
           "hypotheses once they are complete");
  }
  if (o.do_sample) {
    if (!(o.temperature > 0.0) || !std::isfinite(o.temperature))
      invalid("temperature must be a finite number > 0 when sampling, got " + std::to_string(o.temperature) +
              " (use do_sample = false for greedy decoding)");
    if (o.top_k < 0) invalid("top_k must be >= 0 (0 disables it), got " + std::to_string(o.top_k));
    if (!(o.top_p > 0.0 && o.top_p <= 1.0)) invalid("top_p must be in (0, 1], got " + std::to_string(o.top_p));
    if (!(o.min_p >= 0.0 && o.min_p <= 1.0)) invalid("min_p must be in [0, 1], got " + std::to_string(o.min_p));
  }
}

std::vector<std::vector<Hypothesis>> decode(StepModel &model, const std::vector<float> &last_logits,
                                            const std::vector<std::vector<int32_t>> &prompts,
                                            const DecodingOptions &options) {
  return run_sync(decode_task(model, last_logits, prompts, options));
}

Task<std::vector<std::vector<Hypothesis>>> decode_task(StepModel &model, const std::vector<float> &last_logits,
                                                       const std::vector<std::vector<int32_t>> &prompts,
                                                       const DecodingOptions &options) {
  const int64_t vocab = model.vocab();
  validate_decoding_options(options, vocab);
  const int64_t batch = model.rows();
  if (batch < 1) invalid("empty batch");
  if (static_cast<int64_t>(prompts.size()) != batch)
    invalid("got " + std::to_string(prompts.size()) + " prompts for " + std::to_string(batch) + " model rows");
  if (static_cast<int64_t>(last_logits.size()) != batch * vocab)
    invalid("last_logits has " + std::to_string(last_logits.size()) +
            " values, expected batch * vocab = " + std::to_string(batch * vocab));
  for (const auto &p : prompts) {
    if (p.empty()) invalid("empty prompt (an encoder-decoder prompt holds at least the decoder start token)");
    check_ids("prompt token", p, vocab);
  }
  decoding::check_run_control(options, 0, model);
  if (options.num_beams > 1) co_return co_await decoding::beam_search(model, last_logits, prompts, options);
  co_return co_await decoding::greedy_or_sample(model, last_logits, prompts, options);
}

namespace decoding {

void check_run_control(const DecodingOptions &o, int64_t step, StepModel &model) {
  if (o.cancel && o.cancel->load(std::memory_order_acquire)) {
    model.stopped(PARLEY_ERROR_CANCELLED);
    fail(PARLEY_ERROR_CANCELLED, "the request was cancelled (after " + std::to_string(step) + " generated tokens)");
  }
  if (o.deadline && std::chrono::steady_clock::now() >= *o.deadline) {
    model.stopped(PARLEY_ERROR_TIMEOUT);
    fail(PARLEY_ERROR_TIMEOUT,
         "the request's deadline passed (after " + std::to_string(step) + " generated tokens); it was stopped");
  }
}

void expand_rows(StepModel &model, std::vector<float> &logits, int64_t vocab, int64_t times) {
  if (times == 1) return;
  const int64_t rows = model.rows();
  std::vector<int32_t> parents;
  std::vector<float> expanded;
  expanded.reserve(static_cast<size_t>(rows * times * vocab));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < times; ++t) {
      parents.push_back(static_cast<int32_t>(r));
      expanded.insert(expanded.end(), logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
    }
  model.reorder(parents);
  logits = std::move(expanded);
}

int64_t padded_prompt_length(const std::vector<std::vector<int32_t>> &prompts) {
  size_t longest = 0;
  for (const auto &p : prompts) longest = std::max(longest, p.size());
  return static_cast<int64_t>(longest);
}

void append_alternatives(const float *logp, int64_t vocab, int64_t k, Hypothesis &h) {
  const std::vector<size_t> best = top_indices(std::vector<float>(logp, logp + vocab), static_cast<size_t>(k));
  h.alternatives = static_cast<int64_t>(best.size());
  for (size_t i : best) {
    h.alternative_ids.push_back(static_cast<int32_t>(i));
    h.alternative_logprobs.push_back(logp[i]);
  }
}

// Rows are independent in `_sample`, so instead of feeding pad tokens to
// finished rows (transformers' behaviour) they are dropped from the model;
// the output is the same.
Task<std::vector<std::vector<Hypothesis>>> greedy_or_sample(StepModel &model, std::vector<float> logits,
                                                            const std::vector<std::vector<int32_t>> &prompts,
                                                            const DecodingOptions &o) {
  const int64_t vocab = model.vocab();
  const int64_t batch = static_cast<int64_t>(prompts.size());
  const int64_t per_item = o.do_sample ? o.num_return_sequences : 1;
  expand_rows(model, logits, vocab, per_item);
  const int64_t padded = padded_prompt_length(prompts);
  const int64_t max_length = padded + o.max_new_tokens;

  std::vector<std::vector<Hypothesis>> out(static_cast<size_t>(batch), std::vector<Hypothesis>(per_item));
  std::vector<int64_t> live(static_cast<size_t>(batch * per_item));  // model row -> batch * per_item + sequence
  for (size_t i = 0; i < live.size(); ++i) live[i] = static_cast<int64_t>(i);

  std::vector<float> scores(static_cast<size_t>(vocab)), logp(static_cast<size_t>(vocab));
  // Named when a row of logits is NaN / +inf / all -inf.
  const std::string logits_source = model.logits_source();
  std::vector<double> probs(static_cast<size_t>(vocab));
  // Per sequence (batch * per_item + sequence): its grammar state.
  std::vector<std::unique_ptr<ConstraintState>> constraint(live.size());
  if (o.constraint)
    for (auto &c : constraint) c = std::make_unique<ConstraintState>(o.constraint);
  auto constraint_status = [&](const ConstraintState &c) {
    return static_cast<int8_t>(c.complete() ? ConstraintStatus::kComplete : ConstraintStatus::kIncomplete);
  };
  for (int64_t step = 0;; ++step) {
    const int64_t cur_len = padded + step;
    std::vector<int32_t> tokens, kept_rows;
    std::vector<int64_t> next_live;
    for (size_t i = 0; i < live.size(); ++i) {
      const int64_t id = live[i], b = id / per_item, s = id % per_item;
      Hypothesis &h = out[static_cast<size_t>(b)][static_cast<size_t>(s)];
      const float *raw = logits.data() + static_cast<int64_t>(i) * vocab;
      ConstraintState *cs = constraint[static_cast<size_t>(id)].get();
      if (cs && cs->finished() && o.eos_token_ids.empty()) {
        // The grammar is complete and admits nothing more: the sequence ends here.
        h.constraint = constraint_status(*cs);
        continue;
      }
      check_logits_row(copy_row_max(raw, scores.data(), vocab), raw, vocab, step, logits_source);
      const RowHistory history{&prompts[static_cast<size_t>(b)], &h.tokens};
      apply_processors(o, scores.data(), vocab, history, cur_len, padded);
      if (cs) {
        cs->mask(scores.data(), o.eos_token_ids);
        if (!(*std::max_element(scores.begin(), scores.end()) > -std::numeric_limits<float>::infinity())) {
          // No token the grammar admits survives the processors (or the
          // vocabulary cannot spell what the grammar needs): stop, marked.
          h.constraint = constraint_status(*cs);
          continue;
        }
      }
      int32_t token = 0;
      if (o.do_sample) {
        apply_warpers(o, scores.data(), vocab, 1);
        softmax(scores.data(), probs.data(), vocab);
        if (!std::isfinite(probs[0])) invalid("every token has probability 0 after the logits processors");
        const double u = uniform01(o.seed, static_cast<uint64_t>(id), static_cast<uint64_t>(step));
        double cum = 0.0;
        token = -1;
        int32_t last_possible = 0;
        for (int64_t v = 0; v < vocab; ++v) {
          if (probs[static_cast<size_t>(v)] <= 0.0) continue;
          last_possible = static_cast<int32_t>(v);
          cum += probs[static_cast<size_t>(v)];
          if (u < cum) {
            token = static_cast<int32_t>(v);
            break;
          }
        }
        if (token < 0) token = last_possible;  // u beyond the rounded total
      } else {
        // torch.argmax: the first maximal index.
        token = static_cast<int32_t>(argmax_first(scores.data(), vocab));
      }
      // The whole log-softmax row only for alternatives; the token's own
      // term is the same expression log_softmax() writes for it.
      float token_logp;
      if (o.num_alternatives > 0) {
        log_softmax(scores.data(), logp.data(), vocab);
        token_logp = logp[static_cast<size_t>(token)];
        append_alternatives(logp.data(), vocab, o.num_alternatives, h);
      } else {
        token_logp = token_log_softmax(scores.data(), vocab, token);
      }
      h.score += token_logp;
      if (o.return_logprobs) h.logprobs.push_back(token_logp);
      h.tokens.push_back(token);
      bool done = cur_len + 1 >= max_length ||
                  std::find(o.eos_token_ids.begin(), o.eos_token_ids.end(), token) != o.eos_token_ids.end();
      if (cs) {
        if (!cs->accept(token, o.eos_token_ids))
          fail(PARLEY_ERROR_INTERNAL,
               "decoding: the grammar rejected token " + std::to_string(token) + " that its mask admitted");
        h.constraint = constraint_status(*cs);
        if (cs->finished() && o.eos_token_ids.empty()) done = true;
      }
      if (o.on_hypothesis) o.on_hypothesis(b, s, h);
      if (o.on_token && !o.on_token(b, s, token)) done = true;
      if (!done) {
        next_live.push_back(id);
        kept_rows.push_back(static_cast<int32_t>(i));
        tokens.push_back(token);
      }
    }
    if (next_live.empty()) break;
    if (next_live.size() != live.size()) model.reorder(kept_rows);
    live = std::move(next_live);
    check_run_control(o, step + 1, model);
    co_await model.advance_task(tokens, logits, nullptr);
    if (static_cast<int64_t>(logits.size()) != static_cast<int64_t>(live.size()) * vocab)
      fail(PARLEY_ERROR_INTERNAL, "decoding: the model returned logits of the wrong size");
  }
  co_return out;
}

}  // namespace decoding
}  // namespace parley
