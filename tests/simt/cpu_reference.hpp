// The reference the emulated CUDA attention kernels are compared with: the
// cpu plugin's attention, on q/out [batch, q_len, heads, D] and k/v
// [batch, kv_len, kv_heads, D] (a KV cache row per key), scale 1/sqrt(D),
// with the cpu plugin's sliding window when one is given, over an F32 cache
// or (k16 / v16) an F16 one.
// Outputs start as NaN so an unwritten element fails the comparison.
#pragma once

#include <gtest/gtest.h>
#include <parley/plugin.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "../kernels/test_host.h"

namespace parley::test {

struct AttentionShape {
  int batch, heads, kv_heads, q_len, kv_len, dim;
  uint32_t mask;
  const std::vector<int32_t> *key_lengths;  // empty: none
  int window = 0;                           // sliding window (plugin ABI 1.4), 0: none
};

struct AttentionResult {
  std::vector<float> out, lse, probs;  // probs only when asked for
};

// k16 / v16 (optional): the same keys and values as fp16 bits, read by the
// cpu plugin as an F16 cache (ABI 1.2 kv_dtype) instead of k / v.
inline AttentionResult cpu_attention(const AttentionShape &c, const std::vector<float> &q, const std::vector<float> &k,
                                     const std::vector<float> &v, bool with_probs,
                                     const std::vector<uint16_t> *k16 = nullptr,
                                     const std::vector<uint16_t> *v16 = nullptr) {
  const int D = c.dim;
  AttentionResult r;
  r.out.assign(static_cast<size_t>(c.batch) * c.heads * c.q_len * D, std::nanf(""));
  r.lse.assign(static_cast<size_t>(c.batch) * c.heads * c.q_len, std::nanf(""));
  if (with_probs) r.probs.assign(static_cast<size_t>(c.batch) * c.heads * c.q_len * c.kv_len, std::nanf(""));
  TestHost host(1);
  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = c.batch, a.num_heads = c.heads, a.num_kv_heads = c.kv_heads, a.q_len = c.q_len, a.kv_len = c.kv_len;
  a.head_dim = D;
  a.q = q.data(), a.q_stride_batch = int64_t{c.q_len} * c.heads * D, a.q_stride_head = D;
  a.q_stride_seq = int64_t{c.heads} * D;
  a.k = k.data(), a.k_stride_batch = int64_t{c.kv_len} * c.kv_heads * D, a.k_stride_head = D;
  a.k_stride_seq = int64_t{c.kv_heads} * D;
  a.v = v.data(), a.v_stride_batch = a.k_stride_batch, a.v_stride_head = D, a.v_stride_seq = a.k_stride_seq;
  a.out = r.out.data(), a.out_stride_batch = a.q_stride_batch, a.out_stride_head = D, a.out_stride_seq = a.q_stride_seq;
  a.scale = 1.f / std::sqrt(static_cast<float>(D));
  a.mask = c.mask;
  a.window = c.window;
  a.key_lengths = c.key_lengths->empty() ? nullptr : c.key_lengths->data();
  if (k16 && v16) a.kv_dtype = PARLEY_DTYPE_F16, a.k = k16->data(), a.v = v16->data();
  a.probs = with_probs ? r.probs.data() : nullptr;
  a.lse = r.lse.data();
  EXPECT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
  return r;
}

}  // namespace parley::test
