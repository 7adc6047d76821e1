/* Test fixture: an attention kernel for the cpu device at a higher priority
 * than the built-in one that declares no KV-cache flags (as a plugin of ABI
 * 1.0/1.1, or the cuda plugin, does): a model asking for an F16 / I8 KV
 * cache must then be refused with PARLEY_ERROR_UNSUPPORTED at load. The
 * kernel itself refuses every call (no test runs it). */
#include <parley/plugin.h>

static parley_kernel_status f32_only_attention(const parley_kernel_context *ctx, const void *raw) {
  (void)raw;
  if (ctx && ctx->host) ctx->host->set_error(ctx->host->host, "f32_only_attention: a test fixture, not a kernel");
  return PARLEY_KERNEL_UNSUPPORTED;
}

static const parley_kernel_desc g_kernels[] = {{sizeof(parley_kernel_desc), PARLEY_OP_ATTENTION, "cpu",
                                                PARLEY_DTYPE_F32, 1000, "f32_only_attention", f32_only_attention}};

static const parley_plugin_desc g_desc = {
    sizeof(parley_plugin_desc), PARLEY_PLUGIN_ABI_VERSION, "f32attention", "0.1", NULL, 0, g_kernels, 1};

PARLEY_PLUGIN_EXPORT const parley_plugin_desc *parley_plugin_entry(uint32_t host_abi, const parley_host_services *h) {
  if ((host_abi >> 16) != PARLEY_PLUGIN_ABI_MAJOR) return NULL;
  (void)h;
  return &g_desc;
}
