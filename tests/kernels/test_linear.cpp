// LINEAR (plugin ABI 1.2) of the cpu plugin against a float64 reference
// computed from the dequantised weights: every weight dtype and quantisation,
// every instruction-set path this CPU can run (each forced in turn through
// set_isa_cap, the in-process form of PARLEY_CPU_ISA), odd shapes, group
// boundaries, saturation, zero rows, the epilogue (bias, activation,
// residual, residual aliasing out) and misuse.
//
// Tolerances, per output element, from the arithmetic of each path:
//  * F32 activations (GEMV paths, tile + sgemm path): the output is an fp32
//    dot product of length k of the dequantised weight with x, the weight
//    possibly rounded once (float(q) * scale) and the sum scaled once:
//      |dv| <= gamma_{k+3} * S,  S = sum_p |w_p x_p| + |bias|
//    (Higham eq. 3.5, any summation order; tests/common/attention_condition.h).
//  * int8 activations (VNNI path, every m (kVnniMinM), integer weights): x is rounded to
//    q * s_x with s_x = max|x| / 127 and |x_p - q_p s_x| <= s_x / 2 (plus a
//    few ulps of |x_p| from forming x / s_x in fp32); the integer product is
//    exact, so
//      |dv| <= sum_p |w_p| * (s_x / 2 + 4 u max|x|) + gamma_4 * S'
//    where S' bounds the final float conversions and scale products; group-
//    wise weights add the float sum over the k / 16 lane partials of
//    s_g * sum u_p q_p (u_p <= 255):  gamma_{k/16+4} * 255 * s_x * sum_p |w_p|.
//  * bf16 activations (vdpbf16ps path, m > 8, BF16 weights): x is rounded to
//    bf16, |x_p - bf16(x_p)| <= 2^-8 |x_p| (8-bit significand), products exact, fp32 sums:
//      |dv| <= (2^-8 + gamma_{k+3}) * S.
//  * The epilogue: the activation is Lipschitz with constant <= 1.13 (ReLU 1,
//    SiLU 1.10, both GELUs 1.13) and is itself evaluated to a few ulps; the
//    residual add rounds once:
//      |dout| <= 1.13 |dv| + 8 u (|act(v)| + |v|) + u |out|.
#include <parley/plugin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../../plugins/cpu/cpu_common.h"
#include "../../plugins/cpu/cpu_features.h"
#include "../../plugins/cpu/linear_kernels.h"
#include "../common/attention_condition.h"
#include "test_host.h"
#include "test_util.h"

namespace parley::test {
namespace {

using parley::cpu::Isa;

// ---- the weight under test --------------------------------------------------

struct WeightSpec {
  parley_dtype dtype;
  parley_quant quant;
  int64_t group;  // GROUPWISE only
  std::string name() const {
    std::string s = parley::cpu::dtype_name(dtype);
    if (quant == PARLEY_QUANT_PER_ROW) s += "_row";
    if (quant == PARLEY_QUANT_GROUPWISE) s += "_g" + std::to_string(group);
    return s;
  }
};

struct Weight {
  WeightSpec spec;
  int64_t n = 0, k = 0, ld_bytes = 0;
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
  std::vector<double> deq;   // [n, k] dequantised, exactly
  std::vector<double> qabs;  // per row: s_w * sum |q| (I8 per-row; for the int8-activation bound)
};

enum class Fill { kRandom, kExtremes };

float round_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000u;
  std::memcpy(&f, &b, 4);
  return f;
}

// Row stride: padded by a few bytes so that kernels must honour ld_bytes.
Weight make_weight(const WeightSpec &spec, int64_t n, int64_t k, Rng &rng, Fill fill = Fill::kRandom) {
  Weight w;
  w.spec = spec;
  w.n = n;
  w.k = k;
  w.deq.assign(size_t(n * k), 0.0);
  w.qabs.assign(size_t(n), 0.0);
  const int64_t groups = spec.quant == PARLEY_QUANT_GROUPWISE ? k / spec.group : 1;
  switch (spec.dtype) {
    case PARLEY_DTYPE_F32:
      w.ld_bytes = k * 4 + 12;
      break;
    case PARLEY_DTYPE_F16:
    case PARLEY_DTYPE_BF16:
      w.ld_bytes = k * 2 + 6;
      break;
    case PARLEY_DTYPE_I8:
      w.ld_bytes = k + 5;
      break;
    default:
      w.ld_bytes = k / 2 + 3;
      break;
  }
  w.bytes.assign(size_t(n * w.ld_bytes), 0xA5);
  if (spec.quant == PARLEY_QUANT_PER_ROW) w.scales.resize(size_t(n));
  if (spec.quant == PARLEY_QUANT_GROUPWISE) w.scales.resize(size_t(n * groups));
  for (auto &s : w.scales) s = std::ldexp(rng.uniform(1, 0.5f, 1.f)[0], -int(rng.integer(4, 8)));
  for (int64_t r = 0; r < n; ++r) {
    uint8_t *row = w.bytes.data() + r * w.ld_bytes;
    for (int64_t c = 0; c < k; ++c) {
      double v = 0;
      switch (spec.dtype) {
        case PARLEY_DTYPE_F32: {
          float f = rng.uniform(1)[0];
          std::memcpy(row + c * 4, &f, 4);
          v = f;
          break;
        }
        case PARLEY_DTYPE_F16: {
          _Float16 h = _Float16(rng.uniform(1)[0]);
          std::memcpy(row + c * 2, &h, 2);
          v = double(h);
          break;
        }
        case PARLEY_DTYPE_BF16: {
          float f = round_bf16(rng.uniform(1)[0]);
          uint32_t b;
          std::memcpy(&b, &f, 4);
          const uint16_t hb = uint16_t(b >> 16);
          std::memcpy(row + c * 2, &hb, 2);
          v = f;
          break;
        }
        case PARLEY_DTYPE_I8: {
          int q = fill == Fill::kExtremes ? (rng.integer(0, 1) ? 127 : -128) : int(rng.integer(-127, 127));
          row[c] = uint8_t(int8_t(q));
          const float s =
              spec.quant == PARLEY_QUANT_PER_ROW ? w.scales[size_t(r)] : w.scales[size_t(r * groups + c / spec.group)];
          v = double(q) * s;
          w.qabs[size_t(r)] += std::abs(q) * double(s);
          break;
        }
        default: {  // I4: element 2t in the low nibble of byte t, 2t+1 in the high one
          int q = fill == Fill::kExtremes ? (rng.integer(0, 1) ? 7 : -8) : int(rng.integer(-8, 7));
          uint8_t &b = row[c / 2];
          if (c % 2 == 0)
            b = uint8_t((b & 0xF0) | (q & 0x0F));
          else
            b = uint8_t((b & 0x0F) | ((q & 0x0F) << 4));
          v = double(q) * w.scales[size_t(r * groups + c / spec.group)];
          w.qabs[size_t(r)] += std::abs(v);
          break;
        }
      }
      w.deq[size_t(r * k + c)] = v;
    }
  }
  return w;
}

// ---- the plugin --------------------------------------------------------------

const parley_kernel_desc *linear_desc(int32_t weight_dtype) {
  static TestHost host;
  const parley_plugin_desc *d = parley_cpu_plugin_entry(PARLEY_PLUGIN_ABI_VERSION, host.services());
  if (!d) return nullptr;
  for (size_t i = 0; i < d->num_kernels; ++i)
    if (d->kernels[i].op == PARLEY_OP_LINEAR && d->kernels[i].weight_dtype == weight_dtype) return &d->kernels[i];
  return nullptr;
}

parley_weight_desc desc_of(const Weight &w) {
  parley_weight_desc d{};
  d.struct_size = sizeof d;
  d.name = "test.weight";
  d.dtype = w.spec.dtype;
  d.quant = w.spec.quant;
  d.n = w.n;
  d.k = w.k;
  d.data = w.bytes.data();
  d.ld_bytes = w.ld_bytes;
  d.scales = w.scales.empty() ? nullptr : w.scales.data();
  d.group_size = w.spec.quant == PARLEY_QUANT_GROUPWISE ? w.spec.group : 0;
  return d;
}

// A prepared weight, released at scope exit.
struct Prepared {
  const parley_kernel_desc *kd = nullptr;
  TestHost *host = nullptr;
  parley_prepared_weight pw{};
  ~Prepared() {
    if (kd && pw.handle) kd->release_weight(host->context(), pw.handle);
  }
};

// ---- the paths -----------------------------------------------------------------

struct Path {
  const char *name;
  Isa cap;
  bool vnni, bf16;
  bool panels = true;  // I8 per-row weights in VNNI panels where VNNI is in use (else the file layout)
};
constexpr Path kPaths[] = {
    {"generic", Isa::kGeneric, false, false},       {"avx2", Isa::kAvx2, false, false},
    {"avx2_int8", Isa::kAvx2, true, false},         {"avx512", Isa::kAvx512, false, false},
    {"avx512_vnni_bf16", Isa::kAvx512, true, true}, {"avx512_vnni_file_layout", Isa::kAvx512, true, true, false}};

// The CPU feature a path needs that this CPU lacks, or nullptr.
const char *missing_feature(const Path &p) {
  const auto &f = parley::cpu::cpu_features();
  if (p.cap == Isa::kAvx2 && !f.avx2) return "AVX2+FMA+F16C";
  if (p.cap == Isa::kAvx512 && !f.avx512) return "AVX-512 F/BW/VL/DQ";
  if (p.vnni && p.cap == Isa::kAvx512 && !f.avx512_vnni) return "AVX512-VNNI";
  if (p.bf16 && !f.avx512_bf16) return "AVX512-BF16";
  return nullptr;
}

struct PathScope {
  explicit PathScope(const Path &p) {
    parley::cpu::set_isa_cap(p.cap, p.vnni, p.bf16);
    parley::cpu::set_i8_panels(p.panels);
  }
  ~PathScope() {
    parley::cpu::set_isa_cap(Isa::kAvx512, true, true);
    parley::cpu::set_i8_panels(true);
  }
};

// Whether this call takes an int8-activation kernel: VNNI (I8 per-row, or I8
// / I4 group-wise with k a multiple of 64) where the path allows it and the
// CPU has it, else the AVX2 one (I8 per-row, or group-wise with groups of a
// multiple of 32). Where VNNI is chosen but cannot serve the shape, the call
// goes to the float paths, not to the AVX2 kernel.
bool int8_activations(const Path &p, const WeightSpec &s, int64_t m, int64_t k) {
  const auto &f = parley::cpu::cpu_features();
  const bool int_weight = s.dtype == PARLEY_DTYPE_I8 || s.dtype == PARLEY_DTYPE_I4;
  if (!p.vnni || !int_weight) return false;
  if (p.cap == Isa::kAvx512 && f.avx512 && f.avx512_vnni) {
    if (m < parley::cpu::kVnniMinM) return false;
    if (s.dtype == PARLEY_DTYPE_I8 && s.quant == PARLEY_QUANT_PER_ROW) return true;
    return s.quant == PARLEY_QUANT_GROUPWISE && k % 64 == 0;
  }
  if (p.cap < Isa::kAvx2 || !f.avx2 || m < parley::cpu::kAvx2IntMinM ||
      m > parley::cpu::avx2_int8_max_m(s.quant != PARLEY_QUANT_PER_ROW))
    return false;
  if (s.dtype == PARLEY_DTYPE_I8 && s.quant == PARLEY_QUANT_PER_ROW) return true;
  return s.quant == PARLEY_QUANT_GROUPWISE && s.group % 32 == 0 && k % s.group == 0;
}

// Whether this call rounds the activations to bf16 (vdpbf16ps, BF16 weights).
bool bf16_activations(const Path &p, const WeightSpec &s, int64_t m) {
  return p.cap == Isa::kAvx512 && p.bf16 && parley::cpu::cpu_features().avx512_bf16 && m > 8 &&
         s.dtype == PARLEY_DTYPE_BF16;
}

// ---- one product against the reference ------------------------------------------

double act_ref(int act, double x) {
  switch (act) {
    case PARLEY_ACT_RELU:
      return x > 0 ? x : 0;
    case PARLEY_ACT_GELU_ERF:
      return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
    case PARLEY_ACT_GELU_TANH:
      return 0.5 * x * (1 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case PARLEY_ACT_SILU:
      return x / (1 + std::exp(-x));
    default:
      return x;
  }
}

struct Epilogue {
  bool bias = false;
  int act = PARLEY_ACT_NONE;
  enum { kNone, kSeparate, kAliasOut } residual = kNone;
};

struct Inputs {
  std::vector<float> x;  // [m, ld_x]
  int64_t ld_x = 0;
};

Inputs random_inputs(int64_t m, int64_t k, Rng &rng) {
  Inputs in;
  in.ld_x = k + 3;
  in.x = rng.uniform(size_t(m * in.ld_x), -2.f, 2.f);
  return in;
}

// Runs LINEAR on one path and checks every output; returns the number of
// elements over their bound (EXPECTs report them).
void check_product(const Path &path, const Weight &w, int64_t m, const Inputs &in, const Epilogue &e, Rng &rng,
                   int threads = 3) {
  const int64_t n = w.n, k = w.k;
  SCOPED_TRACE(testing::Message() << "path " << path.name << " weight " << w.spec.name() << " m=" << m << " n=" << n
                                  << " k=" << k << " act=" << e.act << " bias=" << e.bias
                                  << " residual=" << int(e.residual) << " threads=" << threads);
  const parley_kernel_desc *kd = linear_desc(w.spec.dtype);
  ASSERT_NE(kd, nullptr);
  TestHost host(threads);
  PathScope scope(path);
  Prepared p;
  p.kd = kd;
  p.host = &host;
  p.pw.struct_size = sizeof p.pw;
  const parley_weight_desc d = desc_of(w);
  ASSERT_EQ(kd->prepare_weight(host.context(), &d, &p.pw), PARLEY_KERNEL_OK) << host.last_error();

  const int64_t ld_out = n + 2;
  std::vector<float> bias = rng.uniform(size_t(n));
  std::vector<float> res = rng.uniform(size_t(m * ld_out));
  std::vector<float> out = poisoned(size_t(m * ld_out));
  if (e.residual == Epilogue::kAliasOut)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) out[size_t(i * ld_out + j)] = res[size_t(i * ld_out + j)];

  parley_linear_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.activation = e.act;
  a.m = m, a.n = n, a.k = k;
  a.x = in.x.data();
  a.ld_x = in.ld_x;
  a.weight = p.pw.handle;
  a.bias = e.bias ? bias.data() : nullptr;
  a.residual = e.residual == Epilogue::kSeparate   ? res.data()
               : e.residual == Epilogue::kAliasOut ? out.data()
                                                   : nullptr;
  a.ld_residual = ld_out;
  a.out = out.data();
  a.ld_out = ld_out;
  ASSERT_EQ(kd->run(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();

  const bool q8 = int8_activations(path, w.spec, m, k);
  const bool bf16x = bf16_activations(path, w.spec, m);
  const double u = kF32Unit;
  int bad = 0;
  for (int64_t i = 0; i < m; ++i) {
    const float *xr = in.x.data() + i * in.ld_x;
    double amax = 0;
    for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(double(xr[c])));
    const double sx = amax / 127;
    for (int64_t j = 0; j < n; ++j) {
      double v = 0, S = 0;
      const double *wr = w.deq.data() + j * k;
      for (int64_t c = 0; c < k; ++c) {
        v += wr[c] * xr[c];
        S += std::fabs(wr[c] * xr[c]);
      }
      if (e.bias) {
        v += bias[size_t(j)];
        S += std::fabs(bias[size_t(j)]);
      }
      double dv = gamma_f32(int(k) + 3) * S;
      if (bf16x) dv += 0x1p-8 * S;
      if (q8)
        dv = w.qabs[size_t(j)] * (sx / 2 + 4 * u * amax) + gamma_f32(int(k) / 16 + 4) * 255 * sx * w.qabs[size_t(j)] +
             gamma_f32(4) * (S + w.qabs[size_t(j)] * amax);
      const double av = act_ref(e.act, v);
      const double r = e.residual != Epilogue::kNone ? double(res[size_t(i * ld_out + j)]) : 0.0;
      const double ref = av + r;
      const double tol = 1.13 * dv + 8 * u * (std::fabs(av) + std::fabs(v)) + u * std::fabs(ref) + 1e-30;
      const float got = out[size_t(i * ld_out + j)];
      if (!(std::fabs(double(got) - ref) <= tol)) {
        if (++bad <= 5)
          ADD_FAILURE() << "out[" << i << "][" << j << "] = " << got << ", reference " << ref << ", bound " << tol
                        << (q8 ? " (int8-activation bound)" : " (fp32 bound)");
      }
    }
    for (int64_t j = n; j < ld_out; ++j)
      if (!std::isnan(out[size_t(i * ld_out + j)])) ++bad, ADD_FAILURE() << "padding of row " << i << " written";
  }
  EXPECT_EQ(bad, 0);
}

const WeightSpec kSpecs[] = {
    {PARLEY_DTYPE_F32, PARLEY_QUANT_NONE, 0},       {PARLEY_DTYPE_F16, PARLEY_QUANT_NONE, 0},
    {PARLEY_DTYPE_BF16, PARLEY_QUANT_NONE, 0},      {PARLEY_DTYPE_I8, PARLEY_QUANT_PER_ROW, 0},
    {PARLEY_DTYPE_I8, PARLEY_QUANT_GROUPWISE, 32},  {PARLEY_DTYPE_I8, PARLEY_QUANT_GROUPWISE, 64},
    {PARLEY_DTYPE_I8, PARLEY_QUANT_GROUPWISE, 128}, {PARLEY_DTYPE_I4, PARLEY_QUANT_GROUPWISE, 32},
    {PARLEY_DTYPE_I4, PARLEY_QUANT_GROUPWISE, 64},  {PARLEY_DTYPE_I4, PARLEY_QUANT_GROUPWISE, 128},
};

// Row lengths per weight: odd ones (tails of every vector width) where the
// format allows them, else multiples of the group that are not multiples of 64
// or of 128 (the I4 decode kernel's block: 6 groups of 32 end half-way into one).
std::vector<int64_t> ks_for(const WeightSpec &s) {
  if (s.quant == PARLEY_QUANT_GROUPWISE) return {s.group, 3 * s.group, 4 * s.group, 6 * s.group};
  return {1, 7, 100, 263};
}

class LinearPaths : public testing::TestWithParam<int> {};

TEST_P(LinearPaths, EveryWeightDtypeAndShapeMatchesFloat64Reference) {
  const Path &path = kPaths[GetParam()];
  if (const char *f = missing_feature(path)) GTEST_SKIP() << "this CPU lacks " << f << " (path " << path.name << ")";
  PARLEY_TRACE_BASE_SEED();
  for (const WeightSpec &spec : kSpecs) {
    for (int64_t k : ks_for(spec)) {
      for (int64_t n : {1, 17, 64}) {
        Rng rng(case_seed());
        const Weight w = make_weight(spec, n, k, rng);
        for (int64_t m : {1, 2, 3, 7, 9, 33}) {
          const Inputs in = random_inputs(m, k, rng);
          check_product(path, w, m, in, Epilogue{}, rng);
        }
        if (n == 17 && k == ks_for(spec)[1]) {
          const Inputs in = random_inputs(300, k, rng);
          check_product(path, w, 300, in, Epilogue{}, rng);
        }
      }
    }
  }
}

// Enough activation rows x row length that the batched kernels work on the
// rows in several cache blocks (blocks of ~256 KiB of quantised rows).
TEST_P(LinearPaths, ManyLongActivationRowsSpanSeveralBlocks) {
  const Path &path = kPaths[GetParam()];
  if (const char *f = missing_feature(path)) GTEST_SKIP() << "this CPU lacks " << f << " (path " << path.name << ")";
  PARLEY_TRACE_BASE_SEED();
  for (const WeightSpec &spec : {kSpecs[2], kSpecs[3], kSpecs[5], kSpecs[7]}) {
    Rng rng(case_seed());
    const Weight w = make_weight(spec, 37, 1024, rng);
    const Inputs in = random_inputs(300, 1024, rng);
    check_product(path, w, 300, in, Epilogue{true, PARLEY_ACT_SILU, Epilogue::kSeparate}, rng, 2);
  }
}

TEST_P(LinearPaths, EpilogueBiasActivationResidualAndAliasing) {
  const Path &path = kPaths[GetParam()];
  if (const char *f = missing_feature(path)) GTEST_SKIP() << "this CPU lacks " << f << " (path " << path.name << ")";
  PARLEY_TRACE_BASE_SEED();
  for (const WeightSpec &spec : {kSpecs[0], kSpecs[2], kSpecs[3], kSpecs[7]})
    for (int64_t m : {1, 5, 12, 30})
      for (int act = 0; act < PARLEY_ACT_COUNT_; ++act)
        for (auto r : {Epilogue::kNone, Epilogue::kSeparate, Epilogue::kAliasOut}) {
          Rng rng(case_seed());
          const Weight w = make_weight(spec, 19, 64, rng);
          const Inputs in = random_inputs(m, 64, rng);
          check_product(path, w, m, in, Epilogue{act % 2 == 0, act, r}, rng, 1 + act % 3);
        }
}

TEST_P(LinearPaths, SaturationExtremeWeightsAndOutlierActivations) {
  const Path &path = kPaths[GetParam()];
  if (const char *f = missing_feature(path)) GTEST_SKIP() << "this CPU lacks " << f << " (path " << path.name << ")";
  PARLEY_TRACE_BASE_SEED();
  for (const WeightSpec &spec : {kSpecs[3], kSpecs[4], kSpecs[7], kSpecs[9]})
    for (int64_t m : {2, 9, 40}) {
      Rng rng(case_seed());
      const int64_t k = 256;
      const Weight w = make_weight(spec, 33, k, rng, Fill::kExtremes);
      Inputs in = random_inputs(m, k, rng);
      // One huge value per row (at a different column each time): every other
      // entry of the row quantises to a few levels on the int8 path.
      for (int64_t i = 0; i < m; ++i) in.x[size_t(i * in.ld_x + (i * 37) % k)] = (i % 2 ? -1 : 1) * 3.0e4f;
      check_product(path, w, m, in, Epilogue{true, PARLEY_ACT_NONE, Epilogue::kNone}, rng);
    }
}

TEST_P(LinearPaths, ZeroActivationRowsGiveTheEpilogueOfZero) {
  const Path &path = kPaths[GetParam()];
  if (const char *f = missing_feature(path)) GTEST_SKIP() << "this CPU lacks " << f << " (path " << path.name << ")";
  PARLEY_TRACE_BASE_SEED();
  for (const WeightSpec &spec : kSpecs)
    for (int64_t m : {1, 3, 16, 30}) {
      Rng rng(case_seed());
      const int64_t k = spec.quant == PARLEY_QUANT_GROUPWISE ? 2 * spec.group : 96;
      const Weight w = make_weight(spec, 21, k, rng);
      Inputs in = random_inputs(m, k, rng);
      for (int64_t i = 0; i < m; i += 2) std::fill_n(in.x.begin() + i * in.ld_x, k, 0.f);  // rows 0, 2, ...
      check_product(path, w, m, in, Epilogue{true, PARLEY_ACT_GELU_ERF, Epilogue::kSeparate}, rng);
    }
}

// LINEAR's block statistics (ABI 1.5) of a call: block_max, block_sum, rows
// ld_stats apart (two blocks of poisoned padding a row).
struct StatsRun {
  std::vector<float> out, bmax, bsum;
  int64_t ld_stats = 0;
};

// Runs LINEAR with weight w on `path` for the m rows of `in`, with `bias`
// (or none) and, with `stats`, its block statistics into *stats; returns
// out[m][n] (ld_out = n); fails the test on a kernel error.
std::vector<float> run_linear(const Path &path, const Weight &w, int64_t m, const Inputs &in,
                              const std::vector<float> *bias, StatsRun *stats, int threads) {
  TestHost host(threads);
  PathScope scope(path);
  Prepared p;
  p.kd = linear_desc(w.spec.dtype);
  p.host = &host;
  p.pw.struct_size = sizeof p.pw;
  const parley_weight_desc d = desc_of(w);
  std::vector<float> out = poisoned(size_t(m * w.n));
  EXPECT_EQ(p.kd->prepare_weight(host.context(), &d, &p.pw), PARLEY_KERNEL_OK) << host.last_error();
  if (!p.pw.handle) return out;
  parley_linear_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.m = m, a.n = w.n, a.k = w.k;
  a.x = in.x.data(), a.ld_x = in.ld_x;
  a.weight = p.pw.handle;
  a.bias = bias ? bias->data() : nullptr;
  a.out = out.data(), a.ld_out = w.n;
  if (stats) {
    stats->ld_stats = (w.n + PARLEY_LINEAR_STATS_BLOCK - 1) / PARLEY_LINEAR_STATS_BLOCK + 2;
    stats->bmax = poisoned(size_t(m * stats->ld_stats));
    stats->bsum = poisoned(size_t(m * stats->ld_stats));
    a.block_max = stats->bmax.data(), a.block_sum = stats->bsum.data(), a.ld_stats = stats->ld_stats;
  }
  EXPECT_EQ(p.kd->run(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
  return out;
}

std::vector<float> run_plain(const Path &path, const Weight &w, int64_t m, const Inputs &in, int threads = 3) {
  return run_linear(path, w, m, in, nullptr, nullptr, threads);
}

StatsRun run_with_stats(const Path &path, const Weight &w, int64_t m, const Inputs &in, const std::vector<float> &bias,
                        int threads) {
  StatsRun r;
  r.out = run_linear(path, w, m, in, &bias, &r, threads);
  return r;
}

// Each output is computed the same way whatever weight rows share its
// micro-kernel tile (RowTiles groups each thread's rows with a stride that
// depends on the slice), so the thread count changes no bit: a request's
// result does not depend on the pool size or on the rows around it.
TEST_P(LinearPaths, OutputsAreBitIdenticalWhateverTheThreadCount) {
  const Path &path = kPaths[GetParam()];
  if (const char *f = missing_feature(path)) GTEST_SKIP() << "this CPU lacks " << f << " (path " << path.name << ")";
  PARLEY_TRACE_BASE_SEED();
  for (const WeightSpec &spec : kSpecs)
    for (int64_t n : {5, 50, 101, 1100}) {
      Rng rng(case_seed());
      const int64_t k = spec.quant == PARLEY_QUANT_GROUPWISE ? 3 * spec.group : 100;
      const Weight w = make_weight(spec, n, k, rng);
      // m = 70: the general path's wide tiles (their width follows the thread count).
      for (int64_t m : {1, 2, 5, 70}) {
        if (m == 70 && n < 1000) continue;
        const Inputs in = random_inputs(m, k, rng);
        const std::vector<float> one = run_plain(path, w, m, in, 1);
        for (int threads : {2, 3, 4}) {
          const std::vector<float> got = run_plain(path, w, m, in, threads);
          ASSERT_EQ(got.size(), one.size());
          for (size_t e = 0; e < one.size(); ++e)
            ASSERT_EQ(std::memcmp(&got[e], &one[e], sizeof(float)), 0)
                << path.name << " " << spec.name() << " n=" << n << " m=" << m << " threads=" << threads << " out["
                << e / size_t(n) << "][" << e % size_t(n) << "] " << got[e] << " vs " << one[e];
        }
      }
    }
}

// The statistics describe the outputs the same call wrote, on every path
// and weight dtype (the oneDNN int8 path computes them from its tile, the
// others in a pass after the product): per 64-column block the maximum,
// exact, NaN dropped; the sum of exp(out - max) against float64 within
// 1e-5 relative (64 exps of about 1 ulp each, their float arguments'
// rounding, at most 2.2e-8 absolute per term, and a float sum of 64 terms:
// about 9e-6 of a sum >= 1 in the worst case). A block holding NaN or +inf
// has a NaN sum, a block of -inf sums to 0, padding past the blocks is not
// written, and the outputs equal those of a call without statistics.
TEST_P(LinearPaths, BlockStatisticsDescribeTheOutputs) {
  const Path &path = kPaths[GetParam()];
  if (const char *f = missing_feature(path)) GTEST_SKIP() << "this CPU lacks " << f << " (path " << path.name << ")";
  PARLEY_TRACE_BASE_SEED();
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (const WeightSpec &spec : kSpecs)
    for (int64_t n : {5, 64, 65, 300, 1100}) {
      Rng rng(case_seed());
      const int64_t k = spec.quant == PARLEY_QUANT_GROUPWISE ? 2 * spec.group : 128;
      const Weight w = make_weight(spec, n, k, rng);
      std::vector<float> bias = rng.uniform(size_t(n), -8.f, 8.f);
      if (n >= 300) {  // a NaN in block 1, +inf in block 2, block 3 all -inf
        bias[70] = nan;
        bias[150] = inf;
        std::fill(bias.begin() + 192, bias.begin() + 256, -inf);
      }
      for (int64_t m : {1, 5, 30}) {
        SCOPED_TRACE(testing::Message() << path.name << " " << spec.name() << " n=" << n << " m=" << m);
        const Inputs in = random_inputs(m, k, rng);
        const StatsRun r = run_with_stats(path, w, m, in, bias, 2);
        // The same call without statistics writes the same outputs.
        const std::vector<float> plain = run_linear(path, w, m, in, &bias, nullptr, 2);
        ASSERT_EQ(std::memcmp(plain.data(), r.out.data(), plain.size() * sizeof(float)), 0);
        const int64_t blocks = (n + 63) / 64;
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t b = 0; b < blocks; ++b) {
            const float *o = r.out.data() + i * n + b * 64;
            const int64_t len = std::min<int64_t>(64, n - b * 64);
            float mx = -inf;
            bool bad = false;
            for (int64_t j = 0; j < len; ++j) {
              mx = o[j] > mx ? o[j] : mx;
              bad = bad || std::isnan(o[j]) || o[j] == inf;
            }
            const float got_max = r.bmax[size_t(i * r.ld_stats + b)], got_sum = r.bsum[size_t(i * r.ld_stats + b)];
            ASSERT_EQ(got_max, mx) << "row " << i << " block " << b;
            if (bad) {
              EXPECT_TRUE(std::isnan(got_sum)) << "row " << i << " block " << b << ": " << got_sum;
              continue;
            }
            double want = 0;
            if (mx != -inf)
              for (int64_t j = 0; j < len; ++j) want += std::exp(double(o[j]) - double(mx));
            EXPECT_NEAR(got_sum, want, 1e-5 * want) << "row " << i << " block " << b;
          }
          for (int64_t b = blocks; b < r.ld_stats; ++b) {  // padding: still the poison
            EXPECT_TRUE(std::isnan(r.bmax[size_t(i * r.ld_stats + b)]));
            EXPECT_TRUE(std::isnan(r.bsum[size_t(i * r.ld_stats + b)]));
          }
        }
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Isa, LinearPaths, testing::Range(0, int(std::size(kPaths))),
                         [](const testing::TestParamInfo<int> &i) { return std::string(kPaths[i.param].name); });

// A NaN in x reaches that row's outputs on every path (the int8 path hands the
// product to the float path rather than quantise a NaN), and no other row.
TEST(Linear, NonFiniteActivationsPropagateOnEveryPath) {
  PARLEY_TRACE_BASE_SEED();
  for (const Path &path : kPaths) {
    if (missing_feature(path)) continue;
    for (int64_t m : {1, 12}) {
      Rng rng(case_seed());
      const Weight w = make_weight(kSpecs[3], 8, 64, rng);
      Inputs in = random_inputs(m, 64, rng);
      in.x[5] = std::numeric_limits<float>::quiet_NaN();
      const std::vector<float> out = run_plain(path, w, m, in);
      for (int64_t j = 0; j < 8; ++j) EXPECT_TRUE(std::isnan(out[size_t(j)])) << path.name << " m=" << m;
      for (int64_t i = 1; i < m; ++i)
        for (int64_t j = 0; j < 8; ++j) EXPECT_TRUE(std::isfinite(out[size_t(i * 8 + j)])) << path.name;
    }
  }
}

// The int8-activation kernels of I8 per-row weights compute the dot products
// in exact integers, so every such path (VNNI and AVX2 alike) gives the same
// bits: float(sum_p q_x q_w) * (s_x * s_w), with q_x = round_even(x * (127 /
// max|x|)) in float32. Row lengths cover the vector tails; weights include
// -128. From onednn_i8_min_m() rows VNNI hands the product to oneDNN's int8
// GEMM; it is run here both ways (oneDNN from the default row count, and
// the micro-kernel at every m), with more rows than one GEMM block and more
// outputs than one tile. With AVX512-VNNI, weights are prepared in VNNI
// panels by default, and every m runs on them (path avx512_vnni_bf16); path
// avx512_vnni_file_layout runs the micro-kernel and oneDNN on the file's
// layout. The bias: see below.
TEST(Linear, I8PerRowInt8ActivationPathsGiveTheExactIntegerDot) {
  PARLEY_TRACE_BASE_SEED();
  int ran = 0;
  struct OnednnMinM {
    ~OnednnMinM() { parley::cpu::set_onednn_i8_min_m(-1); }
  } restore;
  for (const Path &path : kPaths)
    for (const int64_t onednn_from : {int64_t{-1}, int64_t{1} << 40}) {
      if (missing_feature(path)) continue;
      parley::cpu::set_onednn_i8_min_m(onednn_from);
      for (int64_t k : {1, 15, 16, 17, 100, 263, 1024}) {
        Rng rng(case_seed());
        const int64_t n = k == 17 ? 1100 : 11;
        const Weight w = make_weight(kSpecs[3], n, k, rng, k == 100 ? Fill::kExtremes : Fill::kRandom);
        for (int64_t m : {1, 5, 13, 16, 40, 300}) {
          if (m == 300 && k != 17 && k != 263) continue;
          if (!int8_activations(path, kSpecs[3], m, k)) continue;
          ++ran;
          const Inputs in = random_inputs(m, k, rng);
          const std::vector<float> out = run_plain(path, w, m, in);
          for (int64_t i = 0; i < m; ++i) {
            const float *xr = in.x.data() + i * in.ld_x;
            float amax = 0.f;
            for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(xr[c]));
            const float inv = amax > 0.f ? 127.f / amax : 0.f, sx = amax / 127.f;
            for (int64_t j = 0; j < n; ++j) {
              int64_t dot = 0;
              const int8_t *wr = reinterpret_cast<const int8_t *>(w.bytes.data() + j * w.ld_bytes);
              for (int64_t c = 0; c < k; ++c) {
                const float t = xr[c] * inv;
                const int64_t q = std::clamp<int64_t>(int64_t(std::nearbyint(t)), -127, 127);
                dot += q * wr[c];
              }
              const float want = float(dot) * (sx * w.scales[size_t(j)]);
              ASSERT_EQ(out[size_t(i * n + j)], want) << path.name << " k=" << k << " m=" << m << " row " << i
                                                      << " output " << j << " oneDNN from m=" << onednn_from;
            }
          }
          // A bias is added to the rounded product as a separate float
          // addition on both paths, with and without block statistics: a
          // product and bias contracted into one FMA on one of them made a
          // logit, and so a beam, depend on how many rows shared the call.
          if (k != 17 && k != 100) continue;
          const std::vector<float> bias = rng.uniform(size_t(n), -3.f, 3.f);
          const std::vector<float> with_bias = run_linear(path, w, m, in, &bias, nullptr, 3);
          const StatsRun r = run_with_stats(path, w, m, in, bias, 3);
          for (int64_t e = 0; e < m * n; ++e) {
            const float want = out[size_t(e)] + bias[size_t(e % n)];
            ASSERT_EQ(with_bias[size_t(e)], want) << path.name << " k=" << k << " m=" << m << " output " << e;
            ASSERT_EQ(r.out[size_t(e)], want) << path.name << " k=" << k << " m=" << m << " output " << e << " (stats)";
          }
        }
      }
    }
  if (ran == 0) GTEST_SKIP() << "this CPU has no int8-activation path (needs AVX2 or AVX512-VNNI)";
}

// With AVX512-VNNI in use, an I8 per-row weight is prepared once in VNNI
// panels (counted in the prepared bytes: at least n * k rounded up to 16 x
// 64); without (or with the panels turned off) only its row sums are kept.
TEST(Linear, I8PerRowWeightsGetVnniPanelsOnlyWhereVnniRuns) {
  PARLEY_TRACE_BASE_SEED();
  Rng rng(case_seed());
  const int64_t n = 40, k = 100;
  const Weight w = make_weight(kSpecs[3], n, k, rng);
  const uint64_t panel_bytes = uint64_t((n + 15) / 16 * 16) * uint64_t((k + 63) / 64 * 64);
  for (const Path &path : kPaths) {
    if (missing_feature(path)) continue;
    TestHost host(1);
    PathScope scope(path);
    const parley_kernel_desc *kd = linear_desc(PARLEY_DTYPE_I8);
    const parley_weight_desc d = desc_of(w);
    parley_prepared_weight pw{};
    pw.struct_size = sizeof pw;
    ASSERT_EQ(kd->prepare_weight(host.context(), &d, &pw), PARLEY_KERNEL_OK) << host.last_error();
    const bool want = path.cap == Isa::kAvx512 && path.vnni && path.panels;
    EXPECT_EQ(pw.bytes >= panel_bytes, want) << path.name << ": " << pw.bytes << " bytes prepared";
    kd->release_weight(host.context(), pw.handle);
  }
}

// ---- the instruction-set knob ------------------------------------------------------

TEST(LinearIsa, KnobParsesAndCapsTheLevelAndTheChoiceIsLogged) {
  Isa isa;
  EXPECT_TRUE(parley::cpu::parse_isa("avx2", &isa));
  EXPECT_EQ(isa, Isa::kAvx2);
  EXPECT_TRUE(parley::cpu::parse_isa("avx512", &isa));
  EXPECT_EQ(isa, Isa::kAvx512);
  EXPECT_TRUE(parley::cpu::parse_isa("native", &isa));
  EXPECT_EQ(isa, Isa::kAvx512);
  EXPECT_TRUE(parley::cpu::parse_isa("generic", &isa));
  EXPECT_EQ(isa, Isa::kGeneric);
  EXPECT_FALSE(parley::cpu::parse_isa("avx1024", &isa));
  EXPECT_FALSE(parley::cpu::parse_isa(nullptr, &isa));

  Rng rng(case_seed());
  const Weight w = make_weight(kSpecs[1], 4, 32, rng);
  const Inputs in = random_inputs(1, 32, rng);
  for (const Path &path : {kPaths[1], kPaths[0]}) {
    TestHost host(1);
    PathScope scope(path);
    const Isa expect = parley::cpu::native_isa() < path.cap ? parley::cpu::native_isa() : path.cap;
    EXPECT_EQ(parley::cpu::active_isa(), expect);
    Prepared p;
    p.kd = linear_desc(PARLEY_DTYPE_F16);
    p.host = &host;
    p.pw.struct_size = sizeof p.pw;
    const parley_weight_desc d = desc_of(w);
    ASSERT_EQ(p.kd->prepare_weight(host.context(), &d, &p.pw), PARLEY_KERNEL_OK);
    std::vector<float> out(4);
    parley_linear_args a{};
    a.struct_size = sizeof a;
    a.dtype = PARLEY_DTYPE_F32;
    a.m = 1, a.n = 4, a.k = 32;
    a.x = in.x.data(), a.ld_x = in.ld_x;
    a.weight = p.pw.handle;
    a.out = out.data(), a.ld_out = 4;
    ASSERT_EQ(p.kd->run(host.context(), &a), PARLEY_KERNEL_OK);
    const std::vector<std::string> logs = host.logs();
    ASSERT_FALSE(logs.empty()) << "the level in use is logged when it changes";
    EXPECT_NE(logs.back().find(std::string("cpu linear kernels: ") + parley::cpu::isa_name(expect)), std::string::npos)
        << logs.back();
  }
}

TEST(LinearIsa, EnvironmentVariableSetsTheCap) {
  const char *saved = std::getenv("PARLEY_CPU_ISA");
  const std::string keep = saved ? saved : "";
  setenv("PARLEY_CPU_ISA", "avx2", 1);
  EXPECT_EQ(parley::cpu::isa_cap_from_environment(), Isa::kAvx2);
  setenv("PARLEY_CPU_ISA", "generic", 1);
  EXPECT_EQ(parley::cpu::isa_cap_from_environment(), Isa::kGeneric);
  setenv("PARLEY_CPU_ISA", "sse9", 1);  // reported on stderr, no cap
  EXPECT_EQ(parley::cpu::isa_cap_from_environment(), Isa::kAvx512);
  unsetenv("PARLEY_CPU_ISA");
  EXPECT_EQ(parley::cpu::isa_cap_from_environment(), Isa::kAvx512);
  if (saved) setenv("PARLEY_CPU_ISA", keep.c_str(), 1);
}

TEST(LinearIsa, ExactEnvironmentVariableTurnsActivationRoundingOff) {
  const char *saved = std::getenv("PARLEY_CPU_EXACT");
  const std::string keep = saved ? saved : "";
  unsetenv("PARLEY_CPU_EXACT");
  EXPECT_FALSE(parley::cpu::exact_from_environment());
  setenv("PARLEY_CPU_EXACT", "0", 1);
  EXPECT_FALSE(parley::cpu::exact_from_environment());
  setenv("PARLEY_CPU_EXACT", "1", 1);
  EXPECT_TRUE(parley::cpu::exact_from_environment());
  setenv("PARLEY_CPU_EXACT", "yes", 1);  // reported on stderr, taken as 1
  EXPECT_TRUE(parley::cpu::exact_from_environment());
  if (saved)
    setenv("PARLEY_CPU_EXACT", keep.c_str(), 1);
  else
    unsetenv("PARLEY_CPU_EXACT");
  // The in-process form: int8 off leaves no int8-activation kernel.
  parley::cpu::set_isa_cap(Isa::kAvx512, false, false);
  EXPECT_FALSE(parley::cpu::use_avx512_vnni());
  EXPECT_FALSE(parley::cpu::use_avx2_int8());
  EXPECT_FALSE(parley::cpu::use_avx512_bf16());
  parley::cpu::set_isa_cap(Isa::kAvx512, true, true);
  EXPECT_EQ(parley::cpu::use_avx2_int8(), parley::cpu::cpu_features().avx2 && !parley::cpu::use_avx512_vnni());
}

// ---- misuse ---------------------------------------------------------------------------

struct LinearMisuse : testing::Test {
  TestHost host{2};
  parley_prepared_weight pw{sizeof(parley_prepared_weight), nullptr, 0, 0};
  parley_kernel_status prepare(int32_t kernel_dtype, const parley_weight_desc *d) {
    host.clear_error();
    const parley_kernel_desc *kd = linear_desc(kernel_dtype);
    parley_kernel_status st = kd->prepare_weight(host.context(), d, &pw);
    if (st == PARLEY_KERNEL_OK) {
      kd->release_weight(host.context(), pw.handle);
      pw.handle = nullptr;
    }
    return st;
  }
};

TEST_F(LinearMisuse, PrepareRejectsBadWeightsWithAMessage) {
  Rng rng(case_seed());
  Weight w8 = make_weight(kSpecs[4], 4, 64, rng);
  parley_weight_desc d = desc_of(w8);
  EXPECT_EQ(prepare(PARLEY_DTYPE_F16, &d), PARLEY_KERNEL_INVALID_ARGUMENT);  // wrong dtype for the kernel
  EXPECT_NE(host.last_error().find("dtype I8"), std::string::npos) << host.last_error();
  EXPECT_EQ(prepare(PARLEY_DTYPE_I8, nullptr), PARLEY_KERNEL_INVALID_ARGUMENT);
  EXPECT_NE(host.last_error().find("NULL"), std::string::npos) << host.last_error();
  d.group_size = 48;
  EXPECT_EQ(prepare(PARLEY_DTYPE_I8, &d), PARLEY_KERNEL_INVALID_ARGUMENT);
  EXPECT_NE(host.last_error().find("group size 48"), std::string::npos) << host.last_error();
  d = desc_of(w8);
  d.data = nullptr;
  EXPECT_EQ(prepare(PARLEY_DTYPE_I8, &d), PARLEY_KERNEL_INVALID_ARGUMENT);
  EXPECT_NE(host.last_error().find("no data"), std::string::npos) << host.last_error();
  d = desc_of(w8);
  d.quant = 7;
  EXPECT_EQ(prepare(PARLEY_DTYPE_I8, &d), PARLEY_KERNEL_UNSUPPORTED);
  EXPECT_FALSE(host.last_error().empty());

  Weight w4 = make_weight(kSpecs[7], 4, 64, rng);
  d = desc_of(w4);
  d.k = 63;
  EXPECT_EQ(prepare(PARLEY_DTYPE_I4, &d), PARLEY_KERNEL_INVALID_ARGUMENT);
  EXPECT_NE(host.last_error().find("odd row length"), std::string::npos) << host.last_error();
  d = desc_of(w4);
  d.quant = PARLEY_QUANT_PER_ROW;
  EXPECT_EQ(prepare(PARLEY_DTYPE_I4, &d), PARLEY_KERNEL_UNSUPPORTED);
  EXPECT_FALSE(host.last_error().empty());
  d = desc_of(w4);
  d.k = 96;  // group 32 divides 96 but the rows hold only 64 elements
  EXPECT_EQ(prepare(PARLEY_DTYPE_I4, &d), PARLEY_KERNEL_INVALID_ARGUMENT);
  EXPECT_NE(host.last_error().find("ld_bytes"), std::string::npos) << host.last_error();
}

TEST_F(LinearMisuse, RunRejectsBadArgumentsWithAMessageOnEveryPath) {
  Rng rng(case_seed());
  const Weight w = make_weight(kSpecs[3], 8, 64, rng);
  const Inputs in = random_inputs(12, 64, rng);
  const parley_kernel_desc *kd = linear_desc(PARLEY_DTYPE_I8);
  Prepared p;
  p.kd = kd;
  p.host = &host;
  p.pw.struct_size = sizeof p.pw;
  const parley_weight_desc d = desc_of(w);
  ASSERT_EQ(kd->prepare_weight(host.context(), &d, &p.pw), PARLEY_KERNEL_OK);
  std::vector<float> out(12 * 8);
  for (const Path &path : kPaths) {
    if (missing_feature(path)) continue;
    PathScope scope(path);
    for (int64_t m : {1, 12}) {
      SCOPED_TRACE(testing::Message() << path.name << " m=" << m);
      parley_linear_args good{};
      good.struct_size = sizeof good;
      good.dtype = PARLEY_DTYPE_F32;
      good.m = m, good.n = 8, good.k = 64;
      good.x = in.x.data(), good.ld_x = in.ld_x;
      good.weight = p.pw.handle;
      good.out = out.data(), good.ld_out = 8;
      EXPECT_EQ(kd->run(host.context(), &good), PARLEY_KERNEL_OK) << host.last_error();
      auto expect_error = [&](parley_linear_args a, parley_kernel_status want, const char *text) {
        host.clear_error();
        EXPECT_EQ(kd->run(host.context(), &a), want);
        EXPECT_NE(host.last_error().find(text), std::string::npos) << host.last_error();
      };
      parley_linear_args a = good;
      a.weight = nullptr;
      expect_error(a, PARLEY_KERNEL_INVALID_ARGUMENT, "weight is NULL");
      a = good;
      a.n = 9;
      expect_error(a, PARLEY_KERNEL_INVALID_ARGUMENT, "but weight 'test.weight' is [8, 64]");
      a = good;
      a.k = 63;
      expect_error(a, PARLEY_KERNEL_INVALID_ARGUMENT, "but weight 'test.weight' is [8, 64]");
      a = good;
      a.dtype = PARLEY_DTYPE_F16;
      expect_error(a, PARLEY_KERNEL_UNSUPPORTED, "dtype F16");
      a = good;
      a.activation = 99;
      expect_error(a, PARLEY_KERNEL_INVALID_ARGUMENT, "unknown activation");
      a = good;
      a.ld_x = 10;
      expect_error(a, PARLEY_KERNEL_INVALID_ARGUMENT, "ld_x");
      a = good;
      a.x = nullptr;
      expect_error(a, PARLEY_KERNEL_INVALID_ARGUMENT, "NULL");
      a = good;
      a.m = -1;
      expect_error(a, PARLEY_KERNEL_INVALID_ARGUMENT, "m (-1)");
      std::vector<float> stats(8);
      a = good;
      a.block_max = stats.data();
      expect_error(a, PARLEY_KERNEL_INVALID_ARGUMENT, "both be set or both NULL");
      a.block_sum = stats.data() + 4;
      a.ld_stats = 0;
      expect_error(a, PARLEY_KERNEL_INVALID_ARGUMENT, "ld_stats (0) < ceil(n / 64) = 1");
      // A 1.2-1.4 host's struct ends before the statistics: whatever lies
      // past struct_size is not read.
      struct {
        parley_linear_args args;
        char tail[64];
      } old{};
      std::memcpy(&old.args, &good, PARLEY_LINEAR_ARGS_SIZE_V1_2);
      old.args.struct_size = PARLEY_LINEAR_ARGS_SIZE_V1_2;
      std::memset(reinterpret_cast<char *>(&old.args) + PARLEY_LINEAR_ARGS_SIZE_V1_2, 0x5a,
                  sizeof old.args - PARLEY_LINEAR_ARGS_SIZE_V1_2);
      EXPECT_EQ(kd->run(host.context(), &old.args), PARLEY_KERNEL_OK) << host.last_error();
      old.args.struct_size = PARLEY_LINEAR_ARGS_SIZE_V1_2 - 1;
      host.clear_error();
      EXPECT_EQ(kd->run(host.context(), &old.args), PARLEY_KERNEL_INVALID_ARGUMENT);
    }
  }
}

}  // namespace
}  // namespace parley::test
