/* Token-level generation through the C API, streaming each new id as it is
 * produced. Text in/out (tokenizers) comes with a later release; until then
 * the prompt is a list of token ids.
 *   generate_tokens MODEL.parley MAX_NEW_TOKENS ID [ID...]                 (decoder-only)
 *   generate_tokens MODEL.parley MAX_NEW_TOKENS --translate ID [ID...]     (encoder-decoder, beam 4) */
#include <parley/parley.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int32_t print_token(void *user_data, size_t batch_index, size_t sequence_index, int32_t token) {
  (void)user_data;
  (void)batch_index;
  (void)sequence_index;
  printf(" %d", (int)token);
  fflush(stdout);
  return 0; /* go on */
}

int main(int argc, char **argv) {
  parley_runtime *rt = NULL;
  parley_model *model = NULL;
  parley_generation_options options;
  parley_generation_result *result = NULL;
  parley_status st;
  int32_t ids[512];
  const int32_t *prompts[1];
  size_t n = 0, lengths[1], count = 0, h, len;
  int translate = 0, i, first = 3;
  if (argc < 4) {
    fprintf(stderr, "usage: %s MODEL.parley MAX_NEW_TOKENS [--translate] ID [ID...]\n", argv[0]);
    return 2;
  }
  if (strcmp(argv[3], "--translate") == 0) {
    translate = 1;
    first = 4;
  }
  for (i = first; i < argc && n < 512; ++i) ids[n++] = (int32_t)strtol(argv[i], NULL, 10);
  prompts[0] = ids;
  lengths[0] = n;
  if ((st = parley_runtime_create(NULL, &rt)) != PARLEY_OK ||
      (st = parley_model_load_file(rt, argv[1], NULL, &model)) != PARLEY_OK ||
      (st = parley_model_prepare(model)) != PARLEY_OK) {
    fprintf(stderr, "error: %s (%s)\n", parley_last_error(), parley_status_name(st));
    parley_model_free(model);
    parley_runtime_free(rt);
    return 1;
  }
  parley_generation_options_init(model, &options);
  options.max_new_tokens = (size_t)strtoul(argv[2], NULL, 10);
  if (translate) {
    options.num_beams = 4;
    options.num_return_sequences = 2;
    st = parley_translate_tokens(model, prompts, lengths, 1, NULL, NULL, &options, &result);
  } else {
    options.num_beams = 1;
    options.on_token = print_token;
    printf("streamed:");
    st = parley_generate(model, prompts, lengths, 1, &options, &result);
    printf("\n");
  }
  if (st != PARLEY_OK) {
    fprintf(stderr, "error: %s (%s)\n", parley_last_error(), parley_status_name(st));
  } else {
    const int32_t *tokens;
    float score;
    parley_result_hypothesis_count(result, 0, &count);
    for (h = 0; h < count; ++h) {
      parley_result_hypothesis(result, 0, h, &tokens, &len, &score);
      printf("hypothesis %zu (score %.4f):", h, score);
      for (i = 0; i < (int)len; ++i) printf(" %d", (int)tokens[i]);
      printf("\n");
    }
  }
  parley_result_free(result);
  parley_model_free(model);
  parley_runtime_free(rt);
  return st == PARLEY_OK ? 0 : 1;
}
