// Reduced-precision storage against the float32 transformers goldens: the
// float16, bfloat16 and int8 copies of a few tiny models
// (tests/parity/models/<name>.<dtype>.parley, same checkpoint as
// <name>.parley) must stay within a per-dtype max |Δlogit| of the golden, and
// float16 must still decode the golden's greedy tokens (bfloat16 too where
// the margin allows). Tolerances and the
// measured errors are in tests/parity/README.md.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <ostream>
#include <tuple>

#include "parity_util.hpp"

namespace {

namespace fs = std::filesystem;

// max |Δlogit| against the float32 golden, all valid positions, all
// evaluation paths (whole sequence, padded batch, KV cache). About 2-3x the
// worst measured over llama / qwen3 / marian (0.0070 / 0.074 / 0.16, all
// marian), and the same values test_convert.py uses for the numpy reference,
// so one set of storage tolerances is documented (tests/parity/README.md).
//
// bfloat16 also covers the compute: since issue 11 the cpu plugin multiplies
// bf16 weights with vdpbf16ps above 8 rows (prefill, batches), rounding the
// activations to bf16 too (relative 2^-8 per product, the same order as the
// weights' own rounding): marian's worst grew from 0.074 to 0.19, so 3e-1.
const std::map<std::string, double> kTolerance = {
    {"float16", 2e-2},
    {"bfloat16", 3e-1},
    {"int8", 3e-1},
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

INSTANTIATE_TEST_SUITE_P(ReducedPrecision, Storage, ::testing::ValuesIn(storage_cases()),
                         [](const ::testing::TestParamInfo<Case> &i) { return i.param.name + "_" + i.param.dtype; });

}  // namespace
