// Element-wise kernels: activation, gated activation (SwiGLU/GeGLU/ReGLU), add.
#include "cpu_common.h"
#include "cpu_kernels.h"

namespace parley::cpu {

namespace {

// Rows per parallel chunk so that a chunk touches at least ~16k elements.
int64_t row_grain(int64_t cols) {
  return cols >= 16384 ? 1 : 16384 / (cols > 0 ? cols : 1);
}

}  // namespace

PARLEY_CPU_MULTIVERSION void apply_activation(int act, const float *x, float *y, int64_t n) {
  switch (act) {
    case PARLEY_ACT_NONE:
      if (x != y) std::memmove(y, x, static_cast<size_t>(n) * sizeof(float));
      break;
    case PARLEY_ACT_RELU:
      for (int64_t i = 0; i < n; ++i) y[i] = act_relu(x[i]);
      break;
    case PARLEY_ACT_GELU_ERF:
      for (int64_t i = 0; i < n; ++i) y[i] = act_gelu_erf(x[i]);
      break;
    case PARLEY_ACT_GELU_TANH:
      for (int64_t i = 0; i < n; ++i) y[i] = act_gelu_tanh(x[i]);
      break;
    case PARLEY_ACT_SILU:
      for (int64_t i = 0; i < n; ++i) y[i] = act_silu(x[i]);
      break;
    default:
      break;
  }
}

PARLEY_CPU_MULTIVERSION void apply_gated_activation(int act, const float *g, const float *u, float *y, int64_t n) {
  switch (act) {
    case PARLEY_ACT_NONE:
      for (int64_t i = 0; i < n; ++i) y[i] = g[i] * u[i];
      break;
    case PARLEY_ACT_RELU:
      for (int64_t i = 0; i < n; ++i) y[i] = act_relu(g[i]) * u[i];
      break;
    case PARLEY_ACT_GELU_ERF:
      for (int64_t i = 0; i < n; ++i) y[i] = act_gelu_erf(g[i]) * u[i];
      break;
    case PARLEY_ACT_GELU_TANH:
      for (int64_t i = 0; i < n; ++i) y[i] = act_gelu_tanh(g[i]) * u[i];
      break;
    case PARLEY_ACT_SILU:
      for (int64_t i = 0; i < n; ++i) y[i] = act_silu(g[i]) * u[i];
      break;
    default:
      break;
  }
}

parley_kernel_status activation_f32(const parley_kernel_context *ctx, const void *args) {
  return guarded("activation", ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    const parley_activation_args *a = nullptr;
    if (auto st = begin_call("activation", ctx, args, &host, &a)) return st;
    int64_t act = enum_value(a->activation);
    PARLEY_CHECK(host, valid_activation(act), "activation: unknown activation %lld", ll(act));
    PARLEY_CHECK(host, a->rows >= 0 && a->cols >= 0, "activation: negative shape rows=%lld cols=%lld", ll(a->rows),
                 ll(a->cols));
    if (a->rows == 0 || a->cols == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->x && a->out, "activation: x or out is NULL");
    PARLEY_CHECK(host, a->ld_x >= a->cols, "activation: ld_x (%lld) < cols (%lld)", ll(a->ld_x), ll(a->cols));
    PARLEY_CHECK(host, a->ld_out >= a->cols, "activation: ld_out (%lld) < cols (%lld)", ll(a->ld_out), ll(a->cols));
    const float *x = static_cast<const float *>(a->x);
    float *out = static_cast<float *>(a->out);
    const int64_t cols = a->cols, ldx = a->ld_x, ldo = a->ld_out;
    const int ai = static_cast<int>(act);
    return host.parallel_for(a->rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) apply_activation(ai, x + r * ldx, out + r * ldo, cols);
      return PARLEY_KERNEL_OK;
    });
  });
}

parley_kernel_status gated_activation_f32(const parley_kernel_context *ctx, const void *args) {
  return guarded("gated_activation", ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    const parley_gated_activation_args *a = nullptr;
    if (auto st = begin_call("gated_activation", ctx, args, &host, &a)) return st;
    int64_t act = enum_value(a->activation);
    PARLEY_CHECK(host, valid_activation(act), "gated_activation: unknown activation %lld", ll(act));
    PARLEY_CHECK(host, a->rows >= 0 && a->cols >= 0, "gated_activation: negative shape rows=%lld cols=%lld",
                 ll(a->rows), ll(a->cols));
    if (a->rows == 0 || a->cols == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->gate && a->up && a->out, "gated_activation: gate, up or out is NULL");
    PARLEY_CHECK(host, a->ld_gate >= a->cols, "gated_activation: ld_gate (%lld) < cols (%lld)", ll(a->ld_gate),
                 ll(a->cols));
    PARLEY_CHECK(host, a->ld_up >= a->cols, "gated_activation: ld_up (%lld) < cols (%lld)", ll(a->ld_up), ll(a->cols));
    PARLEY_CHECK(host, a->ld_out >= a->cols, "gated_activation: ld_out (%lld) < cols (%lld)", ll(a->ld_out),
                 ll(a->cols));
    const float *g = static_cast<const float *>(a->gate);
    const float *u = static_cast<const float *>(a->up);
    float *out = static_cast<float *>(a->out);
    const int64_t cols = a->cols;
    const int ai = static_cast<int>(act);
    return host.parallel_for(a->rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        apply_gated_activation(ai, g + r * a->ld_gate, u + r * a->ld_up, out + r * a->ld_out, cols);
      return PARLEY_KERNEL_OK;
    });
  });
}

parley_kernel_status add_f32(const parley_kernel_context *ctx, const void *args) {
  return guarded("add", ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    const parley_add_args *a = nullptr;
    if (auto st = begin_call("add", ctx, args, &host, &a)) return st;
    PARLEY_CHECK(host, a->n >= 0, "add: n (%lld) < 0", ll(a->n));
    if (a->n == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->a && a->b && a->out, "add: a, b or out is NULL");
    const float *x = static_cast<const float *>(a->a);
    const float *y = static_cast<const float *>(a->b);
    float *out = static_cast<float *>(a->out);
    const float alpha = a->alpha;
    return host.parallel_for(a->n, 32768, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) out[i] = alpha * x[i] + y[i];
      return PARLEY_KERNEL_OK;
    });
  });
}

}  // namespace parley::cpu
