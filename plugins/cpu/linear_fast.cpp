// Specialised LINEAR paths (see linear.h), chosen per call from the CPU's
// instruction sets (cpu_features.h; PARLEY_CPU_ISA caps the level,
// PARLEY_CPU_EXACT=1 turns off the paths that round activations):
//
//   I8 / I4 weights, AVX512-VNNI, any m: int8 x int8 products with
//       activations quantised per row on the fly (linear_avx512.cpp); lossy
//       by the activations' rounding, the same for every m (batch-invariant).
//       I8 per-row weights from onednn_i8_min_m() rows: the same integers
//       from oneDNN's u8s8s32 GEMM (blocked packing, faster at many rows).
//   I8 / I4 weights, AVX2 without VNNI, m <= kAvx2IntMaxMPerRow (per-row
//       scales) or kAvx2IntMaxMGrouped (group-wise), linear_kernels.h: the same
//       quantisation with int16 vpmaddwd products (linear_int_avx2.cpp).
//   m <= kSmallM (decode), otherwise: GEMV kernels, AVX-512 or AVX2, for
//       every weight dtype: weights read once in their stored form and
//       converted in registers, F32 activations, F32 accumulation (so greedy
//       decoding matches a weight-only-quantised float reference).
//   m >  kSmallM, BF16 weights, AVX512-BF16: vdpbf16ps with the activations
//       rounded to bf16 (lossy, used only above kSmallM rows).
//   everything else: the general tile + oneDNN sgemm path of linear.cpp
//       (measured faster than the alternatives; tests/bench/bench_linear.cpp).
#include <algorithm>
#include <cstring>
#include <limits>

#include "cpu_common.h"
#include "cpu_features.h"
#include "linear_kernels.h"

// See exp16_nonpositive: no 64-byte vector crosses a call boundary here.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace parley::cpu {

namespace {

// out = (vals + (bias or +0)) + residual in vector loops: a per-element loop
// with the activation's switch inside was a third of a batch-32 beam-4
// translation (the output projection's logits bias, 58k outputs a row). Each
// element is read before it is written (out may alias residual).
PARLEY_CPU_MULTIVERSION void epilogue_no_activation(const float *vals, const float *bias, const float *res, float *out,
                                                    int64_t count) {
  if (bias && res) {
    for (int64_t c = 0; c < count; ++c) out[c] = (vals[c] + bias[c]) + res[c];
  } else if (bias) {
    for (int64_t c = 0; c < count; ++c) out[c] = vals[c] + bias[c];
  } else if (res) {
    for (int64_t c = 0; c < count; ++c) out[c] = (vals[c] + 0.f) + res[c];
  } else {
    for (int64_t c = 0; c < count; ++c) out[c] = vals[c] + 0.f;
  }
}

}  // namespace

void epilogue_span(const float *vals, const float *bias, int act, const float *res, float *out, int64_t count) {
  if (act == PARLEY_ACT_NONE) {
    epilogue_no_activation(vals, bias, res, out, count);
    return;
  }
  // In chunks through apply_activation (vector loops; one output at a time
  // takes the same function, so an output's value does not depend on the call).
  constexpr int64_t kChunk = 256;
  float tmp[kChunk];
  for (int64_t c0 = 0; c0 < count; c0 += kChunk) {
    const int64_t len = std::min(kChunk, count - c0);
    epilogue_no_activation(vals + c0, bias ? bias + c0 : nullptr, nullptr, tmp, len);
    apply_activation(act, tmp, tmp, len);
    if (res) {
      for (int64_t c = 0; c < len; ++c) out[c0 + c] = tmp[c] + res[c0 + c];
    } else {
      std::memcpy(out + c0, tmp, size_t(len) * sizeof(float));
    }
  }
}

typedef float v16f __attribute__((vector_size(64)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4), may_alias));
typedef float v8f_ __attribute__((vector_size(32)));
typedef float v4f_ __attribute__((vector_size(16)));

// Horizontal max / sum of 16 lanes as a tree of halves (four vector steps,
// not a 16-deep scalar chain per block); the sum's order is fixed.
__attribute__((always_inline)) inline float lanes_max(const v16f &v) {
  const v8f_ a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7),
             b = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const v8f_ c = a > b ? a : b;
  const v4f_ d = __builtin_shufflevector(c, c, 0, 1, 2, 3), e = __builtin_shufflevector(c, c, 4, 5, 6, 7);
  const v4f_ f = d > e ? d : e;
  const float g = f[0] > f[2] ? f[0] : f[2], h = f[1] > f[3] ? f[1] : f[3];
  return g > h ? g : h;
}
__attribute__((always_inline)) inline float lanes_sum(const v16f &v) {
  const v8f_ c = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const v4f_ f = __builtin_shufflevector(c, c, 0, 1, 2, 3) + __builtin_shufflevector(c, c, 4, 5, 6, 7);
  return (f[0] + f[2]) + (f[1] + f[3]);
}

typedef int32_t v16i __attribute__((vector_size(64)));

// Always inlined into block_stats' clones, so the default clone's ABI for a
// 64-byte vector return (what -Wpsabi warns about, at the end of the file:
// the pragma at the top) never applies.
// exp(x) for 16 lanes of x <= 0: exp_vectorizable's arithmetic (Cody-Waite
// reduction, Cephes' polynomial, 2^n from the exponent bits) without its
// clamps above 0 and its selects: inputs below -87.3 give ~1e-38, nothing
// next to the exp(0) = 1 of a block's maximum.
__attribute__((always_inline)) inline v16f exp16_nonpositive(const v16f &xin) {
  v16f x = xin;
  const v16f lo = {-87.3f, -87.3f, -87.3f, -87.3f, -87.3f, -87.3f, -87.3f, -87.3f,
                   -87.3f, -87.3f, -87.3f, -87.3f, -87.3f, -87.3f, -87.3f, -87.3f};
  x = x < lo ? lo : x;                                   // keeps NaN, which then reaches the result
  const v16f t = x * 1.44269504088896341f + 12582912.f;  // 1.5 * 2^23 rounds to an integer
  const v16f n = t - 12582912.f;
  v16f r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v16f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const v16i e = ((reinterpret_cast<v16i>(t) - 0x4B400000) + 127) << 23;  // t's low bits hold n
  return p * reinterpret_cast<v16f>(e);
}

// Per block of 64: the maximum in 16 lanes (a max is exact in any order),
// then the 64 exps in registers and their sum, in a fixed order, so a
// block's statistics depend only on its values, never on the tile that
// produced them. Four blocks at a time: their dependency chains (horizontal
// max, the exp polynomial, the sum) interleave; alone a block took ~85
// cycles of mostly latency. A short last block is padded with -inf (exp
// gives ~0, the maximum is unchanged).
PARLEY_CPU_MULTIVERSION void block_stats(const float *row, int64_t len, float *bmax, float *bsum) {
  constexpr int64_t kBlock = PARLEY_LINEAR_STATS_BLOCK, kLanes = 16, kGroup = 4;
  static_assert(kBlock == 4 * kLanes);
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const v16f ninf = {-kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf,
                     -kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf};
  alignas(64) float pad[kBlock];
  const int64_t blocks = (len + kBlock - 1) / kBlock;
  for (int64_t g0 = 0; g0 < blocks; g0 += kGroup) {
    const int64_t gn = std::min(kGroup, blocks - g0);
    v16f x[kGroup][4];
    float m[kGroup];
    for (int64_t g = 0; g < kGroup; ++g) {
      const int64_t bi = g0 + std::min(g, gn - 1), b0 = bi * kBlock;  // a short group repeats its last block
      const float *s = row + b0;
      if (len - b0 < kBlock) {
        for (int64_t j = 0; j < kBlock; ++j) pad[j] = j < len - b0 ? s[j] : -kInf;
        s = pad;
      }
      for (int u = 0; u < 4; ++u) x[g][u] = *reinterpret_cast<const v16f_u *>(s + u * kLanes);
      v16f mx = x[g][0] > ninf ? x[g][0] : ninf;  // NaN dropped
      mx = x[g][1] > mx ? x[g][1] : mx;
      mx = x[g][2] > mx ? x[g][2] : mx;
      mx = x[g][3] > mx ? x[g][3] : mx;
      m[g] = lanes_max(mx);
    }
    float sum[kGroup];
    for (int64_t g = 0; g < kGroup; ++g) {
      // A NaN entry, or +inf (the maximum, inf - inf = NaN), makes its exp
      // and so the sum NaN, as the ABI asks: no separate test for them.
      sum[g] = lanes_sum((exp16_nonpositive(x[g][0] - m[g]) + exp16_nonpositive(x[g][1] - m[g])) +
                         (exp16_nonpositive(x[g][2] - m[g]) + exp16_nonpositive(x[g][3] - m[g])));
    }
    for (int64_t g = 0; g < gn; ++g) {
      bmax[g0 + g] = m[g];
      if (m[g] == -kInf) {  // a masked block: its sum is 0 unless it holds a NaN
        bool nan = false;
        for (int u = 0; u < 4; ++u)
          for (int l = 0; l < kLanes; ++l) nan = nan || x[g][u][l] != x[g][u][l];
        sum[g] = nan ? std::numeric_limits<float>::quiet_NaN() : 0.f;
      }
      bsum[g0 + g] = sum[g];
    }
  }
}

void linear_epilogue(const parley_linear_args &a, int64_t i, int64_t j0, const float *vals, int64_t count) {
  epilogue_span(vals, a.bias ? a.bias + j0 : nullptr, int(enum_value(a.activation)),
                a.residual ? static_cast<const float *>(a.residual) + i * a.ld_residual + j0 : nullptr,
                static_cast<float *>(a.out) + i * a.ld_out + j0, count);
}

bool linear_fast(const Host &host, const parley_linear_args &a, const PackedWeight &w, parley_kernel_status *status,
                 bool *stats_written) {
  const Isa isa = active_isa();
  log_isa_once(host.services());
  if (isa == Isa::kGeneric) return false;
  bool ran = false;
  const char *path = "";
  const bool int_weight = w.dtype == PARLEY_DTYPE_I8 || w.dtype == PARLEY_DTYPE_I4;
  if (a.m >= kVnniMinM && use_avx512_vnni() && int_weight) {
    path = "gemm_int_vnni_avx512";
    ran = gemm_int_vnni_avx512(host, a, w, status, stats_written);
  } else if (a.m >= kAvx2IntMinM && a.m <= avx2_int8_max_m(w.quant != PARLEY_QUANT_PER_ROW) && use_avx2_int8() &&
             int_weight) {
    path = "gemm_int_avx2";
    ran = gemm_int_avx2(host, a, w, status);
  }
  if (ran) {
  } else if (a.m <= kSmallM) {
    path = isa == Isa::kAvx512 ? "gemv_avx512" : "gemv_avx2";
    ran = isa == Isa::kAvx512 ? gemv_avx512(host, a, w, status) : gemv_avx2(host, a, w, status);
  } else if (use_avx512_bf16() && w.dtype == PARLEY_DTYPE_BF16) {
    path = "gemm_bf16_avx512";
    ran = gemm_bf16_avx512(host, a, w, status);
  }
  if (ran && *status != PARLEY_KERNEL_OK)
    *status = host.fail(*status, "linear: %s failed for weight '%.200s' (m=%lld n=%lld k=%lld): %s", path,
                        w.name.c_str(), ll(a.m), ll(a.n), ll(a.k),
                        *status == PARLEY_KERNEL_OUT_OF_MEMORY ? "out of memory for scratch" : "internal error");
  return ran;
}

}  // namespace parley::cpu
