/*
 * The cuda plugin through the public C API.
 *   test_cuda_plugin PATH_TO_libparley_cuda.so
 * Environment: PARLEY_PLUGIN_BUILD_DIR (for libparley_cpu.so),
 * PARLEY_TEST_DATA_DIR (tiny_decoder.parley) and PARLEY_PARITY_DIR (the
 * sliding-window model models/mistral_window.parley).
 *
 * On a machine without a GPU or driver (CI): the plugin loads, "cuda" is
 * listed unavailable with a reason naming the driver or the device, kernel
 * lookups and model loads on "cuda" fail with PARLEY_ERROR_DEVICE and that
 * reason, and the cpu device keeps working. With a usable GPU the device must
 * be available, its kernels selectable, and a sliding-window model must load
 * on it (its attention kernels honour the window).
 */
#include <parley/parley.h>
#include <parley/plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures = 0;

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      g_failures++;                                                   \
    }                                                                 \
  } while (0)

static int mentions_driver_or_device(const char *s) {
  return s && (strstr(s, "CUDA driver") != NULL || strstr(s, "no CUDA device") != NULL ||
               strstr(s, "CUDA initialisation failed") != NULL);
}

int main(int argc, char **argv) {
  const char *plugin_dir = getenv("PARLEY_PLUGIN_BUILD_DIR");
  const char *data_dir = getenv("PARLEY_TEST_DATA_DIR");
  const char *parity_dir = getenv("PARLEY_PARITY_DIR");
  parley_runtime_options o;
  parley_runtime *rt = NULL;
  char path[4096];
  size_t count = 0, i;
  int found_cuda = 0, cuda_available = 0, cuda_kernels = 0, linear_weight_dtypes = 0, linear16_weight_dtypes = 0,
      linearbf16_weight_dtypes = 0;
  char reason[1024] = "";

  if (argc != 2 || !plugin_dir || !data_dir || !parity_dir) {
    fprintf(stderr,
            "usage: %s LIBPARLEY_CUDA (with PARLEY_PLUGIN_BUILD_DIR, PARLEY_TEST_DATA_DIR, PARLEY_PARITY_DIR set)\n",
            argv[0]);
    return 2;
  }
  CHECK(parley_runtime_options_init(&o) == PARLEY_OK);
  o.plugin_sources = PARLEY_PLUGINS_NONE;
  o.num_threads = 2;
  CHECK(parley_runtime_create(&o, &rt) == PARLEY_OK);
  if (!rt) return 1;
  snprintf(path, sizeof path, "%s/libparley_cpu.so", plugin_dir);
  CHECK(parley_runtime_load_plugin(rt, path) == PARLEY_OK);

  /* 1. The plugin loads, whatever the machine has. */
  if (parley_runtime_load_plugin(rt, argv[1]) != PARLEY_OK) {
    fprintf(stderr, "FAIL: loading %s: %s\n", argv[1], parley_last_error());
    parley_runtime_free(rt);
    return 1;
  }

  /* 2. The device is listed, available or with a reason. */
  CHECK(parley_runtime_device_count(rt, &count) == PARLEY_OK);
  for (i = 0; i < count; ++i) {
    parley_device_info d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    CHECK(parley_runtime_device_info(rt, i, &d) == PARLEY_OK);
    if (d.name && strcmp(d.name, "cuda") == 0) {
      found_cuda = 1;
      cuda_available = d.available;
      CHECK(d.kind == PARLEY_DEVICE_CUDA);
      CHECK(d.plugin && strcmp(d.plugin, "cuda") == 0);
      if (d.status) snprintf(reason, sizeof reason, "%s", d.status);
      printf("device cuda: available=%d status=\"%s\"\n", d.available, d.status ? d.status : "(null)");
    }
  }
  CHECK(found_cuda);

  /* Its kernels are registered (GEMM f32/f16/bf16, the row ops for F32 and, but softmax /
   * log-softmax / top-k / activation, F16 and BF16, attention F32/F16/BF16, LINEAR with F32 activations
   * for F32/F16/BF16/I8/I4 weights and with F16 and BF16 activations for the same). */
  CHECK(parley_runtime_kernel_count(rt, &count) == PARLEY_OK);
  for (i = 0; i < count; ++i) {
    parley_kernel_info k;
    memset(&k, 0, sizeof k);
    k.struct_size = sizeof k;
    CHECK(parley_runtime_kernel_info(rt, i, &k) == PARLEY_OK);
    if (k.device && strcmp(k.device, "cuda") == 0) {
      cuda_kernels++;
      if (k.op && strcmp(k.op, "linear") == 0) {
        CHECK(k.dtype == PARLEY_DTYPE_F32 || k.dtype == PARLEY_DTYPE_F16 || k.dtype == PARLEY_DTYPE_BF16);
        CHECK(k.weight_dtype >= 0 && k.weight_dtype < 31);
        if (k.weight_dtype >= 0 && k.weight_dtype < 31)
          *(k.dtype == PARLEY_DTYPE_F32   ? &linear_weight_dtypes
            : k.dtype == PARLEY_DTYPE_F16 ? &linear16_weight_dtypes
                                          : &linearbf16_weight_dtypes) |= 1 << k.weight_dtype;
      } else {
        CHECK(k.weight_dtype == -1);
      }
    }
  }
  printf("cuda kernels registered: %d\n", cuda_kernels);
  CHECK(cuda_kernels == 43);
  CHECK(linear_weight_dtypes == ((1 << PARLEY_DTYPE_F32) | (1 << PARLEY_DTYPE_F16) | (1 << PARLEY_DTYPE_BF16) |
                                 (1 << PARLEY_DTYPE_I8) | (1 << PARLEY_DTYPE_I4)));
  CHECK(linear16_weight_dtypes == linear_weight_dtypes && linearbf16_weight_dtypes == linear_weight_dtypes);

  {
    parley_kernel_info k;
    parley_status st;
    memset(&k, 0, sizeof k);
    k.struct_size = sizeof k;
    st = parley_runtime_find_kernel(rt, "gemm", "cuda", PARLEY_DTYPE_F32, &k);
    if (!cuda_available) {
      /* 3. No silent fallback: the lookup fails with the device's reason. */
      const char *err;
      CHECK(mentions_driver_or_device(reason));
      CHECK(st == PARLEY_ERROR_DEVICE);
      err = parley_last_error();
      printf("find_kernel(gemm, cuda): status %d, \"%s\"\n", (int)st, err ? err : "(null)");
      CHECK(err && strstr(err, reason) != NULL);
    } else {
      CHECK(st == PARLEY_OK);
      CHECK(k.name && strcmp(k.name, "gemm_cublaslt") == 0);
    }
  }

  /* 4. A model asking for "cuda" gets PARLEY_ERROR_DEVICE, never the cpu. */
  {
    parley_model_options mo;
    parley_model *model = NULL;
    parley_status st;
    snprintf(path, sizeof path, "%s/tiny_decoder.parley", data_dir);
    CHECK(parley_model_options_init(&mo) == PARLEY_OK);
    mo.device = "cuda";
    st = parley_model_load_file(rt, path, &mo, &model);
    if (!cuda_available) {
      const char *err = parley_last_error();
      printf("model load on cuda: status %d, \"%s\"\n", (int)st, err ? err : "(null)");
      CHECK(st == PARLEY_ERROR_DEVICE);
      CHECK(model == NULL);
      CHECK(err && strstr(err, reason) != NULL);
    }
    parley_model_free(model);
    model = NULL;
    /* The cpu device is untouched. */
    mo.device = "cpu";
    CHECK(parley_model_load_file(rt, path, &mo, &model) == PARLEY_OK);
    parley_model_free(model);
  }

  /* 5. A sliding-window model (window 4 < its 64 positions, as Mistral-7B-v0.1):
   * every cuda attention kernel honours the window (PARLEY_KERNEL_FLAG_SLIDING_WINDOW),
   * so with a GPU it loads on cuda (the parity suite, tests/gpu/run.sh, then
   * checks its logits); without one the refusal is the device's, not the window's. */
  {
    parley_model_options mo;
    parley_model *model = NULL;
    parley_status st;
    const char *err;
    snprintf(path, sizeof path, "%s/models/mistral_window.parley", parity_dir);
    CHECK(parley_model_options_init(&mo) == PARLEY_OK);
    mo.device = "cuda";
    st = parley_model_load_file(rt, path, &mo, &model);
    err = parley_last_error();
    printf("sliding-window model on cuda: status %d, \"%s\"\n", (int)st, st == PARLEY_OK || !err ? "" : err);
    if (cuda_available) {
      CHECK(st == PARLEY_OK);
    } else {
      CHECK(st == PARLEY_ERROR_DEVICE);
      CHECK(err && strstr(err, reason) != NULL && strstr(err, "sliding window") == NULL);
    }
    parley_model_free(model);
  }

  /* 6. Loading it twice is refused cleanly (duplicate plugin name). */
  CHECK(parley_runtime_load_plugin(rt, argv[1]) == PARLEY_ERROR_PLUGIN);

  parley_runtime_free(rt);
  if (g_failures) {
    fprintf(stderr, "%d check(s) failed\n", g_failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
