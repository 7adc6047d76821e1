// Reduced-precision storage. The float16, bfloat16, int8 and int4 copies of a
// few tiny models (tests/parity/models/<name>.<dtype>.parley, same checkpoint
// as <name>.parley) are checked two ways:
//  * Storage.*: against the float32 transformers goldens: max |Δlogit| within
//    a per-dtype storage tolerance, float16 (bfloat16 where the margin allows)
//    greedy tokens equal to the golden's.
//  * SameRounding.*: against goldens/stored/<name>.<dtype>.json, the float64
//    numpy reference (tests/parity/reference.py) over the very same file, so
//    the weights carry exactly the same rounding: logits within the float32
//    arithmetic tolerance and greedy tokens IDENTICAL (asserted for every
//    file). Run by the ctest entry test_model_same_rounding with
//    PARLEY_CPU_ISA=avx2 PARLEY_CPU_EXACT=1 (see kSameRoundingTolerance).
// Tolerances, margins and the measured errors are in tests/parity/README.md.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <ostream>
#include <tuple>

#include "parity_util.hpp"

namespace {

namespace fs = std::filesystem;

// max |Δlogit| against the float32 golden, all valid positions, all
// evaluation paths (whole sequence, padded batch, KV cache). About 2-3x the
// worst measured over llama / qwen3 / marian (0.0070 / 0.074, marian) for
// float16 / bfloat16 storage; int8 files (Linear weights and, since issue 11,
// token embeddings I8) measure 0.269 (marian; 0.16 with F32 embeddings), so
// int8 headroom is small. The same values test_convert.py uses for the numpy
// reference, so one set of storage tolerances is documented
// (tests/parity/README.md).
//
// bfloat16 also covers the compute: since issue 11 the cpu plugin multiplies
// bf16 weights with vdpbf16ps above 8 rows (prefill, batches), rounding the
// activations to bf16 too (relative 2^-8 per product, the same order as the
// weights' own rounding): marian's worst grew from 0.074 to 0.19, so 3e-1.
//
// int8 likewise: the VNNI path (I8/I4 weights, any m) quantises activations per row
// to int8 (error <= s_x/2 * sum|w| per output, s_x = max|x|/127: the mirror
// image of the weights' own s_w/2 * sum|x|), so storage + compute is bounded
// by about twice the storage-only tolerance: 6e-1. Measured: marian 0.357
// (0.269 with F32 compute), llama 0.079, qwen3 0.10.
const std::map<std::string, double> kTolerance = {
    {"float16", 2e-2},
    {"bfloat16", 3e-1},
    {"int8", 6e-1},
    // Linear weights I4 group-wise, embeddings/lm_head I8 per row. Same value
    // as TOLERANCE_INT4 in test_convert.py (numpy simulation over all thirteen
    // models at g32/g64: worst 2.47, gpt2); the three files here measure
    // 0.685 (llama g32), 0.85 (qwen3 g64), 2.39 (marian g32; 2.35 with F32
    // compute, the rest is the VNNI path's int8 activations).
    {"int4", 3.5},
};

// Where greedy tokens must equal the float32 golden's. float16: every model.
// Note llama row 0's last step is a near-tie in float32 (top-1 minus top-2 =
// 0.0019) and qwen3's tightest step is 0.008: float16 keeps both (measured),
// so a flip there after a runtime change is a near-tie, not necessarily a bug
// — check the margin before touching the tolerance. bfloat16: marian only
// (its tightest greedy margin, 0.205, exceeds twice the measured bfloat16
// error); llama/qwen3 bfloat16 and all int8 are reported, not asserted.
bool greedy_must_match(const std::string &name, const std::string &dtype) {
  return dtype == "float16" || (dtype == "bfloat16" && name == "marian");
}

// Storage dtype a reduced-precision file must actually contain.
const std::map<std::string, parley_dtype> kStored = {
    {"float16", PARLEY_DTYPE_F16},
    {"bfloat16", PARLEY_DTYPE_BF16},
    {"int8", PARLEY_DTYPE_I8},
    {"int4", PARLEY_DTYPE_I4},
};

struct Case {
  std::string name;   // golden
  std::string dtype;  // storage type
  std::string file() const { return "models/" + name + "." + dtype + ".parley"; }
};

// Every models/<name>.<dtype>.parley with a golden <name>.json.
std::vector<Case> storage_cases() {
  std::vector<Case> cases;
  std::string dir = parity::env("PARLEY_PARITY_DIR");
  for (const auto &e : fs::directory_iterator(dir + "/models")) {
    fs::path p = e.path();
    if (p.extension() != ".parley") continue;
    fs::path stem = p.stem();  // <name>.<dtype>
    std::string dtype = stem.extension().string();
    if (dtype.empty()) continue;  // float32 <name>.parley: test_parity.cpp
    dtype = dtype.substr(1);
    std::string name = stem.stem().string();
    if (!kTolerance.count(dtype)) throw std::runtime_error("unknown storage type in " + p.string());
    if (!fs::exists(dir + "/goldens/" + name + ".json")) throw std::runtime_error("no golden for " + p.string());
    if (!fs::exists(dir + "/goldens/stored/" + name + "." + dtype + ".json"))
      throw std::runtime_error("no same-rounding reference for " + p.string() +
                               " (run tests/parity/make_quantized.py)");
    cases.push_back({name, dtype});
  }
  std::sort(cases.begin(), cases.end(),
            [](const Case &a, const Case &b) { return std::tie(a.name, a.dtype) < std::tie(b.name, b.dtype); });
  return cases;
}

void PrintTo(const Case &c, std::ostream *os) {
  *os << c.file();
}

class Storage : public ::testing::TestWithParam<Case> {};

TEST_P(Storage, FileHoldsItsStorageType) {
  const Case &c = GetParam();
  auto l = parity::load(c.name, c.file());
  size_t n = 0;
  for (const auto &t : l->model->impl.file->tensors()) n += t.dtype == kStored.at(c.dtype);
  EXPECT_GT(n, 0u) << c.file() << " has no tensor stored as " << c.dtype;
}

TEST_P(Storage, LogitsWithinTolerance) {
  const Case &c = GetParam();
  auto l = parity::load(c.name, c.file());
  double worst = parity::worst_logit_diff(*l);
  double tol = kTolerance.at(c.dtype);
  std::printf("%s %s: worst |logit - transformers f32| = %.3g (tolerance %.3g)\n", c.name.c_str(), c.dtype.c_str(),
              worst, tol);
  EXPECT_LE(worst, tol) << c.file();
}

TEST_P(Storage, GreedyTokens) {
  const Case &c = GetParam();
  auto l = parity::load(c.name, c.file());
  const auto &g = l->golden["greedy"];
  parley::DecodingOptions o = parity::options_from(g["settings"]);
  size_t width = 0;
  auto hyps = parity::run_generate(*l, o, &width);
  ASSERT_EQ(hyps.size(), g["sequences"].size());
  size_t same = 0;
  for (size_t b = 0; b < hyps.size(); ++b) {
    ASSERT_EQ(hyps[b].size(), 1u);
    auto want = parity::generated_part(g["sequences"][b], width, o.eos_token_ids);
    bool eq = hyps[b][0].tokens == want;
    same += eq;
    if (greedy_must_match(c.name, c.dtype)) {
      EXPECT_TRUE(eq) << c.file() << " row " << b << ": greedy tokens differ from the float32 golden "
                      << "(see the margins in tests/parity/README.md)";
    }
  }
  std::printf("%s %s: greedy rows equal to transformers f32: %zu/%zu (%s)\n", c.name.c_str(), c.dtype.c_str(), same,
              hyps.size(), greedy_must_match(c.name, c.dtype) ? "asserted" : "reported only");
}

// --- against the same-rounding float64 reference ------------------------------

// max |Δlogit| against the float64 reference over the same stored weights.
// What is left is the runtime's float32 arithmetic: F16/BF16 widen to F32
// exactly, q * scale is one float32 rounding (2^-24 relative) per weight, and
// the sums run in F32 — the situation of the float32 parity test
// (test_parity.cpp, C++ f32 vs transformers f32), whose tolerance 1e-4 is
// kept: the forward-error bound of a length-k float32 dot product,
// k * 2^-24 * sum|w x| (k <= 64 here: 3.8e-6 relative to sum|w x|), carried
// loosely through 2-3 layers and the norms onto logits of magnitude <= ~15,
// stays below it, and the worst measured over all twelve files is 9.1e-6
// (marian int4; README). Anything that misreads a weight moves the logits by
// far more (README: every I4 group read with its row's first scale gives 3.6
// and 4.5).
// This holds only where the plugin computes in F32 on the dequantised
// weights: the cpu plugin's int8-activation (VNNI or AVX2, I8/I4 weights, any
// m) and bf16-activation (m > 8) paths add a bounded but far larger error, so
// the ctest entry keeps to the exact paths with PARLEY_CPU_ISA=avx2
// PARLEY_CPU_EXACT=1 (AVX2 GEMV for m <= 8, sgemm over dequantised tiles
// above); those paths are tested
// against their own derived bounds in tests/kernels/test_linear.cpp.
constexpr double kSameRoundingTolerance = 1e-4;

parity::json same_rounding_reference(const Case &c) {
  std::string path = parity::env("PARLEY_PARITY_DIR") + "/goldens/stored/" + c.name + "." + c.dtype + ".json";
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  parity::json ref = parity::json::parse(f);
  if (ref["model_file"].get<std::string>() != c.file()) throw std::runtime_error(path + " is not about " + c.file());
  return ref;
}

class SameRounding : public ::testing::TestWithParam<Case> {};

TEST_P(SameRounding, LogitsWithinFloat32Arithmetic) {
  const Case &c = GetParam();
  auto l = parity::load(c.name, c.file());
  parity::json ref = same_rounding_reference(c);
  double worst = parity::worst_logit_diff(*l, &ref["logits"]["values"]);
  std::printf("%s %s: worst |logit - float64 reference over the same file| = %.3g (tolerance %.3g)\n", c.name.c_str(),
              c.dtype.c_str(), worst, kSameRoundingTolerance);
  EXPECT_LE(worst, kSameRoundingTolerance) << c.file();
}

TEST_P(SameRounding, GreedyTokensIdentical) {
  const Case &c = GetParam();
  auto l = parity::load(c.name, c.file());
  parity::json ref = same_rounding_reference(c);
  parley::DecodingOptions o = parity::options_from(l->golden["greedy"]["settings"]);
  size_t width = 0;
  auto hyps = parity::run_generate(*l, o, &width);
  const auto &seqs = ref["greedy"]["sequences"];
  ASSERT_EQ(hyps.size(), seqs.size());
  for (size_t b = 0; b < hyps.size(); ++b) {
    ASSERT_EQ(hyps[b].size(), 1u);
    auto want = parity::generated_part(seqs[b], width, o.eos_token_ids);
    const auto &margin = ref["greedy"]["min_margin"][b];
    EXPECT_EQ(hyps[b][0].tokens, want) << c.file() << " row " << b << ": greedy tokens differ from the float64 "
                                       << "reference over the same file (its smallest top-1 minus top-2 margin: "
                                       << margin.dump() << ")";
    std::printf("%s %s row %zu: greedy tokens identical to the same-rounding reference: %s (margin %s)\n",
                c.name.c_str(), c.dtype.c_str(), b, hyps[b][0].tokens == want ? "yes" : "NO", margin.dump().c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(ReducedPrecision, SameRounding, ::testing::ValuesIn(storage_cases()),
                         [](const ::testing::TestParamInfo<Case> &i) { return i.param.name + "_" + i.param.dtype; });

INSTANTIATE_TEST_SUITE_P(ReducedPrecision, Storage, ::testing::ValuesIn(storage_cases()),
                         [](const ::testing::TestParamInfo<Case> &i) { return i.param.name + "_" + i.param.dtype; });

}  // namespace
