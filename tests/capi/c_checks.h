/* What the C API tests written in C share: check macros that count and
 * report (with the last error), and a runtime that loads only the plugins of
 * the build tree (PARLEY_PLUGIN_BUILD_DIR). Header-only: each test is one
 * translation unit. */
#ifndef PARLEY_TESTS_CAPI_C_CHECKS_H
#define PARLEY_TESTS_CAPI_C_CHECKS_H

#include <parley/parley.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures = 0, g_checks = 0;
#define CHECK(cond)                                                                                                 \
  do {                                                                                                              \
    ++g_checks;                                                                                                     \
    if (!(cond)) {                                                                                                  \
      ++g_failures;                                                                                                 \
      fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__, #cond, parley_last_error()); \
    }                                                                                                               \
  } while (0)
#define CHECK_STATUS(call, want) CHECK((call) == (want))

static parley_runtime *make_runtime(void) {
  const char *dirs[1];
  parley_runtime_options o;
  parley_runtime *rt = NULL;
  dirs[0] = getenv("PARLEY_PLUGIN_BUILD_DIR");
  parley_runtime_options_init(&o);
  o.plugin_sources = PARLEY_PLUGINS_NONE;
  o.plugin_dirs = dirs;
  o.num_plugin_dirs = dirs[0] ? 1 : 0;
  if (parley_runtime_create(&o, &rt) != PARLEY_OK) {
    fprintf(stderr, "runtime: %s\n", parley_last_error());
    exit(1);
  }
  /* A test may run on an extra device (tests/device_guard). */
  dirs[0] = getenv("PARLEY_TEST_DEVICE_PLUGIN");
  if (dirs[0] && *dirs[0] && parley_runtime_load_plugin(rt, dirs[0]) != PARLEY_OK) {
    fprintf(stderr, "device plugin: %s\n", parley_last_error());
    exit(1);
  }
  return rt;
}

#endif
