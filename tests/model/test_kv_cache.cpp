// The KV cache in F16 / I8 (parley_model_options.kv_cache_dtype): a
// decoder-only (llama: GQA, rotary) and an encoder-decoder (marian) parity
// model run with each cache type; logits against the same model's F32-cache
// run, greedy tokens reported (and for F16 asserted while the F32 run's
// top-2 margin exceeds twice the tolerance); beam search (reorder with I8
// scales), grow(), and the cache's bytes per token.
//
// Tolerance. A cached value is stored with relative error u (F16: 2^-11,
// round to nearest) or absolute error max|row| / 254 (I8: half a step of
// max|row| / 127), i.e. at most e = u resp. 1/254 of its row's largest value.
// An attention output is a convex combination of V rows, so V's error moves
// it by <= e * max|v|; K's error moves each score by <= e * scale * |q|_1 *
// max|k| and the probabilities by twice that (softmax is 1-Lipschitz per
// score in L1, both directions), so with these models' scores of order one
// the attention output moves by ~3e relative. That perturbation enters the
// residual stream of each of the (1 or 2) decoder layers and reaches the
// logits through the output projection with gain ~1 (random init, layer
// norms): we allow 3e per layer, twice (K and V paths add), plus a factor 2
// for the second-order terms: tol = 12 * layers * e * max|logit|.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "parity_util.hpp"

namespace {

using parity::json;

std::string str(const std::vector<int32_t> &v) {
  std::string s;
  for (int32_t x : v) s += (s.empty() ? "" : " ") + std::to_string(x);
  return s;
}

const char *name(parley_dtype d) {
  return d == PARLEY_DTYPE_F16 ? "f16" : d == PARLEY_DTYPE_BF16 ? "bf16" : d == PARLEY_DTYPE_I8 ? "int8" : "f32";
}

// The narrow cache types to run: F16, BF16 and I8, or those PARLEY_TEST_KV_DTYPES
// names ("f16", "bf16", "int8", comma-separated; tests/gpu/run.sh names both when it
// runs the suite on the cuda device).
std::vector<parley_dtype> narrow_dtypes() {
  const char *env = std::getenv("PARLEY_TEST_KV_DTYPES");
  if (!env || !*env) return {PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16, PARLEY_DTYPE_I8};
  std::vector<parley_dtype> out;
  const std::string list = env;
  for (size_t at = 0; at <= list.size();) {
    const size_t end = std::min(list.find(',', at), list.size());
    const std::string item = list.substr(at, end - at);
    if (item == "f16")
      out.push_back(PARLEY_DTYPE_F16);
    else if (item == "bf16")
      out.push_back(PARLEY_DTYPE_BF16);
    else if (item == "int8")
      out.push_back(PARLEY_DTYPE_I8);
    else
      ADD_FAILURE() << "PARLEY_TEST_KV_DTYPES: unknown cache type '" << item << "' (f16, bf16, int8)";
    at = end + 1;
  }
  return out;
}

class KvCache : public ::testing::TestWithParam<std::string> {};

TEST_P(KvCache, LogitsNearTheF32CacheAndGreedyTokens) {
  auto ref = parity::load(GetParam());
  const parity::Logits base = parity::collect(*ref->transformer, ref->golden);
  double max_logit = 0;
  for (float x : base.values) max_logit = std::max(max_logit, std::fabs(double(x)));
  const int64_t layers = ref->transformer->decoder_params().layers;
  std::vector<float> margins;
  const int kSteps = 8;
  const auto base_tokens = parity::greedy(*ref->transformer, ref->golden, kSteps, &margins);
  std::printf("%s f32 cache: greedy %s\n", GetParam().c_str(), str(base_tokens).c_str());
  for (parley_dtype dt : narrow_dtypes()) {
    auto l = parity::load(GetParam(), "", dt);
    ASSERT_EQ(l->transformer->kv_dtype(), dt);
    const parity::Logits got = parity::collect(*l->transformer, l->golden);
    ASSERT_EQ(got.values.size(), base.values.size());
    const double worst = parity::worst_diff(got.values, base.values);
    const double e = dt == PARLEY_DTYPE_F16    ? std::ldexp(1.0, -11)
                     : dt == PARLEY_DTYPE_BF16 ? std::ldexp(1.0, -8)
                                               : 1.0 / 254;
    const double tol = 12.0 * double(layers) * e * max_logit;
    const auto tokens = parity::greedy(*l->transformer, l->golden, kSteps, nullptr);
    std::printf("%s %s cache: worst |logit - f32 cache| = %.3g (tolerance %.3g, max |logit| %.3g); greedy %s\n",
                GetParam().c_str(), name(dt), worst, tol, max_logit, str(tokens).c_str());
    EXPECT_LE(worst, tol) << GetParam() << " " << name(dt);
    EXPECT_GT(worst, 0.0) << GetParam() << " " << name(dt) << ": no rounding at all? the cache is not " << name(dt);
    if (dt == PARLEY_DTYPE_F16) {  // identical while the f32 run's margin exceeds the tolerance twice over
      for (size_t i = 0; i < tokens.size() && margins[i] > 2 * tol; ++i)
        EXPECT_EQ(tokens[i], base_tokens[i]) << GetParam() << " f16 greedy step " << i;
    }
  }
}

TEST_P(KvCache, BeamSearchRunsOnNarrowCaches) {
  // Beam search reorders the cache (and the I8 scales) every step; with F16
  // its tokens match the golden's (the models' beam margins are wide).
  for (parley_dtype dt : narrow_dtypes()) {
    auto l = parity::load(GetParam(), "", dt);
    size_t total = 0;
    const size_t same = parity::beam_hypotheses_matching(*l, &total);
    std::printf("%s %s cache: beam hypotheses equal to transformers' f32: %zu of %zu\n", GetParam().c_str(), name(dt),
                same, total);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, KvCache, ::testing::Values("llama", "marian"),
                         [](const auto &param_info) { return param_info.param; });

// Reorder and grow move the rows with their I8 scales: a reordered state
// continues like one prefilled in the new order (to rounding: the rows sit
// elsewhere in the GEMMs), a grown one exactly like one that never moved.
TEST(KvCacheState, ReorderAndGrowKeepRowsAndScales) {
  for (parley_dtype dt : narrow_dtypes()) {
    auto l = parity::load("llama", "", dt);
    const parley::Transformer &t = *l->transformer;
    const std::vector<std::vector<int32_t>> hist = {{5, 9, 17}, {3, 44, 2}, {90, 1, 7}};
    auto flat = [&](std::vector<int> order) {
      std::vector<int32_t> f;
      for (int r : order) f.insert(f.end(), hist[size_t(r)].begin(), hist[size_t(r)].end());
      return f;
    };
    auto st = t.start(3, 8);
    t.step(st, flat({0, 1, 2}), 3);
    t.reorder(st, {2, 0, 0, 1});  // grows to 4 rows: hist 2, 0, 0, 1
    t.reorder(st, {0, 3, 1});     // in place with a staged parent: hist 2, 1, 0
    auto got = t.step(st, {11, 12, 13}, 1, true);
    auto ref = t.start(3, 8);
    t.step(ref, flat({2, 1, 0}), 3);
    auto want = t.step(ref, {11, 12, 13}, 1, true);
    ASSERT_EQ(got.size(), want.size());
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
    EXPECT_LE(worst, 1e-4) << name(dt) << ": reorder lost rows or scales";

    auto one = t.start(1, 3);
    t.step(one, {5, 9, 17}, 3);
    t.grow(one, 6);
    auto grown = t.step(one, {11}, 1, true);
    auto fresh = t.start(1, 6);
    t.step(fresh, {5, 9, 17}, 3);
    EXPECT_EQ(grown, t.step(fresh, {11}, 1, true)) << name(dt) << ": grow lost rows or scales";
  }
}

// Bytes per cached token: F16 half of F32, I8 a quarter plus one f32 scale
// per head row; what start() allocates is what check_kv_bytes() counts.
TEST(KvCacheState, BytesPerToken) {
  for (parley_dtype dt : {PARLEY_DTYPE_F32, PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16, PARLEY_DTYPE_I8}) {
    auto l = parity::load("llama", "", dt);
    const parley::Transformer &t = *l->transformer;
    const auto &p = t.decoder_params();
    const uint64_t rows = uint64_t(p.layers) * 2 * uint64_t(p.kv_heads), f32 = rows * uint64_t(p.head_dim) * 4;
    EXPECT_EQ(t.kv_bytes_per_token(PARLEY_DTYPE_F32), f32);
    EXPECT_EQ(t.kv_bytes_per_token(PARLEY_DTYPE_F16), f32 / 2);
    EXPECT_EQ(t.kv_bytes_per_token(PARLEY_DTYPE_BF16), f32 / 2);
    EXPECT_EQ(t.kv_bytes_per_token(PARLEY_DTYPE_I8), f32 / 4 + rows * 4);
    const uint64_t bytes = t.check_kv_bytes(3, 10);
    EXPECT_EQ(bytes, 30 * t.kv_bytes_per_token(dt));
    auto st = t.start(3, 10);
    uint64_t allocated = 0;
    for (auto *arrays : {&st.k, &st.v})
      for (auto &a : *arrays) allocated += a.size();
    for (auto *arrays : {&st.k_scales, &st.v_scales})
      for (auto &a : *arrays) allocated += a.size() * sizeof(float);
    EXPECT_EQ(allocated, bytes) << name(dt);
    std::printf("llama (head_dim %lld) %s cache: %llu bytes per token, %.2fx less than f32\n",
                static_cast<long long>(p.head_dim), name(dt), static_cast<unsigned long long>(t.kv_bytes_per_token(dt)),
                double(f32) / double(t.kv_bytes_per_token(dt)));
  }
}

TEST(KvCacheState, UnknownDtypeIsInvalid) {
  try {
    parity::load("llama", "", PARLEY_DTYPE_I4);
    FAIL() << "an I4 KV cache was accepted";
  } catch (const parley::Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("kv_cache_dtype"), std::string::npos) << e.what();
  }
}

}  // namespace
