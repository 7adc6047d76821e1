// Decoding (greedy, beam search, sampling) against outputs recorded from
// transformers' generate() on the same scripted model (make_reference.py),
// plus properties of sampling that no reference can pin down.
#include <gtest/gtest.h>
#include <pthread.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "../common/gtest_seed.h"
#include "core/error.hpp"
#include "engine/decoding.hpp"
#include "engine/logits_processors.hpp"
#include "fake_model.hpp"

namespace parley {
namespace {

using json = nlohmann::json;
using testing::FakeStepModel;

const json &reference() {
  static const json doc = [] {
    std::ifstream in(PARLEY_DECODING_REFERENCE);
    if (!in) throw std::runtime_error("cannot open " PARLEY_DECODING_REFERENCE);
    return json::parse(in);
  }();
  return doc;
}

DecodingOptions options_from(const json &o) {
  DecodingOptions d;
  d.max_new_tokens = o.value("max_new_tokens", int64_t{20});
  d.min_new_tokens = o.value("min_new_tokens", int64_t{0});
  d.num_beams = o.value("num_beams", int64_t{1});
  d.num_return_sequences = o.value("num_return_sequences", int64_t{1});
  d.length_penalty = o.value("length_penalty", 1.0);
  const std::string es = o.value("early_stopping", std::string("false"));
  d.early_stopping = es == "true"    ? EarlyStopping::kTrue
                     : es == "never" ? EarlyStopping::kNever
                                     : EarlyStopping::kFalse;
  d.no_repeat_ngram_size = o.value("no_repeat_ngram_size", int64_t{0});
  d.repetition_penalty = o.value("repetition_penalty", 1.0);
  d.eos_token_ids = o.value("eos_token_ids", std::vector<int32_t>{});
  d.pad_token_id = o.value("pad_token_id", 0);
  if (o.contains("forced_bos_token_id")) d.forced_bos_token_id = o["forced_bos_token_id"].get<int32_t>();
  d.forced_eos_token_ids = o.value("forced_eos_token_ids", std::vector<int32_t>{});
  d.suppress_tokens = o.value("suppress_tokens", std::vector<int32_t>{});
  d.begin_suppress_tokens = o.value("begin_suppress_tokens", std::vector<int32_t>{});
  return d;
}

std::vector<std::vector<Hypothesis>> run(int64_t vocab, uint64_t salt, const std::vector<std::vector<int32_t>> &prompts,
                                         const DecodingOptions &o, FakeStepModel **keep = nullptr) {
  // The last model stays alive so a test can inspect it through `keep`.
  static std::unique_ptr<FakeStepModel> last;
  last = std::make_unique<FakeStepModel>(vocab, salt, prompts);
  if (keep) *keep = last.get();
  return decode(*last, last->logits(), prompts, o);
}

TEST(DecodingReference, MatchesTransformersGenerate) {
  const json &doc = reference();
  ASSERT_GE(doc["cases"].size(), 10u);
  for (const json &c : doc["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const auto prompts = c["prompts"].get<std::vector<std::vector<int32_t>>>();
    const DecodingOptions o = options_from(c["options"]);
    const auto got = run(c["vocab"].get<int64_t>(), c["salt"].get<uint64_t>(), prompts, o);
    const json &want = c["expected"];
    ASSERT_EQ(got.size(), want.size());
    for (size_t b = 0; b < got.size(); ++b) {
      ASSERT_EQ(got[b].size(), want[b].size()) << "batch item " << b;
      for (size_t s = 0; s < got[b].size(); ++s) {
        SCOPED_TRACE("batch item " + std::to_string(b) + ", hypothesis " + std::to_string(s));
        EXPECT_EQ(got[b][s].tokens, want[b][s]["tokens"].get<std::vector<int32_t>>());
        const double ws = want[b][s]["score"].get<double>();
        EXPECT_NEAR(got[b][s].score, ws, 1e-4 * std::max(1.0, std::fabs(ws)));
      }
    }
  }
}

TEST(DecodingReference, ProcessorsMatchTransformers) {
  const json &doc = reference();
  ASSERT_GE(doc["warpers"].size(), 40u);
  std::set<std::string> kinds;
  for (const json &w : doc["warpers"]) {
    const std::string kind = w["kind"];
    kinds.insert(kind);
    std::vector<float> s = w["scores"].get<std::vector<float>>();
    const int64_t vocab = static_cast<int64_t>(s.size());
    const json &p = w["params"];
    std::vector<int32_t> hist, none;
    if (w.contains("history")) hist = w["history"].get<std::vector<int32_t>>();
    const decoding::RowHistory history{&hist, &none};
    if (kind == "temperature")
      decoding::temperature(s.data(), vocab, p["t"].get<double>());
    else if (kind == "top_k")
      decoding::top_k(s.data(), vocab, p["k"].get<int64_t>(), p["keep"].get<int64_t>());
    else if (kind == "top_p")
      decoding::top_p(s.data(), vocab, p["p"].get<double>(), p["keep"].get<int64_t>());
    else if (kind == "min_p")
      decoding::min_p(s.data(), vocab, p["p"].get<double>(), p["keep"].get<int64_t>());
    else if (kind == "repetition")
      decoding::repetition_penalty(s.data(), vocab, history, p["penalty"].get<double>());
    else if (kind == "no_repeat_ngram")
      decoding::no_repeat_ngram(s.data(), vocab, history, p["n"].get<int64_t>());
    else
      FAIL() << "unknown processor kind " << kind;
    const json &want = w["expected"];
    int masked = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      SCOPED_TRACE(kind + " token " + std::to_string(v));
      if (want[static_cast<size_t>(v)].is_null()) {
        EXPECT_EQ(s[static_cast<size_t>(v)], -std::numeric_limits<float>::infinity());
        ++masked;
      } else {
        EXPECT_NEAR(s[static_cast<size_t>(v)], want[static_cast<size_t>(v)].get<double>(), 1e-6);
      }
    }
    (void)masked;
  }
  EXPECT_EQ(kinds.size(), 6u);
}

// ---------------------------------------------------------------- sampling --

DecodingOptions sampling(uint64_t seed) {
  DecodingOptions o;
  o.do_sample = true;
  o.seed = seed;
  o.top_k = 0;
  o.max_new_tokens = 12;
  o.eos_token_ids = {2};
  return o;
}

const std::vector<std::vector<int32_t>> kPrompts = {{3, 7, 1}, {5, 5, 2}, {9, 0, 4}};

// The sampler's own seeds are inputs of these tests: drawn from the test seed
// (tests/common/gtest_seed.h), so a sweep over PARLEY_TEST_SEED explores them.
TEST(Sampling, SameSeedSameOutputDifferentSeedDifferentOutput) {
  PARLEY_TRACE_BASE_SEED();
  DecodingOptions o = sampling(parley::test::case_seed());
  o.num_return_sequences = 3;
  const auto a = run(32, 21, kPrompts, o);
  const auto b = run(32, 21, kPrompts, o);
  ASSERT_EQ(a.size(), 3u);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].size(), 3u);
    for (size_t s = 0; s < 3; ++s) {
      EXPECT_EQ(a[i][s].tokens, b[i][s].tokens);
      EXPECT_EQ(a[i][s].score, b[i][s].score);
    }
  }
  int differing = 0;
  for (int i = 0; i < 5; ++i) {
    const auto c = run(32, 21, kPrompts, sampling(parley::test::case_seed()));
    differing += c[0][0].tokens != a[0][0].tokens;
  }
  EXPECT_GE(differing, 4);
  // A row's samples do not depend on the other rows of its batch.
  const auto alone = run(32, 21, {kPrompts[0]}, o);
  EXPECT_EQ(alone[0][1].tokens, a[0][1].tokens);
}

// Empirical first-token frequencies follow softmax(logits / T).
TEST(Sampling, FollowsTheDistribution) {
  for (double t : {1.0, 0.6}) {
    const int64_t vocab = 8;
    PARLEY_CASE_SEED(seed);
    DecodingOptions o = sampling(seed);
    o.max_new_tokens = 1;
    o.temperature = t;
    o.num_return_sequences = 4000;
    FakeStepModel *m = nullptr;
    const auto out = run(vocab, 33, {{1, 2}}, o, &m);
    std::vector<double> freq(vocab, 0.0);
    for (const auto &h : out[0]) freq[static_cast<size_t>(h.tokens.at(0))] += 1.0 / 4000.0;
    std::vector<float> l(vocab);
    for (int64_t v = 0; v < vocab; ++v)
      l[static_cast<size_t>(v)] = testing::fake_logit(33, 1, 2, v) / static_cast<float>(t);
    std::vector<double> p(vocab);
    decoding::softmax(l.data(), p.data(), vocab);
    // A token's count is Binomial(n, p_v): its frequency has standard deviation
    // sqrt(p_v (1 - p_v) / n). Five of those (a two-sided normal tail of 5.7e-7
    // per token, so ~2e-3 false alarms over a 200-seed sweep of 16 tokens) plus
    // one count for the discreteness when n p_v is small; a sampler off by a
    // few percent of probability still fails (sd <= 0.008 at n = 4000).
    const double n = 4000;
    for (int64_t v = 0; v < vocab; ++v) {
      const double pv = p[static_cast<size_t>(v)];
      EXPECT_NEAR(freq[static_cast<size_t>(v)], pv, 5 * std::sqrt(pv * (1 - pv) / n) + 1 / n)
          << "T=" << t << " token " << v;
    }
  }
}

// A blocking decode runs its coroutines (one await per token) to their end
// in place: the stack does not grow with the number of tokens. 20,000
// greedy tokens on a thread with a 512 KiB stack; at the ~1.4 KB per token
// that symmetric transfer took in a debug + ASan build, this overflowed.
TEST(Decoding, LongGenerationInASmallStack) {
  struct Arg {
    std::vector<std::vector<Hypothesis>> out;
    std::string error;
  } arg;
  pthread_attr_t attr;
  ASSERT_EQ(pthread_attr_init(&attr), 0);
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 512 * 1024), 0);
  pthread_t thread;
  ASSERT_EQ(pthread_create(
                &thread, &attr,
                +[](void *p) -> void * {
                  auto *a = static_cast<Arg *>(p);
                  try {
                    DecodingOptions o;
                    o.max_new_tokens = 20000;
                    a->out = run(64, 3, {{1, 2}}, o);
                  } catch (const std::exception &e) {
                    a->error = e.what();
                  }
                  return nullptr;
                },
                &arg),
            0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
  EXPECT_EQ(arg.error, "");
  ASSERT_EQ(arg.out.size(), 1u);
  EXPECT_EQ(arg.out[0][0].tokens.size(), 20000u);
}

// A temperature so small that score / T overflows float samples from the
// limit distribution (the best token) instead of failing on NaN, and one
// that does not overflow is already that sharp: both give greedy's tokens,
// with log-probability 0 for each (the other tokens' probability is 0 or
// below float's resolution next to 1).
TEST(Sampling, TinyTemperatureIsTheGreedyLimit) {
  DecodingOptions greedy;
  greedy.max_new_tokens = 12;
  greedy.eos_token_ids = {2};
  const auto want = run(40, 7, kPrompts, greedy);
  for (double t : {1e-30, 1e-40}) {
    DecodingOptions o = sampling(5);
    o.temperature = t;
    o.return_logprobs = true;
    o.num_alternatives = 2;
    const auto got = run(40, 7, kPrompts, o);
    for (size_t b = 0; b < kPrompts.size(); ++b) {
      EXPECT_EQ(got[b][0].tokens, want[b][0].tokens) << "T=" << t << " row " << b;
      for (float lp : got[b][0].logprobs) EXPECT_EQ(lp, 0.0f) << "T=" << t;
      for (size_t i = 1; i < got[b][0].alternative_logprobs.size(); i += 2)
        EXPECT_FALSE(got[b][0].alternative_logprobs[i] > -1e20f) << "T=" << t;  // the runner-up: gap / T, or -inf
    }
  }
}

// Every sampled token is allowed by the filter, checked by an independent
// statement of each rule on the fake model's logits for that history.
void check_filter(const DecodingOptions &o, const std::function<bool(const std::vector<float> &, int32_t)> &allowed) {
  const int64_t vocab = 40;
  const uint64_t salt = 44;
  std::set<int32_t> drawn;
  PARLEY_TRACE_BASE_SEED();
  for (int i = 0; i < 60; ++i) {
    const uint32_t seed = parley::test::case_seed();
    DecodingOptions os = o;
    os.seed = seed;
    const auto out = run(vocab, salt, kPrompts, os);
    for (size_t b = 0; b < out.size(); ++b) {
      std::vector<int32_t> h = kPrompts[b];
      for (int32_t tok : out[b][0].tokens) {
        std::vector<float> l(vocab);
        for (int64_t v = 0; v < vocab; ++v)
          l[static_cast<size_t>(v)] = testing::fake_logit(salt, h[h.size() - 2], h.back(), v);
        ASSERT_TRUE(allowed(l, tok)) << "seed " << seed << " drew filtered token " << tok;
        drawn.insert(tok);
        h.push_back(tok);
      }
    }
  }
  EXPECT_GT(drawn.size(), 3u);  // it did sample, not just argmax
}

TEST(Sampling, TopKNeverDrawsOutsideTopK) {
  DecodingOptions o = sampling(0);
  o.top_k = 3;
  o.temperature = 2.0;  // flatten, so excluded tokens would be likely
  check_filter(o, [](const std::vector<float> &l, int32_t tok) {
    return std::count_if(l.begin(), l.end(), [&](float x) { return x > l[static_cast<size_t>(tok)]; }) < 3;
  });
}

TEST(Sampling, TopPNeverDrawsOutsideNucleus) {
  DecodingOptions o = sampling(0);
  o.top_p = 0.5;
  check_filter(o, [](const std::vector<float> &l, int32_t tok) {
    std::vector<double> p(l.size());
    decoding::softmax(l.data(), p.data(), static_cast<int64_t>(l.size()));
    double above = 0.0;  // mass strictly more probable than tok
    for (double q : p)
      if (q > p[static_cast<size_t>(tok)]) above += q;
    return above < 0.5;
  });
}

TEST(Sampling, MinPNeverDrawsBelowThreshold) {
  DecodingOptions o = sampling(0);
  o.min_p = 0.3;
  o.temperature = 1.5;
  check_filter(o, [](const std::vector<float> &l, int32_t tok) {
    std::vector<float> t(l);
    for (float &x : t) x /= 1.5f;
    std::vector<double> p(t.size());
    decoding::softmax(t.data(), p.data(), static_cast<int64_t>(t.size()));
    return p[static_cast<size_t>(tok)] >= 0.3 * *std::max_element(p.begin(), p.end()) * (1 - 1e-6);
  });
}

TEST(Sampling, BeamSamplingIsReproducible) {
  DecodingOptions o = sampling(9);
  o.num_beams = 3;
  o.num_return_sequences = 2;
  const auto a = run(32, 5, kPrompts, o);
  const auto b = run(32, 5, kPrompts, o);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].size(), 2u);
    EXPECT_GE(a[i][0].score, a[i][1].score);
    for (size_t s = 0; s < 2; ++s) EXPECT_EQ(a[i][s].tokens, b[i][s].tokens);
  }
}

// ------------------------------------------------------------- mechanics --

TEST(Greedy, FinishedRowsAreDroppedAndStreamingCanStop) {
  DecodingOptions o;
  o.max_new_tokens = 12;
  o.eos_token_ids = {2};
  FakeStepModel *m = nullptr;
  const auto out = run(20, 1, {{3, 7, 1}, {5, 5, 2}, {9, 0, 4}}, o, &m);  // greedy_plain: row 0 stops at once
  int64_t tokens = 0;
  for (const auto &h : out) tokens += static_cast<int64_t>(h[0].tokens.size());
  EXPECT_EQ(out[0][0].tokens, std::vector<int32_t>{2});
  // Every model row fed is a generated token that was not the row's last.
  EXPECT_EQ(m->rows_fed, tokens - 3);

  std::vector<std::pair<int64_t, int32_t>> seen;
  o.on_token = [&](int64_t b, int64_t s, int32_t t) {
    seen.emplace_back(b, t);
    return !(b == 2 && seen.size() > 4);
  };
  const auto streamed = run(20, 1, {{3, 7, 1}, {5, 5, 2}, {9, 0, 4}}, o);
  size_t total = 0;
  for (const auto &h : streamed) total += h[0].tokens.size();
  EXPECT_EQ(total, seen.size());
  EXPECT_LT(streamed[2][0].tokens.size(), out[2][0].tokens.size());
  EXPECT_TRUE(std::equal(streamed[2][0].tokens.begin(), streamed[2][0].tokens.end(), out[2][0].tokens.begin()));
}

TEST(BeamSearch, ReordersTheModelRows) {
  DecodingOptions o;
  o.num_beams = 4;
  o.max_new_tokens = 6;
  o.eos_token_ids = {2};
  FakeStepModel *m = nullptr;
  const auto out = run(24, 6, {{3, 7, 1}}, o, &m);
  ASSERT_EQ(m->rows(), 4);
  // Each model row's history is the prompt followed by a running beam: its
  // logits were computed for the right hypothesis.
  for (const auto &h : m->histories())
    EXPECT_EQ(std::vector<int32_t>(h.begin(), h.begin() + 3), (std::vector<int32_t>{3, 7, 1}));
  EXPECT_FALSE(out[0][0].tokens.empty());
}

// An item whose finished hypotheses are settled leaves the batch (as
// CTranslate2 drops finished translations; transformers keeps stepping it
// with no effect on its result): each item's hypotheses and scores are
// those of the item searched alone, bit for bit, and the model was fed
// fewer rows than the batch's every row at every step.
TEST(BeamSearch, SettledItemsLeaveTheBatchWithTheSameResults) {
  const std::vector<std::vector<int32_t>> prompts = {{3, 7, 1}, {5, 5, 9}, {9, 0, 4}, {1, 1, 1},
                                                     {6, 2, 8}, {4, 4, 7}, {8, 3, 3}, {0, 9, 5}};
  for (EarlyStopping es : {EarlyStopping::kFalse, EarlyStopping::kTrue, EarlyStopping::kNever}) {
    DecodingOptions o;
    o.num_beams = 3;
    o.num_return_sequences = 2;
    o.max_new_tokens = 16;
    o.eos_token_ids = {2};
    o.early_stopping = es;
    o.length_penalty = es == EarlyStopping::kNever ? 0.7 : 1.0;
    FakeStepModel *m = nullptr;
    const auto batched = run(12, 3, prompts, o, &m);
    const int64_t fed = m->rows_fed, steps = m->advances;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto alone = run(12, 3, {prompts[i]}, o);
      ASSERT_EQ(batched[i].size(), alone[0].size());
      for (size_t h = 0; h < alone[0].size(); ++h) {
        EXPECT_EQ(batched[i][h].tokens, alone[0][h].tokens) << "item " << i << " hypothesis " << h;
        EXPECT_EQ(std::memcmp(&batched[i][h].score, &alone[0][h].score, sizeof(float)), 0)
            << "item " << i << " hypothesis " << h << ": " << batched[i][h].score << " vs " << alone[0][h].score;
      }
    }
    EXPECT_LT(fed, steps * static_cast<int64_t>(prompts.size()) * o.num_beams)
        << "early_stopping " << static_cast<int>(es) << ": no item left the batch before the last step";
  }
}

// ------------------------------------------------------------ bad input --

void expect_invalid(const DecodingOptions &o, const std::vector<std::vector<int32_t>> &prompts = {{1, 2}}) {
  FakeStepModel m(16, 1, prompts);
  try {
    decode(m, m.logits(), prompts, o);
    ADD_FAILURE() << "accepted";
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_INVALID_ARGUMENT) << e.what();
    EXPECT_NE(std::string(e.what()).find("decoding"), std::string::npos);
  }
}

TEST(BadInput, IsRefusedWithInvalidArgument) {
  auto with = [](auto f) {
    DecodingOptions o;
    o.eos_token_ids = {2};
    f(o);
    return o;
  };
  expect_invalid(with([](DecodingOptions &o) { o.num_beams = 0; }));
  expect_invalid(with([](DecodingOptions &o) { o.num_beams = 2, o.num_return_sequences = 3; }));
  expect_invalid(with([](DecodingOptions &o) { o.num_return_sequences = 2; }));  // greedy
  expect_invalid(with([](DecodingOptions &o) { o.num_return_sequences = 0; }));
  expect_invalid(with([](DecodingOptions &o) { o.max_new_tokens = 0; }));
  expect_invalid(with([](DecodingOptions &o) { o.min_new_tokens = -1; }));
  expect_invalid(with([](DecodingOptions &o) { o.do_sample = true, o.temperature = 0.0; }));
  expect_invalid(with([](DecodingOptions &o) { o.do_sample = true, o.temperature = -1.0; }));
  expect_invalid(with([](DecodingOptions &o) { o.do_sample = true, o.top_p = 0.0; }));
  expect_invalid(with([](DecodingOptions &o) { o.do_sample = true, o.top_p = 1.5; }));
  expect_invalid(with([](DecodingOptions &o) { o.do_sample = true, o.top_k = -1; }));
  expect_invalid(with([](DecodingOptions &o) { o.do_sample = true, o.min_p = 2.0; }));
  expect_invalid(with([](DecodingOptions &o) { o.repetition_penalty = 0.0; }));
  expect_invalid(with([](DecodingOptions &o) { o.no_repeat_ngram_size = -2; }));
  expect_invalid(with([](DecodingOptions &o) { o.length_penalty = std::nan(""); }));
  expect_invalid(with([](DecodingOptions &o) { o.eos_token_ids = {2, 16}; }));
  expect_invalid(with([](DecodingOptions &o) { o.eos_token_ids = {-1}; }));
  expect_invalid(with([](DecodingOptions &o) { o.pad_token_id = 99; }));
  expect_invalid(with([](DecodingOptions &o) { o.forced_bos_token_id = 16; }));
  expect_invalid(with([](DecodingOptions &o) { o.forced_eos_token_ids = {20}; }));
  expect_invalid(with([](DecodingOptions &o) { o.suppress_tokens = {3, 300}; }));
  expect_invalid(with([](DecodingOptions &o) { o.begin_suppress_tokens = {-4}; }));
  expect_invalid(with([](DecodingOptions &) {}), {{}});       // empty prompt
  expect_invalid(with([](DecodingOptions &) {}), {{1, 17}});  // prompt id outside vocab
  // Sampling with every token suppressed.
  expect_invalid(with([](DecodingOptions &o) {
    o.do_sample = true;
    o.suppress_tokens.resize(16);
    std::iota(o.suppress_tokens.begin(), o.suppress_tokens.end(), 0);
  }));
  // Mismatched prompts / logits.
  FakeStepModel m(16, 1, {{1, 2}, {3, 4}});
  DecodingOptions o;
  EXPECT_THROW(decode(m, m.logits(), {{1, 2}}, o), Error);
  EXPECT_THROW(decode(m, std::vector<float>(16), {{1, 2}, {3, 4}}, o), Error);
  // Sampling options are not checked when not sampling (transformers ignores them).
  FakeStepModel ok(16, 1, {{1, 2}});
  DecodingOptions greedy;
  greedy.temperature = 0.0;
  greedy.max_new_tokens = 2;
  EXPECT_NO_THROW(decode(ok, ok.logits(), {{1, 2}}, greedy));
}

}  // namespace
}  // namespace parley
