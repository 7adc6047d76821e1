// Files whose container is sound but whose tokenizer tables are wrong
// (tests/data/make_test_models.py, HOSTILE_TOKENIZERS): building the text
// model or running it fails with a clear Error, never a crash or a hang.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "core/error.hpp"
#include "format/model_file.hpp"
#include "text/text_model.hpp"

using namespace parley;

namespace {

std::unique_ptr<ModelFile> open(const std::string &name) {
  const char *d = std::getenv("PARLEY_TEST_DATA_DIR");
  return ModelFile::open_file(std::string(d ? d : ".") + "/" + name + ".parley", LoadOptions{});
}

void expect_build_error(const std::string &name, parley_status status, const std::string &needle) {
  auto file = open(name);
  try {
    build_text_model(*file);
    ADD_FAILURE() << name << ": built";
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), status) << name << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << name << ": " << e.what();
  }
}

}  // namespace

TEST(HostileTokenizers, RefusedWithTheReason) {
  expect_build_error("tok_bad_spm", PARLEY_ERROR_INVALID_MODEL, "SentencePiece");
  expect_build_error("tok_bad_merge", PARLEY_ERROR_INVALID_MODEL, "merge #1 makes 'xy'");
  expect_build_error("tok_bad_merge_line", PARLEY_ERROR_INVALID_MODEL, "not 'left right'");
  expect_build_error("tok_bad_regex", PARLEY_ERROR_INVALID_MODEL, "regex does not compile");
  expect_build_error("tok_bad_prefix", PARLEY_ERROR_INVALID_MODEL, "'<nope>' is not in its vocabulary");
  expect_build_error("tok_lang_without_languages", PARLEY_ERROR_INVALID_MODEL, "lists no languages");
  expect_build_error("tiny_decoder", PARLEY_ERROR_INVALID_MODEL, "has no vocabulary");  // a format 1.0 table
  expect_build_error("tiny_seq2seq", PARLEY_ERROR_INVALID_MODEL, "SentencePiece");
}

TEST(HostileTokenizers, CatastrophicRegexFailsInsteadOfHanging) {
  auto file = open("tok_redos");
  auto text = build_text_model(*file);
  try {
    text->source().encode(std::string(64, 'a') + "!", false);
    ADD_FAILURE() << "matched";
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("match limits"), std::string::npos) << e.what();
  }
}

TEST(HostileTokenizers, TheControlFileWorks) {
  auto file = open("tok_ok");
  auto text = build_text_model(*file);
  // "abc" merges a+b, then ab+c; the template adds <s> ... </s>.
  EXPECT_EQ(text->source().encode("abc", true), (std::vector<int32_t>{28, 27, 29}));
  EXPECT_EQ(text->source().encode("ab <s>c", false, {}, SIZE_MAX, /*parse_special=*/true),
            (std::vector<int32_t>{26, 28, 2}));
  EXPECT_EQ(text->target().decode({28, 27, 29}, true), "abc");
  EXPECT_EQ(text->target().decode({28, 27, 29}, false), "<s>abc</s>");
}
