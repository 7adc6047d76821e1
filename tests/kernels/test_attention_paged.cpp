// Fused attention over a paged KV cache (plugin ABI 1.3 block_table): key j
// of sequence b is row j % block_size of block
// block_table[b * block_table_stride + j / block_size] of a pool shared by
// all sequences. Against a float64 reference on random inputs: head dims
// 64/80/128, block sizes 1/16/32/48 (48: the kernel's 64-key blocks start
// inside cache blocks), GQA and MQA, decode and prefill chunks,
// lengths that are not multiples of the block size, shuffled (non-increasing)
// tables, sequences sharing read-only prefix blocks, F16 and I8 caches,
// both pool layouts, probs and lse. The pool starts poisoned (NaN / 0xFF
// bytes) outside the rows the sequences own, so a read of any other row
// shows in the result, and after a fused append the whole pool must equal
// the expected one byte for byte: the new rows in their blocks, every other
// row unchanged. Each call is also run on a contiguous copy of the same
// cache, and the two results must agree bit for bit (the kernel does the
// same arithmetic per key either way). The F16 / I8 reference reads the
// dequantized cache, so the tolerance stays the f32 one (as in
// test_attention.cpp).
#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "kv_rounding.h"
#include "test_host.h"
#include "test_util.h"

namespace parley::test {
namespace {

struct PagedCase {
  int64_t heads = 8, kv_heads = 2, q_len = 1, head_dim = 64, block_size = 16;
  std::vector<int32_t> lengths = {37, 16, 5, 70};  // keys per sequence after the append
  uint32_t mask = PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING;
  int32_t kv_dtype = PARLEY_DTYPE_F32;
  bool append = false;        // the q_len newest rows come in k_new / v_new
  int64_t shared_blocks = 0;  // sequence 1's first blocks are sequence 0's (a shared prefix)
  int64_t sharers = 1;        // ...and those of sequences 2 .. sharers too
  bool head_major = false;    // pool [block, kv head, pos, d] (else [block, pos, kv head, d])
  bool probs = true, lse = true;
  int threads = 3;
  int64_t window = 0;  // ABI 1.4 sliding window
};

std::string describe(const PagedCase &c) {
  std::string s = "heads=" + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) +
                  " q_len=" + std::to_string(c.q_len) + " d=" + std::to_string(c.head_dim) +
                  " block_size=" + std::to_string(c.block_size) + " kv_dtype=" + std::to_string(c.kv_dtype) +
                  " append=" + std::to_string(c.append) + " shared=" + std::to_string(c.shared_blocks) +
                  " sharers=" + std::to_string(c.sharers) + " head_major=" + std::to_string(c.head_major) +
                  " probs=" + std::to_string(c.probs) + " mask=" + std::to_string(c.mask) +
                  " window=" + std::to_string(c.window) + " lengths=";
  for (int32_t l : c.lengths) s += std::to_string(l) + ",";
  return s;
}

// A cache of `rows` rows of head_dim: F32 values, or F16 / I8 bytes with the
// I8 scales beside.
struct Cache {
  std::vector<float> f32;
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
  void *data() { return f32.empty() ? static_cast<void *>(bytes.data()) : static_cast<void *>(f32.data()); }
  bool operator==(const Cache &o) const {
    auto same = [](const auto &x, const auto &y) {
      return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size() * sizeof(x[0])) == 0);
    };
    return same(f32, o.f32) && same(bytes, o.bytes) && same(scales, o.scales);
  }
};

Cache poisoned_cache(int32_t dtype, int64_t elements, int64_t scale_elements) {
  Cache c;
  if (dtype == PARLEY_DTYPE_F32) {
    c.f32 = poisoned(size_t(elements));
  } else {
    c.bytes.assign(size_t(elements) * (dtype == PARLEY_DTYPE_F16 ? 2 : 1), uint8_t{0xFF});  // F16 NaN, I8 -1
    if (dtype == PARLEY_DTYPE_I8) c.scales = poisoned(size_t(scale_elements));
  }
  return c;
}

// Stores row `src` (head_dim values, already rounded: `bytes` / `scale` hold
// its encoding) at element offset `at` and scale offset `sat`.
void store_row(Cache &c, int32_t dtype, const float *src, const uint8_t *bytes, float scale, int64_t D, int64_t at,
               int64_t sat) {
  if (dtype == PARLEY_DTYPE_F32) {
    std::copy_n(src, D, &c.f32[size_t(at)]);
    return;
  }
  const size_t es = dtype == PARLEY_DTYPE_F16 ? 2 : 1;
  std::memcpy(&c.bytes[size_t(at) * es], bytes, size_t(D) * es);
  if (dtype == PARLEY_DTYPE_I8) c.scales[size_t(sat)] = scale;
}

struct Outputs {
  std::vector<float> out, probs, lse;
};

void run_paged(const PagedCase &c) {
  PARLEY_CASE_SEED(seed);
  SCOPED_TRACE(describe(c));
  Rng rng(seed);
  const int64_t B = int64_t(c.lengths.size()), D = c.head_dim, G = c.kv_heads, H = c.heads, Q = c.q_len;
  const int64_t bs = c.block_size, group = H / G;
  const int64_t max_len = *std::max_element(c.lengths.begin(), c.lengths.end());
  const int64_t kv_w = max_len + 2;  // kv_len: the probs rows' width (the paged kernel needs no more)
  const size_t es = c.kv_dtype == PARLEY_DTYPE_F16 ? 2 : c.kv_dtype == PARLEY_DTYPE_I8 ? 1 : 4;
  auto L_of = [&](int64_t b) { return int64_t(c.lengths[size_t(b)]); };

  // Logical rows [b, j, g, d]: f32 values (what k_new carries), their cache
  // encoding and its dequantized values (what the reference reads).
  auto lrow = [&](int64_t b, int64_t j, int64_t g) { return ((b * max_len + j) * G + g) * D; };
  const size_t logical = size_t(B * max_len * G * D);
  std::vector<float> k_src = rng.uniform(logical, -2.f, 2.f), v_src = rng.uniform(logical);
  const int64_t shared_keys = c.shared_blocks * bs;
  if (c.shared_blocks > 0) {
    ASSERT_GT(B, c.sharers);
    for (int64_t b = 0; b <= c.sharers; ++b) {
      ASSERT_GE(L_of(b) - (c.append ? Q : 0), shared_keys) << "a shared block must only be read";
      if (b == 0) continue;
      std::copy_n(&k_src[size_t(lrow(0, 0, 0))], shared_keys * G * D, &k_src[size_t(lrow(b, 0, 0))]);
      std::copy_n(&v_src[size_t(lrow(0, 0, 0))], shared_keys * G * D, &v_src[size_t(lrow(b, 0, 0))]);
    }
  }
  std::vector<float> k_deq = k_src, v_deq = v_src, k_scale(logical / size_t(D), 1.f), v_scale = k_scale;
  std::vector<uint8_t> k_enc(c.kv_dtype == PARLEY_DTYPE_F32 ? 0 : logical * es), v_enc(k_enc.size());
  if (c.kv_dtype != PARLEY_DTYPE_F32)
    for (size_t r = 0; r < logical / size_t(D); ++r) {
      k_scale[r] =
          quantize_row(c.kv_dtype, &k_src[r * size_t(D)], D, &k_enc[r * size_t(D) * es], &k_deq[r * size_t(D)]);
      v_scale[r] =
          quantize_row(c.kv_dtype, &v_src[r * size_t(D)], D, &v_enc[r * size_t(D) * es], &v_deq[r * size_t(D)]);
    }

  // Block tables: a shuffled pool with spare blocks; entries past a
  // sequence's last block hold -1 (the kernel must not look at them).
  std::vector<int64_t> nblocks(static_cast<size_t>(B));
  int64_t distinct = 0, table_stride = 0;
  for (int64_t b = 0; b < B; ++b) {
    nblocks[size_t(b)] = (L_of(b) + bs - 1) / bs;
    distinct += nblocks[size_t(b)] - (b >= 1 && b <= c.sharers ? c.shared_blocks : 0);
    table_stride = std::max(table_stride, nblocks[size_t(b)] + 1);
  }
  const int64_t P = distinct + 3;
  std::vector<int32_t> perm(static_cast<size_t>(P));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng.gen);
  if (P >= 2 && perm[0] < perm[1]) std::swap(perm[0], perm[1]);  // sequence 0 runs backwards at least once
  std::vector<int32_t> table(size_t(B * table_stride), -1);
  size_t next = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < nblocks[size_t(b)]; ++i)
      table[size_t(b * table_stride + i)] =
          b >= 1 && b <= c.sharers && i < c.shared_blocks ? table[size_t(i)] : perm[next++];

  // The pool's layout (padded rows and blocks) and its scales [block, g, pos].
  int64_t sb, sh, ss;
  if (c.head_major) {
    ss = D + 2, sh = bs * ss + 1, sb = G * sh + 4;
  } else {
    ss = G * D + 3, sh = D, sb = bs * ss + 5;
  }
  const int64_t s_ss = 1, s_sh = bs + 1, s_sb = G * s_sh + 2;
  // Every row of the sequences in the pool (expected after the call), and
  // the pool the kernel gets (the appended rows still poisoned).
  Cache want = poisoned_cache(c.kv_dtype, P * sb, P * s_sb), want_v = want;
  Cache pool = want, pool_v = want;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < L_of(b); ++j) {
      const int64_t blk = table[size_t(b * table_stride + j / bs)], r = j % bs;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t lr = lrow(b, j, g), at = blk * sb + g * sh + r * ss, sat = blk * s_sb + g * s_sh + r * s_ss;
        const uint8_t *ke = k_enc.empty() ? nullptr : &k_enc[size_t(lr) * es];
        const uint8_t *ve = v_enc.empty() ? nullptr : &v_enc[size_t(lr) * es];
        store_row(want, c.kv_dtype, &k_src[size_t(lr)], ke, k_scale[size_t(lr / D)], D, at, sat);
        store_row(want_v, c.kv_dtype, &v_src[size_t(lr)], ve, v_scale[size_t(lr / D)], D, at, sat);
        if (c.append && j >= L_of(b) - Q) continue;
        store_row(pool, c.kv_dtype, &k_src[size_t(lr)], ke, k_scale[size_t(lr / D)], D, at, sat);
        store_row(pool_v, c.kv_dtype, &v_src[size_t(lr)], ve, v_scale[size_t(lr / D)], D, at, sat);
      }
    }
  // The same cache, contiguous: [b, j, g, d] rows of kv_w per sequence.
  Cache flat = poisoned_cache(c.kv_dtype, B * kv_w * G * D, B * G * kv_w), flat_v = flat;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < L_of(b); ++j)
      for (int64_t g = 0; g < G; ++g) {
        const int64_t lr = lrow(b, j, g), at = ((b * kv_w + j) * G + g) * D, sat = (b * G + g) * kv_w + j;
        store_row(flat, c.kv_dtype, &k_src[size_t(lr)], k_enc.empty() ? nullptr : &k_enc[size_t(lr) * es],
                  k_scale[size_t(lr / D)], D, at, sat);
        store_row(flat_v, c.kv_dtype, &v_src[size_t(lr)], v_enc.empty() ? nullptr : &v_enc[size_t(lr) * es],
                  v_scale[size_t(lr / D)], D, at, sat);
      }

  // q and out [b, i, h, d] with padded rows; k_new / v_new [b, i, g, d].
  const int64_t q_ss = H * D + 1, q_sb = Q * q_ss;
  const std::vector<float> q = rng.uniform(size_t(B * q_sb), -2.f, 2.f);
  const int64_t n_ss = G * D + 3, n_sb = Q * n_ss;
  std::vector<float> k_new = poisoned(size_t(B * n_sb)), v_new = k_new;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Q; ++i) {
      const int64_t pos = L_of(b) - Q + i;
      if (pos < 0) continue;  // not stored: left NaN
      for (int64_t g = 0; g < G; ++g) {
        std::copy_n(&k_src[size_t(lrow(b, pos, g))], D, &k_new[size_t(b * n_sb + i * n_ss + g * D)]);
        std::copy_n(&v_src[size_t(lrow(b, pos, g))], D, &v_new[size_t(b * n_sb + i * n_ss + g * D)]);
      }
    }

  // The float64 reference.
  const float scale = 1.f / std::sqrt(float(D));
  std::vector<double> ref_out, ref_probs, ref_lse;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Q; ++i) {
        const int64_t g = h / group, L = L_of(b);
        int64_t limit = L;
        if (c.mask & PARLEY_MASK_CAUSAL) limit = std::min(L, i + L - Q + 1);
        limit = std::max<int64_t>(limit, 0);
        // Sliding window: keys j > i + L - Q - window only.
        const int64_t first = c.window > 0 ? std::min(limit, std::max<int64_t>(0, i + L - Q + 1 - c.window)) : 0;
        std::vector<double> s(size_t(kv_w), -INFINITY);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = first; j < limit; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += double(q[size_t(b * q_sb + i * q_ss + h * D + d)]) * k_deq[size_t(lrow(b, j, g) + d)];
          s[size_t(j)] = double(scale) * dot;
          mx = std::max(mx, s[size_t(j)]);
        }
        for (int64_t j = first; j < limit; ++j) sum += std::exp(s[size_t(j)] - mx);
        for (int64_t d = 0; d < D; ++d) {
          double o = 0;
          for (int64_t j = first; j < limit; ++j)
            o += std::exp(s[size_t(j)] - mx) / sum * v_deq[size_t(lrow(b, j, g) + d)];
          ref_out.push_back(o);
        }
        for (int64_t j = 0; j < kv_w; ++j)
          ref_probs.push_back(j >= first && j < limit ? std::exp(s[size_t(j)] - mx) / sum : 0.0);
        ref_lse.push_back(limit > first ? mx + std::log(sum) : -INFINITY);
      }

  TestHost host(c.threads);
  auto call = [&](bool paged, Cache &k, Cache &v) {
    Outputs o{poisoned(size_t(B * q_sb)), poisoned(size_t(B * H * Q * kv_w)), poisoned(size_t(B * H * Q))};
    parley_attention_args a{};
    a.struct_size = sizeof a;
    a.dtype = PARLEY_DTYPE_F32;
    a.batch = B, a.num_heads = H, a.num_kv_heads = G, a.q_len = Q, a.kv_len = kv_w, a.head_dim = D;
    a.q = q.data(), a.q_stride_batch = q_sb, a.q_stride_head = D, a.q_stride_seq = q_ss;
    a.out = o.out.data(), a.out_stride_batch = q_sb, a.out_stride_head = D, a.out_stride_seq = q_ss;
    a.k = k.data(), a.v = v.data();
    a.kv_dtype = c.kv_dtype;
    if (c.kv_dtype == PARLEY_DTYPE_I8) a.k_scales = k.scales.data(), a.v_scales = v.scales.data();
    if (paged) {
      a.k_stride_batch = a.v_stride_batch = sb, a.k_stride_head = a.v_stride_head = sh;
      a.k_stride_seq = a.v_stride_seq = ss;
      a.scale_stride_batch = s_sb, a.scale_stride_head = s_sh, a.scale_stride_seq = s_ss;
      a.block_table = table.data(), a.block_table_stride = table_stride, a.block_size = bs;
      if (c.append) {
        a.k_new = k_new.data(), a.v_new = v_new.data();
        a.k_new_stride_batch = a.v_new_stride_batch = n_sb, a.k_new_stride_head = a.v_new_stride_head = D;
        a.k_new_stride_seq = a.v_new_stride_seq = n_ss;
      }
    } else {
      a.k_stride_batch = a.v_stride_batch = kv_w * G * D, a.k_stride_head = a.v_stride_head = D;
      a.k_stride_seq = a.v_stride_seq = G * D;
      a.scale_stride_batch = G * kv_w, a.scale_stride_head = kv_w, a.scale_stride_seq = 1;
    }
    a.scale = scale;
    a.mask = c.mask;
    a.window = c.window;
    a.key_lengths = c.lengths.data();
    a.probs = c.probs ? o.probs.data() : nullptr;
    a.lse = c.lse ? o.lse.data() : nullptr;
    EXPECT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_OK)
        << (paged ? "paged: " : "contiguous: ") << host.last_error();
    return o;
  };
  const Outputs got = call(true, pool, pool_v);
  EXPECT_TRUE(pool == want) << "the K pool is not the expected one: appended rows misplaced or another row written";
  EXPECT_TRUE(pool_v == want_v) << "the V pool is not the expected one: appended rows misplaced or another row written";

  std::vector<float> got_out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Q; ++i)
        for (int64_t d = 0; d < D; ++d) got_out.push_back(got.out[size_t(b * q_sb + i * q_ss + h * D + d)]);
  EXPECT_LE(rel_error(got_out, ref_out), kF32Tol);
  if (c.probs) {
    EXPECT_LE(rel_error(got.probs, ref_probs), kF32Tol);
  }
  if (c.lse) {
    std::vector<float> finite_got;
    std::vector<double> finite_ref;
    for (size_t i = 0; i < ref_lse.size(); ++i)
      if (std::isinf(ref_lse[i])) {
        EXPECT_TRUE(std::isinf(got.lse[i]) && got.lse[i] < 0) << "lse[" << i << "] = " << got.lse[i] << ", want -inf";
      } else {
        finite_got.push_back(got.lse[i]);
        finite_ref.push_back(ref_lse[i]);
      }
    EXPECT_LE(rel_error(finite_got, finite_ref), kF32Tol);
  }

  // The contiguous cache holding the same rows: the same bits.
  const Outputs flat_got = call(false, flat, flat_v);
  auto same_bits = [](const std::vector<float> &x, const std::vector<float> &y) {
    return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0);
  };
  EXPECT_TRUE(same_bits(got.out, flat_got.out)) << "out differs from the contiguous cache's";
  EXPECT_TRUE(same_bits(got.probs, flat_got.probs)) << "probs differ from the contiguous cache's";
  EXPECT_TRUE(same_bits(got.lse, flat_got.lse)) << "lse differs from the contiguous cache's";
}

TEST(AttentionPaged, DecodeHeadDimsAndBlockSizes) {
  for (int64_t d : {64, 80, 128})
    for (int64_t bs : {1, 16, 32}) {
      PagedCase c;
      c.head_dim = d, c.block_size = bs;
      run_paged(c);
    }
}

TEST(AttentionPaged, LongSequencesCrossKeyBlocks) {
  // 64-key blocks of the kernel straddle 48-key cache blocks; one sequence
  // is empty (zeros, lse -inf).
  for (int64_t bs : {1, 32, 48}) {
    PagedCase c;
    c.block_size = bs, c.lengths = {130, 0, 97}, c.heads = 4, c.kv_heads = 1;  // MQA
    run_paged(c);
  }
}

TEST(AttentionPaged, PrefillChunks) {
  // q_len > 1: causal rows see growing prefixes; a sequence shorter than the
  // chunk has rows that see nothing; q_len 20 spans three query blocks.
  for (uint32_t mask : {PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING, PARLEY_MASK_KEY_PADDING})
    for (int64_t q_len : {7, 20}) {
      PagedCase c;
      c.mask = mask, c.q_len = q_len, c.lengths = {40, 7, 3, 33}, c.head_dim = 80;
      run_paged(c);
    }
}

TEST(AttentionPaged, SlidingWindow) {
  // Windows inside one cache block, across blocks and across the kernel's
  // 64-key blocks; decoding, prefill chunks and the fused append; F16 / I8.
  for (int64_t window : {1, 5, 40, 90})
    for (int64_t q_len : {1, 20}) {
      PagedCase c;
      c.window = window, c.q_len = q_len, c.lengths = {130, 7, 0, 97}, c.block_size = 16, c.append = true;
      run_paged(c);
      c.kv_dtype = PARLEY_DTYPE_I8, c.block_size = 48;
      run_paged(c);
      c.kv_dtype = PARLEY_DTYPE_F16, c.shared_blocks = 0, c.head_major = true;
      run_paged(c);
    }
}

TEST(AttentionPaged, GroupedAndMultiQueryHeads) {
  for (int64_t kvh : {1, 2, 4, 8}) {
    PagedCase c;
    c.kv_heads = kvh, c.q_len = 3, c.head_major = kvh % 2 == 0;
    run_paged(c);
  }
}

TEST(AttentionPaged, SequencesShareReadOnlyPrefixBlocks) {
  for (bool append : {false, true})
    for (int64_t q_len : {1, 6}) {
      PagedCase c;
      c.shared_blocks = 2, c.lengths = {50, 45, 9}, c.append = append, c.q_len = q_len;
      run_paged(c);
      c.block_size = 1, c.shared_blocks = 30;
      run_paged(c);
    }
}

// A system prompt in the prefix cache: most sequences of a decode step (or
// of prefill chunks) read the same first blocks, here whole 64-key blocks
// of the kernel and part of the next one. Every output must equal the
// contiguous cache's bit for bit and the float64 reference within
// tolerance, without probs (a kernel may take other paths then). Head
// layouts with 3, 4 and 1 query heads per kv head, head_dim 64 / 128 / 80,
// F32 / F16 / I8, block sizes 16 and 5, with and without the fused append,
// 1 and 3 threads, decode and 20-row chunks.
TEST(AttentionPaged, ManySequencesSharePrefixBlocks) {
  struct H {
    int64_t heads, kv_heads, d;
  };
  for (H h : {H{9, 3, 64}, H{8, 2, 128}, H{4, 4, 64}, H{8, 2, 80}})
    for (int32_t dt : {PARLEY_DTYPE_F32, PARLEY_DTYPE_F16, PARLEY_DTYPE_I8})
      for (int64_t bs : {16, 5})
        for (int64_t q_len : {1, 20}) {
          PagedCase c;
          c.heads = h.heads, c.kv_heads = h.kv_heads, c.head_dim = h.d, c.kv_dtype = dt, c.block_size = bs;
          c.q_len = q_len, c.probs = false, c.append = (bs == 5), c.threads = bs == 5 ? 1 : 3;
          c.lengths = {250, 197, 231, 170, 250, 188, 245, 171, 220, 199, 175, 240, 9};
          c.shared_blocks = 130 / bs, c.sharers = 11;  // all but the last (9 keys)
          run_paged(c);
        }
}

TEST(AttentionPaged, FusedAppendWritesIntoBlocks) {
  for (int64_t bs : {1, 16})
    for (int64_t q_len : {1, 5})
      for (bool head_major : {false, true}) {
        PagedCase c;
        c.append = true, c.block_size = bs, c.q_len = q_len, c.head_major = head_major;
        c.lengths = {37, 16, 3, 70};  // 3 < q_len: rows below position 0 are not stored
        run_paged(c);
      }
}

TEST(AttentionPaged, HalfAndInt8Caches) {
  for (int32_t dt : {PARLEY_DTYPE_F16, PARLEY_DTYPE_I8})
    for (bool append : {false, true}) {
      SCOPED_TRACE(dt == PARLEY_DTYPE_F16 ? "F16 cache" : "I8 cache");
      PagedCase c;
      c.kv_dtype = dt, c.append = append;
      run_paged(c);
      c.q_len = 7, c.block_size = 32, c.head_dim = 128, c.head_major = true, c.lengths = {100, 9, 64};
      run_paged(c);
      c.block_size = 1, c.shared_blocks = 5, c.head_dim = 80, c.q_len = 4;
      run_paged(c);
      // Cache blocks of 48 keys: the kernel's 64-key blocks start inside them.
      c.block_size = 48, c.shared_blocks = 1, c.lengths = {150, 130, 20}, c.q_len = 3;
      run_paged(c);
    }
}

TEST(AttentionPaged, OptionalOutputsAndThreads) {
  for (int threads : {0, 1, 3})
    for (int opt = 0; opt < 4; ++opt) {
      PagedCase c;
      c.probs = opt & 1, c.lse = opt & 2, c.threads = threads, c.q_len = 2, c.append = opt == 3;
      run_paged(c);
    }
}

TEST(AttentionPaged, KernelDeclaresPagedKv) {
  const parley_plugin_desc *d = parley_cpu_plugin_entry(PARLEY_PLUGIN_ABI_VERSION, nullptr);
  ASSERT_NE(d, nullptr);
  int found = 0;
  for (size_t i = 0; i < d->num_kernels; ++i)
    if (d->kernels[i].op == PARLEY_OP_ATTENTION) {
      ++found;
      EXPECT_NE(d->kernels[i].flags & PARLEY_KERNEL_FLAG_KV_PAGED, 0u) << d->kernels[i].name;
    }
  EXPECT_EQ(found, 1);
}

// A small valid paged call: 2 sequences of 5 and 3 keys in blocks of 2.
struct Misuse {
  TestHost host{1};
  std::vector<float> q = std::vector<float>(2 * 8, 0.5f), out = std::vector<float>(2 * 8, 0.f);
  std::vector<float> pool = std::vector<float>(6 * 2 * 8, 0.25f);
  std::vector<int32_t> lengths = {5, 3}, table = {4, 0, 2, 5, 1, -1};
  parley_attention_args a{};
  Misuse() {
    a.struct_size = sizeof a;
    a.dtype = PARLEY_DTYPE_F32;
    a.batch = 2, a.num_heads = 1, a.num_kv_heads = 1, a.q_len = 1, a.kv_len = 0, a.head_dim = 8;
    a.q = q.data(), a.q_stride_batch = 8, a.q_stride_seq = 8;
    a.out = out.data(), a.out_stride_batch = 8, a.out_stride_seq = 8;
    a.k = a.v = pool.data(), a.k_stride_batch = a.v_stride_batch = 16, a.k_stride_seq = a.v_stride_seq = 8;
    a.scale = 1.f;
    a.mask = PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING;
    a.key_lengths = lengths.data();
    a.block_table = table.data(), a.block_table_stride = 3, a.block_size = 2;
  }
  // Expects INVALID_ARGUMENT with `what` in the message, and out untouched.
  void refused(const char *what) {
    std::fill(out.begin(), out.end(), -7.f);
    host.clear_error();
    EXPECT_EQ(find_kernel(PARLEY_OP_ATTENTION)(host.context(), &a), PARLEY_KERNEL_INVALID_ARGUMENT) << what;
    EXPECT_NE(host.last_error().find(what), std::string::npos) << host.last_error();
    for (float o : out) EXPECT_EQ(o, -7.f);
  }
};

TEST(AttentionPaged, MisuseIsRefusedNamingTheField) {
  {
    Misuse m;
    ASSERT_EQ(find_kernel(PARLEY_OP_ATTENTION)(m.host.context(), &m.a), PARLEY_KERNEL_OK) << m.host.last_error();
    for (float o : m.out) EXPECT_FLOAT_EQ(o, 0.25f);  // the valid call it is varied from
  }
  {
    Misuse m;
    m.a.mask = PARLEY_MASK_CAUSAL;
    m.refused("KEY_PADDING");
  }
  for (int64_t bad : {0, -2}) {
    Misuse m;
    m.a.block_size = bad;
    m.refused("block_size");
  }
  {
    Misuse m;
    m.a.block_table_stride = 2;  // 5 keys in blocks of 2 need 3 entries
    m.refused("block_table_stride");
  }
  for (size_t at : {size_t{1}, size_t{4}}) {  // each sequence's last needed block
    Misuse m;
    m.table[at] = -3;
    m.refused(at == 1 ? "block_table[1] = -3" : "block_table[4] = -3");
  }
  {
    Misuse m;
    m.a.block_table = nullptr;  // a paged call whose table went missing
    m.refused("block_table is NULL");
  }
  {
    Misuse m;
    m.lengths[1] = -1;
    m.refused("key_lengths[1]");
  }
  {
    Misuse m;
    std::vector<float> probs(2 * 5);
    m.a.probs = probs.data(), m.a.kv_len = 4;  // probs rows narrower than 5 keys
    m.refused("kv_len");
  }
  {
    Misuse m;
    m.a.k_stride_seq = 4;  // rows of a block overlap
    m.refused("k_stride_seq");
  }
  {
    // An entry past a sequence's blocks is not looked at (table[5] = -1),
    // nor is the table of an ABI 1.2-sized struct (then key_lengths are
    // checked against kv_len).
    Misuse m;
    m.a.struct_size = PARLEY_ATTENTION_ARGS_SIZE_V1_2;
    m.refused("kv_len=0");
  }
}

}  // namespace
}  // namespace parley::test
