// Issue 10 item 16: a model file truncated while the model is loaded.
// Mapped (the default), the lost pages raise SIGBUS on the next access — the
// documented behaviour of mmap, checked here in a child process. With
// parley_model_options.read_into_memory the model no longer refers to the
// file and keeps answering exactly as before.
#include <gtest/gtest.h>
#include <parley/parley.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "../common/build_tree_runtime.hpp"
#include "model_bytes.hpp"

namespace {

struct Runtime {
  parley_runtime *rt = nullptr;
  Runtime() { EXPECT_EQ(parley::test::create_build_tree_runtime(1, &rt), PARLEY_OK) << parley_last_error(); }
  ~Runtime() { parley_runtime_free(rt); }
};

// A small runnable decoder-only model (random weights, committed).
const std::string kModel = std::string(PARLEY_PARITY_MODELS_DIR) + "/llama.parley";

// A private copy of kModel: the test truncates it.
std::string private_copy(const char *tag) {
  std::string path = ::testing::TempDir() + "/truncated_" + tag + "_" + std::to_string(getpid()) + ".parley";
  std::filesystem::copy_file(kModel, path, std::filesystem::copy_options::overwrite_existing);
  return path;
}

parley_model *load(parley_runtime *rt, const std::string &path, int read_into_memory) {
  parley_model_options mo;
  parley_model_options_init(&mo);
  mo.read_into_memory = read_into_memory;
  parley_model *m = nullptr;
  EXPECT_EQ(parley_model_load_file(rt, path.c_str(), &mo, &m), PARLEY_OK) << parley_last_error();
  return m;
}

struct Reply {
  std::vector<int32_t> tokens;
  float score = 0;
};

// Greedy continuation of a fixed prompt: reads every weight.
Reply greedy(const parley_model *m) {
  const int32_t prompt[] = {1, 17, 42, 5, 9};
  const int32_t *prompts[] = {prompt};
  size_t lengths[] = {5};
  parley_generation_options g;
  parley_generation_options_init(m, &g);
  g.num_beams = 1;
  g.do_sample = 0;
  g.max_new_tokens = 12;
  g.eos_token_ids = nullptr;
  g.num_eos_token_ids = 0;
  parley_generation_result *r = nullptr;
  Reply out;
  EXPECT_EQ(parley_generate(m, prompts, lengths, 1, &g, &r), PARLEY_OK) << parley_last_error();
  if (!r) return out;
  const int32_t *ids = nullptr;
  size_t n = 0;
  EXPECT_EQ(parley_result_hypothesis(r, 0, 0, &ids, &n, &out.score), PARLEY_OK);
  out.tokens.assign(ids, ids + n);
  parley_result_free(r);
  return out;
}

TEST(ModelTruncation, ReadIntoMemorySurvivesTruncation) {
  Runtime h;
  // Reference: the untouched file, mapped.
  parley_model *ref = load(h.rt, kModel, 0);
  ASSERT_NE(ref, nullptr);
  Reply want = greedy(ref);
  ASSERT_FALSE(want.tokens.empty());

  std::string path = private_copy("copy");
  parley_model *m = load(h.rt, path, 1);
  ASSERT_NE(m, nullptr);
  // Truncate before the model is first run: nothing may read the file any more.
  ASSERT_EQ(truncate(path.c_str(), 0), 0);
  Reply got = greedy(m);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.score, want.score);  // same weights, same code, one thread: bit-identical
  size_t n = 0;
  parley_model_info info{};
  info.struct_size = sizeof info;
  ASSERT_EQ(parley_model_get_info(m, &info), PARLEY_OK);
  for (size_t i = 0; i < info.num_tensors; ++i) {
    parley_tensor_info t{};
    t.struct_size = sizeof t;
    ASSERT_EQ(parley_model_tensor_info(m, i, &t), PARLEY_OK);
    EXPECT_EQ(parley_model_verify_tensor(m, t.name), PARLEY_OK) << parley_last_error();
    ++n;
  }
  EXPECT_GT(n, 0u);
  for (size_t i = 0; i < info.num_tokenizers; ++i)
    EXPECT_EQ(parley_model_verify_tokenizer(m, i), PARLEY_OK) << parley_last_error();
  parley_model_free(m);
  parley_model_free(ref);
  std::filesystem::remove(path);
}

TEST(ModelTruncation, ReadIntoMemoryOptionIsValidated) {
  Runtime h;
  parley_model_options mo;
  parley_model_options_init(&mo);
  EXPECT_EQ(mo.read_into_memory, 0);
  parley_model *m = nullptr;
  std::string path = kModel;
  mo.read_into_memory = 2;
  EXPECT_EQ(parley_model_load_file(h.rt, path.c_str(), &mo, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(parley_last_error()).find("read_into_memory"), std::string::npos);
  mo.read_into_memory = 1;
  mo.borrow_memory = 1;
  EXPECT_EQ(parley_model_load_file(h.rt, path.c_str(), &mo, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(m, nullptr);
  // An older caller's struct (without the field) still loads, mapped.
  parley_model_options old;
  parley_model_options_init(&old);
  old.struct_size = offsetof(parley_model_options, borrow_memory) + sizeof old.borrow_memory;
  ASSERT_EQ(parley_model_load_file(h.rt, path.c_str(), &old, &m), PARLEY_OK) << parley_last_error();
  parley_model_free(m);
}

// Documented behaviour of the default (mapped) load: the process dies of
// SIGBUS. Runs in a re-executed child ("threadsafe" death tests), which
// restores the default SIGBUS action so that a sanitizer's handler does not
// turn the signal into an exit code.
// Killed by SIGBUS. Under ASan/TSan the sanitizer may keep its own deadly-
// signal handler despite SIG_DFL and exit with its error code after printing
// the report: a non-zero exit other than 3 (truncate failed) counts there
// too, since a child that did not crash exits 0.
bool died_of_sigbus(int status) {
  if (WIFSIGNALED(status)) return WTERMSIG(status) == SIGBUS;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 3;
#else
  return false;
#endif
}

TEST(ModelTruncationDeathTest, MappedFileTruncatedUnderTheModelRaisesSigbus) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Runtime h;
  std::string path = private_copy("mapped");
  parley_model *m = load(h.rt, path, 0);
  ASSERT_NE(m, nullptr);
  // The largest tensor: its pages lie past any that truncation could keep.
  parley_model_info info{};
  info.struct_size = sizeof info;
  ASSERT_EQ(parley_model_get_info(m, &info), PARLEY_OK);
  std::string largest;
  uint64_t largest_len = 0;
  for (size_t i = 0; i < info.num_tensors; ++i) {
    parley_tensor_info t{};
    t.struct_size = sizeof t;
    ASSERT_EQ(parley_model_tensor_info(m, i, &t), PARLEY_OK);
    if (t.length > largest_len) largest = t.name, largest_len = t.length;
  }
  EXPECT_EQ(parley_model_verify_tensor(m, largest.c_str()), PARLEY_OK);  // pages now resident
  EXPECT_EXIT(
      {
        std::signal(SIGBUS, SIG_DFL);
        if (truncate(path.c_str(), 0) != 0) std::_Exit(3);
        parley_model_verify_tensor(m, largest.c_str());  // reads every byte of the tensor
        std::_Exit(0);
      },
      died_of_sigbus, "");
  parley_model_free(m);
  std::filesystem::remove(path);
}

}  // namespace
