// Row-wise softmax and log-softmax, max-subtracted for stability.
#include <cmath>
#include <limits>

#include "cpu_common.h"
#include "cpu_kernels.h"

namespace parley::cpu {

namespace {

PARLEY_CPU_MULTIVERSION float row_max(const float *x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

parley_kernel_status softmax_impl(const char *op, bool log, const parley_kernel_context *ctx, const void *args) {
  return guarded(op, ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    const parley_softmax_args *a = nullptr;
    if (auto st = begin_call(op, ctx, args, &host, &a)) return st;
    PARLEY_CHECK(host, a->rows >= 0, "%s: rows (%lld) < 0", op, ll(a->rows));
    PARLEY_CHECK(host, a->cols >= 1, "%s: cols (%lld) < 1", op, ll(a->cols));
    if (a->rows == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->x && a->out, "%s: x or out is NULL", op);
    PARLEY_CHECK(host, a->ld_x >= a->cols, "%s: ld_x (%lld) < cols (%lld)", op, ll(a->ld_x), ll(a->cols));
    PARLEY_CHECK(host, a->ld_out >= a->cols, "%s: ld_out (%lld) < cols (%lld)", op, ll(a->ld_out), ll(a->cols));
    const int64_t cols = a->cols;
    const float *x = static_cast<const float *>(a->x);
    float *out = static_cast<float *>(a->out);
    return host.parallel_for(a->rows, cols >= 4096 ? 1 : 4096 / cols, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * a->ld_x;
        float *o = out + r * a->ld_out;
        const float m = row_max(xr, cols);
        // Same-index reads and writes: out may alias x.
        double sum = 0.0;
        if (log) {
          for (int64_t j = 0; j < cols; ++j) sum += std::exp(xr[j] - m);
          const float lsum = static_cast<float>(std::log(sum));
          for (int64_t j = 0; j < cols; ++j) o[j] = (xr[j] - m) - lsum;
        } else {
          for (int64_t j = 0; j < cols; ++j) {
            o[j] = std::exp(xr[j] - m);
            sum += o[j];
          }
          const float inv = static_cast<float>(1.0 / sum);
          for (int64_t j = 0; j < cols; ++j) o[j] *= inv;
        }
      }
      return PARLEY_KERNEL_OK;
    });
  });
}

}  // namespace

parley_kernel_status softmax_f32(const parley_kernel_context *ctx, const void *args) {
  return softmax_impl("softmax", false, ctx, args);
}

parley_kernel_status log_softmax_f32(const parley_kernel_context *ctx, const void *args) {
  return softmax_impl("log_softmax", true, ctx, args);
}

}  // namespace parley::cpu
