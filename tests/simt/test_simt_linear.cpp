// The CUDA plugin's LINEAR kernels (plugins/cuda/linear/linear_body.cuh) run
// on the CPU under the SIMT emulator, on weights packed by the plugin's own
// packer (linear_layout.h), and are compared with the cpu plugin's LINEAR
// (prepare_weight + run, its own decoding of F16/BF16/I8/I4) and with a
// float64 product: every weight dtype and quantization (I8 per row and
// group-wise, I4 group-wise with groups of 32, 64 and 128), odd shapes
// (k odd, k and n not multiples of the tiles, k across the GEMV's 1024-column
// staging step, m across 64-row tiles and the tiled kernel's grid-stride loop
// over m), saturated integers (all -128 / 127, -8 / 7), zero rows, F16
// subnormals, padded source rows, bias / every activation / residual (also
// aliasing the output), with the output poisoned (NaN) so an unwritten
// element fails. Then the harness proves it can fail: a wrong decoding, a
// wrong scale group, a dropped barrier, a wrong shuffle lane.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "../common/gtest_seed.h"
#include "../kernels/test_host.h"
#include "fault_ctx.hpp"
#include "linear_body.cuh"
#include "linear_mma.cuh"
#include "rel_error.hpp"
#include "simt_emulator.hpp"

using namespace parley::cuda::lin;
using parley::simt::Ctx;
using parley::simt::Dim3;
using parley::simt::Emulator;
using parley::simt::SimtError;
using parley::test::rel_error;

namespace {

// fp32 arithmetic on every side (ENGINEERING.md's 1e-5). Both products sum
// the same k <= 1152 exactly representable terms in different orders; the
// rounding error of such a sum grows like sqrt(k) * 2^-24 relative (about
// 2e-6 at k = 1152 for these sign-random terms), so 1e-5 holds with margin
// while a wrong element, group, row or missing tile is off by O(1).
constexpr double kTol = 1e-5;

// A weight as a model file would hold it: n rows of k elements, rows
// ld_bytes apart (the bytes between rows are garbage), plus F32 scales.
struct Weight {
  int32_t dtype = PARLEY_DTYPE_I8;
  int32_t quant = PARLEY_QUANT_PER_ROW;
  int64_t n = 0, k = 0, group = 0, ld_bytes = 0;
  std::vector<uint8_t> data;
  std::vector<float> scales;
  parley_weight_desc desc() const {
    parley_weight_desc d{};
    d.struct_size = sizeof d;
    d.name = "test.weight";
    d.dtype = dtype, d.quant = quant, d.n = n, d.k = k;
    d.data = data.data(), d.ld_bytes = ld_bytes;
    d.scales = scales.empty() ? nullptr : scales.data();
    d.group_size = quant == PARLEY_QUANT_GROUPWISE ? group : 0;
    return d;
  }
  // The real value of element (r, c), in double (the float64 reference).
  double value(int64_t r, int64_t c) const {
    const uint8_t *row = data.data() + r * ld_bytes;
    double v = 0;
    switch (dtype) {
      case PARLEY_DTYPE_F32: {
        float f;
        std::memcpy(&f, row + 4 * c, 4);
        return f;
      }
      case PARLEY_DTYPE_F16: {
        uint16_t h;
        std::memcpy(&h, row + 2 * c, 2);
        const int e = (h >> 10) & 31, mnt = h & 1023;
        v = e == 0 ? std::ldexp(double(mnt), -24) : std::ldexp(double(1024 + mnt), e - 25);
        return (h & 0x8000) ? -v : v;
      }
      case PARLEY_DTYPE_BF16: {
        uint16_t h;
        std::memcpy(&h, row + 2 * c, 2);
        const uint32_t bits = uint32_t(h) << 16;
        float f;
        std::memcpy(&f, &bits, 4);
        return f;
      }
      case PARLEY_DTYPE_I8:
        v = static_cast<int8_t>(row[c]);
        break;
      default: {  // I4
        const int nib = (c % 2 == 0) ? (row[c / 2] & 15) : (row[c / 2] >> 4);
        v = nib >= 8 ? nib - 16 : nib;
        break;
      }
    }
    if (quant == PARLEY_QUANT_PER_ROW) return v * scales[size_t(r)];
    return v * scales[size_t(r * (k / group) + c / group)];
  }
};

enum class Rows { kRandom, kSaturatedLow, kSaturatedHigh, kZero };

// Random weights with a few special rows: saturated (-128 / 127, -8 / 7;
// for floats the largest magnitudes of the draw), all zero.
Weight make_weight(int32_t dtype, int32_t quant, int64_t n, int64_t k, int64_t group, std::mt19937 &rng) {
  Weight w;
  w.dtype = dtype, w.quant = quant, w.n = n, w.k = k, w.group = group;
  const int64_t row_bytes = dtype == PARLEY_DTYPE_I4 ? k / 2
                                                     : k * (dtype == PARLEY_DTYPE_F32  ? 4
                                                            : dtype == PARLEY_DTYPE_I8 ? 1
                                                                                       : 2);
  w.ld_bytes = row_bytes + 12 + (dtype == PARLEY_DTYPE_F32 ? 4 : 0);  // padded source rows
  w.data.assign(size_t(n * w.ld_bytes), 0xA5);                        // garbage between rows
  std::uniform_int_distribution<int> byte(0, 255), i8(-128, 127), i4(-8, 7);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int64_t r = 0; r < n; ++r) {
    const Rows kind = r % 7 == 3    ? Rows::kSaturatedLow
                      : r % 7 == 5  ? Rows::kSaturatedHigh
                      : r % 11 == 9 ? Rows::kZero
                                    : Rows::kRandom;
    uint8_t *row = w.data.data() + r * w.ld_bytes;
    for (int64_t c = 0; c < k; ++c) {
      switch (dtype) {
        case PARLEY_DTYPE_F32: {
          const float f = kind == Rows::kZero ? 0.f : nd(rng);
          std::memcpy(row + 4 * c, &f, 4);
          break;
        }
        case PARLEY_DTYPE_F16: {
          // Random bits with exponents 0..17 (subnormals included, |v| < 8).
          uint16_t h = uint16_t((byte(rng) & 0x80) << 8 | (byte(rng) % 18) << 10 | (byte(rng) << 2 | (byte(rng) & 3)));
          if (kind == Rows::kZero) h = 0;
          if (kind == Rows::kSaturatedHigh) h = 0x47FF;                                 // 7.996
          if (kind == Rows::kSaturatedLow) h = uint16_t(c % 3 == 0 ? 0x0001 : 0x83FF);  // subnormals
          std::memcpy(row + 2 * c, &h, 2);
          break;
        }
        case PARLEY_DTYPE_BF16: {
          uint16_t h = uint16_t((byte(rng) & 0x80) << 8 | (118 + byte(rng) % 14) << 7 | (byte(rng) & 0x7F));
          if (kind == Rows::kZero) h = 0;
          if (kind == Rows::kSaturatedHigh) h = 0x437F;  // 255
          std::memcpy(row + 2 * c, &h, 2);
          break;
        }
        case PARLEY_DTYPE_I8: {
          int v = kind == Rows::kSaturatedLow    ? -128
                  : kind == Rows::kSaturatedHigh ? 127
                  : kind == Rows::kZero          ? 0
                                                 : i8(rng);
          row[c] = static_cast<uint8_t>(static_cast<int8_t>(v));
          break;
        }
        default: {
          int v = kind == Rows::kSaturatedLow    ? -8
                  : kind == Rows::kSaturatedHigh ? 7
                  : kind == Rows::kZero          ? 0
                                                 : i4(rng);
          const uint8_t nib = static_cast<uint8_t>(v & 15);
          row[c / 2] = c % 2 == 0 ? static_cast<uint8_t>((row[c / 2] & 0xF0) | nib)
                                  : static_cast<uint8_t>((row[c / 2] & 0x0F) | nib << 4);
          break;
        }
      }
    }
  }
  std::uniform_real_distribution<float> sd(0.002f, 0.05f);
  if (quant == PARLEY_QUANT_PER_ROW) w.scales.resize(size_t(n));
  if (quant == PARLEY_QUANT_GROUPWISE) w.scales.resize(size_t(n * (k / group)));
  for (float &s : w.scales) s = sd(rng);
  return w;
}

// The device layout in host memory (as prepare_weight uploads it).
struct Packed {
  Layout layout;
  std::vector<uint64_t> mem;  // 8-byte aligned storage of layout.total bytes
  const uint8_t *bytes() const { return reinterpret_cast<const uint8_t *>(mem.data()); }
};

Packed pack(const Weight &w) {
  Packed p;
  const parley_weight_desc d = w.desc();
  EXPECT_TRUE(make_layout(d, &p.layout));
  p.mem.assign(size_t(p.layout.total + 7) / 8, 0x5A5A5A5A5A5A5A5Aull);
  auto *base = reinterpret_cast<uint8_t *>(p.mem.data());
  pack_rows(d, p.layout, 0, w.n, base);
  if (p.layout.scale_count)
    std::memcpy(base + p.layout.scale_offset, w.scales.data(), size_t(p.layout.scale_count) * 4);
  EXPECT_EQ(p.layout.pitch % 16, 0);
  return p;
}

struct Call {
  int64_t m = 1;
  int act = PARLEY_ACT_NONE;
  bool bias = true;
  enum { kNone, kSeparate, kAliased } residual = kNone;
  int64_t ld_pad = 3;  // extra elements per row of x / out / residual
};

struct Problem {
  std::vector<float> x, bias, residual;
  int64_t ld_x = 0, ld_out = 0, ld_res = 0;
};

Problem make_problem(const Weight &w, const Call &c, std::mt19937 &rng) {
  Problem pr;
  std::normal_distribution<float> nd(0.f, 1.f);
  pr.ld_x = w.k + c.ld_pad, pr.ld_out = w.n + c.ld_pad,
  pr.ld_res = c.residual == Call::kAliased ? pr.ld_out : w.n + 2 * c.ld_pad + 1;
  pr.x.resize(size_t(c.m * pr.ld_x));
  for (float &v : pr.x) v = nd(rng);
  if (c.bias) {
    pr.bias.resize(size_t(w.n));
    for (float &v : pr.bias) v = nd(rng);
  }
  if (c.residual != Call::kNone) {
    pr.residual.resize(size_t(c.m * pr.ld_res));
    for (float &v : pr.residual) v = nd(rng);
  }
  return pr;
}

// The output buffer: NaN (poison), or the residual when out aliases it.
std::vector<float> fresh_out(const Weight &w, const Call &c, const Problem &pr) {
  if (c.residual == Call::kAliased) return pr.residual;
  return std::vector<float>(size_t(c.m * pr.ld_out), std::nanf(""));
}

// The m x n results out of a strided output.
std::vector<float> dense(const std::vector<float> &out, int64_t m, int64_t n, int64_t ld) {
  std::vector<float> r(size_t(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) r[size_t(i * n + j)] = out[size_t(i * ld + j)];
  return r;
}

std::vector<float> cpu_linear(const Weight &w, const Call &c, const Problem &pr) {
  parley::test::TestHost host(2);
  const parley_plugin_desc *plugin = parley_cpu_plugin_entry(PARLEY_PLUGIN_ABI_VERSION, host.services());
  const parley_kernel_desc *kd = nullptr;
  for (size_t i = 0; plugin && i < plugin->num_kernels; ++i)
    if (plugin->kernels[i].op == PARLEY_OP_LINEAR && plugin->kernels[i].weight_dtype == w.dtype)
      kd = &plugin->kernels[i];
  EXPECT_NE(kd, nullptr);
  if (!kd) return {};
  const parley_weight_desc d = w.desc();
  parley_prepared_weight pw{};
  pw.struct_size = sizeof pw;
  EXPECT_EQ(kd->prepare_weight(host.context(), &d, &pw), PARLEY_KERNEL_OK) << host.last_error();
  std::vector<float> out = fresh_out(w, c, pr);
  parley_linear_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32, a.activation = c.act;
  a.m = c.m, a.n = w.n, a.k = w.k;
  a.x = pr.x.data(), a.ld_x = pr.ld_x;
  a.weight = pw.handle;
  a.bias = c.bias ? pr.bias.data() : nullptr;
  a.residual = c.residual == Call::kAliased ? out.data() : c.residual == Call::kSeparate ? pr.residual.data() : nullptr;
  a.ld_residual = pr.ld_res;
  a.out = out.data(), a.ld_out = pr.ld_out;
  EXPECT_EQ(kd->run(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
  kd->release_weight(host.context(), pw.handle);
  return dense(out, c.m, w.n, pr.ld_out);
}

std::vector<float> f64_linear(const Weight &w, const Call &c, const Problem &pr) {
  std::vector<float> r(size_t(c.m * w.n));
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < w.n; ++j) {
      double acc = c.bias ? pr.bias[size_t(j)] : 0.0;
      for (int64_t l = 0; l < w.k; ++l) acc += double(pr.x[size_t(i * pr.ld_x + l)]) * w.value(j, l);
      const double u = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc);
      switch (c.act) {
        case PARLEY_ACT_RELU:
          acc = acc > 0 ? acc : 0;
          break;
        case PARLEY_ACT_GELU_ERF:
          acc = 0.5 * acc * std::erfc(-acc / std::sqrt(2.0));
          break;
        case PARLEY_ACT_GELU_TANH:
          acc = 0.5 * acc * (1 + std::tanh(u));
          break;
        case PARLEY_ACT_SILU:
          acc = acc / (1 + std::exp(-acc));
          break;
        default:
          break;
      }
      if (c.residual != Call::kNone) acc += pr.residual[size_t(i * pr.ld_res + j)];
      r[size_t(i * w.n + j)] = float(acc);
    }
  return r;
}

// The fault-injecting context (fault_ctx.hpp); a wrong lane on mask 4.
using parley::simt::Fault;
template <Fault F>
using KernelCtx = parley::simt::FaultCtx<F, 4, 8>;

// Calls f(std::integral_constant<int, dt>{}) for weight dtype dt (I4 for
// any other value), so a body templated on the dtype can be picked at run time.
template <class F>
void with_dtype(int32_t dt, F &&f) {
  switch (dt) {
    case PARLEY_DTYPE_F32:
      return f(std::integral_constant<int, PARLEY_DTYPE_F32>{});
    case PARLEY_DTYPE_F16:
      return f(std::integral_constant<int, PARLEY_DTYPE_F16>{});
    case PARLEY_DTYPE_BF16:
      return f(std::integral_constant<int, PARLEY_DTYPE_BF16>{});
    case PARLEY_DTYPE_I8:
      return f(std::integral_constant<int, PARLEY_DTYPE_I8>{});
    default:
      return f(std::integral_constant<int, PARLEY_DTYPE_I4>{});
  }
}

enum class Kernel { kGemv, kTiled, kMma };
uint64_t g_mma_bank_conflicts = 0;  // ldmatrix phases of the tensor-core kernel sharing a bank

// Runs the emulated kernel. kernel_dtype is the body's weight type (equal to
// the packed weight's except in the deliberately wrong runs); grid_y 0 means
// as the plugin launches it.
// act: the activation dtype (F16 / BF16: x, residual and out as 16-bit
// bits; x and the residual must hold such values already), the result
// widened to float.
template <Fault F = Fault::kNone>
std::vector<float> emulated(Kernel kernel, const Weight &w, const Packed &pk, const Call &c, const Problem &pr,
                            int32_t kernel_dtype, int32_t grid_y = 0, int32_t group_override = 0,
                            int32_t act = PARLEY_DTYPE_F32) {
  const bool act16 = act != PARLEY_DTYPE_F32, bf16 = act == PARLEY_DTYPE_BF16;
  const Layout &L = pk.layout;
  std::vector<float> out = fresh_out(w, c, pr);
  auto halves = [&](const std::vector<float> &v) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = parley::cuda::attn::float_to_bits(v[i], bf16);
    return h;
  };
  std::vector<uint16_t> x16 = halves(pr.x), res16 = halves(pr.residual), out16 = halves(out);
  LinearParams p;
  p.x = act16 ? static_cast<const void *>(x16.data()) : pr.x.data(), p.ld_x = pr.ld_x;
  p.act_dtype = act;
  p.w = pk.bytes(), p.pitch = L.pitch;
  p.scales = L.scale_count ? reinterpret_cast<const float *>(pk.bytes() + L.scale_offset) : nullptr;
  p.group = group_override ? group_override : L.group, p.groups_per_row = L.groups_per_row;
  p.bias = c.bias ? pr.bias.data() : nullptr;
  if (act16) {
    p.residual = c.residual == Call::kAliased    ? static_cast<const void *>(out16.data())
                 : c.residual == Call::kSeparate ? res16.data()
                                                 : nullptr;
    p.out = out16.data();
  } else {
    p.residual = c.residual == Call::kAliased    ? out.data()
                 : c.residual == Call::kSeparate ? pr.residual.data()
                                                 : nullptr;
    p.out = out.data();
  }
  p.ld_res = pr.ld_res;
  p.ld_out = pr.ld_out;
  p.m = c.m, p.n = w.n, p.k = w.k, p.kp = L.kp;
  p.act = c.act;
  const int m_tiles = int((c.m + kTileM - 1) / kTileM);
  p.grid_y = grid_y ? grid_y : m_tiles;
  Emulator emu;
  if (kernel == Kernel::kGemv) {
    const int rows = c.m <= 1 ? 1 : c.m <= 2 ? 2 : c.m <= 4 ? 4 : 8;
    const Dim3 grid{int((w.n + kGemvRows - 1) / kGemvRows), 1, 1};
    auto run = [&](auto wt, auto mm) {
      emu.launch(grid, kGemvThreads, size_t(gemv_smem_words(rows)), [&](Ctx &ctx) {
        KernelCtx<F> kc{ctx};
        linear_gemv<KernelCtx<F>, decltype(wt)::value, decltype(mm)::value>(kc, p);
      });
    };
    auto by_rows = [&](auto wt) {
      switch (rows) {
        case 1:
          return run(wt, std::integral_constant<int, 1>{});
        case 2:
          return run(wt, std::integral_constant<int, 2>{});
        case 4:
          return run(wt, std::integral_constant<int, 4>{});
        default:
          return run(wt, std::integral_constant<int, 8>{});
      }
    };
    with_dtype(kernel_dtype, by_rows);
  } else if (kernel == Kernel::kMma) {
    const Dim3 grid{int((w.n + kTileN - 1) / kTileN), p.grid_y, 1};
    auto run = [&](auto wt) {
      if constexpr (decltype(wt)::value != PARLEY_DTYPE_F32)  // F32 weights go to cuBLASLt
        emu.launch(grid, kMmaLinThreads, size_t(kMmaLinSmemWords), [&](Ctx &ctx) {
          KernelCtx<F> kc{ctx};
          linear_mma<KernelCtx<F>, decltype(wt)::value>(kc, p);
        });
    };
    with_dtype(kernel_dtype, run);
  } else {
    const Dim3 grid{int((w.n + kTileN - 1) / kTileN), p.grid_y, 1};
    auto run = [&](auto wt) {
      emu.launch(grid, kTileThreads, size_t(kTileSmemWords), [&](Ctx &ctx) {
        KernelCtx<F> kc{ctx};
        linear_tiled<KernelCtx<F>, decltype(wt)::value>(kc, p);
      });
    };
    with_dtype(kernel_dtype, run);
  }
  EXPECT_GT(emu.barriers(), 0u);
  if (kernel == Kernel::kMma) g_mma_bank_conflicts += emu.bank_conflicts();
  if (act16)
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = bf16 ? parley::cuda::attn::bf16_bits_to_float(out16[i]) : parley::cuda::attn::half_to_float(out16[i]);
  return dense(out, c.m, w.n, pr.ld_out);
}

struct Errors {
  double vs_cpu = 0, vs_f64 = 0;
};

Errors check(Kernel kernel, const Weight &w, const Call &c, uint32_t seed, int32_t grid_y = 0) {
  std::mt19937 rng(seed);
  const Problem pr = make_problem(w, c, rng);
  const Packed pk = pack(w);
  const std::vector<float> got = emulated(kernel, w, pk, c, pr, w.dtype, grid_y);
  Errors e;
  e.vs_cpu = rel_error(got, cpu_linear(w, c, pr));
  e.vs_f64 = rel_error(got, f64_linear(w, c, pr));
  return e;
}

const char *dtype_label(int32_t dt) {
  switch (dt) {
    case PARLEY_DTYPE_F32:
      return "F32";
    case PARLEY_DTYPE_F16:
      return "F16";
    case PARLEY_DTYPE_BF16:
      return "BF16";
    case PARLEY_DTYPE_I8:
      return "I8";
    default:
      return "I4";
  }
}

struct WeightCase {
  int32_t dtype, quant;
  int64_t group;
};

const WeightCase kWeightCases[] = {
    {PARLEY_DTYPE_F16, PARLEY_QUANT_NONE, 0},       {PARLEY_DTYPE_BF16, PARLEY_QUANT_NONE, 0},
    {PARLEY_DTYPE_I8, PARLEY_QUANT_PER_ROW, 0},     {PARLEY_DTYPE_I8, PARLEY_QUANT_GROUPWISE, 32},
    {PARLEY_DTYPE_I8, PARLEY_QUANT_GROUPWISE, 128}, {PARLEY_DTYPE_I4, PARLEY_QUANT_GROUPWISE, 32},
    {PARLEY_DTYPE_I4, PARLEY_QUANT_GROUPWISE, 64},  {PARLEY_DTYPE_I4, PARLEY_QUANT_GROUPWISE, 128},
};

// k for a weight case: odd where the quantization allows, else a multiple
// of the group that is not a multiple of the staging step.
int64_t odd_k(const WeightCase &wc, int64_t base) {
  if (wc.quant == PARLEY_QUANT_GROUPWISE) return (base / wc.group + 1) * wc.group;
  if (wc.dtype == PARLEY_DTYPE_I4) return base + 1 - base % 2;
  return base | 1;
}

}  // namespace

TEST(SimtLinear, GemvEveryWeightTypeSmallM) {
  PARLEY_TRACE_BASE_SEED();
  int idx = 0;
  for (const WeightCase &wc : kWeightCases)
    for (int64_t m : {1, 2, 3, 8}) {
      const uint32_t seed = parley::test::case_seed();
      std::mt19937 rng(seed);
      // k past one 1024-column staging step, n not a multiple of 8.
      const int64_t k = odd_k(wc, m == 3 ? 1090 : 200), n = m == 1 ? 37 : 13;
      const Weight w = make_weight(wc.dtype, wc.quant, n, k, wc.group, rng);
      Call c;
      c.m = m, c.act = (idx++) % PARLEY_ACT_COUNT_;
      c.residual = m == 2 ? Call::kAliased : m == 8 ? Call::kSeparate : Call::kNone;
      c.bias = m != 3;
      const Errors e = check(Kernel::kGemv, w, c, seed);
      EXPECT_LE(e.vs_cpu, kTol) << dtype_label(wc.dtype) << " quant " << wc.quant << " group " << wc.group << " m " << m
                                << " k " << k << " act " << c.act << " " << parley::test::seed_note(seed);
      EXPECT_LE(e.vs_f64, kTol) << dtype_label(wc.dtype) << " quant " << wc.quant << " m " << m;
      std::printf("  gemv %-4s quant %d group %3lld m %lld n %lld k %4lld act %d: error vs cpu %.2e, vs f64 %.2e\n",
                  dtype_label(wc.dtype), wc.quant, static_cast<long long>(wc.group), static_cast<long long>(m),
                  static_cast<long long>(n), static_cast<long long>(k), c.act, e.vs_cpu, e.vs_f64);
    }
}

TEST(SimtLinear, TiledEveryWeightTypeAcrossTiles) {
  PARLEY_TRACE_BASE_SEED();
  int idx = 0;
  for (const WeightCase &wc : kWeightCases) {
    const uint32_t seed = parley::test::case_seed();
    std::mt19937 rng(seed);
    // m across two 64-row tiles, n across two 64-column tiles, odd k.
    const int64_t k = odd_k(wc, 97), n = 70;
    const Weight w = make_weight(wc.dtype, wc.quant, n, k, wc.group, rng);
    Call c;
    c.m = 67, c.act = (idx++) % PARLEY_ACT_COUNT_;
    c.residual = idx % 2 ? Call::kSeparate : Call::kAliased;
    const Errors e = check(Kernel::kTiled, w, c, seed);
    EXPECT_LE(e.vs_cpu, kTol) << dtype_label(wc.dtype) << " quant " << wc.quant << " group " << wc.group << " "
                              << parley::test::seed_note(seed);
    EXPECT_LE(e.vs_f64, kTol) << dtype_label(wc.dtype) << " quant " << wc.quant;
    std::printf("  tiled %-4s quant %d group %3lld m %lld n %lld k %4lld act %d: error vs cpu %.2e, vs f64 %.2e\n",
                dtype_label(wc.dtype), wc.quant, static_cast<long long>(wc.group), static_cast<long long>(c.m),
                static_cast<long long>(n), static_cast<long long>(k), c.act, e.vs_cpu, e.vs_f64);
  }
}

TEST(SimtLinear, TiledSmallMAndGridStrideOverM) {
  PARLEY_TRACE_BASE_SEED();
  // The tiled kernel serves any m: m = 1 (one row of a tile), and m = 130
  // with a grid one tile high, so each CTA strides over three m tiles.
  for (int32_t dt : {PARLEY_DTYPE_I8, PARLEY_DTYPE_I4, PARLEY_DTYPE_F16}) {
    const WeightCase wc = dt == PARLEY_DTYPE_I4   ? WeightCase{dt, PARLEY_QUANT_GROUPWISE, 64}
                          : dt == PARLEY_DTYPE_I8 ? WeightCase{dt, PARLEY_QUANT_PER_ROW, 0}
                                                  : WeightCase{dt, PARLEY_QUANT_NONE, 0};
    const uint32_t seed = parley::test::case_seed();
    std::mt19937 rng(seed);
    const Weight w = make_weight(wc.dtype, wc.quant, 9, odd_k(wc, 40), wc.group, rng);
    Call c;
    c.m = 1, c.act = PARLEY_ACT_SILU;
    Errors e = check(Kernel::kTiled, w, c, seed);
    EXPECT_LE(e.vs_cpu, kTol) << dtype_label(dt) << " m 1 " << parley::test::seed_note(seed);
    EXPECT_LE(e.vs_f64, kTol) << dtype_label(dt) << " m 1";
    c.m = 130, c.act = PARLEY_ACT_GELU_ERF, c.residual = Call::kSeparate;
    e = check(Kernel::kTiled, w, c, seed, /*grid_y=*/1);
    EXPECT_LE(e.vs_cpu, kTol) << dtype_label(dt) << " m 130 " << parley::test::seed_note(seed);
    EXPECT_LE(e.vs_f64, kTol) << dtype_label(dt) << " m 130";
  }
}

// The tensor-core kernel (linear_mma.cuh): x is rounded to the weight's
// 16-bit type (F16 for I8 / I4 weights, whose w * s are rounded to F16 as
// they are staged), then everything is exact products summed in fp32. So
// against a float64 product on the rounded x (and, for I8 / I4, the rounded
// w * s, held in an F32 weight) it meets the fp32 tolerance (kTol); against
// the unrounded inputs it is within the roundings' relative error (u16 =
// 2^-11 F16, 2^-8 BF16; twice for I8 / I4), times 8 for the sum of |w x| over
// |out|. m across two 64-row tiles and a one-tile grid striding over three, n
// across two tiles, k odd or not a multiple of the 64-element k-tile, every
// weight type and group size, every activation, bias, residual separate and
// aliased.
TEST(SimtLinear, TensorCoreKernelEveryWeightType) {
  PARLEY_TRACE_BASE_SEED();
  int idx = 0;
  g_mma_bank_conflicts = 0;
  for (const WeightCase &wc : kWeightCases)
    for (int64_t m : {9, 67, 130}) {
      const uint32_t seed = parley::test::case_seed();
      std::mt19937 rng(seed);
      const int64_t k = odd_k(wc, m == 67 ? 97 : 200), n = m == 9 ? 13 : 70;
      const Weight w = make_weight(wc.dtype, wc.quant, n, k, wc.group, rng);
      Call c;
      c.m = m, c.act = (idx++) % PARLEY_ACT_COUNT_;
      c.residual = m == 67 ? Call::kAliased : Call::kSeparate;
      c.bias = m != 9;
      std::mt19937 prng(seed);
      const Problem pr = make_problem(w, c, prng);
      const bool bf16 = wc.dtype == PARLEY_DTYPE_BF16,
                 ints = wc.dtype == PARLEY_DTYPE_I8 || wc.dtype == PARLEY_DTYPE_I4;
      auto round16 = [&](float v) {
        const uint16_t h = parley::cuda::attn::float_to_bits(v, bf16);
        return bf16 ? parley::cuda::attn::bf16_bits_to_float(h) : parley::cuda::attn::half_to_float(h);
      };
      Problem rounded = pr;
      for (float &v : rounded.x) v = round16(v);
      // The weight as the kernel multiplies it, in an F32 weight of the same shape.
      Weight wr;
      wr.dtype = PARLEY_DTYPE_F32, wr.quant = PARLEY_QUANT_NONE, wr.n = n, wr.k = k, wr.ld_bytes = k * 4;
      wr.data.resize(size_t(n * k * 4));
      for (int64_t r = 0; r < n; ++r)
        for (int64_t col = 0; col < k; ++col) {
          const float v = ints ? round16(float(w.value(r, col))) : float(w.value(r, col));
          std::memcpy(wr.data.data() + (r * k + col) * 4, &v, 4);
        }
      const Packed pk = pack(w);
      const std::vector<float> got = emulated(Kernel::kMma, w, pk, c, pr, wc.dtype, m == 130 ? 1 : 0);
      const double vs_rounded = rel_error(got, f64_linear(wr, c, rounded));
      const double vs_exact = rel_error(got, f64_linear(w, c, pr));
      const double u16 = bf16 ? 0x1p-8 : 0x1p-11;
      EXPECT_LE(vs_rounded, kTol) << dtype_label(wc.dtype) << " quant " << wc.quant << " group " << wc.group << " m "
                                  << m << " " << parley::test::seed_note(seed);
      EXPECT_LE(vs_exact, 8 * (ints ? 2 : 1) * u16)
          << dtype_label(wc.dtype) << " quant " << wc.quant << " m " << m << " " << parley::test::seed_note(seed);
      std::printf(
          "  mma %-4s quant %d group %3lld m %lld n %lld k %lld act %d: error vs f64 on rounded inputs %.2e, "
          "on the inputs %.2e\n",
          dtype_label(wc.dtype), wc.quant, static_cast<long long>(wc.group), static_cast<long long>(m),
          static_cast<long long>(n), static_cast<long long>(k), c.act, vs_rounded, vs_exact);
    }
  // The swizzle puts the 8 rows of every ldmatrix phase in 8 different bank groups.
  EXPECT_EQ(g_mma_bank_conflicts, 0u);
}

// 16-bit activations (plugin.h): x and the residual read as F16 / BF16, the
// output rounded once. Each body is run twice on the same 16-bit-valued
// inputs, with F32 and with 16-bit activations: the sums are the same
// operations in the same order, so the 16-bit output must be the F32 output rounded to nearest even,
// bit for bit (the F32 runs are checked against the cpu plugin and float64
// above). Outputs start poisoned; an aliased residual is read as F16 too.
TEST(SimtLinear, SixteenBitActivationsAreTheF32ResultRoundedOnce) {
  PARLEY_TRACE_BASE_SEED();
  int idx = 0;
  std::vector<WeightCase> cases(std::begin(kWeightCases), std::end(kWeightCases));
  cases.push_back({PARLEY_DTYPE_F32, PARLEY_QUANT_NONE, 0});  // 16-bit activations over F32 weights: CUDA cores
  for (int32_t act : {PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16})
    for (const WeightCase &wc : cases)
      for (Kernel kernel : {Kernel::kGemv, Kernel::kTiled, Kernel::kMma}) {
        if (wc.dtype == PARLEY_DTYPE_F32 && kernel == Kernel::kMma) continue;
        const uint32_t seed = parley::test::case_seed();
        std::mt19937 rng(seed);
        const int64_t m = kernel == Kernel::kGemv ? 3 : kernel == Kernel::kTiled ? 70 : 67;
        const int64_t k = odd_k(wc, 150), n = 21;
        const Weight w = make_weight(wc.dtype, wc.quant, n, k, wc.group, rng);
        Call c;
        c.m = m, c.act = (idx++) % PARLEY_ACT_COUNT_;
        c.residual = idx % 2 ? Call::kAliased : Call::kSeparate;
        Problem pr = make_problem(w, c, rng);
        const bool bf16 = act == PARLEY_DTYPE_BF16;
        auto to16 = [&](float v) {
          const uint16_t h = parley::cuda::attn::float_to_bits(v, bf16);
          return bf16 ? parley::cuda::attn::bf16_bits_to_float(h) : parley::cuda::attn::half_to_float(h);
        };
        for (float &v : pr.x) v = to16(v);
        for (float &v : pr.residual) v = to16(v);
        const Packed pk = pack(w);
        const std::vector<float> f32 = emulated(kernel, w, pk, c, pr, wc.dtype);
        const std::vector<float> got = emulated(kernel, w, pk, c, pr, wc.dtype, 0, 0, act);
        size_t differ = 0;
        for (size_t i = 0; i < f32.size(); ++i) differ += !(to16(f32[i]) == got[i]);
        const char *kname = kernel == Kernel::kGemv ? "gemv" : kernel == Kernel::kTiled ? "tiled" : "mma";
        std::printf(
            "  %s activations %-5s %-4s quant %d group %3lld m %lld: %zu of %zu outputs differ from the "
            "rounded f32 run\n",
            bf16 ? "bf16" : "f16", kname, dtype_label(wc.dtype), wc.quant, static_cast<long long>(wc.group),
            static_cast<long long>(m), differ, f32.size());
        EXPECT_EQ(differ, 0u) << kname << " " << dtype_label(wc.dtype) << (bf16 ? " bf16" : " f16") << " "
                              << parley::test::seed_note(seed);
      }
}

TEST(SimtLinear, F32WeightsThroughTheSameBodies) {
  // F32 weights go to cuBLASLt on the device; the bodies also serve them
  // (one code path for every dtype), checked here.
  PARLEY_TRACE_BASE_SEED();
  const uint32_t seed = parley::test::case_seed();
  std::mt19937 rng(seed);
  const Weight w = make_weight(PARLEY_DTYPE_F32, PARLEY_QUANT_NONE, 21, 75, 0, rng);
  Call c;
  c.m = 4, c.act = PARLEY_ACT_GELU_TANH, c.residual = Call::kSeparate;
  Errors e = check(Kernel::kGemv, w, c, seed);
  EXPECT_LE(e.vs_cpu, kTol);
  EXPECT_LE(e.vs_f64, kTol);
  c.m = 20;
  e = check(Kernel::kTiled, w, c, seed);
  EXPECT_LE(e.vs_cpu, kTol);
  EXPECT_LE(e.vs_f64, kTol);
}

TEST(SimtLinear, ResidualAddAfterTheLibraryProduct) {
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t rows = 5, cols = 300, ld_src = cols, ld_res = cols + 7, ld_out = cols + 2;
  std::vector<float> src(size_t(rows * ld_src)), res(size_t(rows * ld_res)), out(size_t(rows * ld_out), std::nanf(""));
  for (float &v : src) v = nd(rng);
  for (float &v : res) v = nd(rng);
  ResidualParams p;
  p.src = src.data(), p.ld_src = ld_src, p.residual = res.data(), p.ld_res = ld_res, p.out = out.data();
  p.ld_out = ld_out, p.rows = rows, p.cols = cols, p.grid = 2;  // 512 threads stride over 1500 elements
  Emulator emu;
  emu.launch(Dim3{p.grid, 1, 1}, kResidualThreads, 0, [&](Ctx &ctx) { linear_residual_add(ctx, p); });
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      ASSERT_EQ(out[size_t(r * ld_out + c)], src[size_t(r * ld_src + c)] + res[size_t(r * ld_res + c)])
          << r << "," << c;
  for (int64_t r = 0; r < rows; ++r) EXPECT_TRUE(std::isnan(out[size_t(r * ld_out + cols)]));  // padding untouched
}

TEST(SimtLinear, LayoutPadsRowsAndRefusesOverflow) {
  parley_weight_desc d{};
  d.struct_size = sizeof d;
  d.dtype = PARLEY_DTYPE_I4, d.quant = PARLEY_QUANT_GROUPWISE, d.n = 3, d.k = 96, d.group_size = 32, d.ld_bytes = 48;
  Layout L;
  ASSERT_TRUE(make_layout(d, &L));
  EXPECT_EQ(L.kp, 96);
  EXPECT_EQ(L.pitch, 48);
  EXPECT_EQ(L.scale_offset, 256);
  EXPECT_EQ(L.scale_count, 9);
  EXPECT_EQ(L.total, 256 + 36);
  d.dtype = PARLEY_DTYPE_I8, d.quant = PARLEY_QUANT_PER_ROW, d.k = 33, d.group_size = 0;
  ASSERT_TRUE(make_layout(d, &L));
  EXPECT_EQ(L.kp, 64);
  EXPECT_EQ(L.pitch, 64);
  EXPECT_EQ(L.group, 64);
  EXPECT_EQ(L.groups_per_row, 1);
  d.dtype = PARLEY_DTYPE_F32, d.quant = PARLEY_QUANT_NONE, d.n = INT32_MAX, d.k = INT32_MAX - 64;
  EXPECT_FALSE(make_layout(d, &L));  // ~2^64 bytes: refused, no wrap-around
  d.n = 4, d.k = INT64_C(1) << 40;
  EXPECT_FALSE(make_layout(d, &L));  // k beyond the kernels' 32-bit column range
}

// ---- the harness can fail ----

double wrong_run(Kernel kernel, int32_t packed_dtype, int32_t kernel_dtype, int32_t group_override, uint32_t seed) {
  std::mt19937 rng(seed);
  const WeightCase wc = packed_dtype == PARLEY_DTYPE_I4 ? WeightCase{packed_dtype, PARLEY_QUANT_GROUPWISE, 32}
                                                        : WeightCase{packed_dtype, PARLEY_QUANT_GROUPWISE, 64};
  const Weight w = make_weight(wc.dtype, wc.quant, 16, 256, wc.group, rng);
  Call c;
  c.m = kernel == Kernel::kGemv ? 2 : 20;
  const Problem pr = make_problem(w, c, rng);
  const Packed pk = pack(w);
  return rel_error(emulated(kernel, w, pk, c, pr, kernel_dtype, 0, group_override), cpu_linear(w, c, pr));
}

TEST(SimtLinearHarness, CatchesAWrongDecodingOrScaleGroup) {
  const uint32_t seed = parley::test::case_seed();
  for (Kernel kernel : {Kernel::kGemv, Kernel::kTiled}) {
    // I4 bytes read as I8 (a wrong element decoding).
    EXPECT_GT(wrong_run(kernel, PARLEY_DTYPE_I4, PARLEY_DTYPE_I8, 0, seed), 1e-2);
    // The scale of the wrong group (group 32 read as 64).
    EXPECT_GT(wrong_run(kernel, PARLEY_DTYPE_I4, PARLEY_DTYPE_I4, 64, seed), 1e-2);
    // Control: the same run without the fault passes.
    EXPECT_LE(wrong_run(kernel, PARLEY_DTYPE_I4, PARLEY_DTYPE_I4, 0, seed), kTol);
  }
}

TEST(SimtLinearHarness, CatchesADroppedBarrierAndAWrongShuffle) {
  const uint32_t seed = parley::test::case_seed();
  std::mt19937 rng(seed);
  const Weight w = make_weight(PARLEY_DTYPE_I8, PARLEY_QUANT_PER_ROW, 16, 256, 0, rng);
  Call c;
  c.m = 2;
  const Problem pr = make_problem(w, c, rng);
  const Packed pk = pack(w);
  // The staged x read before every thread wrote it: poison or a race.
  EXPECT_THROW(emulated<Fault::kDropFirstBarrier>(Kernel::kGemv, w, pk, c, pr, w.dtype), SimtError);
  c.m = 20;
  const Problem pr2 = make_problem(w, c, rng);
  EXPECT_THROW(emulated<Fault::kDropFirstBarrier>(Kernel::kTiled, w, pk, c, pr2, w.dtype), SimtError);
  // The lanes' partial sums combined with the wrong partner.
  c.m = 2;
  EXPECT_GT(rel_error(emulated<Fault::kWrongShuffleLane>(Kernel::kGemv, w, pk, c, pr, w.dtype), cpu_linear(w, c, pr)),
            1e-2);
}
