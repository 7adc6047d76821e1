// Cost of constrained output (docs/constrained_output.md): microseconds per
// decoding step for the token mask on a model's vocabulary, for grammars
// from narrow (a keyword) to wide (JSON string contents admit most tokens),
// measured along random walks through each grammar; then generation with
// and without a JSON schema on the same model (interleaved A/B runs,
// medians). Not a test: prints a table.
//
//   ninja -C build bench_grammar_mask
//   build/tests/bench/bench_grammar_mask [model.parley] [--walks N] [--threads T]
//
// Default model: samples/support-bot/models/support-llama.parley.
#include <parley/parley.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/runtime.hpp"
#include "engine/grammar.hpp"
#include "engine/json_schema_grammar.hpp"
#include "engine/token_constraint.hpp"

using namespace parley;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

const char *kOrderSchema =
    R"({"type":"object","properties":{"order":{"type":"string","maxLength":12},"status":{"enum":["shipped","pending","lost"]},"items":{"type":"array","items":{"type":"integer"},"maxItems":3},"refund":{"type":"boolean"}},"required":["order","status","refund"],"additionalProperties":false})";

}  // namespace

int main(int argc, char **argv) {
  std::string path = PARLEY_BENCH_DEMO_MODEL;
  int walks = 20, threads = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--walks" && i + 1 < argc)
      walks = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else
      path = a;
  }
  const char *dirs[] = {PARLEY_BENCH_PLUGIN_DIR};
  parley_runtime_options ro;
  parley_runtime_options_init(&ro);
  ro.plugin_sources = PARLEY_PLUGINS_NONE;
  ro.plugin_dirs = dirs;
  ro.num_plugin_dirs = 1;
  ro.num_threads = threads;
  parley_runtime *rt = nullptr;
  if (parley_runtime_create(&ro, &rt) != PARLEY_OK) {
    std::fprintf(stderr, "runtime: %s\n", parley_last_error());
    return 1;
  }
  parley_model *m = nullptr;
  if (parley_model_load_file(rt, path.c_str(), nullptr, &m) != PARLEY_OK) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), parley_last_error());
    return 1;
  }
  auto t0 = Clock::now();
  auto vocab = m->impl.token_vocabulary();
  const double trie_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::printf("model %s: vocabulary %lld ids, trie %zu nodes, built in %.1f ms\n", path.c_str(),
              static_cast<long long>(vocab->size()), vocab->nodes().size(), trie_ms);

  struct Case {
    const char *name;
    std::string grammar;
  };
  const std::vector<Case> cases = {
      {"keyword (true|false|null)", R"(root ::= "true" | "false" | "null")"},
      {"digits [0-9]{1,12}", R"(root ::= [0-9]{1,12})"},
      {"order schema (object)", json_schema_to_gbnf(kOrderSchema)},
      {"free JSON string", R"(root ::= "\"" ([^"\\\x00-\x1F] | "\\" ["\\/bfnrt])* "\"")"},
      {"any JSON value", json_schema_to_gbnf("{}")},
  };
  std::printf(
      "\nwarm: with the cache as a generating row has it (a state met before, e.g. inside a string, is a lookup);\n"
      "cold: a fresh cache, so the trie walk runs (the first time a state is met)\n");
  std::printf("\n%-28s %6s %11s %9s %11s %9s %9s\n", "grammar", "steps", "warm med us", "warm p90", "cold med us",
              "cold p90", "admitted");
  std::mt19937_64 rng(1234);
  const std::vector<int32_t> eos = {};
  std::vector<float> scores(static_cast<size_t>(vocab->size()));
  for (const Case &c : cases) {
    auto con = std::make_shared<Constraint>();
    con->grammar = Grammar::parse(c.grammar);
    con->vocab = vocab;
    std::vector<double> us, cold_us;
    double admitted_sum = 0;
    for (int w = 0; w < walks; ++w) {
      ConstraintState st(con);
      std::vector<int32_t> walked;
      for (int step = 0; step < 48; ++step) {
        {
          ConstraintState fresh(con);  // replaying the path fills only its transitions
          for (int32_t t : walked) fresh.accept(t, eos);
          auto a = Clock::now();
          fresh.mask(scores.data(), eos);
          cold_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
        }
        std::fill(scores.begin(), scores.end(), 0.0f);
        auto a = Clock::now();
        const int64_t admitted = st.mask(scores.data(), eos);
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
        admitted_sum += static_cast<double>(admitted);
        if (admitted == 0) break;
        std::vector<int32_t> allowed;
        for (size_t t = 0; t < scores.size(); ++t)
          if (scores[t] == 0.0f) allowed.push_back(static_cast<int32_t>(t));
        int32_t pick = allowed[rng() % allowed.size()];
        st.accept(pick, eos);
        walked.push_back(pick);
        if (st.finished()) break;
      }
    }
    std::printf("%-28s %6zu %11.1f %9.1f %11.1f %9.1f %9.0f\n", c.name, us.size(), median(us), pct(us, 0.9),
                median(cold_us), pct(cold_us, 0.9), admitted_sum / static_cast<double>(us.size()));
  }

  // Whole generation: unconstrained vs the order schema, greedy, interleaved.
  int32_t ids[256];
  size_t n = 0;
  parley_tokenize(m, "Order 9019917 status:", 1, nullptr, ids, 256, &n);
  const int32_t *prompts[] = {ids};
  const size_t lengths[] = {n};
  std::vector<double> plain_ms, constrained_ms;
  size_t plain_tokens = 0, constrained_tokens = 0;
  for (int rep = 0; rep < 5; ++rep)
    for (int side = 0; side < 2; ++side) {
      parley_generation_options g;
      parley_generation_options_init(m, &g);
      g.max_new_tokens = 64;
      g.min_new_tokens = side == 0 ? 64 : 0;  // the plain side generates the full 64
      if (side == 1) g.json_schema = kOrderSchema;
      parley_generation_result *r = nullptr;
      auto a = Clock::now();
      if (parley_generate(m, prompts, lengths, 1, &g, &r) != PARLEY_OK) {
        std::fprintf(stderr, "generate: %s\n", parley_last_error());
        return 1;
      }
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - a).count();
      const int32_t *toks = nullptr;
      size_t len = 0;
      parley_result_hypothesis(r, 0, 0, &toks, &len, nullptr);
      (side == 0 ? plain_ms : constrained_ms).push_back(ms / static_cast<double>(std::max<size_t>(len, 1)));
      (side == 0 ? plain_tokens : constrained_tokens) = len;
      parley_result_free(r);
    }
  std::printf(
      "\ngeneration (greedy, %d thread(s), serving engine on): unconstrained %.3f ms/token (%zu tokens), "
      "order schema %.3f ms/token (%zu tokens), ratio %.2f\n",
      threads, median(plain_ms), plain_tokens, median(constrained_ms), constrained_tokens,
      median(constrained_ms) / median(plain_ms));
  parley_model_free(m);
  parley_runtime_free(rt);
  return 0;
}
