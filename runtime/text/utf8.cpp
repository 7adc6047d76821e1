#include "text/utf8.hpp"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>

#include "core/error.hpp"

namespace parley::utf8 {

namespace {
// Valid second-byte range per lead byte (Unicode Table 3-7).
bool second_ok(unsigned char lead, unsigned char b) {
  if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;
  if (lead == 0xED) return b >= 0x80 && b <= 0x9F;
  if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;
  if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;
  return b >= 0x80 && b <= 0xBF;
}
size_t expected_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}
// Number of bytes of the maximal prefix of a sequence at s[i] that is valid
// so far (>= 1 even for an invalid lead), and whether it is complete.
size_t valid_prefix(std::string_view s, size_t i, bool *complete) {
  auto lead = static_cast<unsigned char>(s[i]);
  size_t need = expected_length(lead);
  *complete = false;
  if (need == 0) return 1;
  if (need == 1) {
    *complete = true;
    return 1;
  }
  size_t k = 1;
  for (; k < need && i + k < s.size(); ++k) {
    auto b = static_cast<unsigned char>(s[i + k]);
    bool ok = k == 1 ? second_ok(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return k;
  }
  *complete = k == need;
  return k;
}
}  // namespace

size_t sequence_length(std::string_view s, size_t i) {
  bool complete = false;
  size_t n = valid_prefix(s, i, &complete);
  return complete ? n : 0;
}

bool valid(std::string_view s, size_t *bad_offset) {
  for (size_t i = 0; i < s.size();) {
    size_t n = sequence_length(s, i);
    if (n == 0) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    i += n;
  }
  return true;
}

size_t complete_prefix(std::string_view s) {
  // Only the last three bytes can start an unfinished sequence.
  size_t start = s.size() > 3 ? s.size() - 3 : 0;
  for (size_t i = start; i < s.size(); ++i) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80 || (b & 0xC0) == 0x80) continue;
    bool complete = false;
    size_t n = valid_prefix(s, i, &complete);
    if (!complete && i + n == s.size() && expected_length(b) > 1) return i;  // could still be completed
  }
  return s.size();
}

std::string lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    bool complete = false;
    size_t n = valid_prefix(s, i, &complete);
    if (complete) {
      out.append(s.substr(i, n));
    } else {
      out.append("\xEF\xBF\xBD");
    }
    i += n;
  }
  return out;
}

std::string nfc(std::string_view s) {
  if (s.empty()) return {};
  utf8proc_uint8_t *result = nullptr;
  utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t *>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
                   &result, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string("text cannot be normalized: ") + utf8proc_errmsg(n));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(result, &std::free);
  return std::string(reinterpret_cast<const char *>(result), static_cast<size_t>(n));
}

void append(std::string &out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

uint32_t next(std::string_view s, size_t &i) {
  auto b = static_cast<unsigned char>(s[i]);
  size_t n = expected_length(b);
  if (n <= 1 || i + n > s.size()) {
    ++i;
    return b;
  }
  uint32_t cp = b & (0xFF >> (n + 1));
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

}  // namespace parley::utf8
