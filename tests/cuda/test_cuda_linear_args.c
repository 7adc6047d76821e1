/*
 * The cuda plugin's LINEAR entry points refuse bad input with the documented
 * status and a message naming the weight, without a GPU: every check of
 * prepare_weight and of the run comes before the first CUDA call, so the
 * plugin is called here directly (dlopen, as the runtime does) with a
 * context whose device state is a placeholder that these paths never read.
 *
 *   test_cuda_linear_args /path/to/libparley_cuda.so
 */
#include <dlfcn.h>
#include <parley/plugin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int g_failures = 0;
static char g_error[1024];

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                   \
    }                                                                 \
  } while (0)

static void set_error(void *host, const char *message) {
  (void)host;
  snprintf(g_error, sizeof g_error, "%s", message);
}
static void log_line(void *host, int32_t level, const char *message) {
  (void)host;
  (void)level;
  (void)message;
}

/* The LINEAR kernel for (activation dtype, weight dtype), or NULL. */
static const parley_kernel_desc *find_linear_for(const parley_plugin_desc *p, int32_t dtype, int32_t weight_dtype) {
  size_t i;
  for (i = 0; i < p->num_kernels; ++i)
    if (p->kernels[i].op == PARLEY_OP_LINEAR && p->kernels[i].dtype == dtype &&
        p->kernels[i].weight_dtype == weight_dtype)
      return &p->kernels[i];
  return NULL;
}
static const parley_kernel_desc *find_linear(const parley_plugin_desc *p, int32_t weight_dtype) {
  return find_linear_for(p, PARLEY_DTYPE_F32, weight_dtype);
}

/* prepare_weight(desc) must return `want` with a message containing `text`. */
static void expect_prepare(const parley_kernel_desc *k, const parley_kernel_context *ctx, const parley_weight_desc *d,
                           parley_kernel_status want, const char *text, int line) {
  parley_prepared_weight out;
  parley_kernel_status st;
  memset(&out, 0, sizeof out);
  out.struct_size = sizeof out;
  g_error[0] = '\0';
  st = k->prepare_weight(ctx, d, &out);
  printf("line %d: %s -> status %d, \"%s\"\n", line, k->name, (int)st, g_error);
  if (st != want || strstr(g_error, text) == NULL || out.handle != NULL) {
    fprintf(stderr, "FAIL line %d: want status %d and \"%s\"\n", line, (int)want, text);
    ++g_failures;
  }
}

int main(int argc, char **argv) {
  static char placeholder_state[64]; /* never dereferenced on these paths */
  static const uint8_t data[4096];
  static const float scales[256];
  parley_host_services hs;
  parley_kernel_context ctx, no_device;
  parley_weight_desc d;
  const parley_plugin_desc *p;
  const parley_kernel_desc *f16, *i8, *i4, *f32;
  parley_plugin_entry_fn entry;
  void *lib;
  if (argc != 2) {
    fprintf(stderr, "usage: %s LIBPARLEY_CUDA\n", argv[0]);
    return 2;
  }
  lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
    return 1;
  }
  *(void **)(&entry) = dlsym(lib, PARLEY_PLUGIN_ENTRY_SYMBOL);
  CHECK(entry != NULL);
  if (!entry) return 1;
  memset(&hs, 0, sizeof hs);
  hs.struct_size = sizeof hs;
  hs.abi_version = PARLEY_PLUGIN_ABI_VERSION;
  hs.log = log_line;
  hs.set_error = set_error;
  p = entry(PARLEY_PLUGIN_ABI_VERSION, &hs);
  CHECK(p != NULL);
  if (!p) return 1;
  f32 = find_linear(p, PARLEY_DTYPE_F32);
  f16 = find_linear(p, PARLEY_DTYPE_F16);
  i8 = find_linear(p, PARLEY_DTYPE_I8);
  i4 = find_linear(p, PARLEY_DTYPE_I4);
  CHECK(f32 && f16 && i8 && i4 && find_linear(p, PARLEY_DTYPE_BF16));
  if (!(f32 && f16 && i8 && i4)) return 1;
  CHECK(i8->prepare_weight && i8->release_weight && i8->run && i8->dtype == PARLEY_DTYPE_F32);
  /* F16 activations: every weight type (F32 ones on the SIMT bodies), with the same prepare. */
  {
    const parley_kernel_desc *i8_16 = find_linear_for(p, PARLEY_DTYPE_F16, PARLEY_DTYPE_I8);
    CHECK(i8_16 && i8_16->prepare_weight == i8->prepare_weight &&
          find_linear_for(p, PARLEY_DTYPE_F16, PARLEY_DTYPE_F16) &&
          find_linear_for(p, PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16) &&
          find_linear_for(p, PARLEY_DTYPE_F16, PARLEY_DTYPE_I4));
    CHECK(find_linear_for(p, PARLEY_DTYPE_F16, PARLEY_DTYPE_F32) != NULL);
    CHECK(find_linear_for(p, PARLEY_DTYPE_BF16, PARLEY_DTYPE_I8) &&
          find_linear_for(p, PARLEY_DTYPE_BF16, PARLEY_DTYPE_I8)->prepare_weight == i8->prepare_weight);
  }

  memset(&ctx, 0, sizeof ctx);
  ctx.struct_size = sizeof ctx;
  ctx.host = &hs;
  ctx.device_state = placeholder_state;
  no_device = ctx;
  no_device.device_state = NULL;

  /* A valid I8 per-row weight, then one thing wrong at a time. */
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.name = "decoder.layers.3.mlp.down_proj.weight";
  d.dtype = PARLEY_DTYPE_I8, d.quant = PARLEY_QUANT_PER_ROW, d.n = 16, d.k = 64, d.data = data, d.ld_bytes = 64;
  d.scales = scales;

  expect_prepare(i8, &no_device, &d, PARLEY_KERNEL_DEVICE_ERROR, "no cuda device state", __LINE__);
  expect_prepare(i8, &ctx, NULL, PARLEY_KERNEL_INVALID_ARGUMENT, "weight desc is NULL", __LINE__);
  expect_prepare(f16, &ctx, &d, PARLEY_KERNEL_INVALID_ARGUMENT,
                 "down_proj.weight' has dtype I8, this kernel serves F16", __LINE__);
  {
    parley_weight_desc e = d;
    e.n = 0;
    expect_prepare(i8, &ctx, &e, PARLEY_KERNEL_INVALID_ARGUMENT, "down_proj.weight' has shape [0, 64]", __LINE__);
    e = d, e.ld_bytes = 63;
    expect_prepare(i8, &ctx, &e, PARLEY_KERNEL_INVALID_ARGUMENT, "ld_bytes (63) < row bytes (64)", __LINE__);
    e = d, e.scales = NULL;
    expect_prepare(i8, &ctx, &e, PARLEY_KERNEL_INVALID_ARGUMENT, "down_proj.weight' has no scales", __LINE__);
    e = d, e.data = NULL;
    expect_prepare(i8, &ctx, &e, PARLEY_KERNEL_INVALID_ARGUMENT, "down_proj.weight' has no data", __LINE__);
    e = d, e.quant = 7;
    expect_prepare(i8, &ctx, &e, PARLEY_KERNEL_UNSUPPORTED, "quantization 7 is not supported", __LINE__);
    e = d, e.quant = PARLEY_QUANT_GROUPWISE, e.group_size = 48;
    expect_prepare(i8, &ctx, &e, PARLEY_KERNEL_INVALID_ARGUMENT, "group size 48 is not 32, 64 or 128", __LINE__);
    e = d, e.quant = PARLEY_QUANT_GROUPWISE, e.group_size = 128;
    expect_prepare(i8, &ctx, &e, PARLEY_KERNEL_INVALID_ARGUMENT, "group size 128 does not divide k = 64", __LINE__);
    e = d, e.k = (int64_t)1 << 40, e.ld_bytes = e.k;
    expect_prepare(i8, &ctx, &e, PARLEY_KERNEL_UNSUPPORTED, "is too large for the cuda plugin", __LINE__);
    e = d, e.struct_size = 8;
    expect_prepare(i8, &ctx, &e, PARLEY_KERNEL_INVALID_ARGUMENT, "struct_size (8)", __LINE__);
    /* I4: group-wise only, even k. */
    e = d, e.dtype = PARLEY_DTYPE_I4, e.ld_bytes = 32;
    expect_prepare(i4, &ctx, &e, PARLEY_KERNEL_UNSUPPORTED, "I4 weight 'decoder.layers.3.mlp.down_proj.weight' with",
                   __LINE__);
    e.quant = PARLEY_QUANT_GROUPWISE, e.group_size = 32, e.k = 63;
    expect_prepare(i4, &ctx, &e, PARLEY_KERNEL_INVALID_ARGUMENT, "odd row length 63", __LINE__);
    /* Floats take no quantization; element-size row strides. */
    e = d, e.dtype = PARLEY_DTYPE_F16, e.ld_bytes = 128;
    expect_prepare(f16, &ctx, &e, PARLEY_KERNEL_UNSUPPORTED, "F16 weight 'decoder.layers.3.mlp.down_proj.weight'",
                   __LINE__);
    e.quant = PARLEY_QUANT_NONE, e.ld_bytes = 129;
    expect_prepare(f16, &ctx, &e, PARLEY_KERNEL_INVALID_ARGUMENT, "is not a multiple of the element size", __LINE__);
    e = d, e.dtype = PARLEY_DTYPE_F32, e.quant = PARLEY_QUANT_NONE, e.ld_bytes = 256;
    {
      parley_kernel_status st = f32->prepare_weight(&ctx, &e, NULL);
      CHECK(st == PARLEY_KERNEL_INVALID_ARGUMENT && strstr(g_error, "prepared weight output is NULL") != NULL);
    }
  }

  /* The product: bad arguments before any device work. */
  {
    parley_linear_args a;
    parley_kernel_status st;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.dtype = PARLEY_DTYPE_F32, a.m = 1, a.n = 16, a.k = 64, a.ld_x = 64, a.ld_out = 16;
    st = i8->run(&ctx, &a);
    printf("run without a weight: status %d, \"%s\"\n", (int)st, g_error);
    CHECK(st == PARLEY_KERNEL_INVALID_ARGUMENT && strstr(g_error, "weight is NULL") != NULL);
    CHECK(i8->run(&ctx, NULL) == PARLEY_KERNEL_INVALID_ARGUMENT && strstr(g_error, "args is NULL") != NULL);
    a.dtype = PARLEY_DTYPE_F16; /* served: checked as far as the missing weight */
    CHECK(i8->run(&ctx, &a) == PARLEY_KERNEL_INVALID_ARGUMENT && strstr(g_error, "weight is NULL") != NULL);
    a.dtype = PARLEY_DTYPE_BF16; /* likewise */
    CHECK(i8->run(&ctx, &a) == PARLEY_KERNEL_INVALID_ARGUMENT && strstr(g_error, "weight is NULL") != NULL);
    a.dtype = PARLEY_DTYPE_I8; /* not an activation type */
    CHECK(i8->run(&ctx, &a) == PARLEY_KERNEL_UNSUPPORTED && strstr(g_error, "dtype I8") != NULL);
    a.dtype = 99;
    CHECK(i8->run(&ctx, &a) == PARLEY_KERNEL_INVALID_ARGUMENT && strstr(g_error, "unknown dtype 99") != NULL);
    a.dtype = PARLEY_DTYPE_F32, a.struct_size = 16;
    CHECK(i8->run(&ctx, &a) == PARLEY_KERNEL_INVALID_ARGUMENT && strstr(g_error, "struct_size (16)") != NULL);
    a.struct_size = sizeof a;
    CHECK(i8->run(&no_device, &a) == PARLEY_KERNEL_DEVICE_ERROR);
    CHECK(i8->run(NULL, &a) == PARLEY_KERNEL_INVALID_ARGUMENT);
  }
  /* release_weight(NULL) is a no-op. */
  i8->release_weight(&ctx, NULL);

  dlclose(lib);
  if (g_failures) {
    fprintf(stderr, "%d check(s) failed\n", g_failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
