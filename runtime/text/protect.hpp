// Protection of spans in a text to translate: numbers (order ids, amounts
// with currency, dates), e-mail addresses, URLs, {slot} / %s / {{var}}
// placeholders, HTML/XML tags, caller PCRE2 patterns and a do-not-translate
// glossary. Each span is replaced by a placeholder the model passes through
// (a short digit string such as "101": measured on the demo Marian models,
// digit strings are what they copy best; see docs/translation.md), the text is
// translated, and the spans are put back verbatim where the placeholders came
// out. Where the model dropped, duplicated or mangled a placeholder, the
// cross-attention of the output tokens over the placeholder's source tokens
// chooses the place; without usable attention, the span's relative position
// in the source does. Every span appears exactly once in the result, whatever
// the model produced (tested on random-weight models).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace parley {

// Kinds (parley_protect_flags' values).
inline constexpr uint32_t kProtectNumbers = 1, kProtectEmails = 2, kProtectUrls = 4, kProtectPlaceholders = 8,
                          kProtectMarkup = 16, kProtectAll = 31, kProtectPattern = 1u << 8, kProtectGlossary = 1u << 9;
// How a span was placed in the output (parley_span_placement).
inline constexpr int32_t kSpanCopied = 0, kSpanAligned = 1, kSpanPositioned = 2;

struct SpanMatch {
  size_t offset = 0, length = 0;  // bytes in the text
  uint32_t kind = 0;
};

struct ProtectedSpan {
  uint32_t kind = 0;
  int32_t placement = kSpanCopied;
  size_t source_offset = 0, source_length = 0;  // in the input text
  size_t target_offset = 0, target_length = 0;  // in the hypothesis' text
};

// Limits on caller input (errors name them).
inline constexpr size_t kMaxProtectPatterns = 64, kMaxGlossaryTerms = 10000, kMaxGlossaryTermBytes = 1024;

// Compiled rules; immutable after construction, shared by threads.
class ProtectRules {
 public:
  // kinds: kProtect* bits of the built-in classes. Throws Error
  // (PARLEY_ERROR_INVALID_ARGUMENT) for an unknown bit, a pattern that does
  // not compile ("protect_patterns[i] does not compile at offset N: ...") or
  // that matches the empty string, too many patterns or glossary terms, an
  // empty or oversized term, invalid UTF-8.
  ProtectRules(uint32_t kinds, const std::vector<std::string> &patterns, const std::vector<std::string> &glossary);
  ~ProtectRules();
  ProtectRules(const ProtectRules &) = delete;
  ProtectRules &operator=(const ProtectRules &) = delete;

  bool empty() const;
  uint32_t kinds() const { return kinds_; }
  // The spans to protect in `text`, sorted, not overlapping (of overlapping
  // matches, the earliest wins, then the longest). `between` (optional) runs
  // before each match call of a caller's pattern and may throw: each call is
  // bounded (a backtracking limit), but a pattern that costs nearly that much
  // per match, matching many times in a long text, is bounded only by the
  // text, so the request's cancellation and deadline are checked there.
  std::vector<SpanMatch> find(std::string_view text, const std::function<void()> &between = {}) const;

 private:
  struct Regex;
  uint32_t kinds_;
  std::vector<std::unique_ptr<Regex>> regexes_;  // built-in classes first, then the caller's
  std::vector<std::string> glossary_;
};

// A text with its spans replaced by placeholders.
struct MaskedText {
  struct Placeholder {
    std::string text;       // the digits the model sees
    size_t offset = 0;      // of `text` in MaskedText::text
    size_t span = 0;        // index in the spans given to mask()
    bool pad_left = false;  // a space was added before it (the span touched a word): removed again on restore
    bool pad_right = false;
  };
  std::string text;
  std::vector<Placeholder> placeholders;
  bool other_digits = false;  // the masked text holds digits besides the placeholders
};

// Replace `spans` (sorted, disjoint, within `text`) by placeholders.
MaskedText mask_spans(std::string_view text, const std::vector<SpanMatch> &spans);

// What the model made of a masked text, for restore().
struct ModelOutput {
  std::string text;                  // the decoded hypothesis
  std::vector<size_t> token_starts;  // byte where each target token's text starts in `text` (monotone)
  // [token_starts.size() x source_len] cross-attention, or empty.
  const std::vector<float> *attention = nullptr;
  size_t source_len = 0;
  // Per placeholder: its source token range [first, last) (empty when unknown).
  std::vector<std::pair<size_t, size_t>> placeholder_tokens;
};

struct RestoredText {
  std::string text;
  // Per placeholder (in MaskedText order): where its span is in `text`.
  std::vector<ProtectedSpan> spans;  // kind and source fields left for the caller
};

// Put each placeholder's span (span_texts[placeholder.span]) back into the
// model's output exactly once. `remove_stray_digits`: digit runs in the
// output that are no placeholder come from the model alone (the masked source
// had no other digits): they are mangled placeholders, replaced or removed.
RestoredText restore_spans(const MaskedText &masked, const std::vector<std::string> &span_texts,
                           const ModelOutput &out);

}  // namespace parley
