/* An example third-party plugin: it adds no device, and overrides the CPU
 * softmax with its own kernel at a higher priority than the built-in one.
 * It counts its calls so a test can prove the registry routed work to it. */
#include <math.h>
#include <parley/plugin.h>

static long g_calls = 0;

/* Test hook (not part of the plugin ABI). */
PARLEY_PLUGIN_EXPORT long thirdparty_softmax_calls(void) {
  return g_calls;
}

static parley_kernel_status fast_softmax(const parley_kernel_context *ctx, const void *raw) {
  const parley_softmax_args *a = (const parley_softmax_args *)raw;
  int64_t r, c;
  if (!a || a->struct_size < sizeof *a || !a->x || !a->out || a->rows < 0 || a->cols < 1 || a->ld_x < a->cols ||
      a->ld_out < a->cols || a->dtype != PARLEY_DTYPE_F32) {
    if (ctx && ctx->host) ctx->host->set_error(ctx->host->host, "thirdparty softmax: invalid arguments");
    return PARLEY_KERNEL_INVALID_ARGUMENT;
  }
  ++g_calls;
  for (r = 0; r < a->rows; ++r) {
    const float *x = (const float *)a->x + r * a->ld_x;
    float *y = (float *)a->out + r * a->ld_out;
    float m = x[0];
    double sum = 0;
    for (c = 1; c < a->cols; ++c) m = x[c] > m ? x[c] : m;
    for (c = 0; c < a->cols; ++c) sum += exp((double)x[c] - m);
    for (c = 0; c < a->cols; ++c) y[c] = (float)(exp((double)x[c] - m) / sum);
  }
  return PARLEY_KERNEL_OK;
}

static const parley_kernel_desc g_kernels[] = {
    {sizeof(parley_kernel_desc), PARLEY_OP_SOFTMAX, "cpu", PARLEY_DTYPE_F32, 500, "fast_softmax", fast_softmax}};

static const parley_plugin_desc g_desc = {
    sizeof(parley_plugin_desc), PARLEY_PLUGIN_ABI_VERSION, "thirdparty", "0.1", NULL, 0, g_kernels, 1};

PARLEY_PLUGIN_EXPORT const parley_plugin_desc *parley_plugin_entry(uint32_t host_abi, const parley_host_services *h) {
  if ((host_abi >> 16) != PARLEY_PLUGIN_ABI_MAJOR) return NULL;
  (void)h;
  return &g_desc;
}
