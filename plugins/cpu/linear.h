// The cpu plugin's LINEAR op (plugin ABI 1.2): what prepare_weight makes and
// what the product paths share.
//
// A prepared weight keeps the file's bytes in place (the model file is
// mapped and stays so until release_weight): quantized and half-precision
// weights are converted in registers or in a cache-sized tile, never into a
// float32 copy of the whole matrix. Kernel paths that want another layout
// (VNNI panels of I8 per-row weights, row sums for the unsigned-by-signed
// dot product) add it here as plugin-owned memory and count it in `bytes`.
#ifndef PARLEY_PLUGINS_CPU_LINEAR_H
#define PARLEY_PLUGINS_CPU_LINEAR_H

#include <parley/plugin.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "cpu_common.h"

namespace parley::cpu {

struct PackedWeight {
  std::string name;
  int32_t dtype = PARLEY_DTYPE_F32;  // parley_dtype of data
  int32_t quant = PARLEY_QUANT_NONE;
  int64_t n = 0, k = 0;
  const uint8_t *data = nullptr;  // the source rows, in place
  int64_t ld_bytes = 0;
  const float *scales = nullptr;
  int64_t group_size = 0;
  // Plugin-owned extras (counted in parley_prepared_weight.bytes).
  std::vector<int32_t> row_sums;  // I8 per-row: sum of each row (the u8 x s8 product's correction)
  std::vector<float> group_corr;  // group-wise: 128 * sum_g scale_g * sum(row's group g)
  // I8 per-row weights prepared while AVX512-VNNI is in use: the weight in
  // VNNI panels (linear_avx512.cpp, pack_i8_panels), which every VNNI
  // product of this weight reads instead of `data`: ceil(n / 64) tiles of
  // panel_k / 4 steps x 64 output features x 4 bytes (element 4s + t of
  // feature 64T + f at byte (T * panel_k / 4 + s) * 256 + 4f + t), panel_k =
  // k rounded up to 64, zeros past n and k. Null where not made (other weights, another
  // instruction set, k > 65536, no memory); `data` stays valid for the
  // float paths either way.
  struct FreeAligned {
    void operator()(int8_t *p) const { std::free(p); }
  };
  std::unique_ptr<int8_t, FreeAligned> panels;
  int64_t panel_k = 0;
  uint64_t panel_bytes = 0;
  uint64_t owned_bytes() const {
    return row_sums.size() * sizeof(int32_t) + group_corr.size() * sizeof(float) + panel_bytes;
  }
};

// IEEE half to float32 for n values (F16C where the CPU has it).
void f16_to_f32(const uint16_t *src, float *dst, int64_t n);
// Strided rows of halves to packed rows of floats (F16C where the CPU has it).
void f16_rows_to_f32(const uint16_t *src, int64_t src_stride, int64_t rows, int64_t cols, float *dst);
// float32 to IEEE half (round to nearest even) for n values (F16C where the
// CPU has it).
void f32_to_f16(const float *src, uint16_t *dst, int64_t n);

// Bytes per element of F32/F16/BF16/I8 (0 for others).
size_t dtype_size_of(int32_t dtype);

// Writes rows [r0, r1) of w as float32 into dst (row i at dst + (i - r0) * k).
void dequantize_rows(const PackedWeight &w, int64_t r0, int64_t r1, float *dst);

// The specialised paths (linear_fast.cpp): runs the product when one of them
// serves this shape, weight and CPU, and returns true (with *status set);
// returns false to leave it to the general path. *stats_written: as
// gemm_int_vnni_avx512's (linear_kernels.h).
bool linear_fast(const Host &host, const parley_linear_args &a, const PackedWeight &w, parley_kernel_status *status,
                 bool *stats_written);

// One LINEAR entry per weight dtype; each checks that the weight it is given
// is of its dtype.
parley_kernel_status linear_run(const parley_kernel_context *ctx, const void *args);
parley_kernel_status linear_prepare_f32(const parley_kernel_context *ctx, const parley_weight_desc *d,
                                        parley_prepared_weight *out);
parley_kernel_status linear_prepare_f16(const parley_kernel_context *ctx, const parley_weight_desc *d,
                                        parley_prepared_weight *out);
parley_kernel_status linear_prepare_bf16(const parley_kernel_context *ctx, const parley_weight_desc *d,
                                         parley_prepared_weight *out);
parley_kernel_status linear_prepare_i8(const parley_kernel_context *ctx, const parley_weight_desc *d,
                                       parley_prepared_weight *out);
parley_kernel_status linear_prepare_i4(const parley_kernel_context *ctx, const parley_weight_desc *d,
                                       parley_prepared_weight *out);
void linear_release(const parley_kernel_context *ctx, void *handle);

}  // namespace parley::cpu

#endif
