// Making untrusted text safe to quote in an error message or on a terminal.
// Model files come from strangers: a tensor name, a metadata value, a
// language code or a regex may carry a terminal escape sequence (ESC [ ...),
// a NUL that cuts a C string short, bidi overrides or bytes that are not
// UTF-8. Every message built from file content goes through quote_untrusted()
// (or escape_untrusted()), so what reaches a log or a terminal is printable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace parley {

// Default cap on the bytes of input quoted in one message.
constexpr size_t kMaxQuotedBytes = 120;

namespace escape_detail {

// Length of the valid UTF-8 sequence at s[i] (2..4), or 0 when the bytes there
// are not one (overlong forms, surrogates and code points past U+10FFFF are
// invalid, as in RFC 3629). Sets *cp to the code point.
inline size_t utf8_sequence(std::string_view s, size_t i, uint32_t *cp) {
  auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  uint8_t c = byte(i);
  size_t n;
  uint32_t lo = 0x80, hi = 0xbf;  // allowed range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;  // no overlong forms
    if (c == 0xed) hi = 0x9f;  // no surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;  // <= U+10FFFF
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  uint32_t v = c & (0xff >> (n + 1));
  for (size_t k = 1; k < n; ++k) v = v << 6 | (byte(i + k) & 0x3f);
  *cp = v;
  return n;
}

// Code points that control a terminal or reorder text although they are
// valid UTF-8: C1 controls, line/paragraph separators, bidi embeddings,
// overrides and isolates ("Trojan Source", CVE-2021-42574), BOM.
inline bool invisible_control(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) ||
         (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e || cp == 0x200f || cp == 0xfeff;
}

}  // namespace escape_detail

// `s` with every byte that is not printable made visible: printable ASCII
// and valid, visible UTF-8 pass through; a backslash becomes "\\"; C0
// controls, DEL and bytes that are not valid UTF-8 become "\xHH"; Unicode
// controls (escape_detail::invisible_control) become "\uHHHH". At most
// `max_bytes` bytes of `s` are quoted (never cutting a UTF-8 sequence); a
// longer `s` ends in "... (N bytes)". The result never contains a control
// byte, so it cannot move a terminal's cursor or cut a C string.
inline std::string escape_untrusted(std::string_view s, size_t max_bytes = kMaxQuotedBytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() < max_bytes ? s.size() + 8 : max_bytes + 24);
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<uint8_t>(s[i]);
    size_t n = 1;
    uint32_t cp = c;
    if (c >= 0x80) n = escape_detail::utf8_sequence(s, i, &cp);
    if (i + (n ? n : 1) > max_bytes) break;
    if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else if (n == 0 || c < 0x80) {  // C0 control, DEL, or a byte that is not UTF-8
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
      n = 1;
    } else if (escape_detail::invisible_control(cp)) {
      out += "\\u";
      for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(cp >> shift) & 15];
    } else {
      out.append(s.data() + i, n);
    }
    i += n;
  }
  if (i < s.size()) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

// escape_untrusted(s) between single quotes: the form messages use.
inline std::string quote_untrusted(std::string_view s, size_t max_bytes = kMaxQuotedBytes) {
  return "'" + escape_untrusted(s, max_bytes) + "'";
}

}  // namespace parley
