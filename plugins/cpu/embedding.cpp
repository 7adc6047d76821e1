// Embedding gather: out[i,:] = table[ids[i],:] * scale (I8 tables dequantised
// with row_scales, F16/BF16 tables widened). Every id is checked before
// anything is written.
#include <cstring>

#include "cpu_common.h"
#include "cpu_kernels.h"
#include "linear.h"

namespace parley::cpu {

namespace {

PARLEY_CPU_MULTIVERSION void copy_scaled(const float *src, float s, float *dst, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = src[j] * s;
}

PARLEY_CPU_MULTIVERSION void dequant_scaled(const int8_t *src, float s, float *dst, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<float>(src[j]) * s;
}

void half_scaled(const uint16_t *src, float s, float *dst, int64_t n) {
  f16_to_f32(src, dst, n);
  if (s != 1.f)
    for (int64_t j = 0; j < n; ++j) dst[j] *= s;
}

PARLEY_CPU_MULTIVERSION void bf16_scaled(const uint16_t *src, float s, float *dst, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    uint32_t bits = uint32_t(src[j]) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    dst[j] = f * s;
  }
}

}  // namespace

parley_kernel_status embedding_f32(const parley_kernel_context *ctx, const void *args) {
  return guarded("embedding", ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    const parley_embedding_args *a = nullptr;
    if (auto st = begin_call("embedding", ctx, args, &host, &a)) return st;
    const int64_t tdt = enum_value(a->table_dtype);
    PARLEY_CHECK(host, tdt >= 0 && tdt < PARLEY_DTYPE_COUNT_, "embedding: unknown table_dtype %lld", ll(tdt));
    if (tdt != PARLEY_DTYPE_F32 && tdt != PARLEY_DTYPE_I8 && tdt != PARLEY_DTYPE_F16 && tdt != PARLEY_DTYPE_BF16)
      return host.fail(PARLEY_KERNEL_UNSUPPORTED, "embedding: table_dtype %s is not supported (F32, F16, BF16 or I8)",
                       dtype_name(tdt));
    PARLEY_CHECK(host, a->count >= 0 && a->vocab >= 0, "embedding: negative count (%lld) or vocab (%lld)", ll(a->count),
                 ll(a->vocab));
    PARLEY_CHECK(host, a->dim >= 1, "embedding: dim (%lld) < 1", ll(a->dim));
    PARLEY_CHECK(host, a->ld_out >= a->dim, "embedding: ld_out (%lld) < dim (%lld)", ll(a->ld_out), ll(a->dim));
    if (a->count == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->ids && a->table && a->out, "embedding: ids, table or out is NULL");
    const bool i8 = tdt == PARLEY_DTYPE_I8;
    PARLEY_CHECK(host, !i8 || a->row_scales, "embedding: I8 table without row_scales");
    for (int64_t i = 0; i < a->count; ++i)
      PARLEY_CHECK(host, a->ids[i] >= 0 && a->ids[i] < a->vocab, "embedding: ids[%lld] = %d is outside [0, %lld)",
                   ll(i), a->ids[i], ll(a->vocab));
    const int64_t dim = a->dim;
    float *out = static_cast<float *>(a->out);
    return host.parallel_for(a->count, dim >= 4096 ? 1 : 4096 / dim, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t id = a->ids[i];
        float *dst = out + i * a->ld_out;
        if (i8)
          dequant_scaled(static_cast<const int8_t *>(a->table) + id * dim, a->row_scales[id] * a->scale, dst, dim);
        else if (tdt == PARLEY_DTYPE_F16)
          half_scaled(static_cast<const uint16_t *>(a->table) + id * dim, a->scale, dst, dim);
        else if (tdt == PARLEY_DTYPE_BF16)
          bf16_scaled(static_cast<const uint16_t *>(a->table) + id * dim, a->scale, dst, dim);
        else
          copy_scaled(static_cast<const float *>(a->table) + id * dim, a->scale, dst, dim);
      }
      return PARLEY_KERNEL_OK;
    });
  });
}

}  // namespace parley::cpu
