/* The token-level generation API from C: results against the transformers
 * goldens of tests/parity (values copied from goldens/llama.json and
 * goldens/marian.json, greedy sections), streaming and stopping, and misuse.
 * Run through ctest (PARLEY_PARITY_DIR, PARLEY_PLUGIN_BUILD_DIR). */
#include <parley/parley.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c_checks.h"

static parley_model *load(parley_runtime *rt, const char *name) {
  char path[4096];
  parley_model *m = NULL;
  const char *dir = getenv("PARLEY_PARITY_DIR");
  snprintf(path, sizeof path, "%s/models/%s.parley", dir ? dir : ".", name);
  if (parley_model_load_file(rt, path, NULL, &m) != PARLEY_OK) {
    fprintf(stderr, "load %s: %s\n", path, parley_last_error());
    exit(1);
  }
  return m;
}

static int same(const int32_t *a, size_t n, const int32_t *b, size_t m) {
  return n == m && (n == 0 || memcmp(a, b, n * sizeof *a) == 0);
}

struct stream {
  int32_t tokens[3][64];
  size_t counts[3];
  size_t stop_after; /* 0 = never stop */
};

static int32_t on_token(void *user, size_t batch, size_t sequence, int32_t token) {
  struct stream *s = (struct stream *)user;
  if (batch >= 3 || sequence != 0 || s->counts[batch] >= 64) return 1;
  s->tokens[batch][s->counts[batch]++] = token;
  return s->stop_after && s->counts[batch] >= s->stop_after;
}

static void test_llama_greedy(parley_runtime *rt) {
  /* Real (unpadded) prompts of the golden's left-padded batch. */
  static const int32_t p0[] = {0, 11, 81, 92, 49}, p1[] = {0, 43, 23}, p2[] = {0, 74, 41, 84};
  static const int32_t want[3][8] = {
      {93, 25, 93, 25, 120, 113, 125, 92}, {114, 29, 105, 37, 59, 91, 126, 94}, {79, 19, 73, 23, 97, 23, 97, 23}};
  const int32_t *prompts[3] = {p0, p1, p2};
  size_t lengths[3] = {5, 3, 4}, n = 0, i;
  const int32_t *ids = NULL;
  float score = 0;
  struct stream s;
  parley_generation_result *r = NULL;
  parley_generation_options o;
  parley_model *m = load(rt, "llama");

  CHECK_STATUS(parley_model_prepare(m), PARLEY_OK);
  CHECK_STATUS(parley_generation_options_init(m, &o), PARLEY_OK);
  o.max_new_tokens = 8;
  o.num_beams = 1;
  memset(&s, 0, sizeof s);
  o.on_token = on_token;
  o.user_data = &s;
  CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &r), PARLEY_OK);
  CHECK_STATUS(parley_result_batch_size(r, &n), PARLEY_OK);
  CHECK(n == 3);
  for (i = 0; i < 3; ++i) {
    CHECK_STATUS(parley_result_hypothesis_count(r, i, &n), PARLEY_OK);
    CHECK(n == 1);
    CHECK_STATUS(parley_result_hypothesis(r, i, 0, &ids, &n, &score), PARLEY_OK);
    CHECK(same(ids, n, want[i], 8));
    CHECK(score < 0);
    CHECK(same(s.tokens[i], s.counts[i], want[i], 8)); /* streamed exactly what was returned */
  }
  CHECK_STATUS(parley_result_hypothesis(r, 3, 0, &ids, &n, &score), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_result_hypothesis(r, 0, 1, &ids, &n, &score), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_result_hypothesis(r, 0, 0, NULL, &n, &score), PARLEY_ERROR_INVALID_ARGUMENT);
  parley_result_free(r);

  /* The callback stops each sequence after 3 tokens. */
  memset(&s, 0, sizeof s);
  s.stop_after = 3;
  r = NULL;
  CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &r), PARLEY_OK);
  for (i = 0; i < 3; ++i) {
    CHECK_STATUS(parley_result_hypothesis(r, i, 0, &ids, &n, NULL), PARLEY_OK);
    CHECK(same(ids, n, want[i], 3));
    CHECK(s.counts[i] == 3);
  }
  parley_result_free(r);

  /* Misuse: each a clear status, output untouched. */
  r = (parley_generation_result *)&s; /* sentinel */
  {
    static const int32_t bad[] = {0, 5000};
    const int32_t *bad_prompts[1] = {bad};
    size_t bad_len[1] = {2}, zero[1] = {0};
    const int32_t *null_prompt[1] = {NULL};
    CHECK_STATUS(parley_generate(NULL, prompts, lengths, 3, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_generate(m, prompts, lengths, 0, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "empty") != NULL);
    CHECK_STATUS(parley_generate(m, NULL, lengths, 3, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_generate(m, bad_prompts, bad_len, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "5000") != NULL);
    CHECK_STATUS(parley_generate(m, bad_prompts, zero, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_generate(m, null_prompt, bad_len, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    o.num_beams = 2;
    o.num_return_sequences = 3;
    CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    o.num_beams = 1;
    o.num_return_sequences = 1;
    o.do_sample = 1;
    o.temperature = 0;
    CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    o.do_sample = 7;
    CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    o.do_sample = 0;
    /* A value out of reason names its field. */
    {
      const float top_p = o.top_p;
      const size_t top_k = o.top_k;
      o.top_p = 0.f / 0.f;
      CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK(strstr(parley_last_error(), "options->top_p is not finite (NaN)") != NULL);
      o.top_p = top_p;
      o.top_k = (size_t)-1;
      CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK(strstr(parley_last_error(), "options->top_k is") != NULL);
      o.top_k = top_k;
    }
    o.struct_size = 3;
    CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    o.struct_size = sizeof o;
    o.max_new_tokens = 0;
    CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    /* Past the model's 64 positions (RoPE too), and a request whose KV
     * cache could never fit: clear errors before anything is allocated. */
    o.max_new_tokens = 200;
    CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "positions") != NULL);
    o.max_new_tokens = 8;
    o.num_beams = (size_t)1 << 29;
    CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &r), PARLEY_ERROR_OUT_OF_MEMORY);
    CHECK(strstr(parley_last_error(), "KV cache") != NULL);
    o.num_beams = 1;
    /* A decoder-only model cannot translate. */
    o.max_new_tokens = 4;
    CHECK_STATUS(parley_translate_tokens(m, prompts, lengths, 3, NULL, NULL, &o, &r), PARLEY_ERROR_UNSUPPORTED);
  }
  CHECK(r == (parley_generation_result *)&s);

  /* Sampling is reproducible for a seed. */
  {
    parley_generation_result *a = NULL, *b = NULL;
    const int32_t *ia, *ib;
    size_t na, nb;
    o.do_sample = 1;
    o.temperature = 1.5f;
    o.top_k = 0;
    o.seed = 42;
    o.max_new_tokens = 8;
    o.on_token = NULL;
    CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &a), PARLEY_OK);
    CHECK_STATUS(parley_generate(m, prompts, lengths, 3, &o, &b), PARLEY_OK);
    for (i = 0; i < 3 && a && b; ++i) {
      parley_result_hypothesis(a, i, 0, &ia, &na, NULL);
      parley_result_hypothesis(b, i, 0, &ib, &nb, NULL);
      CHECK(same(ia, na, ib, nb));
    }
    parley_result_free(a);
    parley_result_free(b);
  }
  parley_result_free(NULL);
  parley_model_free(m);
}

static void test_marian_translate(parley_runtime *rt) {
  static const int32_t s0[] = {34, 39, 10, 57, 0}, s1[] = {59, 99, 0}, s2[] = {96, 29, 51, 0};
  static const int32_t want[3][8] = {
      {90, 90, 90, 90, 90, 90, 90, 0}, {7, 7, 7, 7, 7, 7, 7, 0}, {88, 88, 88, 88, 88, 88, 88, 0}};
  static const int32_t prefix[] = {5, 6};
  const int32_t *sources[3] = {s0, s1, s2}, *prefixes[3] = {prefix, NULL, prefix};
  size_t lengths[3] = {5, 3, 4}, prefix_lengths[3] = {2, 0, 1}, n = 0, i;
  const int32_t *ids = NULL;
  parley_generation_result *r = NULL;
  parley_generation_options o;
  parley_model *m = load(rt, "marian");
  CHECK_STATUS(parley_generation_options_init(m, &o), PARLEY_OK);
  o.max_new_tokens = 8;
  o.num_beams = 1;
  CHECK_STATUS(parley_translate_tokens(m, sources, lengths, 3, NULL, NULL, &o, &r), PARLEY_OK);
  for (i = 0; i < 3; ++i) {
    CHECK_STATUS(parley_result_hypothesis(r, i, 0, &ids, &n, NULL), PARLEY_OK);
    CHECK(same(ids, n, want[i], 8));
  }
  parley_result_free(r);
  /* Beam search with n-best and a target prefix: each hypothesis starts with its prefix. */
  o.num_beams = 3;
  o.num_return_sequences = 2;
  r = NULL;
  CHECK_STATUS(parley_translate_tokens(m, sources, lengths, 3, prefixes, prefix_lengths, &o, &r), PARLEY_OK);
  for (i = 0; r && i < 3; ++i) {
    size_t h, count = 0;
    float s_prev = 1e30f, score = 0;
    CHECK_STATUS(parley_result_hypothesis_count(r, i, &count), PARLEY_OK);
    CHECK(count == 2);
    for (h = 0; h < count; ++h) {
      CHECK_STATUS(parley_result_hypothesis(r, i, h, &ids, &n, &score), PARLEY_OK);
      CHECK(n >= prefix_lengths[i]);
      CHECK(prefix_lengths[i] == 0 || memcmp(ids, prefix, prefix_lengths[i] * sizeof *ids) == 0);
      CHECK(score <= s_prev); /* best first */
      s_prev = score;
    }
  }
  parley_result_free(r);
  /* An encoder-decoder model cannot generate; a source with an id outside the vocabulary is refused. */
  CHECK_STATUS(parley_generate(m, sources, lengths, 3, &o, &r), PARLEY_ERROR_UNSUPPORTED);
  {
    static const int32_t bad[] = {1, -3};
    const int32_t *bad_sources[1] = {bad};
    size_t bad_len[1] = {2};
    CHECK_STATUS(parley_translate_tokens(m, bad_sources, bad_len, 1, NULL, NULL, &o, &r),
                 PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "-3") != NULL);
  }
  parley_model_free(m);
}

/* tests/data/tiny_decoder.parley is a valid container whose tensors use
 * Hugging Face names, not the canonical ones: it loads (a file check), and
 * the first call that runs it names the missing tensor — every time. */
static void test_config_tensor_mismatch(parley_runtime *rt) {
  char path[4096];
  const char *dir = getenv("PARLEY_TEST_DATA_DIR");
  static const int32_t p0[] = {1, 2, 3};
  const int32_t *prompts[1] = {p0};
  size_t lengths[1] = {3};
  int round;
  parley_model *m = NULL;
  parley_generation_result *r = NULL;
  snprintf(path, sizeof path, "%s/tiny_decoder.parley", dir ? dir : ".");
  CHECK_STATUS(parley_model_load_file(rt, path, NULL, &m), PARLEY_OK);
  CHECK_STATUS(parley_model_prepare(m), PARLEY_ERROR_INVALID_MODEL);
  CHECK(strstr(parley_last_error(), "required by the config but missing") != NULL);
  CHECK_STATUS(parley_model_prepare(NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  for (round = 0; m && round < 2; ++round) {
    CHECK_STATUS(parley_generate(m, prompts, lengths, 1, NULL, &r), PARLEY_ERROR_INVALID_MODEL);
    CHECK(strstr(parley_last_error(), "required by the config but missing") != NULL);
    CHECK(r == NULL);
  }
  parley_model_free(m);
}

int main(void) {
  parley_runtime *rt = make_runtime();
  test_llama_greedy(rt);
  test_marian_translate(rt);
  test_config_tensor_mismatch(rt);
  parley_runtime_free(rt);
  printf("test_generate: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
