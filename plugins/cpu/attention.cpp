// Fused scaled dot-product attention with online softmax (Milakov & Gimelshein
// 2018, "Online normalizer calculation for softmax"; the FlashAttention loop).
// Work is split over batch x heads x blocks of queries; each task walks the
// keys in blocks, keeping per-query running max / sum / output accumulators,
// so no score matrix is materialised (unless probs are requested, in which
// case the scores are staged in the probs rows the caller provides).
//
// With k_new (fused KV-cache append, ABI 1.1) the new rows are first copied
// into the cache, then the attention runs over the cache as usual.
//
// Masks reduce to a number of visible keys per query row:
//   L     = key_lengths[b] with KEY_PADDING, else kv_len
//   limit = L, and with CAUSAL min(L, i + L - q_len + 1)  (bottom-right aligned)
#include <algorithm>
#include <limits>
#include <vector>

#include "cpu_common.h"
#include "cpu_kernels.h"

namespace parley::cpu {

namespace {

constexpr int64_t kQueryBlock = 8;
constexpr int64_t kKeyBlock = 64;
constexpr int64_t kStackHeadDim = 256;  // larger head_dim takes its accumulators from scratch

PARLEY_CPU_MULTIVERSION float dot(const float *a, const float *b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

PARLEY_CPU_MULTIVERSION void scale_axpy(float *acc, float corr, const float *p, const float *v, int64_t v_stride,
                                        int64_t count, int64_t d) {
  if (corr != 1.f)
    for (int64_t i = 0; i < d; ++i) acc[i] *= corr;
  for (int64_t j = 0; j < count; ++j) {
    const float pj = p[j];
    const float *vj = v + j * v_stride;
    for (int64_t i = 0; i < d; ++i) acc[i] += pj * vj[i];
  }
}

struct Attn {
  const parley_attention_args *a;
  int64_t group;  // query heads per kv head
  int64_t q_blocks;
};

parley_kernel_status run_task(const Attn &at, int64_t task, float *acc) {
  const parley_attention_args &a = *at.a;
  const int64_t D = a.head_dim;
  const int64_t qb = task % at.q_blocks;
  const int64_t bh = task / at.q_blocks;
  const int64_t h = bh % a.num_heads, b = bh / a.num_heads;
  const int64_t g = h / at.group;
  const int64_t i0 = qb * kQueryBlock, i1 = std::min(a.q_len, i0 + kQueryBlock);
  const int64_t rows = i1 - i0;

  const float *q = static_cast<const float *>(a.q) + b * a.q_stride_batch + h * a.q_stride_head;
  const float *k = static_cast<const float *>(a.k) + b * a.k_stride_batch + g * a.k_stride_head;
  const float *v = static_cast<const float *>(a.v) + b * a.v_stride_batch + g * a.v_stride_head;
  float *out = static_cast<float *>(a.out) + b * a.out_stride_batch + h * a.out_stride_head;
  float *probs = a.probs ? a.probs + (bh * a.q_len) * a.kv_len : nullptr;
  float *lse = a.lse ? a.lse + bh * a.q_len : nullptr;

  const int64_t L = (a.mask & PARLEY_MASK_KEY_PADDING) ? a.key_lengths[b] : a.kv_len;
  int64_t limit[kQueryBlock];
  float mx[kQueryBlock], sum[kQueryBlock];
  float s[kKeyBlock];
  int64_t max_limit = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    int64_t lim = L;
    if (a.mask & PARLEY_MASK_CAUSAL) lim = std::min(L, i + L - a.q_len + 1);
    limit[r] = std::max<int64_t>(lim, 0);
    max_limit = std::max(max_limit, limit[r]);
    mx[r] = -std::numeric_limits<float>::infinity();
    sum[r] = 0.f;
    std::fill(acc + r * D, acc + (r + 1) * D, 0.f);
  }

  for (int64_t j0 = 0; j0 < max_limit; j0 += kKeyBlock) {
    const int64_t jc = std::min(kKeyBlock, max_limit - j0);
    for (int64_t r = 0; r < rows; ++r) {
      if (j0 >= limit[r]) continue;
      const int64_t nv = std::min(jc, limit[r] - j0);
      const float *qi = q + (i0 + r) * a.q_stride_seq;
      float bmax = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < nv; ++j) {
        s[j] = a.scale * dot(qi, k + (j0 + j) * a.k_stride_seq, D);
        bmax = std::max(bmax, s[j]);
      }
      if (probs) std::copy(s, s + nv, probs + (i0 + r) * a.kv_len + j0);
      const float mnew = std::max(mx[r], bmax);
      // exp(-inf - finite) = 0 on the first block; a row whose scores are all
      // -inf (infinite inputs) keeps mnew = -inf and is guarded below.
      const float corr = mx[r] == mnew ? 1.f : std::exp(mx[r] - mnew);
      float bsum = 0.f;
      for (int64_t j = 0; j < nv; ++j) {
        s[j] = mnew == -std::numeric_limits<float>::infinity() ? 0.f : std::exp(s[j] - mnew);
        bsum += s[j];
      }
      sum[r] = sum[r] * corr + bsum;
      mx[r] = mnew;
      scale_axpy(acc + r * D, corr, s, v + j0 * a.v_stride_seq, a.v_stride_seq, nv, D);
    }
  }

  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    float *o = out + i * a.out_stride_seq;
    const bool empty = limit[r] == 0 || !(sum[r] > 0.f);
    if (empty) {
      std::fill(o, o + D, 0.f);
    } else {
      const float inv = 1.f / sum[r];
      const float *ac = acc + r * D;
      for (int64_t d = 0; d < D; ++d) o[d] = ac[d] * inv;
    }
    if (lse) lse[i] = empty ? -std::numeric_limits<float>::infinity() : mx[r] + std::log(sum[r]);
    if (probs) {
      float *p = probs + i * a.kv_len;
      const int64_t lim = empty ? 0 : limit[r];
      const float inv = empty ? 0.f : 1.f / sum[r];
      for (int64_t j = 0; j < lim; ++j) p[j] = std::exp(p[j] - mx[r]) * inv;
      std::fill(p + lim, p + a.kv_len, 0.f);
    }
  }
  return PARLEY_KERNEL_OK;
}

}  // namespace

parley_kernel_status attention_f32(const parley_kernel_context *ctx, const void *args) {
  return guarded("attention", ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    const parley_attention_args *a = nullptr;
    if (auto st = begin_call("attention", ctx, args, &host, &a, PARLEY_ATTENTION_ARGS_SIZE_V1_0)) return st;
    const bool append = a->struct_size >= sizeof(parley_attention_args) && a->k_new != nullptr;
    PARLEY_CHECK(host, a->batch >= 0 && a->q_len >= 0 && a->kv_len >= 0,
                 "attention: negative shape batch=%lld q_len=%lld kv_len=%lld", ll(a->batch), ll(a->q_len),
                 ll(a->kv_len));
    PARLEY_CHECK(host, a->num_heads >= 1 && a->num_kv_heads >= 1 && a->head_dim >= 1,
                 "attention: num_heads (%lld), num_kv_heads (%lld) and head_dim (%lld) must be >= 1", ll(a->num_heads),
                 ll(a->num_kv_heads), ll(a->head_dim));
    PARLEY_CHECK(host, a->num_heads % a->num_kv_heads == 0,
                 "attention: num_heads (%lld) is not a multiple of num_kv_heads (%lld)", ll(a->num_heads),
                 ll(a->num_kv_heads));
    PARLEY_CHECK(host, (a->mask & ~(PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING)) == 0,
                 "attention: unknown mask bits 0x%x", a->mask);
    if (a->batch == 0 || a->q_len == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->q && a->out, "attention: q or out is NULL");
    if (a->kv_len > 0) PARLEY_CHECK(host, a->k && a->v, "attention: k or v is NULL");
    const int64_t D = a->head_dim;
    const int64_t strides[] = {a->q_stride_batch, a->q_stride_head,    a->q_stride_seq,    a->k_stride_batch,
                               a->k_stride_head,  a->k_stride_seq,     a->v_stride_batch,  a->v_stride_head,
                               a->v_stride_seq,   a->out_stride_batch, a->out_stride_head, a->out_stride_seq};
    for (int64_t st : strides) PARLEY_CHECK(host, st >= 0, "attention: negative stride %lld", ll(st));
    struct {
      const char *name;
      int64_t stride, count;
    } rows[] = {{"q_stride_seq", a->q_stride_seq, a->q_len},     {"q_stride_head", a->q_stride_head, a->num_heads},
                {"k_stride_seq", a->k_stride_seq, a->kv_len},    {"k_stride_head", a->k_stride_head, a->num_kv_heads},
                {"v_stride_seq", a->v_stride_seq, a->kv_len},    {"v_stride_head", a->v_stride_head, a->num_kv_heads},
                {"out_stride_seq", a->out_stride_seq, a->q_len}, {"out_stride_head", a->out_stride_head, a->num_heads}};
    for (const auto &r : rows)
      PARLEY_CHECK(host, r.count <= 1 || r.stride >= D, "attention: %s (%lld) < head_dim (%lld)", r.name, ll(r.stride),
                   ll(D));
    if (a->mask & PARLEY_MASK_KEY_PADDING) {
      PARLEY_CHECK(host, a->key_lengths != nullptr, "attention: KEY_PADDING mask without key_lengths");
      for (int64_t b = 0; b < a->batch; ++b)
        PARLEY_CHECK(host, a->key_lengths[b] >= 0 && a->key_lengths[b] <= a->kv_len,
                     "attention: key_lengths[%lld] = %d is outside [0, kv_len=%lld]", ll(b), a->key_lengths[b],
                     ll(a->kv_len));
    }

    if (append) {
      PARLEY_CHECK(host, a->v_new && a->kv_len >= a->q_len, "attention: k_new without v_new, or q_len > kv_len");
      const int64_t news[] = {a->k_new_stride_batch, a->k_new_stride_head, a->k_new_stride_seq,
                              a->v_new_stride_batch, a->v_new_stride_head, a->v_new_stride_seq};
      for (int64_t st : news) PARLEY_CHECK(host, st >= 0, "attention: negative k_new/v_new stride %lld", ll(st));
      float *k = static_cast<float *>(const_cast<void *>(a->k));
      float *v = static_cast<float *>(const_cast<void *>(a->v));
      const float *kn = static_cast<const float *>(a->k_new), *vn = static_cast<const float *>(a->v_new);
      for (int64_t b = 0; b < a->batch; ++b) {
        const int64_t L = (a->mask & PARLEY_MASK_KEY_PADDING) ? a->key_lengths[b] : a->kv_len;
        for (int64_t i = 0; i < a->q_len; ++i) {
          const int64_t pos = L - a->q_len + i;
          if (pos < 0) continue;
          for (int64_t g = 0; g < a->num_kv_heads; ++g) {
            std::copy_n(kn + b * a->k_new_stride_batch + g * a->k_new_stride_head + i * a->k_new_stride_seq, D,
                        k + b * a->k_stride_batch + g * a->k_stride_head + pos * a->k_stride_seq);
            std::copy_n(vn + b * a->v_new_stride_batch + g * a->v_new_stride_head + i * a->v_new_stride_seq, D,
                        v + b * a->v_stride_batch + g * a->v_stride_head + pos * a->v_stride_seq);
          }
        }
      }
    }

    Attn at{a, a->num_heads / a->num_kv_heads, (a->q_len + kQueryBlock - 1) / kQueryBlock};
    const int64_t tasks = a->batch * a->num_heads * at.q_blocks;
    return host.parallel_for(tasks, 1, [&](int64_t t0, int64_t t1) -> parley_kernel_status {
      alignas(64) float stack_acc[kQueryBlock * kStackHeadDim];
      float *acc = stack_acc;
      std::vector<float> heap;
      if (D > kStackHeadDim) {
        acc = static_cast<float *>(host.scratch(sizeof(float) * kQueryBlock * D));
        if (!acc) {
          heap.resize(kQueryBlock * D);
          acc = heap.data();
        }
      }
      for (int64_t t = t0; t < t1; ++t)
        if (auto st = run_task(at, t, acc)) return st;
      return PARLEY_KERNEL_OK;
    });
  });
}

}  // namespace parley::cpu
