/* A host that exits while Parley computes: each scenario runs in a child
 * process that submits requests (or runs a blocking call on another thread)
 * and returns from its work with them still running, `delay_ms` later. exit()
 * then runs every library's static destructors while Parley's threads
 * compute; before runtime/core/exit_gate.hpp, oneDNN's JIT code was unmapped
 * under a running GEMM and such a child died with SIGSEGV in about half of
 * the runs (chat, delay 0) or a third (translation, delays 1-30 ms). Every
 * child must exit with status 0.
 * Uses the demo models (PARLEY_DEMO_MODELS). No randomness: the scenarios
 * and delays are fixed. */
#define _POSIX_C_SOURCE 200809L
#include <parley/parley.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The children leak their runtime, models and requests on purpose. */
int __lsan_is_turned_off(void) {
  return 1;
}

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

static parley_model *load(const char *name) {
  char path[4096];
  const char *dir = getenv("PARLEY_DEMO_MODELS");
  parley_runtime *rt = NULL;
  parley_model *m = NULL;
  snprintf(path, sizeof path, "%s/%s", dir ? dir : ".", name);
  if (parley_runtime_create(NULL, &rt) != PARLEY_OK || parley_model_load_file(rt, path, NULL, &m) != PARLEY_OK) {
    fprintf(stderr, "load %s: %s\n", path, parley_last_error());
    exit(3);
  }
  return m;
}

static int32_t on_text(void *user, const char *text, size_t len) {
  (void)user;
  (void)text;
  (void)len;
  return 0;
}

static const char *const kTexts[] = {
    "Where is my order 9019917? It was sent last week and has not arrived yet, please help.",
    "The monitor is broken and I would like to return it."};

static void submit_chats(parley_model *m) {
  for (int i = 0; i < 16; ++i) {
    parley_generation_options g;
    parley_chat_options o;
    parley_chat_session *s = NULL;
    parley_request *r = NULL;
    parley_generation_options_init(m, &g);
    g.max_new_tokens = 400;
    g.min_new_tokens = 400;
    parley_chat_options_init(&o);
    o.generation = &g;
    o.on_text = on_text;
    if (parley_chat_session_create(m, "You help the customers of a shop.", &s) != PARLEY_OK ||
        parley_chat_append(s, PARLEY_ROLE_USER, "Where is my order 9019917?") != PARLEY_OK ||
        parley_chat_submit(s, &o, NULL, &r) != PARLEY_OK) {
      fprintf(stderr, "chat submit: %s\n", parley_last_error());
      exit(3);
    }
  }
}

static void submit_translations(parley_model *m) {
  for (int i = 0; i < 16; ++i) {
    parley_translation_options o;
    parley_request *r = NULL;
    parley_translation_options_init(&o);
    if (parley_translate_submit(m, kTexts, NULL, 2, &o, NULL, &r) != PARLEY_OK) {
      fprintf(stderr, "translate submit: %s\n", parley_last_error());
      exit(3);
    }
  }
}

/* A host thread inside blocking calls when the process exits; its calls
 * may fail (refused at exit) but must not crash. */
static void *translate_forever(void *model) {
  for (;;) {
    parley_translation_options o;
    parley_translation_result *res = NULL;
    parley_translation_options_init(&o);
    if (parley_translate(model, kTexts, 2, &o, &res) == PARLEY_OK) parley_translation_result_free(res);
  }
  return NULL;
}

static void run_child(const char *kind, long delay_ms) {
  if (strcmp(kind, "chat") == 0) {
    submit_chats(load("support-llama.parley"));
  } else if (strcmp(kind, "translate") == 0) {
    submit_translations(load("opus-mt-en-de.parley"));
  } else {
    pthread_t t;
    parley_model *m = load("opus-mt-de-en.parley");
    /* As parley.h asks: the first call (which builds the kernels' code) is
     * not left to a thread that may still run it when the process exits. */
    if (parley_model_prepare(m) != PARLEY_OK) exit(3);
    if (pthread_create(&t, NULL, translate_forever, m) != 0) exit(3);
  }
  sleep_ms(delay_ms);
  exit(0); /* as a return from main: static destructors run while the work runs */
}

int main(void) {
  static const char *const kinds[] = {"chat", "translate", "blocking"};
  static const long delays[] = {0, 1, 2, 5, 10, 20, 50, 150};
  int failures = 0, runs = 0;
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; ++k)
    for (size_t d = 0; d < sizeof delays / sizeof delays[0]; ++d) {
      fflush(NULL);
      pid_t pid = fork();
      if (pid < 0) {
        perror("fork");
        return 1;
      }
      if (pid == 0) run_child(kinds[k], delays[d]);
      int status = 0;
      if (waitpid(pid, &status, 0) != pid) {
        perror("waitpid");
        return 1;
      }
      ++runs;
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ++failures;
        if (WIFSIGNALED(status))
          fprintf(stderr, "FAIL %s, exit %ld ms after submitting: killed by signal %d\n", kinds[k], delays[d],
                  WTERMSIG(status));
        else
          fprintf(stderr, "FAIL %s, exit %ld ms after submitting: exit status %d\n", kinds[k], delays[d],
                  WEXITSTATUS(status));
      }
    }
  printf("%d of %d processes that exited with work in flight failed\n", failures, runs);
  return failures ? 1 : 0;
}
