// The helper every message uses to quote file content (runtime/core/escape.hpp).
#include <gtest/gtest.h>

#include <string>

#include "core/escape.hpp"

using parley::escape_untrusted;
using parley::quote_untrusted;

namespace {

bool has_control_byte(const std::string &s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

TEST(Escape, ControlBytesAndNulBecomeVisible) {
  EXPECT_EQ(escape_untrusted(std::string("a\x1b[31mb\0c\x7f\n", 11)), "a\\x1b[31mb\\x00c\\x7f\\x0a");
  EXPECT_EQ(quote_untrusted("plain name.weight"), "'plain name.weight'");
  EXPECT_EQ(escape_untrusted("back\\slash"), "back\\\\slash");  // unambiguous: "\x1b" cannot be forged
}

TEST(Escape, ValidUtf8PassesInvalidIsEscaped) {
  EXPECT_EQ(escape_untrusted("deu_Latn ▁über 日本 😀"), "deu_Latn ▁über 日本 😀");
  EXPECT_EQ(escape_untrusted("\x9b"
                             "31m"),
            "\\x9b31m");                                                    // lone continuation byte (8-bit CSI)
  EXPECT_EQ(escape_untrusted("\xc3"), "\\xc3");                             // truncated sequence
  EXPECT_EQ(escape_untrusted("\xc0\xaf"), "\\xc0\\xaf");                    // overlong '/'
  EXPECT_EQ(escape_untrusted("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // surrogate
  EXPECT_EQ(escape_untrusted("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // past U+10FFFF
}

TEST(Escape, UnicodeControlsAreEscaped) {
  EXPECT_EQ(escape_untrusted("\xc2\x9b"
                             "2J"),
            "\\u009b2J");  // C1 CSI
  EXPECT_EQ(escape_untrusted("a\xe2\x80\xae"
                             "b"),
            "a\\u202eb");                                    // right-to-left override
  EXPECT_EQ(escape_untrusted("\xef\xbb\xbfx"), "\\ufeffx");  // BOM
}

TEST(Escape, LengthIsCappedWithoutCuttingACharacter) {
  std::string long_name(1000, 'x');
  std::string e = escape_untrusted(long_name, 10);
  EXPECT_EQ(e, "xxxxxxxxxx... (1000 bytes)");
  // "é" is 2 bytes: a cap of 4 keeps "aé", not half of the next "é".
  EXPECT_EQ(escape_untrusted("aéé", 4), "aé... (5 bytes)");
  EXPECT_EQ(escape_untrusted("", 10), "");
}

TEST(Escape, NoControlByteSurvivesAnyInput) {
  // Every byte value, alone and after every lead byte: the output is always printable.
  for (int a = 0; a < 256; ++a)
    for (int b = 0; b < 256; b += 7) {
      std::string s = {static_cast<char>(a), static_cast<char>(b), '\x80', '\xbf'};
      std::string e = escape_untrusted(s);
      ASSERT_FALSE(has_control_byte(e)) << a << " " << b;
      ASSERT_EQ(e.find('\0'), std::string::npos);
    }
}

}  // namespace
