// Parity of the config-driven Transformer with Hugging Face transformers:
// logits of every tiny model in tests/parity/goldens, computed one sequence
// at a time, as a right-padded batch, and token by token through the KV
// cache — all must match the golden within 1e-4.
#include <gtest/gtest.h>
#include <parley/parley.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/runtime.hpp"
#include "engine/generator.hpp"
#include "model/transformer.hpp"

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr double kTolerance = 1e-4;

std::string env(const char *name) {
  const char *v = std::getenv(name);
  if (!v) throw std::runtime_error(std::string(name) + " is not set (run through ctest)");
  return v;
}

std::vector<std::string> golden_names() {
  std::vector<std::string> names;
  for (const auto &e : fs::directory_iterator(env("PARLEY_PARITY_DIR") + "/goldens"))
    if (e.path().extension() == ".json") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

struct Loaded {
  parley_runtime *rt = nullptr;
  parley_model *model = nullptr;
  std::unique_ptr<parley::Transformer> transformer;
  json golden;
  ~Loaded() {
    transformer.reset();
    parley_model_free(model);
    parley_runtime_free(rt);
  }
};

std::unique_ptr<Loaded> load(const std::string &name) {
  auto l = std::make_unique<Loaded>();
  std::string dir = env("PARLEY_PARITY_DIR");
  std::ifstream f(dir + "/goldens/" + name + ".json");
  l->golden = json::parse(f);
  std::string plugins = env("PARLEY_PLUGIN_BUILD_DIR");
  const char *dirs[] = {plugins.c_str()};
  parley_runtime_options o;
  parley_runtime_options_init(&o);
  o.plugin_sources = PARLEY_PLUGINS_NONE;
  o.plugin_dirs = dirs;
  o.num_plugin_dirs = 1;
  if (parley_runtime_create(&o, &l->rt) != PARLEY_OK) throw std::runtime_error(parley_last_error());
  std::string path = dir + "/" + l->golden["model_file"].get<std::string>();
  if (parley_model_load_file(l->rt, path.c_str(), nullptr, &l->model) != PARLEY_OK)
    throw std::runtime_error(parley_last_error());
  l->transformer = std::make_unique<parley::Transformer>(l->model->impl.runtime, *l->model->impl.file, "cpu");
  return l;
}

// Real (unmasked) tokens of each row.
std::vector<std::vector<int32_t>> real_tokens(const json &ids, const json &mask) {
  std::vector<std::vector<int32_t>> rows;
  for (size_t b = 0; b < ids.size(); ++b) {
    std::vector<int32_t> r;
    for (size_t i = 0; i < ids[b].size(); ++i)
      if (mask[b][i].get<int>()) r.push_back(ids[b][i].get<int32_t>());
    rows.push_back(r);
  }
  return rows;
}

class Parity : public ::testing::TestWithParam<std::string> {};

double g_worst = 0;  // worst difference seen by the current test, printed at its end

// Compare logits row `got` (vocab floats) with golden[b][i].
double max_diff(const float *got, const json &want) {
  double m = 0;
  for (size_t v = 0; v < want.size(); ++v) {
    double d = std::fabs(static_cast<double>(got[v]) - want[v].get<double>());
    if (!(d <= m)) m = std::isnan(d) ? INFINITY : d;
  }
  g_worst = std::max(g_worst, m);
  return m;
}

TEST_P(Parity, LogitsMatchTransformers) {
  g_worst = 0;
  auto l = load(GetParam());
  const json &g = l->golden;
  const json &in = g["inputs"];
  const json &want = g["logits"]["values"];
  const auto &t = *l->transformer;
  const int64_t V = t.vocab();
  ASSERT_EQ(V, g["vocab_size"].get<int64_t>());

  if (!t.encoder_decoder()) {
    // Left-padded in the golden; Parley stores each sequence unpadded, so
    // the golden row's masked positions map to 0.. in order.
    auto rows = real_tokens(in["input_ids"], in["attention_mask"]);
    const int64_t B = static_cast<int64_t>(rows.size());
    size_t width = in["input_ids"][0].size();
    int64_t n_max = 0;
    for (auto &r : rows) n_max = std::max<int64_t>(n_max, static_cast<int64_t>(r.size()));
    // (1) one sequence at a time, whole prompt in one step.
    for (int64_t b = 0; b < B; ++b) {
      auto st = t.start(1, n_max);
      int64_t n = static_cast<int64_t>(rows[b].size());
      auto logits = t.step(st, rows[b], n);
      size_t pad = width - static_cast<size_t>(n);
      for (int64_t i = 0; i < n; ++i)
        EXPECT_LE(max_diff(logits.data() + i * V, want[b][pad + static_cast<size_t>(i)]), kTolerance)
            << GetParam() << " row " << b << " position " << i;
    }
    // (2) the batch at once, right-padded with per-row counts.
    auto st = t.start(B, n_max);
    std::vector<int32_t> tokens(static_cast<size_t>(B * n_max), 0), counts;
    for (int64_t b = 0; b < B; ++b) {
      counts.push_back(static_cast<int32_t>(rows[b].size()));
      std::copy(rows[b].begin(), rows[b].end(), tokens.begin() + b * n_max);
    }
    auto logits = t.step(st, tokens, n_max, false, counts);
    for (int64_t b = 0; b < B; ++b) {
      size_t pad = width - rows[b].size();
      for (int64_t i = 0; i < counts[b]; ++i)
        EXPECT_LE(max_diff(logits.data() + (b * n_max + i) * V, want[b][pad + static_cast<size_t>(i)]), kTolerance)
            << GetParam() << " batched row " << b << " position " << i;
    }
    // (3) token by token through the KV cache, one row at a time.
    for (int64_t b = 0; b < B; ++b) {
      auto s1 = t.start(1, n_max);
      for (size_t i = 0; i < rows[b].size(); ++i) {
        auto lg = t.step(s1, {rows[b][i]}, 1, true);
        size_t pad = width - rows[b].size();
        EXPECT_LE(max_diff(lg.data(), want[b][pad + i]), kTolerance)
            << GetParam() << " incremental row " << b << " position " << i;
      }
    }
  } else {
    auto sources = real_tokens(in["input_ids"], in["attention_mask"]);
    const json &dec = in["decoder_input_ids"];
    const int64_t B = static_cast<int64_t>(sources.size()), n = static_cast<int64_t>(dec[0].size());
    // (1) batched: padded sources, whole decoder prefix in one step.
    auto st = t.start(B, n, sources);
    std::vector<int32_t> tokens;
    for (const auto &row : dec)
      for (const auto &id : row) tokens.push_back(id.get<int32_t>());
    auto logits = t.step(st, tokens, n);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < n; ++i)
        EXPECT_LE(max_diff(logits.data() + (b * n + i) * V, want[b][static_cast<size_t>(i)]), kTolerance)
            << GetParam() << " row " << b << " position " << i;
    // (2) token by token through the KV cache, whole batch per step.
    auto inc = t.start(B, n, sources);
    for (int64_t i = 0; i < n; ++i) {
      std::vector<int32_t> step_tokens;
      for (int64_t b = 0; b < B; ++b) step_tokens.push_back(dec[b][i].get<int32_t>());
      auto lg = t.step(inc, step_tokens, 1, true);
      for (int64_t b = 0; b < B; ++b)
        EXPECT_LE(max_diff(lg.data() + b * V, want[b][static_cast<size_t>(i)]), kTolerance)
            << GetParam() << " incremental row " << b << " position " << i;
    }
  }
  std::printf("%s: worst |logit - transformers| = %.3g\n", GetParam().c_str(), g_worst);
}

// Decoding options as the golden's generate() call used them.
parley::DecodingOptions options_from(const json &settings) {
  parley::DecodingOptions o;
  o.max_new_tokens = settings["max_new_tokens"].get<int64_t>();
  o.num_beams = settings.value("num_beams", 1);
  o.num_return_sequences = settings.value("num_return_sequences", 1);
  o.length_penalty = settings["length_penalty"].get<double>();
  const json &es = settings["early_stopping"];
  o.early_stopping = es.is_string()   ? parley::EarlyStopping::kNever
                     : es.get<bool>() ? parley::EarlyStopping::kTrue
                                      : parley::EarlyStopping::kFalse;
  o.no_repeat_ngram_size = settings["no_repeat_ngram_size"].get<int64_t>();
  o.repetition_penalty = settings["repetition_penalty"].get<double>();
  const json &eos = settings["eos_token_id"];
  if (eos.is_array())
    for (const auto &e : eos) o.eos_token_ids.push_back(e.get<int32_t>());
  else if (!eos.is_null())
    o.eos_token_ids.push_back(eos.get<int32_t>());
  if (!settings["pad_token_id"].is_null()) o.pad_token_id = settings["pad_token_id"].get<int32_t>();
  if (!settings["forced_bos_token_id"].is_null())
    o.forced_bos_token_id = settings["forced_bos_token_id"].get<int32_t>();
  if (!settings["forced_eos_token_id"].is_null())
    o.forced_eos_token_ids = {settings["forced_eos_token_id"].get<int32_t>()};
  // Single-token bad_words_ids (OPUS-MT bans <pad>) are what the converter
  // stores as suppress_tokens; both set the token's score to -inf.
  if (settings.contains("bad_words_ids"))
    for (const auto &words : settings["bad_words_ids"]) {
      if (words.size() != 1) throw std::runtime_error("multi-token bad_words_ids are not supported");
      o.suppress_tokens.push_back(words[0].get<int32_t>());
    }
  return o;
}

// The generated part of a golden sequence: after `prompt_width` tokens, up
// to and including the first EOS (transformers pads finished rows after it).
std::vector<int32_t> generated_part(const json &seq, size_t prompt_width, const std::vector<int32_t> &eos) {
  std::vector<int32_t> out;
  for (size_t i = prompt_width; i < seq.size(); ++i) {
    int32_t id = seq[i].get<int32_t>();
    out.push_back(id);
    if (std::find(eos.begin(), eos.end(), id) != eos.end()) break;
  }
  return out;
}

// Run the engine's generate()/translate() on the real model for the golden's inputs.
std::vector<std::vector<parley::Hypothesis>> run_generate(Loaded &l, const parley::DecodingOptions &o,
                                                          size_t *prompt_width) {
  const auto &t = *l.transformer;
  const json &in = l.golden["inputs"];
  auto rows = real_tokens(in["input_ids"], in["attention_mask"]);
  if (!t.encoder_decoder()) {
    *prompt_width = in["input_ids"][0].size();
    return parley::generate(t, rows, o);
  }
  int32_t start = l.golden["greedy"]["settings"]["decoder_start_token_id"].get<int32_t>();
  *prompt_width = 1;
  return parley::translate(t, rows, std::vector<std::vector<int32_t>>(rows.size(), {start}), o);
}

TEST_P(Parity, GreedyTokensMatchTransformers) {
  auto l = load(GetParam());
  const json &g = l->golden["greedy"];
  parley::DecodingOptions o = options_from(g["settings"]);
  size_t width = 0;
  auto hyps = run_generate(*l, o, &width);
  ASSERT_EQ(hyps.size(), g["sequences"].size());
  for (size_t b = 0; b < hyps.size(); ++b) {
    ASSERT_EQ(hyps[b].size(), 1u);
    EXPECT_EQ(hyps[b][0].tokens, generated_part(g["sequences"][b], width, o.eos_token_ids))
        << GetParam() << " row " << b;
  }
}

TEST_P(Parity, BeamTokensAndScoresMatchTransformers) {
  auto l = load(GetParam());
  const json &g = l->golden["beam"];
  parley::DecodingOptions o = options_from(g["settings"]);
  size_t width = 0;
  auto hyps = run_generate(*l, o, &width);
  const size_t R = static_cast<size_t>(o.num_return_sequences);
  ASSERT_EQ(hyps.size() * R, g["sequences"].size());
  for (size_t b = 0; b < hyps.size(); ++b) {
    ASSERT_EQ(hyps[b].size(), R);
    for (size_t r = 0; r < R; ++r) {
      EXPECT_EQ(hyps[b][r].tokens, generated_part(g["sequences"][b * R + r], width, o.eos_token_ids))
          << GetParam() << " item " << b << " hypothesis " << r;
      EXPECT_NEAR(hyps[b][r].score, g["sequences_scores"][b * R + r].get<double>(), kTolerance)
          << GetParam() << " item " << b << " hypothesis " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, Parity, ::testing::ValuesIn(golden_names()),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

}  // namespace
