// Kernel entry points of the cpu plugin (one per op, F32).
#ifndef PARLEY_PLUGINS_CPU_KERNELS_H
#define PARLEY_PLUGINS_CPU_KERNELS_H

#include <parley/plugin.h>

namespace parley::cpu {

parley_kernel_status gemm_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status attention_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status layer_norm_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status rms_norm_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status rotary_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status activation_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status gated_activation_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status embedding_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status add_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status softmax_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status log_softmax_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status topk_f32(const parley_kernel_context *ctx, const void *args);

}  // namespace parley::cpu

#endif
