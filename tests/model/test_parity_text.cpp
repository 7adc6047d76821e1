// Text in, text out against transformers, through the public C API, for a
// Marian model with separate source and target vocabularies
// (tests/parity/models/marian_separate_text.parley and its golden, from
// tests/parity/make_text_goldens.py): the source is encoded with source.spm
// and vocab.json, target text (parley_score_text) with target.spm and
// target_vocab.json, and every decoder id decoded through target_vocab.json,
// as MarianTokenizer(separate_vocabs=True) does; greedy and beam tokens,
// texts and scores equal generate()'s.
#include <gtest/gtest.h>
#include <parley/parley.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

using nlohmann::json;

namespace {

std::string parity_dir() {
  const char *d = std::getenv("PARLEY_PARITY_DIR");
  return d ? d : "tests/parity";
}

struct Fixture {
  parley_runtime *rt = nullptr;
  parley_model *model = nullptr;
  json gold;
  Fixture() {
    std::ifstream f(parity_dir() + "/goldens/text/marian_separate_text.json");
    if (!f) return;
    gold = json::parse(f);
    const char *dirs[1] = {std::getenv("PARLEY_PLUGIN_BUILD_DIR")};
    parley_runtime_options o;
    parley_runtime_options_init(&o);
    o.plugin_sources = PARLEY_PLUGINS_NONE;
    o.plugin_dirs = dirs;
    o.num_plugin_dirs = dirs[0] ? 1 : 0;
    if (parley_runtime_create(&o, &rt) != PARLEY_OK) return;
    parley_model_options mo;
    parley_model_options_init(&mo);
    const std::string path = parity_dir() + "/" + gold["model_file"].get<std::string>();
    if (parley_model_load_file(rt, path.c_str(), &mo, &model) != PARLEY_OK) model = nullptr;
  }
  ~Fixture() {
    parley_model_free(model);
    parley_runtime_free(rt);
  }
};

Fixture &fixture() {
  static Fixture f;
  return f;
}

parley_model *model() {
  Fixture &f = fixture();
  EXPECT_FALSE(f.gold.is_null()) << "missing goldens/text/marian_separate_text.json";
  EXPECT_NE(f.model, nullptr) << parley_last_error();
  return f.model;
}

std::vector<int32_t> tokenize(parley_model *m, const std::string &text) {
  size_t n = 0;
  EXPECT_EQ(parley_tokenize(m, text.c_str(), PARLEY_TOKENIZE_ADD_SPECIAL, nullptr, nullptr, 0, &n), PARLEY_OK)
      << parley_last_error();
  std::vector<int32_t> ids(n);
  EXPECT_EQ(parley_tokenize(m, text.c_str(), PARLEY_TOKENIZE_ADD_SPECIAL, nullptr, ids.data(), n, &n), PARLEY_OK)
      << parley_last_error();
  return ids;
}

std::string detokenize(parley_model *m, const std::vector<int32_t> &ids, bool skip) {
  char *s = nullptr;
  EXPECT_EQ(parley_detokenize(m, ids.data(), ids.size(), skip ? 1 : 0, &s), PARLEY_OK) << parley_last_error();
  std::string out = s ? s : "";
  parley_string_free(s);
  return out;
}

// generate()'s sequences start with the decoder start token and are padded
// with pad_token_id after EOS; Parley's hypotheses are the generated ids.
std::vector<int32_t> generated(const json &seq, int32_t pad) {
  std::vector<int32_t> ids = seq.get<std::vector<int32_t>>();
  ids.erase(ids.begin());
  while (!ids.empty() && ids.back() == pad) ids.pop_back();
  return ids;
}

struct Translation {
  std::vector<std::vector<std::vector<int32_t>>> tokens;  // [text][hypothesis]
  std::vector<std::vector<std::string>> texts;
  std::vector<std::vector<float>> scores;
};

Translation translate(parley_model *m, const json &settings, size_t beams, size_t n_best) {
  Translation out;
  const json &g = fixture().gold;
  std::vector<const char *> texts;
  for (const json &s : g["source"]) texts.push_back(s["text"].get_ref<const std::string &>().c_str());
  parley_generation_options gen;
  EXPECT_EQ(parley_generation_options_init(m, &gen), PARLEY_OK) << parley_last_error();
  gen.max_new_tokens = settings["max_new_tokens"].get<size_t>();
  gen.num_beams = beams;
  gen.num_return_sequences = n_best;
  gen.no_repeat_ngram_size = settings["no_repeat_ngram_size"].get<size_t>();
  gen.length_penalty = settings["length_penalty"].get<float>();
  gen.early_stopping = 0;
  parley_translation_options o;
  parley_translation_options_init(&o);
  o.generation = &gen;
  parley_translation_result *r = nullptr;
  EXPECT_EQ(parley_translate(m, texts.data(), texts.size(), &o, &r), PARLEY_OK) << parley_last_error();
  if (!r) return out;
  for (size_t i = 0; i < texts.size(); ++i) {
    size_t h = 0;
    EXPECT_EQ(parley_translation_result_hypothesis_count(r, i, &h), PARLEY_OK);
    out.tokens.emplace_back();
    out.texts.emplace_back();
    out.scores.emplace_back();
    for (size_t k = 0; k < h; ++k) {
      const int32_t *ids = nullptr;
      size_t n = 0;
      const char *t = nullptr;
      float score = 0;
      EXPECT_EQ(parley_translation_result_target_tokens(r, i, k, &ids, &n), PARLEY_OK);
      EXPECT_EQ(parley_translation_result_text(r, i, k, &t, &score), PARLEY_OK);
      out.tokens.back().emplace_back(ids, ids + n);
      out.texts.back().emplace_back(t ? t : "");
      out.scores.back().push_back(score);
    }
  }
  parley_translation_result_free(r);
  return out;
}

TEST(ParityText, FileHasSeparateVocabularies) {
  parley_model *m = model();
  ASSERT_NE(m, nullptr);
  const json &g = fixture().gold;
  // The golden is only a test of separate vocabularies if they differ, and
  // if <pad> (appended to each by transformers' Marian converter) has
  // different ids on the two sides.
  ASSERT_NE(g["vocab_size"], g["decoder_vocab_size"]);
  ASSERT_NE(g["source_pad_id"], g["target_pad_id"]);
}

TEST(ParityText, SourceEncodingIsTransformers) {
  parley_model *m = model();
  ASSERT_NE(m, nullptr);
  for (const json &s : fixture().gold["source"])
    EXPECT_EQ(tokenize(m, s["text"].get<std::string>()), s["ids"].get<std::vector<int32_t>>()) << s["text"];
}

// tests/tokenizers/corpus.json's strings (scripts, whitespace runs,
// special-token strings written as text...) on both sides; the target side
// through parley_score_text, which encodes as tokenizer(text_target=...).
TEST(ParityText, CorpusOnBothSidesIsTransformers) {
  parley_model *m = model();
  ASSERT_NE(m, nullptr);
  const json &corpus = fixture().gold["corpus"];
  ASSERT_GT(corpus.size(), 50u);
  std::vector<const char *> sources, targets;
  std::vector<size_t> scored;  // corpus entries parley_score_text can take (a non-empty text)
  for (size_t i = 0; i < corpus.size(); ++i) {
    const json &c = corpus[i];
    const std::string &text = c["text"].get_ref<const std::string &>();
    EXPECT_EQ(tokenize(m, text), c["source_ids"].get<std::vector<int32_t>>()) << json(text).dump();
    const std::vector<int32_t> ids = c["target_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(detokenize(m, ids, false), c["decoded"].get<std::string>()) << json(text).dump();
    EXPECT_EQ(detokenize(m, ids, true), c["decoded_skip_special"].get<std::string>()) << json(text).dump();
    if (!text.empty()) {
      sources.push_back("x");
      targets.push_back(text.c_str());
      scored.push_back(i);
    }
  }
  parley_score_result *r = nullptr;
  ASSERT_EQ(parley_score_text(m, sources.data(), targets.data(), sources.size(), nullptr, &r), PARLEY_OK)
      << parley_last_error();
  for (size_t k = 0; k < scored.size(); ++k) {
    const int32_t *ids = nullptr;
    const float *lp = nullptr;
    size_t n = 0;
    ASSERT_EQ(parley_score_result_item(r, k, &ids, &lp, &n, nullptr), PARLEY_OK);
    EXPECT_EQ(std::vector<int32_t>(ids, ids + n), corpus[scored[k]]["target_ids"].get<std::vector<int32_t>>())
        << json(corpus[scored[k]]["text"]).dump();
  }
  parley_score_result_free(r);
}

TEST(ParityText, TargetDecodingIsTransformers) {
  parley_model *m = model();
  ASSERT_NE(m, nullptr);
  for (const json &c : fixture().gold["decode"]) {
    const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(detokenize(m, ids, false), c["decoded"].get<std::string>()) << c["name"];
    EXPECT_EQ(detokenize(m, ids, true), c["decoded_skip_special"].get<std::string>()) << c["name"];
  }
  // A decoder id past the target vocabulary is refused, naming it.
  const int32_t past = fixture().gold["decoder_vocab_size"].get<int32_t>();
  char *s = nullptr;
  EXPECT_EQ(parley_detokenize(m, &past, 1, 0, &s), PARLEY_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(parley_last_error()).find(std::to_string(past)), std::string::npos) << parley_last_error();
}

TEST(ParityText, TargetEncodingAndScoresAreTransformers) {
  parley_model *m = model();
  ASSERT_NE(m, nullptr);
  const json &cases = fixture().gold["score"];
  std::vector<const char *> src, tgt;
  for (const json &c : cases) {
    src.push_back(c["source"].get_ref<const std::string &>().c_str());
    tgt.push_back(c["target"].get_ref<const std::string &>().c_str());
  }
  parley_score_result *r = nullptr;
  ASSERT_EQ(parley_score_text(m, src.data(), tgt.data(), src.size(), nullptr, &r), PARLEY_OK) << parley_last_error();
  for (size_t i = 0; i < cases.size(); ++i) {
    const int32_t *ids = nullptr;
    const float *lp = nullptr;
    size_t n = 0;
    ASSERT_EQ(parley_score_result_item(r, i, &ids, &lp, &n, nullptr), PARLEY_OK);
    // Target text is encoded with target.spm + target_vocab.json (text_target=).
    EXPECT_EQ(std::vector<int32_t>(ids, ids + n), cases[i]["target_ids"].get<std::vector<int32_t>>())
        << cases[i]["target"];
    const std::vector<float> want = cases[i]["logprobs"].get<std::vector<float>>();
    ASSERT_EQ(n, want.size());
    for (size_t k = 0; k < n; ++k) EXPECT_NEAR(lp[k], want[k], 1e-4) << cases[i]["target"] << " token " << k;
  }
  parley_score_result_free(r);
}

TEST(ParityText, GreedyTokensAndTextAreTransformers) {
  parley_model *m = model();
  ASSERT_NE(m, nullptr);
  const json &g = fixture().gold["greedy"];
  const int32_t pad = g["settings"]["pad_token_id"].get<int32_t>();
  Translation t = translate(m, g["settings"], 1, 1);
  ASSERT_EQ(t.tokens.size(), g["texts"].size());
  for (size_t i = 0; i < t.tokens.size(); ++i) {
    ASSERT_EQ(t.tokens[i].size(), 1u);
    EXPECT_EQ(t.tokens[i][0], generated(g["sequences"][i], pad)) << "text #" << i;
    EXPECT_EQ(t.texts[i][0], g["texts"][i].get<std::string>()) << "text #" << i;
  }
}

TEST(ParityText, BeamTokensTextAndScoresAreTransformers) {
  parley_model *m = model();
  ASSERT_NE(m, nullptr);
  const json &g = fixture().gold["beam"];
  const int32_t pad = g["settings"]["pad_token_id"].get<int32_t>();
  const size_t n_best = g["settings"]["num_return_sequences"].get<size_t>();
  Translation t = translate(m, g["settings"], g["settings"]["num_beams"].get<size_t>(), n_best);
  ASSERT_EQ(t.tokens.size() * n_best, g["sequences"].size());
  for (size_t i = 0; i < t.tokens.size(); ++i) {
    ASSERT_EQ(t.tokens[i].size(), n_best);
    for (size_t k = 0; k < n_best; ++k) {
      const size_t row = i * n_best + k;
      EXPECT_EQ(t.tokens[i][k], generated(g["sequences"][row], pad)) << "text #" << i << " hypothesis " << k;
      EXPECT_EQ(t.texts[i][k], g["texts"][row].get<std::string>()) << "text #" << i << " hypothesis " << k;
      EXPECT_NEAR(t.scores[i][k], g["sequences_scores"][row].get<float>(), 1e-4)
          << "text #" << i << " hypothesis " << k;
    }
  }
}

}  // namespace
