// Launch parameters of the row- and element-wise bodies (rowwise_body.cuh),
// shared with the host code that fills them (ops.cpp). Plain C++: no CUDA.
#ifndef PARLEY_PLUGINS_CUDA_ROWWISE_ROWWISE_PARAMS_H
#define PARLEY_PLUGINS_CUDA_ROWWISE_ROWWISE_PARAMS_H

#include <stdint.h>

namespace parley::cuda::row {

// BF16 activations: the element type of the bodies (its bits; float32's
// upper half). F16 activations use uint16_t bits.
struct Bf16 {
  uint16_t bits;
};

constexpr int kRowThreads = 256;                 // norms: one CTA per row
constexpr int kElemThreads = 256;                // element-wise bodies
constexpr int kRowSmemWords = kRowThreads / 32;  // one partial sum per warp

struct NormParams {
  const void *x, *res;
  void *res_out, *out;
  const float *gamma, *beta;  // beta NULL: none (always NULL for RMSNorm)
  int64_t rows, cols, ld_x, ld_res, ld_res_out, ld_out;
  float eps;
  bool rms;
  int64_t grid;  // CTAs launched
};

struct RotaryParams {
  void *x;
  const int32_t *positions;
  const float *inv_freq;
  int64_t batch, seq, heads, half, stride_batch, stride_seq, stride_head;
  bool interleaved;
  float attention_factor;
  int64_t grid;
};

struct GatedParams {
  const void *gate, *up;
  void *out;
  int64_t rows, cols, ld_gate, ld_up, ld_out;
  int act;
  int64_t grid;
};

struct AddParams {
  const void *a, *b;
  void *out;
  int64_t n;
  float alpha;
  int64_t grid;
};

struct EmbeddingParams {
  const int32_t *ids;
  const void *table;
  const float *row_scales;  // I8 tables
  void *out;
  int *bad_id;
  int64_t count, vocab, dim, ld_out;
  float scale;
  bool i8;
  int64_t grid;
};

}  // namespace parley::cuda::row

#endif  // PARLEY_PLUGINS_CUDA_ROWWISE_ROWWISE_PARAMS_H
