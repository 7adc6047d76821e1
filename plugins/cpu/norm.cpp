// LayerNorm (torch.nn.LayerNorm, biased variance) and RMSNorm (LlamaRMSNorm),
// with the optional fused residual add of pre-norm blocks.
#include "cpu_common.h"
#include "cpu_kernels.h"

namespace parley::cpu {

namespace {

PARLEY_CPU_MULTIVERSION void add_rows(const float *x, const float *r, float *y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] + r[i];
}

PARLEY_CPU_MULTIVERSION float sum(const float *x, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i];
  return s;
}

PARLEY_CPU_MULTIVERSION float sum_sq_dev(const float *x, int64_t n, float mean) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += (x[i] - mean) * (x[i] - mean);
  return s;
}

PARLEY_CPU_MULTIVERSION void scale_shift(const float *x, int64_t n, float mean, float rstd, const float *gamma,
                                         const float *beta, float *y) {
  if (beta) {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * rstd * gamma[i];
  }
}

parley_kernel_status norm(const char *op, bool rms, const parley_kernel_context *ctx, const void *args) {
  return guarded(op, ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    const parley_norm_args *a = nullptr;
    if (auto st = begin_call(op, ctx, args, &host, &a)) return st;
    PARLEY_CHECK(host, a->rows >= 0, "%s: rows (%lld) < 0", op, ll(a->rows));
    PARLEY_CHECK(host, a->cols >= 1, "%s: cols (%lld) < 1", op, ll(a->cols));
    if (a->rows == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->x && a->out && a->gamma, "%s: x, out or gamma is NULL", op);
    PARLEY_CHECK(host, a->ld_x >= a->cols, "%s: ld_x (%lld) < cols (%lld)", op, ll(a->ld_x), ll(a->cols));
    PARLEY_CHECK(host, a->ld_out >= a->cols, "%s: ld_out (%lld) < cols (%lld)", op, ll(a->ld_out), ll(a->cols));
    PARLEY_CHECK(host, a->eps >= 0.f, "%s: eps (%g) is negative or NaN", op, static_cast<double>(a->eps));
    if (a->residual) {
      PARLEY_CHECK(host, a->ld_residual >= a->cols, "%s: ld_residual (%lld) < cols (%lld)", op, ll(a->ld_residual),
                   ll(a->cols));
      if (a->residual_out)
        PARLEY_CHECK(host, a->ld_residual_out >= a->cols, "%s: ld_residual_out (%lld) < cols (%lld)", op,
                     ll(a->ld_residual_out), ll(a->cols));
    }
    const float *x = static_cast<const float *>(a->x);
    const float *res = static_cast<const float *>(a->residual);
    float *res_out = static_cast<float *>(a->residual_out);
    const float *gamma = static_cast<const float *>(a->gamma);
    const float *beta = rms ? nullptr : static_cast<const float *>(a->beta);
    float *out = static_cast<float *>(a->out);
    const int64_t cols = a->cols;
    const float eps = a->eps;
    const float inv_n = 1.f / static_cast<float>(cols);
    int64_t grain = cols >= 8192 ? 1 : 8192 / cols;
    return host.parallel_for(a->rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float *src = x + r * a->ld_x;
        float *dst = out + r * a->ld_out;
        if (res) {
          // The sum goes to residual_out when asked for, else to out (same-index
          // writes, so any of x/residual/out may alias), and is normalised from there.
          float *sum_row = res_out ? res_out + r * a->ld_residual_out : dst;
          add_rows(src, res + r * a->ld_residual, sum_row, cols);
          src = sum_row;
        }
        float mean = rms ? 0.f : sum(src, cols) * inv_n;
        float var = sum_sq_dev(src, cols, mean) * inv_n;
        float rstd = 1.f / std::sqrt(var + eps);
        scale_shift(src, cols, mean, rstd, gamma, beta, dst);
      }
      return PARLEY_KERNEL_OK;
    });
  });
}

}  // namespace

parley_kernel_status layer_norm_f32(const parley_kernel_context *ctx, const void *args) {
  return norm("layer_norm", false, ctx, args);
}

parley_kernel_status rms_norm_f32(const parley_kernel_context *ctx, const void *args) {
  return norm("rms_norm", true, ctx, args);
}

}  // namespace parley::cpu
