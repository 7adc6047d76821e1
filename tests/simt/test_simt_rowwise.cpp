// The CUDA plugin's row- and element-wise bodies (plugins/cuda/rowwise/
// rowwise_body.cuh: LayerNorm / RMSNorm with and without a fused residual,
// rotary in both layouts, gated activation, add, embedding from F32 and I8
// tables) run on the CPU under the SIMT emulator and are compared with the
// cpu plugin's F32 kernels on the same inputs.
//
// F32 activations: relative error <= 1e-5 (ENGINEERING.md): both sides sum
// the same float terms in different orders (norm reductions over <= 1000
// columns: sqrt(n) * 2^-24 ~ 2e-6), sin/cos differ by an ulp.
// F16 activations: the inputs are F16 values, the reference is the cpu
// plugin's F32 result rounded to F16 (round to nearest even), which is what
// the F16 contract (plugin.h) asks for. The body's float result differs from
// the cpu plugin's by ~1e-6 relative, so after rounding both to F16 they are
// equal or, next to a rounding boundary, one F16 ulp apart: every element
// must be within 1 ulp, and most must be equal.
// Outputs start poisoned (NaN) so an unwritten element fails; the harness
// is shown to fail with a dropped barrier and a wrong shuffle lane.
#include <gtest/gtest.h>
#include <parley/plugin.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "../common/gtest_seed.h"
#include "../kernels/test_host.h"
#include "fault_ctx.hpp"
#include "rel_error.hpp"
#include "rowwise_body.cuh"
#include "simt_emulator.hpp"

using namespace parley::cuda::row;
using parley::cuda::attn::float_to_bits;
using parley::cuda::attn::half_to_float;
using parley::simt::Ctx;
using parley::simt::Dim3;
using parley::simt::Emulator;
using parley::simt::SimtError;
using parley::test::find_kernel;
using parley::test::rel_error;
using parley::test::TestHost;

namespace {

constexpr double kTolF32 = 1e-5;
constexpr uint16_t kPoison16 = 0x7E00;  // a quiet NaN half

uint16_t to_half(float v) {
  return float_to_bits(v, false);
}
float round16(float v) {
  return half_to_float(to_half(v));
}

// F16 results against F32 references rounded to F16: the largest distance
// in F16 ulps (NaN or an unwritten element: a huge number), and how many differ.
struct UlpReport {
  int max_ulps = 0;
  size_t differing = 0;
};
UlpReport ulps(const std::vector<uint16_t> &got, const std::vector<float> &want) {
  UlpReport r;
  for (size_t i = 0; i < want.size(); ++i) {
    const uint16_t w = to_half(want[i]), g = got[i];
    if ((g & 0x7C00) == 0x7C00 && (g & 0x3FF)) return {1 << 20, want.size()};  // NaN
    // Ordered integer views (sign-magnitude to two's complement order).
    auto ord = [](uint16_t h) { return (h & 0x8000) ? -static_cast<int>(h & 0x7FFF) : static_cast<int>(h); };
    const int d = std::abs(ord(g) - ord(w));
    r.max_ulps = std::max(r.max_ulps, d);
    r.differing += d != 0;
  }
  return r;
}

std::vector<float> random_vec(std::mt19937 &rng, size_t n, float lo, float hi, bool f16_exact) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float &x : v) x = f16_exact ? round16(u(rng)) : u(rng);
  return v;
}
std::vector<uint16_t> halves(const std::vector<float> &v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = to_half(v[i]);
  return h;
}

// Runs body(ctx) over `grid` CTAs of `threads` threads with the norm's
// shared memory (the element-wise bodies use none).
template <class Body>
void run(Body &&body, int64_t grid, int threads, size_t smem_words = 0) {
  Emulator emu;
  emu.launch(Dim3{static_cast<int>(grid), 1, 1}, threads, smem_words, [&](Ctx &ctx) { body(ctx); });
}

// ---------------------------------------------------------------- norms
struct NormCase {
  bool rms;
  int64_t rows, cols;
  bool residual, residual_out, beta;
};

// The cpu plugin's norm on float inputs (x, residual).
std::vector<float> cpu_norm(const NormCase &c, const std::vector<float> &x, const std::vector<float> &res,
                            const std::vector<float> &gamma, const std::vector<float> &beta, float eps,
                            std::vector<float> *res_out) {
  TestHost host(1);
  std::vector<float> out(x.size(), std::nanf(""));
  parley_norm_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.rows = c.rows, a.cols = c.cols;
  a.x = x.data(), a.ld_x = c.cols;
  if (c.residual) {
    a.residual = res.data(), a.ld_residual = c.cols;
    if (c.residual_out) a.residual_out = res_out->data(), a.ld_residual_out = c.cols;
  }
  a.gamma = gamma.data();
  a.beta = c.beta ? beta.data() : nullptr;
  a.eps = eps;
  a.out = out.data(), a.ld_out = c.cols;
  EXPECT_EQ(find_kernel(c.rms ? PARLEY_OP_RMS_NORM : PARLEY_OP_LAYER_NORM)(host.context(), &a), PARLEY_KERNEL_OK)
      << host.last_error();
  return out;
}

template <class T, class Ctx_>
void emulated_norm(const NormCase &c, const void *x, const void *res, void *res_out, const std::vector<float> &gamma,
                   const std::vector<float> &beta, float eps, void *out, int64_t grid) {
  NormParams p{};
  p.x = x, p.res = c.residual ? res : nullptr, p.res_out = c.residual && c.residual_out ? res_out : nullptr;
  p.out = out;
  p.gamma = gamma.data(), p.beta = c.beta && !c.rms ? beta.data() : nullptr;
  p.rows = c.rows, p.cols = c.cols, p.ld_x = p.ld_res = p.ld_res_out = p.ld_out = c.cols;
  p.eps = eps, p.rms = c.rms, p.grid = grid;
  run(
      [&](Ctx &ctx) {
        Ctx_ f{ctx};
        norm_rows<Ctx_, T>(f, p);
      },
      grid, kRowThreads, kRowSmemWords);
}

template <class T>
void emulated_norm_plain(const NormCase &c, const void *x, const void *res, void *res_out,
                         const std::vector<float> &gamma, const std::vector<float> &beta, float eps, void *out,
                         int64_t grid) {
  NormParams p{};
  p.x = x, p.res = c.residual ? res : nullptr, p.res_out = c.residual && c.residual_out ? res_out : nullptr;
  p.out = out;
  p.gamma = gamma.data(), p.beta = c.beta && !c.rms ? beta.data() : nullptr;
  p.rows = c.rows, p.cols = c.cols, p.ld_x = p.ld_res = p.ld_res_out = p.ld_out = c.cols;
  p.eps = eps, p.rms = c.rms, p.grid = grid;
  run([&](Ctx &ctx) { norm_rows<Ctx, T>(ctx, p); }, grid, kRowThreads, kRowSmemWords);
}

const NormCase kNormCases[] = {
    {false, 3, 300, false, false, true},   // LayerNorm with beta, cols not a multiple of 256
    {false, 5, 64, false, false, false},   // LayerNorm without beta, fewer columns than threads
    {true, 4, 1000, false, false, false},  // RMSNorm, several columns per thread
    {true, 3, 257, true, true, false},     // RMSNorm with a residual written to residual_out
    {false, 2, 130, true, false, true},    // LayerNorm with the residual sum in out
};

TEST(SimtRowwise, NormF32MatchesTheCpuPlugin) {
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  for (const NormCase &c : kNormCases) {
    const size_t n = static_cast<size_t>(c.rows * c.cols);
    auto x = random_vec(rng, n, -3.f, 3.f, false), res = random_vec(rng, n, -1.f, 1.f, false);
    auto gamma = random_vec(rng, static_cast<size_t>(c.cols), 0.5f, 1.5f, false);
    auto beta = random_vec(rng, static_cast<size_t>(c.cols), -0.5f, 0.5f, false);
    std::vector<float> want_res(n, std::nanf(""));
    const auto want = cpu_norm(c, x, res, gamma, beta, 1e-5f, &want_res);
    std::vector<float> got(n, std::nanf("")), got_res(n, std::nanf(""));
    emulated_norm_plain<float>(c, x.data(), res.data(), got_res.data(), gamma, beta, 1e-5f, got.data(),
                               c.rows > 2 ? 2 : 1);  // fewer CTAs than rows: the grid-stride loop
    const double e = rel_error(got, want);
    std::printf("norm f32 rms=%d %lldx%lld residual=%d: rel error %.3g\n", c.rms, (long long)c.rows, (long long)c.cols,
                c.residual, e);
    EXPECT_LE(e, kTolF32);
    if (c.residual && c.residual_out) {
      EXPECT_LE(rel_error(got_res, want_res), kTolF32);
    }
  }
}

TEST(SimtRowwise, NormF16IsTheF32ResultRounded) {
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  for (const NormCase &c : kNormCases) {
    const size_t n = static_cast<size_t>(c.rows * c.cols);
    auto x = random_vec(rng, n, -3.f, 3.f, true), res = random_vec(rng, n, -1.f, 1.f, true);
    auto gamma = random_vec(rng, static_cast<size_t>(c.cols), 0.5f, 1.5f, false);  // float parameters
    auto beta = random_vec(rng, static_cast<size_t>(c.cols), -0.5f, 0.5f, false);
    // The F16 kernel normalises the stored (rounded) sum x + r: so does the reference.
    std::vector<float> x_ref = x;
    std::vector<float> want_res(n, std::nanf(""));
    NormCase ref_case = c;
    if (c.residual) {
      for (size_t i = 0; i < n; ++i) want_res[i] = round16(x[i] + res[i]), x_ref[i] = want_res[i];
      ref_case.residual = false;
    }
    const auto want = cpu_norm(ref_case, x_ref, res, gamma, beta, 1e-5f, nullptr);
    auto xh = halves(x), rh = halves(res);
    std::vector<uint16_t> got(n, kPoison16), got_res(n, kPoison16);
    emulated_norm_plain<uint16_t>(c, xh.data(), rh.data(), got_res.data(), gamma, beta, 1e-5f, got.data(),
                                  c.rows > 2 ? 2 : 1);
    const UlpReport r = ulps(got, want);
    std::printf("norm f16 rms=%d %lldx%lld residual=%d: max %d ulp, %zu of %zu differ from the rounded f32\n", c.rms,
                (long long)c.rows, (long long)c.cols, c.residual, r.max_ulps, r.differing, n);
    EXPECT_LE(r.max_ulps, 1);
    EXPECT_LE(r.differing, n / 20) << "more than 5% off by an ulp: not the F32 result rounded once";
    if (c.residual && c.residual_out) {
      EXPECT_EQ(ulps(got_res, want_res).max_ulps, 0) << "the stored sum";
    }
  }
}

// ---------------------------------------------------------------- rotary
struct RotaryCase {
  int64_t batch, seq, heads, head_dim, rotary_dim;
  bool interleaved;
};

std::vector<float> cpu_rotary(const RotaryCase &c, std::vector<float> x, const std::vector<int32_t> &pos,
                              const std::vector<float> &inv_freq) {
  TestHost host(1);
  parley_rotary_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = c.batch, a.seq = c.seq, a.heads = c.heads, a.head_dim = c.head_dim, a.rotary_dim = c.rotary_dim;
  a.x = x.data();
  a.stride_batch = c.seq * c.heads * c.head_dim, a.stride_seq = c.heads * c.head_dim, a.stride_head = c.head_dim;
  a.positions = pos.data(), a.inv_freq = inv_freq.data();
  a.interleaved = c.interleaved, a.attention_factor = 1.f;
  EXPECT_EQ(find_kernel(PARLEY_OP_ROTARY)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
  return x;
}

template <class T>
void emulated_rotary(const RotaryCase &c, T *x, const std::vector<int32_t> &pos, const std::vector<float> &inv_freq) {
  RotaryParams p{};
  p.x = x, p.positions = pos.data(), p.inv_freq = inv_freq.data();
  p.batch = c.batch, p.seq = c.seq, p.heads = c.heads, p.half = c.rotary_dim / 2;
  p.stride_batch = c.seq * c.heads * c.head_dim, p.stride_seq = c.heads * c.head_dim, p.stride_head = c.head_dim;
  p.interleaved = c.interleaved, p.attention_factor = 1.f;
  p.grid = 2;
  run([&](Ctx &ctx) { rotary<Ctx, T>(ctx, p); }, p.grid, kElemThreads);
}

TEST(SimtRowwise, RotaryMatchesTheCpuPluginInBothLayoutsAndDtypes) {
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  const RotaryCase cases[] = {{2, 5, 3, 64, 64, false}, {1, 7, 2, 64, 32, true}, {2, 3, 4, 128, 96, false}};
  for (const RotaryCase &c : cases) {
    const size_t n = static_cast<size_t>(c.batch * c.seq * c.heads * c.head_dim);
    std::vector<int32_t> pos(static_cast<size_t>(c.batch * c.seq));
    for (auto &q : pos) q = static_cast<int32_t>(rng() % 5000);  // large angles: the range reduction
    std::vector<float> inv_freq(static_cast<size_t>(c.rotary_dim / 2));
    for (size_t i = 0; i < inv_freq.size(); ++i)
      inv_freq[i] = 1.f / std::pow(10000.f, 2.f * float(i) / float(c.rotary_dim));
    auto x = random_vec(rng, n, -2.f, 2.f, true);
    const auto want = cpu_rotary(c, x, pos, inv_freq);
    std::vector<float> got = x;
    emulated_rotary<float>(c, got.data(), pos, inv_freq);
    const double e = rel_error(got, want);
    auto xh = halves(x);
    emulated_rotary<uint16_t>(c, xh.data(), pos, inv_freq);
    const UlpReport r = ulps(xh, want);
    std::printf("rotary %s rot %lld/%lld: f32 rel error %.3g; f16 max %d ulp, %zu of %zu differ\n",
                c.interleaved ? "interleaved" : "halves", (long long)c.rotary_dim, (long long)c.head_dim, e, r.max_ulps,
                r.differing, n);
    EXPECT_LE(e, kTolF32);
    EXPECT_LE(r.max_ulps, 1);
    EXPECT_LE(r.differing, n / 20);
  }
}

// ------------------------------------------- gated activation, add, embedding
TEST(SimtRowwise, GatedActivationAndAddMatchTheCpuPlugin) {
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  const int64_t rows = 3, cols = 301, n = rows * cols;
  for (int act : {PARLEY_ACT_SILU, PARLEY_ACT_GELU_TANH, PARLEY_ACT_GELU_ERF, PARLEY_ACT_RELU}) {
    auto gate = random_vec(rng, size_t(n), -4.f, 4.f, true), up = random_vec(rng, size_t(n), -2.f, 2.f, true);
    TestHost host(1);
    std::vector<float> want(size_t(n), std::nanf(""));
    parley_gated_activation_args a{};
    a.struct_size = sizeof a;
    a.dtype = PARLEY_DTYPE_F32, a.activation = act, a.rows = rows, a.cols = cols;
    a.gate = gate.data(), a.ld_gate = cols, a.up = up.data(), a.ld_up = cols, a.out = want.data(), a.ld_out = cols;
    ASSERT_EQ(find_kernel(PARLEY_OP_GATED_ACTIVATION)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
    GatedParams p{};
    p.rows = rows, p.cols = cols, p.ld_gate = p.ld_up = p.ld_out = cols, p.act = act, p.grid = 2;
    std::vector<float> got(size_t(n), std::nanf(""));
    p.gate = gate.data(), p.up = up.data(), p.out = got.data();
    run([&](Ctx &ctx) { gated<Ctx, float>(ctx, p); }, p.grid, kElemThreads);
    auto gh = halves(gate), uh = halves(up);
    std::vector<uint16_t> got16(size_t(n), kPoison16);
    p.gate = gh.data(), p.up = uh.data(), p.out = got16.data();
    run([&](Ctx &ctx) { gated<Ctx, uint16_t>(ctx, p); }, p.grid, kElemThreads);
    const UlpReport r = ulps(got16, want);
    std::printf("gated activation %d: f32 rel error %.3g; f16 max %d ulp, %zu of %lld differ\n", act,
                rel_error(got, want), r.max_ulps, r.differing, (long long)n);
    EXPECT_LE(rel_error(got, want), kTolF32);
    EXPECT_LE(r.max_ulps, 1);
  }
  // add, in place as the runtime calls it (out == a), alpha 1 and not.
  for (float alpha : {1.f, -0.5f}) {
    auto x = random_vec(rng, size_t(n), -8.f, 8.f, true), y = random_vec(rng, size_t(n), -8.f, 8.f, true);
    std::vector<float> want(static_cast<size_t>(n));
    for (size_t i = 0; i < want.size(); ++i) want[i] = alpha * x[i] + y[i];
    AddParams p{};
    p.n = n, p.alpha = alpha, p.grid = 1;
    std::vector<float> got = x;
    p.a = p.out = got.data(), p.b = y.data();
    run([&](Ctx &ctx) { add<Ctx, float>(ctx, p); }, p.grid, kElemThreads);
    EXPECT_EQ(rel_error(got, want), 0.0) << "alpha " << alpha;
    auto xh = halves(x), yh = halves(y);
    p.a = p.out = xh.data(), p.b = yh.data();
    run([&](Ctx &ctx) { add<Ctx, uint16_t>(ctx, p); }, p.grid, kElemThreads);
    EXPECT_EQ(ulps(xh, want).max_ulps, 0) << "one exact float operation, rounded once (alpha " << alpha << ")";
  }
}

TEST(SimtRowwise, EmbeddingFromF32AndI8TablesWithABadId) {
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  const int64_t vocab = 11, dim = 70, count = 6;
  auto table = random_vec(rng, size_t(vocab * dim), -1.f, 1.f, false);
  std::vector<int8_t> table8(size_t(vocab * dim));
  for (auto &q : table8) q = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  auto scales = random_vec(rng, size_t(vocab), 0.001f, 0.05f, false);
  const std::vector<int32_t> ids = {3, 0, 10, 7, 3, 1};
  for (bool i8 : {false, true}) {
    std::vector<float> want(size_t(count * dim));
    for (int64_t r = 0; r < count; ++r)
      for (int64_t j = 0; j < dim; ++j) {
        const int64_t at = ids[size_t(r)] * dim + j;
        want[size_t(r * dim + j)] =
            i8 ? float(table8[size_t(at)]) * (scales[size_t(ids[size_t(r)])] * 2.f) : table[size_t(at)] * 2.f;
      }
    EmbeddingParams p{};
    int bad = 0;
    p.ids = ids.data(), p.table = i8 ? static_cast<const void *>(table8.data()) : table.data();
    p.row_scales = scales.data(), p.bad_id = &bad;
    p.count = count, p.vocab = vocab, p.dim = dim, p.ld_out = dim, p.scale = 2.f, p.i8 = i8, p.grid = 1;
    std::vector<float> got(want.size(), std::nanf(""));
    p.out = got.data();
    run([&](Ctx &ctx) { embedding<Ctx, float>(ctx, p); }, p.grid, kElemThreads);
    EXPECT_EQ(rel_error(got, want), 0.0) << (i8 ? "i8" : "f32");
    std::vector<uint16_t> got16(want.size(), kPoison16);
    p.out = got16.data();
    run([&](Ctx &ctx) { embedding<Ctx, uint16_t>(ctx, p); }, p.grid, kElemThreads);
    EXPECT_EQ(ulps(got16, want).max_ulps, 0) << (i8 ? "i8" : "f32");
    EXPECT_EQ(bad, 0);
  }
  // An id outside the table: zeros and the flag.
  const std::vector<int32_t> bad_ids = {2, 11};
  EmbeddingParams p{};
  int bad = 0;
  std::vector<uint16_t> out(size_t(2 * dim), kPoison16);
  p.ids = bad_ids.data(), p.table = table.data(), p.bad_id = &bad, p.out = out.data();
  p.count = 2, p.vocab = vocab, p.dim = dim, p.ld_out = dim, p.scale = 1.f, p.grid = 1;
  run([&](Ctx &ctx) { embedding<Ctx, uint16_t>(ctx, p); }, p.grid, kElemThreads);
  EXPECT_EQ(bad, 1);
  for (int64_t j = 0; j < dim; ++j) EXPECT_EQ(out[size_t(dim + j)], 0) << j;
}

// ---------------------------------------------------------------- BF16
// The same bodies with T = Bf16: each output the cpu plugin's F32 result
// rounded to BF16, within one BF16 ulp (in practice equal).
uint16_t to_bf16(float v) {
  return float_to_bits(v, true);
}
float round_bf16(float v) {
  return parley::cuda::attn::bf16_bits_to_float(to_bf16(v));
}
int bf16_ulps(const std::vector<Bf16> &got, const std::vector<float> &want, size_t *differing) {
  int worst = 0;
  *differing = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const uint16_t w = to_bf16(want[i]), g = got[i].bits;
    if ((g & 0x7F80) == 0x7F80 && (g & 0x7F)) return 1 << 20;  // NaN (the poison)
    auto ord = [](uint16_t h) { return (h & 0x8000) ? -static_cast<int>(h & 0x7FFF) : static_cast<int>(h); };
    const int d = std::abs(ord(g) - ord(w));
    worst = std::max(worst, d);
    *differing += d != 0;
  }
  return worst;
}
std::vector<Bf16> bf16s(const std::vector<float> &v) {
  std::vector<Bf16> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i].bits = to_bf16(v[i]);
  return h;
}
std::vector<float> bf16_exact(std::vector<float> v) {
  for (float &x : v) x = round_bf16(x);
  return v;
}
constexpr Bf16 kPoisonBf16{0x7FC0};

TEST(SimtRowwise, Bf16BodiesAreTheF32ResultRounded) {
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  size_t differ = 0;
  // Norms (with and without a residual).
  for (const NormCase &c : kNormCases) {
    const size_t n = static_cast<size_t>(c.rows * c.cols);
    auto x = bf16_exact(random_vec(rng, n, -3.f, 3.f, false)), res = bf16_exact(random_vec(rng, n, -1.f, 1.f, false));
    auto gamma = random_vec(rng, size_t(c.cols), 0.5f, 1.5f, false),
         beta = random_vec(rng, size_t(c.cols), -.5f, .5f, false);
    std::vector<float> x_ref = x;
    NormCase ref_case = c;
    if (c.residual) {
      for (size_t i = 0; i < n; ++i) x_ref[i] = round_bf16(x[i] + res[i]);
      ref_case.residual = false;
    }
    const auto want = cpu_norm(ref_case, x_ref, res, gamma, beta, 1e-5f, nullptr);
    auto xh = bf16s(x), rh = bf16s(res);
    std::vector<Bf16> got(n, kPoisonBf16), got_res(n, kPoisonBf16);
    emulated_norm_plain<Bf16>(c, xh.data(), rh.data(), got_res.data(), gamma, beta, 1e-5f, got.data(), 2);
    EXPECT_LE(bf16_ulps(got, want, &differ), 1) << "norm rms=" << c.rms << " residual=" << c.residual;
  }
  // Rotary, both layouts.
  for (bool interleaved : {false, true}) {
    const RotaryCase c{2, 5, 3, 64, 64, interleaved};
    const size_t n = static_cast<size_t>(c.batch * c.seq * c.heads * c.head_dim);
    std::vector<int32_t> pos(static_cast<size_t>(c.batch * c.seq));
    for (auto &q : pos) q = static_cast<int32_t>(rng() % 5000);
    std::vector<float> inv_freq(32);
    for (size_t i = 0; i < inv_freq.size(); ++i) inv_freq[i] = 1.f / std::pow(10000.f, 2.f * float(i) / 64.f);
    auto x = bf16_exact(random_vec(rng, n, -2.f, 2.f, false));
    const auto want = cpu_rotary(c, x, pos, inv_freq);
    auto xh = bf16s(x);
    emulated_rotary<Bf16>(c, xh.data(), pos, inv_freq);
    EXPECT_LE(bf16_ulps(xh, want, &differ), 1) << "rotary interleaved=" << interleaved;
  }
  // Gated activation, add in place, embedding.
  const int64_t rows = 3, cols = 301, n = rows * cols;
  auto gate = bf16_exact(random_vec(rng, size_t(n), -4.f, 4.f, false));
  auto up = bf16_exact(random_vec(rng, size_t(n), -2.f, 2.f, false));
  {
    TestHost host(1);
    std::vector<float> want(size_t(n), std::nanf(""));
    parley_gated_activation_args a{};
    a.struct_size = sizeof a;
    a.dtype = PARLEY_DTYPE_F32, a.activation = PARLEY_ACT_SILU, a.rows = rows, a.cols = cols;
    a.gate = gate.data(), a.ld_gate = cols, a.up = up.data(), a.ld_up = cols, a.out = want.data(), a.ld_out = cols;
    ASSERT_EQ(find_kernel(PARLEY_OP_GATED_ACTIVATION)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
    auto gh = bf16s(gate), uh = bf16s(up);
    std::vector<Bf16> got(size_t(n), kPoisonBf16);
    GatedParams p{};
    p.gate = gh.data(), p.up = uh.data(), p.out = got.data();
    p.rows = rows, p.cols = cols, p.ld_gate = p.ld_up = p.ld_out = cols, p.act = PARLEY_ACT_SILU, p.grid = 2;
    run([&](Ctx &ctx) { gated<Ctx, Bf16>(ctx, p); }, p.grid, kElemThreads);
    EXPECT_LE(bf16_ulps(got, want, &differ), 1) << "gated";
  }
  {
    std::vector<float> want(static_cast<size_t>(n));
    for (size_t i = 0; i < want.size(); ++i) want[i] = gate[i] + up[i];
    auto gh = bf16s(gate), uh = bf16s(up);
    AddParams p{};
    p.a = p.out = gh.data(), p.b = uh.data(), p.n = n, p.alpha = 1.f, p.grid = 1;
    run([&](Ctx &ctx) { add<Ctx, Bf16>(ctx, p); }, p.grid, kElemThreads);
    EXPECT_EQ(bf16_ulps(gh, want, &differ), 0) << "add";
  }
  {
    const int64_t vocab = 5, dim = 40;
    auto table = random_vec(rng, size_t(vocab * dim), -1.f, 1.f, false);
    const std::vector<int32_t> ids = {4, 0, 2};
    std::vector<float> want(size_t(3 * dim));
    for (int64_t r = 0; r < 3; ++r)
      for (int64_t j = 0; j < dim; ++j) want[size_t(r * dim + j)] = table[size_t(ids[size_t(r)] * dim + j)] * 2.f;
    std::vector<Bf16> got(want.size(), kPoisonBf16);
    int bad = 0;
    EmbeddingParams p{};
    p.ids = ids.data(), p.table = table.data(), p.out = got.data(), p.bad_id = &bad;
    p.count = 3, p.vocab = vocab, p.dim = dim, p.ld_out = dim, p.scale = 2.f, p.grid = 1;
    run([&](Ctx &ctx) { embedding<Ctx, Bf16>(ctx, p); }, p.grid, kElemThreads);
    EXPECT_EQ(bf16_ulps(got, want, &differ), 0) << "embedding";
    EXPECT_EQ(bad, 0);
  }
}

// ---------------------------------------------------------------- the harness can fail
TEST(SimtRowwise, HarnessCatchesADroppedBarrierAndAWrongShuffle) {
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  const NormCase c{false, 2, 300, false, false, true};
  const size_t n = static_cast<size_t>(c.rows * c.cols);
  auto x = random_vec(rng, n, -3.f, 3.f, false);
  auto gamma = random_vec(rng, size_t(c.cols), 0.5f, 1.5f, false), beta = gamma;
  std::vector<float> res(n), out(n);
  using parley::simt::Fault;
  using parley::simt::FaultCtx;
  EXPECT_THROW((emulated_norm<float, FaultCtx<Fault::kDropFirstBarrier, 0, 0>>(c, x.data(), res.data(), nullptr, gamma,
                                                                               beta, 1e-5f, out.data(), 1)),
               SimtError);
  const auto want = cpu_norm(c, x, res, gamma, beta, 1e-5f, nullptr);
  std::fill(out.begin(), out.end(), std::nanf(""));
  emulated_norm<float, FaultCtx<Fault::kWrongShuffleLane, 16, 8>>(c, x.data(), res.data(), nullptr, gamma, beta, 1e-5f,
                                                                  out.data(), 1);
  EXPECT_GT(rel_error(out, want), 1e-3) << "a wrong shuffle lane went unnoticed";
}

}  // namespace
