// Scores through the public C API against transformers goldens
// (tests/parity/goldens/scores/*.json, made by tests/parity/make_score_goldens.py):
// parley_score_tokens against teacher-forced log_softmax(logits) at the
// targets; per-token log-probabilities and top-k alternatives of greedy and
// beam hypotheses against compute_transition_scores and top-k of the same
// distributions.
//
// Tolerance from the math: the parity suite holds the logits to 1e-4
// absolute (tests/model/test_parity.cpp). A log-probability is
// x_t - logsumexp(x), and |Δ logsumexp(x)| <= max_j |Δx_j|, so each one is
// within 2e-4, a sum of n of them within n * 2e-4. Token ids (chosen and
// alternatives) must be equal.
#include <gtest/gtest.h>
#include <parley/parley.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

using nlohmann::json;
constexpr double kLogitTolerance = 1e-4;
constexpr double kLogprobTolerance = 2 * kLogitTolerance;

std::string parity_dir() {
  const char *d = std::getenv("PARLEY_PARITY_DIR");
  return d ? d : "tests/parity";
}

struct Fixture {
  parley_runtime *rt = nullptr;
  parley_model *model = nullptr;
  json gold;
  explicit Fixture(const std::string &name) {
    parley_runtime_options ro;
    parley_runtime_options_init(&ro);
    const char *dirs[1] = {std::getenv("PARLEY_PLUGIN_BUILD_DIR")};
    ro.plugin_sources = PARLEY_PLUGINS_NONE;
    ro.plugin_dirs = dirs;
    ro.num_plugin_dirs = dirs[0] ? 1 : 0;
    if (parley_runtime_create(&ro, &rt) != PARLEY_OK) throw std::runtime_error(parley_last_error());
    const std::string path = parity_dir() + "/models/" + name + ".parley";
    if (parley_model_load_file(rt, path.c_str(), nullptr, &model) != PARLEY_OK)
      throw std::runtime_error(parley_last_error());
    std::ifstream f(parity_dir() + "/goldens/scores/" + name + ".json");
    if (!f) throw std::runtime_error("no score golden for " + name);
    gold = json::parse(f);
  }
  ~Fixture() {
    parley_model_free(model);
    parley_runtime_free(rt);
  }
  bool enc_dec() const {
    parley_model_info info{};
    info.struct_size = sizeof info;
    parley_model_get_info(model, &info);
    return info.kind == PARLEY_MODEL_ENCODER_DECODER;
  }
};

std::vector<int32_t> ids(const json &j) {
  return j.get<std::vector<int32_t>>();
}

void expect_near_all(const float *got, size_t n, const json &want, const std::string &what) {
  ASSERT_EQ(n, want.size()) << what;
  for (size_t i = 0; i < n; ++i) {
    EXPECT_FALSE(std::isnan(got[i])) << what << " [" << i << "]";
    if (want[i].is_string()) {  // "-inf": a token a processor removed
      EXPECT_EQ(want[i].get<std::string>(), "-inf");
      EXPECT_EQ(got[i], -INFINITY) << what << " [" << i << "]";
    } else {
      EXPECT_NEAR(got[i], want[i].get<double>(), kLogprobTolerance) << what << " [" << i << "]";
    }
  }
}

class ScoreParity : public ::testing::TestWithParam<std::string> {};

TEST_P(ScoreParity, ScoreTokensMatchesTeacherForcedLogSoftmax) {
  Fixture fx(GetParam());
  const bool enc_dec = fx.enc_dec();
  for (const json &item : fx.gold["score"]) {
    const std::vector<int32_t> target = ids(item["target"]);
    const std::vector<int32_t> context = ids(enc_dec ? item["source"] : item["prompt"]);
    const int32_t *src[1] = {context.data()};
    const int32_t *tgt[1] = {target.data()};
    const size_t src_len[1] = {context.size()}, tgt_len[1] = {target.size()};
    parley_score_result *r = nullptr;
    ASSERT_EQ(parley_score_tokens(fx.model, src, src_len, tgt, tgt_len, 1, nullptr, &r), PARLEY_OK)
        << parley_last_error();
    const int32_t *toks = nullptr;
    const float *lp = nullptr;
    size_t n = 0;
    double sum = 0;
    ASSERT_EQ(parley_score_result_item(r, 0, &toks, &lp, &n, &sum), PARLEY_OK);
    EXPECT_EQ(std::vector<int32_t>(toks, toks + n), target);
    expect_near_all(lp, n, item["logprobs"], GetParam() + " score");
    EXPECT_NEAR(sum, item["sum"].get<double>(), static_cast<double>(n) * kLogprobTolerance);
    // A sum of exactly these terms (double accumulation of the float values
    // is not required: the sum is accumulated from the unrounded terms).
    double acc = 0;
    for (size_t i = 0; i < n; ++i) acc += lp[i];
    EXPECT_NEAR(acc, sum, static_cast<double>(n) * 1e-6 * (1 + std::fabs(sum)));
    parley_score_result_free(r);
    if (!enc_dec && context.size() == 1) {
      // The same item as one sequence (sources NULL): its first token is context.
      std::vector<int32_t> whole = context;
      whole.insert(whole.end(), target.begin(), target.end());
      const int32_t *w[1] = {whole.data()};
      const size_t wl[1] = {whole.size()};
      ASSERT_EQ(parley_score_tokens(fx.model, nullptr, nullptr, w, wl, 1, nullptr, &r), PARLEY_OK);
      const float *lp2 = nullptr;
      size_t n2 = 0;
      ASSERT_EQ(parley_score_result_item(r, 0, &toks, &lp2, &n2, nullptr), PARLEY_OK);
      ASSERT_EQ(n2, n);
      EXPECT_EQ(std::vector<int32_t>(toks, toks + n2), target);
      expect_near_all(lp2, n2, item["logprobs"], GetParam() + " score (whole sequence)");
      parley_score_result_free(r);
    }
  }
  // All items as one batch: the same values as one by one.
  std::vector<std::vector<int32_t>> srcs, tgts;
  for (const json &item : fx.gold["score"]) {
    srcs.push_back(ids(enc_dec ? item["source"] : item["prompt"]));
    tgts.push_back(ids(item["target"]));
  }
  std::vector<const int32_t *> sp, tp;
  std::vector<size_t> sl, tl;
  for (size_t i = 0; i < srcs.size(); ++i) {
    sp.push_back(srcs[i].data());
    tp.push_back(tgts[i].data());
    sl.push_back(srcs[i].size());
    tl.push_back(tgts[i].size());
  }
  parley_score_result *r = nullptr;
  ASSERT_EQ(parley_score_tokens(fx.model, sp.data(), sl.data(), tp.data(), tl.data(), sp.size(), nullptr, &r),
            PARLEY_OK);
  size_t count = 0;
  ASSERT_EQ(parley_score_result_count(r, &count), PARLEY_OK);
  ASSERT_EQ(count, srcs.size());
  for (size_t i = 0; i < count; ++i) {
    const int32_t *toks = nullptr;
    const float *lp = nullptr;
    size_t n = 0;
    ASSERT_EQ(parley_score_result_item(r, i, &toks, &lp, &n, nullptr), PARLEY_OK);
    expect_near_all(lp, n, fx.gold["score"][i]["logprobs"], GetParam() + " batched score");
  }
  parley_score_result_free(r);
}

void check_hypotheses(Fixture &fx, const json &g, size_t beams) {
  const bool enc_dec = fx.enc_dec();
  const std::vector<int32_t> input = ids(enc_dec ? g["source"] : g["prompt"]);
  const json &want = g[beams > 1 ? "beam" : "greedy"];
  parley_generation_options o;
  ASSERT_EQ(parley_generation_options_init(fx.model, &o), PARLEY_OK);
  o.max_new_tokens = 8;
  o.num_beams = beams;
  o.num_return_sequences = beams > 1 ? 2 : 1;
  o.length_penalty = 1.0f;
  o.early_stopping = 0;
  o.do_sample = 0;
  o.repetition_penalty = 1.0f;
  o.no_repeat_ngram_size = 0;
  o.return_logprobs = 1;
  o.num_alternatives = fx.gold["k_alternatives"].get<size_t>();
  const int32_t *in[1] = {input.data()};
  const size_t len[1] = {input.size()};
  parley_generation_result *r = nullptr;
  ASSERT_EQ(enc_dec ? parley_translate_tokens(fx.model, in, len, 1, nullptr, nullptr, &o, &r)
                    : parley_generate(fx.model, in, len, 1, &o, &r),
            PARLEY_OK)
      << parley_last_error();
  const std::string what = std::string(beams > 1 ? "beam" : "greedy");
  for (size_t h = 0; h < want.size(); ++h) {
    const json &w = want[h];
    const int32_t *toks = nullptr;
    size_t n = 0;
    float score = 0;
    ASSERT_EQ(parley_result_hypothesis(r, 0, h, &toks, &n, &score), PARLEY_OK);
    ASSERT_EQ(std::vector<int32_t>(toks, toks + n), ids(w["tokens"])) << what << " hypothesis " << h;
    const float *lp = nullptr;
    size_t n_lp = 0;
    ASSERT_EQ(parley_result_hypothesis_logprobs(r, 0, h, &lp, &n_lp), PARLEY_OK);
    expect_near_all(lp, n_lp, w["logprobs"], what + " logprobs");
    double sum = 0;
    for (size_t i = 0; i < n_lp; ++i) sum += lp[i];
    // Greedy: the score is their sum; beam: score x length ^ length_penalty (1).
    const double unnormalised = beams > 1 ? static_cast<double>(score) * static_cast<double>(n) : score;
    EXPECT_NEAR(sum, unnormalised, 1e-5 * static_cast<double>(n) * (1 + std::fabs(sum))) << what;
    if (beams > 1) EXPECT_NEAR(score, w["sequence_score"].get<double>(), kLogprobTolerance);
    const int32_t *alt_ids = nullptr;
    const float *alt_lps = nullptr;
    size_t steps = 0, k = 0;
    ASSERT_EQ(parley_result_hypothesis_alternatives(r, 0, h, &alt_ids, &alt_lps, &steps, &k), PARLEY_OK);
    ASSERT_EQ(steps, n);
    ASSERT_EQ(k, o.num_alternatives);
    for (size_t t = 0; t < steps; ++t) {
      // Ids must match where the value is finite; among -inf (tokens a
      // processor removed, all tied) torch.topk's order is unspecified.
      const json &want_lp = w["alternative_logprobs"][t];
      for (size_t j = 0; j < k; ++j)
        if (!want_lp[j].is_string())
          EXPECT_EQ(alt_ids[t * k + j], w["alternative_ids"][t][j].get<int32_t>())
              << what << " step " << t << " alternative " << j;
      expect_near_all(alt_lps + t * k, k, want_lp, what + " alternatives");
    }
  }
  parley_result_free(r);
}

TEST_P(ScoreParity, GreedyLogprobsAndAlternativesMatchTransitionScores) {
  Fixture fx(GetParam());
  for (const json &g : fx.gold["generate"]) check_hypotheses(fx, g, 1);
}

TEST_P(ScoreParity, BeamLogprobsAndAlternativesMatchTransitionScores) {
  Fixture fx(GetParam());
  for (const json &g : fx.gold["generate"]) check_hypotheses(fx, g, 3);
}

INSTANTIATE_TEST_SUITE_P(Models, ScoreParity, ::testing::Values("marian", "llama"));

}  // namespace
