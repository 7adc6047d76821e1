// The tensor-core prefill attention (plugins/cuda/attention/mma_attention.cuh)
// under the SIMT emulator vs the cpu plugin's attention on the same
// (16-bit-rounded) inputs: every mask kind, head dims 64 and 128, GQA,
// q_len != kv_len, ragged key lengths, fp16 and bf16, sliding windows (with
// the K/V tiles before each sequence's first window poisoned: they must not
// be loaded). Tolerance 1e-2 relative (ENGINEERING.md for 16-bit data: P and
// the output are rounded to 16 bits).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "../common/gtest_seed.h"
#include "cpu_reference.hpp"
#include "mma_attention.cuh"
#include "rel_error.hpp"
#include "simt_emulator.hpp"

using namespace parley::cuda::attn;
using parley::simt::Ctx;
using parley::simt::Dim3;
using parley::simt::Emulator;
using parley::test::rel_error;

namespace {

struct Case {
  int batch = 2, heads = 4, kv_heads = 2, q_len = 20, kv_len = 37, dim = 64;
  uint32_t mask = 0;
  bool bf16 = false;
  std::vector<int32_t> key_lengths;
  // Sliding window (plugin ABI 1.4; needs mask & 1) and which K/V rows of
  // the kernel's input are NaN: kTilesBefore, the 16-key tiles wholly before
  // the first query's window (no CTA may load them); kRowsBefore, every row
  // before that window, including the masked rows of its first tile, which
  // the kernel loads (0 * NaN in P V: proof that the poison catches a load).
  int window = 0;
  enum Poison { kNone, kTilesBefore, kRowsBefore } poison = kTilesBefore;
  // fp32 queries and output over the fp16 cache (the kernel rounds the
  // queries), compared with the cpu plugin reading the same bits as an F16
  // cache (kv_dtype) with the unrounded queries.
  bool f32_q = false;
};

// Rows of sequence b whose K/V are poisoned (see Case::poison).
int poisoned_rows(const Case &c, int b) {
  if (c.window <= 0 || c.poison == Case::kNone) return 0;
  const int L = c.mask & 2u ? c.key_lengths[size_t(b)] : c.kv_len;
  const int begin = std::max(0, L - c.q_len + 1 - c.window);  // the first query's first key
  return std::min(c.kv_len, c.poison == Case::kRowsBefore ? begin : begin / kMmaKeys * kMmaKeys);
}

float bits_to_float(uint16_t h, bool bf16) {
  return bf16 ? bf16_bits_to_float(h) : half_to_float(h);
}

struct Variant {
  bool async = true, swizzle = true;
};
uint64_t g_bank_conflicts = 0;

template <int D, bool kBf16, bool kAsync, bool kSwizzle, class QT = uint16_t>
void run_emulated(const Case &c, const std::vector<QT> &q, const std::vector<uint16_t> &k,
                  const std::vector<uint16_t> &v, std::vector<QT> &out, std::vector<float> &lse) {
  MmaParams p{};
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.out = out.data(), p.lse = lse.data();
  p.q_sb = int64_t{c.q_len} * c.heads * D, p.q_sh = D, p.q_ss = int64_t{c.heads} * D;
  p.o_sb = p.q_sb, p.o_sh = p.q_sh, p.o_ss = p.q_ss;
  p.k_sb = int64_t{c.kv_len} * c.kv_heads * D, p.k_sh = D, p.k_ss = int64_t{c.kv_heads} * D;
  p.v_sb = p.k_sb, p.v_sh = p.k_sh, p.v_ss = p.k_ss;
  p.batch = c.batch, p.heads = c.heads, p.kv_heads = c.kv_heads, p.q_len = c.q_len, p.kv_len = c.kv_len;
  p.scale = 1.f / std::sqrt(float(D));
  p.mask = c.mask;
  p.key_lengths = c.key_lengths.empty() ? nullptr : c.key_lengths.data();
  p.window = c.window;
  p.row_tiles = mma_row_tiles(c.heads, c.kv_heads, c.q_len);
  Emulator emu;
  emu.launch(Dim3{c.batch * c.kv_heads * p.row_tiles, 1, 1}, kMmaThreads, mma_smem_words<D>(),
             [&](Ctx &ctx) { mma_attention_prefill<Ctx, D, kBf16, kAsync, kSwizzle, QT>(ctx, p); });
  g_bank_conflicts += emu.bank_conflicts();
}

template <int D, bool kBf16>
void run_variant(const Variant &var, const Case &c, const std::vector<uint16_t> &q, const std::vector<uint16_t> &k,
                 const std::vector<uint16_t> &v, std::vector<uint16_t> &out, std::vector<float> &lse) {
  if (var.async && var.swizzle) run_emulated<D, kBf16, true, true>(c, q, k, v, out, lse);
  if (!var.async && var.swizzle) run_emulated<D, kBf16, false, true>(c, q, k, v, out, lse);
  if (var.async && !var.swizzle) run_emulated<D, kBf16, true, false>(c, q, k, v, out, lse);
  if (!var.async && !var.swizzle) run_emulated<D, kBf16, false, false>(c, q, k, v, out, lse);
}

// ref_window >= 0: the reference's window instead of c.window (a wrong-variant check).
double prefill_error(const Case &c, uint32_t seed, Variant var = {}, int ref_window = -1) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int D = c.dim;
  const size_t nq = size_t(c.batch) * c.q_len * c.heads * D, nk = size_t(c.batch) * c.kv_len * c.kv_heads * D;
  std::vector<uint16_t> q(nq), k(nk), v(nk), out(nq, 0x7FFF);
  std::vector<float> qf(nq), kf(nk), vf(nk), lse(size_t(c.batch) * c.heads * c.q_len, std::nanf(""));
  auto fill = [&](std::vector<uint16_t> &h, std::vector<float> &f) {
    for (size_t i = 0; i < h.size(); ++i) {
      h[i] = float_to_bits(nd(rng), c.bf16);
      f[i] = bits_to_float(h[i], c.bf16);
    }
  };
  fill(q, qf), fill(k, kf), fill(v, vf);
  const std::vector<uint16_t> k_clean = k, v_clean = v;  // the cpu plugin's F16 cache: never the poison
  const size_t row = size_t(c.kv_heads) * D;             // the reference below reads kf / vf, never the poison
  for (int b = 0; b < c.batch; ++b) {
    std::fill_n(k.begin() + size_t(b) * c.kv_len * row, poisoned_rows(c, b) * row, uint16_t{0x7FFF});
    std::fill_n(v.begin() + size_t(b) * c.kv_len * row, poisoned_rows(c, b) * row, uint16_t{0x7FFF});
  }
  std::vector<float> got(nq);
  if (c.f32_q) {  // fp16 cache (c.bf16 false), the queries unrounded
    std::vector<float> q32(nq), out32(nq, std::nanf(""));
    for (size_t i = 0; i < nq; ++i) q32[i] = qf[i] = nd(rng);
    if (D == 64)
      run_emulated<64, false, true, true, float>(c, q32, k, v, out32, lse);
    else
      run_emulated<128, false, true, true, float>(c, q32, k, v, out32, lse);
    got = out32;
  } else {
    if (D == 64) {
      c.bf16 ? run_variant<64, true>(var, c, q, k, v, out, lse) : run_variant<64, false>(var, c, q, k, v, out, lse);
    } else {
      c.bf16 ? run_variant<128, true>(var, c, q, k, v, out, lse) : run_variant<128, false>(var, c, q, k, v, out, lse);
    }
    for (size_t i = 0; i < nq; ++i) got[i] = bits_to_float(out[i], c.bf16);
  }

  // The cpu plugin on the same values in fp32.
  const auto want =
      parley::test::cpu_attention({c.batch, c.heads, c.kv_heads, c.q_len, c.kv_len, D, c.mask, &c.key_lengths,
                                   ref_window >= 0 ? ref_window : c.window},
                                  qf, kf, vf,
                                  /*with_probs=*/false, c.f32_q ? &k_clean : nullptr, c.f32_q ? &v_clean : nullptr);
  return std::max(rel_error(got, want.out), rel_error(lse, want.lse));
}

constexpr double kTol16 = 1e-2;

}  // namespace

TEST(SimtPrefill, TensorCoreAttentionMatchesCpuPlugin) {
  PARLEY_TRACE_BASE_SEED();
  for (bool bf16 : {false, true})
    for (int dim : {64, 128})
      for (uint32_t mask : {0u, 1u, 2u, 3u}) {
        Case c;
        c.bf16 = bf16, c.dim = dim, c.mask = mask;
        if (mask & 2u) c.key_lengths = {37, 13};
        EXPECT_LE(prefill_error(c, parley::test::case_seed()), kTol16)
            << "bf16 " << bf16 << " dim " << dim << " mask " << mask;
        c.q_len = 70, c.kv_len = 33, c.heads = 2, c.kv_heads = 1;  // two row tiles, q_len > kv_len
        if (mask & 2u) c.key_lengths = {33, 5};
        EXPECT_LE(prefill_error(c, parley::test::case_seed()), kTol16)
            << "q>kv bf16 " << bf16 << " dim " << dim << " mask " << mask;
      }
}

// fp32 queries over an fp16 cache (kv_cache_dtype F16 on cuda) against the
// cpu plugin reading the same bits as its F16 cache with the unrounded
// queries: the kernel's only extra rounding is the queries' (2^-11), inside
// the 16-bit tolerance. GQA packing (8 / 2 and 14 / 2 heads), decode and
// prefill chunks, every mask, both head dims, a window.
TEST(SimtPrefill, Fp32QueriesOverAnF16CacheMatchCpuPluginF16Cache) {
  PARLEY_TRACE_BASE_SEED();
  for (int dim : {64, 128})
    for (uint32_t mask : {0u, 1u, 2u, 3u}) {
      Case c;
      c.f32_q = true, c.dim = dim, c.mask = mask, c.heads = 8, c.kv_heads = 2;
      if (mask & 2u) c.key_lengths = {37, 13};
      EXPECT_LE(prefill_error(c, parley::test::case_seed()), kTol16) << "dim " << dim << " mask " << mask;
      c.q_len = 1, c.heads = 14;  // a decode step, G = 7
      EXPECT_LE(prefill_error(c, parley::test::case_seed()), kTol16) << "decode dim " << dim << " mask " << mask;
    }
  Case c;
  c.f32_q = true, c.mask = 3u, c.q_len = 5, c.key_lengths = {37, 13}, c.window = 21;
  EXPECT_LE(prefill_error(c, parley::test::case_seed()), kTol16);
}

TEST(SimtPrefill, PlainLoadsGiveTheSameResults) {
  PARLEY_TRACE_BASE_SEED();
  Case c;
  c.mask = 3u, c.key_lengths = {37, 13};
  EXPECT_LE(prefill_error(c, parley::test::case_seed(), Variant{false, true}), kTol16);
  c.dim = 128, c.bf16 = true, c.q_len = 70;
  EXPECT_LE(prefill_error(c, parley::test::case_seed(), Variant{false, true}), kTol16);
}

TEST(SimtPrefill, SwizzledSharedMemoryHasNoLdmatrixBankConflicts) {
  PARLEY_TRACE_BASE_SEED();
  for (int dim : {64, 128}) {
    const uint32_t seed = parley::test::case_seed();
    Case c;
    c.dim = dim;
    g_bank_conflicts = 0;
    EXPECT_LE(prefill_error(c, seed, Variant{true, true}), kTol16);
    EXPECT_EQ(g_bank_conflicts, 0u) << "dim " << dim;
    g_bank_conflicts = 0;  // the same kernel with the swizzle off: still correct, but conflicted
    EXPECT_LE(prefill_error(c, seed, Variant{true, false}), kTol16);
    EXPECT_GT(g_bank_conflicts, 0u) << "dim " << dim;
  }
}

// Sliding windows against the cpu plugin's windowed attention: smaller than,
// equal to and larger than the sequence, window starts on and off the 16-key
// tile bounds, a chunk over past keys (q_len < kv_len), two row tiles (the
// second CTA starts at its own first row's window), ragged lengths, fp16 and
// bf16, both head dims, cp.async and plain loads. The tiles wholly before
// each sequence's first window are NaN: loading them would fail.
TEST(SimtPrefill, SlidingWindow) {
  PARLEY_TRACE_BASE_SEED();
  for (bool bf16 : {false, true})
    for (int dim : {64, 128})
      for (int window : {1, 16, 21, 37, 50}) {
        Case c;  // a chunk of 5 queries over 37 / 13 keys
        c.bf16 = bf16, c.dim = dim, c.mask = 3u, c.q_len = 5, c.key_lengths = {37, 13}, c.window = window;
        EXPECT_LE(prefill_error(c, parley::test::case_seed()), kTol16)
            << "bf16 " << bf16 << " dim " << dim << " window " << window;
      }
  Case c;  // 70 queries over 100 / 60 keys: two row tiles, skipped tiles in both
  c.q_len = 70, c.kv_len = 100, c.heads = 2, c.kv_heads = 1, c.mask = 3u, c.key_lengths = {100, 60}, c.window = 17;
  EXPECT_LE(prefill_error(c, parley::test::case_seed()), kTol16);
  EXPECT_LE(prefill_error(c, parley::test::case_seed(), Variant{false, true}), kTol16);
  c.mask = 1u, c.key_lengths.clear(), c.bf16 = true, c.dim = 128, c.window = 32;  // prefill square-ish, no padding
  EXPECT_LE(prefill_error(c, parley::test::case_seed()), kTol16);
  c.q_len = 1, c.kv_len = 90, c.window = 40;  // a decode step through the tensor-core kernel
  EXPECT_LE(prefill_error(c, parley::test::case_seed()), kTol16);
}

// The checks can fail: windowed and full causal attention differ far beyond
// the tolerance on these inputs (so a kernel ignoring the window fails), and
// the poison catches a load of masked keys (the rows before the window inside
// its first tile, which this kernel does load, poisoned on purpose).
TEST(SimtPrefill, SlidingWindowChecksCanFail) {
  PARLEY_CASE_SEED(seed);
  Case c;
  c.mask = 3u, c.q_len = 4, c.key_lengths = {37, 30}, c.window = 21;  // first keys 13 and 6
  EXPECT_LE(prefill_error(c, seed), kTol16);
  EXPECT_GT(prefill_error(c, seed, Variant{}, /*ref_window=*/0), 1e-2) << "the window makes no difference here";
  c.poison = Case::kRowsBefore;
  EXPECT_FALSE(prefill_error(c, seed) <= kTol16) << "a load of poisoned (masked) rows went unnoticed";
}
