// Beam search (and beam sampling), transcribed from transformers 5.23.0
// generation/utils.py `_beam_search` and its helpers. Arithmetic on scores is
// float32 like the reference's tensors, including its -1e9 sentinels, so that
// the same hypotheses win with the same scores. torch.topk's order among
// equal scores is unspecified; here equal scores keep index order.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <numeric>
#include <string>

#include "core/error.hpp"
#include "engine/decoding_internal.hpp"
#include "engine/logits_processors.hpp"
#include "engine/token_constraint.hpp"

namespace parley::decoding {

namespace {

constexpr float kBig = 1.0e9f;  // transformers' -1.0e9 "cannot be chosen" offset

struct Beam {
  std::vector<int32_t> tokens;  // generated part
  float score = 0.0f;
  // return_logprobs / num_alternatives: per generated token (Hypothesis').
  std::vector<float> logprobs;
  std::vector<int32_t> alternative_ids;
  std::vector<float> alternative_logprobs;
  bool finished = false;  // finished-hypothesis slots only
  // With a constraint: the grammar state after `tokens` (shared between
  // slots holding the same hypothesis; replaced, never changed, when it grows).
  std::shared_ptr<ConstraintState> constraint;
};

struct Candidate {
  float score;  // accumulated log-prob
  int32_t beam;
  int32_t token;
  bool hits_stop;  // EOS or max length (the stopping criteria)
  float logprob;   // the processed log-prob `score` added (return_logprobs only; else 0)
};

// Entries per block of the block maxima top_tokens skips by.
constexpr int64_t kTopBlock = kLogitStatsBlock;

// The `k` largest entries of a raw row without NaN, best first, ties to the
// lower index. `maxima` holds the row's kTopBlock-entry block maxima
// (LogitStats): once k are held, a block whose maximum does not beat the
// k-th is skipped without reading it (most of a vocabulary row).
std::vector<int32_t> top_tokens(const float *row, int64_t vocab, size_t k, const float *maxima) {
  std::vector<int32_t> best;
  best.reserve(k + 1);
  // The k-th largest block maximum T: k entries are >= T, so the k-th
  // largest entry is too, and a block whose maximum is below T holds none
  // of the top k. Only those blocks are read (about k of them, where
  // filling `best` from the first blocks on used to read many more).
  const size_t blocks = static_cast<size_t>((vocab + kTopBlock - 1) / kTopBlock);
  float threshold = -std::numeric_limits<float>::infinity();
  if (k >= 1 && k <= blocks) {  // one pass keeping the k largest maxima, sorted (k is a few beams)
    thread_local std::vector<float> largest;
    largest.assign(k, -std::numeric_limits<float>::infinity());
    for (size_t b = 0; b < blocks; ++b) {
      const float x = maxima[b];
      if (!(x > largest[k - 1])) continue;
      size_t j = k - 1;
      for (; j > 0 && x > largest[j - 1]; --j) largest[j] = largest[j - 1];
      largest[j] = x;
    }
    threshold = largest[k - 1];
  }
  auto offer = [&](int64_t i) {
    const float x = row[i];
    if (best.size() == k && !(x > row[best.back()])) return;
    size_t j = best.size();
    while (j > 0 && x > row[best[j - 1]]) --j;
    best.insert(best.begin() + static_cast<std::ptrdiff_t>(j), static_cast<int32_t>(i));
    if (best.size() > k) best.pop_back();
  };
  for (int64_t i = 0, bi = 0; i < vocab; i += kTopBlock, ++bi) {
    if (maxima[bi] < threshold || (best.size() == k && !(maxima[bi] > row[best.back()]))) continue;
    const int64_t end = std::min(vocab, i + kTopBlock);
    for (int64_t j = i; j < end; ++j) offer(j);
  }
  return best;
}

// torch.multinomial(softmax(acc), k) without replacement, in draw order.
std::vector<size_t> sample_indices(const std::vector<float> &acc, size_t k, uint64_t seed, uint64_t stream,
                                   uint64_t counter0) {
  std::vector<double> probs(acc.size());
  softmax(acc.data(), probs.data(), static_cast<int64_t>(acc.size()));
  std::vector<size_t> picked;
  for (size_t draw = 0; draw < k; ++draw) {
    double total = 0.0;
    for (double p : probs) total += p;
    if (!(total > 0.0))
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           "decoding: beam sampling needs at least 2 * num_beams candidates with non-zero probability "
           "(raise top_k / top_p or lower num_beams)");
    const double target = uniform01(seed, stream, counter0 + draw) * total;
    double cum = 0.0;
    size_t chosen = probs.size();
    for (size_t i = 0; i < probs.size(); ++i) {
      if (probs[i] <= 0.0) continue;
      chosen = i;
      cum += probs[i];
      if (target < cum) break;
    }
    picked.push_back(chosen);
    probs[chosen] = 0.0;
  }
  return picked;
}

}  // namespace

// Indices of the `k` largest of `v`, best first, equal values in index order
// (torch.topk, sorted). One pass with a small sorted buffer: k is a few
// beams, v up to beams x vocab (no index array of that size per step).
std::vector<size_t> top_indices(const std::vector<float> &v, size_t k) {
  k = std::min(k, v.size());
  std::vector<size_t> best;
  best.reserve(k + 1);
  if (k == 0) return best;
  for (size_t i = 0; i < v.size(); ++i) {
    const float x = v[i];
    if (best.size() == k && !(x > v[best.back()])) continue;  // a tie keeps the earlier index
    size_t j = best.size();
    while (j > 0 && x > v[best[j - 1]]) --j;
    best.insert(best.begin() + static_cast<std::ptrdiff_t>(j), i);
    if (best.size() > k) best.pop_back();
  }
  return best;
}

// Steps b.-c. for one item without sampling, without materialising the
// beams x vocab scores: per beam row the log-normaliser (one vectorised exp
// pass), the processors' few changed tokens, and the top raw scores, which
// order a row's log-probabilities the same way. Picks the same (score, flat
// index) pairs as top_indices over the dense scores would, or returns false
// when that cannot be guaranteed (a processor rewriting the row, a fully
// masked or NaN row, a rounding tie at the boundary): then the caller runs
// the dense path.
bool top_candidates_sparse(const DecodingOptions &o, const float *rows, size_t n, int64_t vocab,
                           const std::vector<float> &beam_scores,
                           const std::vector<const std::vector<int32_t> *> &generated,
                           const std::vector<int32_t> &prompt, int64_t cur_len, int64_t padded, size_t k,
                           std::vector<std::pair<size_t, float>> *picked) {
  const int64_t blocks = (vocab + kTopBlock - 1) / kTopBlock;
  std::vector<float> maxima(n * static_cast<size_t>(blocks)), sums(maxima.size());
  std::vector<double> lse(n);
  for (size_t j = 0; j < n; ++j) {
    const size_t at = j * static_cast<size_t>(blocks);
    logit_block_stats(rows + j * static_cast<size_t>(vocab), vocab, maxima.data() + at, sums.data() + at);
    lse[j] = log_sum_exp_of_blocks(maxima.data() + at, sums.data() + at, blocks);
  }
  return top_candidates_sparse(o, rows, n, vocab, maxima.data(), lse.data(), beam_scores, generated, prompt, cur_len,
                               padded, k, picked);
}

bool top_candidates_sparse(const DecodingOptions &o, const float *rows, size_t n, int64_t vocab, const float *block_max,
                           const double *lse_of, const std::vector<float> &beam_scores,
                           const std::vector<const std::vector<int32_t> *> &generated,
                           const std::vector<int32_t> &prompt, int64_t cur_len, int64_t padded, size_t k,
                           std::vector<std::pair<size_t, float>> *picked) {
  struct Cand {
    float acc;
    size_t idx;
  };
  std::vector<Cand> cands;
  std::vector<float> bound(n, -std::numeric_limits<float>::infinity());  // best score a skipped token can have
  std::vector<std::pair<int32_t, float>> overrides;
  // The log-normaliser and the block maxima come with the rows (the
  // model's output projection or one pass of logit_block_stats): a row is
  // read only in the blocks that can hold its top tokens.
  const size_t blocks = static_cast<size_t>((vocab + kTopBlock - 1) / kTopBlock);
  for (size_t j = 0; j < n; ++j) {
    const float *row = rows + j * static_cast<size_t>(vocab);
    const double lse = lse_of[j];
    if (!std::isfinite(lse)) return false;
    if (!processed_overrides(o, row, lse, vocab, RowHistory{&prompt, generated[j]}, cur_len, padded, &overrides))
      return false;
    const size_t m = k + overrides.size() + 1;
    if (m >= static_cast<size_t>(vocab)) return false;
    const float score = beam_scores[j];
    auto lp_of = [&](int32_t t) {
      const float x = row[t];
      return x == -std::numeric_limits<float>::infinity() ? x : static_cast<float>(static_cast<double>(x) - lse);
    };
    const std::vector<int32_t> top = top_tokens(row, vocab, m, block_max + j * blocks);
    for (int32_t t : top) {
      bool overridden = false;
      for (const auto &ov : overrides) overridden = overridden || ov.first == t;
      if (!overridden) cands.push_back({lp_of(t) + score, j * static_cast<size_t>(vocab) + static_cast<size_t>(t)});
    }
    for (const auto &ov : overrides)
      cands.push_back({ov.second + score, j * static_cast<size_t>(vocab) + static_cast<size_t>(ov.first)});
    bound[j] = lp_of(top.back()) + score;
  }
  for (const Cand &c : cands)
    if (std::isnan(c.acc)) return false;
  const size_t keep = std::min(k, cands.size());
  std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(keep), cands.end(),
                    [](const Cand &a, const Cand &b) { return a.acc > b.acc || (a.acc == b.acc && a.idx < b.idx); });
  if (keep < k) return false;
  const float last = cands[keep - 1].acc;
  for (float b : bound)
    if (!(b < last)) return false;  // a token not looked at could tie or win
  picked->clear();
  for (size_t i = 0; i < keep; ++i) picked->emplace_back(cands[i].idx, cands[i].acc);
  return true;
}

Task<std::vector<std::vector<Hypothesis>>> beam_search(StepModel &model, std::vector<float> logits,
                                                       const std::vector<std::vector<int32_t>> &prompts,
                                                       const DecodingOptions &o) {
  const int64_t vocab = model.vocab();
  const size_t batch = prompts.size();
  const size_t n = static_cast<size_t>(o.num_beams);
  // Per-token log-probabilities and alternatives need the processed row of
  // every beam, so they take the dense path (the sparse one never builds it).
  const bool per_token = o.return_logprobs || o.num_alternatives > 0;
  const size_t n_alt = static_cast<size_t>(std::min<int64_t>(o.num_alternatives, vocab));
  expand_rows(model, logits, vocab, o.num_beams);
  const int64_t padded = padded_prompt_length(prompts);  // decoder_prompt_len
  const int64_t max_length = padded + o.max_new_tokens;
  // A hypothesis' score is divided by its length ** length_penalty in
  // float32: past ~88 on the log scale that is inf or 0, and every score
  // equal (an empty hypothesis won with OK).
  if (o.length_penalty != 0.0 &&
      std::abs(o.length_penalty) * std::log(static_cast<double>(o.max_new_tokens + 1)) > 80.0)
    fail(
        PARLEY_ERROR_INVALID_ARGUMENT, "length_penalty " +
                                           [&] {
                                             char buf[32];
                                             std::snprintf(buf, sizeof buf, "%g",
                                                           static_cast<double>(o.length_penalty));
                                             return std::string(buf);
                                           }() +
                                           " with max_new_tokens " + std::to_string(o.max_new_tokens) +
                                           ": length ** length_penalty leaves float's range (need |length_penalty| * "
                                           "ln(max_new_tokens + 1) <= 80)");
  const size_t n_eos = o.eos_token_ids.size();
  const size_t beams_to_keep = std::max<size_t>(2, 1 + n_eos) * n;
  const bool early_true = o.early_stopping == EarlyStopping::kTrue;
  // The warpers keep len(eos) + 1 tokens with beams (2 without EOS ids), see _get_logits_processor.
  const int64_t min_keep = n_eos ? static_cast<int64_t>(n_eos) + 1 : 2;

  // Only the first beam starts live so that the first step does not pick the
  // same token from identical beams.
  std::vector<std::vector<Beam>> running(batch, std::vector<Beam>(n)), finished(batch, std::vector<Beam>(n));
  for (size_t b = 0; b < batch; ++b)
    for (size_t j = 0; j < n; ++j) {
      running[b][j].score = j == 0 ? 0.0f : -kBig;
      finished[b][j].score = -kBig;
      if (o.constraint) running[b][j].constraint = std::make_shared<ConstraintState>(o.constraint);
    }
  std::vector<char> unsatisfied(batch, 1);  // is_early_stop_heuristic_unsatisfied
  // Named when a row of logits is NaN / +inf / all -inf.
  const std::string logits_source = model.logits_source();
  // The logits rows' block statistics when the model returned them with the
  // rows (not for the first step's expanded rows).
  LogitStats stats;
  const size_t blocks = static_cast<size_t>((vocab + kLogitStatsBlock - 1) / kLogitStatsBlock);
  // The items still searched, in the order of the model's rows (item
  // live[p] has rows p * n .. p * n + n - 1). An item whose finished
  // hypotheses can no longer change leaves the batch (transformers keeps
  // stepping it; its result is the same), as CTranslate2 drops finished
  // translations: a batch of sentences of mixed lengths then costs the
  // steps of each, not of the longest times the batch.
  std::vector<size_t> live(batch);
  std::iota(live.begin(), live.end(), size_t{0});

  for (int64_t step = 0;; ++step) {
    const int64_t cur_len = padded + step;
    bool all_hit = true;
    std::vector<int32_t> parents, next_tokens;
    // b.-c. Per batch item, independently (on the model's threads): log_softmax,
    // processors (and warpers when sampling), running scores added, then
    // _get_top_k_continuations.
    std::vector<std::vector<Candidate>> cands_of(batch);
    // num_alternatives: per item, the top n_alt (token, log-prob) of each beam row's processed row.
    std::vector<std::vector<int32_t>> alt_ids_of(batch);
    std::vector<std::vector<float>> alt_lps_of(batch);
    model.parallel_for(static_cast<int64_t>(live.size()), [&](int64_t p0, int64_t p1) {
      std::vector<float> lp, acc, own_max, own_sum;
      std::vector<double> lse(n);
      std::vector<std::pair<size_t, float>> chosen;  // (flat index, score)
      for (size_t p = static_cast<size_t>(p0); p < static_cast<size_t>(p1); ++p) {
        const size_t b = live[p];
        const float *item_rows = logits.data() + p * n * static_cast<size_t>(vocab);
        // The beam rows' block statistics, from the model's output
        // projection when it wrote them (the rows are then read only where
        // they can hold a top token), else computed here in one pass. One
        // log-normaliser per row serves the sparse and the dense path alike.
        const float *bmax, *bsum;
        if (stats.valid) {
          bmax = stats.block_max.data() + p * n * blocks;
          bsum = stats.block_sum.data() + p * n * blocks;
        } else {
          own_max.resize(n * blocks);
          own_sum.resize(n * blocks);
          for (size_t j = 0; j < n; ++j)
            logit_block_stats(item_rows + j * static_cast<size_t>(vocab), vocab, own_max.data() + j * blocks,
                              own_sum.data() + j * blocks);
          bmax = own_max.data();
          bsum = own_sum.data();
        }
        for (size_t j = 0; j < n; ++j)
          lse[j] = log_sum_exp_of_blocks(bmax + j * blocks, bsum + j * blocks, static_cast<int64_t>(blocks));
        std::vector<float> scores;
        std::vector<const std::vector<int32_t> *> generated;
        for (const Beam &beam : running[b]) {
          scores.push_back(beam.score);
          generated.push_back(&beam.tokens);
        }
        if (o.do_sample || o.constraint || per_token ||
            !top_candidates_sparse(o, item_rows, n, vocab, bmax, lse.data(), scores, generated, prompts[b], cur_len,
                                   padded, beams_to_keep, &chosen)) {
          lp.resize((per_token ? n : 1) * static_cast<size_t>(vocab));
          acc.resize(n * static_cast<size_t>(vocab));
          for (size_t j = 0; j < n; ++j) {
            const float *row = item_rows + j * static_cast<size_t>(vocab);
            // Keep every beam's processed row when its values are reported.
            float *lp_row = lp.data() + (per_token ? j * static_cast<size_t>(vocab) : 0);
            // The raw row's log-normaliser is finite exactly when the row is
            // usable (no NaN or +inf, not all -inf). The sparse path above
            // gives up on such a row, so every row passes this check.
            check_logits_row(log_softmax_given_lse(row, lp_row, vocab, lse[j]), row, vocab, step, logits_source);
            apply_processors(o, lp_row, vocab, RowHistory{&prompts[b], &running[b][j].tokens}, cur_len, padded);
            if (o.constraint) running[b][j].constraint->mask(lp_row, o.eos_token_ids);
            if (o.do_sample) apply_warpers(o, lp_row, vocab, min_keep);
            for (int64_t v = 0; v < vocab; ++v)
              acc[j * static_cast<size_t>(vocab) + static_cast<size_t>(v)] = lp_row[v] + running[b][j].score;
            if (n_alt) {
              Hypothesis alt;
              append_alternatives(lp_row, vocab, static_cast<int64_t>(n_alt), alt);
              alt_ids_of[b].insert(alt_ids_of[b].end(), alt.alternative_ids.begin(), alt.alternative_ids.end());
              alt_lps_of[b].insert(alt_lps_of[b].end(), alt.alternative_logprobs.begin(),
                                   alt.alternative_logprobs.end());
            }
          }
          const std::vector<size_t> picked =
              o.do_sample ? sample_indices(acc, beams_to_keep, o.seed, b, static_cast<uint64_t>(step) * beams_to_keep)
                          : top_indices(acc, beams_to_keep);
          chosen.clear();
          for (size_t idx : picked) chosen.emplace_back(idx, acc[idx]);
        }
        for (const auto &[idx, score] : chosen) {
          const int32_t token = static_cast<int32_t>(idx % static_cast<size_t>(vocab));
          const bool eos = std::find(o.eos_token_ids.begin(), o.eos_token_ids.end(), token) != o.eos_token_ids.end();
          // d. stopping criteria on the extended sequence (length cur_len + 1)
          const bool hits = eos || cur_len + 1 >= max_length;
          cands_of[b].push_back(
              {score, static_cast<int32_t>(idx / static_cast<size_t>(vocab)), token, hits, per_token ? lp[idx] : 0.0f});
        }
      }
    });
    for (size_t p = 0; p < live.size(); ++p) {
      const size_t b = live[p];
      const std::vector<Candidate> &cands = cands_of[b];
      for (const Candidate &c : cands) all_hit = all_hit && c.hits_stop;
      // The running beam `c` extends, grown by its token (and, when asked
      // for, its log-prob and the alternatives of its parent's row).
      auto extended = [&](const Candidate &c) {
        const Beam &parent = running[b][static_cast<size_t>(c.beam)];
        Beam e;
        e.tokens = parent.tokens;
        e.tokens.push_back(c.token);
        if (o.return_logprobs) {
          e.logprobs = parent.logprobs;
          e.logprobs.push_back(c.logprob);
        }
        if (n_alt) {
          const size_t at = static_cast<size_t>(c.beam) * n_alt;
          e.alternative_ids = parent.alternative_ids;
          e.alternative_ids.insert(e.alternative_ids.end(), alt_ids_of[b].begin() + static_cast<std::ptrdiff_t>(at),
                                   alt_ids_of[b].begin() + static_cast<std::ptrdiff_t>(at + n_alt));
          e.alternative_logprobs = parent.alternative_logprobs;
          e.alternative_logprobs.insert(e.alternative_logprobs.end(),
                                        alt_lps_of[b].begin() + static_cast<std::ptrdiff_t>(at),
                                        alt_lps_of[b].begin() + static_cast<std::ptrdiff_t>(at + n_alt));
        }
        return e;
      };
      // The grammar state after a candidate. A candidate the grammar
      // rejects has score -inf (masked: it never wins over an admitted
      // one); its state is marked rejected, reported incomplete.
      auto extended_state = [&](const Candidate &c) -> std::shared_ptr<ConstraintState> {
        if (!o.constraint) return nullptr;
        auto st = std::make_shared<ConstraintState>(*running[b][static_cast<size_t>(c.beam)].constraint);
        if (!st->accept(c.token, o.eos_token_ids)) st->reject();
        return st;
      };
      // e. _get_running_beams_for_next_iteration
      std::vector<float> running_lp(cands.size());
      for (size_t k = 0; k < cands.size(); ++k) running_lp[k] = cands[k].score + (cands[k].hits_stop ? -kBig : 0.0f);
      std::vector<Beam> next_running(n);
      const std::vector<size_t> keep = top_indices(running_lp, n);
      for (size_t j = 0; j < n; ++j) {
        const Candidate &c = cands[keep[j]];
        next_running[j] = extended(c);
        next_running[j].constraint = extended_state(c);
        next_running[j].score = running_lp[keep[j]];
        parents.push_back(static_cast<int32_t>(p * n + static_cast<size_t>(c.beam)));
        next_tokens.push_back(c.token);
      }
      // f. _update_finished_beams
      const float denom = static_cast<float>(std::pow(static_cast<double>(cur_len + 1 - padded), o.length_penalty));
      bool all_finished = true;
      for (const Beam &f : finished[b]) all_finished = all_finished && f.finished;
      std::vector<float> merged;
      for (const Beam &f : finished[b]) merged.push_back(f.score);
      for (size_t k = 0; k < cands.size(); ++k) {
        float s = cands[k].score / denom;
        if (all_finished && early_true) s += -kBig;
        if (!unsatisfied[b]) s += -kBig;
        if (!(cands[k].hits_stop && k < n)) s += -kBig;
        merged.push_back(s);
      }
      std::vector<Beam> next_finished(n);
      const std::vector<size_t> best = top_indices(merged, n);
      for (size_t j = 0; j < n; ++j) {
        if (best[j] < n) {
          next_finished[j] = finished[b][best[j]];
        } else {
          const size_t k = best[j] - n;
          next_finished[j] = extended(cands[k]);
          next_finished[j].constraint = extended_state(cands[k]);
          next_finished[j].score = merged[best[j]];
          next_finished[j].finished = cands[k].hits_stop && k < n;
        }
      }
      running[b] = std::move(next_running);
      finished[b] = std::move(next_finished);
    }

    // g. early-stop heuristic and the global stopping condition.
    const int64_t new_len = cur_len + 1;
    const int64_t best_len =
        (o.early_stopping == EarlyStopping::kNever && o.length_penalty > 0.0) ? max_length - padded : new_len - padded;
    const float best_denom = static_cast<float>(std::pow(static_cast<double>(best_len), o.length_penalty));
    bool any_unsatisfied = false, every_finished = true;
    for (size_t b = 0; b < batch; ++b) {
      const float best_running = running[b][0].score / best_denom;
      float worst = finished[b][0].score;
      for (const Beam &f : finished[b]) worst = std::min(worst, f.score);
      bool improvable = false;
      for (const Beam &f : finished[b]) {
        improvable = improvable || best_running > (f.finished ? worst : -kBig);
        every_finished = every_finished && f.finished;
      }
      unsatisfied[b] = unsatisfied[b] && improvable;
      any_unsatisfied = any_unsatisfied || unsatisfied[b];
    }
    const bool go_on = any_unsatisfied && !(every_finished && early_true) && !all_hit;
    if (!go_on) break;
    // Settled items leave: the early-stop heuristic is satisfied (nothing
    // can enter their finished set, see f.), or with early_stopping=True
    // their n finished slots are full.
    std::vector<size_t> next_live;
    std::vector<int32_t> kept_parents, kept_tokens;
    for (size_t p = 0; p < live.size(); ++p) {
      const size_t b = live[p];
      bool settled = !unsatisfied[b];
      if (early_true) {
        bool full = true;
        for (const Beam &f : finished[b]) full = full && f.finished;
        settled = settled || full;
      }
      if (settled) continue;
      next_live.push_back(b);
      kept_parents.insert(kept_parents.end(), parents.begin() + static_cast<std::ptrdiff_t>(p * n),
                          parents.begin() + static_cast<std::ptrdiff_t>((p + 1) * n));
      kept_tokens.insert(kept_tokens.end(), next_tokens.begin() + static_cast<std::ptrdiff_t>(p * n),
                         next_tokens.begin() + static_cast<std::ptrdiff_t>((p + 1) * n));
    }
    if (next_live.empty()) break;
    const bool dropped = next_live.size() != live.size();
    live = std::move(next_live);
    parents = std::move(kept_parents);
    next_tokens = std::move(kept_tokens);

    bool identity = !dropped;  // dropping rows at the end leaves the rest in place: still a reorder
    for (size_t r = 0; r < parents.size(); ++r) identity = identity && parents[r] == static_cast<int32_t>(r);
    if (!identity) model.reorder(parents);
    check_run_control(o, step + 1, model);
    co_await model.advance_task(next_tokens, logits, &stats);
    const size_t rows = live.size() * n;
    if (logits.size() != rows * static_cast<size_t>(vocab))
      fail(PARLEY_ERROR_INTERNAL, "decoding: the model returned logits of the wrong size");
    if (stats.valid && (stats.block_max.size() != rows * blocks || stats.block_sum.size() != rows * blocks))
      fail(PARLEY_ERROR_INTERNAL, "decoding: the model returned logit statistics of the wrong size");
  }

  std::vector<std::vector<Hypothesis>> out(batch);
  for (size_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < o.num_return_sequences; ++j) {
      Beam &f = finished[b][static_cast<size_t>(j)];
      Hypothesis h;
      h.tokens = std::move(f.tokens);
      h.score = f.score;
      h.logprobs = std::move(f.logprobs);
      if (n_alt && !h.tokens.empty()) {
        h.alternatives = static_cast<int64_t>(n_alt);
        h.alternative_ids = std::move(f.alternative_ids);
        h.alternative_logprobs = std::move(f.alternative_logprobs);
      }
      if (f.constraint)
        h.constraint =
            static_cast<int8_t>(f.constraint->complete() ? ConstraintStatus::kComplete : ConstraintStatus::kIncomplete);
      else if (o.constraint)  // a slot never filled (fewer finished hypotheses than asked)
        h.constraint = static_cast<int8_t>(ConstraintStatus::kIncomplete);
      out[b].push_back(std::move(h));
    }
  co_return out;
}

}  // namespace parley::decoding
