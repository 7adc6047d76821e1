// Fused attention vs a float64 reference: every mask kind, GQA/MQA,
// q_len != kv_len, fully masked rows, [b,s,h,d] and [b,h,s,d] layouts with
// padded strides, probs and lse outputs, several head dims; the fused KV
// append (k_new/v_new, ABI 1.1) and an ABI 1.0-sized argument struct.
// F16 and I8 caches (ABI 1.2 kv_dtype): the reference runs in float64 on the
// dequantized cache, so the tolerance stays the f32 one; the append must
// leave exactly the rounded values (and I8 scales) the header specifies.
// Paged caches (ABI 1.3) are tested in test_attention_paged.cpp. Sliding
// windows (ABI 1.4): the reference hides key j from query i unless
// j > i + L - q_len - window (transformers' sliding_window_overlay).
#include <cstring>

#include "../../plugins/cpu/cpu_features.h"
#include "kv_rounding.h"
#include "test_host.h"
#include "test_util.h"

namespace parley::test {
namespace {

struct AttnCase {
  int64_t batch = 2, heads = 4, kv_heads = 4, q_len = 5, kv_len = 9, head_dim = 64;
  uint32_t mask = PARLEY_MASK_NONE;
  bool bshd = true;  // [b,s,h,d] (else [b,h,s,d])
  int64_t pad = 0;   // extra elements per row (seq stride)
  bool probs = true, lse = true;
  std::vector<int32_t> key_lengths;  // default: random in [0, kv_len]
  int threads = 3;
  // The q_len newest rows per sequence come in k_new/v_new; their cache rows
  // start as NaN and must hold the new rows afterwards.
  bool append = false;
  size_t struct_size = sizeof(parley_attention_args);
  int32_t kv_dtype = PARLEY_DTYPE_F32;  // F16 / I8: the cache is stored so
  int64_t window = 0;                   // ABI 1.4 sliding window (with CAUSAL)
};

struct Layout {
  int64_t sb, sh, ss, size;
};
Layout layout(bool bshd, int64_t batch, int64_t heads, int64_t seq, int64_t d, int64_t pad) {
  if (bshd) {
    int64_t ss = heads * d + pad;
    return {seq * ss + 1, d, ss, batch * (seq * ss + 1)};
  }
  int64_t ss = d + pad, sh = seq * ss + 2;
  return {heads * sh, sh, ss, batch * heads * sh};
}

void run_attention(AttnCase c) {
  PARLEY_CASE_SEED(seed);
  SCOPED_TRACE(testing::Message() << "batch=" << c.batch << " heads=" << c.heads << "/" << c.kv_heads
                                  << " q_len=" << c.q_len << " kv_len=" << c.kv_len << " d=" << c.head_dim
                                  << " mask=" << c.mask << " bshd=" << c.bshd << " window=" << c.window);
  Rng rng(seed);
  const int64_t D = c.head_dim;
  Layout lq = layout(c.bshd, c.batch, c.heads, c.q_len, D, c.pad);
  Layout lk = layout(c.bshd, c.batch, c.kv_heads, c.kv_len, D, c.pad);
  Layout lo = layout(c.bshd, c.batch, c.heads, c.q_len, D, c.pad);
  std::vector<float> q = rng.uniform(size_t(lq.size), -2.f, 2.f), k = rng.uniform(size_t(lk.size), -2.f, 2.f),
                     v = rng.uniform(size_t(lk.size));
  // F16 / I8: kq / vq hold the cache bytes and ks / vs the I8 scales
  // ([b, g, j] with padded strides); k / v become the dequantized values the
  // reference reads, k_src / v_src keep the f32 rows the append quantizes.
  const bool narrow = c.kv_dtype != PARLEY_DTYPE_F32;
  const size_t es = c.kv_dtype == PARLEY_DTYPE_F16 ? 2 : 1;
  const int64_t s_ss = 1, s_sh = c.kv_len + 1, s_sb = c.kv_heads * s_sh + 2;
  std::vector<uint8_t> kq(narrow ? size_t(lk.size) * es : 0, 0x55), vq(kq.size(), 0x55);
  std::vector<float> ks(narrow ? size_t(std::max<int64_t>(c.batch * s_sb, 1)) : 0, 7.f), vs(ks.size(), 7.f);
  const std::vector<float> k_src = k, v_src = v;
  if (narrow)
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t g = 0; g < c.kv_heads; ++g)
        for (int64_t j = 0; j < c.kv_len; ++j) {
          const int64_t at = b * lk.sb + g * lk.sh + j * lk.ss, sat = b * s_sb + g * s_sh + j * s_ss;
          ks[sat] = quantize_row(c.kv_dtype, &k_src[at], D, &kq[at * es], &k[at]);
          vs[sat] = quantize_row(c.kv_dtype, &v_src[at], D, &vq[at * es], &v[at]);
        }
  std::vector<float> out = poisoned(size_t(lo.size));
  std::vector<float> probs = poisoned(size_t(c.batch * c.heads * c.q_len * c.kv_len));
  std::vector<float> lse = poisoned(size_t(c.batch * c.heads * c.q_len));
  if ((c.mask & PARLEY_MASK_KEY_PADDING) && c.key_lengths.empty())
    for (int64_t b = 0; b < c.batch; ++b) c.key_lengths.push_back(int32_t(rng.integer(0, c.kv_len)));
  const float scale = 1.f / std::sqrt(float(D));

  std::vector<double> ref_out, ref_probs, ref_lse;
  std::vector<float> got_out, got_probs, got_lse;
  const int64_t group = c.heads / c.kv_heads;
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t i = 0; i < c.q_len; ++i) {
        const int64_t g = h / group;
        const int64_t L = (c.mask & PARLEY_MASK_KEY_PADDING) ? c.key_lengths[b] : c.kv_len;
        std::vector<double> s(size_t(c.kv_len), -INFINITY);
        double mx = -INFINITY;
        for (int64_t j = 0; j < c.kv_len; ++j) {
          bool visible = j < L;
          if (c.mask & PARLEY_MASK_CAUSAL) visible = visible && j <= i + L - c.q_len;
          // Only a struct that covers the field carries a window.
          if (c.window > 0 && c.struct_size >= sizeof(parley_attention_args))
            visible = visible && j > i + L - c.q_len - c.window;
          if (!visible) continue;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += double(q[b * lq.sb + h * lq.sh + i * lq.ss + d]) * k[b * lk.sb + g * lk.sh + j * lk.ss + d];
          s[j] = double(scale) * dot;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < c.kv_len; ++j) sum += std::isinf(s[j]) ? 0 : std::exp(s[j] - mx);
        for (int64_t d = 0; d < D; ++d) {
          double o = 0;
          for (int64_t j = 0; j < c.kv_len; ++j)
            if (!std::isinf(s[j])) o += std::exp(s[j] - mx) / sum * v[b * lk.sb + g * lk.sh + j * lk.ss + d];
          ref_out.push_back(o);
          got_out.push_back(out[b * lo.sb + h * lo.sh + i * lo.ss + d]);
        }
        for (int64_t j = 0; j < c.kv_len; ++j) {
          ref_probs.push_back(std::isinf(s[j]) ? 0.0 : std::exp(s[j] - mx) / sum);
        }
        ref_lse.push_back(sum > 0 ? mx + std::log(sum) : -INFINITY);
      }

  std::vector<float> k_cache = k, v_cache = v, k_new, v_new;
  const int64_t kn_ss = c.kv_heads * D + 3, kn_sb = c.q_len * kn_ss;  // [b, i, g, d], padded rows
  if (c.append) {
    k_new = poisoned(size_t(c.batch * kn_sb)), v_new = poisoned(size_t(c.batch * kn_sb));
    for (int64_t b = 0; b < c.batch; ++b) {
      const int64_t L = (c.mask & PARLEY_MASK_KEY_PADDING) ? c.key_lengths[b] : c.kv_len;
      for (int64_t i = 0; i < c.q_len; ++i)
        for (int64_t g = 0; g < c.kv_heads; ++g)
          for (int64_t d = 0; d < D; ++d) {
            const int64_t pos = L - c.q_len + i, at = b * lk.sb + g * lk.sh + pos * lk.ss + d;
            if (pos < 0) continue;
            k_new[b * kn_sb + i * kn_ss + g * D + d] = k_src[at];
            v_new[b * kn_sb + i * kn_ss + g * D + d] = v_src[at];
            k_cache[at] = v_cache[at] = std::nanf("");
          }
    }
  }
  // The cache the kernel gets; appended rows poisoned (bytes 0xFF: an F16
  // NaN, I8 -1; scales NaN).
  std::vector<uint8_t> kq_cache = kq, vq_cache = vq;
  std::vector<float> ks_cache = ks, vs_cache = vs;
  if (narrow && c.append)
    for (int64_t b = 0; b < c.batch; ++b) {
      const int64_t L = (c.mask & PARLEY_MASK_KEY_PADDING) ? c.key_lengths[b] : c.kv_len;
      for (int64_t i = 0; i < c.q_len; ++i)
        for (int64_t g = 0; g < c.kv_heads; ++g) {
          const int64_t pos = L - c.q_len + i, at = b * lk.sb + g * lk.sh + pos * lk.ss;
          if (pos < 0) continue;
          std::fill_n(&kq_cache[at * es], D * es, uint8_t{0xFF});
          std::fill_n(&vq_cache[at * es], D * es, uint8_t{0xFF});
          ks_cache[b * s_sb + g * s_sh + pos * s_ss] = vs_cache[b * s_sb + g * s_sh + pos * s_ss] = std::nanf("");
        }
    }

  TestHost host(c.threads);
  parley_attention_args a{};
  a.struct_size = c.struct_size;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = c.batch, a.num_heads = c.heads, a.num_kv_heads = c.kv_heads;
  a.q_len = c.q_len, a.kv_len = c.kv_len, a.head_dim = D;
  a.q = q.data(), a.q_stride_batch = lq.sb, a.q_stride_head = lq.sh, a.q_stride_seq = lq.ss;
  a.k = k_cache.data(), a.k_stride_batch = lk.sb, a.k_stride_head = lk.sh, a.k_stride_seq = lk.ss;
  a.v = v_cache.data(), a.v_stride_batch = lk.sb, a.v_stride_head = lk.sh, a.v_stride_seq = lk.ss;
  if (narrow) {
    a.kv_dtype = c.kv_dtype;
    a.k = kq_cache.data(), a.v = vq_cache.data();
    if (c.kv_dtype == PARLEY_DTYPE_I8) {
      a.k_scales = ks_cache.data(), a.v_scales = vs_cache.data();
      a.scale_stride_batch = s_sb, a.scale_stride_head = s_sh, a.scale_stride_seq = s_ss;
    }
  }
  if (c.append) {
    a.k_new = k_new.data(), a.v_new = v_new.data();
    a.k_new_stride_batch = a.v_new_stride_batch = kn_sb;
    a.k_new_stride_head = a.v_new_stride_head = D;
    a.k_new_stride_seq = a.v_new_stride_seq = kn_ss;
  } else if (c.struct_size < PARLEY_ATTENTION_ARGS_SIZE_V1_1) {
    a.k_new = a.v_new = reinterpret_cast<const void *>(uintptr_t{16});  // past struct_size: must not be read
  }
  if (c.struct_size < PARLEY_ATTENTION_ARGS_SIZE_V1_3) {  // an ABI 1.2 caller: the block table lies past struct_size
    a.block_table = reinterpret_cast<const int32_t *>(uintptr_t{16});
    a.block_table_stride = a.block_size = 7;
  }
  a.window = c.window;  // past struct_size for a pre-1.4 caller: must not be read
  a.out = out.data(), a.out_stride_batch = lo.sb, a.out_stride_head = lo.sh, a.out_stride_seq = lo.ss;
  a.scale = scale;
  a.mask = c.mask;
  a.key_lengths = c.key_lengths.empty() ? nullptr : c.key_lengths.data();
  a.probs = c.probs ? probs.data() : nullptr;
  a.lse = c.lse ? lse.data() : nullptr;
  ASSERT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
  if (narrow) {
    EXPECT_TRUE(kq_cache == kq && vq_cache == vq) << "the cache rows are not the header's rounding of k_new / v_new";
    if (c.kv_dtype == PARLEY_DTYPE_I8) {
      EXPECT_TRUE(std::memcmp(ks_cache.data(), ks.data(), ks.size() * sizeof(float)) == 0 &&
                  std::memcmp(vs_cache.data(), vs.data(), vs.size() * sizeof(float)) == 0)
          << "the I8 scales are not max|row| / 127";
    }
  } else {
    EXPECT_TRUE(std::memcmp(k_cache.data(), k.data(), k.size() * sizeof(float)) == 0 &&
                std::memcmp(v_cache.data(), v.data(), v.size() * sizeof(float)) == 0)
        << "the KV cache is not what a separate append would have left";
  }

  // got_out was collected before the call: re-read.
  got_out.clear();
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t i = 0; i < c.q_len; ++i)
        for (int64_t d = 0; d < D; ++d) got_out.push_back(out[b * lo.sb + h * lo.sh + i * lo.ss + d]);
  EXPECT_LE(rel_error(got_out, ref_out), kF32Tol);
  if (c.probs) {
    EXPECT_LE(rel_error(probs, ref_probs), kF32Tol);
  }
  if (c.lse) {
    ASSERT_EQ(lse.size(), ref_lse.size());
    std::vector<float> finite_got;
    std::vector<double> finite_ref;
    for (size_t i = 0; i < lse.size(); ++i) {
      if (std::isinf(ref_lse[i])) {
        EXPECT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << "lse[" << i << "] = " << lse[i] << ", want -inf";
      } else {
        finite_got.push_back(lse[i]);
        finite_ref.push_back(ref_lse[i]);
      }
    }
    EXPECT_LE(rel_error(finite_got, finite_ref), kF32Tol);
  }
}

TEST(Attention, MaskKinds) {
  for (uint32_t mask :
       {PARLEY_MASK_NONE, PARLEY_MASK_CAUSAL, PARLEY_MASK_KEY_PADDING, PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING}) {
    AttnCase c;
    c.mask = mask;
    c.batch = 3;
    run_attention(c);
    c.q_len = 9, c.kv_len = 9, c.key_lengths = {9, 0, 4};
    run_attention(c);
  }
}

TEST(Attention, GroupedAndMultiQuery) {
  for (int64_t kvh : {1, 2, 4, 8}) {
    AttnCase c;
    c.heads = 8, c.kv_heads = kvh, c.mask = PARLEY_MASK_CAUSAL, c.q_len = 7, c.kv_len = 20;
    run_attention(c);
  }
}

// Few query rows (decode, short chunks): one task takes the rows of several
// query heads of a kv head. Every head keeps its own probs / lse rows, with
// windows and padding, at any thread count, for head_dim with and without a
// tail past a multiple of 8, and for F16 / I8 caches.
TEST(Attention, GroupedQueryHeadsShareATask) {
  for (auto [heads, kvh] : {std::pair<int64_t, int64_t>{9, 3}, {14, 2}, {16, 1}, {12, 4}})
    for (int64_t q_len : {1, 2, 3, 9})
      for (int threads : {1, 3}) {
        AttnCase c;
        c.heads = heads, c.kv_heads = kvh, c.q_len = q_len, c.kv_len = 150, c.threads = threads;
        c.mask = PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING;
        c.key_lengths = {150, 77};
        c.head_dim = q_len == 2 ? 36 : 64;
        c.window = q_len == 3 ? 70 : 0;
        c.kv_dtype = q_len == 9 ? PARLEY_DTYPE_F16 : q_len == 1 && threads == 3 ? PARLEY_DTYPE_I8 : PARLEY_DTYPE_F32;
        run_attention(c);
      }
}

TEST(Attention, QueryLongerThanKeysCausal) {
  // Rows i < q_len - kv_len see no key: zeros, zero probs, lse = -inf.
  AttnCase c;
  c.q_len = 9, c.kv_len = 4, c.mask = PARLEY_MASK_CAUSAL;
  run_attention(c);
  c.mask |= PARLEY_MASK_KEY_PADDING;
  c.key_lengths = {2, 4};
  run_attention(c);
}

TEST(Attention, CrossAttentionAndDecode) {
  AttnCase c;
  c.q_len = 5, c.kv_len = 33;
  run_attention(c);
  c.q_len = 33, c.kv_len = 5;
  run_attention(c);
  c.q_len = 1, c.kv_len = 130, c.mask = PARLEY_MASK_CAUSAL;  // decode with a KV cache, > 2 key blocks
  run_attention(c);
  c.q_len = 65, c.kv_len = 200;
  run_attention(c);
}

TEST(Attention, Layouts) {
  for (bool bshd : {true, false})
    for (int64_t pad : {0, 3}) {
      AttnCase c;
      c.bshd = bshd, c.pad = pad, c.heads = 6, c.kv_heads = 3, c.q_len = 17, c.kv_len = 70, c.mask = PARLEY_MASK_CAUSAL;
      run_attention(c);
    }
}

TEST(Attention, HeadDims) {
  for (int64_t d : {1, 7, 33, 64, 65, 128, 300}) {
    AttnCase c;
    c.head_dim = d, c.mask = PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING, c.q_len = 10, c.kv_len = 70;
    c.key_lengths = {70, 33};
    run_attention(c);
  }
}

TEST(Attention, OptionalOutputsAndThreads) {
  for (int threads : {0, 1, 3})
    for (int opt = 0; opt < 4; ++opt) {
      AttnCase c;
      c.probs = opt & 1, c.lse = opt & 2, c.threads = threads, c.mask = PARLEY_MASK_CAUSAL;
      run_attention(c);
    }
}

TEST(Attention, KvAppendInTheSameCall) {
  for (uint32_t mask : {PARLEY_MASK_CAUSAL, PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING, PARLEY_MASK_NONE})
    for (int64_t q_len : {1, 4}) {
      AttnCase c;
      c.append = true, c.mask = mask, c.q_len = q_len, c.kv_len = 11, c.heads = 8, c.kv_heads = 2;
      if (mask & PARLEY_MASK_KEY_PADDING) c.key_lengths = {11, 2};  // L < q_len: rows below 0 are not stored
      run_attention(c);
      c.bshd = false, c.pad = 5;
      run_attention(c);
    }
}

TEST(Attention, AcceptsTheAbi10ArgumentStruct) {
  AttnCase c;
  c.struct_size = PARLEY_ATTENTION_ARGS_SIZE_V1_0;  // k_new lies past it and holds garbage
  c.mask = PARLEY_MASK_CAUSAL;
  run_attention(c);
}

TEST(Attention, KvAppendNeedsBothRows) {
  TestHost host(1);
  std::vector<float> q(64, 0.5f), k(2 * 64, 0.25f), v(2 * 64, 1.f), out(64), kn(64, 0.f);
  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = 1, a.num_heads = 1, a.num_kv_heads = 1, a.q_len = 1, a.kv_len = 2, a.head_dim = 64;
  a.q = q.data(), a.q_stride_seq = 64, a.k = k.data(), a.k_stride_seq = 64, a.v = v.data(), a.v_stride_seq = 64;
  a.out = out.data(), a.out_stride_seq = 64, a.scale = 1.f;
  a.k_new = kn.data();  // v_new missing
  EXPECT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_INVALID_ARGUMENT);
  EXPECT_NE(host.last_error().find("v_new"), std::string::npos) << host.last_error();
}

TEST(Attention, HalfAndInt8Caches) {
  for (int32_t dt : {PARLEY_DTYPE_F16, PARLEY_DTYPE_I8}) {
    SCOPED_TRACE(dt == PARLEY_DTYPE_F16 ? "F16 cache" : "I8 cache");
    for (uint32_t mask : {PARLEY_MASK_NONE, PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING}) {
      AttnCase c;
      c.kv_dtype = dt, c.mask = mask, c.heads = 8, c.kv_heads = 2, c.q_len = 7, c.kv_len = 150;
      if (mask & PARLEY_MASK_KEY_PADDING) c.key_lengths = {150, 65};
      run_attention(c);
      c.bshd = false, c.pad = 3, c.head_dim = 33;
      run_attention(c);
      c.q_len = 1, c.head_dim = 300;  // decode; head_dim past the stack accumulators
      run_attention(c);
    }
  }
}

TEST(Attention, HalfAndInt8CacheAppend) {
  for (int32_t dt : {PARLEY_DTYPE_F16, PARLEY_DTYPE_I8})
    for (uint32_t mask : {PARLEY_MASK_CAUSAL, PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING})
      for (int64_t q_len : {1, 4}) {
        SCOPED_TRACE(dt == PARLEY_DTYPE_F16 ? "F16 cache" : "I8 cache");
        AttnCase c;
        c.kv_dtype = dt, c.append = true, c.mask = mask, c.q_len = q_len, c.kv_len = 70, c.heads = 8, c.kv_heads = 2;
        if (mask & PARLEY_MASK_KEY_PADDING) c.key_lengths = {70, 2};
        run_attention(c);
        c.bshd = false, c.pad = 5, c.threads = 0;
        run_attention(c);
      }
}

TEST(Attention, AbiOneOneSizedArgsStillAppendToAnF32Cache) {
  AttnCase c;
  c.struct_size = PARLEY_ATTENTION_ARGS_SIZE_V1_1;  // kv_dtype lies past it
  c.append = true, c.mask = PARLEY_MASK_CAUSAL, c.q_len = 3, c.kv_len = 12;
  run_attention(c);
}

TEST(Attention, AbiOneTwoSizedArgsKeepTheirCacheDtype) {
  // An ABI 1.2 struct ends before the block table (which holds garbage
  // here); its kv_dtype must still be read.
  for (int32_t dt : {PARLEY_DTYPE_F16, PARLEY_DTYPE_I8}) {
    SCOPED_TRACE(dt == PARLEY_DTYPE_F16 ? "F16 cache" : "I8 cache");
    AttnCase c;
    c.struct_size = PARLEY_ATTENTION_ARGS_SIZE_V1_2;
    c.kv_dtype = dt, c.append = true, c.mask = PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING, c.q_len = 3;
    c.kv_len = 12, c.key_lengths = {12, 5};
    run_attention(c);
  }
}

TEST(Attention, Int8CacheAppendOfZeroAndNonFiniteRows) {
  // An all-zero row stores scale 0 (reads back as zeros); a row holding a
  // NaN stores scale NaN, so the output turns NaN as with an F32 cache
  // instead of a plausible number.
  TestHost host(1);
  const int64_t D = 8;
  std::vector<float> q(D, 0.5f), out(D, 0.f), kn(D, 0.f), vn(D, 0.f), ks(2, 7.f), vs(2, 7.f);
  std::vector<int8_t> k(2 * D, 5), v(2 * D, 5);
  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = 1, a.num_heads = 1, a.num_kv_heads = 1, a.q_len = 1, a.kv_len = 1, a.head_dim = D;
  a.q = q.data(), a.q_stride_seq = D, a.k = k.data(), a.k_stride_seq = D, a.v = v.data(), a.v_stride_seq = D;
  a.out = out.data(), a.out_stride_seq = D, a.scale = 1.f;
  a.k_new = kn.data(), a.v_new = vn.data(), a.k_new_stride_seq = a.v_new_stride_seq = D;
  a.kv_dtype = PARLEY_DTYPE_I8;
  a.k_scales = ks.data(), a.v_scales = vs.data(), a.scale_stride_seq = 1;
  ASSERT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
  EXPECT_EQ(ks[0], 0.f);
  EXPECT_EQ(vs[0], 0.f);
  for (int64_t d = 0; d < D; ++d) EXPECT_EQ(k[d], 0) << d;
  for (float o : out) EXPECT_EQ(o, 0.f);
  vn[3] = std::nanf("");
  ASSERT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
  EXPECT_TRUE(std::isnan(vs[0])) << vs[0];
  for (float o : out) EXPECT_TRUE(std::isnan(o)) << o;
}

TEST(Attention, HalfCacheReadsEveryHalfValueExactly) {
  // One key: the output is the value row itself, so every one of the 65536
  // half bit patterns (subnormals, the largest, infinities, NaNs) must come
  // out as its exact float.
  TestHost host(1);
  const int64_t D = 1024;
  std::vector<float> q(D, 0.f), out(D);
  std::vector<uint16_t> k(D, 0), v(D);
  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = 1, a.num_heads = 1, a.num_kv_heads = 1, a.q_len = 1, a.kv_len = 1, a.head_dim = D;
  a.q = q.data(), a.q_stride_seq = D, a.k = k.data(), a.k_stride_seq = D, a.v = v.data(), a.v_stride_seq = D;
  a.out = out.data(), a.out_stride_seq = D, a.scale = 1.f;
  a.kv_dtype = PARLEY_DTYPE_F16;
  int bad = 0;
  for (uint32_t base = 0; base < 65536; base += D) {
    for (int64_t d = 0; d < D; ++d) v[d] = static_cast<uint16_t>(base + d);
    ASSERT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
    for (int64_t d = 0; d < D; ++d) {
      _Float16 h;
      std::memcpy(&h, &v[d], 2);
      const float want = static_cast<float>(h);
      // == : -0 comes out as +0 (the accumulator starts at +0), all else exact
      const bool ok = std::isnan(want) ? std::isnan(out[d]) : out[d] == want;
      if (!ok && ++bad <= 5) ADD_FAILURE() << "half 0x" << std::hex << v[d] << ": got " << out[d] << ", want " << want;
    }
  }
  EXPECT_EQ(bad, 0);
}

// Attention over an F16 cache reads the halves in place (AVX2 + F16C, or
// their 16-lane forms on AVX-512), rows that see the same keys (the heads of
// a kv head at one position; a prefill chunk's positions below the causal
// diagonal) in threes, twos and ones; for decode and prefill alike the result must be the attention over an F32 cache
// holding the same values, bit for bit in an optimised build (the same FMAs and sums in the same order), for every
// grouping, for head dims with and without a 32- or 16-wide remainder, at every ISA level the CPU has (so the 16-lane
// forms equal the 8-lane ones).
TEST(Attention, HalfCacheEqualsTheF32CacheOfItsValues) {
  if (parley::cpu::active_isa() < parley::cpu::Isa::kAvx512)
    std::printf("[   NOTE   ] the CPU (or PARLEY_CPU_ISA) has no AVX-512: the 16-lane forms are not compared here\n");
  if (parley::cpu::active_isa() < parley::cpu::Isa::kAvx2)
    std::printf("[   NOTE   ] no AVX2: the F16 cache goes through the f32 tile, not read in place\n");
  PARLEY_CASE_SEED(seed);
  Rng rng(seed);
  struct G {
    int64_t heads, kv_heads, D;
  };
  for (G g : {G{9, 3, 64}, G{14, 2, 64}, G{32, 8, 128}, G{4, 4, 40}, G{10, 2, 80}, G{8, 1, 72}, G{6, 3, 24}})
    for (int64_t kv_len : {int64_t{1}, int64_t{7}, int64_t{150}, int64_t{205}})
      for (int64_t q_len : {int64_t{1}, int64_t{6}})
        for (int threads : {1, 3}) {
          SCOPED_TRACE(testing::Message() << g.heads << "/" << g.kv_heads << " D=" << g.D << " keys " << kv_len
                                          << " queries " << q_len << " threads " << threads);
          const int64_t B = 2, D = g.D, kvd = g.kv_heads * D;
          std::vector<float> q = rng.uniform(size_t(B * q_len * g.heads * D), -2.f, 2.f);
          std::vector<float> kf = rng.uniform(size_t(B * kv_len * kvd), -3.f, 3.f), vf = rng.uniform(kf.size());
          std::vector<uint16_t> kh(kf.size()), vh(vf.size());
          for (size_t i = 0; i < kf.size(); ++i) {
            const _Float16 a = static_cast<_Float16>(kf[i]), b = static_cast<_Float16>(vf[i]);
            std::memcpy(&kh[i], &a, 2), std::memcpy(&vh[i], &b, 2);
            kf[i] = static_cast<float>(a), vf[i] = static_cast<float>(b);
          }
          std::vector<int32_t> lengths = {static_cast<int32_t>(kv_len), static_cast<int32_t>((kv_len + 1) / 2)};
          auto run = [&](int32_t dt) {
            TestHost host(threads);
            std::vector<float> out(q.size(), -1.f);
            parley_attention_args a{};
            a.struct_size = sizeof a;
            a.dtype = PARLEY_DTYPE_F32;
            a.batch = B, a.num_heads = g.heads, a.num_kv_heads = g.kv_heads, a.q_len = q_len, a.kv_len = kv_len;
            a.head_dim = D;
            a.q = q.data(), a.q_stride_batch = q_len * g.heads * D, a.q_stride_head = D, a.q_stride_seq = g.heads * D;
            a.k = dt == PARLEY_DTYPE_F16 ? static_cast<const void *>(kh.data()) : kf.data();
            a.v = dt == PARLEY_DTYPE_F16 ? static_cast<const void *>(vh.data()) : vf.data();
            a.k_stride_batch = a.v_stride_batch = kv_len * kvd;
            a.k_stride_head = a.v_stride_head = D;
            a.k_stride_seq = a.v_stride_seq = kvd;
            a.out = out.data(), a.out_stride_batch = q_len * g.heads * D, a.out_stride_head = D,
            a.out_stride_seq = g.heads * D;
            a.scale = 1.f / std::sqrt(static_cast<float>(D));
            a.mask = PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING;
            a.key_lengths = lengths.data();
            a.kv_dtype = dt;
            EXPECT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
            return out;
          };
          const std::vector<float> half = run(PARLEY_DTYPE_F16), wide = run(PARLEY_DTYPE_F32);
          ASSERT_EQ(half.size(), wide.size());
#ifdef __OPTIMIZE__
          size_t differ = 0;
          for (size_t i = 0; i < half.size(); ++i) differ += std::memcmp(&half[i], &wide[i], sizeof(float)) != 0;
          EXPECT_EQ(differ, 0u) << "of " << half.size() << " outputs";
          // The same with the kernels held to AVX2 (on a CPU without AVX-512
          // both runs take the AVX2 forms; the note above says so).
          const int saved_cap = parley::cpu::isa_cap_state();
          parley::cpu::set_isa_cap(parley::cpu::Isa::kAvx2);
          const std::vector<float> half2 = run(PARLEY_DTYPE_F16);
          parley::cpu::restore_isa_cap_state(saved_cap);
          differ = 0;
          for (size_t i = 0; i < half.size(); ++i) differ += std::memcmp(&half[i], &half2[i], sizeof(float)) != 0;
          EXPECT_EQ(differ, 0u) << "of " << half.size() << " outputs differ between the AVX-512 and AVX2 kernels";
#else
          // Unoptimised, GCC contracts the F16 path's a += x * y into FMAs but
          // not the target_clones F32 path's (plugins/cpu/attention.cpp): the
          // same sums up to float32 rounding.
          std::vector<double> wide64(wide.begin(), wide.end());
          EXPECT_LE(rel_error(half, wide64), kF32Tol);
#endif
        }
}

// What the serving engine's exactness rests on: a query row's output does
// not depend on the rows computed with it. Each row of a prefill chunk
// (causal, with and without a sliding window whose start differs per row),
// and of a group of beams attending to one source (no mask),
// must equal that row attended alone (q_len 1 over the keys it sees), bit
// for bit in an optimised build, for F32, F16 and I8 caches, GQA and MHA,
// whatever rows the kernel groups together: chunks of 7 rows (one query
// block) and 20 (three, of several heads).
TEST(Attention, RowsOfAChunkEqualEachRowAlone) {
  PARLEY_CASE_SEED(seed);
  Rng rng(seed);
  struct G {
    int64_t heads, kv_heads, D;
  };
  for (int32_t dt : {PARLEY_DTYPE_F32, PARLEY_DTYPE_F16, PARLEY_DTYPE_I8})
    for (G g : {G{9, 3, 64}, G{4, 4, 64}, G{8, 2, 40}})
      for (int64_t window : {int64_t{0}, int64_t{100}, int64_t{70}})
        for (uint32_t mask : {PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING, uint32_t{PARLEY_MASK_KEY_PADDING}})
          for (int64_t q_len : {int64_t{7}, int64_t{20}}) {
            if (window && !(mask & PARLEY_MASK_CAUSAL)) continue;  // a window needs the causal mask
            const int64_t B = 2, D = g.D, kvd = g.kv_heads * D, kv_len = 150;
            SCOPED_TRACE(testing::Message() << "dtype " << dt << " " << g.heads << "/" << g.kv_heads << " D=" << D
                                            << " mask " << mask << " window " << window << " q_len " << q_len);
            std::vector<float> q = rng.uniform(size_t(B * q_len * g.heads * D), -2.f, 2.f);
            std::vector<float> kf = rng.uniform(size_t(B * kv_len * kvd), -3.f, 3.f), vf = rng.uniform(kf.size());
            // The cache in its dtype: bytes plus one scale per (position, kv head) row for I8.
            const size_t es = dt == PARLEY_DTYPE_F32 ? 4 : dt == PARLEY_DTYPE_F16 ? 2 : 1;
            std::vector<uint8_t> kb(kf.size() * es), vb(vf.size() * es);
            std::vector<float> ks(kf.size() / size_t(D)), vs(vf.size() / size_t(D)), deq(static_cast<size_t>(D));
            for (size_t row = 0; row < ks.size(); ++row) {
              if (dt == PARLEY_DTYPE_F32) {
                std::memcpy(kb.data() + row * D * 4, kf.data() + row * D, size_t(D) * 4);
                std::memcpy(vb.data() + row * D * 4, vf.data() + row * D, size_t(D) * 4);
              } else {
                ks[row] = quantize_row(dt, kf.data() + row * D, D, kb.data() + row * D * es, deq.data());
                vs[row] = quantize_row(dt, vf.data() + row * D, D, vb.data() + row * D * es, deq.data());
              }
            }
            const std::vector<int32_t> lengths = {static_cast<int32_t>(kv_len), 61};
            // Rows [i0, i0 + n) of every sequence, as the last n queries of a
            // call whose sequences see `lens` keys.
            // The chunk on one thread (a task takes several heads' rows); a row
            // alone with a thread per head, so that its task holds it alone.
            auto run = [&](int64_t i0, int64_t n, const std::vector<int32_t> &lens) {
              TestHost host(n == 1 ? static_cast<int>(B * g.heads) : 1);
              std::vector<float> out(size_t(B * n * g.heads * D), -1.f);
              parley_attention_args a{};
              a.struct_size = sizeof a;
              a.dtype = PARLEY_DTYPE_F32;
              a.batch = B, a.num_heads = g.heads, a.num_kv_heads = g.kv_heads, a.q_len = n, a.kv_len = kv_len;
              a.head_dim = D;
              a.q = q.data() + i0 * g.heads * D, a.q_stride_batch = q_len * g.heads * D, a.q_stride_head = D,
              a.q_stride_seq = g.heads * D;
              a.k = kb.data(), a.v = vb.data();
              a.k_stride_batch = a.v_stride_batch = kv_len * kvd;
              a.k_stride_head = a.v_stride_head = D;
              a.k_stride_seq = a.v_stride_seq = kvd;
              if (dt == PARLEY_DTYPE_I8) {
                a.k_scales = ks.data(), a.v_scales = vs.data();
                a.scale_stride_batch = kv_len * g.kv_heads, a.scale_stride_head = 1, a.scale_stride_seq = g.kv_heads;
              }
              a.out = out.data(), a.out_stride_batch = n * g.heads * D, a.out_stride_head = D,
              a.out_stride_seq = g.heads * D;
              a.scale = 1.f / std::sqrt(static_cast<float>(D));
              a.mask = mask;
              a.key_lengths = lens.data();
              a.kv_dtype = dt;
              a.window = window;
              EXPECT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
              return out;
            };
            const std::vector<float> chunk = run(0, q_len, lengths);
            size_t differ = 0, compared = 0;
            for (int64_t i = 0; i < q_len; ++i) {
              // Causal: query i of the chunk sees the keys up to its own position.
              std::vector<int32_t> lens = lengths;
              if (mask & PARLEY_MASK_CAUSAL)
                for (int32_t &l : lens) l = std::max<int32_t>(0, l - static_cast<int32_t>(q_len - 1 - i));
              const std::vector<float> alone = run(i, 1, lens);
              for (int64_t b = 0; b < B; ++b)
                for (int64_t e = 0; e < g.heads * D; ++e) {
                  const float x = chunk[size_t((b * q_len + i) * g.heads * D + e)],
                              y = alone[size_t(b * g.heads * D + e)];
                  ++compared;
#ifdef __OPTIMIZE__
                  differ += std::memcmp(&x, &y, sizeof x) != 0;
#else
                  differ += std::fabs(x - y) > 1e-5f * (1.f + std::fabs(y));
#endif
                }
            }
            EXPECT_EQ(differ, 0u) << "of " << compared << " outputs differ from the row attended alone";
          }
}

TEST(Attention, Int8CacheMisuse) {
  TestHost host(1);
  std::vector<float> q(64, 0.5f), out(64, 0.f), scales(2, 1.f);
  std::vector<int8_t> k(2 * 64, 3), v(2 * 64, 1);
  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = 1, a.num_heads = 1, a.num_kv_heads = 1, a.q_len = 1, a.kv_len = 2, a.head_dim = 64;
  a.q = q.data(), a.q_stride_seq = 64, a.k = k.data(), a.k_stride_seq = 64, a.v = v.data(), a.v_stride_seq = 64;
  a.out = out.data(), a.out_stride_seq = 64, a.scale = 1.f;
  a.kv_dtype = PARLEY_DTYPE_I8;
  a.k_scales = scales.data();  // v_scales missing
  a.scale_stride_seq = 1;
  EXPECT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_INVALID_ARGUMENT);
  EXPECT_NE(host.last_error().find("v_scales"), std::string::npos) << host.last_error();
  a.v_scales = scales.data();
  a.kv_dtype = PARLEY_DTYPE_I4;  // not a cache type (F32, F16, BF16, I8)
  EXPECT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_INVALID_ARGUMENT);
  EXPECT_NE(host.last_error().find("kv_dtype"), std::string::npos) << host.last_error();
  a.kv_dtype = PARLEY_DTYPE_I8;
  EXPECT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
  for (float o : out) EXPECT_FLOAT_EQ(o, 1.f);  // v = 1 * scale 1 everywhere
}

// Sliding windows (ABI 1.4): windows of 1, inside one key block, across the
// 64-key blocks and wider than every sequence; prefill (q_len > 8: several
// query blocks) and decoding; with key padding (sequences of other lengths,
// an empty one), GQA, probs and lse, F16 / I8 caches and the fused append.
TEST(Attention, SlidingWindow) {
  for (int64_t window : {1, 3, 64, 65, 100, 500})
    for (uint32_t mask : {PARLEY_MASK_CAUSAL, PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING}) {
      AttnCase c;
      c.window = window, c.mask = mask, c.batch = 3, c.heads = 4, c.kv_heads = 2, c.head_dim = 33;
      c.q_len = 19, c.kv_len = 150;
      if (mask & PARLEY_MASK_KEY_PADDING) c.key_lengths = {150, 0, 70};
      run_attention(c);
      c.q_len = 1;  // decoding
      run_attention(c);
      c.q_len = 150, c.kv_len = 150;  // prefill
      if (mask & PARLEY_MASK_KEY_PADDING) c.key_lengths = {150, 9, 130};
      run_attention(c);
    }
}

TEST(Attention, SlidingWindowWithNarrowCachesAndAppend) {
  for (int32_t dt : {PARLEY_DTYPE_F32, PARLEY_DTYPE_F16, PARLEY_DTYPE_I8})
    for (int64_t window : {2, 70}) {
      AttnCase c;
      c.kv_dtype = dt, c.window = window, c.append = true, c.mask = PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING;
      c.q_len = 4, c.kv_len = 140, c.key_lengths = {140, 75};
      run_attention(c);
    }
}

TEST(Attention, WindowIsNotReadFromAnAbi13Struct) {
  AttnCase c;
  c.struct_size = PARLEY_ATTENTION_ARGS_SIZE_V1_3;  // window lies past it: full causal attention
  c.window = 2, c.mask = PARLEY_MASK_CAUSAL, c.q_len = 6, c.kv_len = 12;
  run_attention(c);
}

TEST(Attention, WindowMisuse) {
  TestHost host(1);
  std::vector<float> q(64, 0.5f), k(2 * 64, 0.25f), v(2 * 64, 1.f), out(64);
  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = 1, a.num_heads = 1, a.num_kv_heads = 1, a.q_len = 1, a.kv_len = 2, a.head_dim = 64;
  a.q = q.data(), a.q_stride_seq = 64, a.k = k.data(), a.k_stride_seq = 64, a.v = v.data(), a.v_stride_seq = 64;
  a.out = out.data(), a.out_stride_seq = 64, a.scale = 1.f;
  a.window = 1;  // without the causal mask: no position to count back from
  EXPECT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_INVALID_ARGUMENT);
  EXPECT_NE(host.last_error().find("PARLEY_MASK_CAUSAL"), std::string::npos) << host.last_error();
  a.mask = PARLEY_MASK_CAUSAL;
  a.window = -1;
  EXPECT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_INVALID_ARGUMENT);
  EXPECT_NE(host.last_error().find("negative window"), std::string::npos) << host.last_error();
}

TEST(Attention, EmptyKeys) {
  AttnCase c;
  c.kv_len = 0, c.q_len = 3;
  run_attention(c);
}

}  // namespace
}  // namespace parley::test
