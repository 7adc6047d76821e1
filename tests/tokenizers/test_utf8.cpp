// UTF-8 helpers the streaming and tokenizers rely on.
#include <gtest/gtest.h>

#include "text/utf8.hpp"

using namespace parley;

TEST(Utf8, ValidatesAndNamesTheBadByte) {
  size_t bad = 99;
  EXPECT_TRUE(utf8::valid("Grüße 你好 🙂", &bad));
  EXPECT_FALSE(utf8::valid("ab\xC0\xAF", &bad));  // overlong
  EXPECT_EQ(bad, 2u);
  EXPECT_FALSE(utf8::valid("\xED\xA0\x80", &bad));  // surrogate
  EXPECT_EQ(bad, 0u);
  EXPECT_FALSE(utf8::valid("x\xF4\x90\x80\x80", &bad));  // > U+10FFFF
  EXPECT_EQ(bad, 1u);
  EXPECT_FALSE(utf8::valid("\xE4\xB8", &bad));  // truncated
}

TEST(Utf8, CompletePrefixNeverSplitsACodePoint) {
  const std::string s = "a\xF0\x9F\x99\x82";  // a🙂
  for (size_t cut = 0; cut <= s.size(); ++cut) {
    size_t n = utf8::complete_prefix(s.substr(0, cut));
    EXPECT_TRUE(n == 0 || n == 1 || n == s.size()) << cut;
    EXPECT_TRUE(utf8::valid(s.substr(0, n)));
  }
  EXPECT_EQ(utf8::complete_prefix("ab\xFF"), 3u);  // invalid bytes are not held back
}

TEST(Utf8, LossyReplacesMaximalInvalidSubparts) {
  EXPECT_EQ(utf8::lossy("a\xE4\xB8"), "a\xEF\xBF\xBD");
  EXPECT_EQ(utf8::lossy("a\xE4z"), "a\xEF\xBF\xBDz");
  EXPECT_EQ(utf8::lossy("\xFF\xFE"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8::lossy("ok"), "ok");
}

TEST(Utf8, NfcComposes) {
  EXPECT_EQ(utf8::nfc("e\xCC\x81"), "\xC3\xA9");
  EXPECT_EQ(utf8::nfc("\xC3\xA9"), "\xC3\xA9");
}
