// The cuda plugin's descriptor and its only exported symbol. Nothing here
// touches CUDA: the runtime calls the device's init (device.cpp), which is
// where the driver is first looked for.
#include <cstdio>

#include "cuda_common.h"

namespace parley::cuda {
namespace {

const parley_device_desc kDevices[] = {{
    sizeof(parley_device_desc),
    "cuda",
    PARLEY_DEVICE_CUDA,
    device_init,
    device_shutdown,
    device_allocate,
    device_release,
    device_copy,
    device_synchronize,
}};

constexpr int32_t kPriority = 10;

#define PARLEY_CUDA_KERNEL(op, dtype, name, fn) \
  { sizeof(parley_kernel_desc), op, "cuda", dtype, kPriority, name, fn, 0, 0, -1, nullptr, nullptr }

#define PARLEY_CUDA_LINEAR(wdt, name, prepare)                                                                      \
  {                                                                                                                 \
    sizeof(parley_kernel_desc), PARLEY_OP_LINEAR, "cuda", PARLEY_DTYPE_F32, kPriority, name, linear_run, 0, 0, wdt, \
        prepare, linear_release                                                                                     \
  }

// 16-bit activations (plugin.h): the SIMT / tensor-core bodies with F16 or
// BF16 x, residual and out (F32 weights: the SIMT bodies, on CUDA cores).
#define PARLEY_CUDA_LINEAR16(act, wdt, name, prepare)                                                           \
  {                                                                                                             \
    sizeof(parley_kernel_desc), PARLEY_OP_LINEAR, "cuda", act, kPriority, name, linear_run, 0, 0, wdt, prepare, \
        linear_release                                                                                          \
  }

const parley_kernel_desc kKernels[] = {
    PARLEY_CUDA_KERNEL(PARLEY_OP_GEMM, PARLEY_DTYPE_F32, "gemm_cublaslt", gemm_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_GEMM, PARLEY_DTYPE_F16, "gemm_cublaslt_f16", gemm_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_GEMM, PARLEY_DTYPE_BF16, "gemm_cublaslt_bf16", gemm_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_LAYER_NORM, PARLEY_DTYPE_F32, "layer_norm", layer_norm_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_RMS_NORM, PARLEY_DTYPE_F32, "rms_norm", rms_norm_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_ROTARY, PARLEY_DTYPE_F32, "rotary", rotary_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_ACTIVATION, PARLEY_DTYPE_F32, "activation", activation_f32),
    PARLEY_CUDA_KERNEL(PARLEY_OP_GATED_ACTIVATION, PARLEY_DTYPE_F32, "gated_activation", gated_activation_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_EMBEDDING, PARLEY_DTYPE_F32, "embedding", embedding_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_ADD, PARLEY_DTYPE_F32, "add", add_run),
    // 16-bit activations (parley_model_options.activation_dtype): the same
    // kernels over F16 / BF16 inputs and outputs, float parameters.
    PARLEY_CUDA_KERNEL(PARLEY_OP_LAYER_NORM, PARLEY_DTYPE_F16, "layer_norm_f16", layer_norm_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_RMS_NORM, PARLEY_DTYPE_F16, "rms_norm_f16", rms_norm_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_ROTARY, PARLEY_DTYPE_F16, "rotary_f16", rotary_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_GATED_ACTIVATION, PARLEY_DTYPE_F16, "gated_activation_f16", gated_activation_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_EMBEDDING, PARLEY_DTYPE_F16, "embedding_f16", embedding_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_ADD, PARLEY_DTYPE_F16, "add_f16", add_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_LAYER_NORM, PARLEY_DTYPE_BF16, "layer_norm_bf16", layer_norm_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_RMS_NORM, PARLEY_DTYPE_BF16, "rms_norm_bf16", rms_norm_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_ROTARY, PARLEY_DTYPE_BF16, "rotary_bf16", rotary_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_GATED_ACTIVATION, PARLEY_DTYPE_BF16, "gated_activation_bf16", gated_activation_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_EMBEDDING, PARLEY_DTYPE_BF16, "embedding_bf16", embedding_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_ADD, PARLEY_DTYPE_BF16, "add_bf16", add_run),
    PARLEY_CUDA_KERNEL(PARLEY_OP_SOFTMAX, PARLEY_DTYPE_F32, "softmax", softmax_f32),
    PARLEY_CUDA_KERNEL(PARLEY_OP_LOG_SOFTMAX, PARLEY_DTYPE_F32, "log_softmax", log_softmax_f32),
    PARLEY_CUDA_KERNEL(PARLEY_OP_TOPK, PARLEY_DTYPE_F32, "topk_block", topk_f32),
    // All three append the new K/V rows to the cache in the same launch, read
    // and append into a paged cache (block table, ABI 1.3) and honour a
    // sliding window (ABI 1.4). F32 activations over an F32 or I8 cache run
    // the SIMT split-KV kernel; over an F16 cache (kv_dtype, ABI 1.2) the
    // tensor-core kernel, as do F16 / BF16 activations (attention_op.cpp).
    {sizeof(parley_kernel_desc), PARLEY_OP_ATTENTION, "cuda", PARLEY_DTYPE_F32, kPriority, "attention_simt_splitkv",
     attention_run,
     PARLEY_KERNEL_FLAG_KV_APPEND | PARLEY_KERNEL_FLAG_KV_F16 | PARLEY_KERNEL_FLAG_KV_I8 | PARLEY_KERNEL_FLAG_KV_PAGED |
         PARLEY_KERNEL_FLAG_SLIDING_WINDOW,
     0, -1, nullptr, nullptr},
    // 16-bit activations read and append a cache of their own type (KV_F16 /
    // KV_BF16: the cache of a 16-bit-activation model, activation_dtype).
    {sizeof(parley_kernel_desc), PARLEY_OP_ATTENTION, "cuda", PARLEY_DTYPE_F16, kPriority, "attention_mma_fa2",
     attention_run,
     PARLEY_KERNEL_FLAG_KV_APPEND | PARLEY_KERNEL_FLAG_KV_F16 | PARLEY_KERNEL_FLAG_KV_PAGED |
         PARLEY_KERNEL_FLAG_SLIDING_WINDOW,
     0, -1, nullptr, nullptr},
    {sizeof(parley_kernel_desc), PARLEY_OP_ATTENTION, "cuda", PARLEY_DTYPE_BF16, kPriority, "attention_mma_fa2_bf16",
     attention_run,
     PARLEY_KERNEL_FLAG_KV_APPEND | PARLEY_KERNEL_FLAG_KV_BF16 | PARLEY_KERNEL_FLAG_KV_PAGED |
         PARLEY_KERNEL_FLAG_SLIDING_WINDOW,
     0, -1, nullptr, nullptr},
    // LINEAR with F32 activations, one entry per weight dtype (linear_op.cpp).
    PARLEY_CUDA_LINEAR(PARLEY_DTYPE_F32, "linear_cublaslt_f32w", linear_prepare_f32),
    PARLEY_CUDA_LINEAR(PARLEY_DTYPE_F16, "linear_simt_f16w", linear_prepare_f16),
    PARLEY_CUDA_LINEAR(PARLEY_DTYPE_BF16, "linear_simt_bf16w", linear_prepare_bf16),
    PARLEY_CUDA_LINEAR(PARLEY_DTYPE_I8, "linear_simt_i8w", linear_prepare_i8),
    PARLEY_CUDA_LINEAR(PARLEY_DTYPE_I4, "linear_simt_i4w", linear_prepare_i4),
    PARLEY_CUDA_LINEAR16(PARLEY_DTYPE_F16, PARLEY_DTYPE_F32, "linear_simt_f32w_f16", linear_prepare_f32),
    PARLEY_CUDA_LINEAR16(PARLEY_DTYPE_F16, PARLEY_DTYPE_F16, "linear_simt_f16w_f16", linear_prepare_f16),
    PARLEY_CUDA_LINEAR16(PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16, "linear_simt_bf16w_f16", linear_prepare_bf16),
    PARLEY_CUDA_LINEAR16(PARLEY_DTYPE_F16, PARLEY_DTYPE_I8, "linear_simt_i8w_f16", linear_prepare_i8),
    PARLEY_CUDA_LINEAR16(PARLEY_DTYPE_F16, PARLEY_DTYPE_I4, "linear_simt_i4w_f16", linear_prepare_i4),
    PARLEY_CUDA_LINEAR16(PARLEY_DTYPE_BF16, PARLEY_DTYPE_F32, "linear_simt_f32w_bf16", linear_prepare_f32),
    PARLEY_CUDA_LINEAR16(PARLEY_DTYPE_BF16, PARLEY_DTYPE_F16, "linear_simt_f16w_bf16", linear_prepare_f16),
    PARLEY_CUDA_LINEAR16(PARLEY_DTYPE_BF16, PARLEY_DTYPE_BF16, "linear_simt_bf16w_bf16", linear_prepare_bf16),
    PARLEY_CUDA_LINEAR16(PARLEY_DTYPE_BF16, PARLEY_DTYPE_I8, "linear_simt_i8w_bf16", linear_prepare_i8),
    PARLEY_CUDA_LINEAR16(PARLEY_DTYPE_BF16, PARLEY_DTYPE_I4, "linear_simt_i4w_bf16", linear_prepare_i4),
};

const parley_plugin_desc kPlugin = {
    sizeof(parley_plugin_desc),
    PARLEY_PLUGIN_ABI_VERSION,
    "cuda",
    "0.1.0",
    kDevices,
    sizeof(kDevices) / sizeof(kDevices[0]),
    kKernels,
    sizeof(kKernels) / sizeof(kKernels[0]),
};

}  // namespace
}  // namespace parley::cuda

extern "C" PARLEY_PLUGIN_EXPORT const parley_plugin_desc *parley_plugin_entry(uint32_t host_abi_version,
                                                                              const parley_host_services *host) {
  if ((host_abi_version >> 16) != PARLEY_PLUGIN_ABI_MAJOR) {
    if (host && host->log) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "cuda plugin: host plugin ABI %u.%u is incompatible with the plugin's %u.%u",
                    host_abi_version >> 16, host_abi_version & 0xffffu, unsigned(PARLEY_PLUGIN_ABI_MAJOR),
                    unsigned(PARLEY_PLUGIN_ABI_MINOR));
      host->log(host->host, PARLEY_LOG_ERROR, msg);
    }
    return nullptr;
  }
  return &parley::cuda::kPlugin;
}
