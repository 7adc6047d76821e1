/* Asynchronous requests past the worker limit (PARLEY_REQUEST_WORKERS,
 * set to 2 here before the first submit): requests beyond the workers wait
 * in a queue instead of being refused or starting threads of their own.
 *  - 40 generations submitted at once all finish, each with the tokens of
 *    the blocking call;
 *  - with both workers held in a streaming callback, queued requests do not
 *    start; a queued request that is cancelled ends at once (CANCELLED, its
 *    completion callback run) while the workers are still held, and so do
 *    one that is freed and one whose deadline passes (TIMEOUT); the others
 *    start once the workers are released and give the blocking call's
 *    tokens;
 *  - eight threads submitting, cancelling and freeing (also from the
 *    completion callback) at random against the two workers.
 * The model runs with serving_engine = 0, so that callbacks run on the
 * request's worker and a held callback holds exactly one worker.
 * Then, with the serving engine on, the two workers do not bound how many
 * requests run: a generation or chat turn waiting for the engine holds no
 * thread, so 40 generations (and then 16 chat turns) submitted at once
 * step together (a step of more than 2 rows) and each gives the blocking
 * call's result.
 * Uses the demo chat model (PARLEY_DEMO_MODELS). Run through ctest; also
 * under TSan in CI. */
#include <parley/parley.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "c_checks.h"

#define CHECK_OK(call) CHECK_STATUS(call, PARLEY_OK)
#define NREQ 40
#define MAXTOK 64

static parley_model *load_engine_off(parley_runtime *rt) {
  char path[4096];
  parley_model *m = NULL;
  parley_model_options o;
  const char *dir = getenv("PARLEY_DEMO_MODELS");
  snprintf(path, sizeof path, "%s/support-llama.parley", dir ? dir : ".");
  parley_model_options_init(&o);
  o.serving_engine = 0;
  if (parley_model_load_file(rt, path, &o, &m) != PARLEY_OK) {
    fprintf(stderr, "load %s: %s\n", path, parley_last_error());
    exit(1);
  }
  return m;
}

/* Holds every worker whose request streams through it until released. */
struct hold {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int inside, released;
};
static struct hold g_hold = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static int32_t hold_on_token(void *user, size_t b, size_t s, int32_t token) {
  (void)user, (void)b, (void)s, (void)token;
  pthread_mutex_lock(&g_hold.mu);
  ++g_hold.inside;
  pthread_cond_broadcast(&g_hold.cv);
  while (!g_hold.released) pthread_cond_wait(&g_hold.cv, &g_hold.mu);
  pthread_mutex_unlock(&g_hold.mu);
  return 0;
}

/* Completion callbacks seen, by status. */
static pthread_mutex_t g_done_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_completed, g_cancelled;
static void on_complete(void *user, parley_request *r, int32_t status) {
  (void)user, (void)r;
  pthread_mutex_lock(&g_done_mu);
  ++g_completed;
  if (status == PARLEY_ERROR_CANCELLED) ++g_cancelled;
  pthread_mutex_unlock(&g_done_mu);
}

static int same_tokens(const parley_generation_result *x, const parley_generation_result *y) {
  const int32_t *t1 = NULL, *t2 = NULL;
  size_t l1 = 0, l2 = 0;
  float s1 = 0, s2 = 0;
  if (parley_result_hypothesis(x, 0, 0, &t1, &l1, &s1) || parley_result_hypothesis(y, 0, 0, &t2, &l2, &s2)) return 0;
  return l1 == l2 && memcmp(t1, t2, l1 * sizeof *t1) == 0;
}

static int32_t g_ids[NREQ][MAXTOK];
static const int32_t *g_prompts[NREQ];
static size_t g_lengths[NREQ];
static parley_generation_result *g_want[NREQ];

static void make_prompts(parley_model *llm, const parley_generation_options *g) {
  size_t i;
  for (i = 0; i < NREQ; ++i) {
    char text[128];
    snprintf(text, sizeof text, "Question %u: where is my order %u?", (unsigned)i, 9000000u + (unsigned)i * 7919u);
    CHECK_OK(parley_tokenize(llm, text, 1, NULL, g_ids[i], MAXTOK, &g_lengths[i]));
    g_prompts[i] = g_ids[i];
    CHECK_OK(parley_generate(llm, &g_prompts[i], &g_lengths[i], 1, g, &g_want[i]));
  }
}

static void check_result(parley_request *r, size_t i) {
  parley_generation_result *got = NULL;
  CHECK_OK(parley_request_wait(r, -1));
  CHECK_OK(parley_request_take_generation_result(r, &got));
  CHECK(got && same_tokens(got, g_want[i]));
  parley_result_free(got);
}

static void test_many_queued(parley_model *llm, const parley_generation_options *g) {
  parley_request *req[NREQ];
  parley_request_options ro;
  size_t i;
  parley_request_options_init(&ro);
  ro.on_complete = on_complete;
  for (i = 0; i < NREQ; ++i) {
    req[i] = NULL;
    CHECK_OK(parley_generate_submit(llm, &g_prompts[i], &g_lengths[i], 1, g, &ro, &req[i]));
  }
  for (i = 0; i < NREQ; ++i) {
    if (!req[i]) continue;
    check_result(req[i], i);
    parley_request_free(req[i]);
  }
  pthread_mutex_lock(&g_done_mu);
  CHECK(g_completed == NREQ && g_cancelled == 0);
  pthread_mutex_unlock(&g_done_mu);
}

static void test_cancel_while_queued(parley_model *llm, const parley_generation_options *g) {
  parley_generation_options held = *g;
  parley_request_options ro;
  parley_request *busy[2] = {NULL, NULL}, *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL;
  int32_t done = -1, status = PARLEY_OK;
  size_t i;
  int inside;

  held.on_token = hold_on_token;
  parley_request_options_init(&ro);
  ro.on_complete = on_complete;
  pthread_mutex_lock(&g_done_mu);
  g_completed = g_cancelled = 0;
  pthread_mutex_unlock(&g_done_mu);

  /* Both workers held in a token callback. */
  for (i = 0; i < 2; ++i) CHECK_OK(parley_generate_submit(llm, &g_prompts[i], &g_lengths[i], 1, &held, &ro, &busy[i]));
  pthread_mutex_lock(&g_hold.mu);
  while (g_hold.inside < 2) pthread_cond_wait(&g_hold.cv, &g_hold.mu);
  pthread_mutex_unlock(&g_hold.mu);

  CHECK_OK(parley_generate_submit(llm, &g_prompts[2], &g_lengths[2], 1, g, &ro, &a));
  CHECK_OK(parley_generate_submit(llm, &g_prompts[3], &g_lengths[3], 1, g, &ro, &b));
  CHECK_OK(parley_generate_submit(llm, &g_prompts[4], &g_lengths[4], 1, g, &ro, &c));
  CHECK_OK(parley_generate_submit(llm, &g_prompts[5], &g_lengths[5], 1, g, &ro, &d));

  /* b is cancelled while queued: it ends although no worker came free. */
  CHECK_OK(parley_request_cancel(b));
  CHECK_OK(parley_request_wait(b, 60000)); /* a bound against a hang, not a timing */
  CHECK_OK(parley_request_status(b, &status, NULL));
  CHECK(status == PARLEY_ERROR_CANCELLED);
  /* d is freed while queued: the free returns although no worker came free. */
  parley_request_free(d);
  /* e's deadline passes while it is queued: it ends then with TIMEOUT. */
  ro.deadline_ms = 100;
  CHECK_OK(parley_generate_submit(llm, &g_prompts[6], &g_lengths[6], 1, g, &ro, &e));
  ro.deadline_ms = 0;
  CHECK_OK(parley_request_wait(e, 60000)); /* a bound against a hang, not a timing */
  CHECK_OK(parley_request_status(e, &status, NULL));
  CHECK(status == PARLEY_ERROR_TIMEOUT);

  pthread_mutex_lock(&g_hold.mu);
  inside = g_hold.inside;
  pthread_mutex_unlock(&g_hold.mu);
  CHECK(inside == 2); /* the workers were held all along */
  CHECK_OK(parley_request_poll(a, &done));
  CHECK(done == 0);
  CHECK_OK(parley_request_poll(c, &done));
  CHECK(done == 0);
  pthread_mutex_lock(&g_done_mu);
  CHECK(g_completed == 3 && g_cancelled == 2); /* b's, d's and e's completion callbacks */
  pthread_mutex_unlock(&g_done_mu);

  pthread_mutex_lock(&g_hold.mu);
  g_hold.released = 1;
  pthread_cond_broadcast(&g_hold.cv);
  pthread_mutex_unlock(&g_hold.mu);
  check_result(a, 2);
  check_result(c, 4);
  for (i = 0; i < 2; ++i) {
    check_result(busy[i], i);
    parley_request_free(busy[i]);
  }
  parley_request_free(a);
  parley_request_free(b);
  parley_request_free(c);
  parley_request_free(e);
  pthread_mutex_lock(&g_done_mu);
  CHECK(g_completed == 7 && g_cancelled == 2);
  pthread_mutex_unlock(&g_done_mu);
}

/* Eight threads submit sixteen generations each to the two workers and, at
 * random (fixed seed, printed; PARLEY_TEST_SEED overrides): wait and free,
 * cancel and wait, free at once, free from the completion callback (fire
 * and forget), or a 1 ms deadline. Every request's completion callback runs
 * exactly once; a request that finished OK has the blocking call's tokens;
 * the others ended CANCELLED or TIMEOUT as their action allows. Under TSan
 * in CI. */
#define NTHREADS 8
#define PER_THREAD 16
struct slot {
  int action, completions;
  int32_t status, completed_status;
  int matches;
  size_t prompt;
};
struct stress_thread {
  parley_model *llm;
  const parley_generation_options *g;
  unsigned seed;
  struct slot slot[PER_THREAD];
};
static pthread_mutex_t g_slot_mu = PTHREAD_MUTEX_INITIALIZER;
static void slot_complete(void *user, parley_request *r, int32_t status) {
  struct slot *sl = (struct slot *)user;
  int fire_and_forget;
  pthread_mutex_lock(&g_slot_mu);
  ++sl->completions;
  sl->completed_status = status;
  fire_and_forget = sl->action == 3;
  pthread_mutex_unlock(&g_slot_mu);
  if (fire_and_forget) {
    parley_generation_result *got = NULL;
    int matches = -1;
    if (status == PARLEY_OK && parley_request_take_generation_result(r, &got) == PARLEY_OK)
      matches = same_tokens(got, g_want[sl->prompt]);
    parley_result_free(got);
    pthread_mutex_lock(&g_slot_mu);
    sl->matches = matches;
    pthread_mutex_unlock(&g_slot_mu);
    parley_request_free(r);
  }
}
static unsigned next_random(unsigned *state) {
  *state = *state * 1103515245u + 12345u;
  return (*state >> 16) & 0x7fff;
}
static void *stress_worker(void *arg) {
  struct stress_thread *t = (struct stress_thread *)arg;
  parley_request *req[PER_THREAD];
  size_t k;
  for (k = 0; k < PER_THREAD; ++k) {
    struct slot *sl = &t->slot[k];
    parley_request_options ro;
    parley_request_options_init(&ro);
    sl->prompt = next_random(&t->seed) % NREQ;
    sl->action = (int)(next_random(&t->seed) % 5);
    sl->matches = -1;
    ro.on_complete = slot_complete;
    ro.user_data = sl;
    if (sl->action == 4) ro.deadline_ms = 1;
    req[k] = NULL;
    sl->status = parley_generate_submit(t->llm, &g_prompts[sl->prompt], &g_lengths[sl->prompt], 1, t->g, &ro, &req[k]);
    if (sl->status != PARLEY_OK) continue;
    if (sl->action == 1) parley_request_cancel(req[k]);
    if (sl->action == 2 || sl->action == 3) {
      if (sl->action == 2) parley_request_free(req[k]);
      req[k] = NULL; /* action 3: freed by its completion callback */
    }
  }
  for (k = 0; k < PER_THREAD; ++k) {
    struct slot *sl = &t->slot[k];
    parley_generation_result *got = NULL;
    if (!req[k]) continue;
    if (parley_request_wait(req[k], -1) != PARLEY_OK) sl->status = -1000;
    parley_request_status(req[k], &sl->status, NULL);
    if (sl->status == PARLEY_OK && parley_request_take_generation_result(req[k], &got) == PARLEY_OK)
      sl->matches = same_tokens(got, g_want[sl->prompt]);
    parley_result_free(got);
    parley_request_free(req[k]);
  }
  return NULL;
}
static void test_threads_against_the_queue(parley_model *llm, const parley_generation_options *g) {
  struct stress_thread th[NTHREADS];
  pthread_t tid[NTHREADS];
  const char *env = getenv("PARLEY_TEST_SEED");
  unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : 4242u;
  size_t i, k;
  int all_completed = 0, rounds;
  printf("test_threads_against_the_queue: seed %u (PARLEY_TEST_SEED overrides)\n", seed);
  for (i = 0; i < NTHREADS; ++i) {
    memset(&th[i], 0, sizeof th[i]);
    th[i].llm = llm;
    th[i].g = g;
    th[i].seed = seed + (unsigned)i * 7919u;
    CHECK(pthread_create(&tid[i], NULL, stress_worker, &th[i]) == 0);
  }
  for (i = 0; i < NTHREADS; ++i) pthread_join(tid[i], NULL);
  /* Fire-and-forget requests end on their own: wait (bounded) for every callback. */
  for (rounds = 0; rounds < 6000 && !all_completed; ++rounds) {
    all_completed = 1;
    pthread_mutex_lock(&g_slot_mu);
    for (i = 0; i < NTHREADS; ++i)
      for (k = 0; k < PER_THREAD; ++k)
        if (th[i].slot[k].completions == 0) all_completed = 0;
    pthread_mutex_unlock(&g_slot_mu);
    if (!all_completed) {
      struct timespec ts = {0, 10000000L};
      nanosleep(&ts, NULL);
    }
  }
  CHECK(all_completed);
  pthread_mutex_lock(&g_slot_mu);
  for (i = 0; i < NTHREADS; ++i)
    for (k = 0; k < PER_THREAD; ++k) {
      const struct slot *sl = &th[i].slot[k];
      const int32_t st = sl->action == 2 || sl->action == 3 ? sl->completed_status : sl->status;
      CHECK(sl->completions == 1);
      if (sl->action != 2 && sl->action != 3) CHECK(sl->completed_status == sl->status);
      if (st == PARLEY_OK && sl->action != 2) CHECK(sl->matches == 1);
      if (sl->action == 0 || sl->action == 3) CHECK(st == PARLEY_OK);
      if (sl->action == 1 || sl->action == 2) CHECK(st == PARLEY_OK || st == PARLEY_ERROR_CANCELLED);
      if (sl->action == 4) CHECK(st == PARLEY_OK || st == PARLEY_ERROR_TIMEOUT);
    }
  pthread_mutex_unlock(&g_slot_mu);
}

static parley_model *load_engine_on(parley_runtime *rt) {
  char path[4096];
  parley_model *m = NULL;
  const char *dir = getenv("PARLEY_DEMO_MODELS");
  snprintf(path, sizeof path, "%s/support-llama.parley", dir ? dir : ".");
  if (parley_model_load_file(rt, path, NULL, &m) != PARLEY_OK) {
    fprintf(stderr, "load %s: %s\n", path, parley_last_error());
    exit(1);
  }
  return m;
}

static uint64_t max_rows(parley_model *m) {
  parley_serving_stats st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  CHECK_OK(parley_model_serving_stats(m, &st));
  CHECK(st.engine_active == 1);
  return st.max_batch_rows;
}

static void test_engine_requests_hold_no_worker(parley_runtime *rt, const parley_generation_options *g) {
  parley_model *m = load_engine_on(rt);
  parley_request *req[NREQ];
  parley_chat_session *s[16];
  parley_request *cr[16];
  char *want[16];
  parley_chat_options co;
  parley_generation_options cg;
  size_t i;
  for (i = 0; i < NREQ; ++i) {
    req[i] = NULL;
    CHECK_OK(parley_generate_submit(m, &g_prompts[i], &g_lengths[i], 1, g, NULL, &req[i]));
  }
  for (i = 0; i < NREQ; ++i) {
    if (!req[i]) continue;
    check_result(req[i], i);
    parley_request_free(req[i]);
  }
  printf("engine on, 2 workers: 40 generations, largest step %llu rows\n", (unsigned long long)max_rows(m));
  CHECK(max_rows(m) > 2);

  /* Chat turns too: each equals the blocking turn of a fresh session. */
  parley_chat_options_init(&co);
  parley_generation_options_init(m, &cg);
  cg.max_new_tokens = 8;
  cg.do_sample = 0;
  co.generation = &cg;
  for (i = 0; i < 16; ++i) {
    char text[64];
    parley_chat_session *ref = NULL;
    snprintf(text, sizeof text, "Do you sell %u bells?", (unsigned)(i + 2));
    want[i] = NULL;
    CHECK_OK(parley_chat_session_create(m, "You help customers.", &ref));
    CHECK_OK(parley_chat_append(ref, PARLEY_ROLE_USER, text));
    CHECK_OK(parley_chat_generate(ref, &co, &want[i]));
    parley_chat_session_free(ref);
    s[i] = NULL;
    cr[i] = NULL;
    CHECK_OK(parley_chat_session_create(m, "You help customers.", &s[i]));
    CHECK_OK(parley_chat_append(s[i], PARLEY_ROLE_USER, text));
  }
  for (i = 0; i < 16; ++i) CHECK_OK(parley_chat_submit(s[i], &co, NULL, &cr[i]));
  for (i = 0; i < 16; ++i) {
    char *got = NULL;
    if (!cr[i]) continue;
    CHECK_OK(parley_request_wait(cr[i], -1));
    CHECK_OK(parley_request_take_reply(cr[i], &got));
    CHECK(got && want[i] && strcmp(got, want[i]) == 0);
    parley_string_free(got);
    parley_request_free(cr[i]);
  }
  for (i = 0; i < 16; ++i) {
    parley_string_free(want[i]);
    parley_chat_session_free(s[i]);
  }
  parley_model_free(m);
}

int main(void) {
  parley_runtime *rt;
  parley_model *llm;
  parley_generation_options g;
  size_t i;
  /* Read when the process's request workers are first made (the first submit). */
  setenv("PARLEY_REQUEST_WORKERS", "2", 1);
  rt = make_runtime();
  llm = load_engine_off(rt);
  parley_generation_options_init(llm, &g);
  g.max_new_tokens = 6;
  g.do_sample = 0;
  make_prompts(llm, &g);
  test_many_queued(llm, &g);
  test_cancel_while_queued(llm, &g);
  test_threads_against_the_queue(llm, &g);
  test_engine_requests_hold_no_worker(rt, &g);
  for (i = 0; i < NREQ; ++i) parley_result_free(g_want[i]);
  parley_model_free(llm);
  parley_runtime_free(rt);
  printf("test_request_queue: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
