// The tensor-core primitives under the SIMT emulator: ldmatrix (.x1/.x2/.x4,
// .trans) and mma.sync m16n8k16 (fp16 and bf16) reproduce the PTX ISA
// fragment layouts, checked through the mma tile of
// plugins/cuda/attention/mma_tile.cuh (both B layouts of attention) against a
// float64 matrix product on random inputs; and the harness catches a wrong
// fragment register, a missing barrier and misaligned ldmatrix rows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "../common/gtest_seed.h"
#include "mma_tile.cuh"
#include "simt_emulator.hpp"

using namespace parley::cuda::attn;
using parley::simt::Ctx;
using parley::simt::Dim3;
using parley::simt::Emulator;
using parley::simt::SimtError;

namespace {

uint16_t to_half(float f) {  // fp16, round to nearest even (normal range is enough here)
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int exp = static_cast<int>((x >> 23) & 0xFF) - 127 + 15;
  const uint32_t mant = x & 0x7FFFFFu;
  if (exp <= 0) return static_cast<uint16_t>(sign);
  uint32_t h = (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}
uint16_t to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t rounding = 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + rounding) >> 16);
}
double from_bits(uint16_t h, bool bf16) {
  if (bf16) {
    uint32_t x = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
  return half_to_float(h);
}

enum class Fault { kNone, kSwapFragment, kDropBarrier };

template <Fault F>
struct TileCtx {
  Ctx &c;
  int thread() const { return c.thread(); }
  void sync() {
    if (F != Fault::kDropBarrier) c.sync();
  }
  uint32_t smem_load_u32(size_t i) { return c.smem_load_u32(i); }
  void smem_store_u32(size_t i, uint32_t v) { c.smem_store_u32(i, v); }
  void ldmatrix(uint32_t *r, int n, bool trans, size_t off) {
    c.ldmatrix(r, n, trans, off);
    if (F == Fault::kSwapFragment && n == 4) std::swap(r[1], r[2]);  // a2a3 <-> a4a5
  }
  void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float cc[4], bool bf16) {
    c.mma_m16n8k16(d, a, b, cc, bf16);
  }
};

// Max |got - want| / max|want| of one random tile.
template <Fault F, bool kBf16, bool kTransB>
double tile_error(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> a(256), b(128);
  for (auto &x : a) x = kBf16 ? to_bf16(nd(rng)) : to_half(nd(rng));
  for (auto &x : b) x = kBf16 ? to_bf16(nd(rng)) : to_half(nd(rng));
  std::vector<float> d(128, std::nanf(""));
  Emulator emu;
  emu.launch(Dim3{}, 32, kTileAWords + kTileBWords, [&](Ctx &ctx) {
    TileCtx<F> tc{ctx};
    mma_tile_16x8x16<TileCtx<F>, kBf16, kTransB>(tc, a.data(), b.data(), d.data());
  });
  double err = 0, scale = 0;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double want = 0;
      for (int k = 0; k < 16; ++k)
        want += from_bits(a[m * 16 + k], kBf16) * from_bits(kTransB ? b[k * 8 + n] : b[n * 16 + k], kBf16);
      if (!std::isfinite(d[m * 8 + n])) return INFINITY;
      err = std::max(err, std::abs(d[m * 8 + n] - want));
      scale = std::max(scale, std::abs(want));
    }
  return err / scale;
}

}  // namespace

TEST(SimtMma, TileMatchesFloat64ProductForBothOperandLayouts) {
  PARLEY_TRACE_BASE_SEED();
  for (int trial = 0; trial < 4; ++trial) {
    const uint32_t seed = parley::test::case_seed();
    EXPECT_LE((tile_error<Fault::kNone, false, false>(seed)), 1e-6) << "fp16, B = K [n][k], seed " << seed;
    EXPECT_LE((tile_error<Fault::kNone, false, true>(seed)), 1e-6) << "fp16, B = V [k][n] (.trans), seed " << seed;
    EXPECT_LE((tile_error<Fault::kNone, true, false>(seed)), 1e-6) << "bf16, seed " << seed;
    EXPECT_LE((tile_error<Fault::kNone, true, true>(seed)), 1e-6) << "bf16 .trans, seed " << seed;
  }
}

TEST(SimtMma, HarnessCatchesAWrongFragmentRegister) {
  PARLEY_CASE_SEED(seed);
  EXPECT_GT((tile_error<Fault::kSwapFragment, false, false>(seed)), 1e-2);
}

TEST(SimtMma, HarnessCatchesAMissingBarrier) {
  PARLEY_CASE_SEED(seed);
  EXPECT_THROW((tile_error<Fault::kDropBarrier, false, false>(seed)), SimtError);
}

TEST(SimtMma, LdmatrixLayoutsAndMisuse) {
  // An 8x8 matrix of b16 values v(r, c) = 100 r + c at word 0: lane t gets
  // (t/4, 2(t%4)) and (t/4, 2(t%4)+1); with .trans (2(t%4), t/4), (2(t%4)+1, t/4).
  Emulator emu;
  std::vector<uint32_t> plain(32), trans(32);
  emu.launch(Dim3{}, 32, 32, [&](Ctx &ctx) {
    const int t = ctx.thread();
    const int r = t / 4, c = (t % 4) * 2;
    ctx.smem_store_u32(static_cast<size_t>(t),
                       static_cast<uint32_t>(100 * r + c) | (static_cast<uint32_t>(100 * r + c + 1) << 16));
    ctx.sync();
    uint32_t x;
    ctx.ldmatrix(&x, 1, false, static_cast<size_t>((t % 8) * 16));
    plain[t] = x;
    ctx.ldmatrix(&x, 1, true, static_cast<size_t>((t % 8) * 16));
    trans[t] = x;
  });
  for (int t = 0; t < 32; ++t) {
    const uint32_t r = t / 4, c = (t % 4) * 2;
    EXPECT_EQ(plain[t], (100 * r + c) | ((100 * r + c + 1) << 16)) << t;
    EXPECT_EQ(trans[t], (100 * c + r) | ((100 * (c + 1) + r) << 16)) << t;
  }
  // Misaligned row address, and a warp whose lanes disagree on the shape.
  EXPECT_THROW(emu.launch(Dim3{}, 32, 64,
                          [](Ctx &ctx) {
                            ctx.smem_store_u32(static_cast<size_t>(ctx.thread()), 0);
                            ctx.sync();
                            uint32_t x;
                            ctx.ldmatrix(&x, 1, false, 8);
                          }),
               SimtError);
  EXPECT_THROW(emu.launch(Dim3{}, 32, 64,
                          [](Ctx &ctx) {
                            ctx.smem_store_u32(static_cast<size_t>(ctx.thread()), 0);
                            ctx.sync();
                            uint32_t x[2];
                            ctx.ldmatrix(x, ctx.thread() < 16 ? 1 : 2, false, 0);
                          }),
               SimtError);
}
