/* Scores and alternatives from C99: per-token log-probabilities and top-k
 * alternatives of generation and translation hypotheses (greedy, sampling,
 * beam search; blocking and asynchronous), parley_score_tokens /
 * parley_score_text, and every misuse of the new functions. Values against
 * transformers are checked by test_scores_parity.cpp; here the invariants:
 * log-probabilities sum to the score (beam search: score x length ^
 * length_penalty), alternatives are sorted and hold the greedy choice first,
 * asking for scores changes no token or score, scoring a hypothesis gives
 * back its log-probabilities. Run through ctest (PARLEY_PARITY_DIR,
 * PARLEY_DEMO_MODELS, PARLEY_PLUGIN_BUILD_DIR). */
#include <math.h>
#include <parley/parley.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c_checks.h"

#define CHECK_OK(call) CHECK_STATUS(call, PARLEY_OK)
#define ERROR_NAMES(text) CHECK(strstr(parley_last_error(), text) != NULL)

static parley_model *load(parley_runtime *rt, const char *env, const char *file) {
  char path[4096];
  parley_model *m = NULL;
  const char *dir = getenv(env);
  snprintf(path, sizeof path, "%s/%s", dir ? dir : ".", file);
  if (parley_model_load_file(rt, path, NULL, &m) != PARLEY_OK) {
    fprintf(stderr, "load %s: %s\n", path, parley_last_error());
    exit(1);
  }
  return m;
}

static double sum_of(const float *v, size_t n) {
  double s = 0;
  size_t i;
  for (i = 0; i < n; ++i) s += v[i];
  return s;
}

/* Alternatives of one hypothesis: k per step, sorted, the chosen token's
 * log-probability among them or below the last; for greedy, first. */
static void check_alternatives(const parley_generation_result *r, size_t b, size_t h, size_t want_k, int greedy) {
  const int32_t *toks = NULL, *ids = NULL;
  const float *lp = NULL, *alt = NULL;
  size_t n = 0, n_lp = 0, steps = 0, k = 0, t, j;
  float score = 0;
  CHECK_OK(parley_result_hypothesis(r, b, h, &toks, &n, &score));
  CHECK_OK(parley_result_hypothesis_logprobs(r, b, h, &lp, &n_lp));
  CHECK_OK(parley_result_hypothesis_alternatives(r, b, h, &ids, &alt, &steps, &k));
  CHECK(steps == n_lp && k == want_k);
  for (t = 0; t < steps && k > 0; ++t) {
    const size_t first = n - n_lp; /* a target prefix has no values */
    int found = 0;
    for (j = 0; j + 1 < k; ++j) CHECK(alt[t * k + j] >= alt[t * k + j + 1]);
    for (j = 0; j < k; ++j)
      if (ids[t * k + j] == toks[first + t]) {
        found = 1;
        CHECK(alt[t * k + j] == lp[t]);
      }
    CHECK(found || lp[t] <= alt[t * k + k - 1]);
    if (greedy) CHECK(ids[t * k] == toks[first + t] && alt[t * k] == lp[t]);
  }
}

/* Per-token log-probabilities and alternatives of parley_generate (llama parity model). */
static void test_generate(parley_model *llama) {
  static const int32_t p0[] = {0, 11, 81, 92, 49}, p1[] = {0, 43, 23};
  const int32_t *prompts[2] = {p0, p1};
  const size_t lengths[2] = {5, 3};
  parley_generation_options o;
  parley_generation_result *plain = NULL, *r = NULL;
  const int32_t *toks = NULL, *toks2 = NULL, *ids = NULL;
  const float *lp = NULL, *alt = NULL;
  size_t n = 0, n2 = 0, n_lp = 0, steps = 0, k = 0, b, h, j;
  float score = 0, score2 = 0;

  CHECK_OK(parley_generation_options_init(llama, &o));
  CHECK(o.return_logprobs == 0 && o.num_alternatives == 0);
  o.max_new_tokens = 8;
  o.num_beams = 1;
  CHECK_OK(parley_generate(llama, prompts, lengths, 2, &o, &plain));
  /* Not requested: NOT_FOUND, naming the option. */
  CHECK_STATUS(parley_result_hypothesis_logprobs(plain, 0, 0, &lp, &n_lp), PARLEY_ERROR_NOT_FOUND);
  ERROR_NAMES("return_logprobs");
  CHECK_STATUS(parley_result_hypothesis_alternatives(plain, 0, 0, &ids, &alt, &steps, &k), PARLEY_ERROR_NOT_FOUND);
  ERROR_NAMES("num_alternatives");

  /* Greedy: the float terms sum (in order) to the score exactly; nothing else changes. */
  o.return_logprobs = 1;
  o.num_alternatives = 4;
  CHECK_OK(parley_generate(llama, prompts, lengths, 2, &o, &r));
  for (b = 0; b < 2; ++b) {
    float acc = 0;
    CHECK_OK(parley_result_hypothesis(r, b, 0, &toks, &n, &score));
    CHECK_OK(parley_result_hypothesis(plain, b, 0, &toks2, &n2, &score2));
    CHECK(n == n2 && memcmp(toks, toks2, n * sizeof *toks) == 0 && score == score2);
    CHECK_OK(parley_result_hypothesis_logprobs(r, b, 0, &lp, &n_lp));
    CHECK(n_lp == n);
    for (j = 0; j < n_lp; ++j) {
      CHECK(lp[j] <= 0.0f);
      acc += lp[j];
    }
    CHECK(acc == score);
    check_alternatives(r, b, 0, 4, 1);
  }
  /* Misuse of the accessors. */
  CHECK_STATUS(parley_result_hypothesis_logprobs(NULL, 0, 0, &lp, &n_lp), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_result_hypothesis_logprobs(r, 0, 0, NULL, &n_lp), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_result_hypothesis_logprobs(r, 0, 0, &lp, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_result_hypothesis_logprobs(r, 2, 0, &lp, &n_lp), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_result_hypothesis_logprobs(r, 0, 1, &lp, &n_lp), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_result_hypothesis_alternatives(NULL, 0, 0, &ids, &alt, &steps, &k),
               PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_result_hypothesis_alternatives(r, 0, 0, NULL, &alt, &steps, &k), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_result_hypothesis_alternatives(r, 0, 0, &ids, NULL, &steps, &k), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_result_hypothesis_alternatives(r, 0, 0, &ids, &alt, NULL, &k), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_result_hypothesis_alternatives(r, 0, 0, &ids, &alt, &steps, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_result_hypothesis_alternatives(r, 2, 0, &ids, &alt, &steps, &k), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_result_hypothesis_alternatives(r, 0, 1, &ids, &alt, &steps, &k), PARLEY_ERROR_NOT_FOUND);
  parley_result_free(r);
  r = NULL;

  /* Options: the limit, bad values, and the struct of before the fields. */
  o.num_alternatives = PARLEY_MAX_ALTERNATIVES + 1;
  CHECK_STATUS(parley_generate(llama, prompts, lengths, 2, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  ERROR_NAMES("PARLEY_MAX_ALTERNATIVES (32)");
  CHECK(r == NULL);
  o.num_alternatives = (size_t)-1;
  CHECK_STATUS(parley_generate(llama, prompts, lengths, 2, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  o.num_alternatives = PARLEY_MAX_ALTERNATIVES;
  CHECK_OK(parley_generate(llama, prompts, lengths, 2, &o, &r));
  check_alternatives(r, 0, 0, PARLEY_MAX_ALTERNATIVES, 1);
  parley_result_free(r);
  r = NULL;
  o.num_alternatives = 0;
  o.return_logprobs = 2;
  CHECK_STATUS(parley_generate(llama, prompts, lengths, 2, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  ERROR_NAMES("return_logprobs");
  o.return_logprobs = 1;
  o.struct_size = offsetof(parley_generation_options, json_schema) + sizeof(const char *);
  CHECK_OK(parley_generate(llama, prompts, lengths, 2, &o, &r));
  CHECK_STATUS(parley_result_hypothesis_logprobs(r, 0, 0, &lp, &n_lp), PARLEY_ERROR_NOT_FOUND);
  parley_result_free(r);
  r = NULL;
  o.struct_size = sizeof o;

  /* Beam search: the terms sum to score x length ^ length_penalty. */
  {
    static const float penalties[2] = {1.0f, 2.0f};
    size_t pi;
    for (pi = 0; pi < 2; ++pi) {
      o.num_beams = 3;
      o.num_return_sequences = 3;
      o.length_penalty = penalties[pi];
      o.num_alternatives = 5;
      CHECK_OK(parley_generate(llama, prompts, lengths, 2, &o, &r));
      for (b = 0; b < 2; ++b)
        for (h = 0; h < 3; ++h) {
          double s, want;
          CHECK_OK(parley_result_hypothesis(r, b, h, &toks, &n, &score));
          CHECK_OK(parley_result_hypothesis_logprobs(r, b, h, &lp, &n_lp));
          CHECK(n_lp == n && n > 0);
          s = sum_of(lp, n_lp);
          want = (double)score * pow((double)n, (double)penalties[pi]);
          CHECK(fabs(s - want) <= 1e-5 * (double)n * (1.0 + fabs(s)));
          check_alternatives(r, b, h, 5, 0);
        }
      parley_result_free(r);
      r = NULL;
    }
    /* Scores requested or not, beam search picks the same hypotheses. */
    parley_result_free(plain);
    plain = NULL;
    o.return_logprobs = 0;
    o.num_alternatives = 0;
    CHECK_OK(parley_generate(llama, prompts, lengths, 2, &o, &plain));
    o.return_logprobs = 1;
    CHECK_OK(parley_generate(llama, prompts, lengths, 2, &o, &r));
    for (b = 0; b < 2; ++b)
      for (h = 0; h < 3; ++h) {
        CHECK_OK(parley_result_hypothesis(r, b, h, &toks, &n, &score));
        CHECK_OK(parley_result_hypothesis(plain, b, h, &toks2, &n2, &score2));
        CHECK(n == n2 && memcmp(toks, toks2, n * sizeof *toks) == 0 && score == score2);
      }
    parley_result_free(r);
    parley_result_free(plain);
    r = plain = NULL;
  }

  /* Sampling with top_k 3 and 6 alternatives: the ones top-k removed are -inf. */
  o.num_beams = 1;
  o.num_return_sequences = 2;
  o.do_sample = 1;
  o.seed = 7;
  o.temperature = 0.7f;
  o.top_k = 3;
  o.top_p = 1.0f;
  o.num_alternatives = 6;
  CHECK_OK(parley_generate(llama, prompts, lengths, 2, &o, &r));
  for (b = 0; b < 2; ++b)
    for (h = 0; h < 2; ++h) {
      float acc = 0;
      CHECK_OK(parley_result_hypothesis(r, b, h, &toks, &n, &score));
      CHECK_OK(parley_result_hypothesis_logprobs(r, b, h, &lp, &n_lp));
      for (j = 0; j < n_lp; ++j) acc += lp[j];
      CHECK(n_lp == n && acc == score);
      check_alternatives(r, b, h, 6, 0);
      CHECK_OK(parley_result_hypothesis_alternatives(r, b, h, &ids, &alt, &steps, &k));
      for (j = 0; j < steps; ++j) {
        CHECK(isfinite(alt[j * k + 2]) && alt[j * k + 3] == -INFINITY && alt[j * k + 5] == -INFINITY);
        CHECK(toks[j] == ids[j * k] || toks[j] == ids[j * k + 1] || toks[j] == ids[j * k + 2]);
      }
    }
  parley_result_free(r);
  r = NULL;
  /* Beam sampling runs with scores too. */
  o.num_beams = 2;
  o.num_return_sequences = 2;
  o.top_k = 10;
  CHECK_OK(parley_generate(llama, prompts, lengths, 2, &o, &r));
  check_alternatives(r, 1, 1, 6, 0);
  parley_result_free(r);
}

/* parley_translate_tokens with a target prefix: values for the generated tokens only. */
static void test_translate_tokens(parley_model *marian) {
  static const int32_t src[] = {34, 39, 10, 57, 0}, prefix[] = {49, 84};
  const int32_t *sources[1] = {src}, *prefixes[1] = {prefix};
  const size_t src_len[1] = {5}, prefix_len[1] = {2};
  parley_generation_options o;
  parley_generation_result *r = NULL;
  const int32_t *toks = NULL, *ids = NULL;
  const float *lp = NULL, *alt = NULL;
  size_t n = 0, n_lp = 0, steps = 0, k = 0, h;
  float score = 0;

  CHECK_OK(parley_generation_options_init(marian, &o));
  o.max_new_tokens = 6;
  o.num_beams = 2;
  o.num_return_sequences = 2;
  o.length_penalty = 1.0f;
  o.return_logprobs = 1;
  o.num_alternatives = 2;
  CHECK_OK(parley_translate_tokens(marian, sources, src_len, 1, prefixes, prefix_len, &o, &r));
  for (h = 0; h < 2; ++h) {
    CHECK_OK(parley_result_hypothesis(r, 0, h, &toks, &n, &score));
    CHECK(n > 2 && toks[0] == 49 && toks[1] == 84);
    CHECK_OK(parley_result_hypothesis_logprobs(r, 0, h, &lp, &n_lp));
    CHECK(n_lp == n - 2);
    CHECK(fabs(sum_of(lp, n_lp) - (double)score * (double)n_lp) <= 1e-5 * (double)n_lp * (1 + fabs(sum_of(lp, n_lp))));
    CHECK_OK(parley_result_hypothesis_alternatives(r, 0, h, &ids, &alt, &steps, &k));
    CHECK(steps == n_lp && k == 2);
    check_alternatives(r, 0, h, 2, 0);
  }
  parley_result_free(r);
}

/* parley_score_tokens: consistency with generation, and every misuse. */
static void test_score_tokens(parley_model *llama, parley_model *marian) {
  static const int32_t prompt[] = {0, 11, 81, 92, 49};
  const int32_t *prompts[1] = {prompt};
  const size_t plen[1] = {5};
  parley_generation_options o;
  parley_generation_result *g = NULL;
  parley_score_result *s = NULL;
  parley_score_options so;
  const int32_t *toks = NULL, *gen = NULL;
  const float *lp = NULL, *glp = NULL;
  size_t n = 0, gn = 0, count = 0, j;
  double sum = 0;
  float score = 0;

  /* The greedy hypothesis of a model without logits processors, scored:
   * the same raw log-probabilities (another batching of the same float32
   * forward pass: within 1e-4). */
  CHECK_OK(parley_generation_options_init(llama, &o));
  o.max_new_tokens = 8;
  o.num_beams = 1;
  o.return_logprobs = 1;
  CHECK_OK(parley_generate(llama, prompts, plen, 1, &o, &g));
  CHECK_OK(parley_result_hypothesis(g, 0, 0, &gen, &gn, &score));
  CHECK_OK(parley_result_hypothesis_logprobs(g, 0, 0, &glp, &n));
  {
    const int32_t *targets[1] = {gen};
    const size_t tlen[1] = {gn};
    CHECK_OK(parley_score_tokens(llama, prompts, plen, targets, tlen, 1, NULL, &s));
  }
  CHECK_OK(parley_score_result_count(s, &count));
  CHECK(count == 1);
  CHECK_OK(parley_score_result_item(s, 0, &toks, &lp, &n, &sum));
  CHECK(n == gn && memcmp(toks, gen, n * sizeof *toks) == 0);
  for (j = 0; j < n; ++j) CHECK(fabs(lp[j] - glp[j]) <= 1e-4);
  CHECK(fabs(sum - (double)score) <= 1e-4 * (double)n);
  CHECK_OK(parley_score_result_item(s, 0, &toks, &lp, &n, NULL)); /* out_sum may be NULL */
  /* Result misuse. */
  CHECK_STATUS(parley_score_result_item(s, 1, &toks, &lp, &n, &sum), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_score_result_item(NULL, 0, &toks, &lp, &n, &sum), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_score_result_item(s, 0, NULL, &lp, &n, &sum), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_score_result_item(s, 0, &toks, NULL, &n, &sum), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_score_result_item(s, 0, &toks, &lp, NULL, &sum), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_score_result_count(NULL, &count), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_score_result_count(s, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  parley_score_result_free(s);
  parley_score_result_free(NULL);
  parley_result_free(g);
  s = NULL;

  /* Call misuse: each a clear INVALID_ARGUMENT, no result. */
  {
    static const int32_t t0[] = {5, 6, 7}, bad_id[] = {5, 128}, negative[] = {5, -1}, one[] = {5};
    static int32_t long_seq[80];
    const int32_t *targets[1] = {t0}, *null_entry[1] = {NULL}, *bad[1] = {bad_id}, *neg[1] = {negative},
                  *single[1] = {one}, *longs[1] = {long_seq};
    const size_t tlen[1] = {3}, zero[1] = {0}, two[1] = {2}, onelen[1] = {1}, longlen[1] = {80};
    CHECK_STATUS(parley_score_tokens(NULL, NULL, NULL, targets, tlen, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_score_tokens(llama, NULL, NULL, targets, tlen, 1, NULL, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_score_tokens(llama, NULL, NULL, targets, tlen, 0, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("empty");
    CHECK_STATUS(parley_score_tokens(llama, NULL, NULL, targets, tlen, 5000, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_score_tokens(llama, NULL, NULL, NULL, tlen, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("targets");
    CHECK_STATUS(parley_score_tokens(llama, NULL, NULL, targets, NULL, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("target_lengths");
    CHECK_STATUS(parley_score_tokens(llama, NULL, NULL, null_entry, tlen, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("targets[0] is NULL");
    CHECK_STATUS(parley_score_tokens(llama, NULL, NULL, targets, zero, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("targets[0] is empty");
    CHECK_STATUS(parley_score_tokens(llama, NULL, NULL, bad, two, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("vocabulary");
    CHECK_STATUS(parley_score_tokens(llama, NULL, NULL, neg, two, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("vocabulary");
    CHECK_STATUS(parley_score_tokens(llama, NULL, NULL, single, onelen, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("at least 2");
    CHECK_STATUS(parley_score_tokens(llama, prompts, NULL, targets, tlen, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("source_lengths");
    for (j = 0; j < 80; ++j) long_seq[j] = (int32_t)(4 + j % 100);
    CHECK_STATUS(parley_score_tokens(llama, NULL, NULL, longs, longlen, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("positions");
    /* An encoder-decoder model needs sources. */
    CHECK_STATUS(parley_score_tokens(marian, NULL, NULL, targets, tlen, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("sources is NULL");
    {
      static const int32_t src_bad[] = {5, 500};
      const int32_t *sb[1] = {src_bad};
      CHECK_STATUS(parley_score_tokens(marian, sb, two, targets, tlen, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
      ERROR_NAMES("vocabulary");
    }
    /* Options: wrong struct_size. */
    parley_score_options_init(&so);
    CHECK(so.source_language == NULL && so.target_language == NULL);
    so.struct_size = 3;
    CHECK_STATUS(parley_score_tokens(llama, NULL, NULL, targets, tlen, 1, &so, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_score_options_defaults(&so), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_score_options_defaults(NULL), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(s == NULL);
    /* A sources NULL sequence scores from its second token. */
    CHECK_OK(parley_score_tokens(llama, NULL, NULL, targets, tlen, 1, NULL, &s));
    CHECK_OK(parley_score_result_item(s, 0, &toks, &lp, &n, &sum));
    CHECK(n == 2 && toks[0] == 6 && toks[1] == 7 && lp[0] < 0 && lp[1] < 0);
    parley_score_result_free(s);
  }
}

/* A target longer than one scoring pass (engine/scoring.cpp: at most 128
 * positions and 2^24 logits per step call): the positions after the first
 * pass come from the KV cache the first one left. Checked against beam search, whose processed
 * log-probabilities are the raw log_softmax for every token no processor
 * touches: after a target prefix P, the alternatives of the first generated
 * step are raw log-probabilities of tokens at position len(P); scoring
 * P + [token] must give the same last value. */
static void test_score_long_target(parley_model *mt) {
  static int32_t prefix[512];
  static const int32_t src[] = {100, 200, 300, 400, 0};
  const int32_t *sources[1] = {src}, *prefixes[1] = {prefix};
  size_t src_len[1] = {5}, prefix_len[1], i;
  parley_model_info info;
  parley_generation_options o;
  parley_generation_result *g = NULL;
  parley_score_result *s = NULL;
  const int32_t *alt_ids = NULL, *toks = NULL;
  const float *alt = NULL, *lp = NULL;
  size_t steps = 0, k = 0, n = 0;

  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK_OK(parley_model_get_info(mt, &info));
  prefix_len[0] = ((size_t)1 << 24) / info.vocab_size; /* past the first pass */
  if (prefix_len[0] > 128) prefix_len[0] = 128;
  prefix_len[0] += 12;
  CHECK(prefix_len[0] + 3 < 256 && prefix_len[0] > 16);
  if (prefix_len[0] + 3 >= 256) return;
  for (i = 0; i < prefix_len[0]; ++i) prefix[i] = (int32_t)(50 + (i * 37) % 2000);
  CHECK_OK(parley_generation_options_init(mt, &o));
  o.num_beams = 2;
  o.num_return_sequences = 1;
  o.max_new_tokens = 2;
  o.num_alternatives = 4;
  CHECK_OK(parley_translate_tokens(mt, sources, src_len, 1, prefixes, prefix_len, &o, &g));
  CHECK_OK(parley_result_hypothesis_alternatives(g, 0, 0, &alt_ids, &alt, &steps, &k));
  CHECK(steps >= 1 && k == 4);
  for (i = 0; i < k && steps >= 1; ++i) {
    const int32_t *targets[1] = {prefix};
    size_t tlen[1];
    prefix[prefix_len[0]] = alt_ids[i];
    tlen[0] = prefix_len[0] + 1;
    CHECK_OK(parley_score_tokens(mt, sources, src_len, targets, tlen, 1, NULL, &s));
    CHECK_OK(parley_score_result_item(s, 0, &toks, &lp, &n, NULL));
    CHECK(n == tlen[0] && toks[n - 1] == alt_ids[i]);
    /* Another batching of the same float32 forward pass: within 1e-4 (the parity tolerance). */
    CHECK(n == tlen[0] && fabs(lp[n - 1] - alt[i]) <= 1e-4);
    parley_score_result_free(s);
    s = NULL;
  }
  parley_result_free(g);
}

/* Text: parley_translate with scores, parley_score_text, the async request. */
static void test_text(parley_model *mt, parley_model *llm) {
  const char *texts[2] = {"Where is my order?", "The bike arrived broken."};
  parley_translation_options to;
  parley_generation_options go;
  parley_translation_result *tr = NULL;
  parley_score_result *s = NULL;
  const int32_t *ids = NULL, *toks = NULL;
  const float *lp = NULL, *alt = NULL;
  const char *out_text = NULL;
  size_t n = 0, n_lp = 0, steps = 0, k = 0, i, h, nh = 0;
  float score = 0;
  double sum = 0;

  parley_translation_options_init(&to);
  CHECK_OK(parley_generation_options_init(mt, &go));
  go.num_beams = 3;
  go.num_return_sequences = 2;
  go.length_penalty = 1.0f;
  go.return_logprobs = 1;
  go.num_alternatives = 3;
  to.generation = &go;
  CHECK_OK(parley_translate(mt, texts, 2, &to, &tr));
  for (i = 0; i < 2; ++i) {
    CHECK_OK(parley_translation_result_hypothesis_count(tr, i, &nh));
    CHECK(nh == 2);
    for (h = 0; h < nh; ++h) {
      CHECK_OK(parley_translation_result_text(tr, i, h, &out_text, &score));
      CHECK_OK(parley_translation_result_target_tokens(tr, i, h, &ids, &n));
      CHECK_OK(parley_translation_result_hypothesis_logprobs(tr, i, h, &lp, &n_lp));
      CHECK(n_lp == n && n > 0);
      CHECK(fabs(sum_of(lp, n_lp) - (double)score * (double)n) <= 1e-5 * (double)n * (1 + fabs(sum_of(lp, n_lp))));
      CHECK_OK(parley_translation_result_hypothesis_alternatives(tr, i, h, &toks, &alt, &steps, &k));
      CHECK(steps == n && k == 3);
    }
  }
  /* The best hypothesis of text 0, scored: source and target tokens as the
   * translation made them. Raw log-probabilities: with the model's
   * processors (pad suppressed) the beam values may differ slightly, but
   * the raw ones are never below them for an allowed token (a mask only
   * removes probability mass). */
  {
    const int32_t *src = NULL, *tgt = NULL;
    size_t ns = 0, nt = 0, j;
    const int32_t *sources[1], *targets[1];
    size_t slen[1], tlen[1];
    CHECK_OK(parley_translation_result_source_tokens(tr, 0, &src, &ns));
    CHECK_OK(parley_translation_result_target_tokens(tr, 0, 0, &tgt, &nt));
    CHECK_OK(parley_translation_result_hypothesis_logprobs(tr, 0, 0, &lp, &n_lp));
    sources[0] = src;
    targets[0] = tgt;
    slen[0] = ns;
    tlen[0] = nt;
    CHECK_OK(parley_score_tokens(mt, sources, slen, targets, tlen, 1, NULL, &s));
    CHECK_OK(parley_score_result_item(s, 0, &toks, &alt, &n, &sum));
    CHECK(n == nt);
    for (j = 0; j < n; ++j) CHECK(alt[j] <= 0.0f && lp[j] >= alt[j] - 1e-4f);
    parley_score_result_free(s);
    s = NULL;
  }
  /* Accessor misuse. */
  CHECK_STATUS(parley_translation_result_hypothesis_logprobs(NULL, 0, 0, &lp, &n_lp), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_translation_result_hypothesis_logprobs(tr, 0, 0, NULL, &n_lp), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_translation_result_hypothesis_logprobs(tr, 0, 0, &lp, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_translation_result_hypothesis_logprobs(tr, 2, 0, &lp, &n_lp), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_translation_result_hypothesis_logprobs(tr, 0, 2, &lp, &n_lp), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_translation_result_hypothesis_alternatives(NULL, 0, 0, &toks, &alt, &steps, &k),
               PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_translation_result_hypothesis_alternatives(tr, 0, 0, NULL, &alt, &steps, &k),
               PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_translation_result_hypothesis_alternatives(tr, 0, 0, &toks, NULL, &steps, &k),
               PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_translation_result_hypothesis_alternatives(tr, 0, 0, &toks, &alt, NULL, &k),
               PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_translation_result_hypothesis_alternatives(tr, 0, 0, &toks, &alt, &steps, NULL),
               PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_translation_result_hypothesis_alternatives(tr, 2, 0, &toks, &alt, &steps, &k),
               PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_translation_result_hypothesis_alternatives(tr, 0, 5, &toks, &alt, &steps, &k),
               PARLEY_ERROR_NOT_FOUND);
  parley_translation_result_free(tr);
  tr = NULL;
  /* Not requested: NOT_FOUND naming the option; over the limit: refused. */
  go.return_logprobs = 0;
  go.num_alternatives = 0;
  CHECK_OK(parley_translate(mt, texts, 1, &to, &tr));
  CHECK_STATUS(parley_translation_result_hypothesis_logprobs(tr, 0, 0, &lp, &n_lp), PARLEY_ERROR_NOT_FOUND);
  ERROR_NAMES("return_logprobs");
  CHECK_STATUS(parley_translation_result_hypothesis_alternatives(tr, 0, 0, &toks, &alt, &steps, &k),
               PARLEY_ERROR_NOT_FOUND);
  ERROR_NAMES("num_alternatives");
  parley_translation_result_free(tr);
  tr = NULL;
  go.num_alternatives = 33;
  CHECK_STATUS(parley_translate(mt, texts, 1, &to, &tr), PARLEY_ERROR_INVALID_ARGUMENT);
  ERROR_NAMES("32");
  go.num_alternatives = 0;

  /* The async translation honours request_options.return_logprobs now. */
  {
    parley_request_options ro;
    parley_request *req = NULL;
    parley_request_options_init(&ro);
    ro.return_logprobs = 1;
    CHECK_OK(parley_translate_submit(mt, texts, NULL, 1, &to, &ro, &req));
    CHECK_OK(parley_request_wait(req, -1));
    CHECK_OK(parley_request_take_translation_result(req, &tr));
    CHECK_OK(parley_translation_result_target_tokens(tr, 0, 0, &ids, &n));
    CHECK_OK(parley_translation_result_hypothesis_logprobs(tr, 0, 0, &lp, &n_lp));
    CHECK(n_lp == n);
    parley_translation_result_free(tr);
    tr = NULL;
    parley_request_free(req);
  }

  /* parley_score_text, encoder-decoder: EOS scored; the ids detokenize to the target. */
  {
    const char *targets[2] = {"Wo ist meine Bestellung?", "Das Fahrrad kam kaputt an."};
    const char *bad_utf8[1] = {"\xff\xfe"}, *empty[1] = {""}, *null_entry[1] = {NULL};
    char *back = NULL;
    CHECK_OK(parley_score_text(mt, texts, targets, 2, NULL, &s));
    for (i = 0; i < 2; ++i) {
      CHECK_OK(parley_score_result_item(s, i, &toks, &lp, &n, &sum));
      CHECK(n >= 2 && sum < 0 && isfinite(sum));
      CHECK(fabs(sum_of(lp, n) - sum) <= 1e-5 * (double)n * (1 + fabs(sum)));
      CHECK_OK(parley_detokenize(mt, toks, n, 1, &back));
      CHECK(back && strcmp(back, targets[i]) == 0);
      parley_string_free(back);
      back = NULL;
    }
    parley_score_result_free(s);
    s = NULL;
    CHECK_STATUS(parley_score_text(mt, NULL, targets, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("sources is NULL");
    CHECK_STATUS(parley_score_text(mt, texts, NULL, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_score_text(mt, texts, targets, 0, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_score_text(mt, texts, targets, 1, NULL, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_score_text(NULL, texts, targets, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_score_text(mt, texts, bad_utf8, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("text #0");
    CHECK_STATUS(parley_score_text(mt, bad_utf8, targets, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("text #0");
    CHECK_STATUS(parley_score_text(mt, texts, empty, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("targets[0] is empty");
    CHECK_STATUS(parley_score_text(mt, null_entry, targets, 1, NULL, &s), PARLEY_ERROR_INVALID_ARGUMENT);
    ERROR_NAMES("sources[0] is NULL");
    CHECK(s == NULL);
  }

  /* parley_score_text, decoder-only: a whole sequence, and prompt + continuation. */
  {
    const char *whole[1] = {"Where is my order?"}, *prompt[1] = {"Where is my"}, *cont[1] = {" order?"};
    size_t n2 = 0;
    CHECK_OK(parley_score_text(llm, NULL, whole, 1, NULL, &s));
    CHECK_OK(parley_score_result_item(s, 0, &toks, &lp, &n, &sum));
    CHECK(n >= 2 && sum < 0);
    parley_score_result_free(s);
    s = NULL;
    CHECK_OK(parley_score_text(llm, prompt, cont, 1, NULL, &s));
    CHECK_OK(parley_score_result_item(s, 0, &toks, &lp, &n2, &sum));
    CHECK(n2 >= 1 && n2 < n && sum < 0);
    parley_score_result_free(s);
    s = NULL;
  }
}

int main(void) {
  parley_runtime *rt = make_runtime();
  parley_model *llama = load(rt, "PARLEY_PARITY_DIR", "models/llama.parley");
  parley_model *marian = load(rt, "PARLEY_PARITY_DIR", "models/marian.parley");
  parley_model *mt = load(rt, "PARLEY_DEMO_MODELS", "opus-mt-en-de.parley");
  parley_model *llm = load(rt, "PARLEY_DEMO_MODELS", "support-llama.parley");
  test_generate(llama);
  test_translate_tokens(marian);
  test_score_tokens(llama, marian);
  test_text(mt, llm);
  test_score_long_target(mt);
  parley_model_free(llm);
  parley_model_free(mt);
  parley_model_free(marian);
  parley_model_free(llama);
  parley_runtime_free(rt);
  printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
