// 16-bit activations (parley_model_options.activation_dtype F16 / BF16):
// every op's output rounded to half precision (or bfloat16) between kernels,
// the KV cache of the same type.
//
// On a device without F16 kernels (the cpu plugin computes in F32) the model
// is refused at load and at bind, naming the missing op. On a device with
// them (tests/device_guard's "guarded" device: the cpu plugin's F32 kernels
// with F16 inputs and outputs), each family's logits against the same
// model's F32 run, greedy tokens while the F32 run's margin allows, and beam
// search.
//
// Tolerance. Each kernel output is rounded once to F16: relative error
// u = 2^-11 of that value (BF16: u = 2^-8). A decoder layer rounds about 12 tensors (norm,
// q/k/v, rotary, attention, o_proj, residual, norm, gate/up, activation,
// down, residual), the embedding, final norm and logits 3 more; each error
// reaches the logits with gain ~1 (random init, layer norms: the same
// argument as test_kv_cache.cpp), plus the F16 cache's own (12 u per layer
// there). With a factor 2 for second-order terms and gains above one:
// tol = 2 * (24 * layers + 3) * u * max|logit| (encoder layers count too).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "parity_util.hpp"

namespace {

using parity::json;

std::string device() {
  const char *d = std::getenv("PARLEY_TEST_DEVICE");
  return d && *d ? d : "cpu";
}

// Whether the test device serves 16-bit activations: the guarded device does,
// the cpu device does not (what it says instead is tested below).
bool device_has_16bit() {
  return device() != "cpu";
}

std::string str(const std::vector<int32_t> &v) {
  std::string s;
  for (int32_t x : v) s += (s.empty() ? "" : " ") + std::to_string(x);
  return s;
}

TEST(Activations16Bit, CpuDeviceRefusesNamingTheOp) {
  if (device_has_16bit()) GTEST_SKIP() << "device '" << device() << "' serves 16-bit activations";
  for (parley_dtype dt : {PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16}) {
    try {
      parity::load("llama", "", dt, dt);
      ADD_FAILURE() << "16-bit activations bound on the cpu device";
    } catch (const parley::Error &e) {
      EXPECT_EQ(e.status(), PARLEY_ERROR_UNSUPPORTED) << e.what();
      const std::string want = std::string("has no ") + (dt == PARLEY_DTYPE_F16 ? "f16" : "bf16") + " kernel for op";
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
}

TEST(Activations16Bit, LoadOptionsAreChecked) {
  parley_runtime *rt = parity::build_runtime();
  const std::string path =
      parity::env("PARLEY_PARITY_DIR") + "/" + parity::load("llama")->golden["model_file"].get<std::string>();
  auto try_load = [&](int32_t act, int32_t kv) {
    parley_model_options mo;
    parley_model_options_init(&mo);
    mo.activation_dtype = act;
    mo.kv_cache_dtype = kv;
    parley_model *m = nullptr;
    parley_status st = parley_model_load_file(rt, path.c_str(), &mo, &m);
    std::string msg = st == PARLEY_OK ? "" : parley_last_error();
    parley_model_free(m);
    return std::make_pair(st, msg);
  };
  auto [st, msg] = try_load(PARLEY_DTYPE_F16, PARLEY_DTYPE_F32);
  EXPECT_EQ(st, PARLEY_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(msg.find("kv_cache_dtype"), std::string::npos) << msg;
  std::tie(st, msg) = try_load(PARLEY_DTYPE_F16, PARLEY_DTYPE_F16);  // the cpu device: no F16 kernels
  EXPECT_EQ(st, PARLEY_ERROR_UNSUPPORTED);
  EXPECT_NE(msg.find("device 'cpu' has no f16 kernel for op"), std::string::npos) << msg;
  std::tie(st, msg) = try_load(PARLEY_DTYPE_BF16, PARLEY_DTYPE_BF16);
  EXPECT_EQ(st, PARLEY_ERROR_UNSUPPORTED);
  EXPECT_NE(msg.find("device 'cpu' has no bf16 kernel for op"), std::string::npos) << msg;
  std::tie(st, msg) = try_load(PARLEY_DTYPE_F32, 9);
  EXPECT_EQ(st, PARLEY_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(msg.find("options->kv_cache_dtype (9)"), std::string::npos) << msg;
  std::tie(st, msg) = try_load(77, PARLEY_DTYPE_F16);
  EXPECT_EQ(st, PARLEY_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(msg.find("options->activation_dtype (77)"), std::string::npos) << msg;
  std::tie(st, msg) = try_load(PARLEY_DTYPE_F32, PARLEY_DTYPE_F32);
  EXPECT_EQ(st, PARLEY_OK) << msg;
  parley_runtime_free(rt);
}

class Activations16BitFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(Activations16BitFamily, LogitsNearF32AndGreedyTokens) {
  if (!device_has_16bit()) GTEST_SKIP() << "device '" << device() << "' has no 16-bit kernels (checked above)";
  auto ref = parity::load(GetParam());
  const parity::Logits base = parity::collect(*ref->transformer, ref->golden);
  double max_logit = 0;
  for (float x : base.values) max_logit = std::max(max_logit, std::fabs(double(x)));
  const auto &t32 = *ref->transformer;
  const int64_t layers = t32.decoder_params().layers + (t32.encoder_decoder() ? t32.encoder_params().layers : 0);
  std::vector<float> margins;
  const int kSteps = 8;
  const auto base_tokens = parity::greedy(t32, ref->golden, kSteps, &margins);

  for (parley_dtype dt : {PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16}) {
    const char *name = dt == PARLEY_DTYPE_F16 ? "f16" : "bf16";
    auto l = parity::load(GetParam(), "", dt, dt);
    ASSERT_EQ(l->transformer->act_dtype(), dt);
    const parity::Logits got = parity::collect(*l->transformer, l->golden);
    ASSERT_EQ(got.values.size(), base.values.size());
    const double worst = parity::worst_diff(got.values, base.values);
    const double u = std::ldexp(1.0, dt == PARLEY_DTYPE_F16 ? -11 : -8);
    const double tol = 2.0 * (24.0 * double(layers) + 3.0) * u * max_logit;
    const auto tokens = parity::greedy(*l->transformer, l->golden, kSteps, nullptr);
    std::printf(
        "%s %s activations: worst |logit - f32| = %.3g (tolerance %.3g, max |logit| %.3g); greedy %s (f32 %s)\n",
        GetParam().c_str(), name, worst, tol, max_logit, str(tokens).c_str(), str(base_tokens).c_str());
    EXPECT_LE(worst, tol) << name;
    EXPECT_GT(worst, 0.0) << "no rounding at all? the activations are not " << name;
    for (size_t i = 0; i < tokens.size() && margins[i] > 2 * tol; ++i)
      EXPECT_EQ(tokens[i], base_tokens[i]) << name << " greedy step " << i;
  }
}

TEST_P(Activations16BitFamily, BeamSearchMatchesTransformers) {
  if (!device_has_16bit()) GTEST_SKIP() << "device '" << device() << "' has no 16-bit kernels (checked above)";
  for (parley_dtype dt : {PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16}) {
    const char *name = dt == PARLEY_DTYPE_F16 ? "f16" : "bf16";
    auto l = parity::load(GetParam(), "", dt, dt);
    size_t total = 0;
    const size_t same = parity::beam_hypotheses_matching(*l, &total);
    std::printf("%s %s activations: beam hypotheses equal to transformers' f32: %zu of %zu\n", GetParam().c_str(), name,
                same, total);
    // Reported, not asserted: a hypothesis may change where two beams' scores
    // are within the tolerance above (the F16 cache test does the same).
    EXPECT_GT(same, 0u) << "no beam hypothesis survives " << name << " activations";
  }
}

// Every parity golden: every family and code path of the Transformer (GQA,
// rotary variants, q/k norms, sliding windows, learned and sinusoidal
// positions, pre- and post-norm, tied and untied heads, encoder-decoder
// with shared and separate vocabularies, logits biases).
INSTANTIATE_TEST_SUITE_P(Families, Activations16BitFamily, ::testing::ValuesIn(parity::golden_names()),
                         [](const auto &param_info) { return param_info.param; });

}  // namespace
