// LINEAR on the cpu: out = act(x @ W^T + bias) + residual with the weight in
// its stored precision (F32, F16, BF16, I8 per-row or group-wise, I4
// group-wise).
//
// The general path works on tiles of output features: a tile of W's rows is
// converted to float32 in a cache-sized scratch block (F32 weights are used
// in place) and multiplied with oneDNN's sgemm, then the epilogue (bias,
// activation, residual) runs on the tile while it is in cache. Threads split
// the output features, so each streams its own slice of the weight once.
// Faster paths for particular shapes and CPUs (linear_fast.cpp) are tried
// first; this one serves everything else and is their reference.
#include "linear.h"

#include <immintrin.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>

#include "cpu_features.h"
#include "linear_kernels.h"
#include "onednn.h"

namespace parley::cpu {

// F16 -> F32 with F16C (vcvtph2ps); GCC 12 compiles a _Float16 conversion to
// a library call per value, 5-10x slower than this.
__attribute__((target("avx2,f16c"))) static void f16_to_f32_f16c(const uint16_t *src, float *dst, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(src + j))));
  for (; j < n; ++j) dst[j] = _cvtsh_ss(src[j]);
}

// `rows` rows of `cols` halves, `src_stride` halves apart, into rows of
// `cols` floats packed one after another: one call per run of KV-cache rows
// instead of one per row (a call per 64-value row cost more than the
// conversion).
__attribute__((target("avx2,f16c"))) static void f16_rows_to_f32_f16c(const uint16_t *src, int64_t src_stride,
                                                                      int64_t rows, int64_t cols, float *dst) {
  for (int64_t r = 0; r < rows; ++r, src += src_stride, dst += cols) {
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8)
      _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(src + j))));
    for (; j < cols; ++j) dst[j] = _cvtsh_ss(src[j]);
  }
}

void f16_rows_to_f32(const uint16_t *src, int64_t src_stride, int64_t rows, int64_t cols, float *dst) {
  static const bool f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2");
  if (f16c) return f16_rows_to_f32_f16c(src, src_stride, rows, cols, dst);
  for (int64_t r = 0; r < rows; ++r) f16_to_f32(src + r * src_stride, dst + r * cols, cols);
}

void f16_to_f32(const uint16_t *src, float *dst, int64_t n) {
  static const bool f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2");
  if (f16c) return f16_to_f32_f16c(src, dst, n);
  for (int64_t j = 0; j < n; ++j) {  // CPUs without F16C: the compiler's (slow) conversion
    _Float16 h;
    std::memcpy(&h, src + j, 2);
    dst[j] = static_cast<float>(h);
  }
}

// F32 -> F16, round to nearest even (vcvtps2ph), as static_cast<_Float16>
// rounds, without its library call per value.
__attribute__((target("avx2,f16c"))) static void f32_to_f16_f16c(const float *src, uint16_t *dst, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + j),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT));
  for (; j < n; ++j) dst[j] = _cvtss_sh(src[j], _MM_FROUND_TO_NEAREST_INT);
}

void f32_to_f16(const float *src, uint16_t *dst, int64_t n) {
  static const bool f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2");
  if (f16c) return f32_to_f16_f16c(src, dst, n);
  for (int64_t j = 0; j < n; ++j) {
    const _Float16 h = static_cast<_Float16>(src[j]);
    std::memcpy(dst + j, &h, 2);
  }
}

namespace {

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

PARLEY_CPU_MULTIVERSION void bf16_row(const uint16_t *src, float *dst, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    uint32_t bits = uint32_t(src[j]) << 16;
    std::memcpy(dst + j, &bits, 4);
  }
}

PARLEY_CPU_MULTIVERSION void i8_row(const int8_t *src, const float *scales, int64_t group, float *dst, int64_t n) {
  // group == n for per-row scales (one scale for the whole row).
  for (int64_t g0 = 0; g0 < n; g0 += group) {
    const float s = scales[g0 / group];
    for (int64_t j = g0; j < g0 + group; ++j) dst[j] = static_cast<float>(src[j]) * s;
  }
}

// AVX2 form of i4_row below (the compiler leaves that one's nibble pairs
// scalar): 16 bytes -> 32 values per step, the same float(q) * s per value.
// n and group are multiples of 32 (I4 groups are 32, 64 or 128).
__attribute__((target("avx2"))) void i4_row_avx2(const uint8_t *src, const float *scales, int64_t group, float *dst,
                                                 int64_t n) {
  const __m128i nib = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
  for (int64_t j = 0; j < n; j += 32) {
    const __m256 s = _mm256_set1_ps(scales[j / group]);
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(src + j / 2));
    // (v ^ 8) - 8 sign-extends a nibble held in the low 4 bits of a byte.
    const __m128i even = _mm_sub_epi8(_mm_xor_si128(_mm_and_si128(b, nib), eight), eight);
    const __m128i odd = _mm_sub_epi8(_mm_xor_si128(_mm_and_si128(_mm_srli_epi16(b, 4), nib), eight), eight);
    const __m128i q[2] = {_mm_unpacklo_epi8(even, odd), _mm_unpackhi_epi8(even, odd)};  // elements in order
    for (int h = 0; h < 2; ++h) {
      const __m256i lo = _mm256_cvtepi8_epi32(q[h]), hi = _mm256_cvtepi8_epi32(_mm_srli_si128(q[h], 8));
      _mm256_storeu_ps(dst + j + 16 * h, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), s));
      _mm256_storeu_ps(dst + j + 16 * h + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), s));
    }
  }
}

PARLEY_CPU_MULTIVERSION void i4_row(const uint8_t *src, const float *scales, int64_t group, float *dst, int64_t n) {
  for (int64_t g0 = 0; g0 < n; g0 += group) {
    const float s = scales[g0 / group];
    for (int64_t j = g0; j < g0 + group; j += 2) {
      const uint8_t b = src[j / 2];
      dst[j] = static_cast<float>(static_cast<int8_t>(static_cast<uint8_t>(b << 4)) >> 4) * s;
      dst[j + 1] = static_cast<float>(static_cast<int8_t>(b) >> 4) * s;
    }
  }
}

// Asks the kernel to reclaim the whole pages of [p, p + bytes): clean
// mapped-file pages are dropped (and read again if touched), anonymous ones
// swapped out where there is swap. Contents never change; failure (an older
// kernel) leaves them resident.
void page_out(const void *p, uint64_t bytes) {
#ifdef MADV_PAGEOUT
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  if (page == 0 || page == uintptr_t(-1)) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + uintptr_t(bytes)) / page * page;
  if (end > begin) (void)madvise(reinterpret_cast<void *>(begin), end - begin, MADV_PAGEOUT);
#else
  (void)p;
  (void)bytes;
#endif
}

// Checks shared by every dtype's prepare_weight.
parley_kernel_status check_desc(const Host &host, const parley_weight_desc *d, int32_t dtype) {
  if (!d) return host.fail(PARLEY_KERNEL_INVALID_ARGUMENT, "linear: weight desc is NULL");
  if (d->struct_size < sizeof(parley_weight_desc))
    return host.fail(PARLEY_KERNEL_INVALID_ARGUMENT, "linear: weight desc struct_size (%zu) < %zu", d->struct_size,
                     sizeof(parley_weight_desc));
  const char *name = d->name ? d->name : "(unnamed)";
  if (d->dtype != dtype)
    return host.fail(PARLEY_KERNEL_INVALID_ARGUMENT, "linear: weight '%.200s' has dtype %s, this kernel serves %s",
                     name, dtype_name(d->dtype), dtype_name(dtype));
  PARLEY_CHECK(host, d->n >= 1 && d->k >= 1, "linear: weight '%.200s' has shape [%lld, %lld]", name, ll(d->n),
               ll(d->k));
  PARLEY_CHECK(host, d->data != nullptr, "linear: weight '%.200s' has no data", name);
  const int64_t row_bytes = dtype == PARLEY_DTYPE_I4 ? d->k / 2 : d->k * int64_t(dtype_size_of(dtype));
  if (dtype == PARLEY_DTYPE_I4)
    PARLEY_CHECK(host, d->k % 2 == 0, "linear: I4 weight '%.200s' has an odd row length %lld", name, ll(d->k));
  if (dtype != PARLEY_DTYPE_I4)
    PARLEY_CHECK(host, d->ld_bytes % int64_t(dtype_size_of(dtype)) == 0,
                 "linear: weight '%.200s': ld_bytes (%lld) is not a multiple of the element size", name,
                 ll(d->ld_bytes));
  PARLEY_CHECK(host, d->ld_bytes >= row_bytes, "linear: weight '%.200s': ld_bytes (%lld) < row bytes (%lld)", name,
               ll(d->ld_bytes), ll(row_bytes));
  const bool float_type = dtype == PARLEY_DTYPE_F32 || dtype == PARLEY_DTYPE_F16 || dtype == PARLEY_DTYPE_BF16;
  const int64_t q = enum_value(d->quant);
  if (float_type) {
    if (q != PARLEY_QUANT_NONE)
      return host.fail(PARLEY_KERNEL_UNSUPPORTED, "linear: %s weight '%.200s' with quantization %lld",
                       dtype_name(dtype), name, ll(q));
    return PARLEY_KERNEL_OK;
  }
  if (q == PARLEY_QUANT_PER_ROW && dtype == PARLEY_DTYPE_I8) {
    PARLEY_CHECK(host, d->scales != nullptr, "linear: weight '%.200s' has no scales", name);
    return PARLEY_KERNEL_OK;
  }
  if (q == PARLEY_QUANT_GROUPWISE) {
    PARLEY_CHECK(host, d->scales != nullptr, "linear: weight '%.200s' has no scales", name);
    PARLEY_CHECK(host, d->group_size == 32 || d->group_size == 64 || d->group_size == 128,
                 "linear: weight '%.200s': group size %lld is not 32, 64 or 128", name, ll(d->group_size));
    PARLEY_CHECK(host, d->k % d->group_size == 0, "linear: weight '%.200s': group size %lld does not divide k = %lld",
                 name, ll(d->group_size), ll(d->k));
    return PARLEY_KERNEL_OK;
  }
  return host.fail(PARLEY_KERNEL_UNSUPPORTED, "linear: %s weight '%.200s' with quantization %lld is not supported",
                   dtype_name(dtype), name, ll(q));
}

parley_kernel_status prepare(const parley_kernel_context *ctx, const parley_weight_desc *d, parley_prepared_weight *out,
                             int32_t dtype) {
  return guarded("linear", ctx, [&]() -> parley_kernel_status {
    Host host(ctx ? ctx->host : nullptr);
    if (auto st = check_desc(host, d, dtype)) return st;
    PARLEY_CHECK(host, out != nullptr && out->struct_size >= sizeof(parley_prepared_weight),
                 "linear: prepared weight output is NULL or too small");
    // oneDNN's kernels are built here, while the model loads, not in the
    // first product: then no request is computing while they are built (and
    // register their static destructors), so the runtime's exit handler
    // (runtime/core/exit_gate.hpp) is registered after them.
    if (auto st = onednn_ready(host)) return st;
    auto w = std::make_unique<PackedWeight>();
    w->name = d->name ? d->name : "";
    w->dtype = dtype;
    w->quant = d->quant;
    w->n = d->n;
    w->k = d->k;
    w->data = static_cast<const uint8_t *>(d->data);
    w->ld_bytes = d->ld_bytes;
    w->scales = d->scales;
    w->group_size = d->quant == PARLEY_QUANT_GROUPWISE ? d->group_size : 0;
    // The VNNI path (m > kSmallM) multiplies unsigned activations (q + 128)
    // by the signed weights and subtracts 128 * the row's (scaled) sum.
    if ((dtype == PARLEY_DTYPE_I8 || dtype == PARLEY_DTYPE_I4) && cpu_features().avx512_vnni) {
      const int64_t n = d->n, k = d->k;
      if (d->quant == PARLEY_QUANT_PER_ROW) w->row_sums.resize(size_t(n));
      if (d->quant == PARLEY_QUANT_GROUPWISE) w->group_corr.resize(size_t(n));
      for (int64_t r = 0; r < n; ++r) {
        const uint8_t *row = w->data + r * d->ld_bytes;
        auto elem = [&](int64_t c) -> int32_t {
          if (dtype == PARLEY_DTYPE_I8) return static_cast<int8_t>(row[c]);
          const uint8_t b = row[c / 2];
          return c % 2 ? static_cast<int8_t>(b) >> 4 : static_cast<int8_t>(static_cast<uint8_t>(b << 4)) >> 4;
        };
        if (d->quant == PARLEY_QUANT_PER_ROW) {
          int32_t sum = 0;
          for (int64_t c = 0; c < k; ++c) sum += elem(c);
          w->row_sums[size_t(r)] = sum;
        } else {
          double corr = 0;
          for (int64_t g0 = 0; g0 < k; g0 += d->group_size) {
            int32_t sum = 0;
            for (int64_t c = g0; c < g0 + d->group_size; ++c) sum += elem(c);
            corr += 128.0 * double(d->scales[r * (k / d->group_size) + g0 / d->group_size]) * sum;
          }
          w->group_corr[size_t(r)] = float(corr);
        }
      }
    }
    // Where AVX512-VNNI is in use, I8 per-row weights get VNNI panels, and
    // the source's pages are handed back to the kernel (MADV_PAGEOUT:
    // reclaimed, never changed; a float path that reads them later - a
    // non-finite activation row, a capped instruction set, the tied
    // embedding table - faults them back in). So the process holds the
    // weight once, as the panels, not also as the mapped file.
    out->flags = PARLEY_PREPARED_USES_SOURCE;
    if (dtype == PARLEY_DTYPE_I8 && d->quant == PARLEY_QUANT_PER_ROW && use_avx512_vnni() && i8_panels_enabled() &&
        pack_i8_panels(*w)) {
      page_out(d->data, uint64_t(d->n) * uint64_t(d->ld_bytes));
      out->flags |= PARLEY_PREPARED_SOURCE_RELEASED;
    }
    out->bytes = w->owned_bytes() + sizeof(PackedWeight);
    out->handle = w.release();
    return PARLEY_KERNEL_OK;
  });
}

}  // namespace

size_t dtype_size_of(int32_t dtype) {
  switch (dtype) {
    case PARLEY_DTYPE_F32:
      return 4;
    case PARLEY_DTYPE_F16:
    case PARLEY_DTYPE_BF16:
      return 2;
    case PARLEY_DTYPE_I8:
      return 1;
    default:
      return 0;
  }
}

void dequantize_rows(const PackedWeight &w, int64_t r0, int64_t r1, float *dst) {
  const int64_t k = w.k;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t *src = w.data + r * w.ld_bytes;
    float *out = dst + (r - r0) * k;
    switch (w.dtype) {
      case PARLEY_DTYPE_F32:
        std::memcpy(out, src, size_t(k) * 4);
        break;
      case PARLEY_DTYPE_F16:
        f16_to_f32(reinterpret_cast<const uint16_t *>(src), out, k);
        break;
      case PARLEY_DTYPE_BF16:
        bf16_row(reinterpret_cast<const uint16_t *>(src), out, k);
        break;
      case PARLEY_DTYPE_I8:
        if (w.quant == PARLEY_QUANT_PER_ROW)
          i8_row(reinterpret_cast<const int8_t *>(src), w.scales + r, k, out, k);
        else
          i8_row(reinterpret_cast<const int8_t *>(src), w.scales + r * (k / w.group_size), w.group_size, out, k);
        break;
      case PARLEY_DTYPE_I4: {
        // By the level in use, so PARLEY_CPU_ISA=generic tests the portable loop.
        if (active_isa() >= Isa::kAvx2 && w.group_size % 32 == 0)
          i4_row_avx2(src, w.scales + r * (k / w.group_size), w.group_size, out, k);
        else
          i4_row(src, w.scales + r * (k / w.group_size), w.group_size, out, k);
        break;
      }
      default:
        break;
    }
  }
}

parley_kernel_status linear_prepare_f32(const parley_kernel_context *c, const parley_weight_desc *d,
                                        parley_prepared_weight *o) {
  return prepare(c, d, o, PARLEY_DTYPE_F32);
}
parley_kernel_status linear_prepare_f16(const parley_kernel_context *c, const parley_weight_desc *d,
                                        parley_prepared_weight *o) {
  return prepare(c, d, o, PARLEY_DTYPE_F16);
}
parley_kernel_status linear_prepare_bf16(const parley_kernel_context *c, const parley_weight_desc *d,
                                         parley_prepared_weight *o) {
  return prepare(c, d, o, PARLEY_DTYPE_BF16);
}
parley_kernel_status linear_prepare_i8(const parley_kernel_context *c, const parley_weight_desc *d,
                                       parley_prepared_weight *o) {
  return prepare(c, d, o, PARLEY_DTYPE_I8);
}
parley_kernel_status linear_prepare_i4(const parley_kernel_context *c, const parley_weight_desc *d,
                                       parley_prepared_weight *o) {
  return prepare(c, d, o, PARLEY_DTYPE_I4);
}

void linear_release(const parley_kernel_context *, void *handle) {
  delete static_cast<PackedWeight *>(handle);
}

// The general path's wide tiles: from this many activation rows, tiles of
// up to kWideTileMaxN output features.
constexpr int64_t kWideTileMinM = 16;
constexpr int64_t kWideTileMaxN = 512;
// ... and of at most this many converted floats (4 MiB of scratch per pool
// thread: 512 outputs up to k = 2048, fewer for longer rows).
constexpr int64_t kWideTileMaxFloats = int64_t{1} << 20;

namespace {

// The product and its epilogue, by the first path that serves the call.
parley_kernel_status linear_product(const Host &host, const parley_linear_args &args, const PackedWeight &w,
                                    bool *stats_written) {
  const parley_linear_args *a = &args;
  const int64_t m = a->m, n = a->n, k = a->k, act = enum_value(a->activation);
  parley_kernel_status fast = PARLEY_KERNEL_OK;
  if (linear_fast(host, *a, w, &fast, stats_written)) return fast;
  if (auto st = onednn_ready(host)) return st;

  const float *x = static_cast<const float *>(a->x);
  float *out = static_cast<float *>(a->out);
  const float *res = static_cast<const float *>(a->residual);
  const bool in_place = w.dtype == PARLEY_DTYPE_F32;
  // Tiles of output features small enough that a converted tile stays in
  // L2 (~128 KiB), at least 16; rows in chunks of at most 256.
  int64_t nb = std::max<int64_t>(16, std::min<int64_t>(256, (32768 / k) / 16 * 16));
  const int64_t mb = std::min<int64_t>(m, 256);
  if (m >= kWideTileMinM) {
    // Many rows (prefill, batched decode): sgemm packs the activation rows
    // again for every tile and has a cost per call, so fewer, wider tiles
    // (up to 512 features), as many per thread. SmolLM2 prefill of 256
    // tokens, 1 thread: 342 -> 358 tok/s; 32 chats (~30-row steps) through
    // the serving engine: 198-202 -> 205-206 tok/s (from 64 rows: the former).
    const int64_t threads = std::max(1, host.num_threads());
    const int64_t widest = in_place ? kWideTileMaxN : std::min(kWideTileMaxN, kWideTileMaxFloats / k / 16 * 16);
    const int64_t tiles = threads * ceil_div(n, threads * std::max<int64_t>(16, widest));
    nb = std::max(nb, ceil_div(ceil_div(n, tiles), 16) * 16);
  }
  const int64_t tiles = ceil_div(n, nb);
  std::atomic<int> lib_error{0};
  parley_kernel_status st = host.parallel_for(tiles, 1, [&](int64_t t0, int64_t t1) -> parley_kernel_status {
    const size_t floats = size_t(in_place ? 0 : nb * k) + size_t(mb * nb);
    float *scratch = static_cast<float *>(host.scratch(floats * sizeof(float)));
    if (!scratch) return PARLEY_KERNEL_OUT_OF_MEMORY;
    float *ctile = scratch + (in_place ? 0 : nb * k);
    SingleThreadedLibrary single;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = t * nb, nc = std::min(nb, n - n0);
      const float *wt;
      int64_t ldw;
      if (in_place) {
        wt = reinterpret_cast<const float *>(w.data + n0 * w.ld_bytes);
        ldw = w.ld_bytes / 4;
      } else {
        dequantize_rows(w, n0, n0 + nc, scratch);
        wt = scratch;
        ldw = k;
      }
      for (int64_t i0 = 0; i0 < m; i0 += mb) {
        const int64_t mc = std::min(mb, m - i0);
        dnnl_status_t s = dnnl_sgemm('N', 'T', mc, nc, k, 1.f, x + i0 * a->ld_x, a->ld_x, wt, ldw, 0.f, ctile, nc);
        if (s != dnnl_success) {
          lib_error.store(int(s));
          return s == dnnl_out_of_memory ? PARLEY_KERNEL_OUT_OF_MEMORY : PARLEY_KERNEL_DEVICE_ERROR;
        }
        for (int64_t i = 0; i < mc; ++i) {
          const int64_t row = i0 + i;
          epilogue_span(ctile + i * nc, a->bias ? a->bias + n0 : nullptr, int(act),
                        res ? res + row * a->ld_residual + n0 : nullptr, out + row * a->ld_out + n0, nc);
        }
      }
    }
    return PARLEY_KERNEL_OK;
  });
  if (st == PARLEY_KERNEL_OK) return st;
  if (lib_error.load() == int(dnnl_out_of_memory))
    return host.fail(st, "linear: out of memory: oneDNN could not allocate its packing buffers (weight '%.200s')",
                     w.name.c_str());
  if (lib_error.load())
    return host.fail(st, "linear: oneDNN sgemm failed with status %d (weight '%.200s')", lib_error.load(),
                     w.name.c_str());
  if (st == PARLEY_KERNEL_OUT_OF_MEMORY)
    return host.fail(st, "linear: out of memory (scratch for a %lldx%lldx%lld product)", ll(m), ll(n), ll(k));
  return host.fail(st, "linear: failed (status %d)", int(st));
}

}  // namespace

parley_kernel_status linear_run(const parley_kernel_context *ctx, const void *args) {
  return guarded("linear", ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    const parley_linear_args *given = nullptr;
    if (auto st = begin_call("linear", ctx, args, &host, &given, PARLEY_LINEAR_ARGS_SIZE_V1_2)) return st;
    // Every path reads this copy: fields a 1.2-1.4 host did not send are 0.
    parley_linear_args full{};
    std::memcpy(&full, given, std::min(given->struct_size, sizeof full));
    full.struct_size = sizeof full;
    const parley_linear_args *a = &full;
    PARLEY_CHECK(host, a->weight != nullptr, "linear: weight is NULL (not prepared?)");
    const PackedWeight &w = *static_cast<const PackedWeight *>(a->weight);
    const int64_t m = a->m, n = a->n, k = a->k;
    PARLEY_CHECK(host, n == w.n && k == w.k, "linear: n=%lld k=%lld but weight '%.200s' is [%lld, %lld]", ll(n), ll(k),
                 w.name.c_str(), ll(w.n), ll(w.k));
    PARLEY_CHECK(host, m >= 0, "linear: m (%lld) < 0", ll(m));
    const int64_t act = enum_value(a->activation);
    PARLEY_CHECK(host, valid_activation(act), "linear: unknown activation %lld", ll(act));
    PARLEY_CHECK(host, a->ld_x >= k && a->ld_out >= n, "linear: ld_x (%lld) < k or ld_out (%lld) < n", ll(a->ld_x),
                 ll(a->ld_out));
    if (a->residual) PARLEY_CHECK(host, a->ld_residual >= n, "linear: ld_residual (%lld) < n", ll(a->ld_residual));
    if (m == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->x && a->out, "linear: x or out is NULL");
    PARLEY_CHECK(host, a->x != a->out, "linear: out aliases x");
    if (a->residual && a->residual == a->out)
      PARLEY_CHECK(host, a->ld_residual == a->ld_out, "linear: out aliases residual with another row stride");
    const bool stats = a->block_max || a->block_sum;
    if (stats) {
      PARLEY_CHECK(host, a->block_max && a->block_sum, "linear: block_max and block_sum must both be set or both NULL");
      PARLEY_CHECK(host, a->ld_stats >= ceil_div(n, PARLEY_LINEAR_STATS_BLOCK),
                   "linear: ld_stats (%lld) < ceil(n / %d) = %lld", ll(a->ld_stats), PARLEY_LINEAR_STATS_BLOCK,
                   ll(ceil_div(n, PARLEY_LINEAR_STATS_BLOCK)));
    }
    bool stats_written = false;
    parley_kernel_status st = linear_product(host, *a, w, &stats_written);
    if (st != PARLEY_KERNEL_OK || !stats || stats_written) return st;
    // The paths without statistics of their own: one pass over the rows.
    return host.parallel_for(m, 1, [&](int64_t i0, int64_t i1) -> parley_kernel_status {
      for (int64_t i = i0; i < i1; ++i)
        block_stats(static_cast<const float *>(a->out) + i * a->ld_out, n, a->block_max + i * a->ld_stats,
                    a->block_sum + i * a->ld_stats);
      return PARLEY_KERNEL_OK;
    });
  });
}

}  // namespace parley::cpu
