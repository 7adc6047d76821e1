// The cpu plugin's descriptor: device "cpu" (host memory) and one F32 kernel
// per op.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cpu_common.h"
#include "cpu_kernels.h"
#include "linear.h"

namespace parley::cpu {

namespace {

parley_kernel_status cpu_allocate(void *, size_t bytes, size_t alignment, void **ptr) {
  if (ptr == nullptr) return PARLEY_KERNEL_INVALID_ARGUMENT;
  *ptr = nullptr;
  if (alignment == 0) alignment = 64;
  if ((alignment & (alignment - 1)) != 0) return PARLEY_KERNEL_INVALID_ARGUMENT;
  if (alignment < 64) alignment = 64;
  if (bytes == 0) bytes = 1;  // a unique, releasable pointer
  if (bytes > SIZE_MAX - (alignment - 1)) return PARLEY_KERNEL_OUT_OF_MEMORY;
  const size_t rounded = (bytes + alignment - 1) & ~(alignment - 1);  // aligned_alloc wants a multiple
  void *p = std::aligned_alloc(alignment, rounded);
  if (p == nullptr) return PARLEY_KERNEL_OUT_OF_MEMORY;
  *ptr = p;
  return PARLEY_KERNEL_OK;
}

void cpu_release(void *, void *ptr) {
  std::free(ptr);
}

parley_kernel_status cpu_copy(void *, void *dst, const void *src, size_t bytes, int32_t kind, void *) {
  const int64_t k = enum_value(kind);
  if (k < PARLEY_COPY_HOST_TO_DEVICE || k > PARLEY_COPY_DEVICE_TO_DEVICE) return PARLEY_KERNEL_INVALID_ARGUMENT;
  if (bytes == 0) return PARLEY_KERNEL_OK;
  if (dst == nullptr || src == nullptr) return PARLEY_KERNEL_INVALID_ARGUMENT;
  std::memmove(dst, src, bytes);
  return PARLEY_KERNEL_OK;
}

parley_kernel_status cpu_synchronize(void *, void *) {
  return PARLEY_KERNEL_OK;
}

const parley_device_desc kDevices[] = {{
    sizeof(parley_device_desc),
    "cpu",
    PARLEY_DEVICE_CPU,
    nullptr,  // init: nothing to bring up
    nullptr,  // shutdown
    cpu_allocate,
    cpu_release,
    cpu_copy,
    cpu_synchronize,
}};

constexpr int32_t kPriority = 10;

#define PARLEY_CPU_KERNEL(op, name, fn, flags) \
  { sizeof(parley_kernel_desc), op, "cpu", PARLEY_DTYPE_F32, kPriority, name, fn, flags, 0, -1, nullptr, nullptr }
// LINEAR with F32 activations and `wdt` weights.
#define PARLEY_CPU_LINEAR(wdt, name, prepare)                                                           \
  {                                                                                                     \
    sizeof(parley_kernel_desc), PARLEY_OP_LINEAR, "cpu", PARLEY_DTYPE_F32, kPriority, name, linear_run, \
        PARLEY_KERNEL_FLAG_LINEAR_STATS, 0, wdt, prepare, linear_release                                \
  }

const parley_kernel_desc kKernels[] = {
    PARLEY_CPU_KERNEL(PARLEY_OP_GEMM, "gemm_onednn", gemm_f32, 0),
    PARLEY_CPU_KERNEL(PARLEY_OP_ATTENTION, "attention_fused", attention_f32,
                      PARLEY_KERNEL_FLAG_KV_APPEND | PARLEY_KERNEL_FLAG_KV_F16 | PARLEY_KERNEL_FLAG_KV_BF16 |
                          PARLEY_KERNEL_FLAG_KV_I8 | PARLEY_KERNEL_FLAG_KV_PAGED | PARLEY_KERNEL_FLAG_SLIDING_WINDOW),
    PARLEY_CPU_KERNEL(PARLEY_OP_LAYER_NORM, "layer_norm", layer_norm_f32, 0),
    PARLEY_CPU_KERNEL(PARLEY_OP_RMS_NORM, "rms_norm", rms_norm_f32, 0),
    PARLEY_CPU_KERNEL(PARLEY_OP_ROTARY, "rotary", rotary_f32, 0),
    PARLEY_CPU_KERNEL(PARLEY_OP_ACTIVATION, "activation", activation_f32, 0),
    PARLEY_CPU_KERNEL(PARLEY_OP_GATED_ACTIVATION, "gated_activation", gated_activation_f32, 0),
    PARLEY_CPU_KERNEL(PARLEY_OP_EMBEDDING, "embedding", embedding_f32, 0),
    PARLEY_CPU_KERNEL(PARLEY_OP_ADD, "add", add_f32, 0),
    PARLEY_CPU_KERNEL(PARLEY_OP_SOFTMAX, "softmax", softmax_f32, 0),
    PARLEY_CPU_KERNEL(PARLEY_OP_LOG_SOFTMAX, "log_softmax", log_softmax_f32, 0),
    PARLEY_CPU_KERNEL(PARLEY_OP_TOPK, "topk", topk_f32, 0),
    PARLEY_CPU_LINEAR(PARLEY_DTYPE_F32, "linear_f32w", linear_prepare_f32),
    PARLEY_CPU_LINEAR(PARLEY_DTYPE_F16, "linear_f16w", linear_prepare_f16),
    PARLEY_CPU_LINEAR(PARLEY_DTYPE_BF16, "linear_bf16w", linear_prepare_bf16),
    PARLEY_CPU_LINEAR(PARLEY_DTYPE_I8, "linear_i8w", linear_prepare_i8),
    PARLEY_CPU_LINEAR(PARLEY_DTYPE_I4, "linear_i4w", linear_prepare_i4),
};

const parley_plugin_desc kPlugin = {
    sizeof(parley_plugin_desc),
    PARLEY_PLUGIN_ABI_VERSION,
    "cpu",
    "0.1.0",
    kDevices,
    sizeof(kDevices) / sizeof(kDevices[0]),
    kKernels,
    sizeof(kKernels) / sizeof(kKernels[0]),
};

}  // namespace

}  // namespace parley::cpu

extern "C" const parley_plugin_desc *parley_cpu_plugin_entry(uint32_t host_abi_version,
                                                             const parley_host_services *host) {
  if ((host_abi_version >> 16) != PARLEY_PLUGIN_ABI_MAJOR) {
    if (host && host->log) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "cpu plugin: host plugin ABI %u.%u is incompatible with the plugin's %u.%u",
                    host_abi_version >> 16, host_abi_version & 0xffffu, unsigned(PARLEY_PLUGIN_ABI_MAJOR),
                    unsigned(PARLEY_PLUGIN_ABI_MINOR));
      host->log(host->host, PARLEY_LOG_ERROR, msg);
    }
    return nullptr;
  }
  return &parley::cpu::kPlugin;
}
