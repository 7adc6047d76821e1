/* The serving engine from C (docs/serving.md): concurrent callers of
 * parley_generate and parley_translate_tokens get the hypotheses each gets
 * alone on a model loaded with serving_engine = 0 (contiguous KV cache, no
 * batching across calls); parley_model_serving_stats reports the engine;
 * the engine's options are validated; misuse of the stats call.
 *
 * Scores: the engine batches the callers' rows into shared steps, and a
 * GEMM of another height rounds its rows differently (a few float32 ulps per
 * logit); a hypothesis' score sums max_new_tokens log-probabilities, so two
 * runs agree to |score| * 1e-5 (tens of ulps per step, far below the gap
 * between the random test models' top logits, which is why the tokens must
 * be identical).
 *
 * Sources and prompts come from a fixed, printed seed (PARLEY_TEST_SEED
 * replays another). Run through ctest (PARLEY_PARITY_DIR,
 * PARLEY_PLUGIN_BUILD_DIR). */
#include <math.h>
#include <parley/parley.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c_checks.h"

#define CALLERS 6
#define MAX_LEN 24

static uint64_t g_rng;
static uint32_t next_u32(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (uint32_t)(g_rng >> 16);
}

static parley_model *load(parley_runtime *rt, const char *name, int engine) {
  char path[4096];
  parley_model *m = NULL;
  parley_model_options o;
  const char *dir = getenv("PARLEY_PARITY_DIR");
  snprintf(path, sizeof path, "%s/models/%s.parley", dir ? dir : ".", name);
  parley_model_options_init(&o);
  o.serving_engine = engine;
  if (parley_model_load_file(rt, path, &o, &m) != PARLEY_OK) {
    fprintf(stderr, "load %s: %s\n", path, parley_last_error());
    exit(1);
  }
  return m;
}

struct call {
  const parley_model *model;
  int translate;
  size_t beams;
  int32_t tokens[MAX_LEN];
  size_t length;
  parley_status status;
  parley_generation_result *result;
};

static void *run_call(void *arg) {
  struct call *c = (struct call *)arg;
  const int32_t *input[1];
  size_t lengths[1];
  parley_generation_options o;
  input[0] = c->tokens;
  lengths[0] = c->length;
  c->status = parley_generation_options_init(c->model, &o);
  if (c->status != PARLEY_OK) return NULL;
  o.max_new_tokens = 10;
  o.num_beams = c->beams;
  o.num_return_sequences = 1;
  c->status = c->translate ? parley_translate_tokens(c->model, input, lengths, 1, NULL, NULL, &o, &c->result)
                           : parley_generate(c->model, input, lengths, 1, &o, &c->result);
  return NULL;
}

/* Hypothesis 0 of r and of ref: same tokens, scores within the bound above. */
static void compare(const parley_generation_result *r, const parley_generation_result *ref, const char *what,
                    size_t caller) {
  const int32_t *a = NULL, *b = NULL;
  size_t na = 0, nb = 0;
  float sa = 0, sb = 0;
  CHECK_STATUS(parley_result_hypothesis(r, 0, 0, &a, &na, &sa), PARLEY_OK);
  CHECK_STATUS(parley_result_hypothesis(ref, 0, 0, &b, &nb, &sb), PARLEY_OK);
  if (!a || !b) return;
  if (na != nb || (na && memcmp(a, b, na * sizeof *a) != 0) || fabsf(sa - sb) > 1e-5f * fabsf(sb) + 1e-6f) {
    ++g_failures;
    fprintf(stderr, "%s, caller %zu: %zu tokens (score %.8g) through the engine, %zu (score %.8g) alone\n", what,
            caller, na, (double)sa, nb, (double)sb);
  }
  ++g_checks;
}

static void serving_matches_alone(parley_runtime *rt, const char *name, int translate, size_t beams) {
  parley_model *engine = load(rt, name, 1), *alone = load(rt, name, 0);
  struct call calls[CALLERS], refs[CALLERS];
  pthread_t threads[CALLERS];
  parley_serving_stats st;
  char what[128];
  size_t i, j;
  parley_model_info info;
  int32_t vocab;
  snprintf(what, sizeof what, "%s %s, %zu beam(s)", name, translate ? "translate" : "generate", beams);
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK_STATUS(parley_model_get_info(alone, &info), PARLEY_OK);
  vocab = (int32_t)info.vocab_size;
  CHECK(vocab > 8);
  memset(calls, 0, sizeof calls);
  for (i = 0; i < CALLERS; ++i) {
    calls[i].model = engine;
    calls[i].translate = translate;
    calls[i].beams = beams;
    calls[i].length = 2 + next_u32() % (MAX_LEN - 2);
    for (j = 0; j < calls[i].length; ++j) calls[i].tokens[j] = (int32_t)(3 + next_u32() % (uint32_t)(vocab - 3));
    if (!translate) calls[i].tokens[0] = 0; /* the models' BOS */
    refs[i] = calls[i];
    refs[i].model = alone;
    run_call(&refs[i]);
    CHECK_STATUS(refs[i].status, PARLEY_OK);
  }
  for (i = 0; i < CALLERS; ++i) CHECK(pthread_create(&threads[i], NULL, run_call, &calls[i]) == 0);
  for (i = 0; i < CALLERS; ++i) pthread_join(threads[i], NULL);
  for (i = 0; i < CALLERS; ++i) {
    CHECK_STATUS(calls[i].status, PARLEY_OK);
    if (calls[i].result && refs[i].result) compare(calls[i].result, refs[i].result, what, i);
    parley_result_free(calls[i].result);
    parley_result_free(refs[i].result);
  }

  /* The engine ran them (the other model has none). */
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  CHECK_STATUS(parley_model_serving_stats(engine, &st), PARLEY_OK);
  CHECK(st.engine_active == 1);
  CHECK(st.steps > 0 && st.batched_rows >= st.steps && st.max_batch_rows >= 1);
  CHECK(st.decode_tokens > 0); /* a 1-token decoder prompt counts as decoding */
  CHECK(st.kv_blocks > 0 && st.kv_blocks == st.kv_blocks_free + st.kv_blocks_cached + st.kv_blocks_in_use);
  CHECK(st.kv_blocks_in_use == 0); /* every request has finished */
  CHECK(st.kv_budget_bytes == st.kv_blocks * st.kv_block_bytes);
  printf("%s: %llu steps, %llu rows, largest step %llu rows\n", what, (unsigned long long)st.steps,
         (unsigned long long)st.batched_rows, (unsigned long long)st.max_batch_rows);
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  CHECK_STATUS(parley_model_serving_stats(alone, &st), PARLEY_OK);
  CHECK(st.engine_active == 0 && st.steps == 0 && st.kv_blocks == 0);
  parley_model_free(engine);
  parley_model_free(alone);
}

static void options_and_misuse(parley_runtime *rt) {
  char path[4096];
  const char *dir = getenv("PARLEY_PARITY_DIR");
  parley_model *m = NULL;
  parley_model_options o;
  parley_serving_stats st;
  parley_generation_options g;
  parley_generation_result *r = NULL;
  static const int32_t prompt[] = {0, 11, 81, 92, 49};
  const int32_t *prompts[1] = {prompt};
  size_t lengths[1] = {5};
  snprintf(path, sizeof path, "%s/models/llama.parley", dir ? dir : ".");

  parley_model_options_init(&o);
  o.serving_engine = 2;
  CHECK_STATUS(parley_model_load_file(rt, path, &o, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "serving_engine") != NULL);
  parley_model_options_init(&o);
  o.kv_block_size = 0;
  CHECK_STATUS(parley_model_load_file(rt, path, &o, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "kv_block_size") != NULL);
  parley_model_options_init(&o);
  o.max_batch_tokens = -1;
  CHECK_STATUS(parley_model_load_file(rt, path, &o, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "max_batch_tokens") != NULL);

  /* A budget below one block: the engine cannot start; the error names it,
   * and the model stays usable for the next call. */
  parley_model_options_init(&o);
  o.kv_cache_budget_bytes = 1;
  CHECK_STATUS(parley_model_load_file(rt, path, &o, &m), PARLEY_OK);
  CHECK_STATUS(parley_generation_options_init(m, &g), PARLEY_OK);
  g.max_new_tokens = 4;
  CHECK_STATUS(parley_generate(m, prompts, lengths, 1, &g, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "KV budget") != NULL);
  CHECK_STATUS(parley_generate(m, prompts, lengths, 1, &g, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  parley_model_free(m);
  m = NULL;

  /* A pool of 2 blocks of 16 positions: a prompt + new tokens of 40
   * positions can never fit (OUT_OF_MEMORY naming the budget, at once). */
  parley_model_options_init(&o);
  o.kv_block_size = 16;
  o.kv_cache_budget_bytes = 1; /* replaced below once the block size in bytes is known */
  CHECK_STATUS(parley_model_load_file(rt, path, &o, &m), PARLEY_OK);
  {
    parley_model_memory mem;
    memset(&mem, 0, sizeof mem);
    mem.struct_size = sizeof mem;
    CHECK_STATUS(parley_model_memory_usage(m, &mem), PARLEY_OK);
    parley_model_free(m);
    m = NULL;
    o.kv_cache_budget_bytes = 2 * 16 * mem.kv_bytes_per_token;
  }
  CHECK_STATUS(parley_model_load_file(rt, path, &o, &m), PARLEY_OK);
  CHECK_STATUS(parley_generation_options_init(m, &g), PARLEY_OK);
  g.max_new_tokens = 8;
  CHECK_STATUS(parley_generate(m, prompts, lengths, 1, &g, &r), PARLEY_OK); /* 13 positions: fits */
  parley_result_free(r);
  r = NULL;
  g.max_new_tokens = 35;
  CHECK_STATUS(parley_generate(m, prompts, lengths, 1, &g, &r), PARLEY_ERROR_OUT_OF_MEMORY);
  CHECK(strstr(parley_last_error(), "KV budget") != NULL);
  g.max_new_tokens = 8;
  g.num_beams = 4; /* four beams need at least 4 blocks of their own */
  g.num_return_sequences = 1;
  CHECK_STATUS(parley_generate(m, prompts, lengths, 1, &g, &r), PARLEY_ERROR_OUT_OF_MEMORY);
  CHECK(strstr(parley_last_error(), "kv_cache_budget_bytes") != NULL);

  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  CHECK_STATUS(parley_model_serving_stats(m, &st), PARLEY_OK);
  CHECK(st.engine_active == 1 && st.kv_blocks == 2);
  CHECK_STATUS(parley_model_serving_stats(NULL, &st), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_serving_stats(m, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  st.struct_size = 3;
  CHECK_STATUS(parley_model_serving_stats(m, &st), PARLEY_ERROR_INVALID_ARGUMENT);
  parley_model_free(m);
}

int main(void) {
  parley_runtime *rt = make_runtime();
  const char *env = getenv("PARLEY_TEST_SEED");
  uint64_t seed = env && *env ? strtoull(env, NULL, 10) : 20261205u;
  printf("test_serving: seed %llu (PARLEY_TEST_SEED replays another)\n", (unsigned long long)seed);
  g_rng = seed * 0x9E3779B97F4A7C15ull + 1;
  serving_matches_alone(rt, "llama", 0, 1);
  serving_matches_alone(rt, "llama", 0, 3);
  serving_matches_alone(rt, "gpt2", 0, 1);
  serving_matches_alone(rt, "marian", 1, 1);
  serving_matches_alone(rt, "marian", 1, 4);
  serving_matches_alone(rt, "bart", 1, 2);
  options_and_misuse(rt);
  parley_runtime_free(rt);
  printf("test_serving: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
