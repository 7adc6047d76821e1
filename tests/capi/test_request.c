/* Asynchronous requests from C99 (parley_*_submit, parley_request_*): the
 * same results as the blocking calls, completion and streaming callbacks on
 * the model's engine thread, wait / poll / cancel / deadlines, per-token
 * log-probabilities, chat alternatives and logit_bias, 32 concurrent submissions from one thread, requests
 * freed from their own callbacks, 8 threads submitting and cancelling at
 * random, and misuse.
 * Uses the demo models (PARLEY_DEMO_MODELS: a small Llama chat model and an
 * OPUS-MT translation model). Run through ctest; also under TSan in CI. */
#include <math.h>
#include <parley/parley.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "c_checks.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define CHECK_OK(call) CHECK_STATUS(call, PARLEY_OK)

static parley_model *load(parley_runtime *rt, const char *rel) {
  char path[4096];
  parley_model *m = NULL;
  const char *dir = getenv("PARLEY_DEMO_MODELS");
  snprintf(path, sizeof path, "%s/%s", dir ? dir : ".", rel);
  if (parley_model_load_file(rt, path, NULL, &m) != PARLEY_OK) {
    fprintf(stderr, "load %s: %s\n", path, parley_last_error());
    exit(1);
  }
  return m;
}

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

/* A one-shot gate between a callback on a worker thread and the test's thread. */
struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int reached, released, calls;
};
static void gate_init(struct gate *g) {
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  g->reached = g->released = g->calls = 0;
}
static void gate_destroy(struct gate *g) {
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
}
/* Worker side: on the 2nd call, say so and wait until the test releases it. */
static void gate_pass(struct gate *g) {
  pthread_mutex_lock(&g->mu);
  if (++g->calls == 2) {
    g->reached = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->released) pthread_cond_wait(&g->cv, &g->mu);
  }
  pthread_mutex_unlock(&g->mu);
}
/* Test side: wait until the worker is held in the gate; 0 (a failed check,
 * never a hang) when the request ended without reaching it. */
static int gate_wait_reached(struct gate *g, parley_request *r) {
  int reached = 0, ended = 0;
  while (!reached && !ended) {
    ended = parley_request_wait(r, 20) == PARLEY_OK;
    pthread_mutex_lock(&g->mu);
    reached = g->reached;
    pthread_mutex_unlock(&g->mu);
  }
  CHECK(reached);
  return reached;
}
static void gate_release(struct gate *g) {
  pthread_mutex_lock(&g->mu);
  g->released = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}
static int32_t gate_on_token(void *user, size_t b, size_t s, int32_t token) {
  (void)b, (void)s, (void)token;
  gate_pass((struct gate *)user);
  return 0;
}
static int32_t gate_on_text(void *user, const char *text, size_t length) {
  (void)text, (void)length;
  gate_pass((struct gate *)user);
  return 0;
}
static int32_t gate_on_translation(void *user, size_t t, size_t h, const char *text, size_t n, int32_t final) {
  (void)t, (void)h, (void)text, (void)n;
  if (!final) gate_pass((struct gate *)user);
  return 0;
}

static int32_t slow_on_token(void *user, size_t b, size_t s, int32_t token) {
  (void)user, (void)b, (void)s, (void)token;
  sleep_ms(10);
  return 0;
}

static int32_t slow_on_translation(void *user, size_t t, size_t h, const char *text, size_t n, int32_t final) {
  (void)user, (void)t, (void)h, (void)text, (void)n, (void) final;
  sleep_ms(10);
  return 0;
}

/* Completion callback: what it may do, recorded for the test's thread. */
struct completion {
  pthread_mutex_t mu;
  int calls;
  int32_t status;
  parley_status wait_inside, poll_inside, take_inside;
  int32_t done_inside;
  char *reply; /* taken inside the callback */
};
static void on_complete(void *user, parley_request *r, int32_t status) {
  struct completion *c = (struct completion *)user;
  int32_t done = -1;
  char *reply = NULL;
  parley_status w = parley_request_wait(r, -1); /* BUSY: it would wait for itself */
  parley_status p = parley_request_poll(r, &done);
  parley_status t = status == PARLEY_OK ? parley_request_take_reply(r, &reply) : PARLEY_OK;
  pthread_mutex_lock(&c->mu);
  c->calls++;
  c->status = status;
  c->wait_inside = w;
  c->poll_inside = p;
  c->done_inside = done;
  c->take_inside = t;
  c->reply = reply;
  pthread_mutex_unlock(&c->mu);
}

struct collected {
  char text[4096];
  size_t pieces;
};
static int32_t collect(void *user, const char *text, size_t length) {
  struct collected *c = (struct collected *)user;
  size_t have = strlen(c->text);
  if (have + length < sizeof c->text) {
    memcpy(c->text + have, text, length);
    c->text[have + length] = 0;
  }
  c->pieces++;
  return 0;
}

static const char *const kSystem = "You are the support assistant of a bicycle shop.";
static const char *const kTurns[] = {"Hello! Can you help me?", "My bike has a flat tyre.", "Thanks, bye."};

static void chat_options(parley_model *m, parley_generation_options *g, parley_chat_options *o) {
  parley_generation_options_init(m, g);
  g->max_new_tokens = 24;
  g->do_sample = 0;
  parley_chat_options_init(o);
  o->generation = g;
}

/* A submitted chat turn gives the reply, stream and conversation of a blocking one. */
static void test_chat_equals_blocking(parley_model *llm) {
  parley_chat_session *a = NULL, *b = NULL;
  parley_generation_options g;
  parley_chat_options o;
  parley_request_options ro;
  struct completion comp;
  struct collected col;
  parley_chat_stats st;
  size_t turn, i, n_a = 0, n_b = 0;

  memset(&comp, 0, sizeof comp);
  pthread_mutex_init(&comp.mu, NULL);
  chat_options(llm, &g, &o);
  CHECK_OK(parley_chat_session_create(llm, kSystem, &a));
  CHECK_OK(parley_chat_session_create(llm, kSystem, &b));
  if (!a || !b) return;
  for (turn = 0; turn < COUNT(kTurns); ++turn) {
    char *want = NULL, *got = NULL;
    parley_request *r = NULL;
    int32_t done = 0, status = -1;
    const char *message = NULL;
    const float *lp = NULL;
    size_t n_lp = 0;
    CHECK_OK(parley_chat_append(a, PARLEY_ROLE_USER, kTurns[turn]));
    CHECK_OK(parley_chat_generate(a, &o, &want));
    CHECK_OK(parley_chat_append(b, PARLEY_ROLE_USER, kTurns[turn]));
    memset(&col, 0, sizeof col);
    o.on_text = collect;
    o.user_data = &col;
    parley_request_options_init(&ro);
    ro.return_logprobs = 1;
    if (turn == 0) {
      ro.on_complete = on_complete;
      ro.user_data = &comp;
    }
    CHECK_OK(parley_chat_submit(b, &o, &ro, &r));
    o.on_text = NULL;
    o.user_data = NULL;
    if (!r) continue;
    /* The session is the request's until the turn ends. */
    CHECK_OK(parley_request_wait(r, -1));
    CHECK_OK(parley_request_poll(r, &done));
    CHECK(done == 1);
    CHECK_OK(parley_request_status(r, &status, &message));
    CHECK(status == PARLEY_OK && message && message[0] == 0);
    if (turn == 0) {
      pthread_mutex_lock(&comp.mu);
      CHECK(comp.calls == 1 && comp.status == PARLEY_OK);
      CHECK(comp.wait_inside == PARLEY_ERROR_BUSY);
      CHECK(comp.poll_inside == PARLEY_OK && comp.done_inside == 0);
      CHECK(comp.take_inside == PARLEY_OK); /* the result can be taken inside the callback */
      got = comp.reply;
      pthread_mutex_unlock(&comp.mu);
      CHECK_STATUS(parley_request_take_reply(r, &got), PARLEY_ERROR_NOT_FOUND); /* taken already */
    } else {
      CHECK_OK(parley_request_take_reply(r, &got));
      CHECK_STATUS(parley_request_take_reply(r, &got), PARLEY_ERROR_NOT_FOUND);
    }
    CHECK(want && got && strcmp(want, got) == 0);
    CHECK(got && strcmp(col.text, got) == 0 && col.pieces >= 1); /* streamed on the worker thread */
    /* One log-probability per generated token, each a log of a probability. */
    CHECK_OK(parley_request_reply_logprobs(r, &lp, &n_lp));
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    CHECK_OK(parley_chat_stats_get(b, &st));
    CHECK(n_lp == st.generated_tokens && n_lp >= 1);
    for (i = 0; i < n_lp; ++i) CHECK(lp[i] <= 0.0f && lp[i] > -1e30f);
    parley_request_free(r);
    parley_string_free(want);
    parley_string_free(got);
  }
  CHECK_OK(parley_chat_message_count(a, &n_a));
  CHECK_OK(parley_chat_message_count(b, &n_b));
  CHECK(n_a == n_b && n_a == 1 + 2 * COUNT(kTurns));
  parley_chat_session_free(a);
  parley_chat_session_free(b);
  pthread_mutex_destroy(&comp.mu);
}

/* One greedy chat turn submitted with return_logprobs and num_alternatives;
 * returns the request (finished) or NULL. `bias_id` >= 0 adds `bias` to
 * that token's score (parley_generation_options.logit_bias_*). */
static parley_request *chat_turn_scored(parley_model *llm, size_t k, int32_t bias_id, float bias) {
  parley_chat_session *s = NULL;
  parley_generation_options g;
  parley_chat_options o;
  parley_request_options ro;
  parley_request *r = NULL;
  chat_options(llm, &g, &o);
  g.max_new_tokens = 12;
  if (bias_id >= 0) {
    g.logit_bias_ids = &bias_id;
    g.logit_bias_values = &bias;
    g.num_logit_bias = 1;
  }
  CHECK_OK(parley_chat_session_create(llm, kSystem, &s));
  if (!s) return NULL;
  CHECK_OK(parley_chat_append(s, PARLEY_ROLE_USER, "Do you repair tyres?"));
  parley_request_options_init(&ro);
  ro.return_logprobs = 1;
  ro.num_alternatives = k;
  CHECK_OK(parley_chat_submit(s, &o, &ro, &r));
  if (r) CHECK_OK(parley_request_wait(r, -1));
  parley_chat_session_free(s); /* the request keeps its results */
  return r;
}

/* parley_request_reply_progress from inside a chat turn's on_text: the
 * tokens the text so far completes grow piece by piece, never past the
 * reply, and are the first tokens of the finished request with the same
 * log-probabilities and alternatives; outside the callback, or misused, it
 * is refused. */
typedef struct {
  size_t calls, tokens, k, misuse_ok;
  int32_t ids[64], alt_ids[64 * 3];
  float lps[64], alt_lps[64 * 3];
  int monotonic, stable;
  char text[4096];
  size_t text_len;
} ProgressLog;

static int32_t progress_on_text(void *user, const char *text, size_t length) {
  ProgressLog *log = (ProgressLog *)user;
  parley_reply_progress p;
  size_t i;
  memset(&p, 0, sizeof p);
  p.struct_size = sizeof p;
  if (log->text_len + length < sizeof log->text) {
    memcpy(log->text + log->text_len, text, length);
    log->text_len += length;
  }
  if (parley_request_reply_progress(NULL, &p) != PARLEY_OK) return 0;
  ++log->calls;
  if (p.tokens < log->tokens) log->monotonic = 0;
  for (i = 0; i < p.tokens && i < 64; ++i) {
    if (i < log->tokens && (log->ids[i] != p.token_ids[i] || log->lps[i] != p.logprobs[i])) log->stable = 0;
    log->ids[i] = p.token_ids[i];
    log->lps[i] = p.logprobs ? p.logprobs[i] : 1.0f;
    if (p.alternatives == 3) {
      memcpy(log->alt_ids + 3 * i, p.alternative_ids + 3 * i, 3 * sizeof(int32_t));
      memcpy(log->alt_lps + 3 * i, p.alternative_logprobs + 3 * i, 3 * sizeof(float));
    }
  }
  log->tokens = p.tokens;
  log->k = p.alternatives;
  /* Misuse inside the callback: a NULL struct, a short struct_size. */
  p.struct_size = 8;
  if (parley_request_reply_progress(NULL, NULL) == PARLEY_ERROR_INVALID_ARGUMENT &&
      parley_request_reply_progress(NULL, &p) == PARLEY_ERROR_INVALID_ARGUMENT)
    ++log->misuse_ok;
  return 0;
}

static void test_chat_reply_progress(parley_model *llm) {
  parley_chat_session *s = NULL;
  parley_generation_options g;
  parley_chat_options o;
  parley_request_options ro;
  parley_request *r = NULL;
  parley_reply_progress p;
  ProgressLog log;
  const int32_t *tokens = NULL, *ids = NULL;
  const float *lp = NULL, *alp = NULL;
  size_t n_tok = 0, n_lp = 0, steps = 0, k = 0, i;
  char *reply = NULL;
  memset(&log, 0, sizeof log);
  log.monotonic = log.stable = 1;
  chat_options(llm, &g, &o);
  g.max_new_tokens = 12;
  o.on_text = progress_on_text;
  o.user_data = &log;
  CHECK_OK(parley_chat_session_create(llm, kSystem, &s));
  if (!s) return;
  CHECK_OK(parley_chat_append(s, PARLEY_ROLE_USER, "Do you repair tyres?"));
  parley_request_options_init(&ro);
  ro.return_logprobs = 1;
  ro.num_alternatives = 3;
  CHECK_OK(parley_chat_submit(s, &o, &ro, &r));
  if (!r) {
    parley_chat_session_free(s);
    return;
  }
  CHECK_OK(parley_request_wait(r, -1));
  memset(&p, 0, sizeof p);
  p.struct_size = sizeof p;
  CHECK_STATUS(parley_request_reply_progress(r, &p), PARLEY_ERROR_BUSY); /* not inside its on_text */
  CHECK(strstr(parley_last_error(), "on_text") != NULL);
  CHECK_STATUS(parley_request_reply_progress(NULL, &p), PARLEY_ERROR_BUSY);
  CHECK_OK(parley_request_reply_tokens(r, &tokens, &n_tok));
  CHECK_OK(parley_request_reply_logprobs(r, &lp, &n_lp));
  CHECK_OK(parley_request_reply_alternatives(r, &ids, &alp, &steps, &k));
  CHECK_OK(parley_request_take_reply(r, &reply));
  CHECK(log.calls >= 2 && log.monotonic && log.stable && log.misuse_ok == log.calls);
  CHECK(log.tokens >= 1 && log.tokens <= n_tok && log.k == 3 && k == 3);
  for (i = 0; i < log.tokens && i < 64; ++i) {
    CHECK(log.ids[i] == tokens[i] && log.lps[i] == lp[i]);
    CHECK(memcmp(log.alt_ids + 3 * i, ids + 3 * i, 3 * sizeof(int32_t)) == 0);
    CHECK(memcmp(log.alt_lps + 3 * i, alp + 3 * i, 3 * sizeof(float)) == 0);
  }
  CHECK(reply && strlen(reply) == log.text_len && memcmp(reply, log.text, log.text_len) == 0);
  parley_string_free(reply);
  parley_request_free(r);
  parley_chat_session_free(s);
}

/* A chat request's tokens and alternatives (parley_request_reply_tokens /
 * _alternatives): one row per token, best first, the greedy token first with
 * the log-probability reply_logprobs reports; and logit_bias moves the
 * choice: +100 on the second-best first token makes it the first token,
 * -100 on the greedy one bans it. */
static void test_chat_alternatives_and_logit_bias(parley_model *llm) {
  const int32_t *tokens = NULL, *ids = NULL, *tokens2 = NULL;
  const float *lp = NULL, *alp = NULL, *lp2 = NULL;
  size_t n_tok = 0, n_lp = 0, steps = 0, k = 0, i, j, n2 = 0;
  int32_t status = -1;
  const char *message = NULL;
  parley_request *r = chat_turn_scored(llm, 4, -1, 0.0f), *r2 = NULL;
  if (!r) return;
  CHECK_OK(parley_request_reply_tokens(r, &tokens, &n_tok));
  CHECK_OK(parley_request_reply_logprobs(r, &lp, &n_lp));
  CHECK_OK(parley_request_reply_alternatives(r, &ids, &alp, &steps, &k));
  CHECK(n_tok >= 2 && n_tok == n_lp && steps == n_tok && k == 4);
  for (i = 0; i < steps && i < n_tok; ++i) {
    CHECK(ids[i * k] == tokens[i]); /* greedy: the chosen token is the best */
    CHECK(alp[i * k] == lp[i]);     /* under the same distribution */
    for (j = 1; j < k; ++j) CHECK(alp[i * k + j] <= alp[i * k + j - 1]);
  }
  /* Misuse of the getters. */
  CHECK_STATUS(parley_request_reply_tokens(r, NULL, &n_tok), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_request_reply_alternatives(r, &ids, &alp, &steps, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_request_reply_alternatives(NULL, &ids, &alp, &steps, &k), PARLEY_ERROR_INVALID_ARGUMENT);

  if (n_tok >= 1 && steps >= 1) {
    int32_t second = ids[1], greedy = tokens[0];
    r2 = chat_turn_scored(llm, 0, second, 100.0f);
    if (r2) {
      CHECK_OK(parley_request_reply_tokens(r2, &tokens2, &n2));
      CHECK(n2 >= 1 && tokens2[0] == second);
      /* Alternatives were not asked for. */
      CHECK_STATUS(parley_request_reply_alternatives(r2, &ids, &alp, &steps, &k), PARLEY_ERROR_NOT_FOUND);
      CHECK(strstr(parley_last_error(), "num_alternatives") != NULL);
      parley_request_free(r2);
    }
    r2 = chat_turn_scored(llm, 0, greedy, -100.0f);
    if (r2) {
      CHECK_OK(parley_request_reply_tokens(r2, &tokens2, &n2));
      CHECK_OK(parley_request_reply_logprobs(r2, &lp2, &n2));
      CHECK(n2 >= 1 && tokens2[0] != greedy);
      parley_request_free(r2);
    }
  }
  parley_request_free(r);

  /* A bias on an id outside the vocabulary fails the turn, naming logit_bias. */
  r = chat_turn_scored(llm, 0, 1 << 30, 1.0f);
  if (r) {
    CHECK_OK(parley_request_status(r, &status, &message));
    CHECK(status == PARLEY_ERROR_INVALID_ARGUMENT && message && strstr(message, "logit_bias"));
    CHECK_STATUS(parley_request_reply_tokens(r, &tokens, &n_tok), PARLEY_ERROR_NOT_FOUND);
    parley_request_free(r);
  }
  /* A bias that is not finite is refused by the blocking call too. */
  {
    parley_generation_options g;
    parley_generation_result *res = NULL;
    int32_t prompt[1] = {1}, id = 5;
    const int32_t *pp = prompt;
    size_t one = 1;
    float v = NAN;
    parley_generation_options_init(llm, &g);
    g.max_new_tokens = 2;
    g.logit_bias_ids = &id;
    g.logit_bias_values = &v;
    g.num_logit_bias = 1;
    CHECK_STATUS(parley_generate(llm, &pp, &one, 1, &g, &res), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "logit_bias_values[0]") != NULL);
    g.logit_bias_values = NULL;
    CHECK_STATUS(parley_generate(llm, &pp, &one, 1, &g, &res), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_generate_submit(llm, &pp, &one, 1, &g, NULL, &r2), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "logit_bias") != NULL);
    g.num_logit_bias = PARLEY_MAX_LOGIT_BIAS + 1;
    g.logit_bias_values = &v;
    CHECK_STATUS(parley_generate(llm, &pp, &one, 1, &g, &res), PARLEY_ERROR_INVALID_ARGUMENT);
  }
  /* Finite biases whose sum leaves [-1e4, 1e4] (two entries of 3e38 summed to
   * inf and gave NaN scores with OK; -1e9 everywhere made beam search return
   * an empty hypothesis), and a length penalty whose power leaves float. */
  {
    parley_generation_options g;
    parley_generation_result *res = NULL;
    int32_t prompt[1] = {1}, ids[2] = {5, 5};
    const int32_t *pp = prompt;
    size_t one = 1, beams;
    float big[2] = {3e38f, 3e38f}, edge[2] = {6000.f, 4000.f};
    for (beams = 1; beams <= 2; ++beams) {
      parley_generation_options_init(llm, &g);
      g.max_new_tokens = 2;
      g.num_beams = beams;
      g.logit_bias_ids = ids;
      g.logit_bias_values = big;
      g.num_logit_bias = 2;
      CHECK_STATUS(parley_generate(llm, &pp, &one, 1, &g, &res), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK(strstr(parley_last_error(), "[-10000, 10000]") != NULL);
      big[0] = -1e9f;
      g.num_logit_bias = 1;
      CHECK_STATUS(parley_generate(llm, &pp, &one, 1, &g, &res), PARLEY_ERROR_INVALID_ARGUMENT);
      big[0] = 3e38f;
      g.logit_bias_values = edge; /* a sum of exactly 10000: allowed */
      g.num_logit_bias = 2;
      CHECK_OK(parley_generate(llm, &pp, &one, 1, &g, &res));
      parley_result_free(res);
      res = NULL;
    }
    parley_generation_options_init(llm, &g);
    g.max_new_tokens = 4;
    g.num_beams = 3;
    g.length_penalty = -1e30f;
    CHECK_STATUS(parley_generate(llm, &pp, &one, 1, &g, &res), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "length_penalty") != NULL);
    g.length_penalty = 2.f;
    CHECK_OK(parley_generate(llm, &pp, &one, 1, &g, &res));
    parley_result_free(res);
  }
  /* request_options->num_alternatives: at most PARLEY_MAX_ALTERNATIVES, and only for chat. */
  {
    parley_generation_options g;
    parley_request_options ro;
    int32_t prompt[1] = {1};
    const int32_t *pp = prompt;
    size_t one = 1;
    parley_generation_options_init(llm, &g);
    g.max_new_tokens = 2;
    parley_request_options_init(&ro);
    ro.num_alternatives = 2;
    r2 = NULL;
    CHECK_STATUS(parley_generate_submit(llm, &pp, &one, 1, &g, &ro, &r2), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "num_alternatives is for chat requests") != NULL && r2 == NULL);
    ro.num_alternatives = PARLEY_MAX_ALTERNATIVES + 1;
    CHECK_STATUS(parley_generate_submit(llm, &pp, &one, 1, &g, &ro, &r2), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "PARLEY_MAX_ALTERNATIVES") != NULL && r2 == NULL);
    /* On a generation request the chat getters say where its scores are. */
    ro.num_alternatives = 0;
    CHECK_OK(parley_generate_submit(llm, &pp, &one, 1, &g, &ro, &r2));
    if (r2) {
      CHECK_OK(parley_request_wait(r2, -1));
      CHECK_STATUS(parley_request_reply_tokens(r2, &tokens, &n_tok), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK_STATUS(parley_request_reply_alternatives(r2, &ids, &alp, &steps, &k), PARLEY_ERROR_INVALID_ARGUMENT);
      parley_request_free(r2);
    }
  }
}

/* Prompt ids of a text (the chat model's tokenizer). */
static size_t ids_of(parley_model *m, const char *text, int32_t *ids, size_t cap) {
  size_t n = 0;
  CHECK_OK(parley_tokenize(m, text, 1, NULL, ids, cap, &n));
  return n;
}

/* Tokens equal; scores equal up to float32 rounding. A request batched with
 * others by the serving engine runs its rows through GEMMs of another batch
 * size, whose accumulation order (and so the last bits of each logit) may
 * differ: each of the <= 64 log-probabilities summed into a score moves by
 * a few ulps of the logits' magnitude, far below 1e-5 relative. Blocking and
 * submitted calls that run alone give identical scores. */
static int same_result(const parley_generation_result *x, const parley_generation_result *y) {
  size_t nb = 0, nb2 = 0, b, h;
  if (parley_result_batch_size(x, &nb) || parley_result_batch_size(y, &nb2) || nb != nb2) return 0;
  for (b = 0; b < nb; ++b) {
    size_t nh = 0, nh2 = 0;
    if (parley_result_hypothesis_count(x, b, &nh) || parley_result_hypothesis_count(y, b, &nh2) || nh != nh2) return 0;
    for (h = 0; h < nh; ++h) {
      const int32_t *t1 = NULL, *t2 = NULL;
      size_t l1 = 0, l2 = 0;
      float s1 = 0, s2 = 1;
      if (parley_result_hypothesis(x, b, h, &t1, &l1, &s1) || parley_result_hypothesis(y, b, h, &t2, &l2, &s2))
        return 0;
      if (l1 != l2 || memcmp(t1, t2, l1 * sizeof *t1) != 0) return 0;
      if (fabsf(s1 - s2) > 1e-5f * (fabsf(s1) > 1.0f ? fabsf(s1) : 1.0f)) {
        fprintf(stderr, "scores differ past rounding: %.9g vs %.9g\n", (double)s1, (double)s2);
        return 0;
      }
    }
  }
  return 1;
}

#define NCONC 32
/* 32 generations submitted from one thread, then waited on: each equals its
 * blocking result; the per-token log-probabilities sum to the score. */
static void test_generate_concurrent(parley_model *llm) {
  static const char *const words[] = {"bike", "tyre", "chain", "brake", "saddle", "pedal", "wheel", "bell"};
  int32_t ids[NCONC][64];
  const int32_t *prompts[NCONC];
  size_t lengths[NCONC], i, k;
  parley_generation_result *want[NCONC];
  parley_request *req[NCONC];
  parley_generation_options g;
  parley_request_options ro;

  parley_generation_options_init(llm, &g);
  g.max_new_tokens = 12;
  g.do_sample = 0;
  for (i = 0; i < NCONC; ++i) {
    char text[128];
    snprintf(text, sizeof text, "Question %u: where is my %s?", (unsigned)i, words[i % COUNT(words)]);
    lengths[i] = ids_of(llm, text, ids[i], 64);
    prompts[i] = ids[i];
    want[i] = NULL;
    CHECK_OK(parley_generate(llm, &prompts[i], &lengths[i], 1, &g, &want[i]));
  }
  parley_request_options_init(&ro);
  ro.return_logprobs = 1;
  for (i = 0; i < NCONC; ++i) {
    req[i] = NULL;
    CHECK_OK(parley_generate_submit(llm, &prompts[i], &lengths[i], 1, &g, &ro, &req[i]));
  }
  memset(ids, 0, sizeof ids); /* the submitted prompts were copied */
  for (i = 0; i < NCONC; ++i) {
    parley_generation_result *got = NULL;
    const float *lp = NULL;
    size_t n_lp = 0, len = 0;
    const int32_t *toks = NULL;
    float score = 0, sum = 0;
    if (!req[i]) continue;
    CHECK_OK(parley_request_wait(req[i], -1));
    CHECK_OK(parley_request_take_generation_result(req[i], &got));
    CHECK(got && want[i] && same_result(got, want[i]));
    CHECK_OK(parley_result_hypothesis(got, 0, 0, &toks, &len, &score));
    CHECK_OK(parley_result_hypothesis_logprobs(got, 0, 0, &lp, &n_lp));
    CHECK(n_lp == len);
    for (k = 0; k < n_lp; ++k) sum += lp[k];
    CHECK(sum == score); /* the same float terms, summed in the same order */
    /* A blocking result has none. */
    CHECK_STATUS(parley_result_hypothesis_logprobs(want[i], 0, 0, &lp, &n_lp), PARLEY_ERROR_NOT_FOUND);
    CHECK_STATUS(parley_result_hypothesis_logprobs(got, 1, 0, &lp, &n_lp), PARLEY_ERROR_NOT_FOUND);
    parley_result_free(got);
    parley_result_free(want[i]);
    parley_request_free(req[i]);
  }
  /* Beam search has per-token log-probabilities too: they sum to the
   * unnormalised score (score x length ^ length_penalty, here 1). */
  {
    parley_request *r = NULL;
    parley_generation_result *res = NULL;
    const float *lp = NULL;
    const int32_t *toks = NULL;
    size_t n_lp = 0, len = 0;
    float score = 0;
    double sum = 0;
    g.num_beams = 2;
    g.length_penalty = 1.0f;
    CHECK_OK(parley_generate_submit(llm, &prompts[0], &lengths[0], 1, &g, &ro, &r));
    CHECK_OK(parley_request_wait(r, -1));
    CHECK_OK(parley_request_take_generation_result(r, &res));
    CHECK_OK(parley_result_hypothesis(res, 0, 0, &toks, &len, &score));
    CHECK_OK(parley_result_hypothesis_logprobs(res, 0, 0, &lp, &n_lp));
    CHECK(n_lp == len && len > 0);
    for (k = 0; k < n_lp; ++k) sum += lp[k];
    CHECK(fabs(sum - (double)score * (double)len) <= 1e-5 * (double)len * (1.0 + fabs(sum)));
    parley_result_free(res);
    parley_request_free(r);
  }
}

/* NULL generation options are the model's defaults, with its max_length
 * counting the prompt as transformers does (the demo model's max_length is
 * its 1024 positions): a short prompt generates (it failed with "requested
 * length 1025" while max_length meant new tokens), a prompt 3 short of
 * max_length gets at most 3 new tokens, one of max_length - 1 exactly 1;
 * blocking and submitted alike. */
static void test_null_options_count_the_prompt(parley_model *llm) {
  static int32_t ids[1023];
  const int32_t *prompts[1];
  size_t len, i, k, n = 0;
  int64_t max_length = 0;
  CHECK_OK(parley_model_config_int(llm, "generation.max_length", &max_length));
  CHECK(max_length == 1024);
  prompts[0] = ids;
  for (i = 0; i < 1023; ++i) ids[i] = (int32_t)(100 + i % 50);
  for (k = 0; k < 3; ++k) {
    const size_t lengths[] = {16, 1021, 1023};
    const size_t most[] = {1024 - 16, 3, 1};
    parley_generation_result *res = NULL;
    parley_request *r = NULL;
    const int32_t *toks = NULL;
    len = lengths[k];
    CHECK_OK(parley_generate(llm, prompts, &len, 1, NULL, &res));
    if (res && parley_result_hypothesis(res, 0, 0, &toks, &n, NULL) == PARLEY_OK) CHECK(n >= 1 && n <= most[k]);
    if (k == 2) CHECK(n == 1);
    parley_result_free(res);
    res = NULL;
    CHECK_OK(parley_generate_submit(llm, prompts, &len, 1, NULL, NULL, &r));
    CHECK_OK(parley_request_wait(r, -1));
    CHECK_OK(parley_request_take_generation_result(r, &res));
    if (res && parley_result_hypothesis(res, 0, 0, &toks, &n, NULL) == PARLEY_OK) CHECK(n >= 1 && n <= most[k]);
    parley_result_free(res);
    parley_request_free(r);
  }
}

/* Cancellation mid-flight, a deadline, waiting with a timeout, freeing a running request. */
static void test_cancel_and_deadline(parley_model *llm, parley_model *mt) {
  int32_t ids[64];
  const int32_t *prompt = ids;
  size_t len = ids_of(llm, "Tell me a very long story about bicycles.", ids, 64), before = 0, after = 0;
  parley_generation_options g;
  parley_request_options ro;
  parley_request *r = NULL;
  struct gate gate;
  int32_t status = -1, done = -1;
  const char *message = NULL;
  parley_generation_result *res = NULL;

  /* A generation held in its on_token callback: wait times out, poll says 0,
   * status says BUSY, take says BUSY; then it is cancelled and ends CANCELLED. */
  parley_generation_options_init(llm, &g);
  g.max_new_tokens = 64;
  g.min_new_tokens = 32; /* no EOS before the gate */
  g.do_sample = 0;
  gate_init(&gate);
  g.on_token = gate_on_token;
  g.user_data = &gate;
  CHECK_OK(parley_generate_submit(llm, &prompt, &len, 1, &g, NULL, &r));
  if (r) {
    if (!gate_wait_reached(&gate, r)) fprintf(stderr, "the request ended before its 2nd callback\n");
    CHECK_STATUS(parley_request_wait(r, 20), PARLEY_ERROR_TIMEOUT);
    CHECK_OK(parley_request_poll(r, &done));
    CHECK(done == 0);
    CHECK_OK(parley_request_status(r, &status, &message));
    CHECK(status == PARLEY_ERROR_BUSY);
    CHECK_STATUS(parley_request_take_generation_result(r, &res), PARLEY_ERROR_BUSY);
    CHECK_OK(parley_request_cancel(r));
    gate_release(&gate);
    CHECK_OK(parley_request_wait(r, -1));
    CHECK_OK(parley_request_status(r, &status, &message));
    CHECK(status == PARLEY_ERROR_CANCELLED && message && strstr(message, "cancelled"));
    CHECK_STATUS(parley_request_take_generation_result(r, &res), PARLEY_ERROR_CANCELLED);
    CHECK_OK(parley_request_cancel(r)); /* after the end: harmless */
    parley_request_free(r);
  }
  gate_destroy(&gate);

  /* A deadline passes while the request runs (each token takes 10 ms in
   * the callback; the deadline is 5 ms): TIMEOUT, whichever step sees it. */
  parley_request_options_init(&ro);
  ro.deadline_ms = 5;
  g.on_token = slow_on_token;
  g.user_data = NULL;
  r = NULL;
  CHECK_OK(parley_generate_submit(llm, &prompt, &len, 1, &g, &ro, &r));
  if (r) {
    CHECK_OK(parley_request_wait(r, -1));
    CHECK_OK(parley_request_status(r, &status, &message));
    CHECK(status == PARLEY_ERROR_TIMEOUT && message && strstr(message, "deadline"));
    parley_request_free(r);
  }

  /* Freeing a running request cancels it and waits (no leak, no hang). */
  g.on_token = NULL;
  g.user_data = NULL;
  r = NULL;
  CHECK_OK(parley_generate_submit(llm, &prompt, &len, 1, &g, NULL, &r));
  parley_request_free(r);

  /* A chat turn cancelled mid-reply leaves the conversation unchanged. */
  {
    parley_chat_session *s = NULL;
    parley_chat_options o;
    parley_generation_options cg;
    chat_options(llm, &cg, &o);
    cg.max_new_tokens = 64;
    cg.min_new_tokens = 32;
    gate_init(&gate);
    o.on_text = gate_on_text;
    o.user_data = &gate;
    CHECK_OK(parley_chat_session_create(llm, kSystem, &s));
    CHECK_OK(parley_chat_append(s, PARLEY_ROLE_USER, kTurns[0]));
    CHECK_OK(parley_chat_message_count(s, &before));
    r = NULL;
    CHECK_OK(parley_chat_submit(s, &o, NULL, &r));
    if (r) {
      parley_request *other = NULL;
      char *reply = NULL;
      if (!gate_wait_reached(&gate, r)) fprintf(stderr, "the request ended before its 2nd callback\n");
      /* The session is held by the request meanwhile. */
      CHECK_STATUS(parley_chat_append(s, PARLEY_ROLE_USER, "x"), PARLEY_ERROR_BUSY);
      CHECK_STATUS(parley_chat_submit(s, &o, NULL, &other), PARLEY_ERROR_BUSY);
      CHECK(other == NULL);
      CHECK_OK(parley_request_cancel(r));
      gate_release(&gate);
      CHECK_OK(parley_request_wait(r, -1));
      CHECK_OK(parley_request_status(r, &status, &message));
      CHECK(status == PARLEY_ERROR_CANCELLED);
      CHECK_STATUS(parley_request_take_reply(r, &reply), PARLEY_ERROR_CANCELLED);
      CHECK(reply == NULL);
      parley_request_free(r);
    }
    CHECK_OK(parley_chat_message_count(s, &after));
    CHECK(after == before);
    parley_chat_session_free(s);
    gate_destroy(&gate);
  }

  /* Translation can be cancelled between decoding steps too. */
  {
    const char *text = "Das Fahrrad hat einen platten Reifen und die Kette ist gerissen.";
    parley_translation_options to;
    parley_generation_options tg;
    parley_translation_result *tr = NULL;
    parley_translation_options_init(&to);
    parley_generation_options_init(mt, &tg);
    tg.num_beams = 1;
    tg.max_new_tokens = 64;
    tg.min_new_tokens = 32;
    to.generation = &tg;
    gate_init(&gate);
    to.on_text = gate_on_translation;
    to.user_data = &gate;
    r = NULL;
    CHECK_OK(parley_translate_submit(mt, &text, NULL, 1, &to, NULL, &r));
    if (r) {
      if (!gate_wait_reached(&gate, r)) fprintf(stderr, "the request ended before its 2nd callback\n");
      CHECK_OK(parley_request_cancel(r));
      gate_release(&gate);
      CHECK_OK(parley_request_wait(r, -1));
      CHECK_OK(parley_request_status(r, &status, &message));
      CHECK(status == PARLEY_ERROR_CANCELLED);
      CHECK_STATUS(parley_request_take_translation_result(r, &tr), PARLEY_ERROR_CANCELLED);
      parley_request_free(r);
    }
    gate_destroy(&gate);
    /* ... and stopped by a deadline (each streamed piece takes 10 ms). */
    to.on_text = slow_on_translation;
    to.user_data = NULL;
    parley_request_options_init(&ro);
    ro.deadline_ms = 5;
    r = NULL;
    CHECK_OK(parley_translate_submit(mt, &text, NULL, 1, &to, &ro, &r));
    if (r) {
      CHECK_OK(parley_request_wait(r, -1));
      CHECK_OK(parley_request_status(r, &status, &message));
      CHECK(status == PARLEY_ERROR_TIMEOUT && message && strstr(message, "deadline"));
      CHECK_STATUS(parley_request_take_translation_result(r, &tr), PARLEY_ERROR_TIMEOUT);
      CHECK(tr == NULL);
      parley_request_free(r);
    }
  }
}

/* Translation: submitted = blocking (greedy and beam), streaming per hypothesis. */
struct tstream {
  char partial[4][1024];
  char final[4][1024];
  int finals[4], partials, not_prefix;
};
static int32_t on_translation(void *user, size_t t, size_t h, const char *text, size_t n, int32_t final) {
  struct tstream *s = (struct tstream *)user;
  if (t != 0 || h >= 4 || n >= 1024) return 0;
  if (final) {
    memcpy(s->final[h], text, n);
    s->final[h][n] = 0;
    s->finals[h]++;
  } else {
    /* The text so far extends the previous partial text. */
    if (strncmp(s->partial[h], text, strlen(s->partial[h])) != 0) s->not_prefix++;
    memcpy(s->partial[h], text, n);
    s->partial[h][n] = 0;
    s->partials++;
  }
  return 0;
}

static void test_translate(parley_model *mt) {
  const char *texts[] = {"Mein Fahrrad hat einen platten Reifen.", "Wann öffnet der Laden?"};
  size_t lengths[2], beams, i, h;
  lengths[0] = strlen(texts[0]);
  lengths[1] = strlen(texts[1]);
  for (beams = 1; beams <= 4; beams += 3) {
    parley_translation_options to;
    parley_generation_options tg;
    parley_translation_result *want = NULL, *got = NULL;
    parley_request *r = NULL;
    struct tstream st;
    size_t n = 0, n2 = 0;
    memset(&st, 0, sizeof st);
    parley_translation_options_init(&to);
    parley_generation_options_init(mt, &tg);
    tg.num_beams = beams;
    tg.num_return_sequences = beams == 1 ? 1 : 2;
    to.generation = &tg;
    CHECK_OK(parley_translate(mt, texts, 2, &to, &want));
    to.on_text = on_translation;
    to.user_data = &st;
    CHECK_OK(parley_translate_submit(mt, texts, lengths, 2, &to, NULL, &r));
    if (!r || !want) continue;
    CHECK_OK(parley_request_wait(r, -1));
    CHECK_STATUS(parley_request_take_generation_result(r, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_OK(parley_request_take_translation_result(r, &got));
    CHECK_OK(parley_translation_result_count(got, &n));
    CHECK(n == 2);
    for (i = 0; i < 2; ++i) {
      CHECK_OK(parley_translation_result_hypothesis_count(want, i, &n));
      CHECK_OK(parley_translation_result_hypothesis_count(got, i, &n2));
      CHECK(n == n2);
      for (h = 0; h < n && h < n2; ++h) {
        const char *a = NULL, *b = NULL;
        float sa = 0, sb = 1;
        CHECK_OK(parley_translation_result_text(want, i, h, &a, &sa));
        CHECK_OK(parley_translation_result_text(got, i, h, &b, &sb));
        CHECK(a && b && strcmp(a, b) == 0 && sa == sb);
        if (i == 0) {
          CHECK(st.finals[h] == 1 && b && strcmp(st.final[h], b) == 0); /* the final text, once */
          if (beams == 1) CHECK(b && strncmp(b, st.partial[h], strlen(st.partial[h])) == 0);
        }
      }
    }
    CHECK(st.not_prefix == 0);
    if (beams == 1)
      CHECK(st.partials >= 2); /* greedy streams as tokens come */
    else
      CHECK(st.partials == 0); /* beams only at the end */
    parley_translation_result_free(want);
    parley_translation_result_free(got);
    parley_request_free(r);
  }
  /* Token translation: the same ids as parley_translate_tokens. */
  {
    int32_t src[64];
    const int32_t *sp = src;
    size_t n = 0;
    parley_generation_result *want = NULL, *got = NULL;
    parley_request *r = NULL;
    CHECK_OK(parley_tokenize(mt, texts[0], 1, NULL, src, 64, &n));
    CHECK_OK(parley_translate_tokens(mt, &sp, &n, 1, NULL, NULL, NULL, &want));
    CHECK_OK(parley_translate_tokens_submit(mt, &sp, &n, 1, NULL, NULL, NULL, NULL, &r));
    CHECK_OK(parley_request_wait(r, -1));
    CHECK_OK(parley_request_take_generation_result(r, &got));
    CHECK(want && got && same_result(want, got));
    parley_result_free(want);
    parley_result_free(got);
    parley_request_free(r);
  }
}

/* The host frees a model (and its runtime) before the requests and sessions
 * that use it: they keep it alive and finish as if it had not been freed;
 * the last of them to go takes the model with it, also when that is a
 * request freeing itself in its completion callback on the engine thread
 * (the model is then deleted on a thread of its own: the engine cannot join
 * its own thread). Garbage-collected bindings free in no particular order. */
struct freed_first {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, ok;
};
static void free_self_last(void *user, parley_request *r, int32_t status) {
  struct freed_first *f = (struct freed_first *)user;
  parley_request_free(r); /* drops the last reference to the model */
  pthread_mutex_lock(&f->mu);
  f->done = 1;
  f->ok = status == PARLEY_OK;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
}
static void test_model_freed_first(void) {
  const char *texts[] = {"Mein Fahrrad hat einen platten Reifen.", "Wann öffnet der Laden?"};
  parley_runtime *rt = make_runtime();
  parley_model *mt = load(rt, "opus-mt-de-en.parley"), *llm = load(rt, "support-llama.parley");
  parley_translation_result *want = NULL;
  parley_request *r[4] = {NULL, NULL, NULL, NULL};
  parley_chat_session *s = NULL, *ref = NULL;
  parley_generation_options g;
  parley_chat_options co;
  char *reply = NULL, *want_reply = NULL;
  struct freed_first f;
  size_t i;
  CHECK_OK(parley_translate(mt, texts, 2, NULL, &want));
  for (i = 0; i < 4; ++i) CHECK_OK(parley_translate_submit(mt, texts, NULL, 2, NULL, NULL, &r[i]));
  chat_options(llm, &g, &co);
  CHECK_OK(parley_chat_session_create(llm, kSystem, &ref));
  CHECK_OK(parley_chat_append(ref, PARLEY_ROLE_USER, kTurns[1]));
  CHECK_OK(parley_chat_generate(ref, &co, &want_reply));
  parley_chat_session_free(ref);
  CHECK_OK(parley_chat_session_create(llm, kSystem, &s));
  parley_model_free(mt);  /* four requests still use it */
  parley_model_free(llm); /* a session still uses it */
  parley_runtime_free(rt);
  for (i = 0; i < 4; ++i) {
    parley_translation_result *got = NULL;
    const char *a = NULL, *b = NULL;
    if (!r[i]) continue;
    CHECK_OK(parley_request_wait(r[i], -1));
    CHECK_OK(parley_request_take_translation_result(r[i], &got));
    CHECK(got && want && parley_translation_result_text(want, 1, 0, &a, NULL) == PARLEY_OK &&
          parley_translation_result_text(got, 1, 0, &b, NULL) == PARLEY_OK && strcmp(a, b) == 0);
    parley_translation_result_free(got);
    parley_request_free(r[i]); /* the last one frees the model */
  }
  parley_translation_result_free(want);
  /* The session goes on with its freed model, and gives the same reply. */
  CHECK_OK(parley_chat_append(s, PARLEY_ROLE_USER, kTurns[1]));
  CHECK_OK(parley_chat_generate(s, &co, &reply));
  CHECK(reply && want_reply && strcmp(reply, want_reply) == 0);
  parley_string_free(reply);
  parley_string_free(want_reply);
  parley_chat_session_free(s); /* frees the model */

  /* The last reference dropped on the engine thread. */
  rt = make_runtime();
  mt = load(rt, "opus-mt-de-en.parley");
  parley_runtime_free(rt);
  memset(&f, 0, sizeof f);
  pthread_mutex_init(&f.mu, NULL);
  pthread_cond_init(&f.cv, NULL);
  {
    parley_request_options ro;
    parley_request *self = NULL;
    parley_request_options_init(&ro);
    ro.on_complete = free_self_last;
    ro.user_data = &f;
    pthread_mutex_lock(&f.mu);
    CHECK_OK(parley_translate_submit(mt, texts, NULL, 2, NULL, &ro, &self));
    parley_model_free(mt);
    while (self && !f.done) pthread_cond_wait(&f.cv, &f.mu);
    pthread_mutex_unlock(&f.mu);
  }
  CHECK(f.ok);
  pthread_mutex_destroy(&f.mu);
  pthread_cond_destroy(&f.cv);
}

/* Misuse: NULL handles and outputs, bad struct_size, unknown option values,
 * takes of another kind and twice, a failing request. */
static void test_misuse(parley_model *llm, parley_model *mt) {
  int32_t ids[8] = {1, 2, 3}, bad_ids[1] = {1 << 30};
  const int32_t *prompt = ids, *bad = bad_ids;
  size_t len = 3, one = 1;
  parley_request *r = NULL;
  parley_request_options ro;
  int32_t done = 0, status = 0;
  const char *message = NULL;
  char *reply = NULL;
  const float *lp = NULL;
  size_t n = 0;
  parley_generation_result *res = NULL;
  const char *text = "Hallo";

  CHECK_STATUS(parley_request_options_defaults(NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_request_options_init(NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_generate_submit(NULL, &prompt, &len, 1, NULL, NULL, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_generate_submit(llm, &prompt, &len, 1, NULL, NULL, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_generate_submit(llm, NULL, &len, 1, NULL, NULL, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_generate_submit(llm, &prompt, &len, 0, NULL, NULL, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_chat_submit(NULL, NULL, NULL, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_translate_submit(mt, NULL, NULL, 1, NULL, NULL, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_translate_submit(mt, &text, NULL, 0, NULL, NULL, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_translate_tokens_submit(NULL, &prompt, &len, 1, NULL, NULL, NULL, NULL, &r),
               PARLEY_ERROR_INVALID_ARGUMENT);
  parley_request_options_init(&ro);
  ro.struct_size = 0;
  CHECK_STATUS(parley_generate_submit(llm, &prompt, &len, 1, NULL, &ro, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "struct_size") != NULL);
  ro.struct_size = sizeof ro + 64;
  CHECK_STATUS(parley_generate_submit(llm, &prompt, &len, 1, NULL, &ro, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  parley_request_options_init(&ro);
  ro.deadline_ms = -1;
  CHECK_STATUS(parley_generate_submit(llm, &prompt, &len, 1, NULL, &ro, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "deadline_ms") != NULL);
  parley_request_options_init(&ro);
  ro.return_logprobs = 2;
  CHECK_STATUS(parley_generate_submit(llm, &prompt, &len, 1, NULL, &ro, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "return_logprobs") != NULL);
  {
    parley_generation_options g;
    parley_generation_options_init(llm, &g);
    g.struct_size = 3;
    CHECK_STATUS(parley_generate_submit(llm, &prompt, &len, 1, &g, NULL, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  }
  CHECK(r == NULL); /* nothing written on failure */

  CHECK_STATUS(parley_request_wait(NULL, 0), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_request_poll(NULL, &done), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_request_cancel(NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_request_status(NULL, &status, &message), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_request_take_reply(NULL, &reply), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_request_reply_logprobs(NULL, &lp, &n), PARLEY_ERROR_INVALID_ARGUMENT);
  parley_request_free(NULL);

  /* A request whose blocking call fails carries that call's status and message. */
  {
    parley_generation_options g;
    parley_generation_options_init(llm, &g);
    g.max_new_tokens = 4;
    CHECK_OK(parley_generate_submit(llm, &bad, &one, 1, &g, NULL, &r));
  }
  if (r) {
    CHECK_STATUS(parley_request_poll(r, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_OK(parley_request_wait(r, -1));
    CHECK_OK(parley_request_status(r, &status, &message));
    CHECK(status == PARLEY_ERROR_INVALID_ARGUMENT && message && strstr(message, "vocabulary"));
    CHECK_STATUS(parley_request_take_generation_result(r, &res), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "vocabulary") != NULL);
    /* Of another kind. */
    CHECK_STATUS(parley_request_take_reply(r, &reply), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "not a chat turn") != NULL);
    CHECK_STATUS(parley_request_reply_logprobs(r, &lp, &n), PARLEY_ERROR_INVALID_ARGUMENT);
    parley_request_free(r);
  }
  /* Takes of the wrong kind, with valid outputs, refused while running or not. */
  {
    parley_translation_result *tr = NULL;
    parley_generation_result *gr = NULL;
    parley_request *t = NULL;
    CHECK_OK(parley_translate_submit(mt, &text, NULL, 1, NULL, NULL, &t));
    if (t) {
      CHECK_STATUS(parley_request_take_generation_result(t, &gr), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK(strstr(parley_last_error(), "text translation") != NULL);
      CHECK_STATUS(parley_request_take_reply(t, &reply), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK_OK(parley_request_wait(t, -1));
      CHECK_STATUS(parley_request_take_generation_result(t, &gr), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK_STATUS(parley_request_take_translation_result(t, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK_OK(parley_request_take_translation_result(t, &tr));
      CHECK(tr != NULL);
      CHECK_STATUS(parley_request_take_translation_result(t, &tr), PARLEY_ERROR_NOT_FOUND); /* double take */
      CHECK(gr == NULL && reply == NULL);
      parley_translation_result_free(tr);
      parley_request_free(t);
    }
  }
  /* Option structs of a wrong size are refused at submission. */
  {
    parley_chat_session *s = NULL;
    parley_chat_options co;
    parley_translation_options to;
    r = NULL;
    CHECK_OK(parley_chat_session_create(llm, NULL, &s));
    CHECK_OK(parley_chat_append(s, PARLEY_ROLE_USER, "Hi"));
    parley_chat_options_init(&co);
    co.struct_size = 1;
    CHECK_STATUS(parley_chat_submit(s, &co, NULL, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "struct_size") != NULL);
    co.struct_size = sizeof co + 8;
    CHECK_STATUS(parley_chat_submit(s, &co, NULL, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(r == NULL);
    /* The refused submission did not keep the session. */
    CHECK_OK(parley_chat_append(s, PARLEY_ROLE_USER, "Hello?"));
    parley_chat_session_free(s);
    parley_translation_options_init(&to);
    to.struct_size = 2;
    CHECK_STATUS(parley_translate_submit(mt, &text, NULL, 1, &to, NULL, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "struct_size") != NULL);
    CHECK(r == NULL);
  }
  /* Logprobs not requested. */
  r = NULL;
  {
    parley_chat_session *s = NULL;
    CHECK_OK(parley_chat_session_create(llm, NULL, &s));
    CHECK_OK(parley_chat_append(s, PARLEY_ROLE_USER, "Hi"));
    CHECK_OK(parley_chat_submit(s, NULL, NULL, &r));
    parley_chat_session_free(s); /* refused while the request holds it */
    CHECK(strstr(parley_last_error(), "PARLEY_ERROR_BUSY") != NULL);
    CHECK_OK(parley_request_wait(r, -1));
    CHECK_STATUS(parley_request_reply_logprobs(r, &lp, &n), PARLEY_ERROR_NOT_FOUND);
    parley_request_free(r); /* the reply is freed with it */
    parley_chat_session_free(s);
  }
}

/* Eight chats at once, each its own session, submitted from one thread:
 * every reply equals the blocking reply of the same conversation. */
static void test_concurrent_chats(parley_model *llm) {
  parley_chat_session *s[8];
  parley_request *r[8];
  char *want[8];
  parley_generation_options g;
  parley_chat_options o;
  size_t i;
  chat_options(llm, &g, &o);
  for (i = 0; i < 8; ++i) {
    parley_chat_session *ref = NULL;
    char text[64];
    snprintf(text, sizeof text, "Do you sell %u bells?", (unsigned)(i + 2));
    want[i] = NULL;
    CHECK_OK(parley_chat_session_create(llm, kSystem, &ref));
    CHECK_OK(parley_chat_append(ref, PARLEY_ROLE_USER, text));
    CHECK_OK(parley_chat_generate(ref, &o, &want[i]));
    parley_chat_session_free(ref);
    s[i] = NULL;
    r[i] = NULL;
    CHECK_OK(parley_chat_session_create(llm, kSystem, &s[i]));
    CHECK_OK(parley_chat_append(s[i], PARLEY_ROLE_USER, text));
  }
  for (i = 0; i < 8; ++i) CHECK_OK(parley_chat_submit(s[i], &o, NULL, &r[i]));
  for (i = 0; i < 8; ++i) {
    char *got = NULL;
    CHECK_OK(parley_request_wait(r[i], -1));
    CHECK_OK(parley_request_take_reply(r[i], &got));
    CHECK(got && want[i] && strcmp(got, want[i]) == 0);
    parley_string_free(got);
    parley_string_free(want[i]);
    parley_request_free(r[i]);
    parley_chat_session_free(s[i]);
  }
}

/* Fire and forget: each request takes its result and frees itself in its
 * completion callback; one frees itself from its first streamed token (that
 * cancels it; its completion callback still comes, with CANCELLED). Run
 * under ASan in CI: a double free or a leak of a self-freed request fails. */
#define NSELF 16
struct self_free {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int completions, ok, cancelled, results, other;
};
static void free_in_callback(void *user, parley_request *r, int32_t status) {
  struct self_free *f = (struct self_free *)user;
  parley_generation_result *res = NULL;
  int got = status == PARLEY_OK && parley_request_take_generation_result(r, &res) == PARLEY_OK && res != NULL;
  parley_result_free(res);
  parley_request_free(r); /* the worker frees it after this callback */
  pthread_mutex_lock(&f->mu);
  f->completions++;
  f->ok += status == PARLEY_OK;
  f->cancelled += status == PARLEY_ERROR_CANCELLED;
  f->results += got;
  f->other += status != PARLEY_OK && status != PARLEY_ERROR_CANCELLED;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
}
static parley_request *g_self_freeing; /* under self_free.mu */
static int32_t free_on_first_token(void *user, size_t b, size_t s, int32_t token) {
  struct self_free *f = (struct self_free *)user;
  parley_request *r;
  (void)b, (void)s, (void)token;
  pthread_mutex_lock(&f->mu); /* held by the submitting thread until the handle is stored */
  r = g_self_freeing;
  g_self_freeing = NULL;
  pthread_mutex_unlock(&f->mu);
  if (r) parley_request_free(r); /* cancels it; freed after its completion callback */
  return 0;
}
static void test_free_from_callback(parley_model *llm) {
  int32_t ids[64];
  const int32_t *prompt = ids;
  size_t len = ids_of(llm, "Which bell is the loudest?", ids, 64), i;
  parley_generation_options g;
  parley_request_options ro;
  struct self_free f;
  struct timespec until;
  int waited_out = 0;
  memset(&f, 0, sizeof f);
  pthread_mutex_init(&f.mu, NULL);
  pthread_cond_init(&f.cv, NULL);
  parley_generation_options_init(llm, &g);
  g.max_new_tokens = 8;
  g.do_sample = 0;
  parley_request_options_init(&ro);
  ro.on_complete = free_in_callback;
  ro.user_data = &f;
  for (i = 0; i < NSELF; ++i) {
    parley_request *r = NULL;
    CHECK_OK(parley_generate_submit(llm, &prompt, &len, 1, &g, &ro, &r)); /* r is not used again */
  }
  /* The one freed from its stream: the handle is published before its first
   * token can be streamed (the token callback waits on the mutex). */
  g.max_new_tokens = 32;
  g.min_new_tokens = 16;
  g.on_token = free_on_first_token;
  g.user_data = &f;
  pthread_mutex_lock(&f.mu);
  CHECK_OK(parley_generate_submit(llm, &prompt, &len, 1, &g, &ro, &g_self_freeing));
  pthread_mutex_unlock(&f.mu);
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 120;
  pthread_mutex_lock(&f.mu);
  while (f.completions < NSELF + 1 && !waited_out) waited_out = pthread_cond_timedwait(&f.cv, &f.mu, &until) != 0;
  CHECK(f.completions == NSELF + 1);
  CHECK(f.ok == NSELF && f.results == NSELF);
  CHECK(f.cancelled == 1 && f.other == 0);
  pthread_mutex_unlock(&f.mu);
  /* The workers delete the requests right after the callbacks return. */
  sleep_ms(50);
  pthread_cond_destroy(&f.cv);
  pthread_mutex_destroy(&f.mu);
}

/* Eight threads submit eight generations each and, at random (fixed seed),
 * cancel some at once, cancel some a little later, give some a 1 ms
 * deadline, free some while running, and let the rest finish. Every
 * finished request equals the blocking result; every untouched one
 * finishes OK. Checked on the main thread afterwards (CHECK is not
 * thread-safe). Under TSan in CI. */
#define NTHREADS 8
#define PER_THREAD 8
#define NPROMPTS 4
struct stress_shared {
  parley_model *llm;
  const int32_t *prompts[NPROMPTS];
  size_t lengths[NPROMPTS];
  parley_generation_result *want[NPROMPTS];
  parley_generation_options g;
};
struct stress_slot {
  int action; /* 0 run, 1 cancel at once, 2 cancel later, 3 1 ms deadline, 4 free while running */
  parley_status submitted, waited;
  int32_t status;
  int matches;
};
struct stress_thread {
  struct stress_shared *shared;
  uint32_t seed;
  struct stress_slot slot[PER_THREAD];
};
static uint32_t next_random(uint32_t *state) {
  *state = *state * 1664525u + 1013904223u;
  return *state >> 8;
}
static void *stress_worker(void *arg) {
  struct stress_thread *t = (struct stress_thread *)arg;
  struct stress_shared *sh = t->shared;
  parley_request *req[PER_THREAD];
  size_t k;
  for (k = 0; k < PER_THREAD; ++k) {
    struct stress_slot *sl = &t->slot[k];
    size_t p = next_random(&t->seed) % NPROMPTS;
    parley_request_options ro;
    parley_request_options_init(&ro);
    sl->action = (int)(next_random(&t->seed) % 5);
    if (sl->action == 3) ro.deadline_ms = 1;
    req[k] = NULL;
    sl->submitted = parley_generate_submit(sh->llm, &sh->prompts[p], &sh->lengths[p], 1, &sh->g, &ro, &req[k]);
    sl->matches = (int)p; /* the prompt, until checked */
    if (sl->submitted != PARLEY_OK) continue;
    if (sl->action == 1) parley_request_cancel(req[k]);
    if (sl->action == 4) {
      parley_request_free(req[k]);
      req[k] = NULL;
    }
  }
  for (k = 0; k < PER_THREAD; ++k) {
    struct stress_slot *sl = &t->slot[k];
    parley_generation_result *got = NULL;
    if (!req[k]) continue;
    if (sl->action == 2) {
      sleep_ms((long)(next_random(&t->seed) % 4));
      parley_request_cancel(req[k]);
    }
    sl->waited = parley_request_wait(req[k], -1);
    parley_request_status(req[k], &sl->status, NULL);
    if (sl->status == PARLEY_OK && parley_request_take_generation_result(req[k], &got) == PARLEY_OK)
      sl->matches = same_result(got, sh->want[sl->matches]);
    else
      sl->matches = -1;
    parley_result_free(got);
    parley_request_free(req[k]);
  }
  return NULL;
}
static void test_threads_submit_cancel(parley_model *llm) {
  static const char *const texts[NPROMPTS] = {"Is the shop open on Sunday?", "How much is a new chain?",
                                              "Can you fix brakes today?", "Do you rent tandem bikes?"};
  int32_t ids[NPROMPTS][64];
  struct stress_shared sh;
  struct stress_thread th[NTHREADS];
  pthread_t tid[NTHREADS];
  const char *env = getenv("PARLEY_TEST_SEED");
  uint32_t seed = env ? (uint32_t)strtoul(env, NULL, 10) : 12345u;
  size_t i, k, finished_ok = 0, stopped = 0, cancelled_at_once = 0;
  printf("test_threads_submit_cancel: seed %u (PARLEY_TEST_SEED overrides)\n", (unsigned)seed);
  memset(&sh, 0, sizeof sh);
  sh.llm = llm;
  parley_generation_options_init(llm, &sh.g);
  sh.g.max_new_tokens = 16;
  sh.g.do_sample = 0;
  for (i = 0; i < NPROMPTS; ++i) {
    sh.lengths[i] = ids_of(llm, texts[i], ids[i], 64);
    sh.prompts[i] = ids[i];
    CHECK_OK(parley_generate(llm, &sh.prompts[i], &sh.lengths[i], 1, &sh.g, &sh.want[i]));
  }
  for (i = 0; i < NTHREADS; ++i) {
    memset(&th[i], 0, sizeof th[i]);
    th[i].shared = &sh;
    th[i].seed = seed + (uint32_t)i * 7919u;
    CHECK(pthread_create(&tid[i], NULL, stress_worker, &th[i]) == 0);
  }
  for (i = 0; i < NTHREADS; ++i) pthread_join(tid[i], NULL);
  for (i = 0; i < NTHREADS; ++i)
    for (k = 0; k < PER_THREAD; ++k) {
      const struct stress_slot *sl = &th[i].slot[k];
      CHECK(sl->submitted == PARLEY_OK);
      if (sl->action == 4) continue; /* freed while running: nothing to look at */
      CHECK(sl->waited == PARLEY_OK);
      if (sl->status == PARLEY_OK) {
        CHECK(sl->matches == 1);
        ++finished_ok;
      } else {
        ++stopped;
      }
      if (sl->action == 0) CHECK(sl->status == PARLEY_OK);
      /* Cancelled right after submission: it may still have finished first
       * (a request that finished keeps its result). */
      if (sl->action == 1 || sl->action == 2) CHECK(sl->status == PARLEY_OK || sl->status == PARLEY_ERROR_CANCELLED);
      if (sl->action == 1 && sl->status == PARLEY_ERROR_CANCELLED) ++cancelled_at_once;
      if (sl->action == 3) CHECK(sl->status == PARLEY_OK || sl->status == PARLEY_ERROR_TIMEOUT);
    }
  /* Whether a cancel right after submission beats the request is a race:
   * reported, not checked (the deterministic cancel is tested above). */
  printf("test_threads_submit_cancel: %u finished, %u cancelled or timed out, %u cancelled at once\n",
         (unsigned)finished_ok, (unsigned)stopped, (unsigned)cancelled_at_once);
  for (i = 0; i < NPROMPTS; ++i) parley_result_free(sh.want[i]);
}

/* Every callback of an asynchronous request runs on its model's serving
 * engine thread: four generations, a chat turn and two translations at once
 * see one thread per model (not one per request, not the caller's). On that
 * thread a blocking call through an engine and a wait for an unfinished
 * request are refused with BUSY (they would wait for the thread itself);
 * freeing another unfinished request there cancels it, and its completion
 * callback runs before the free returns. */
#define NTHREAD_REQ 4
struct thread_log {
  pthread_mutex_t mu;
  pthread_t first;
  int calls, others; /* callbacks; those on another thread than the first */
};
static void thread_log_init(struct thread_log *t) {
  pthread_mutex_init(&t->mu, NULL);
  t->calls = t->others = 0;
}
static void thread_log_note(struct thread_log *t) {
  pthread_mutex_lock(&t->mu);
  if (t->calls++ == 0)
    t->first = pthread_self();
  else if (!pthread_equal(t->first, pthread_self()))
    ++t->others;
  pthread_mutex_unlock(&t->mu);
}
static int32_t log_on_token(void *user, size_t b, size_t s, int32_t token) {
  (void)b, (void)s, (void)token;
  thread_log_note((struct thread_log *)user);
  return 0;
}
static int32_t log_on_text(void *user, const char *text, size_t length) {
  (void)text, (void)length;
  thread_log_note((struct thread_log *)user);
  return 0;
}
static int32_t log_on_translation(void *user, size_t t, size_t h, const char *text, size_t n, int32_t final) {
  (void)t, (void)h, (void)text, (void)n, (void) final;
  thread_log_note((struct thread_log *)user);
  return 0;
}
static void log_on_complete(void *user, parley_request *r, int32_t status) {
  (void)r, (void)status;
  thread_log_note((struct thread_log *)user);
}

/* What the first token callback of a request may and may not do there. */
struct inside_engine {
  parley_model *llm;
  parley_request *other; /* a long request still running: waited on, then freed */
  pthread_t thread, other_completed_on;
  int ran, other_completed;
  parley_status blocking, wait_other, poll_other;
  int32_t other_done, other_status;
  char blocking_message[512];
};
static void other_on_complete(void *user, parley_request *r, int32_t status) {
  struct inside_engine *x = (struct inside_engine *)user;
  (void)r;
  x->other_completed = 1;
  x->other_status = status;
  x->other_completed_on = pthread_self();
}
static int32_t inside_on_token(void *user, size_t b, size_t s, int32_t token) {
  struct inside_engine *x = (struct inside_engine *)user;
  int32_t ids[4] = {1, 2, 3, 4};
  const int32_t *prompt = ids;
  size_t len = 4;
  parley_generation_options g;
  parley_generation_result *res = NULL;
  (void)b, (void)s, (void)token;
  if (x->ran++) return 0;
  x->thread = pthread_self();
  parley_generation_options_init(x->llm, &g);
  g.max_new_tokens = 2;
  x->blocking = parley_generate(x->llm, &prompt, &len, 1, &g, &res);
  snprintf(x->blocking_message, sizeof x->blocking_message, "%s", parley_last_error());
  parley_result_free(res);
  x->wait_other = parley_request_wait(x->other, -1);
  x->poll_other = parley_request_poll(x->other, &x->other_done);
  parley_request_free(x->other); /* cancels it; its callback runs meanwhile */
  x->other = NULL;
  return 0;
}

/* Many streaming requests at once; the completion callback of the first to
 * finish frees a long one still running (cancelling it). The long one's
 * decoding goes on on the resume threads, which may all be waiting for
 * this very callback (each blocked in a streaming callback queued for the
 * engine thread): it must still end, CANCELLED, and so must the others. */
#define NFREE_OTHER 24
struct free_other {
  pthread_mutex_t mu;
  parley_request *victim; /* freed by the first completion that finds it */
  int victim_status, victim_done, completions, freed;
};
static void victim_complete(void *user, parley_request *r, int32_t status) {
  struct free_other *f = (struct free_other *)user;
  (void)r;
  f->victim_status = status; /* on the engine thread, inside the freeing callback */
  f->victim_done = 1;
}
static void free_victim_on_complete(void *user, parley_request *r, int32_t status) {
  struct free_other *f = (struct free_other *)user;
  parley_request *v;
  (void)r, (void)status;
  pthread_mutex_lock(&f->mu);
  f->completions++;
  v = f->victim;
  f->victim = NULL;
  pthread_mutex_unlock(&f->mu);
  if (v) {
    parley_request_free(v); /* waits for it to end, running its callbacks here */
    f->freed = 1;
  }
}
static int32_t count_token(void *user, size_t b, size_t s, int32_t token) {
  (void)user, (void)b, (void)s, (void)token;
  return 0;
}
static void test_free_other_from_completion(parley_model *llm) {
  struct free_other f;
  int32_t ids[64];
  const int32_t *prompt = ids;
  size_t len = ids_of(llm, "Tell me everything about returns and refunds.", ids, 64), i;
  parley_request *req[NFREE_OTHER];
  parley_generation_options lg, g;
  parley_request_options vo, ro;
  memset(&f, 0, sizeof f);
  pthread_mutex_init(&f.mu, NULL);
  parley_generation_options_init(llm, &lg);
  lg.max_new_tokens = 400;
  lg.min_new_tokens = 400; /* runs long unless cancelled */
  lg.on_token = count_token;
  parley_request_options_init(&vo);
  vo.on_complete = victim_complete;
  vo.user_data = &f;
  pthread_mutex_lock(&f.mu);
  CHECK_OK(parley_generate_submit(llm, &prompt, &len, 1, &lg, &vo, &f.victim));
  pthread_mutex_unlock(&f.mu);
  parley_generation_options_init(llm, &g);
  g.max_new_tokens = 6;
  g.on_token = count_token;
  parley_request_options_init(&ro);
  ro.on_complete = free_victim_on_complete;
  ro.user_data = &f;
  for (i = 0; i < NFREE_OTHER; ++i) {
    req[i] = NULL;
    CHECK_OK(parley_generate_submit(llm, &prompt, &len, 1, &g, &ro, &req[i]));
  }
  for (i = 0; i < NFREE_OTHER; ++i)
    if (req[i]) {
      CHECK_OK(parley_request_wait(req[i], -1));
      parley_request_free(req[i]);
    }
  CHECK(f.freed == 1 && f.victim_done == 1 && f.completions == NFREE_OTHER);
  CHECK(f.victim_status == PARLEY_ERROR_CANCELLED);
  pthread_mutex_destroy(&f.mu);
}

static void test_callbacks_on_engine_thread(parley_model *llm, parley_model *mt) {
  static const char *const texts[] = {"Mein Fahrrad hat einen platten Reifen.", "Wann öffnet der Laden?"};
  int32_t ids[NTHREAD_REQ][64];
  const int32_t *prompts[NTHREAD_REQ];
  size_t lengths[NTHREAD_REQ], i;
  parley_request *req[NTHREAD_REQ], *chat_req = NULL, *tr[2] = {NULL, NULL};
  parley_generation_options g;
  parley_request_options ro, tro;
  parley_translation_options to;
  parley_chat_options co;
  parley_chat_session *session = NULL;
  struct thread_log llm_log, mt_log;
  thread_log_init(&llm_log);
  thread_log_init(&mt_log);

  parley_generation_options_init(llm, &g);
  g.max_new_tokens = 8;
  g.on_token = log_on_token;
  g.user_data = &llm_log;
  parley_request_options_init(&ro);
  ro.on_complete = log_on_complete;
  ro.user_data = &llm_log;
  for (i = 0; i < NTHREAD_REQ; ++i) {
    char text[64];
    snprintf(text, sizeof text, "Order %u: where is it?", (unsigned)i);
    lengths[i] = ids_of(llm, text, ids[i], 64);
    prompts[i] = ids[i];
    req[i] = NULL;
    CHECK_OK(parley_generate_submit(llm, &prompts[i], &lengths[i], 1, &g, &ro, &req[i]));
  }
  CHECK_OK(parley_chat_session_create(llm, NULL, &session));
  if (session) {
    parley_chat_options_init(&co);
    co.on_text = log_on_text;
    co.user_data = &llm_log;
    CHECK_OK(parley_chat_append(session, PARLEY_ROLE_USER, "Hello, where is my order?"));
    CHECK_OK(parley_chat_submit(session, &co, &ro, &chat_req));
  }
  parley_translation_options_init(&to);
  to.on_text = log_on_translation;
  to.user_data = &mt_log;
  parley_request_options_init(&tro);
  tro.on_complete = log_on_complete;
  tro.user_data = &mt_log;
  for (i = 0; i < 2; ++i) CHECK_OK(parley_translate_submit(mt, &texts[i], NULL, 1, &to, &tro, &tr[i]));
  for (i = 0; i < NTHREAD_REQ; ++i)
    if (req[i]) {
      CHECK_OK(parley_request_wait(req[i], -1));
      parley_request_free(req[i]);
    }
  if (chat_req) {
    CHECK_OK(parley_request_wait(chat_req, -1));
    parley_request_free(chat_req);
  }
  for (i = 0; i < 2; ++i)
    if (tr[i]) {
      CHECK_OK(parley_request_wait(tr[i], -1));
      parley_request_free(tr[i]);
    }
  /* 4 x (8 tokens + completion), the chat's pieces and completion; 2 x (final text + completion). */
  CHECK(llm_log.calls >= NTHREAD_REQ * 9 + 2);
  CHECK(mt_log.calls >= 4);
  CHECK(llm_log.others == 0);
  CHECK(mt_log.others == 0);
  CHECK(!pthread_equal(llm_log.first, pthread_self()));
  CHECK(!pthread_equal(llm_log.first, mt_log.first)); /* each model its own engine */
  if (llm_log.others || mt_log.others)
    fprintf(stderr, "callbacks on other threads: llm %d of %d, mt %d of %d\n", llm_log.others, llm_log.calls,
            mt_log.others, mt_log.calls);
  parley_chat_session_free(session);

  /* Inside a callback on the engine thread. */
  {
    struct inside_engine x;
    parley_request *r = NULL;
    int32_t long_ids[64];
    const int32_t *long_prompt = long_ids;
    size_t long_len = ids_of(llm, "Tell me everything about returns.", long_ids, 64);
    parley_generation_options lg;
    parley_request_options oro;
    memset(&x, 0, sizeof x);
    x.llm = llm;
    parley_generation_options_init(llm, &lg);
    lg.max_new_tokens = 200;
    lg.min_new_tokens = 200; /* no EOS before: it runs 200 tokens unless cancelled */
    parley_request_options_init(&oro);
    oro.on_complete = other_on_complete;
    oro.user_data = &x;
    CHECK_OK(parley_generate_submit(llm, &long_prompt, &long_len, 1, &lg, &oro, &x.other));
    g.max_new_tokens = 4;
    g.on_token = inside_on_token;
    g.user_data = &x;
    CHECK_OK(parley_generate_submit(llm, &prompts[0], &lengths[0], 1, &g, NULL, &r));
    if (r) {
      CHECK_OK(parley_request_wait(r, -1));
      parley_request_free(r);
    }
    CHECK(x.ran >= 1);
    CHECK(x.blocking == PARLEY_ERROR_BUSY);
    CHECK(strstr(x.blocking_message, "serving engine's thread") != NULL);
    CHECK(x.wait_other == PARLEY_ERROR_BUSY);
    CHECK(x.poll_other == PARLEY_OK && x.other_done == 0);
    CHECK(x.other_completed && x.other_status == PARLEY_ERROR_CANCELLED);
    CHECK(x.other_completed && pthread_equal(x.other_completed_on, x.thread));
    if (x.blocking != PARLEY_ERROR_BUSY) fprintf(stderr, "blocking call inside: %s\n", x.blocking_message);
    if (x.other) parley_request_free(x.other);
  }
}

int main(void) {
  parley_runtime *rt = make_runtime();
  parley_model *llm = load(rt, "support-llama.parley");
  parley_model *mt = load(rt, "opus-mt-de-en.parley");
  /* First: the model it frees on a thread of its own is gone long before the exit. */
  test_model_freed_first();
  test_misuse(llm, mt);
  test_chat_equals_blocking(llm);
  test_chat_alternatives_and_logit_bias(llm);
  test_chat_reply_progress(llm);
  test_generate_concurrent(llm);
  test_null_options_count_the_prompt(llm);
  test_translate(mt);
  test_cancel_and_deadline(llm, mt);
  test_concurrent_chats(llm);
  test_free_from_callback(llm);
  test_callbacks_on_engine_thread(llm, mt);
  test_free_other_from_completion(llm);
  test_threads_submit_cancel(llm);
  parley_model_free(llm);
  parley_model_free(mt);
  parley_runtime_free(rt);
  printf("test_request_c: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
