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

#include "cpu_common.h"
#include "cpu_features.h"
#include "linear_kernels.h"

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

void linear_epilogue(const parley_linear_args &a, int64_t i, int64_t j0, const float *vals, int64_t count) {
  epilogue_span(vals, a.bias ? a.bias + j0 : nullptr, int(enum_value(a.activation)),
                a.residual ? static_cast<const float *>(a.residual) + i * a.ld_residual + j0 : nullptr,
                static_cast<float *>(a.out) + i * a.ld_out + j0, count);
}

bool linear_fast(const Host &host, const parley_linear_args &a, const PackedWeight &w, parley_kernel_status *status) {
  const Isa isa = active_isa();
  log_isa_once(host.services());
  if (isa == Isa::kGeneric) return false;
  bool ran = false;
  const char *path = "";
  const bool int_weight = w.dtype == PARLEY_DTYPE_I8 || w.dtype == PARLEY_DTYPE_I4;
  if (a.m >= kVnniMinM && use_avx512_vnni() && int_weight) {
    path = "gemm_int_vnni_avx512";
    ran = gemm_int_vnni_avx512(host, a, w, status);
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
