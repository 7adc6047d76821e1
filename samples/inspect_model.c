/* The smallest useful host: open a model through the C API and print what it is.
 * Build against an installed Parley with either
 *   cc inspect_model.c $(pkg-config --cflags --libs parley)
 * or CMake: find_package(Parley) + target_link_libraries(app Parley::parley). */
#include <parley/parley.h>
#include <stdio.h>

int main(int argc, char **argv) {
  parley_runtime *rt = NULL;
  parley_model *model = NULL;
  parley_model_info info;
  parley_status st;
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.parley\n", argv[0]);
    return 2;
  }
  st = parley_runtime_create(NULL, &rt);
  if (st != PARLEY_OK) {
    fprintf(stderr, "runtime: %s\n", parley_last_error());
    return 1;
  }
  st = parley_model_load_file(rt, argv[1], NULL, &model);
  if (st != PARLEY_OK) {
    fprintf(stderr, "load: %s (%s)\n", parley_last_error(), parley_status_name(st));
    parley_runtime_free(rt);
    return 1;
  }
  info.struct_size = sizeof info;
  parley_model_get_info(model, &info);
  printf("parley %s: %s, format %u.%u, %zu tensors, vocab %u\n", parley_version_string(), info.architecture,
         info.format_major, info.format_minor, info.num_tensors, info.vocab_size);
  parley_model_free(model);
  parley_runtime_free(rt);
  return 0;
}
