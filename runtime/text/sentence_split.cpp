#include "text/sentence_split.hpp"

#include <unicode/brkiter.h>
#include <unicode/locid.h>
#include <unicode/utext.h>

#include <algorithm>
#include <memory>

#include "core/error.hpp"

namespace parley {

namespace {
[[noreturn]] void icu_failed(const char *what, UErrorCode status) {
  fail(status == U_MEMORY_ALLOCATION_ERROR ? PARLEY_ERROR_OUT_OF_MEMORY : PARLEY_ERROR_INTERNAL,
       std::string("sentence segmentation: ICU ") + what + ": " + u_errorName(status));
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

struct UTextClose {
  void operator()(UText *t) const { utext_close(t); }
};
}  // namespace

std::vector<std::pair<size_t, size_t>> split_sentences(std::string_view text, const std::string &locale,
                                                       const std::vector<std::pair<size_t, size_t>> &keep) {
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<UText, UTextClose> ut(
      utext_openUTF8(nullptr, text.data(), static_cast<int64_t>(text.size()), &status));
  if (U_FAILURE(status)) icu_failed("utext_openUTF8", status);
  std::unique_ptr<icu::BreakIterator> it(
      icu::BreakIterator::createSentenceInstance(icu::Locale(locale.empty() ? "root" : locale.c_str()), status));
  if (U_FAILURE(status) || !it)
    icu_failed("createSentenceInstance", U_FAILURE(status) ? status : U_MEMORY_ALLOCATION_ERROR);
  it->setText(ut.get(), status);
  if (U_FAILURE(status)) icu_failed("BreakIterator::setText", status);
  // Boundaries are native (UTF-8 byte) indices with a UTF-8 UText.
  std::vector<size_t> bounds;
  for (int32_t b = it->next(); b != icu::BreakIterator::DONE; b = it->next()) {
    const size_t pos = static_cast<size_t>(b);
    const bool inside = std::any_of(
        keep.begin(), keep.end(), [&](const std::pair<size_t, size_t> &k) { return pos > k.first && pos < k.second; });
    if (!inside && pos < text.size()) bounds.push_back(pos);
  }
  bounds.push_back(text.size());
  std::vector<std::pair<size_t, size_t>> out;
  size_t begin = 0;
  for (size_t end : bounds) {
    size_t b = begin, e = end;
    // Trim whitespace, but never into a kept range (a caller pattern may match spaces).
    auto kept = [&](size_t pos) {
      return std::any_of(keep.begin(), keep.end(),
                         [&](const std::pair<size_t, size_t> &k) { return pos >= k.first && pos < k.second; });
    };
    while (b < e && is_space(text[b]) && !kept(b)) ++b;
    while (e > b && is_space(text[e - 1]) && !kept(e - 1)) --e;
    if (e > b) out.emplace_back(b, e);
    begin = end;
  }
  return out;
}

}  // namespace parley
