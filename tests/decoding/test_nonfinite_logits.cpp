// Non-finite logits from a failing kernel (issue 10 item 10): greedy decoding
// used to return "!!!!!!" (argmax over NaN is token 0) and beam search an
// empty result, both with PARLEY_OK. Every decoding path must now return
// PARLEY_ERROR_DEVICE naming the plugin that served the output projection,
// and the runtime must keep working once the kernel behaves again.
//
// libparley_nonfinite (nonfinite_plugin.cpp) overrides the cpu LINEAR and
// poisons the output projection on demand: a NaN per row, a +inf per row,
// or every logit -inf (a masked row is fine; a row with nothing left is not).
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <parley/parley.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "../common/build_tree_runtime.hpp"

namespace {

std::string env(const char *name) {
  const char *v = std::getenv(name);
  if (!v) throw std::runtime_error(std::string(name) + " is not set (run through ctest)");
  return v;
}

using SetFn = void (*)(int mode, int64_t target_n, int64_t skip);
enum Mode { kOff = 0, kNaN = 1, kPosInf = 2, kAllNegInf = 3 };

struct Case {
  Mode mode;
  const char *what;  // in the message
};
const Case kCases[] = {
    {kNaN, "non-finite logits (NaN at "}, {kPosInf, "non-finite logits (+inf at "}, {kAllNegInf, "logits is -inf)"}};

class NonFiniteLogits : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_EQ(parley::test::create_build_tree_runtime(2, &rt_), PARLEY_OK) << parley_last_error();
    const std::string plugin = env("PARLEY_NONFINITE_PLUGIN");
    ASSERT_EQ(parley_runtime_load_plugin(rt_, plugin.c_str()), PARLEY_OK) << parley_last_error();
    // The runtime loaded it RTLD_LOCAL; RTLD_NOLOAD finds that same copy.
    lib_ = dlopen(plugin.c_str(), RTLD_NOW | RTLD_NOLOAD);
    ASSERT_NE(lib_, nullptr) << dlerror();
    set_ = reinterpret_cast<SetFn>(dlsym(lib_, "parley_nonfinite_set"));
    ASSERT_NE(set_, nullptr);
    const std::string models = env("PARLEY_DEMO_MODELS");
    ASSERT_EQ(parley_model_load_file(rt_, (models + "/support-llama.parley").c_str(), nullptr, &llm_), PARLEY_OK)
        << parley_last_error();
    ASSERT_EQ(parley_model_load_file(rt_, (models + "/opus-mt-en-de.parley").c_str(), nullptr, &mt_), PARLEY_OK)
        << parley_last_error();
  }
  static void TearDownTestSuite() {
    if (set_) set_(kOff, -1, 0);
    parley_model_free(llm_);
    parley_model_free(mt_);
    if (lib_) dlclose(lib_);
    parley_runtime_free(rt_);
  }
  void TearDown() override { set_(kOff, -1, 0); }

  static uint32_t vocab(const parley_model *m) {
    parley_model_info info{};
    info.struct_size = sizeof info;
    EXPECT_EQ(parley_model_get_info(m, &info), PARLEY_OK);
    return info.vocab_size;
  }

  // parley_generate on the decoder-only model; returns the status and, on
  // success, the first hypothesis.
  static parley_status generate(size_t beams, bool sample, std::vector<int32_t> *tokens, std::string *error) {
    parley_generation_options g;
    parley_generation_options_init(llm_, &g);
    g.max_new_tokens = 6;
    g.num_beams = beams;
    g.num_return_sequences = 1;
    g.do_sample = sample ? 1 : 0;
    g.seed = 7;
    const int32_t prompt[] = {1, 15, 27, 300};
    const int32_t *prompts[] = {prompt};
    const size_t lengths[] = {4};
    parley_generation_result *r = nullptr;
    parley_status st = parley_generate(llm_, prompts, lengths, 1, &g, &r);
    *error = parley_last_error();
    if (st != PARLEY_OK) {
      EXPECT_EQ(r, nullptr) << "no result on error";
      return st;
    }
    const int32_t *ids = nullptr;
    size_t n = 0;
    float score = 0;
    EXPECT_EQ(parley_result_hypothesis(r, 0, 0, &ids, &n, &score), PARLEY_OK);
    tokens->assign(ids, ids + n);
    parley_result_free(r);
    return st;
  }

  static parley_status chat(std::string *reply, std::string *error) {
    parley_chat_session *s = nullptr;
    EXPECT_EQ(parley_chat_session_create(llm_, "You are a support bot.", &s), PARLEY_OK) << parley_last_error();
    EXPECT_EQ(parley_chat_append(s, PARLEY_ROLE_USER, "Where is my parcel?"), PARLEY_OK) << parley_last_error();
    parley_generation_options g;
    parley_generation_options_init(llm_, &g);
    g.max_new_tokens = 6;
    g.num_beams = 1;
    parley_chat_options o;
    parley_chat_options_init(&o);
    o.generation = &g;
    char *out = nullptr;
    parley_status st = parley_chat_generate(s, &o, &out);
    *error = parley_last_error();
    if (out) *reply = out;
    if (st != PARLEY_OK) {
      EXPECT_EQ(out, nullptr);
    }
    parley_string_free(out);
    parley_chat_session_free(s);
    return st;
  }

  static parley_status translate(size_t beams, std::string *text, std::string *error) {
    parley_generation_options g;
    parley_generation_options_init(mt_, &g);
    g.max_new_tokens = 8;
    g.num_beams = beams;
    g.num_return_sequences = 1;
    parley_translation_options o;
    parley_translation_options_init(&o);
    o.generation = &g;
    const char *texts[] = {"Where is my parcel?"};
    parley_translation_result *r = nullptr;
    parley_status st = parley_translate(mt_, texts, 1, &o, &r);
    *error = parley_last_error();
    if (st != PARLEY_OK) {
      EXPECT_EQ(r, nullptr);
      return st;
    }
    const char *t = nullptr;
    EXPECT_EQ(parley_translation_result_text(r, 0, 0, &t, nullptr), PARLEY_OK);
    *text = t ? t : "";
    parley_translation_result_free(r);
    return st;
  }

  static void expect_device_error(parley_status st, const std::string &error, const Case &c, const char *path) {
    EXPECT_EQ(st, PARLEY_ERROR_DEVICE) << path << ": " << error;
    EXPECT_NE(error.find(c.what), std::string::npos) << path << ": " << error;
    EXPECT_NE(error.find("plugin 'nonfinite'"), std::string::npos) << path << " names the plugin: " << error;
    EXPECT_NE(error.find("linear_nonfinite"), std::string::npos) << path << " names the kernel: " << error;
  }

  static parley_runtime *rt_;
  static parley_model *llm_, *mt_;
  static void *lib_;
  static SetFn set_;
};

parley_runtime *NonFiniteLogits::rt_ = nullptr;
parley_model *NonFiniteLogits::llm_ = nullptr;
parley_model *NonFiniteLogits::mt_ = nullptr;
void *NonFiniteLogits::lib_ = nullptr;
SetFn NonFiniteLogits::set_ = nullptr;

TEST_F(NonFiniteLogits, GreedySamplingAndBeamSearchReportTheDevice) {
  std::vector<int32_t> clean_greedy, clean_beam, out;
  std::string error;
  ASSERT_EQ(generate(1, false, &clean_greedy, &error), PARLEY_OK) << error;
  ASSERT_EQ(generate(4, false, &clean_beam, &error), PARLEY_OK) << error;
  ASSERT_FALSE(clean_beam.empty());
  for (const Case &c : kCases) {
    SCOPED_TRACE("mode " + std::to_string(c.mode));
    set_(c.mode, vocab(llm_), 0);  // from the prompt's logits on
    expect_device_error(generate(1, false, &out, &error), error, c, "greedy");
    set_(c.mode, vocab(llm_), 0);
    expect_device_error(generate(1, true, &out, &error), error, c, "sampling");
    set_(c.mode, vocab(llm_), 0);
    expect_device_error(generate(4, false, &out, &error), error, c, "beam search");
    set_(c.mode, vocab(llm_), 0);
    expect_device_error(generate(4, true, &out, &error), error, c, "beam sampling");
    // Clean logits for the prompt and two steps, then bad ones: the message
    // names the decoding step.
    set_(c.mode, vocab(llm_), 3);
    expect_device_error(generate(1, false, &out, &error), error, c, "greedy, late");
    EXPECT_NE(error.find("at step 3"), std::string::npos) << error;
    set_(c.mode, vocab(llm_), 3);
    expect_device_error(generate(4, false, &out, &error), error, c, "beam search, late");
    EXPECT_NE(error.find("at step 3"), std::string::npos) << error;
  }
  // The kernel behaves again: so does the runtime, with the same results.
  set_(kOff, -1, 0);
  ASSERT_EQ(generate(1, false, &out, &error), PARLEY_OK) << error;
  EXPECT_EQ(out, clean_greedy);
  ASSERT_EQ(generate(4, false, &out, &error), PARLEY_OK) << error;
  EXPECT_EQ(out, clean_beam);
}

TEST_F(NonFiniteLogits, ChatAndTranslateReportTheDevice) {
  std::string clean_reply, clean_text, out, error;
  ASSERT_EQ(chat(&clean_reply, &error), PARLEY_OK) << error;
  ASSERT_EQ(translate(4, &clean_text, &error), PARLEY_OK) << error;
  for (const Case &c : kCases) {
    SCOPED_TRACE("mode " + std::to_string(c.mode));
    set_(c.mode, vocab(llm_), 1);
    expect_device_error(chat(&out, &error), error, c, "chat");
    set_(c.mode, vocab(mt_), 1);
    expect_device_error(translate(4, &out, &error), error, c, "translate, beam search");
    set_(c.mode, vocab(mt_), 1);
    expect_device_error(translate(1, &out, &error), error, c, "translate, greedy");
  }
  set_(kOff, -1, 0);
  ASSERT_EQ(chat(&out, &error), PARLEY_OK) << error;
  EXPECT_EQ(out, clean_reply);
  ASSERT_EQ(translate(4, &out, &error), PARLEY_OK) << error;
  EXPECT_EQ(out, clean_text);
}

}  // namespace
