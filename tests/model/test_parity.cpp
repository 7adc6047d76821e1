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

INSTANTIATE_TEST_SUITE_P(Families, Parity, ::testing::ValuesIn(golden_names()),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

}  // namespace
