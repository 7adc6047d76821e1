/* Deliberately broken plugins, one per BAD_KIND, to prove the registry
 * refuses each with a clear error and keeps working. */
#include <parley/plugin.h>
#include <stdio.h>
#include <string.h>

static parley_kernel_status ok_kernel(const parley_kernel_context *ctx, const void *args) {
  (void)ctx;
  (void)args;
  return PARLEY_KERNEL_OK;
}
static parley_kernel_status dev_alloc(void *s, size_t b, size_t a, void **p) {
  (void)s;
  (void)b;
  (void)a;
  (void)p;
  return PARLEY_KERNEL_DEVICE_ERROR;
}
static void dev_release(void *s, void *p) {
  (void)s;
  (void)p;
}
static parley_kernel_status dev_copy(void *s, void *d, const void *src, size_t n, int32_t k, void *st) {
  (void)s;
  (void)d;
  (void)src;
  (void)n;
  (void)k;
  (void)st;
  return PARLEY_KERNEL_DEVICE_ERROR;
}
static parley_kernel_status dev_sync(void *s, void *st) {
  (void)s;
  (void)st;
  return PARLEY_KERNEL_OK;
}
static parley_kernel_status dev_init_fails(const parley_host_services *h, void **state, char *err, size_t n) {
  (void)h;
  (void)state;
  snprintf(err, n, "no FakeGPU driver found (libfakegpu.so.1: cannot open shared object file)");
  return PARLEY_KERNEL_DEVICE_ERROR;
}

#ifndef BAD_KIND
#error define BAD_KIND
#endif

#define NAME_1 "bad_no_entry"
static parley_device_desc g_dev = {sizeof(parley_device_desc),
                                   "fakegpu",
                                   PARLEY_DEVICE_OTHER,
                                   dev_init_fails,
                                   NULL,
                                   dev_alloc,
                                   dev_release,
                                   dev_copy,
                                   dev_sync};
static parley_kernel_status ok_prepare(const parley_kernel_context *ctx, const parley_weight_desc *d,
                                       parley_prepared_weight *out) {
  (void)ctx;
  (void)d;
  (void)out;
  return PARLEY_KERNEL_UNSUPPORTED;
}
static void ok_release(const parley_kernel_context *ctx, void *handle) {
  (void)ctx;
  (void)handle;
}
static parley_kernel_desc g_kernel = {
    sizeof(parley_kernel_desc), PARLEY_OP_GEMM, "cpu", PARLEY_DTYPE_F32, 1, "k", ok_kernel};
/* Two-element arrays for the stride cases: the registry walks them with
 * element 0's struct_size. */
static parley_kernel_desc g_kernels2[2] = {
    {sizeof(parley_kernel_desc), PARLEY_OP_GEMM, "cpu", PARLEY_DTYPE_F32, 1, "k0", ok_kernel, 0},
    {sizeof(parley_kernel_desc), PARLEY_OP_SOFTMAX, "cpu", PARLEY_DTYPE_F32, 1, "k1", ok_kernel, 0}};
static parley_device_desc g_devs2[2] = {
    {sizeof(parley_device_desc), "fake0", PARLEY_DEVICE_OTHER, NULL, NULL, dev_alloc, dev_release, dev_copy, dev_sync},
    {sizeof(parley_device_desc), "fake1", PARLEY_DEVICE_OTHER, NULL, NULL, dev_alloc, dev_release, dev_copy, dev_sync}};
/* A name with no NUL within the registry's bound (64 characters). */
static const char g_long_name[100] = {
    'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x',
    'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x',
    'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x',
    'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x',
    'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 0};
static parley_plugin_desc g_desc = {
    sizeof(parley_plugin_desc), PARLEY_PLUGIN_ABI_VERSION, "bad", "1", NULL, 0, &g_kernel, 1};

#if BAD_KIND == 1 /* no entry point */
PARLEY_PLUGIN_EXPORT int parley_plugin_entry_misspelled(void) {
  return 0;
}
#else
PARLEY_PLUGIN_EXPORT const parley_plugin_desc *parley_plugin_entry(uint32_t host_abi, const parley_host_services *h) {
  (void)host_abi;
  (void)h;
  switch (BAD_KIND) {
    case 2:
      g_desc.abi_version = 99u << 16;
      break; /* ABI mismatch */
    case 3:
      return NULL; /* refuses the host */
    case 4:
      g_kernel.run = NULL;
      break; /* malformed kernel */
    case 5:
      g_kernel.op = (parley_op)999;
      break; /* unknown op */
    case 6:
      g_desc.name = "cpu";
      break; /* duplicate plugin name */
    case 7:
      g_dev.init = NULL;
      g_desc.devices = &g_dev;
      g_desc.num_devices = 1;
      g_dev.name = "cpu";
      break;
    case 8: /* a device whose driver is missing: loads, device unavailable */
      g_desc.name = "fakegpu_plugin";
      g_desc.devices = &g_dev;
      g_desc.num_devices = 1;
      g_kernel.device = "fakegpu";
      break;
    case 9:
      g_kernel.device = "tpu9000";
      break; /* kernel on unknown device */
    case 10:
      g_desc.struct_size = 8;
      break; /* truncated descriptor */
    case 11:
      g_desc.num_kernels = 3;
      g_desc.kernels = NULL;
      break; /* NULL array with a count */
    case 12: /* kernel 0's struct_size 1 << 30 as the array stride (crashed the host) */
      g_kernels2[0].struct_size = (size_t)1 << 30;
      g_desc.kernels = g_kernels2;
      g_desc.num_kernels = 2;
      break;
    case 13: /* the same for the device array */
      g_devs2[0].struct_size = (size_t)1 << 30;
      g_desc.devices = g_devs2;
      g_desc.num_devices = 2;
      break;
    case 14: /* kernel struct_size below ABI 1.0's */
      g_kernel.struct_size = 8;
      break;
    case 15: /* a stride that would misalign kernel 1 */
      g_kernels2[0].struct_size = sizeof(parley_kernel_desc) + 4;
      g_desc.kernels = g_kernels2;
      g_desc.num_kernels = 2;
      break;
    case 16: /* plugin descriptor struct_size far beyond any ABI */
      g_desc.struct_size = (size_t)1 << 30;
      break;
    case 17: /* unknown dtype */
      g_kernel.dtype = 77;
      break;
    case 18: /* unknown device kind */
      g_devs2[0].kind = 9;
      g_desc.devices = g_devs2;
      g_desc.num_devices = 1;
      break;
    case 19: /* plugin name without a NUL within the bound */
      g_desc.name = g_long_name;
      break;
    case 20: /* plugin name with a terminal escape sequence */
      g_desc.name = "bad\x1b[31m";
      break;
    case 21: /* kernel name NULL */
      g_kernel.name = NULL;
      break;
    case 22: /* a device without copy */
      g_devs2[0].copy = NULL;
      g_desc.devices = g_devs2;
      g_desc.num_devices = 1;
      break;
    case 23: /* a kernel count no plugin has (the array is one element long) */
      g_desc.num_kernels = (size_t)1 << 40;
      break;
    case 24: /* a device count no plugin has */
      g_desc.devices = g_devs2;
      g_desc.num_devices = (size_t)1 << 40;
      break;
    case 25: /* elements of different sizes */
      g_kernels2[1].struct_size = sizeof(parley_kernel_desc) + 8;
      g_desc.kernels = g_kernels2;
      g_desc.num_kernels = 2;
      break;
    case 26: /* kernel device name NULL */
      g_kernel.device = NULL;
      break;
    case 27: /* negative op */
      g_kernel.op = -1;
      break;
    case 28: /* ABI 1.2: a LINEAR kernel without its weight hooks */
      g_kernel.op = PARLEY_OP_LINEAR;
      g_kernel.weight_dtype = PARLEY_DTYPE_I8;
      break;
    case 29: /* ABI 1.2: a LINEAR kernel for an unknown weight dtype */
      g_kernel.op = PARLEY_OP_LINEAR;
      g_kernel.weight_dtype = 55;
      g_kernel.prepare_weight = ok_prepare;
      g_kernel.release_weight = ok_release;
      break;
    case 30: /* ABI 1.2: a LINEAR kernel from a plugin built against ABI 1.1 (no room for the hooks) */
      g_kernel.op = PARLEY_OP_LINEAR;
      g_kernel.struct_size = offsetof(parley_kernel_desc, flags) + 8;
      break;
    default:
      break;
  }
  return &g_desc;
}
#endif
