// Helpers shared by the Transformer's contiguous and paged steps: the size
// of a KV-cache element and a dense attention call's arguments.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "parley/plugin.h"

namespace parley {

inline size_t kv_element_size(parley_dtype dtype) {
  return dtype == PARLEY_DTYPE_F16 || dtype == PARLEY_DTYPE_BF16 ? 2 : dtype == PARLEY_DTYPE_I8 ? 1 : sizeof(float);
}

// The attention kernel flag that says it reads and appends a `kv` cache (F16,
// BF16 or I8; 0 for F32, which every kernel reads).
inline uint32_t kv_flag(parley_dtype kv) {
  return kv == PARLEY_DTYPE_F16    ? PARLEY_KERNEL_FLAG_KV_F16
         : kv == PARLEY_DTYPE_BF16 ? PARLEY_KERNEL_FLAG_KV_BF16
         : kv == PARLEY_DTYPE_I8   ? PARLEY_KERNEL_FLAG_KV_I8
                                   : 0u;
}

// Attention over [batch, q_len, heads, hd] queries and [batch, kv_cap, kv_heads, hd] keys/values.
// q, k, v and out are activations of `dtype` (the model's activation dtype).
inline parley_attention_args attention_args(parley_dtype dtype, int64_t batch, int64_t heads, int64_t kv_heads,
                                            int64_t hd, int64_t q_len, int64_t kv_cap, const void *q, const void *k,
                                            const void *v, void *out, const int32_t *key_lengths, uint32_t mask) {
  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.dtype = dtype;
  a.kv_dtype = dtype;  // k and v are activations too, unless the caller points them at a cache
  a.batch = batch;
  a.num_heads = heads;
  a.num_kv_heads = kv_heads;
  a.q_len = q_len;
  a.kv_len = kv_cap;
  a.head_dim = hd;
  a.q = q;
  a.q_stride_batch = q_len * heads * hd;
  a.q_stride_head = hd;
  a.q_stride_seq = heads * hd;
  a.k = k;
  a.v = v;
  a.k_stride_batch = a.v_stride_batch = kv_cap * kv_heads * hd;
  a.k_stride_head = a.v_stride_head = hd;
  a.k_stride_seq = a.v_stride_seq = kv_heads * hd;
  a.out = out;
  a.out_stride_batch = a.q_stride_batch;
  a.out_stride_head = hd;
  a.out_stride_seq = heads * hd;
  a.scale = 1.f / std::sqrt(static_cast<float>(hd));
  a.mask = mask;
  a.key_lengths = key_lengths;
  return a;
}

}  // namespace parley
