/*
 * Tests of the public C API, written in C99 and linked against the shared
 * libparley, so they exercise the exported ABI exactly as a C host would:
 * versions, status names, runtime options and their misuse, plugin/device/
 * kernel queries, model loading (file, memory copy, memory borrow) and
 * introspection of the test models, old-caller struct sizes, and use from
 * several threads (shared model, concurrent loads, per-thread last error).
 *
 * Environment (set by CTest, see tests/CMakeLists.txt):
 *   PARLEY_TEST_DATA_DIR     directory with tiny_decoder.parley, tiny_seq2seq.parley
 *   PARLEY_PLUGIN_BUILD_DIR  directory with libparley_cpu.so
 * Expected model contents come from tests/data/make_test_models.py.
 *
 * Harness: CHECK counts failures and prints each; main returns 1 if any
 * check failed. Nothing is skipped: a missing precondition (no cpu plugin,
 * no model file) is a failure.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <parley/parley.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ harness */

static int g_checks = 0;
static int g_failures = 0;
static pthread_mutex_t g_harness_mutex = PTHREAD_MUTEX_INITIALIZER;

static void check_impl(int ok, const char *expr, const char *file, int line) {
  pthread_mutex_lock(&g_harness_mutex);
  ++g_checks;
  if (!ok) {
    ++g_failures;
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, expr);
  }
  pthread_mutex_unlock(&g_harness_mutex);
}

#define CHECK(cond) check_impl((cond) ? 1 : 0, #cond, __FILE__, __LINE__)

/* Status check that prints both names and the last error on failure. */
static void check_status_impl(parley_status got, parley_status want, const char *expr, const char *file, int line) {
  pthread_mutex_lock(&g_harness_mutex);
  ++g_checks;
  if (got != want) {
    ++g_failures;
    fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: \"%s\")\n", file, line, expr,
            parley_status_name(got), parley_status_name(want), parley_last_error());
  }
  pthread_mutex_unlock(&g_harness_mutex);
}

#define CHECK_STATUS(call, want) check_status_impl((call), (want), #call, __FILE__, __LINE__)
#define CHECK_OK(call) CHECK_STATUS(call, PARLEY_OK)

#define CHECK_STR(a, b) check_str_impl((a), (b), #a, __FILE__, __LINE__)
static void check_str_impl(const char *got, const char *want, const char *expr, const char *file, int line) {
  int ok = got != NULL && strcmp(got, want) == 0;
  pthread_mutex_lock(&g_harness_mutex);
  ++g_checks;
  if (!ok) {
    ++g_failures;
    fprintf(stderr, "%s:%d: %s is \"%s\", expected \"%s\"\n", file, line, expr, got ? got : "(null)", want);
  }
  pthread_mutex_unlock(&g_harness_mutex);
}

/* The last error is non-empty and mentions `needle`. */
#define CHECK_ERROR_MENTIONS(needle) check_error_impl((needle), __FILE__, __LINE__)
static void check_error_impl(const char *needle, const char *file, int line) {
  const char *msg = parley_last_error();
  int ok = msg != NULL && msg[0] != '\0' && strstr(msg, needle) != NULL;
  pthread_mutex_lock(&g_harness_mutex);
  ++g_checks;
  if (!ok) {
    ++g_failures;
    fprintf(stderr, "%s:%d: last error \"%s\" does not mention \"%s\"\n", file, line, msg ? msg : "(null)", needle);
  }
  pthread_mutex_unlock(&g_harness_mutex);
}

#define CHECK_NO_ERROR() CHECK(parley_last_error() != NULL && parley_last_error()[0] == '\0')

/* Size of a struct up to and including `field`: the first release's size. */
#define SIZE_THROUGH(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))

/* ------------------------------------------------------------------ helpers */

static const char *g_data_dir;
static const char *g_plugin_dir;
static char g_decoder_path[4096];
static char g_seq2seq_path[4096];

/* A runtime that loads exactly the build tree's plugins (no env path, nothing beside the library). */
static parley_status make_runtime(parley_runtime **out) {
  parley_runtime_options o;
  const char *dirs[1];
  parley_status st = parley_runtime_options_init(&o);
  if (st != PARLEY_OK) return st;
  dirs[0] = g_plugin_dir;
  o.plugin_sources = PARLEY_PLUGINS_NONE;
  o.plugin_dirs = dirs;
  o.num_plugin_dirs = 1;
  o.num_threads = 2;
  return parley_runtime_create(&o, out);
}

static unsigned char *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf;
  long n;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return NULL;
  }
  buf = (unsigned char *)malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return buf;
}

static size_t dtype_size(parley_dtype d) {
  switch (d) {
    case PARLEY_DTYPE_F32:
      return 4;
    case PARLEY_DTYPE_F16:
      return 2;
    case PARLEY_DTYPE_BF16:
      return 2;
    case PARLEY_DTYPE_I8:
      return 1;
    case PARLEY_DTYPE_I32:
      return 4;
    case PARLEY_DTYPE_U8:
      return 1;
    case PARLEY_DTYPE_I64:
      return 8;
    default:
      return 0;
  }
}

/* Sentinels: an output pointer pre-set to these must come back unchanged on error. */
static int g_sentinel_object;
#define RUNTIME_SENTINEL ((parley_runtime *)(void *)&g_sentinel_object)
#define MODEL_SENTINEL ((parley_model *)(void *)&g_sentinel_object)
static const char g_sentinel_string[] = "untouched";

/* Log capture (the callback may run on any thread, concurrently). */
typedef struct log_capture {
  pthread_mutex_t mutex;
  int calls;
  int warnings;
  int null_messages;
  char last_warning[1024];
} log_capture;

static log_capture *g_expected_capture;

static void capture_log(void *user_data, parley_log_severity severity, const char *message) {
  log_capture *c = (log_capture *)user_data;
  if (c != g_expected_capture) {
    /* Cannot touch c: count globally. */
    pthread_mutex_lock(&g_harness_mutex);
    ++g_failures;
    fprintf(stderr, "log callback got user_data %p, expected %p\n", user_data, (void *)g_expected_capture);
    pthread_mutex_unlock(&g_harness_mutex);
    return;
  }
  pthread_mutex_lock(&c->mutex);
  ++c->calls;
  if (message == NULL) ++c->null_messages;
  if (severity == PARLEY_SEVERITY_WARNING && message) {
    ++c->warnings;
    strncpy(c->last_warning, message, sizeof c->last_warning - 1);
    c->last_warning[sizeof c->last_warning - 1] = '\0';
  }
  pthread_mutex_unlock(&c->mutex);
}

/* ------------------------------------------------------------------ tests */

/* The exported _init functions (for FFI) fill exactly what the header's inline
 * ones do; the parenthesised name bypasses the macro that serves C callers. */
#define CHECK_SAME_INIT(type, call_inline, call_exported) \
  do {                                                    \
    type a_, b_;                                          \
    memset(&a_, 0xA5, sizeof a_);                         \
    memset(&b_, 0xA5, sizeof b_);                         \
    CHECK_OK(call_inline);                                \
    CHECK_OK(call_exported);                              \
    CHECK(b_.struct_size == sizeof(type));                \
    CHECK(memcmp(&a_, &b_, sizeof(type)) == 0);           \
  } while (0)

static void test_exported_inits(void) {
  parley_status (*fn)(parley_runtime_options *) = &parley_runtime_options_init;
  parley_runtime_options ro;
  CHECK_SAME_INIT(parley_runtime_options, parley_runtime_options_init(&a_), (parley_runtime_options_init)(&b_));
  CHECK_SAME_INIT(parley_model_options, parley_model_options_init(&a_), (parley_model_options_init)(&b_));
  CHECK_SAME_INIT(parley_generation_options, parley_generation_options_init(NULL, &a_),
                  (parley_generation_options_init)(NULL, &b_));
  CHECK_SAME_INIT(parley_translation_options, parley_translation_options_init(&a_),
                  (parley_translation_options_init)(&b_));
  CHECK_SAME_INIT(parley_chat_options, parley_chat_options_init(&a_), (parley_chat_options_init)(&b_));
  CHECK_SAME_INIT(parley_request_options, parley_request_options_init(&a_), (parley_request_options_init)(&b_));
  /* Through a function pointer (what an FFI layer holds), and NULL. */
  memset(&ro, 0, sizeof ro);
  CHECK_OK(fn(&ro));
  CHECK(ro.struct_size == sizeof ro && ro.plugin_sources == PARLEY_PLUGINS_DEFAULT);
  CHECK_STATUS(fn(NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "NULL") != NULL);
  CHECK_STATUS((parley_model_options_init)(NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS((parley_generation_options_init)(NULL, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS((parley_translation_options_init)(NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS((parley_chat_options_init)(NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS((parley_request_options_init)(NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(sizeof(parley_status) == 4);
}

static void test_versions(void) {
  char expect[64];
  CHECK(parley_version() == (uint32_t)PARLEY_VERSION_NUMBER);
  CHECK(PARLEY_VERSION_NUMBER == ((PARLEY_VERSION_MAJOR << 16) | (PARLEY_VERSION_MINOR << 8) | PARLEY_VERSION_PATCH));
  CHECK((parley_version() >> 16) == PARLEY_VERSION_MAJOR);
  CHECK(((parley_version() >> 8) & 0xffu) == PARLEY_VERSION_MINOR);
  CHECK((parley_version() & 0xffu) == PARLEY_VERSION_PATCH);
  snprintf(expect, sizeof expect, "%d.%d.%d", PARLEY_VERSION_MAJOR, PARLEY_VERSION_MINOR, PARLEY_VERSION_PATCH);
  CHECK_STR(parley_version_string(), expect);
  /* Static storage: the same pointer every time. */
  CHECK(parley_version_string() == parley_version_string());
}

static void test_status_and_dtype_names(void) {
  static const char *const names[] = {
      "PARLEY_OK",
      "PARLEY_ERROR_INVALID_ARGUMENT",
      "PARLEY_ERROR_OUT_OF_MEMORY",
      "PARLEY_ERROR_IO",
      "PARLEY_ERROR_INVALID_MODEL",
      "PARLEY_ERROR_UNSUPPORTED_VERSION",
      "PARLEY_ERROR_CHECKSUM",
      "PARLEY_ERROR_NOT_FOUND",
      "PARLEY_ERROR_PLUGIN",
      "PARLEY_ERROR_DEVICE",
      "PARLEY_ERROR_UNSUPPORTED",
      "PARLEY_ERROR_INTERNAL",
      "PARLEY_ERROR_CANCELLED",
      "PARLEY_ERROR_BUSY",
  };
  static const char *const dtypes[] = {"f32", "f16", "bf16", "i8", "i32", "u8", "i64", "i4"};
  int i;
  CHECK(PARLEY_OK == 0);
  CHECK(PARLEY_ERROR_INTERNAL == 11);
  CHECK(PARLEY_ERROR_CANCELLED == 12); /* appended: values never move */
  CHECK(PARLEY_ERROR_BUSY == 13);
  for (i = 0; i <= (int)PARLEY_ERROR_BUSY; ++i) CHECK_STR(parley_status_name((parley_status)i), names[i]);
  CHECK(PARLEY_ERROR_TIMEOUT == 14);
  CHECK_STR(parley_status_name(PARLEY_ERROR_TIMEOUT), "PARLEY_ERROR_TIMEOUT");
  CHECK_STR(parley_status_name((parley_status)15), "PARLEY_ERROR_UNKNOWN");
  CHECK_STR(parley_status_name((int32_t)-1), "PARLEY_ERROR_UNKNOWN");
  CHECK_STR(parley_status_name((int32_t)1000000), "PARLEY_ERROR_UNKNOWN");

  CHECK(PARLEY_DTYPE_COUNT_ == 8); /* I4 appended with plugin ABI 1.2 */
  for (i = 0; i < (int)PARLEY_DTYPE_COUNT_; ++i) CHECK_STR(parley_dtype_name((parley_dtype)i), dtypes[i]);
  CHECK_STR(parley_dtype_name(PARLEY_DTYPE_COUNT_), "?");
  CHECK_STR(parley_dtype_name((int32_t)-1), "?");
  CHECK_STR(parley_dtype_name((int32_t)255), "?");
}

/* parley_runtime_create(opts) must fail with INVALID_ARGUMENT, mention `field` and leave the output alone. */
static void expect_create_refused(const parley_runtime_options *opts, const char *field, int line) {
  parley_runtime *rt = RUNTIME_SENTINEL;
  parley_status st = parley_runtime_create(opts, &rt);
  check_status_impl(st, PARLEY_ERROR_INVALID_ARGUMENT, "parley_runtime_create(bad options)", __FILE__, line);
  check_error_impl(field, __FILE__, line);
  check_impl(rt == RUNTIME_SENTINEL, "output runtime untouched", __FILE__, line);
  if (st == PARLEY_OK && rt != RUNTIME_SENTINEL) parley_runtime_free(rt);
}

static void test_runtime_create(void) {
  parley_runtime *rt = NULL;
  parley_runtime_options o;
  /* Room for a "future" struct larger than this library's. */
  union {
    parley_runtime_options o;
    unsigned char bytes[sizeof(parley_runtime_options) + 64];
  } big;
  const char *dirs_with_null[2];
  size_t n = 99;

  /* NULL options: all defaults (PARLEY_PLUGIN_PATH is empty in tests). */
  CHECK_OK(parley_runtime_create(NULL, &rt));
  CHECK(rt != NULL);
  CHECK_NO_ERROR();
  CHECK_OK(parley_runtime_plugin_count(rt, &n));
  parley_runtime_free(rt);
  rt = NULL;

  /* _init */
  CHECK_STATUS(parley_runtime_options_init(NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("options");
  memset(&o, 0xCD, sizeof o);
  CHECK_OK(parley_runtime_options_init(&o));
  CHECK(o.struct_size == sizeof o);
  CHECK(o.num_threads == 0);
  CHECK(o.plugin_sources == PARLEY_PLUGINS_DEFAULT);
  CHECK(o.plugin_dirs == NULL);
  CHECK(o.num_plugin_dirs == 0);
  CHECK(o.log_fn == NULL);
  CHECK(o.log_user_data == NULL);
  CHECK(o.min_severity == PARLEY_SEVERITY_WARNING);
  CHECK_OK(parley_runtime_create(&o, &rt));
  CHECK(rt != NULL);
  parley_runtime_free(rt);
  rt = NULL;

  /* Options of the first release's size (here the same as sizeof) and explicit valid extremes. */
  parley_runtime_options_init(&o);
  o.struct_size = SIZE_THROUGH(parley_runtime_options, min_severity);
  o.num_threads = 1024;
  o.plugin_sources = PARLEY_PLUGINS_NONE;
  o.min_severity = PARLEY_SEVERITY_ERROR;
  CHECK_OK(parley_runtime_create(&o, &rt));
  CHECK_OK(parley_runtime_plugin_count(rt, &n));
  CHECK(n == 0); /* nothing searched */
  parley_runtime_free(rt);
  rt = NULL;

  /* NULL out pointer. */
  CHECK_STATUS(parley_runtime_create(NULL, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("out_runtime");
  parley_runtime_options_init(&o);
  CHECK_STATUS(parley_runtime_create(&o, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("out_runtime");

  /* struct_size: 0, one byte short of the first release, larger than this library's. */
  parley_runtime_options_init(&o);
  o.struct_size = 0;
  expect_create_refused(&o, "struct_size", __LINE__);
  o.struct_size = SIZE_THROUGH(parley_runtime_options, min_severity) - 1;
  expect_create_refused(&o, "struct_size", __LINE__);
  o.struct_size = sizeof(size_t);
  expect_create_refused(&o, "struct_size", __LINE__);
  memset(&big, 0, sizeof big);
  parley_runtime_options_init(&big.o);
  big.o.struct_size = sizeof(parley_runtime_options) + 8;
  expect_create_refused(&big.o, "struct_size", __LINE__);
  big.o.struct_size = (size_t)-1;
  expect_create_refused(&big.o, "struct_size", __LINE__);

  /* num_threads */
  parley_runtime_options_init(&o);
  o.num_threads = -1;
  expect_create_refused(&o, "num_threads", __LINE__);
  o.num_threads = 100000;
  expect_create_refused(&o, "num_threads", __LINE__);
  o.num_threads = 1025;
  expect_create_refused(&o, "num_threads", __LINE__);
  o.num_threads = INT32_MIN;
  expect_create_refused(&o, "num_threads", __LINE__);

  /* plugin_sources: unknown bits */
  parley_runtime_options_init(&o);
  o.plugin_sources = 8u;
  expect_create_refused(&o, "plugin_sources", __LINE__);
  o.plugin_sources = PARLEY_PLUGINS_DEFAULT | 0x80000000u;
  expect_create_refused(&o, "plugin_sources", __LINE__);

  /* min_severity: unknown values */
  parley_runtime_options_init(&o);
  o.min_severity = (int32_t)4;
  expect_create_refused(&o, "min_severity", __LINE__);
  o.min_severity = (int32_t)-1;
  expect_create_refused(&o, "min_severity", __LINE__);

  /* plugin_dirs */
  parley_runtime_options_init(&o);
  o.plugin_dirs = NULL;
  o.num_plugin_dirs = 1;
  expect_create_refused(&o, "plugin_dirs", __LINE__);
  dirs_with_null[0] = g_plugin_dir;
  dirs_with_null[1] = NULL;
  o.plugin_dirs = dirs_with_null;
  o.num_plugin_dirs = 2;
  expect_create_refused(&o, "plugin_dirs[1]", __LINE__);

  /* A valid call after all that clears the error. */
  CHECK_OK(make_runtime(&rt));
  CHECK_NO_ERROR();
  parley_runtime_free(rt);

  /* Free of NULL is a no-op. */
  parley_runtime_free(NULL);
}

static void test_log_callback_and_bogus_plugin(void) {
  char dir[4096];
  char bogus[4200];
  char ignored_path[4200];
  FILE *f;
  const char *dirs[2];
  parley_runtime_options o;
  parley_runtime *rt = NULL;
  log_capture cap;
  size_t n = 0, i;
  int found_cpu = 0;

  snprintf(dir, sizeof dir, "%s/capi_bogus_plugins_XXXXXX", g_data_dir);
  CHECK(mkdtemp(dir) != NULL);
  snprintf(bogus, sizeof bogus, "%s/libparley_bogus.so", dir);
  f = fopen(bogus, "wb");
  CHECK(f != NULL);
  if (f) {
    fputs("this is not an ELF shared library\n", f);
    fclose(f);
  }
  /* A file not matching libparley_*.so is ignored (no warning for it). */
  snprintf(ignored_path, sizeof ignored_path, "%s/notaplugin.so", dir);
  f = fopen(ignored_path, "wb");
  if (f) {
    fputs("ignored", f);
    fclose(f);
  }

  memset(&cap, 0, sizeof cap);
  pthread_mutex_init(&cap.mutex, NULL);
  g_expected_capture = &cap;

  parley_runtime_options_init(&o);
  dirs[0] = dir;
  dirs[1] = g_plugin_dir;
  o.plugin_dirs = dirs;
  o.num_plugin_dirs = 2;
  o.plugin_sources = PARLEY_PLUGINS_NONE;
  o.log_fn = capture_log;
  o.log_user_data = &cap;
  o.min_severity = PARLEY_SEVERITY_WARNING;
  CHECK_OK(parley_runtime_create(&o, &rt));
  CHECK(rt != NULL);
  pthread_mutex_lock(&cap.mutex);
  CHECK(cap.warnings >= 1);
  CHECK(strstr(cap.last_warning, "libparley_bogus.so") != NULL);
  CHECK(strstr(cap.last_warning, "notaplugin") == NULL);
  CHECK(cap.null_messages == 0);
  pthread_mutex_unlock(&cap.mutex);

  /* The bogus plugin is not listed; the real one is. */
  if (rt) {
    CHECK_OK(parley_runtime_plugin_count(rt, &n));
    for (i = 0; i < n; ++i) {
      parley_plugin_info pi;
      pi.struct_size = sizeof pi;
      CHECK_OK(parley_runtime_plugin_info(rt, i, &pi));
      CHECK(strstr(pi.path, "bogus") == NULL);
      if (strcmp(pi.name, "cpu") == 0) found_cpu = 1;
    }
    CHECK(found_cpu);
    /* Explicitly loading the bogus file fails with IO and leaves the runtime working. */
    CHECK_STATUS(parley_runtime_load_plugin(rt, bogus), PARLEY_ERROR_IO);
    CHECK_ERROR_MENTIONS("libparley_bogus.so");
    CHECK_OK(parley_runtime_plugin_count(rt, &i));
    CHECK(i == n);
  }
  parley_runtime_free(rt);
  rt = NULL;

  /* min_severity ERROR filters the warning out. */
  memset(&cap, 0, sizeof cap);
  pthread_mutex_init(&cap.mutex, NULL);
  o.min_severity = PARLEY_SEVERITY_ERROR;
  CHECK_OK(parley_runtime_create(&o, &rt));
  CHECK(cap.warnings == 0);
  parley_runtime_free(rt);
  rt = NULL;

  /* DEBUG lets through more (at least the warning and "loaded plugin"). */
  memset(&cap, 0, sizeof cap);
  pthread_mutex_init(&cap.mutex, NULL);
  o.min_severity = PARLEY_SEVERITY_DEBUG;
  CHECK_OK(parley_runtime_create(&o, &rt));
  CHECK(cap.warnings >= 1);
  CHECK(cap.calls > cap.warnings);
  parley_runtime_free(rt);

  g_expected_capture = NULL;
  remove(bogus);
  remove(ignored_path);
  rmdir(dir);
}

static void test_load_plugin(parley_runtime *rt) {
  size_t before = 0, after = 0;
  char cpu_path[4200];
  char missing[4200];
  parley_kernel_info ki;

  CHECK_OK(parley_runtime_plugin_count(rt, &before));
  CHECK_STATUS(parley_runtime_load_plugin(NULL, "x"), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("runtime");
  CHECK_STATUS(parley_runtime_load_plugin(rt, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("path");
  CHECK_STATUS(parley_runtime_load_plugin(rt, ""), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("path");
  snprintf(missing, sizeof missing, "%s/libparley_does_not_exist.so", g_data_dir);
  CHECK_STATUS(parley_runtime_load_plugin(rt, missing), PARLEY_ERROR_IO);
  CHECK_ERROR_MENTIONS("libparley_does_not_exist.so");
  /* A directory is not a library. */
  CHECK_STATUS(parley_runtime_load_plugin(rt, g_data_dir), PARLEY_ERROR_IO);
  /* The cpu plugin again: duplicate. */
  snprintf(cpu_path, sizeof cpu_path, "%s/libparley_cpu.so", g_plugin_dir);
  CHECK_STATUS(parley_runtime_load_plugin(rt, cpu_path), PARLEY_ERROR_PLUGIN);
  CHECK_ERROR_MENTIONS("already loaded");
  /* The runtime keeps working. */
  CHECK_OK(parley_runtime_plugin_count(rt, &after));
  CHECK(after == before);
  ki.struct_size = sizeof ki;
  CHECK_OK(parley_runtime_find_kernel(rt, "gemm", "cpu", PARLEY_DTYPE_F32, &ki));
  CHECK_NO_ERROR();
}

static void test_listing(parley_runtime *rt) {
  size_t np = 0, nd = 0, nk = 0, i, j, sum_devices = 0, sum_kernels = 0;
  size_t sentinel_count = 12345;
  parley_plugin_info pi;
  parley_device_info di;
  parley_kernel_info ki, ki2;
  int found_cpu_plugin = 0, found_cpu_device = 0, found_gemm = 0;

  /* counts: NULL runtime / NULL output */
  CHECK_STATUS(parley_runtime_plugin_count(NULL, &sentinel_count), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("runtime");
  CHECK_STATUS(parley_runtime_plugin_count(rt, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("out_count");
  CHECK_STATUS(parley_runtime_device_count(NULL, &sentinel_count), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_runtime_device_count(rt, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_runtime_kernel_count(NULL, &sentinel_count), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_runtime_kernel_count(rt, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(sentinel_count == 12345);

  CHECK_OK(parley_runtime_plugin_count(rt, &np));
  CHECK_OK(parley_runtime_device_count(rt, &nd));
  CHECK_OK(parley_runtime_kernel_count(rt, &nk));
  CHECK(np >= 1);
  CHECK(nd >= 1);
  CHECK(nk >= 1);

  /* plugins */
  for (i = 0; i < np; ++i) {
    memset(&pi, 0, sizeof pi);
    pi.struct_size = sizeof pi;
    CHECK_OK(parley_runtime_plugin_info(rt, i, &pi));
    CHECK(pi.struct_size == sizeof pi);
    CHECK(pi.name != NULL && pi.name[0] != '\0');
    CHECK(pi.version != NULL);
    CHECK(pi.path != NULL);
    CHECK(pi.abi_version != 0);
    sum_devices += pi.num_devices;
    sum_kernels += pi.num_kernels;
    if (pi.name && strcmp(pi.name, "cpu") == 0) {
      found_cpu_plugin = 1;
      CHECK(strstr(pi.path, "libparley_cpu.so") != NULL);
      CHECK(pi.num_devices == 1);
      CHECK(pi.num_kernels >= 1);
    }
  }
  CHECK(found_cpu_plugin);
  CHECK(sum_devices == nd);
  CHECK(sum_kernels == nk);

  memset(&pi, 0xAB, sizeof pi);
  pi.struct_size = sizeof pi;
  CHECK_STATUS(parley_runtime_plugin_info(rt, np, &pi), PARLEY_ERROR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("out of range");
  {
    unsigned char expect[sizeof pi];
    memset(expect, 0xAB, sizeof expect);
    memcpy(expect, &pi.struct_size, sizeof pi.struct_size);
    CHECK(memcmp(&pi, expect, sizeof pi) == 0); /* nothing written on error */
  }
  CHECK_STATUS(parley_runtime_plugin_info(rt, (size_t)-1, &pi), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_runtime_plugin_info(rt, 0, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("info");
  CHECK_STATUS(parley_runtime_plugin_info(NULL, 0, &pi), PARLEY_ERROR_INVALID_ARGUMENT);
  pi.struct_size = 0;
  CHECK_STATUS(parley_runtime_plugin_info(rt, 0, &pi), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("struct_size");
  pi.struct_size = SIZE_THROUGH(parley_plugin_info, num_kernels) - 1;
  CHECK_STATUS(parley_runtime_plugin_info(rt, 0, &pi), PARLEY_ERROR_INVALID_ARGUMENT);
  pi.struct_size = sizeof pi + 8;
  CHECK_STATUS(parley_runtime_plugin_info(rt, 0, &pi), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("struct_size");

  /* devices */
  for (i = 0; i < nd; ++i) {
    memset(&di, 0, sizeof di);
    di.struct_size = sizeof di;
    CHECK_OK(parley_runtime_device_info(rt, i, &di));
    CHECK(di.name != NULL && di.name[0] != '\0');
    CHECK(di.plugin != NULL && di.plugin[0] != '\0');
    CHECK(di.status != NULL);
    if (di.name && strcmp(di.name, "cpu") == 0) {
      found_cpu_device = 1;
      CHECK_STR(di.plugin, "cpu");
      CHECK(di.kind == 0);
      CHECK(di.available == 1);
      CHECK_STR(di.status, "");
    }
  }
  CHECK(found_cpu_device);
  di.struct_size = sizeof di;
  CHECK_STATUS(parley_runtime_device_info(rt, nd, &di), PARLEY_ERROR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("device");
  CHECK_STATUS(parley_runtime_device_info(rt, 0, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_runtime_device_info(NULL, 0, &di), PARLEY_ERROR_INVALID_ARGUMENT);
  di.struct_size = 0;
  CHECK_STATUS(parley_runtime_device_info(rt, 0, &di), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("struct_size");
  di.struct_size = sizeof di + 1;
  CHECK_STATUS(parley_runtime_device_info(rt, 0, &di), PARLEY_ERROR_INVALID_ARGUMENT);

  /* kernels: every selected one is what find_kernel returns */
  for (i = 0; i < nk; ++i) {
    memset(&ki, 0, sizeof ki);
    ki.struct_size = sizeof ki;
    CHECK_OK(parley_runtime_kernel_info(rt, i, &ki));
    CHECK(ki.op != NULL && ki.op[0] != '\0');
    CHECK(ki.device != NULL && ki.device[0] != '\0');
    CHECK(ki.name != NULL && ki.name[0] != '\0');
    CHECK(ki.plugin != NULL && ki.plugin[0] != '\0');
    CHECK((int)ki.dtype >= 0 && ki.dtype < PARLEY_DTYPE_COUNT_);
    CHECK(ki.selected == 0 || ki.selected == 1);
    if (ki.op && strcmp(ki.op, "gemm") == 0 && ki.device && strcmp(ki.device, "cpu") == 0) found_gemm = 1;
    /* "linear" kernels are selected per weight dtype too (plugin ABI 1.2) */
    if (ki.op && strcmp(ki.op, "linear") == 0)
      CHECK(ki.weight_dtype >= 0 && ki.weight_dtype < PARLEY_DTYPE_COUNT_);
    else
      CHECK(ki.weight_dtype == -1);
    /* find_kernel answers for "linear" with weights of the activation dtype */
    if (ki.selected == 1 && ki.op && ki.device && ki.name &&
        (strcmp(ki.op, "linear") != 0 || ki.weight_dtype == ki.dtype)) {
      memset(&ki2, 0, sizeof ki2);
      ki2.struct_size = sizeof ki2;
      CHECK_OK(parley_runtime_find_kernel(rt, ki.op, ki.device, ki.dtype, &ki2));
      CHECK(ki2.name != NULL && strcmp(ki2.name, ki.name) == 0);
      CHECK(ki2.selected == 1);
    }
    /* exactly one selected per (op, device, dtype, weight dtype) — none on an unavailable
     * device (e.g. the CUDA plugin's kernels on a machine without a GPU) */
    {
      int selected = 0, device_up = 1;
      memset(&ki2, 0, sizeof ki2);
      ki2.struct_size = sizeof ki2;
      if (ki.op && ki.device && parley_runtime_find_kernel(rt, ki.op, ki.device, ki.dtype, &ki2) == PARLEY_ERROR_DEVICE)
        device_up = 0;
      for (j = 0; j < nk; ++j) {
        memset(&ki2, 0, sizeof ki2);
        ki2.struct_size = sizeof ki2;
        if (parley_runtime_kernel_info(rt, j, &ki2) != PARLEY_OK) continue;
        if (ki.op && ki.device && strcmp(ki2.op, ki.op) == 0 && strcmp(ki2.device, ki.device) == 0 &&
            ki2.dtype == ki.dtype && ki2.weight_dtype == ki.weight_dtype)
          selected += ki2.selected;
      }
      CHECK(selected == device_up);
    }
  }
  CHECK(found_gemm);
  ki.struct_size = sizeof ki;
  CHECK_STATUS(parley_runtime_kernel_info(rt, nk, &ki), PARLEY_ERROR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("kernel");
  CHECK_STATUS(parley_runtime_kernel_info(rt, 0, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_runtime_kernel_info(NULL, 0, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  ki.struct_size = 0;
  CHECK_STATUS(parley_runtime_kernel_info(rt, 0, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  ki.struct_size = SIZE_THROUGH(parley_kernel_info, selected) - 1;
  CHECK_STATUS(parley_runtime_kernel_info(rt, 0, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("struct_size");
}

static void test_find_kernel(parley_runtime *rt) {
  parley_kernel_info ki;

  memset(&ki, 0, sizeof ki);
  ki.struct_size = sizeof ki;
  CHECK_OK(parley_runtime_find_kernel(rt, "gemm", "cpu", PARLEY_DTYPE_F32, &ki));
  CHECK_STR(ki.op, "gemm");
  CHECK_STR(ki.device, "cpu");
  CHECK(ki.dtype == PARLEY_DTYPE_F32);
  CHECK(ki.selected == 1);
  CHECK_STR(ki.plugin, "cpu");
  CHECK(ki.name != NULL && ki.name[0] != '\0');
  CHECK(ki.struct_size == sizeof ki);

  memset(&ki, 0x5A, sizeof ki);
  ki.struct_size = sizeof ki;
  CHECK_STATUS(parley_runtime_find_kernel(rt, "frobnicate", "cpu", PARLEY_DTYPE_F32, &ki),
               PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("frobnicate");
  CHECK_STATUS(parley_runtime_find_kernel(rt, "", "cpu", PARLEY_DTYPE_F32, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_runtime_find_kernel(rt, "GEMM", "cpu", PARLEY_DTYPE_F32, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_runtime_find_kernel(rt, "gemm", "cpu", PARLEY_DTYPE_COUNT_, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("dtype");
  CHECK_STATUS(parley_runtime_find_kernel(rt, "gemm", "cpu", (int32_t)-1, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_runtime_find_kernel(rt, "gemm", "cpu", (parley_dtype)1000, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  {
    unsigned char expect[sizeof ki];
    memset(expect, 0x5A, sizeof expect);
    memcpy(expect, &ki.struct_size, sizeof ki.struct_size);
    CHECK(memcmp(&ki, expect, sizeof ki) == 0); /* untouched on error */
  }
  /* A valid op no kernel serves for that dtype / device. */
  CHECK_STATUS(parley_runtime_find_kernel(rt, "gemm", "cpu", PARLEY_DTYPE_I64, &ki), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_runtime_find_kernel(rt, "gemm", "nonexistent", PARLEY_DTYPE_F32, &ki), PARLEY_ERROR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("nonexistent");
  /* NULLs and struct_size */
  CHECK_STATUS(parley_runtime_find_kernel(NULL, "gemm", "cpu", PARLEY_DTYPE_F32, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_runtime_find_kernel(rt, NULL, "cpu", PARLEY_DTYPE_F32, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("op");
  CHECK_STATUS(parley_runtime_find_kernel(rt, "gemm", NULL, PARLEY_DTYPE_F32, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("device");
  CHECK_STATUS(parley_runtime_find_kernel(rt, "gemm", "cpu", PARLEY_DTYPE_F32, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  ki.struct_size = 0;
  CHECK_STATUS(parley_runtime_find_kernel(rt, "gemm", "cpu", PARLEY_DTYPE_F32, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("struct_size");
}

/* parley_model_load_file must fail with `want` and leave the output alone. */
static void expect_load_refused(parley_runtime *rt, const char *path, const parley_model_options *o, parley_status want,
                                const char *mention, int line) {
  parley_model *m = MODEL_SENTINEL;
  parley_status st = parley_model_load_file(rt, path, o, &m);
  check_status_impl(st, want, "parley_model_load_file(...)", __FILE__, line);
  if (mention) check_error_impl(mention, __FILE__, line);
  check_impl(m == MODEL_SENTINEL, "output model untouched", __FILE__, line);
  if (st == PARLEY_OK && m != MODEL_SENTINEL) parley_model_free(m);
}

static void test_model_load(parley_runtime *rt) {
  parley_model *m = NULL;
  parley_model_options o;
  union {
    parley_model_options o;
    unsigned char bytes[sizeof(parley_model_options) + 64];
  } big;
  char missing[4200];
  unsigned char *file;
  size_t size = 0;
  void *aligned = NULL;
  parley_model_info info;

  /* _init */
  CHECK_STATUS(parley_model_options_init(NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  memset(&o, 0xCD, sizeof o);
  CHECK_OK(parley_model_options_init(&o));
  CHECK(o.struct_size == sizeof o);
  CHECK(o.verify_checksums == 1);
  CHECK_STR(o.device, "cpu");
  CHECK(o.borrow_memory == 0);

  /* from file, NULL and explicit options */
  CHECK_OK(parley_model_load_file(rt, g_decoder_path, NULL, &m));
  CHECK(m != NULL);
  CHECK_NO_ERROR();
  parley_model_free(m);
  m = NULL;
  o.verify_checksums = 0;
  CHECK_OK(parley_model_load_file(rt, g_decoder_path, &o, &m));
  parley_model_free(m);
  m = NULL;

  /* A binary built against the first version of the struct (it ended with
   * borrow_memory and 4 bytes of padding) passes sizeof = 32 and may leave
   * garbage in the padding: that must not be read as a later option. */
  parley_model_options_init(&o);
  o.struct_size = (SIZE_THROUGH(parley_model_options, borrow_memory) + 7) / 8 * 8;
  memset((unsigned char *)&o + SIZE_THROUGH(parley_model_options, borrow_memory), 0xA5,
         o.struct_size - SIZE_THROUGH(parley_model_options, borrow_memory));
  CHECK(o.struct_size == 32);
  CHECK_OK(parley_model_load_file(rt, g_decoder_path, &o, &m));
  parley_model_free(m);
  m = NULL;

  /* misuse */
  parley_model_options_init(&o);
  expect_load_refused(NULL, g_decoder_path, &o, PARLEY_ERROR_INVALID_ARGUMENT, "runtime", __LINE__);
  expect_load_refused(rt, NULL, &o, PARLEY_ERROR_INVALID_ARGUMENT, "path", __LINE__);
  CHECK_STATUS(parley_model_load_file(rt, g_decoder_path, &o, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("out_model");
  o.struct_size = 0;
  expect_load_refused(rt, g_decoder_path, &o, PARLEY_ERROR_INVALID_ARGUMENT, "struct_size", __LINE__);
  o.struct_size = SIZE_THROUGH(parley_model_options, borrow_memory) - 1;
  expect_load_refused(rt, g_decoder_path, &o, PARLEY_ERROR_INVALID_ARGUMENT, "struct_size", __LINE__);
  memset(&big, 0, sizeof big);
  parley_model_options_init(&big.o);
  big.o.struct_size = sizeof(parley_model_options) + 16;
  expect_load_refused(rt, g_decoder_path, &big.o, PARLEY_ERROR_INVALID_ARGUMENT, "struct_size", __LINE__);
  parley_model_options_init(&o);
  o.verify_checksums = 7;
  expect_load_refused(rt, g_decoder_path, &o, PARLEY_ERROR_INVALID_ARGUMENT, "verify_checksums", __LINE__);
  o.verify_checksums = -1;
  expect_load_refused(rt, g_decoder_path, &o, PARLEY_ERROR_INVALID_ARGUMENT, "verify_checksums", __LINE__);
  parley_model_options_init(&o);
  o.borrow_memory = 2;
  expect_load_refused(rt, g_decoder_path, &o, PARLEY_ERROR_INVALID_ARGUMENT, "borrow_memory", __LINE__);
  parley_model_options_init(&o);
  o.device = NULL;
  expect_load_refused(rt, g_decoder_path, &o, PARLEY_ERROR_INVALID_ARGUMENT, "device", __LINE__);
  o.device = "";
  expect_load_refused(rt, g_decoder_path, &o, PARLEY_ERROR_INVALID_ARGUMENT, "device", __LINE__);
  o.device = "nonexistent";
  expect_load_refused(rt, g_decoder_path, &o, PARLEY_ERROR_NOT_FOUND, "nonexistent", __LINE__);
  snprintf(missing, sizeof missing, "%s/no_such_model.parley", g_data_dir);
  expect_load_refused(rt, missing, NULL, PARLEY_ERROR_IO, "no_such_model.parley", __LINE__);
  expect_load_refused(rt, "", NULL, PARLEY_ERROR_IO, NULL, __LINE__);
  expect_load_refused(rt, g_data_dir, NULL, PARLEY_ERROR_IO, NULL, __LINE__); /* a directory */

  /* from memory */
  file = read_file(g_decoder_path, &size);
  CHECK(file != NULL);
  CHECK(size > 64);
  if (!file) return;

  {
    parley_model *mm = MODEL_SENTINEL;
    CHECK_STATUS(parley_model_load_memory(NULL, file, size, NULL, &mm), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("runtime");
    CHECK_STATUS(parley_model_load_memory(rt, NULL, size, NULL, &mm), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("data");
    CHECK_STATUS(parley_model_load_memory(rt, file, size, NULL, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("out_model");
    parley_model_options_init(&o);
    o.verify_checksums = 7;
    CHECK_STATUS(parley_model_load_memory(rt, file, size, &o, &mm), PARLEY_ERROR_INVALID_ARGUMENT);
    o.struct_size = 0;
    CHECK_STATUS(parley_model_load_memory(rt, file, size, &o, &mm), PARLEY_ERROR_INVALID_ARGUMENT);
    parley_model_options_init(&o);
    o.device = "nonexistent";
    CHECK_STATUS(parley_model_load_memory(rt, file, size, &o, &mm), PARLEY_ERROR_NOT_FOUND);
    /* Malformed content: empty, truncated, garbage. */
    CHECK_STATUS(parley_model_load_memory(rt, file, 0, NULL, &mm), PARLEY_ERROR_INVALID_MODEL);
    CHECK_STATUS(parley_model_load_memory(rt, file, 63, NULL, &mm), PARLEY_ERROR_INVALID_MODEL);
    CHECK_STATUS(parley_model_load_memory(rt, file, size / 2, NULL, &mm), PARLEY_ERROR_INVALID_MODEL);
    CHECK(mm == MODEL_SENTINEL);
  }

  /* copy (the default): the caller's buffer may go away right after. */
  {
    unsigned char *copy = (unsigned char *)malloc(size);
    CHECK(copy != NULL);
    if (copy) {
      memcpy(copy, file, size);
      CHECK_OK(parley_model_load_memory(rt, copy, size, NULL, &m));
      memset(copy, 0, size);
      free(copy);
      if (m) {
        info.struct_size = sizeof info;
        CHECK_OK(parley_model_get_info(m, &info));
        CHECK_STR(info.architecture, "LlamaForCausalLM");
        CHECK(info.file_size == size);
        CHECK_OK(parley_model_verify_tensor(m, "lm_head.weight"));
        CHECK_OK(parley_model_verify_tensor(m, "decoder.embed_tokens.weight"));
      }
      parley_model_free(m);
      m = NULL;
    }
  }

  /* copy from a misaligned buffer is fine */
  CHECK(posix_memalign(&aligned, 64, size + 64) == 0);
  if (aligned) {
    unsigned char *mis = (unsigned char *)aligned + 1;
    memcpy(mis, file, size);
    CHECK_OK(parley_model_load_memory(rt, mis, size, NULL, &m));
    parley_model_free(m);
    m = NULL;

    /* borrow of a misaligned buffer is refused */
    parley_model_options_init(&o);
    o.borrow_memory = 1;
    {
      parley_model *mm = MODEL_SENTINEL;
      CHECK_STATUS(parley_model_load_memory(rt, mis, size, &o, &mm), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK_ERROR_MENTIONS("align");
      CHECK(mm == MODEL_SENTINEL);
      CHECK_STATUS(parley_model_load_memory(rt, (unsigned char *)aligned + 32, size, &o, &mm),
                   PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK(mm == MODEL_SENTINEL);
    }

    /* borrow of an aligned buffer works in place */
    memcpy(aligned, file, size);
    CHECK_OK(parley_model_load_memory(rt, aligned, size, &o, &m));
    if (m) {
      parley_tensor_info ti;
      info.struct_size = sizeof info;
      CHECK_OK(parley_model_get_info(m, &info));
      CHECK_STR(info.architecture, "LlamaForCausalLM");
      CHECK(info.num_tensors == 22);
      ti.struct_size = sizeof ti;
      CHECK_OK(parley_model_find_tensor(m, "decoder.norm.weight", &ti));
      CHECK_OK(parley_model_verify_tensor(m, "decoder.norm.weight"));
    }
    parley_model_free(m);
    m = NULL;
    free(aligned);
  }
  free(file);
}

static void check_decoder_info(const parley_model *m, const char *path) {
  parley_model_info info;
  struct stat stbuf;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK_OK(parley_model_get_info(m, &info));
  CHECK(info.struct_size == sizeof info);
  CHECK(info.format_major == 1);
  CHECK(info.format_minor == 0);
  CHECK_STR(info.architecture, "LlamaForCausalLM");
  CHECK(info.kind == PARLEY_MODEL_DECODER_ONLY);
  CHECK(info.vocab_size == 64);
  /* 3 + 2 layers x 9 + the int8 scales */
  CHECK(info.num_tensors == 22);
  CHECK(info.num_tokenizers == 1);
  CHECK(info.num_metadata == 2);
  CHECK(info.has_chat_template == 1);
  CHECK(stat(path, &stbuf) == 0 && info.file_size == (uint64_t)stbuf.st_size);
  CHECK(info.weights_size > 0 && info.weights_size < info.file_size);
  CHECK_STR(info.device, "cpu");
}

/* parley_model_options.kv_cache_dtype: defaults, validation, the old
 * struct's tail padding, generation with F16 / I8 caches, and a device whose
 * attention kernel reads F32 only (UNSUPPORTED, never widened silently). */
static void test_kv_cache_option(parley_runtime *rt) {
  parley_model *m = NULL;
  parley_model_options o;
  union {
    parley_model_options o;
    unsigned char bytes[sizeof(parley_model_options)];
  } old;
  /* The llama parity model's first golden prompt; transformers' greedy
   * continuation with an F32 cache is 93 25 93 25. */
  static const int32_t prompt[] = {0, 11, 81, 92, 49}, want[4] = {93, 25, 93, 25};
  const int32_t *prompts[1] = {prompt};
  size_t lengths[1] = {5};
  const char *llama = getenv("PARLEY_PARITY_LLAMA");
  const int32_t dtypes[3] = {PARLEY_DTYPE_F32, PARLEY_DTYPE_F16, PARLEY_DTYPE_I8};
  int i;
  parley_runtime *rt2 = NULL;
  char fixture[4200];

  memset(&o, 0xCD, sizeof o);
  CHECK_OK(parley_model_options_init(&o));
  CHECK(o.kv_cache_dtype == PARLEY_DTYPE_F32);

  /* Values outside F32 / F16 / BF16 / I8 are refused naming the field. */
  o.kv_cache_dtype = PARLEY_DTYPE_I4;
  expect_load_refused(rt, g_decoder_path, &o, PARLEY_ERROR_INVALID_ARGUMENT, "kv_cache_dtype", __LINE__);
  o.kv_cache_dtype = 99;
  expect_load_refused(rt, g_decoder_path, &o, PARLEY_ERROR_INVALID_ARGUMENT, "kv_cache_dtype", __LINE__);
  o.kv_cache_dtype = -1;
  expect_load_refused(rt, g_decoder_path, &o, PARLEY_ERROR_INVALID_ARGUMENT, "kv_cache_dtype", __LINE__);

  /* A binary built before the option passes the old size (through
   * read_into_memory, rounded up to 8) with garbage in its tail padding. */
  memset(&old, 0xA5, sizeof old);
  parley_model_options_init(&old.o);
  old.o.struct_size = (SIZE_THROUGH(parley_model_options, read_into_memory) + 7) / 8 * 8;
  memset(old.bytes + SIZE_THROUGH(parley_model_options, read_into_memory), 0xA5,
         sizeof old.bytes - SIZE_THROUGH(parley_model_options, read_into_memory));
  CHECK(old.o.struct_size == 40);
  CHECK_OK(parley_model_load_file(rt, g_decoder_path, &old.o, &m));
  parley_model_free(m);
  m = NULL;

  /* Each cache type generates (greedy, 4 tokens; F16 keeps the tokens, the
   * margins of this model being wide, I8 is reported). */
  CHECK(llama != NULL);
  for (i = 0; i < 3 && llama; ++i) {
    parley_generation_options g;
    parley_generation_result *r = NULL;
    const int32_t *ids = NULL;
    size_t n = 0;
    float score = 0;
    parley_model_options_init(&o);
    o.kv_cache_dtype = dtypes[i];
    CHECK_OK(parley_model_load_file(rt, llama, &o, &m));
    if (!m) continue;
    CHECK_OK(parley_model_prepare(m));
    {
      /* llama: 2 layers x 2 (K, V) x 2 kv heads x head_dim 8: 256 bytes per
       * token in F32, 128 in F16, 64 + 8 scales x 4 = 96 in I8. */
      parley_model_memory mem;
      const uint64_t want_bytes[3] = {256, 128, 96};
      memset(&mem, 0, sizeof mem);
      mem.struct_size = sizeof mem;
      CHECK_OK(parley_model_memory_usage(m, &mem));
      CHECK(mem.kv_bytes_per_token == want_bytes[i]);
    }
    CHECK_OK(parley_generation_options_init(m, &g));
    g.max_new_tokens = 4;
    g.min_new_tokens = 4;
    g.num_beams = 1;
    CHECK_OK(parley_generate(m, prompts, lengths, 1, &g, &r));
    if (r) {
      CHECK_OK(parley_result_hypothesis(r, 0, 0, &ids, &n, &score));
      CHECK(n == 4);
      if (dtypes[i] != PARLEY_DTYPE_I8) CHECK(n == 4 && memcmp(ids, want, sizeof want) == 0);
      printf("kv cache %s: greedy %d %d %d %d\n", parley_dtype_name(dtypes[i]), n > 0 ? ids[0] : -1,
             n > 1 ? ids[1] : -1, n > 2 ? ids[2] : -1, n > 3 ? ids[3] : -1);
    }
    parley_result_free(r);
    parley_model_free(m);
    m = NULL;
  }

  /* A cpu attention kernel without the KV_F16 / KV_I8 flags wins the
   * selection: F16 / I8 are UNSUPPORTED naming the device and the option;
   * F32 still loads. */
  snprintf(fixture, sizeof fixture, "%s",
           getenv("PARLEY_F32_ATTENTION_PLUGIN") ? getenv("PARLEY_F32_ATTENTION_PLUGIN") : "");
  CHECK(fixture[0] != 0);
  CHECK_OK(make_runtime(&rt2));
  if (!rt2 || !fixture[0]) return;
  CHECK_OK(parley_runtime_load_plugin(rt2, fixture));
  parley_model_options_init(&o);
  o.kv_cache_dtype = PARLEY_DTYPE_F16;
  expect_load_refused(rt2, g_decoder_path, &o, PARLEY_ERROR_UNSUPPORTED, "kv_cache_dtype", __LINE__);
  CHECK_ERROR_MENTIONS("'cpu'");
  o.kv_cache_dtype = PARLEY_DTYPE_I8;
  expect_load_refused(rt2, g_decoder_path, &o, PARLEY_ERROR_UNSUPPORTED, "f32_only_attention", __LINE__);
  o.kv_cache_dtype = PARLEY_DTYPE_F32;
  CHECK_OK(parley_model_load_file(rt2, g_decoder_path, &o, &m));
  parley_model_free(m);
  parley_runtime_free(rt2);
}

static void test_decoder_introspection(parley_runtime *rt) {
  parley_model *m = NULL;
  parley_model_info info;
  parley_tensor_info ti;
  parley_tokenizer_info tk;
  parley_kernel_info ki;
  int64_t iv = -7;
  double fv = -7.0;
  size_t n = 0, i, k;
  uint64_t weights = 0;
  const char *key = NULL, *value = NULL, *prev = NULL;
  const char *s = g_sentinel_string;
  int32_t is_float = -1;
  int saw_rms = 0, saw_layer_norm = 0, saw_rotary = 0, saw_gated = 0;

  CHECK_OK(parley_model_load_file(rt, g_decoder_path, NULL, &m));
  if (!m) return;
  check_decoder_info(m, g_decoder_path);

  /* get_info misuse */
  info.struct_size = sizeof info;
  CHECK_STATUS(parley_model_get_info(NULL, &info), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("model");
  CHECK_STATUS(parley_model_get_info(m, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  info.struct_size = 0;
  CHECK_STATUS(parley_model_get_info(m, &info), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("struct_size");
  info.struct_size = sizeof info + 8;
  CHECK_STATUS(parley_model_get_info(m, &info), PARLEY_ERROR_INVALID_ARGUMENT);

  /* config */
  CHECK_OK(parley_model_config_int(m, "decoder.num_layers", &iv));
  CHECK(iv == 2);
  CHECK_OK(parley_model_config_int(m, "decoder.hidden_size", &iv));
  CHECK(iv == 32);
  CHECK_OK(parley_model_config_int(m, "decoder.num_heads", &iv));
  CHECK(iv == 4);
  CHECK_OK(parley_model_config_int(m, "decoder.num_kv_heads", &iv));
  CHECK(iv == 2);
  CHECK_OK(parley_model_config_int(m, "decoder.head_dim", &iv));
  CHECK(iv == 8);
  CHECK_OK(parley_model_config_int(m, "decoder.ffn_size", &iv));
  CHECK(iv == 64);
  CHECK_OK(parley_model_config_int(m, "decoder.max_positions", &iv));
  CHECK(iv == 128);
  CHECK_OK(parley_model_config_int(m, "vocab_size", &iv));
  CHECK(iv == 64);
  CHECK_OK(parley_model_config_int(m, "kind", &iv));
  CHECK(iv == PARLEY_MODEL_DECODER_ONLY);
  CHECK_OK(parley_model_config_int(m, "tie_word_embeddings", &iv));
  CHECK(iv == 0);
  CHECK_OK(parley_model_config_int(m, "generation.bos_token_id", &iv));
  CHECK(iv == 1);
  CHECK_OK(parley_model_config_int(m, "generation.num_eos_token_ids", &iv));
  CHECK(iv == 2);
  CHECK_OK(parley_model_config_int(m, "generation.eos_token_ids.1", &iv));
  CHECK(iv == 3);
  CHECK_OK(parley_model_config_int(m, "generation.max_length", &iv));
  CHECK(iv == 64);
  CHECK_OK(parley_model_config_float(m, "decoder.rope_theta", &fv));
  CHECK(fv == 10000.0);
  CHECK_OK(parley_model_config_float(m, "decoder.norm_epsilon", &fv));
  CHECK(fabs(fv - 1e-6) < 1e-12);
  CHECK_OK(parley_model_config_float(m, "decoder.num_layers", &fv)); /* int read as float */
  CHECK(fv == 2.0);
  iv = -7;
  CHECK_STATUS(parley_model_config_int(m, "decoder.rope_theta", &iv), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("decoder.rope_theta");
  CHECK(iv == -7);
  CHECK_STATUS(parley_model_config_int(m, "decoder.norm_epsilon", &iv), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(iv == -7);
  CHECK_STATUS(parley_model_config_int(m, "no.such.key", &iv), PARLEY_ERROR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("no.such.key");
  CHECK(iv == -7);
  fv = -7.0;
  CHECK_STATUS(parley_model_config_float(m, "no.such.key", &fv), PARLEY_ERROR_NOT_FOUND);
  CHECK(fv == -7.0);
  CHECK_STATUS(parley_model_config_int(m, "", &iv), PARLEY_ERROR_NOT_FOUND);
  /* encoder keys are absent for a decoder-only model */
  CHECK_STATUS(parley_model_config_int(m, "encoder.num_layers", &iv), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_model_config_int(m, "encoder.hidden_size", &iv), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_model_config_float(m, "encoder.norm_epsilon", &fv), PARLEY_ERROR_NOT_FOUND);
  CHECK(iv == -7);
  CHECK_STATUS(parley_model_config_int(NULL, "vocab_size", &iv), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_config_int(m, NULL, &iv), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("key");
  CHECK_STATUS(parley_model_config_int(m, "vocab_size", NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_config_float(NULL, "vocab_size", &fv), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_config_float(m, NULL, &fv), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_config_float(m, "vocab_size", NULL), PARLEY_ERROR_INVALID_ARGUMENT);

  /* config keys: each readable the way it says */
  CHECK_OK(parley_model_config_count(m, &n));
  CHECK(n > 20);
  for (i = 0; i < n; ++i) {
    key = NULL;
    is_float = -1;
    CHECK_OK(parley_model_config_key(m, i, &key, &is_float));
    CHECK(key != NULL && key[0] != '\0');
    CHECK(is_float == 0 || is_float == 1);
    if (!key) continue;
    CHECK(strncmp(key, "encoder.", 8) != 0);
    if (is_float == 1) {
      CHECK_STATUS(parley_model_config_int(m, key, &iv), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK_OK(parley_model_config_float(m, key, &fv));
    } else {
      CHECK_OK(parley_model_config_int(m, key, &iv));
      CHECK_OK(parley_model_config_float(m, key, &fv));
      CHECK(fv == (double)iv);
    }
  }
  CHECK_OK(parley_model_config_key(m, 0, &key, NULL)); /* out_is_float is optional */
  key = s;
  CHECK_STATUS(parley_model_config_key(m, n, &key, &is_float), PARLEY_ERROR_NOT_FOUND);
  CHECK(key == s);
  CHECK_STATUS(parley_model_config_key(m, 0, NULL, &is_float), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_config_key(NULL, 0, &key, &is_float), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_config_count(NULL, &n), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_config_count(m, NULL), PARLEY_ERROR_INVALID_ARGUMENT);

  /* tensors: name order, shapes consistent with lengths */
  info.struct_size = sizeof info;
  CHECK_OK(parley_model_get_info(m, &info));
  prev = NULL;
  for (i = 0; i < info.num_tensors; ++i) {
    size_t elems = 1;
    memset(&ti, 0, sizeof ti);
    ti.struct_size = sizeof ti;
    CHECK_OK(parley_model_tensor_info(m, i, &ti));
    CHECK(ti.name != NULL);
    if (!ti.name) continue;
    if (prev) CHECK(strcmp(prev, ti.name) < 0);
    prev = ti.name;
    CHECK(ti.rank >= 1 && ti.rank <= PARLEY_MAX_RANK);
    for (k = 0; k < ti.rank && k < PARLEY_MAX_RANK; ++k) {
      CHECK(ti.shape[k] > 0);
      elems *= (size_t)ti.shape[k];
    }
    CHECK(ti.length == elems * dtype_size(ti.dtype));
    CHECK(ti.offset % 64 == 0);
    weights += ti.length;
    CHECK_OK(parley_model_verify_tensor(m, ti.name));
    {
      parley_tensor_info by_name;
      memset(&by_name, 0, sizeof by_name);
      by_name.struct_size = sizeof by_name;
      CHECK_OK(parley_model_find_tensor(m, ti.name, &by_name));
      CHECK(memcmp(&by_name, &ti, sizeof ti) == 0);
    }
  }
  CHECK(weights == info.weights_size);

  memset(&ti, 0, sizeof ti);
  ti.struct_size = sizeof ti;
  CHECK_OK(parley_model_tensor_info(m, 0, &ti));
  CHECK_STR(ti.name, "decoder.embed_tokens.weight");
  CHECK(ti.dtype == PARLEY_DTYPE_F32 && ti.rank == 2 && ti.shape[0] == 64 && ti.shape[1] == 32);
  CHECK(ti.scale_tensor == NULL);
  CHECK_OK(parley_model_tensor_info(m, info.num_tensors - 1, &ti));
  CHECK_STR(ti.name, "lm_head.weight");
  CHECK(ti.dtype == PARLEY_DTYPE_F32 && ti.rank == 2 && ti.shape[0] == 64 && ti.shape[1] == 32);

  CHECK_OK(parley_model_find_tensor(m, "decoder.layers.0.self_attn.k_proj.weight", &ti));
  CHECK(ti.dtype == PARLEY_DTYPE_F32 && ti.rank == 2 && ti.shape[0] == 16 && ti.shape[1] == 32);
  CHECK(ti.length == 16 * 32 * 4);
  CHECK_OK(parley_model_find_tensor(m, "decoder.norm.weight", &ti));
  CHECK(ti.dtype == PARLEY_DTYPE_F32 && ti.rank == 1 && ti.shape[0] == 32);
  CHECK_OK(parley_model_find_tensor(m, "decoder.layers.1.mlp.down_proj.weight", &ti));
  CHECK(ti.dtype == PARLEY_DTYPE_I8 && ti.rank == 2 && ti.shape[0] == 32 && ti.shape[1] == 64);
  CHECK(ti.length == 32 * 64);
  CHECK_STR(ti.scale_tensor, "decoder.layers.1.mlp.down_proj.weight_scale");
  CHECK(ti.scale_axis == 0);
  CHECK_OK(parley_model_find_tensor(m, "decoder.layers.1.mlp.down_proj.weight_scale", &ti));
  CHECK(ti.dtype == PARLEY_DTYPE_F32 && ti.rank == 1 && ti.shape[0] == 32);
  CHECK_OK(parley_model_find_tensor(m, "decoder.layers.0.mlp.down_proj.weight", &ti));
  CHECK(ti.dtype == PARLEY_DTYPE_F32 && ti.shape[0] == 32 && ti.shape[1] == 64);

  /* tensor misuse; outputs untouched */
  memset(&ti, 0x77, sizeof ti);
  ti.struct_size = sizeof ti;
  CHECK_STATUS(parley_model_tensor_info(m, info.num_tensors, &ti), PARLEY_ERROR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("out of range");
  CHECK_STATUS(parley_model_tensor_info(m, (size_t)-1, &ti), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_model_find_tensor(m, "no.such.tensor", &ti), PARLEY_ERROR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("no.such.tensor");
  CHECK_STATUS(parley_model_find_tensor(m, "", &ti), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_model_find_tensor(m, "decoder.norm.weigh", &ti), PARLEY_ERROR_NOT_FOUND);
  {
    unsigned char expect[sizeof ti];
    memset(expect, 0x77, sizeof expect);
    memcpy(expect, &ti.struct_size, sizeof ti.struct_size);
    CHECK(memcmp(&ti, expect, sizeof ti) == 0);
  }
  CHECK_STATUS(parley_model_tensor_info(NULL, 0, &ti), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_tensor_info(m, 0, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_find_tensor(NULL, "decoder.norm.weight", &ti), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_find_tensor(m, NULL, &ti), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_find_tensor(m, "decoder.norm.weight", NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  ti.struct_size = 0;
  CHECK_STATUS(parley_model_tensor_info(m, 0, &ti), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("struct_size");
  ti.struct_size = SIZE_THROUGH(parley_tensor_info, scale_axis) - 1;
  CHECK_STATUS(parley_model_find_tensor(m, "decoder.norm.weight", &ti), PARLEY_ERROR_INVALID_ARGUMENT);
  ti.struct_size = sizeof ti + 8;
  CHECK_STATUS(parley_model_find_tensor(m, "decoder.norm.weight", &ti), PARLEY_ERROR_INVALID_ARGUMENT);

  /* verify_tensor */
  CHECK_OK(parley_model_verify_tensor(m, "decoder.layers.1.mlp.down_proj.weight"));
  CHECK_NO_ERROR();
  CHECK_STATUS(parley_model_verify_tensor(m, "no.such.tensor"), PARLEY_ERROR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("no.such.tensor");
  CHECK_STATUS(parley_model_verify_tensor(m, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_verify_tensor(NULL, "lm_head.weight"), PARLEY_ERROR_INVALID_ARGUMENT);

  /* metadata (key order: license, source) */
  CHECK_OK(parley_model_metadata_get(m, "license", &value));
  CHECK_STR(value, "MIT");
  CHECK_OK(parley_model_metadata_get(m, "source", &value));
  CHECK_STR(value, "tests/data/make_test_models.py");
  CHECK_OK(parley_model_metadata_at(m, 0, &key, &value));
  CHECK_STR(key, "license");
  CHECK_STR(value, "MIT");
  CHECK_OK(parley_model_metadata_at(m, 1, &key, &value));
  CHECK_STR(key, "source");
  CHECK_STR(value, "tests/data/make_test_models.py");
  key = s;
  value = s;
  CHECK_STATUS(parley_model_metadata_at(m, 2, &key, &value), PARLEY_ERROR_NOT_FOUND);
  CHECK(key == s && value == s);
  CHECK_STATUS(parley_model_metadata_get(m, "no_such_key", &value), PARLEY_ERROR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("no_such_key");
  CHECK(value == s);
  CHECK_STATUS(parley_model_metadata_get(m, "LICENSE", &value), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_model_metadata_get(NULL, "license", &value), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_metadata_get(m, NULL, &value), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_metadata_get(m, "license", NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_metadata_at(NULL, 0, &key, &value), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_metadata_at(m, 0, NULL, &value), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_metadata_at(m, 0, &key, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(value == s);

  /* chat template */
  value = NULL;
  CHECK_OK(parley_model_chat_template(m, &value));
  CHECK(value != NULL && strncmp(value, "{% for message in messages %}", 29) == 0);
  CHECK(value != NULL && strstr(value, "add_generation_prompt") != NULL);
  CHECK_STATUS(parley_model_chat_template(NULL, &value), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_chat_template(m, NULL), PARLEY_ERROR_INVALID_ARGUMENT);

  /* tokenizer */
  memset(&tk, 0, sizeof tk);
  tk.struct_size = sizeof tk;
  CHECK_OK(parley_model_tokenizer_info(m, 0, &tk));
  CHECK(tk.kind == PARLEY_TOKENIZER_BYTE_LEVEL_BPE);
  CHECK(tk.role == PARLEY_TOKENIZER_SHARED);
  CHECK(tk.model_size > 100);
  CHECK(tk.num_special_tokens == 4);
  CHECK_STATUS(parley_model_tokenizer_info(m, 1, &tk), PARLEY_ERROR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("tokenizer");
  CHECK_STATUS(parley_model_tokenizer_info(NULL, 0, &tk), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_tokenizer_info(m, 0, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  tk.struct_size = 0;
  CHECK_STATUS(parley_model_tokenizer_info(m, 0, &tk), PARLEY_ERROR_INVALID_ARGUMENT);
  tk.struct_size = sizeof tk + 8;
  CHECK_STATUS(parley_model_tokenizer_info(m, 0, &tk), PARLEY_ERROR_INVALID_ARGUMENT);

  /* kernel plan: embedding, gemm, attention, rms_norm, rotary, gated_activation, add, softmax, log_softmax, topk */
  CHECK_OK(parley_model_kernel_plan_count(m, &n));
  CHECK(n == 10);
  for (i = 0; i < n; ++i) {
    memset(&ki, 0, sizeof ki);
    ki.struct_size = sizeof ki;
    CHECK_OK(parley_model_kernel_plan_at(m, i, &ki));
    CHECK(ki.op != NULL);
    CHECK_STR(ki.device, "cpu");
    CHECK(ki.dtype == PARLEY_DTYPE_F32);
    CHECK(ki.name != NULL && ki.plugin != NULL);
    /* the cpu plugin serves every op in F32 */
    CHECK(ki.name != NULL && ki.name[0] != '\0');
    CHECK(ki.selected == 1);
    if (!ki.op) continue;
    if (strcmp(ki.op, "rms_norm") == 0) saw_rms = 1;
    if (strcmp(ki.op, "layer_norm") == 0) saw_layer_norm = 1;
    if (strcmp(ki.op, "rotary") == 0) saw_rotary = 1;
    if (strcmp(ki.op, "gated_activation") == 0) saw_gated = 1;
  }
  CHECK(saw_rms && saw_rotary && saw_gated && !saw_layer_norm);
  ki.struct_size = sizeof ki;
  CHECK_STATUS(parley_model_kernel_plan_at(m, n, &ki), PARLEY_ERROR_NOT_FOUND);
  CHECK_STATUS(parley_model_kernel_plan_at(NULL, 0, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_kernel_plan_at(m, 0, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  ki.struct_size = 0;
  CHECK_STATUS(parley_model_kernel_plan_at(m, 0, &ki), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_kernel_plan_count(NULL, &n), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_kernel_plan_count(m, NULL), PARLEY_ERROR_INVALID_ARGUMENT);

  /* a container-only file (no final norm) cannot be prepared: the plan keeps
   * only its per-op entries and the memory report names the missing tensor */
  {
    size_t before = n;
    parley_model_memory mem;
    CHECK_STATUS(parley_model_prepare(m), PARLEY_ERROR_INVALID_MODEL);
    CHECK_OK(parley_model_kernel_plan_count(m, &n));
    CHECK(n == before);
    memset(&mem, 0, sizeof mem);
    mem.struct_size = sizeof mem;
    CHECK_STATUS(parley_model_memory_usage(m, &mem), PARLEY_ERROR_INVALID_MODEL);
    CHECK_ERROR_MENTIONS("final_norm");
    CHECK(mem.file_bytes == 0); /* outputs untouched on failure */
    CHECK_STATUS(parley_model_memory_usage(NULL, &mem), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_model_memory_usage(m, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
    mem.struct_size = 8;
    CHECK_STATUS(parley_model_memory_usage(m, &mem), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("struct_size");
  }

  parley_model_free(m);
  parley_model_free(NULL);
}

static void test_seq2seq_introspection(parley_runtime *rt) {
  parley_model *m = NULL;
  parley_model_info info;
  parley_tokenizer_info tk;
  parley_tensor_info ti;
  parley_kernel_info ki;
  int64_t iv = 0;
  double fv = 0;
  size_t n = 0, i;
  const char *s = g_sentinel_string, *value = s;
  int saw_layer_norm = 0, saw_rms = 0, saw_act = 0, saw_rotary = 0;

  CHECK_OK(parley_model_load_file(rt, g_seq2seq_path, NULL, &m));
  if (!m) return;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK_OK(parley_model_get_info(m, &info));
  CHECK_STR(info.architecture, "MarianMTModel");
  CHECK(info.kind == PARLEY_MODEL_ENCODER_DECODER);
  CHECK(info.vocab_size == 48);
  CHECK(info.num_tensors == 86);
  CHECK(info.num_tokenizers == 2);
  CHECK(info.num_metadata == 2);
  CHECK(info.has_chat_template == 0);
  CHECK(info.format_major == 1);

  CHECK_OK(parley_model_config_int(m, "encoder.num_layers", &iv));
  CHECK(iv == 2);
  CHECK_OK(parley_model_config_int(m, "encoder.hidden_size", &iv));
  CHECK(iv == 16);
  CHECK_OK(parley_model_config_int(m, "decoder.num_layers", &iv));
  CHECK(iv == 2);
  CHECK_OK(parley_model_config_int(m, "tie_word_embeddings", &iv));
  CHECK(iv == 1);
  CHECK_OK(parley_model_config_int(m, "generation.num_beams", &iv));
  CHECK(iv == 4);
  CHECK_OK(parley_model_config_int(m, "generation.decoder_start_token_id", &iv));
  CHECK(iv == 47);
  CHECK_OK(parley_model_config_float(m, "encoder.embedding_scale", &fv));
  CHECK(fv == 4.0);
  CHECK_STATUS(parley_model_config_int(m, "encoder.embedding_scale", &iv), PARLEY_ERROR_INVALID_ARGUMENT);

  CHECK_STATUS(parley_model_chat_template(m, &value), PARLEY_ERROR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("chat template");
  CHECK(value == s);

  tk.struct_size = sizeof tk;
  CHECK_OK(parley_model_tokenizer_info(m, 0, &tk));
  CHECK(tk.kind == PARLEY_TOKENIZER_SENTENCEPIECE);
  CHECK(tk.role == PARLEY_TOKENIZER_SOURCE);
  CHECK(tk.model_size == 19); /* b"dummy source.spm\x00\x01\x02" */
  CHECK(tk.num_special_tokens == 3);
  CHECK_OK(parley_model_tokenizer_info(m, 1, &tk));
  CHECK(tk.kind == PARLEY_TOKENIZER_SENTENCEPIECE);
  CHECK(tk.role == PARLEY_TOKENIZER_TARGET);
  CHECK(tk.model_size == 31); /* b"dummy target.spm, a bit longer\xff" */
  CHECK_STATUS(parley_model_tokenizer_info(m, 2, &tk), PARLEY_ERROR_NOT_FOUND);

  ti.struct_size = sizeof ti;
  CHECK_OK(parley_model_find_tensor(m, "final_logits_bias", &ti));
  CHECK(ti.rank == 2 && ti.shape[0] == 1 && ti.shape[1] == 48 && ti.dtype == PARLEY_DTYPE_F32);
  CHECK_OK(parley_model_verify_tensor(m, "final_logits_bias"));
  CHECK_OK(parley_model_find_tensor(m, "encoder.layers.1.fc1.weight", &ti));
  CHECK(ti.rank == 2 && ti.shape[0] == 32 && ti.shape[1] == 16);
  CHECK_OK(parley_model_tensor_info(m, 0, &ti));
  CHECK_STR(ti.name, "decoder.layers.0.encoder_attn.k_proj.bias");

  CHECK_OK(parley_model_kernel_plan_count(m, &n));
  for (i = 0; i < n; ++i) {
    memset(&ki, 0, sizeof ki);
    ki.struct_size = sizeof ki;
    CHECK_OK(parley_model_kernel_plan_at(m, i, &ki));
    if (!ki.op) continue;
    if (strcmp(ki.op, "layer_norm") == 0) saw_layer_norm = 1;
    if (strcmp(ki.op, "rms_norm") == 0) saw_rms = 1;
    if (strcmp(ki.op, "activation") == 0) saw_act = 1;
    if (strcmp(ki.op, "rotary") == 0) saw_rotary = 1;
  }
  CHECK(saw_layer_norm && saw_act && !saw_rms && !saw_rotary);
  parley_model_free(m);
}

/* An old caller: a struct of the first release's size followed by bytes it owns. */
static void test_old_caller(parley_runtime *rt) {
  parley_model *m = NULL;
  const size_t v1 = SIZE_THROUGH(parley_tensor_info, scale_axis);
  union {
    parley_tensor_info ti;
    unsigned char bytes[sizeof(parley_tensor_info) + 32];
  } buf;
  size_t i;
  int canary_ok = 1;

  CHECK(v1 <= sizeof(parley_tensor_info));
  CHECK_OK(parley_model_load_file(rt, g_decoder_path, NULL, &m));
  if (!m) return;

  memset(&buf, 0xC5, sizeof buf);
  buf.ti.struct_size = v1;
  CHECK_OK(parley_model_find_tensor(m, "decoder.layers.1.mlp.down_proj.weight", &buf.ti));
  CHECK(buf.ti.struct_size == v1); /* kept as the caller set it */
  CHECK_STR(buf.ti.name, "decoder.layers.1.mlp.down_proj.weight");
  CHECK(buf.ti.dtype == PARLEY_DTYPE_I8);
  CHECK(buf.ti.rank == 2);
  CHECK(buf.ti.scale_axis == 0);
  for (i = v1; i < sizeof buf.bytes; ++i)
    if (buf.bytes[i] != 0xC5) canary_ok = 0;
  CHECK(canary_ok);

  memset(&buf, 0xC5, sizeof buf);
  buf.ti.struct_size = v1;
  CHECK_OK(parley_model_tensor_info(m, 0, &buf.ti));
  canary_ok = 1;
  for (i = v1; i < sizeof buf.bytes; ++i)
    if (buf.bytes[i] != 0xC5) canary_ok = 0;
  CHECK(canary_ok);

  /* Same for the kernel info of the first release. */
  {
    const size_t kv1 = SIZE_THROUGH(parley_kernel_info, selected);
    union {
      parley_kernel_info ki;
      unsigned char bytes[sizeof(parley_kernel_info) + 32];
    } kb;
    memset(&kb, 0xC5, sizeof kb);
    kb.ki.struct_size = kv1;
    CHECK_OK(parley_runtime_find_kernel(rt, "gemm", "cpu", PARLEY_DTYPE_F32, &kb.ki));
    CHECK(kb.ki.selected == 1);
    canary_ok = 1;
    for (i = kv1; i < sizeof kb.bytes; ++i)
      if (kb.bytes[i] != 0xC5) canary_ok = 0;
    CHECK(canary_ok);
  }
  parley_model_free(m);
}

/* ------------------------------------------------------------------ threads */

#define NUM_THREADS 4
#define QUERY_ITERATIONS 300
#define LOAD_ITERATIONS 6

typedef struct query_arg {
  const parley_model *model;
  parley_runtime *runtime;
  int index;
  int errors; /* counted locally, checked on the main thread */
  pthread_barrier_t *barrier;
} query_arg;

static void *query_thread(void *p) {
  query_arg *a = (query_arg *)p;
  char own_key[64];
  char other_key[64];
  int i, j;
  int64_t v = 0;
  const char *value = NULL;

  snprintf(own_key, sizeof own_key, "missing-key-of-thread-%d", a->index);
  for (i = 0; i < QUERY_ITERATIONS; ++i) {
    parley_model_info info;
    parley_tensor_info ti;
    info.struct_size = sizeof info;
    if (parley_model_get_info(a->model, &info) != PARLEY_OK || info.num_tensors != 22 || info.vocab_size != 64 ||
        strcmp(info.architecture, "LlamaForCausalLM") != 0)
      ++a->errors;
    ti.struct_size = sizeof ti;
    if (parley_model_tensor_info(a->model, (size_t)(i + a->index) % 22, &ti) != PARLEY_OK)
      ++a->errors;
    else if (parley_model_find_tensor(a->model, ti.name, &ti) != PARLEY_OK)
      ++a->errors;
    if (parley_model_config_int(a->model, "decoder.num_layers", &v) != PARLEY_OK || v != 2) ++a->errors;
    if (parley_model_metadata_get(a->model, "license", &value) != PARLEY_OK || strcmp(value, "MIT") != 0) ++a->errors;
    if (parley_model_config_int(a->model, own_key, &v) != PARLEY_ERROR_NOT_FOUND ||
        strstr(parley_last_error(), own_key) == NULL)
      ++a->errors;
    if (i % 50 == 0 && parley_model_verify_tensor(a->model, "lm_head.weight") != PARLEY_OK) ++a->errors;
  }

  /* Per-thread last error: every thread leaves its own error, then they all look. */
  parley_model_config_int(a->model, own_key, &v);
  pthread_barrier_wait(a->barrier);
  if (strstr(parley_last_error(), own_key) == NULL) ++a->errors;
  for (j = 0; j < NUM_THREADS; ++j) {
    if (j == a->index) continue;
    snprintf(other_key, sizeof other_key, "missing-key-of-thread-%d", j);
    if (strstr(parley_last_error(), other_key) != NULL) ++a->errors;
  }
  pthread_barrier_wait(a->barrier);
  /* Thread 0 succeeds now; the others must keep their errors. */
  if (a->index == 0) {
    if (parley_model_config_int(a->model, "vocab_size", &v) != PARLEY_OK || parley_last_error()[0] != '\0') ++a->errors;
  }
  pthread_barrier_wait(a->barrier);
  if (a->index != 0 && strstr(parley_last_error(), own_key) == NULL) ++a->errors;
  if (a->index == 0 && parley_last_error()[0] != '\0') ++a->errors;
  return NULL;
}

static void *load_thread(void *p) {
  query_arg *a = (query_arg *)p;
  int i;
  for (i = 0; i < LOAD_ITERATIONS; ++i) {
    parley_model *m = NULL;
    parley_model_info info;
    int seq = (i + a->index) % 2;
    parley_model_options o;
    parley_model_options_init(&o);
    o.verify_checksums = i % 3 == 0 ? 0 : 1;
    if (parley_model_load_file(a->runtime, seq ? g_seq2seq_path : g_decoder_path, &o, &m) != PARLEY_OK) {
      fprintf(stderr, "thread %d: load failed: %s\n", a->index, parley_last_error());
      ++a->errors;
      continue;
    }
    info.struct_size = sizeof info;
    if (parley_model_get_info(m, &info) != PARLEY_OK ||
        strcmp(info.architecture, seq ? "MarianMTModel" : "LlamaForCausalLM") != 0 ||
        info.num_tensors != (seq ? 86u : 22u))
      ++a->errors;
    /* A failing load on the same runtime at the same time must not disturb the others. */
    if (i == 1) {
      parley_model *bad = MODEL_SENTINEL;
      if (parley_model_load_file(a->runtime, "/nonexistent/dir/model.parley", NULL, &bad) != PARLEY_ERROR_IO ||
          bad != MODEL_SENTINEL)
        ++a->errors;
    }
    /* Registry queries and a failing explicit plugin load, concurrently with the loads. */
    {
      parley_kernel_info ki;
      parley_plugin_info pi;
      size_t count = 0;
      ki.struct_size = sizeof ki;
      if (parley_runtime_find_kernel(a->runtime, "gemm", "cpu", PARLEY_DTYPE_F32, &ki) != PARLEY_OK || ki.selected != 1)
        ++a->errors;
      pi.struct_size = sizeof pi;
      if (parley_runtime_plugin_count(a->runtime, &count) != PARLEY_OK || count == 0 ||
          parley_runtime_plugin_info(a->runtime, 0, &pi) != PARLEY_OK || pi.name == NULL)
        ++a->errors;
      if (parley_runtime_load_plugin(a->runtime, "/nonexistent/libparley_nothing.so") != PARLEY_ERROR_IO ||
          strstr(parley_last_error(), "libparley_nothing.so") == NULL)
        ++a->errors;
    }
    parley_model_free(m);
  }
  return NULL;
}

static void test_threads(parley_runtime *rt) {
  pthread_t threads[NUM_THREADS];
  query_arg args[NUM_THREADS];
  pthread_barrier_t barrier;
  parley_model *m = NULL;
  int i, created[NUM_THREADS];

  CHECK_OK(parley_model_load_file(rt, g_decoder_path, NULL, &m));
  if (!m) return;

  /* The main thread's own error must survive what the workers do. */
  CHECK_STATUS(parley_model_config_int(m, "main-thread-key", NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_model_config_int(m, "main-thread-key", &(int64_t){0}), PARLEY_ERROR_NOT_FOUND);

  CHECK(pthread_barrier_init(&barrier, NULL, NUM_THREADS) == 0);
  for (i = 0; i < NUM_THREADS; ++i) {
    args[i].model = m;
    args[i].runtime = rt;
    args[i].index = i;
    args[i].errors = 0;
    args[i].barrier = &barrier;
    created[i] = pthread_create(&threads[i], NULL, query_thread, &args[i]) == 0;
    CHECK(created[i]);
  }
  for (i = 0; i < NUM_THREADS; ++i)
    if (created[i]) pthread_join(threads[i], NULL);
  for (i = 0; i < NUM_THREADS; ++i) {
    if (args[i].errors) fprintf(stderr, "query thread %d: %d errors\n", i, args[i].errors);
    CHECK(args[i].errors == 0);
  }
  pthread_barrier_destroy(&barrier);
  CHECK_ERROR_MENTIONS("main-thread-key");

  for (i = 0; i < NUM_THREADS; ++i) {
    args[i].errors = 0;
    created[i] = pthread_create(&threads[i], NULL, load_thread, &args[i]) == 0;
    CHECK(created[i]);
  }
  for (i = 0; i < NUM_THREADS; ++i)
    if (created[i]) pthread_join(threads[i], NULL);
  for (i = 0; i < NUM_THREADS; ++i) {
    if (args[i].errors) fprintf(stderr, "load thread %d: %d errors\n", i, args[i].errors);
    CHECK(args[i].errors == 0);
  }
  CHECK_ERROR_MENTIONS("main-thread-key");
  parley_model_free(m);
}

/* Models keep what they need alive: free the runtime first, then use the model. */
static void test_model_outlives_runtime(void) {
  parley_runtime *rt = NULL;
  parley_model *m = NULL;
  parley_model_info info;
  parley_kernel_info ki;
  CHECK_OK(make_runtime(&rt));
  if (!rt) return;
  CHECK_OK(parley_model_load_file(rt, g_decoder_path, NULL, &m));
  parley_runtime_free(rt);
  if (!m) return;
  info.struct_size = sizeof info;
  CHECK_OK(parley_model_get_info(m, &info));
  CHECK_STR(info.architecture, "LlamaForCausalLM");
  ki.struct_size = sizeof ki;
  CHECK_OK(parley_model_kernel_plan_at(m, 0, &ki));
  CHECK(ki.plugin != NULL && strcmp(ki.plugin, "cpu") == 0);
  parley_model_free(m);
}

int main(void) {
  parley_runtime *rt = NULL;

  g_data_dir = getenv("PARLEY_TEST_DATA_DIR");
  g_plugin_dir = getenv("PARLEY_PLUGIN_BUILD_DIR");
  if (!g_data_dir || !*g_data_dir || !g_plugin_dir || !*g_plugin_dir) {
    fprintf(stderr, "FAIL: PARLEY_TEST_DATA_DIR and PARLEY_PLUGIN_BUILD_DIR must be set (run through ctest)\n");
    return 1;
  }
  snprintf(g_decoder_path, sizeof g_decoder_path, "%s/tiny_decoder.parley", g_data_dir);
  snprintf(g_seq2seq_path, sizeof g_seq2seq_path, "%s/tiny_seq2seq.parley", g_data_dir);

  test_versions();
  test_status_and_dtype_names();
  test_exported_inits();
  test_runtime_create();
  test_log_callback_and_bogus_plugin();

  CHECK_OK(make_runtime(&rt));
  if (rt) {
    test_load_plugin(rt);
    test_listing(rt);
    test_find_kernel(rt);
    test_model_load(rt);
    test_kv_cache_option(rt);
    test_decoder_introspection(rt);
    test_seq2seq_introspection(rt);
    test_old_caller(rt);
    test_threads(rt);
    parley_runtime_free(rt);
  }
  test_model_outlives_runtime();

  printf("test_capi_c: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
