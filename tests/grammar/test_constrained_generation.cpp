// Constrained output end to end: JSON schemas and GBNF grammars on chat and
// generation with the demo chat model (its real tokenizer, through the C
// API, with and without the serving engine) and with the random-weight
// parity models (which have no tokenizer: a synthetic byte vocabulary of the
// model's size is bound instead, with multi-byte tokens, tokens that end
// inside a UTF-8 sequence and lone continuation bytes). Unconstrained, these
// models write garbage; constrained, every complete output must parse as
// JSON and validate against its schema (a small validator below), across
// seeds (fixed, printed; PARLEY_TEST_SEED overrides the base).
#include <gtest/gtest.h>
#include <parley/parley.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "../common/build_tree_runtime.hpp"
#include "core/error.hpp"
#include "core/runtime.hpp"
#include "engine/generator.hpp"
#include "engine/grammar.hpp"
#include "engine/json_schema_grammar.hpp"
#include "engine/token_constraint.hpp"

using nlohmann::json;
using namespace parley;

namespace {

uint64_t base_seed() {
  static const uint64_t seed = [] {
    const char *env = std::getenv("PARLEY_TEST_SEED");
    uint64_t s = env ? std::strtoull(env, nullptr, 10) : 1205u;
    std::printf("constrained generation: base seed %llu (PARLEY_TEST_SEED overrides)\n",
                static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

std::string env(const char *name) {
  const char *v = std::getenv(name);
  return v ? v : "";
}

// The subset of JSON schema the converter supports.
bool validates(const json &v, const json &s, std::string *why) {
  auto no = [&](const std::string &w) {
    *why = w + " at " + v.dump();
    return false;
  };
  if (s.is_boolean()) return s.get<bool>() || no("false schema");
  if (s.contains("const") && v != s["const"]) return no("const");
  if (s.contains("enum")) {
    bool found = false;
    for (const json &e : s["enum"]) found = found || e == v;
    if (!found) return no("enum");
  }
  if (s.contains("anyOf") || s.contains("oneOf")) {
    const json &alts = s.contains("anyOf") ? s["anyOf"] : s["oneOf"];
    int matched = 0;
    for (const json &a : alts) {
      std::string ignored;
      matched += validates(v, a, &ignored) ? 1 : 0;
    }
    if (matched == 0) return no("no anyOf/oneOf branch");
    if (s.contains("oneOf") && matched != 1) return no("several oneOf branches");
  }
  if (s.contains("type")) {
    std::vector<std::string> types;
    if (s["type"].is_array())
      for (const json &t : s["type"]) types.push_back(t.get<std::string>());
    else
      types.push_back(s["type"].get<std::string>());
    bool ok = false;
    for (const std::string &t : types)
      ok = ok || (t == "object" && v.is_object()) || (t == "array" && v.is_array()) ||
           (t == "string" && v.is_string()) || (t == "boolean" && v.is_boolean()) || (t == "null" && v.is_null()) ||
           (t == "number" && v.is_number()) || (t == "integer" && (v.is_number_integer() || v.is_number_unsigned()));
    if (!ok) return no("type");
  }
  if (v.is_string()) {
    // Length in code points.
    size_t n = 0;
    for (unsigned char c : v.get<std::string>()) n += (c & 0xC0) != 0x80;
    if (s.contains("minLength") && n < s["minLength"].get<size_t>()) return no("minLength");
    if (s.contains("maxLength") && n > s["maxLength"].get<size_t>()) return no("maxLength");
  }
  if (v.is_array()) {
    if (s.contains("minItems") && v.size() < s["minItems"].get<size_t>()) return no("minItems");
    if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>()) return no("maxItems");
    if (s.contains("items"))
      for (const json &item : v)
        if (!validates(item, s["items"], why)) return false;
  }
  if (v.is_object()) {
    if (s.contains("required"))
      for (const json &r : s["required"])
        if (!v.contains(r.get<std::string>())) return no("required " + r.get<std::string>());
    for (const auto &[k, item] : v.items()) {
      if (s.contains("properties") && s["properties"].contains(k)) {
        if (!validates(item, s["properties"][k], why)) return false;
      } else if (s.contains("additionalProperties")) {
        if (!validates(item, s["additionalProperties"], why)) return false;
      }
    }
  }
  return true;
}

// Parses and validates; false with a reason.
bool parses_and_validates(const std::string &text, const std::string &schema, std::string *why) {
  json v;
  try {
    v = json::parse(text);
  } catch (const json::exception &e) {
    *why = std::string("does not parse: ") + e.what();
    return false;
  }
  return validates(v, json::parse(schema), why);
}

// Schemas whose longest document is under 40 bytes, so that random models
// with 48-64 positions always complete them (each token adds >= 1 byte).
const std::vector<std::string> kShortSchemas = {
    R"({"type":"object","properties":{"ok":{"type":"boolean"},"tag":{"enum":["x","yz"]}},"required":["ok","tag"],"additionalProperties":false})",
    R"({"type":"array","items":{"enum":[1,22,null]},"minItems":1,"maxItems":4})",
    R"({"type":"string","minLength":1,"maxLength":8})",
    R"({"anyOf":[{"type":"boolean"},{"type":"null"},{"type":"array","items":{"type":"boolean"},"maxItems":2}]})",
    R"({"oneOf":[{"const":"a"},{"type":"object","properties":{"k":{"type":"null"}},"required":["k"]}]})",
};

// A vocabulary of `size` ids for a tokenizer-less model: 0-3 control ids,
// then printable ASCII, multi-byte pieces, UTF-8 lead and continuation
// bytes, and a few longer tokens.
std::shared_ptr<TokenVocabulary> synthetic_vocab(int64_t size) {
  std::vector<std::string> pieces = {"\"",    "{",    "}",      "[",      "]",    ":",    ",", " ",        "true",
                                     "false", "null", "\"x\"",  "\"yz\"", "\xC3", "\xA9", "é", "\xE2\x82", "\xAC",
                                     "\\",    "\\n",  "\"ok\"", "tag",    "1",    "22",   "a", "k",        "\"k\"",
                                     "\":",   "e",    "n",      "u",      "l",    "f",    "s", "r",        "t",
                                     "y",     "z",    "x",      "o",      "g"};
  for (char c = 32; c < 127 && pieces.size() < 120; ++c) pieces.emplace_back(1, c);
  std::vector<std::string> bytes(static_cast<size_t>(size));
  std::vector<char> text(static_cast<size_t>(size), 0);
  for (int64_t i = 4; i < size; ++i) {
    bytes[static_cast<size_t>(i)] = pieces[static_cast<size_t>(i - 4) % pieces.size()];
    text[static_cast<size_t>(i)] = 1;
  }
  return std::make_shared<TokenVocabulary>(bytes, text);
}

parley_runtime *runtime() {
  static parley_runtime *rt = [] {
    parley_runtime *r = nullptr;
    if (parley::test::create_build_tree_runtime(2, &r) != PARLEY_OK) {
      std::fprintf(stderr, "runtime: %s\n", parley_last_error());
      std::abort();
    }
    return r;
  }();
  return rt;
}

parley_model *load(const std::string &path, bool engine) {
  parley_model_options o;
  parley_model_options_init(&o);
  o.serving_engine = engine ? 1 : 0;
  parley_model *m = nullptr;
  EXPECT_EQ(parley_model_load_file(runtime(), path.c_str(), &o, &m), PARLEY_OK) << path << ": " << parley_last_error();
  return m;
}

struct ModelCloser {
  parley_model *m;
  ~ModelCloser() { parley_model_free(m); }
};

}  // namespace

// Random-weight models: constrained sampling, greedy and beam search, a
// batch of prompts through the serving engine (one grammar state per
// sequence, batched steps) and through the contiguous path.
TEST(ConstrainedGeneration, RandomModelsAlwaysValidate) {
  const std::string dir = env("PARLEY_PARITY_MODELS");
  ASSERT_FALSE(dir.empty());
  int garbage = 0, runs = 0;
  for (const char *name : {"llama", "qwen2", "qwen3", "mistral", "gpt2"}) {
    for (bool use_engine : {true, false}) {
      parley_model *m = load(dir + "/" + name + ".parley", use_engine);
      ASSERT_NE(m, nullptr);
      ModelCloser closer{m};
      const Transformer &t = m->impl.transformer();
      Engine *engine = m->impl.engine();
      if (use_engine) {
        ASSERT_NE(engine, nullptr) << name;
      }
      auto vocab = synthetic_vocab(t.vocab());
      const int64_t positions = t.decoder_params().max_positions;
      const std::vector<std::vector<int32_t>> prompts = {{0, 7}, {0, 9, 12}, {0}};
      for (size_t si = 0; si < kShortSchemas.size(); ++si) {
        const std::string &schema = kShortSchemas[si];
        auto c = std::make_shared<Constraint>();
        c->grammar = Grammar::parse(json_schema_to_gbnf(schema));
        c->vocab = vocab;
        for (uint64_t k = 0; k < 3; ++k) {
          const uint64_t seed = base_seed() + k;
          DecodingOptions d = decoding_defaults(*m->impl.file);
          d.eos_token_ids = {2};
          d.max_new_tokens = positions - 3;
          d.do_sample = k < 2;  // two sampled runs, one beam search
          d.temperature = 1.5;
          d.top_k = 0;
          d.seed = seed;
          d.num_beams = k < 2 ? 1 : 3;
          d.num_return_sequences = k < 2 ? 1 : 2;
          DecodingOptions plain = d;
          d.constraint = c;
          auto out = engine ? generate(*engine, prompts, d) : generate(t, prompts, d);
          ASSERT_EQ(out.size(), prompts.size());
          for (size_t b = 0; b < out.size(); ++b)
            for (const Hypothesis &h : out[b]) {
              const std::string text = c->text_of(h.tokens);
              ++runs;
              SCOPED_TRACE(std::string(name) + (use_engine ? " engine" : " contiguous") + " schema " +
                           std::to_string(si) + " seed " + std::to_string(seed) + " prompt " + std::to_string(b) +
                           ": " + text);
              ASSERT_EQ(h.constraint, static_cast<int8_t>(ConstraintStatus::kComplete));
              std::string why;
              EXPECT_TRUE(parses_and_validates(text, schema, &why)) << why;
            }
          if (!d.do_sample || si != 0) continue;
          // The same request unconstrained: these models write garbage.
          plain.num_beams = 1;
          plain.num_return_sequences = 1;
          auto free_run = engine ? generate(*engine, prompts, plain) : generate(t, prompts, plain);
          for (const auto &item : free_run) {
            std::string why;
            EXPECT_EQ(item[0].constraint, 0);
            garbage += parses_and_validates(c->text_of(item[0].tokens), schema, &why) ? 0 : 1;
          }
        }
      }
    }
  }
  std::printf("%d constrained outputs validated; %d unconstrained outputs did not validate\n", runs, garbage);
  EXPECT_GT(garbage, 0);
}

// max_new_tokens reached before the grammar completes: reported, never
// presented as complete; and a greedy row whose grammar is finished ends
// without an EOS id.
TEST(ConstrainedGeneration, IncompleteIsReported) {
  parley_model *m = load(env("PARLEY_PARITY_MODELS") + "/llama.parley", true);
  ASSERT_NE(m, nullptr);
  ModelCloser closer{m};
  auto c = std::make_shared<Constraint>();
  c->grammar = Grammar::parse(R"(root ::= "[" ("1" | "22"){3,} "]")");
  c->vocab = synthetic_vocab(m->impl.transformer().vocab());
  DecodingOptions d = decoding_defaults(*m->impl.file);
  d.eos_token_ids = {2};
  d.max_new_tokens = 3;  // "[" + at least three items + "]" needs 5 tokens
  d.constraint = c;
  auto out = generate(*m->impl.engine(), {{0, 5}}, d);
  EXPECT_EQ(out[0][0].tokens.size(), 3u);
  EXPECT_EQ(out[0][0].constraint, static_cast<int8_t>(ConstraintStatus::kIncomplete));
  // No EOS ids: a finished grammar ends the row by itself.
  c->grammar = Grammar::parse(R"(root ::= "true" | "false")");
  d.eos_token_ids.clear();
  d.max_new_tokens = 20;
  out = generate(*m->impl.engine(), {{0, 5}, {0, 6}}, d);
  for (const auto &item : out) {
    EXPECT_EQ(item[0].constraint, static_cast<int8_t>(ConstraintStatus::kComplete));
    const std::string text = c->text_of(item[0].tokens);
    EXPECT_TRUE(text == "true" || text == "false") << text;
  }
  // Beam search without EOS ids is refused.
  d.num_beams = 2;
  try {
    generate(*m->impl.engine(), {{0, 5}}, d);
    ADD_FAILURE() << "beam search without EOS ids was accepted";
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_UNSUPPORTED);
  }
}

// The demo chat model through the C API: chat turns and parley_generate
// with a JSON schema and a GBNF grammar, sampled with several seeds,
// through the serving engine and without it.
TEST(ConstrainedGeneration, DemoChatModelThroughCApi) {
  const std::string schema =
      R"({"type":"object","properties":{"order":{"type":"string","maxLength":12},"status":{"enum":["shipped","pending","lost"]},"items":{"type":"array","items":{"type":"integer"},"maxItems":3},"refund":{"type":"boolean"}},"required":["order","status","refund"],"additionalProperties":false})";
  for (bool use_engine : {true, false}) {
    parley_model *m = load(env("PARLEY_DEMO_MODELS") + "/support-llama.parley", use_engine);
    ASSERT_NE(m, nullptr);
    ModelCloser closer{m};
    for (uint64_t k = 0; k < 3; ++k) {
      const uint64_t seed = base_seed() + 100 + k;
      parley_chat_session *s = nullptr;
      ASSERT_EQ(parley_chat_session_create(m, "You are a support assistant.", &s), PARLEY_OK) << parley_last_error();
      ASSERT_EQ(parley_chat_append(s, PARLEY_ROLE_USER, "Where is my order 9019917?"), PARLEY_OK);
      parley_generation_options g;
      parley_generation_options_init(m, &g);
      g.do_sample = 1;
      g.temperature = 1.3f;
      g.top_k = 0;
      g.seed = seed;
      g.max_new_tokens = 200;
      g.json_schema = schema.c_str();
      parley_chat_options co;
      parley_chat_options_init(&co);
      co.generation = &g;
      char *reply = nullptr;
      ASSERT_EQ(parley_chat_generate(s, &co, &reply), PARLEY_OK) << parley_last_error();
      parley_chat_stats st;
      st.struct_size = sizeof st;
      ASSERT_EQ(parley_chat_stats_get(s, &st), PARLEY_OK);
      SCOPED_TRACE(std::string("seed ") + std::to_string(seed) + (use_engine ? " engine: " : " contiguous: ") + reply);
      std::string why;
      if (st.constraint_status == PARLEY_CONSTRAINT_COMPLETE)
        EXPECT_TRUE(parses_and_validates(reply, schema, &why)) << why;
      else
        EXPECT_EQ(st.constraint_status, PARLEY_CONSTRAINT_INCOMPLETE);
      EXPECT_EQ(st.constraint_status, PARLEY_CONSTRAINT_COMPLETE) << "200 tokens should finish this schema";
      parley_string_free(reply);
      // The same turn unconstrained is not JSON (the model is a small chat model).
      if (k == 0) {
        parley_chat_remove_last(s);
        g.json_schema = nullptr;
        g.max_new_tokens = 40;
        ASSERT_EQ(parley_chat_generate(s, &co, &reply), PARLEY_OK) << parley_last_error();
        EXPECT_FALSE(parses_and_validates(reply, schema, &why)) << reply;
        ASSERT_EQ(parley_chat_stats_get(s, &st), PARLEY_OK);
        EXPECT_EQ(st.constraint_status, PARLEY_CONSTRAINT_NONE);
        parley_string_free(reply);
      }
      parley_chat_session_free(s);
    }
    // parley_generate with a GBNF grammar, a batch of two prompts.
    int32_t ids[64];
    size_t n = 0;
    ASSERT_EQ(parley_tokenize(m, "Order status:", 1, nullptr, ids, 64, &n), PARLEY_OK) << parley_last_error();
    const int32_t *prompts[2] = {ids, ids};
    const size_t lengths[2] = {n, n > 1 ? n - 1 : n};
    const char *grammar = "root ::= \"order \" [0-9]{7} \" is \" (\"shipped\" | \"pending\") \".\"";
    parley_generation_options g;
    parley_generation_options_init(m, &g);
    g.do_sample = 1;
    g.seed = base_seed();
    g.max_new_tokens = 60;
    g.grammar = grammar;
    parley_generation_result *r = nullptr;
    ASSERT_EQ(parley_generate(m, prompts, lengths, 2, &g, &r), PARLEY_OK) << parley_last_error();
    auto vocab = m->impl.token_vocabulary();
    auto gram = Grammar::parse(grammar);
    for (size_t b = 0; b < 2; ++b) {
      const int32_t *toks = nullptr;
      size_t len = 0;
      ASSERT_EQ(parley_result_hypothesis(r, b, 0, &toks, &len, nullptr), PARLEY_OK);
      int32_t status = -1;
      ASSERT_EQ(parley_result_hypothesis_constraint(r, b, 0, &status), PARLEY_OK);
      std::string text;
      for (size_t i = 0; i < len; ++i)
        if (vocab->is_text(toks[i])) text += vocab->bytes(toks[i]);
      EXPECT_EQ(status, PARLEY_CONSTRAINT_COMPLETE) << text;
      // The text matches the grammar: a full run of the matcher.
      GrammarState st, next;
      st.stacks = gram->initial_stacks();
      bool ok = true;
      for (char ch : text)
        ok = ok && advance_byte(*gram, st, static_cast<uint8_t>(ch), next) && (std::swap(st, next), true);
      EXPECT_TRUE(ok && st.complete()) << text;
      char *detok = nullptr;
      ASSERT_EQ(parley_detokenize(m, toks, len, 1, &detok), PARLEY_OK);
      EXPECT_NE(std::string(detok).find("order "), std::string::npos) << detok;
      parley_string_free(detok);
    }
    int32_t status = 0;
    EXPECT_EQ(parley_result_hypothesis_constraint(r, 2, 0, &status), PARLEY_ERROR_NOT_FOUND);
    EXPECT_EQ(parley_result_hypothesis_constraint(r, 0, 0, nullptr), PARLEY_ERROR_INVALID_ARGUMENT);
    parley_result_free(r);
    // Unconstrained results report PARLEY_CONSTRAINT_NONE.
    g.grammar = nullptr;
    g.max_new_tokens = 4;
    ASSERT_EQ(parley_generate(m, prompts, lengths, 1, &g, &r), PARLEY_OK);
    ASSERT_EQ(parley_result_hypothesis_constraint(r, 0, 0, &status), PARLEY_OK);
    EXPECT_EQ(status, PARLEY_CONSTRAINT_NONE);
    parley_result_free(r);
  }
}

// The mask on the demo model's real vocabulary (SentencePiece with byte
// fallback) equals brute force: each token's bytes fed to a copy of the state.
TEST(ConstrainedGeneration, DemoVocabularyMaskEqualsBruteForce) {
  parley_model *m = load(env("PARLEY_DEMO_MODELS") + "/support-llama.parley", false);
  ASSERT_NE(m, nullptr);
  ModelCloser closer{m};
  auto vocab = m->impl.token_vocabulary();
  int64_t byte_tokens = 0, digit_only = 0;
  for (int32_t t = 0; t < vocab->size(); ++t) {
    if (!vocab->is_text(t)) continue;
    const std::string &b = vocab->bytes(t);
    byte_tokens += b.size() == 1 && static_cast<uint8_t>(b[0]) >= 0x80;
    digit_only += !b.empty() && b.find_first_not_of("0123456789") == std::string::npos;
  }
  std::printf("demo vocabulary: %lld ids, %lld single non-ASCII bytes, %lld digit-only tokens\n",
              static_cast<long long>(vocab->size()), static_cast<long long>(byte_tokens),
              static_cast<long long>(digit_only));
  std::mt19937_64 rng(base_seed());
  const std::vector<int32_t> eos = {2};
  for (const std::string &g : {std::string(R"(root ::= [0-9]{1,12})"), std::string(R"(root ::= "\"" [^"]{0,6} "\"")"),
                               json_schema_to_gbnf(kShortSchemas[0]), std::string(R"(root ::= [äöüß€a-z ]+)")}) {
    auto c = std::make_shared<Constraint>();
    c->grammar = Grammar::parse(g);
    c->vocab = vocab;
    ConstraintState st(c);
    for (int step = 0; step < 12; ++step) {
      std::vector<float> scores(static_cast<size_t>(vocab->size()), 0.0f);
      const int64_t admitted = st.mask(scores.data(), eos);
      std::vector<int32_t> allowed;
      for (int32_t t = 0; t < vocab->size(); ++t) {
        ConstraintState copy = st;
        const bool ok = copy.accept(t, eos);
        ASSERT_EQ(ok, scores[static_cast<size_t>(t)] == 0.0f)
            << "token " << t << " '" << vocab->bytes(t) << "' step " << step << " of " << g;
        if (ok) allowed.push_back(t);
      }
      ASSERT_EQ(admitted, static_cast<int64_t>(allowed.size()));
      if (allowed.empty()) break;
      const int32_t pick = allowed[rng() % allowed.size()];
      if (pick == eos[0]) break;
      ASSERT_TRUE(st.accept(pick, eos));
    }
  }
}

// The token bytes of real tokenizers (byte-level BPE: GPT-2, Llama-3,
// Qwen2; SentencePiece with byte fallback: Mistral) concatenate back to the
// text they encode, multi-byte and emoji included; and a constrained walk on
// each full vocabulary admits exactly the tokens brute force admits.
TEST(ConstrainedGeneration, RealTokenizerBytes) {
  const std::string dir = env("PARLEY_TOKENIZER_FILES");
  ASSERT_FALSE(dir.empty());
  const std::string text = "Order 9019917: Grüße, naïve café — 😀 {\"ok\": true}";
  for (const char *name : {"gpt2", "llama3", "qwen2", "mistral"}) {
    SCOPED_TRACE(name);
    parley_model *m = load(dir + "/" + name + ".parley", false);
    ASSERT_NE(m, nullptr);
    ModelCloser closer{m};
    auto vocab = m->impl.token_vocabulary();
    std::vector<int32_t> ids(256);
    size_t n = 0;
    ASSERT_EQ(parley_tokenize(m, text.c_str(), 0, nullptr, ids.data(), ids.size(), &n), PARLEY_OK)
        << parley_last_error();
    std::string joined;
    for (size_t i = 0; i < n; ++i) {
      ASSERT_TRUE(vocab->is_text(ids[i])) << ids[i];
      joined += vocab->bytes(ids[i]);
    }
    std::printf("%s: vocabulary %lld ids, trie %zu nodes, the text in %zu tokens\n", name,
                static_cast<long long>(vocab->size()), vocab->nodes().size(), n);
    if (joined.size() == text.size() + 1 && joined[0] == ' ') joined.erase(0, 1);  // SentencePiece's dummy prefix
    EXPECT_EQ(joined, text);
    // Brute force on the whole vocabulary for a few steps of a JSON schema.
    auto c = std::make_shared<Constraint>();
    c->grammar = Grammar::parse(json_schema_to_gbnf(R"({"type":"object","properties":{"name":{"type":"string"}}})"));
    c->vocab = vocab;
    ConstraintState st(c);
    const std::vector<int32_t> eos = {};
    for (const std::string &piece : {std::string("{\"name\""), std::string(": \"Gr"), std::string("ü")}) {
      std::vector<float> scores(static_cast<size_t>(vocab->size()), 0.0f);
      st.mask(scores.data(), eos);
      for (int32_t t = 0; t < vocab->size(); ++t) {
        ConstraintState copy = st;
        ASSERT_EQ(copy.accept(t, eos), scores[static_cast<size_t>(t)] == 0.0f) << "token " << t;
      }
      // Advance by the piece's tokens (as the tokenizer splits it, without a dummy prefix).
      bool advanced = false;
      for (int32_t t = 0; t < vocab->size() && !advanced; ++t)
        if (vocab->is_text(t) && vocab->bytes(t) == piece) advanced = st.accept(t, eos);
      if (!advanced)
        for (char ch : piece) {
          bool one = false;
          for (int32_t t = 0; t < vocab->size() && !one; ++t)
            if (vocab->is_text(t) && vocab->bytes(t) == std::string(1, ch)) one = st.accept(t, eos);
          if (!one) {  // a byte with no single-byte token (SentencePiece without it): stop here
            break;
          }
        }
    }
  }
}

// An asynchronous generation keeps its own copy of the grammar: the
// caller's buffer is overwritten right after the submit returns.
TEST(ConstrainedGeneration, SubmitCopiesTheGrammar) {
  parley_model *m = load(env("PARLEY_DEMO_MODELS") + "/support-llama.parley", true);
  ASSERT_NE(m, nullptr);
  ModelCloser closer{m};
  int32_t ids[64];
  size_t n = 0;
  ASSERT_EQ(parley_tokenize(m, "Status:", 1, nullptr, ids, 64, &n), PARLEY_OK);
  const int32_t *prompts[] = {ids};
  const size_t lengths[] = {n};
  std::string grammar = R"(root ::= ("yes" | "no") "!")";
  parley_generation_options g;
  parley_generation_options_init(m, &g);
  g.max_new_tokens = 10;
  g.grammar = grammar.c_str();
  parley_request *req = nullptr;
  ASSERT_EQ(parley_generate_submit(m, prompts, lengths, 1, &g, nullptr, &req), PARLEY_OK) << parley_last_error();
  std::fill(grammar.begin(), grammar.end(), '#');  // a comment-only grammar, were it read now
  ASSERT_EQ(parley_request_wait(req, -1), PARLEY_OK);
  int32_t status = -1;
  const char *message = nullptr;
  ASSERT_EQ(parley_request_status(req, &status, &message), PARLEY_OK);
  ASSERT_EQ(status, PARLEY_OK) << message;
  parley_generation_result *r = nullptr;
  ASSERT_EQ(parley_request_take_generation_result(req, &r), PARLEY_OK);
  const int32_t *toks = nullptr;
  size_t len = 0;
  ASSERT_EQ(parley_result_hypothesis(r, 0, 0, &toks, &len, nullptr), PARLEY_OK);
  int32_t complete = 0;
  ASSERT_EQ(parley_result_hypothesis_constraint(r, 0, 0, &complete), PARLEY_OK);
  EXPECT_EQ(complete, PARLEY_CONSTRAINT_COMPLETE);
  auto vocab = m->impl.token_vocabulary();
  std::string text;
  for (size_t i = 0; i < len; ++i)
    if (vocab->is_text(toks[i])) text += vocab->bytes(toks[i]);
  EXPECT_TRUE(text == "yes!" || text == "no!") << text;
  parley_result_free(r);
  parley_request_free(req);
}

// Misuse through the C API: clear errors naming the position or keyword.
TEST(ConstrainedGeneration, CApiErrors) {
  parley_model *m = load(env("PARLEY_DEMO_MODELS") + "/support-llama.parley", true);
  ASSERT_NE(m, nullptr);
  ModelCloser closer{m};
  int32_t prompt[] = {1, 2, 3};
  const int32_t *prompts[] = {prompt};
  const size_t lengths[] = {3};
  auto run = [&](const char *grammar, const char *schema) {
    parley_generation_options g;
    parley_generation_options_init(m, &g);
    g.max_new_tokens = 4;
    g.grammar = grammar;
    g.json_schema = schema;
    parley_generation_result *r = nullptr;
    parley_status st = parley_generate(m, prompts, lengths, 1, &g, &r);
    parley_result_free(r);
    return std::make_pair(st, std::string(st == PARLEY_OK ? "" : parley_last_error()));
  };
  auto [s1, e1] = run("root ::= \"a\" |\n  (\"b\"", nullptr);
  EXPECT_EQ(s1, PARLEY_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(e1.find("line 2, column 3: unclosed '('"), std::string::npos) << e1;
  auto [s2, e2] = run(nullptr, R"({"type":"integer","maximum":3})");
  EXPECT_EQ(s2, PARLEY_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(e2.find("unsupported keyword 'maximum'"), std::string::npos) << e2;
  auto [s3, e3] = run("root ::= \"a\"", "{}");
  EXPECT_EQ(s3, PARLEY_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(e3.find("not both"), std::string::npos) << e3;
  auto [s4, e4] = run("root ::= x\nx ::= \"a\" x", nullptr);
  EXPECT_EQ(s4, PARLEY_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(e4.find("admits nothing"), std::string::npos) << e4;
  auto [s5, e5] = run(nullptr, "{\"type\": ");
  EXPECT_EQ(s5, PARLEY_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(e5.find("not valid JSON at byte"), std::string::npos) << e5;
  EXPECT_EQ(run("root ::= \"ok\"", nullptr).first, PARLEY_OK);
  // Translation refuses a constraint.
  parley_model *mt = load(env("PARLEY_DEMO_MODELS") + "/opus-mt-en-de.parley", true);
  ASSERT_NE(mt, nullptr);
  ModelCloser mt_closer{mt};
  parley_generation_options g;
  parley_generation_options_init(mt, &g);
  g.grammar = "root ::= \"x\"";
  parley_generation_result *r = nullptr;
  EXPECT_EQ(parley_translate_tokens(mt, prompts, lengths, 1, nullptr, nullptr, &g, &r), PARLEY_ERROR_UNSUPPORTED);
  // A caller built before the fields existed (older struct_size) is unconstrained.
  parley_generation_options old;
  parley_generation_options_init(m, &old);
  old.struct_size = offsetof(parley_generation_options, user_data) + sizeof(void *);
  old.max_new_tokens = 2;
  ASSERT_EQ(parley_generate(m, prompts, lengths, 1, &old, &r), PARLEY_OK) << parley_last_error();
  int32_t status = -1;
  ASSERT_EQ(parley_result_hypothesis_constraint(r, 0, 0, &status), PARLEY_OK);
  EXPECT_EQ(status, PARLEY_CONSTRAINT_NONE);
  parley_result_free(r);
}
