// Rotary position embedding (Su et al. 2021, RoFormer), in place.
// Numerics follow HF (modeling_llama.py LlamaRotaryEmbedding): the angle is the
// float32 product position * inv_freq; cos/sin are then evaluated accurately
// (in double) and multiplied by attention_factor.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_common.h"
#include "cpu_kernels.h"

namespace parley::cpu {

namespace {

constexpr int64_t kStackPairs = 256;

PARLEY_CPU_MULTIVERSION void rotate(float *x, const float *cs, const float *sn, int64_t half, int64_t step_pair,
                                    int64_t step_elem) {
  // pair i is (x[i*step_pair], x[i*step_pair + step_elem])
  for (int64_t i = 0; i < half; ++i) {
    float *p0 = x + i * step_pair;
    float *p1 = p0 + step_elem;
    const float a = *p0, b = *p1;
    *p0 = a * cs[i] - b * sn[i];
    *p1 = b * cs[i] + a * sn[i];
  }
}

}  // namespace

parley_kernel_status rotary_f32(const parley_kernel_context *ctx, const void *args) {
  return guarded("rotary", ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    const parley_rotary_args *a = nullptr;
    if (auto st = begin_call("rotary", ctx, args, &host, &a)) return st;
    PARLEY_CHECK(host, a->batch >= 0 && a->seq >= 0 && a->heads >= 0,
                 "rotary: negative shape batch=%lld seq=%lld heads=%lld", ll(a->batch), ll(a->seq), ll(a->heads));
    PARLEY_CHECK(host, a->head_dim >= 1, "rotary: head_dim (%lld) < 1", ll(a->head_dim));
    PARLEY_CHECK(host, a->rotary_dim >= 0 && a->rotary_dim <= a->head_dim && a->rotary_dim % 2 == 0,
                 "rotary: rotary_dim (%lld) must be even and in [0, head_dim=%lld]", ll(a->rotary_dim),
                 ll(a->head_dim));
    PARLEY_CHECK(host, a->stride_batch >= 0 && a->stride_seq >= 0 && a->stride_head >= 0, "rotary: negative stride");
    PARLEY_CHECK(host, a->heads <= 1 || a->stride_head >= a->head_dim, "rotary: stride_head (%lld) < head_dim (%lld)",
                 ll(a->stride_head), ll(a->head_dim));
    PARLEY_CHECK(host, a->seq <= 1 || a->stride_seq >= a->head_dim, "rotary: stride_seq (%lld) < head_dim (%lld)",
                 ll(a->stride_seq), ll(a->head_dim));
    const int64_t tokens = a->batch * a->seq;
    if (tokens == 0 || a->heads == 0 || a->rotary_dim == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->x && a->positions && a->inv_freq, "rotary: x, positions or inv_freq is NULL");
    const int64_t half = a->rotary_dim / 2;
    const int64_t step_pair = a->interleaved ? 2 : 1;
    const int64_t step_elem = a->interleaved ? 1 : half;
    float *x = static_cast<float *>(a->x);
    const double af = a->attention_factor;
    return host.parallel_for(tokens, std::max<int64_t>(1, 64 / std::max<int64_t>(1, a->heads)),
                             [&](int64_t t0, int64_t t1) -> parley_kernel_status {
                               float cs_stack[kStackPairs], sn_stack[kStackPairs];
                               std::vector<float> heap;
                               float *cs = cs_stack, *sn = sn_stack;
                               if (half > kStackPairs) {
                                 heap.resize(2 * half);
                                 cs = heap.data();
                                 sn = cs + half;
                               }
                               for (int64_t t = t0; t < t1; ++t) {
                                 const int64_t b = t / a->seq, s = t % a->seq;
                                 const float pos = static_cast<float>(a->positions[t]);
                                 for (int64_t i = 0; i < half; ++i) {
                                   const double ang = static_cast<double>(pos * a->inv_freq[i]);
                                   cs[i] = static_cast<float>(std::cos(ang) * af);
                                   sn[i] = static_cast<float>(std::sin(ang) * af);
                                 }
                                 float *xt = x + b * a->stride_batch + s * a->stride_seq;
                                 for (int64_t h = 0; h < a->heads; ++h)
                                   rotate(xt + h * a->stride_head, cs, sn, half, step_pair, step_elem);
                               }
                               return PARLEY_KERNEL_OK;
                             });
  });
}

}  // namespace parley::cpu
