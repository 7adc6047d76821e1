// Row-wise top-k: descending, ties by lower index, NaN below every number.
// Small k keeps a sorted buffer of candidates (one pass, no memory); larger k
// partially sorts an index array taken from the host's scratch memory.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_common.h"
#include "cpu_kernels.h"

namespace parley::cpu {

namespace {

constexpr int64_t kSmallK = 64;

// True when (va, ia) ranks before (vb, ib).
inline bool ranks_before(float va, int32_t ia, float vb, int32_t ib) {
  const bool na = std::isnan(va), nb = std::isnan(vb);
  if (na != nb) return nb;
  if (!na && va != vb) return va > vb;
  return ia < ib;
}

void topk_small(const float *x, int64_t cols, int64_t k, float *vals, int32_t *idx) {
  int64_t cnt = 0;
  for (int64_t j = 0; j < cols; ++j) {
    const float v = x[j];
    const int32_t id = static_cast<int32_t>(j);
    if (cnt == k && !ranks_before(v, id, vals[k - 1], idx[k - 1])) continue;
    int64_t p = cnt < k ? cnt++ : k - 1;
    while (p > 0 && ranks_before(v, id, vals[p - 1], idx[p - 1])) {
      vals[p] = vals[p - 1];
      idx[p] = idx[p - 1];
      --p;
    }
    vals[p] = v;
    idx[p] = id;
  }
}

}  // namespace

parley_kernel_status topk_f32(const parley_kernel_context *ctx, const void *args) {
  return guarded("topk", ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    const parley_topk_args *a = nullptr;
    if (auto st = begin_call("topk", ctx, args, &host, &a)) return st;
    PARLEY_CHECK(host, a->rows >= 0, "topk: rows (%lld) < 0", ll(a->rows));
    PARLEY_CHECK(host, a->cols >= 1 && a->cols <= INT32_MAX, "topk: cols (%lld) outside [1, INT32_MAX]", ll(a->cols));
    PARLEY_CHECK(host, a->k >= 1 && a->k <= a->cols, "topk: k (%lld) outside [1, cols=%lld]", ll(a->k), ll(a->cols));
    if (a->rows == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->x && a->values && a->indices, "topk: x, values or indices is NULL");
    PARLEY_CHECK(host, a->ld_x >= a->cols, "topk: ld_x (%lld) < cols (%lld)", ll(a->ld_x), ll(a->cols));
    const int64_t cols = a->cols, k = a->k;
    const float *x = static_cast<const float *>(a->x);
    float *values = static_cast<float *>(a->values);
    return host.parallel_for(a->rows, 1, [&](int64_t r0, int64_t r1) -> parley_kernel_status {
      int32_t *order = nullptr;
      std::vector<int32_t> heap;
      if (k > kSmallK) {
        order = static_cast<int32_t *>(host.scratch(sizeof(int32_t) * static_cast<size_t>(cols)));
        if (!order) {
          heap.resize(static_cast<size_t>(cols));
          order = heap.data();
        }
      }
      for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * a->ld_x;
        float *vr = values + r * k;
        int32_t *ir = a->indices + r * k;
        if (k <= kSmallK) {
          topk_small(xr, cols, k, vr, ir);
        } else {
          for (int64_t j = 0; j < cols; ++j) order[j] = static_cast<int32_t>(j);
          std::partial_sort(order, order + k, order + cols,
                            [xr](int32_t p, int32_t q) { return ranks_before(xr[p], p, xr[q], q); });
          for (int64_t j = 0; j < k; ++j) {
            ir[j] = order[j];
            vr[j] = xr[order[j]];
          }
        }
      }
      return PARLEY_KERNEL_OK;
    });
  });
}

}  // namespace parley::cpu
