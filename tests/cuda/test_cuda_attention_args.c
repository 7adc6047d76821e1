/*
 * The cuda plugin's ATTENTION refuses bad paged-cache arguments (plugin ABI
 * 1.3: block_table, block_table_stride, block_size) with the documented status
 * and a message naming the field, without a GPU: every check comes before
 * the first CUDA call, so the plugin is called directly (dlopen, as the
 * runtime does) with a context whose device state is a placeholder these
 * paths never read. Every case here must fail a check (a call that passed
 * them all would launch a kernel on a machine with a GPU). Also: the kernels
 * declare PARLEY_KERNEL_FLAG_KV_PAGED and PARLEY_KERNEL_FLAG_SLIDING_WINDOW, a
 * window must be >= 0 and causal, and fields past a caller's struct_size are
 * not read (an ABI 1.2 caller's fused append is still honoured).
 *
 *   test_cuda_attention_args /path/to/libparley_cuda.so
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

static const parley_kernel_desc *find_attention(const parley_plugin_desc *p, int32_t dtype) {
  size_t i;
  for (i = 0; i < p->num_kernels; ++i)
    if (p->kernels[i].op == PARLEY_OP_ATTENTION && p->kernels[i].dtype == dtype) return &p->kernels[i];
  return NULL;
}

/* run(args) must return `want` with a message containing `text`. */
static void expect(const parley_kernel_desc *k, const parley_kernel_context *ctx, const parley_attention_args *a,
                   parley_kernel_status want, const char *text, int line) {
  parley_kernel_status st;
  g_error[0] = '\0';
  st = k->run(ctx, a);
  printf("line %d: %s -> status %d, \"%s\"\n", line, k->name, (int)st, g_error);
  if (st != want || strstr(g_error, text) == NULL) {
    fprintf(stderr, "FAIL line %d: want status %d and \"%s\"\n", line, (int)want, text);
    ++g_failures;
  }
}

int main(int argc, char **argv) {
  static char placeholder_state[64]; /* never dereferenced on these paths */
  static float data[4096];           /* never dereferenced either */
  static int32_t lengths[2], table[8];
  parley_host_services hs;
  parley_kernel_context ctx;
  parley_attention_args base, a;
  const parley_plugin_desc *p;
  const parley_kernel_desc *f32, *f16, *bf16;
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
  f32 = find_attention(p, PARLEY_DTYPE_F32);
  f16 = find_attention(p, PARLEY_DTYPE_F16);
  bf16 = find_attention(p, PARLEY_DTYPE_BF16);
  CHECK(f32 && f16 && bf16);
  if (!(f32 && f16 && bf16)) return 1;
  /* Every attention kernel appends into the cache, reads a paged cache and
   * honours a sliding window; the F32 one also reads an F16 and an I8 cache
   * (the runtime's kv_cache_dtype F16 / I8 needs KV_APPEND | KV_F16 / KV_I8),
   * the F16 / BF16 ones a cache of their own type (16-bit-activation models). */
  CHECK(f32->flags == (PARLEY_KERNEL_FLAG_KV_APPEND | PARLEY_KERNEL_FLAG_KV_F16 | PARLEY_KERNEL_FLAG_KV_I8 |
                       PARLEY_KERNEL_FLAG_KV_PAGED | PARLEY_KERNEL_FLAG_SLIDING_WINDOW));
  CHECK(f16->flags == (PARLEY_KERNEL_FLAG_KV_APPEND | PARLEY_KERNEL_FLAG_KV_F16 | PARLEY_KERNEL_FLAG_KV_PAGED |
                       PARLEY_KERNEL_FLAG_SLIDING_WINDOW));
  CHECK(bf16->flags == (PARLEY_KERNEL_FLAG_KV_APPEND | PARLEY_KERNEL_FLAG_KV_BF16 | PARLEY_KERNEL_FLAG_KV_PAGED |
                        PARLEY_KERNEL_FLAG_SLIDING_WINDOW));

  memset(&ctx, 0, sizeof ctx);
  ctx.struct_size = sizeof ctx;
  ctx.host = &hs;
  ctx.device_state = placeholder_state;
  ctx.stream = (void *)placeholder_state; /* so the device state's stream is not read */

  /* A decode step on a paged cache (2 sequences, blocks of 16, 4 table
   * entries each), then one thing wrong at a time. */
  memset(&base, 0, sizeof base);
  base.struct_size = sizeof base;
  base.dtype = PARLEY_DTYPE_F32;
  base.batch = 2, base.num_heads = 4, base.num_kv_heads = 2, base.q_len = 1, base.kv_len = 0, base.head_dim = 64;
  base.q = data, base.q_stride_batch = 256, base.q_stride_head = 64, base.q_stride_seq = 256;
  base.k = data, base.k_stride_batch = 2048, base.k_stride_head = 64, base.k_stride_seq = 128;
  base.v = data, base.v_stride_batch = 2048, base.v_stride_head = 64, base.v_stride_seq = 128;
  base.out = data, base.out_stride_batch = 256, base.out_stride_head = 64, base.out_stride_seq = 256;
  base.scale = 0.125f;
  base.mask = PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING;
  base.key_lengths = lengths;
  base.block_table = table, base.block_table_stride = 4, base.block_size = 16;

  a = base, a.mask = PARLEY_MASK_CAUSAL;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "paged cache (block_table) needs the KEY_PADDING mask",
         __LINE__);
  a = base, a.block_size = 0;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "block_size (0) must be >= 1", __LINE__);
  a = base, a.block_size = -16;
  expect(f16, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "block_size (-16) must be >= 1", __LINE__);
  a = base, a.block_table_stride = 0;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "block_table_stride (0) must be >= 1", __LINE__);
  a = base, a.block_table_stride = (int64_t)1 << 27;
  expect(bf16, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "block_table_stride (134217728) x block_size (16)", __LINE__);
  a = base, a.probs = data;
  expect(f32, &ctx, &a, PARLEY_KERNEL_UNSUPPORTED, "probs with a paged cache", __LINE__);
  /* kv_len is unused with a table (0 here), so k and v are checked anyway. */
  a = base, a.k = NULL;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "k or v is NULL", __LINE__);
  a = base, a.key_lengths = NULL;
  expect(f16, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "KEY_PADDING mask without key_lengths", __LINE__);
  /* The fused append into blocks: kv_len (0) is not compared with q_len; the
   * next check (a negative stride) is what fails. */
  a = base, a.k_new = data, a.v_new = data, a.k_new_stride_batch = 128, a.k_new_stride_head = 64,
  a.k_new_stride_seq = 128;
  a.v_new_stride_batch = 128, a.v_new_stride_head = 64, a.v_new_stride_seq = 128, a.out_stride_seq = -1;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "negative stride -1", __LINE__);
  a.v_new = NULL, a.out_stride_seq = 256;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "k_new without v_new", __LINE__);
  /* Without a table, kv_len still bounds the append. */
  a.v_new = data, a.block_table = NULL, a.mask = PARLEY_MASK_CAUSAL;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "k_new with q_len > kv_len", __LINE__);
  /* The tensor-core kernels append too: the append's own checks apply. */
  a = base, a.dtype = PARLEY_DTYPE_F16, a.k_new = data, a.v_new = data, a.v_new_stride_seq = -2;
  expect(f16, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "negative k_new/v_new stride -2", __LINE__);

  /* The cache's element type (ABI 1.2 kv_dtype): F32 activations read an F32,
   * F16 or I8 cache, 16-bit ones a cache of their own type. An I8 cache needs
   * its scales and returns no probabilities. */
  a = base, a.kv_dtype = 7;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "kv_dtype 7 is not F32, F16, BF16 or I8", __LINE__);
  a = base, a.kv_dtype = PARLEY_DTYPE_I8, a.k_scales = (float *)data, a.v_scales = NULL;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "an I8 cache without k_scales / v_scales", __LINE__);
  a = base, a.kv_dtype = PARLEY_DTYPE_I8, a.k_scales = a.v_scales = (float *)data, a.scale_stride_seq = -1;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "negative scale stride", __LINE__);
  a = base, a.block_table = NULL, a.mask = PARLEY_MASK_CAUSAL, a.kv_len = 4, a.kv_dtype = PARLEY_DTYPE_I8;
  a.k_scales = a.v_scales = (float *)data, a.probs = data;
  expect(f32, &ctx, &a, PARLEY_KERNEL_UNSUPPORTED, "probabilities are not returned over an I8 cache", __LINE__);
  a = base, a.dtype = PARLEY_DTYPE_F16, a.kv_dtype = PARLEY_DTYPE_I8, a.k_scales = a.v_scales = (float *)data;
  expect(f16, &ctx, &a, PARLEY_KERNEL_UNSUPPORTED, "F16 activations over a I8 cache", __LINE__);
  /* A valid I8 call is no refusal: the next check (k NULL) is what fails. */
  a = base, a.kv_dtype = PARLEY_DTYPE_I8, a.k_scales = a.v_scales = (float *)data, a.k = NULL;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "k or v is NULL", __LINE__);
  a = base, a.dtype = PARLEY_DTYPE_BF16, a.kv_dtype = PARLEY_DTYPE_F16;
  expect(bf16, &ctx, &a, PARLEY_KERNEL_UNSUPPORTED, "BF16 activations over a F16 cache", __LINE__);
  a = base, a.block_table = NULL, a.mask = PARLEY_MASK_CAUSAL, a.kv_len = 4, a.kv_dtype = PARLEY_DTYPE_F16,
  a.probs = data;
  expect(f32, &ctx, &a, PARLEY_KERNEL_UNSUPPORTED, "probabilities are only returned with F32 activations over an F32",
         __LINE__);

  /* A sliding window (ABI 1.4) must be >= 0 and needs the causal mask. */
  a = base, a.window = -3;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "negative window -3", __LINE__);
  a = base, a.window = 8, a.mask = PARLEY_MASK_KEY_PADDING;
  expect(f16, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "sliding window (8) needs PARLEY_MASK_CAUSAL", __LINE__);
  /* A valid window is no refusal: the next check (k NULL) is what fails. */
  a = base, a.window = 8, a.k = NULL;
  expect(bf16, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "k or v is NULL", __LINE__);
  /* An ABI 1.3 caller: window lies past its struct_size and is not read. */
  a = base, a.struct_size = PARLEY_ATTENTION_ARGS_SIZE_V1_3, a.window = -3, a.q = NULL;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "q or out is NULL", __LINE__);

  /* An ABI 1.2 caller: the table fields lie past its struct_size and are not
   * read (a bad block_size there is no error; the NULL q is)... */
  a = base, a.struct_size = PARLEY_ATTENTION_ARGS_SIZE_V1_2, a.block_size = 0, a.q = NULL;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "q or out is NULL", __LINE__);
  /* ... and its fused append is still seen (k_new is inside its struct). */
  a = base, a.struct_size = PARLEY_ATTENTION_ARGS_SIZE_V1_2, a.dtype = PARLEY_DTYPE_BF16, a.kv_len = 4;
  a.k_new = data, a.v_new = NULL;
  expect(bf16, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "k_new without v_new", __LINE__);
  /* An ABI 1.1 caller: kv_dtype lies past its struct_size and is not read. */
  a = base, a.struct_size = PARLEY_ATTENTION_ARGS_SIZE_V1_1, a.block_table = NULL, a.kv_dtype = 7, a.q = NULL;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "q or out is NULL", __LINE__);
  a = base, a.struct_size = PARLEY_ATTENTION_ARGS_SIZE_V1_1, a.block_table = NULL, a.mask = PARLEY_MASK_CAUSAL;
  a.kv_len = 4, a.k_new = data, a.v_new = NULL;
  expect(f32, &ctx, &a, PARLEY_KERNEL_INVALID_ARGUMENT, "k_new without v_new", __LINE__);

  dlclose(lib);
  if (g_failures) {
    fprintf(stderr, "%d check(s) failed\n", g_failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
