// The tensor-core prefill attention (plugins/cuda/attention/mma_attention.cuh)
// under the SIMT emulator vs the cpu plugin's attention on the same
// (16-bit-rounded) inputs: every mask kind, head dims 64 and 128, GQA,
// q_len != kv_len, ragged key lengths, fp16 and bf16. Tolerance 1e-2 relative
// (ENGINEERING.md for 16-bit data: P and the output are rounded to 16 bits).
#include <gtest/gtest.h>

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
};

float bits_to_float(uint16_t h, bool bf16) {
  return bf16 ? bf16_bits_to_float(h) : half_to_float(h);
}

struct Variant {
  bool async = true, swizzle = true;
};
uint64_t g_bank_conflicts = 0;

template <int D, bool kBf16, bool kAsync, bool kSwizzle>
void run_emulated(const Case &c, const std::vector<uint16_t> &q, const std::vector<uint16_t> &k,
                  const std::vector<uint16_t> &v, std::vector<uint16_t> &out, std::vector<float> &lse) {
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
  p.row_tiles = ceil_div(c.q_len, kMmaRows);
  Emulator emu;
  emu.launch(Dim3{c.batch * c.heads * p.row_tiles, 1, 1}, kMmaThreads, mma_smem_words<D>(),
             [&](Ctx &ctx) { mma_attention_prefill<Ctx, D, kBf16, kAsync, kSwizzle>(ctx, p); });
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

double prefill_error(const Case &c, uint32_t seed, Variant var = {}) {
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
  if (D == 64) {
    c.bf16 ? run_variant<64, true>(var, c, q, k, v, out, lse) : run_variant<64, false>(var, c, q, k, v, out, lse);
  } else {
    c.bf16 ? run_variant<128, true>(var, c, q, k, v, out, lse) : run_variant<128, false>(var, c, q, k, v, out, lse);
  }
  std::vector<float> got(nq);
  for (size_t i = 0; i < nq; ++i) got[i] = bits_to_float(out[i], c.bf16);

  // The cpu plugin on the same values in fp32.
  const auto want = parley::test::cpu_attention(
      {c.batch, c.heads, c.kv_heads, c.q_len, c.kv_len, D, c.mask, &c.key_lengths}, qf, kf, vf, /*with_probs=*/false);
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
