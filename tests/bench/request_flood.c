/* N asynchronous generations submitted at once (parley_generate_submit) on
 * one model, each a 4-token greedy reply to the same prompt: prints the
 * time to submit, the time until all finished, the refused submits, peak
 * RSS and the process's threads at the end. Shows what the request worker
 * pool (PARLEY_REQUEST_WORKERS) and the engine cost per request in flight.
 *
 *   cc tests/bench/request_flood.c -Iinclude -Lbuild/lib -lparley -lpthread \
 *      -Wl,-rpath,$PWD/build/lib -o build/request_flood
 *   PARLEY_PLUGIN_PATH=build/lib/parley/plugins PARLEY_REQUEST_WORKERS=256 \
 *      build/request_flood samples/support-bot/models/support-llama.parley 5000
 */
#define _POSIX_C_SOURCE 200809L
#include <parley/parley.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  parley_runtime *rt = NULL;
  parley_model *m = NULL;
  parley_generation_options g;
  parley_request **req;
  int32_t ids[64];
  const int32_t *prompt[1];
  size_t n = 0;
  int count, i, refused = 0, ok = 0;
  double t0, t_submit;
  char line[256];
  FILE *f;
  if (argc != 3 || (count = atoi(argv[2])) <= 0) {
    fprintf(stderr, "usage: %s MODEL.parley N\n", argv[0]);
    return 2;
  }
  if (parley_runtime_create(NULL, &rt) || parley_model_load_file(rt, argv[1], NULL, &m) ||
      parley_tokenize(m, "Where is my order 9019917?", 1, NULL, ids, 64, &n)) {
    fprintf(stderr, "%s\n", parley_last_error());
    return 1;
  }
  prompt[0] = ids;
  parley_generation_options_init(m, &g);
  g.max_new_tokens = 4;
  g.do_sample = 0;
  req = calloc((size_t)count, sizeof *req);
  if (!req) return 1;
  t0 = now();
  for (i = 0; i < count; ++i)
    if (parley_generate_submit(m, prompt, &n, 1, &g, NULL, &req[i]) != PARLEY_OK && !refused++)
      printf("submit %d refused: %s\n", i, parley_last_error());
  t_submit = now() - t0;
  for (i = 0; i < count; ++i) {
    int32_t st = -1;
    if (!req[i]) continue;
    parley_request_wait(req[i], -1);
    parley_request_status(req[i], &st, NULL);
    ok += st == PARLEY_OK;
    parley_request_free(req[i]);
  }
  printf("requests %d  submitted in %.2f s  all finished in %.2f s  ok %d  refused %d\n", count, t_submit, now() - t0,
         ok, refused);
  f = fopen("/proc/self/status", "r");
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmHWM", 5) || !strncmp(line, "Threads", 7)) fputs(line, stdout);
  if (f) fclose(f);
  free(req);
  parley_model_free(m);
  parley_runtime_free(rt);
  return 0;
}
