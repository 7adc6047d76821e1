// Helpers for tests that run the tiny models of tests/parity against their
// transformers goldens: load a .parley file (any storage type) with its
// golden, feed the golden's inputs, map generate() settings onto
// DecodingOptions. Same conventions as test_parity.cpp.
#pragma once

#include <parley/parley.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/runtime.hpp"
#include "engine/generator.hpp"
#include "model/transformer.hpp"

namespace parity {

using json = nlohmann::json;

inline std::string env(const char *name) {
  const char *v = std::getenv(name);
  if (!v) throw std::runtime_error(std::string(name) + " is not set (run through ctest)");
  return v;
}

struct Loaded {
  parley_runtime *rt = nullptr;
  parley_model *model = nullptr;
  std::unique_ptr<parley::Transformer> transformer;
  json golden;
  Loaded() = default;
  Loaded(const Loaded &) = delete;
  Loaded &operator=(const Loaded &) = delete;
  ~Loaded() {
    transformer.reset();
    parley_model_free(model);
    parley_runtime_free(rt);
  }
};

// A runtime with only this build's plugins (PARLEY_PLUGIN_BUILD_DIR); the
// caller frees it. Throws with the runtime's message.
inline parley_runtime *build_runtime() {
  std::string plugins = env("PARLEY_PLUGIN_BUILD_DIR");
  const char *dirs[] = {plugins.c_str()};
  parley_runtime_options o;
  parley_runtime_options_init(&o);
  o.plugin_sources = PARLEY_PLUGINS_NONE;
  o.plugin_dirs = dirs;
  o.num_plugin_dirs = 1;
  parley_runtime *rt = nullptr;
  if (parley_runtime_create(&o, &rt) != PARLEY_OK) throw std::runtime_error(parley_last_error());
  return rt;
}

// Golden `name` (tests/parity/goldens/<name>.json) with the model file
// `model_file` (relative to tests/parity; empty: the golden's own, float32),
// with a self-attention KV cache of `kv_dtype` and activations of `act_dtype`.
inline std::unique_ptr<Loaded> load(const std::string &name, const std::string &model_file = "",
                                    parley_dtype kv_dtype = PARLEY_DTYPE_F32,
                                    parley_dtype act_dtype = PARLEY_DTYPE_F32) {
  auto l = std::make_unique<Loaded>();
  std::string dir = env("PARLEY_PARITY_DIR");
  std::ifstream f(dir + "/goldens/" + name + ".json");
  if (!f) throw std::runtime_error("cannot open golden " + name);
  l->golden = json::parse(f);
  l->rt = build_runtime();
  // The suite also runs on tests/device_guard's "guarded" device.
  const char *extra = std::getenv("PARLEY_TEST_DEVICE_PLUGIN");
  if (extra && *extra && parley_runtime_load_plugin(l->rt, extra) != PARLEY_OK)
    throw std::runtime_error(parley_last_error());
  const char *dev = std::getenv("PARLEY_TEST_DEVICE");
  const std::string device = dev && *dev ? dev : "cpu";
  std::string path = dir + "/" + (model_file.empty() ? l->golden["model_file"].get<std::string>() : model_file);
  if (parley_model_load_file(l->rt, path.c_str(), nullptr, &l->model) != PARLEY_OK)
    throw std::runtime_error(parley_last_error());
  l->transformer =
      std::make_unique<parley::Transformer>(l->model->impl.runtime, *l->model->impl.file, device, kv_dtype, act_dtype);
  return l;
}

// Every golden's name (tests/parity/goldens/*.json), sorted.
inline std::vector<std::string> golden_names() {
  std::vector<std::string> names;
  for (const auto &e : std::filesystem::directory_iterator(env("PARLEY_PARITY_DIR") + "/goldens"))
    if (e.path().extension() == ".json") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Real (unmasked) tokens of each row.
inline std::vector<std::vector<int32_t>> real_tokens(const json &ids, const json &mask) {
  std::vector<std::vector<int32_t>> rows;
  for (size_t b = 0; b < ids.size(); ++b) {
    std::vector<int32_t> r;
    for (size_t i = 0; i < ids[b].size(); ++i)
      if (mask[b][i].get<int>()) r.push_back(ids[b][i].get<int32_t>());
    rows.push_back(r);
  }
  return rows;
}

struct Logits {
  std::vector<float> values;  // every real position of every path, in one order
  int64_t vocab = 0;
};

// The golden's inputs through two paths: the batched (right-padded) prefill
// and token by token through the cache.
inline Logits collect(const parley::Transformer &t, const json &golden) {
  const json &in = golden["inputs"];
  Logits out;
  out.vocab = t.vocab();
  const int64_t V = t.vocab();
  auto take = [&](const float *row) { out.values.insert(out.values.end(), row, row + V); };
  if (!t.encoder_decoder()) {
    auto rows = real_tokens(in["input_ids"], in["attention_mask"]);
    const int64_t B = static_cast<int64_t>(rows.size());
    int64_t n_max = 0;
    for (auto &r : rows) n_max = std::max<int64_t>(n_max, static_cast<int64_t>(r.size()));
    auto st = t.start(B, n_max);
    std::vector<int32_t> tokens(static_cast<size_t>(B * n_max), 0), counts;
    for (int64_t b = 0; b < B; ++b) {
      counts.push_back(static_cast<int32_t>(rows[b].size()));
      std::copy(rows[b].begin(), rows[b].end(), tokens.begin() + b * n_max);
    }
    auto logits = t.step(st, tokens, n_max, false, counts);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < counts[static_cast<size_t>(b)]; ++i) take(logits.data() + (b * n_max + i) * V);
    for (int64_t b = 0; b < B; ++b) {
      auto s1 = t.start(1, n_max);
      for (int32_t tok : rows[b]) take(t.step(s1, {tok}, 1, true).data());
    }
  } else {
    auto sources = real_tokens(in["input_ids"], in["attention_mask"]);
    const json &dec = in["decoder_input_ids"];
    const int64_t B = static_cast<int64_t>(sources.size()), n = static_cast<int64_t>(dec[0].size());
    auto st = t.start(B, n, sources);
    std::vector<int32_t> tokens;
    for (const auto &row : dec)
      for (const auto &id : row) tokens.push_back(id.get<int32_t>());
    auto logits = t.step(st, tokens, n);
    for (int64_t r = 0; r < B * n; ++r) take(logits.data() + r * V);
    auto inc = t.start(B, n, sources);
    for (int64_t i = 0; i < n; ++i) {
      std::vector<int32_t> step_tokens;
      for (int64_t b = 0; b < B; ++b) step_tokens.push_back(dec[b][i].get<int32_t>());
      auto lg = t.step(inc, step_tokens, 1, true);
      for (int64_t b = 0; b < B; ++b) take(lg.data() + b * V);
    }
  }
  return out;
}

// Greedy continuation of the golden's first row (decoder-only: its prompt;
// encoder-decoder: its source, from the decoder start token), `steps`
// tokens; margins[i] = top-1 minus top-2 logit at step i.
inline std::vector<int32_t> greedy(const parley::Transformer &t, const json &golden, int steps,
                                   std::vector<float> *margins) {
  const json &in = golden["inputs"];
  auto rows = real_tokens(in["input_ids"], in["attention_mask"]);
  std::vector<int32_t> prompt = rows[0];
  parley::DecoderState st;
  if (t.encoder_decoder()) {
    st = t.start(1, steps + 1, {rows[0]});
    prompt = {in["decoder_input_ids"][0][0].get<int32_t>()};
  } else {
    st = t.start(1, static_cast<int64_t>(prompt.size()) + steps);
  }
  std::vector<float> logits = t.step(st, prompt, static_cast<int64_t>(prompt.size()), true);
  std::vector<int32_t> out;
  for (int s = 0; s < steps; ++s) {
    auto top = std::max_element(logits.begin(), logits.end());
    float best = *top, second = -INFINITY;
    for (auto it = logits.begin(); it != logits.end(); ++it)
      if (it != top) second = std::max(second, *it);
    if (margins) margins->push_back(best - second);
    out.push_back(static_cast<int32_t>(top - logits.begin()));
    if (s + 1 < steps) logits = t.step(st, {out.back()}, 1, true);
  }
  return out;
}

// max |a[i] - b[i]| over two logit collections of one shape (NaN -> infinity).
inline double worst_diff(const std::vector<float> &a, const std::vector<float> &b) {
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = std::fabs(double(a[i]) - b[i]);
    if (!(d <= worst)) worst = std::isnan(d) ? INFINITY : d;
  }
  return worst;
}

// max |got[v] - want[v]| over one vocabulary row (NaN -> infinity).
inline double max_diff(const float *got, const json &want) {
  double m = 0;
  for (size_t v = 0; v < want.size(); ++v) {
    double d = std::fabs(static_cast<double>(got[v]) - want[v].get<double>());
    if (!(d <= m)) m = std::isnan(d) ? INFINITY : d;
  }
  return m;
}

// Worst |Δlogit| against `want` ([batch][time][vocab] logits for the
// golden's inputs; default: the golden's own) over every valid position,
// computed as test_parity.cpp does: decoder-only one sequence at a time, as a
// right-padded batch and token by token through the KV cache;
// encoder-decoder batched and token by token.
inline double worst_logit_diff(const Loaded &l, const json *want_logits = nullptr) {
  const json &in = l.golden["inputs"];
  const json &want = want_logits ? *want_logits : l.golden["logits"]["values"];
  const auto &t = *l.transformer;
  const int64_t V = t.vocab();
  if (V != l.golden["vocab_size"].get<int64_t>()) throw std::runtime_error("vocabulary size differs from golden");
  double worst = 0;
  auto acc = [&](const float *got, const json &w) { worst = std::max(worst, max_diff(got, w)); };
  if (!t.encoder_decoder()) {
    auto rows = real_tokens(in["input_ids"], in["attention_mask"]);
    const int64_t B = static_cast<int64_t>(rows.size());
    const size_t width = in["input_ids"][0].size();
    int64_t n_max = 0;
    for (auto &r : rows) n_max = std::max<int64_t>(n_max, static_cast<int64_t>(r.size()));
    for (int64_t b = 0; b < B; ++b) {
      auto st = t.start(1, n_max);
      int64_t n = static_cast<int64_t>(rows[b].size());
      auto logits = t.step(st, rows[b], n);
      size_t pad = width - static_cast<size_t>(n);
      for (int64_t i = 0; i < n; ++i) acc(logits.data() + i * V, want[b][pad + static_cast<size_t>(i)]);
    }
    auto st = t.start(B, n_max);
    std::vector<int32_t> tokens(static_cast<size_t>(B * n_max), 0), counts;
    for (int64_t b = 0; b < B; ++b) {
      counts.push_back(static_cast<int32_t>(rows[b].size()));
      std::copy(rows[b].begin(), rows[b].end(), tokens.begin() + b * n_max);
    }
    auto logits = t.step(st, tokens, n_max, false, counts);
    for (int64_t b = 0; b < B; ++b) {
      size_t pad = width - rows[b].size();
      for (int64_t i = 0; i < counts[static_cast<size_t>(b)]; ++i)
        acc(logits.data() + (b * n_max + i) * V, want[b][pad + static_cast<size_t>(i)]);
    }
    for (int64_t b = 0; b < B; ++b) {
      auto s1 = t.start(1, n_max);
      size_t pad = width - rows[b].size();
      for (size_t i = 0; i < rows[b].size(); ++i) acc(t.step(s1, {rows[b][i]}, 1, true).data(), want[b][pad + i]);
    }
  } else {
    auto sources = real_tokens(in["input_ids"], in["attention_mask"]);
    const json &dec = in["decoder_input_ids"];
    const int64_t B = static_cast<int64_t>(sources.size()), n = static_cast<int64_t>(dec[0].size());
    auto st = t.start(B, n, sources);
    std::vector<int32_t> tokens;
    for (const auto &row : dec)
      for (const auto &id : row) tokens.push_back(id.get<int32_t>());
    auto logits = t.step(st, tokens, n);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < n; ++i) acc(logits.data() + (b * n + i) * V, want[b][static_cast<size_t>(i)]);
    auto inc = t.start(B, n, sources);
    for (int64_t i = 0; i < n; ++i) {
      std::vector<int32_t> step_tokens;
      for (int64_t b = 0; b < B; ++b) step_tokens.push_back(dec[b][i].get<int32_t>());
      auto lg = t.step(inc, step_tokens, 1, true);
      for (int64_t b = 0; b < B; ++b) acc(lg.data() + b * V, want[b][static_cast<size_t>(i)]);
    }
  }
  return worst;
}

// Decoding options as the golden's generate() call used them.
inline parley::DecodingOptions options_from(const json &settings) {
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
  if (settings.contains("bad_words_ids"))
    for (const auto &words : settings["bad_words_ids"]) {
      if (words.size() != 1) throw std::runtime_error("multi-token bad_words_ids are not supported");
      o.suppress_tokens.push_back(words[0].get<int32_t>());
    }
  return o;
}

// The generated part of a golden sequence: after `prompt_width` tokens, up
// to and including the first EOS (transformers pads finished rows after it).
inline std::vector<int32_t> generated_part(const json &seq, size_t prompt_width, const std::vector<int32_t> &eos) {
  std::vector<int32_t> out;
  for (size_t i = prompt_width; i < seq.size(); ++i) {
    int32_t id = seq[i].get<int32_t>();
    out.push_back(id);
    if (std::find(eos.begin(), eos.end(), id) != eos.end()) break;
  }
  return out;
}

// Run the engine's generate()/translate() on the model for the golden's inputs.
inline std::vector<std::vector<parley::Hypothesis>> run_generate(const Loaded &l, const parley::DecodingOptions &o,
                                                                 size_t *prompt_width) {
  const auto &t = *l.transformer;
  const json &in = l.golden["inputs"];
  auto rows = real_tokens(in["input_ids"], in["attention_mask"]);
  if (!t.encoder_decoder()) {
    *prompt_width = in["input_ids"][0].size();
    return parley::generate(t, rows, o);
  }
  // A golden whose model has no decoder_start_token_id (mbart_no_start) let
  // generate() pick bos_token_id; the runtime's own choice is tested then.
  const json &gs = l.golden["greedy"]["settings"]["decoder_start_token_id"];
  const int32_t start = gs.is_null() ? l.model->impl.file->decoder_start_token_id() : gs.get<int32_t>();
  *prompt_width = 1;
  return parley::translate(t, rows, std::vector<std::vector<int32_t>>(rows.size(), {start}), o);
}

// Beam search with the golden's settings: how many of its hypotheses equal
// transformers' (the golden's "beam" sequences); *total gets their number.
// For reduced-precision runs, which report it rather than assert it.
inline size_t beam_hypotheses_matching(const Loaded &l, size_t *total) {
  const json &g = l.golden["beam"];
  parley::DecodingOptions o = options_from(g["settings"]);
  size_t width = 0;
  auto hyps = run_generate(l, o, &width);
  const size_t R = static_cast<size_t>(o.num_return_sequences);
  if (hyps.size() * R != g["sequences"].size()) throw std::runtime_error("beam search returned another count");
  size_t same = 0;
  for (size_t b = 0; b < hyps.size(); ++b)
    for (size_t r = 0; r < R; ++r)
      same += hyps[b][r].tokens == generated_part(g["sequences"][b * R + r], width, o.eos_token_ids);
  *total = hyps.size() * R;
  return same;
}

}  // namespace parity
