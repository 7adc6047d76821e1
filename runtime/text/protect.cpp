#include "text/protect.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "core/error.hpp"
#include "core/escape.hpp"
#include "text/utf8.hpp"

namespace parley {

namespace {

// The built-in classes. PCRE2 with PCRE2_UTF | PCRE2_UCP.
// Numbers: amounts with a currency before or after, dates (ISO and dotted /
// slashed), times, grouped and decimal numbers, and ids that mix letters
// and digits ("A-12345", "#4711"). An ordinal's or sentence's final dot is
// not part of the number ("am 20. Juni" protects "20").
constexpr const char *kNumberRe = R"((?:(?:[€$£¥]|\b(?:EUR|USD|GBP|CHF|JPY)\b)\s?)?)"
                                  R"((?:\d{4}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./]\d{2,4}\b|\d{1,2}:\d{2}(?::\d{2})?|)"
                                  R"(\b[A-Z]{1,5}-\d[\d-]*\d|#\d+|)"
                                  R"(\d{1,3}(?:[.,'\x{202F}\x{00A0}]\d{3})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?))"
                                  R"((?:\s?(?:[€$£¥%]|(?:EUR|USD|GBP|CHF|JPY)\b))?)";
constexpr const char *kEmailRe = R"([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})";
// The URL ends before final punctuation ("see https://x.de/a.").
constexpr const char *kUrlRe = R"((?:\b(?:https?|ftp)://|\bwww\.)[^\s<>"]*[^\s<>".,;:!?)\]'])";
constexpr const char *kPlaceholderRe =
    R"(\{\{[^{}\n]{0,200}\}\}|\$\{[^{}\n]{0,200}\}|\{[A-Za-z0-9_.:-]{0,200}\}|%%|%(?:\d+\$)?[-+ 0#]{0,4}\d*(?:\.\d+)?(?:l{1,2}|h|z)?[sdifuxXeEgGcp@])";
constexpr const char *kMarkupRe =
    R"(<!--.*?-->|</?[A-Za-z][\w:.-]*(?:\s[^<>]{0,2000})?/?>|&(?:[A-Za-z]{2,8}|#\d{1,7}|#x[0-9A-Fa-f]{1,6});)";

struct CodeFree {
  void operator()(pcre2_code *c) const { pcre2_code_free(c); }
};
struct ContextFree {
  void operator()(pcre2_match_context *c) const { pcre2_match_context_free(c); }
};
struct DataFree {
  void operator()(pcre2_match_data *d) const { pcre2_match_data_free(d); }
};

bool is_word_byte(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c >= 0x80;
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

}  // namespace

struct ProtectRules::Regex {
  std::unique_ptr<pcre2_code, CodeFree> code;
  uint32_t kind = 0;
  std::string what;  // for messages: "protect_patterns[i] '...'"
};

ProtectRules::ProtectRules(uint32_t kinds, const std::vector<std::string> &patterns,
                           const std::vector<std::string> &glossary)
    : kinds_(kinds) {
  if (kinds & ~kProtectAll)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "protect flags " + std::to_string(kinds) + " hold unknown bits (known: 0x1f)");
  if (patterns.size() > kMaxProtectPatterns)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         std::to_string(patterns.size()) + " protect patterns: at most " + std::to_string(kMaxProtectPatterns));
  if (glossary.size() > kMaxGlossaryTerms)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         std::to_string(glossary.size()) + " glossary terms: at most " + std::to_string(kMaxGlossaryTerms));
  auto compile = [&](const std::string &re, uint32_t kind, const std::string &what) {
    int err = 0;
    PCRE2_SIZE off = 0;
    auto r = std::make_unique<Regex>();
    r->kind = kind;
    r->what = what;
    r->code.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(re.data()), re.size(),
                                PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &err, &off, nullptr));
    if (!r->code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           what + " does not compile at offset " + std::to_string(off) + ": " + reinterpret_cast<const char *>(msg));
    }
    // The built-ins are JIT-compiled for speed. A caller's pattern is not: the
    // JIT counts its backtracking limit differently (a pattern with
    // exponential backtracking ran 6 s on 3.5 KB without reaching it),
    // while the interpreter stops it within its 10M steps.
    if (kind != kProtectPattern) pcre2_jit_compile(r->code.get(), PCRE2_JIT_COMPLETE);
    regexes_.push_back(std::move(r));
  };
  const std::pair<uint32_t, const char *> builtin[] = {{kProtectMarkup, kMarkupRe},
                                                       {kProtectUrls, kUrlRe},
                                                       {kProtectEmails, kEmailRe},
                                                       {kProtectPlaceholders, kPlaceholderRe},
                                                       {kProtectNumbers, kNumberRe}};
  for (const auto &[kind, re] : builtin)
    if (kinds & kind) compile(re, kind, "built-in protect pattern " + std::to_string(kind));
  for (size_t i = 0; i < patterns.size(); ++i) {
    const std::string what = "protect_patterns[" + std::to_string(i) + "] " + quote_untrusted(patterns[i]);
    compile(patterns[i], kProtectPattern, what);
    std::unique_ptr<pcre2_match_data, DataFree> md(
        pcre2_match_data_create_from_pattern(regexes_.back()->code.get(), nullptr));
    if (!md) throw std::bad_alloc();
    if (pcre2_match(regexes_.back()->code.get(), reinterpret_cast<PCRE2_SPTR>(""), 0, 0, 0, md.get(), nullptr) >= 0)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, what + " matches the empty string");
    // ... nor in context: a lookaround or an anchor alone ("(?=Welt)",
    // "\\b") matches empty strings inside a text, which protect nothing.
    uint32_t min_length = 1;
    if (pcre2_pattern_info(regexes_.back()->code.get(), PCRE2_INFO_MINLENGTH, &min_length) == 0 && min_length == 0)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, what +
                                              " can match an empty string (a lookaround or an anchor alone, or an "
                                              "optional whole): a protect pattern must match at least one character");
  }
  for (size_t i = 0; i < glossary.size(); ++i) {
    const std::string &t = glossary[i];
    if (t.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "glossary[" + std::to_string(i) + "] is empty");
    if (t.size() > kMaxGlossaryTermBytes)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "glossary[" + std::to_string(i) + "] is " + std::to_string(t.size()) +
                                              " bytes: at most " + std::to_string(kMaxGlossaryTermBytes));
    size_t bad = 0;
    if (!utf8::valid(t, &bad))
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           "glossary[" + std::to_string(i) + "] is not valid UTF-8 (at byte " + std::to_string(bad) + ")");
    // A term of spaces would protect the gaps between words: the text
    // around them would be translated word by word.
    if (t.find_first_not_of(" \t\r\n\f\v") == std::string::npos)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "glossary[" + std::to_string(i) + "] is only whitespace");
  }
  glossary_ = glossary;
  // Longest first: of two terms at one place, the longer wins anyway, and
  // sorting makes the result independent of the caller's order.
  std::sort(glossary_.begin(), glossary_.end(), [](const std::string &a, const std::string &b) {
    return a.size() != b.size() ? a.size() > b.size() : a < b;
  });
  glossary_.erase(std::unique(glossary_.begin(), glossary_.end()), glossary_.end());
}

ProtectRules::~ProtectRules() = default;

bool ProtectRules::empty() const {
  return regexes_.empty() && glossary_.empty();
}

std::vector<SpanMatch> ProtectRules::find(std::string_view text, const std::function<void()> &between) const {
  std::vector<SpanMatch> all;
  // Caller patterns may be hostile: bound backtracking so they fail instead of hanging.
  std::unique_ptr<pcre2_match_context, ContextFree> limits(pcre2_match_context_create(nullptr));
  if (!limits) throw std::bad_alloc();
  pcre2_set_match_limit(limits.get(), 10'000'000);
  pcre2_set_depth_limit(limits.get(), 100'000);
  pcre2_set_heap_limit(limits.get(), 64 * 1024);  // KiB
  const auto *subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  for (size_t r = 0; r < regexes_.size(); ++r) {
    const Regex &re = *regexes_[r];
    std::unique_ptr<pcre2_match_data, DataFree> md(pcre2_match_data_create_from_pattern(re.code.get(), nullptr));
    if (!md) throw std::bad_alloc();
    size_t at = 0;
    while (at <= text.size()) {
      if (between && re.kind == kProtectPattern) between();
      int rc =
          pcre2_match(re.code.get(), subject, text.size(), at, at ? PCRE2_NO_UTF_CHECK : 0, md.get(), limits.get());
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        // Invalid UTF-8, or a caller pattern past its backtracking limits.
        fail(PARLEY_ERROR_INVALID_ARGUMENT,
             std::string(re.kind == kProtectPattern ? "a protect pattern" : "a built-in protect pattern") +
                 " failed on the text: " + reinterpret_cast<const char *>(msg));
      }
      const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md.get());
      size_t s = ov[0], e = ov[1];
      // A caller's pattern that matches nothing here (a lookahead alone:
      // "(?=Welt)", which compile-time checks cannot always tell) would
      // protect nothing while looking as if it did: say so.
      if (e == s && re.kind == kProtectPattern)
        fail(PARLEY_ERROR_INVALID_ARGUMENT, re.what + " matched an empty string at byte " + std::to_string(s) +
                                                " of the text: a protect pattern must match at least one character");
      if (e > s) all.push_back({s, e - s, re.kind});
      // Advance past the match (one whole character past an empty one).
      at = e > at ? e : at + 1;
      while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) ++at;
    }
  }
  for (const std::string &term : glossary_) {
    for (size_t at = text.find(term); at != std::string_view::npos; at = text.find(term, at + 1)) {
      const size_t end = at + term.size();
      // Whole words only: not inside a longer word.
      const bool left_ok = at == 0 || !is_word_byte(static_cast<unsigned char>(text[at - 1])) ||
                           !is_word_byte(static_cast<unsigned char>(term.front()));
      const bool right_ok = end == text.size() || !is_word_byte(static_cast<unsigned char>(text[end])) ||
                            !is_word_byte(static_cast<unsigned char>(term.back()));
      if (left_ok && right_ok) all.push_back({at, term.size(), kProtectGlossary});
    }
  }
  // Earliest first, then longest; glossary and caller patterns before built-ins at a tie.
  std::sort(all.begin(), all.end(), [](const SpanMatch &a, const SpanMatch &b) {
    if (a.offset != b.offset) return a.offset < b.offset;
    if (a.length != b.length) return a.length > b.length;
    return a.kind > b.kind;
  });
  std::vector<SpanMatch> out;
  size_t end = 0;
  for (const SpanMatch &m : all)
    if (out.empty() || m.offset >= end) {
      out.push_back(m);
      end = m.offset + m.length;
    }
  return out;
}

MaskedText mask_spans(std::string_view text, const std::vector<SpanMatch> &spans) {
  // Digit runs outside the spans: a placeholder must differ from each.
  std::vector<std::string> taken;
  {
    std::vector<bool> in_span(text.size(), false);
    for (const SpanMatch &m : spans)
      std::fill_n(in_span.begin() + static_cast<std::ptrdiff_t>(m.offset), m.length, true);
    for (size_t i = 0; i < text.size();) {
      if (in_span[i] || !is_digit(text[i])) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < text.size() && !in_span[j] && is_digit(text[j])) ++j;
      taken.emplace_back(text.substr(i, j - i));
      i = j;
    }
  }
  MaskedText out;
  out.other_digits = !taken.empty();
  // Placeholders 101, 202, ... 909, then 1001, 1002, ...: short digit
  // strings, distinct, none a digit run of the text.
  uint64_t next = 1;
  auto next_placeholder = [&] {
    for (;;) {
      uint64_t n = next <= 9 ? next * 101 : 991 + next;
      ++next;
      std::string s = std::to_string(n);
      if (std::find(taken.begin(), taken.end(), s) == taken.end()) return s;
    }
  };
  size_t at = 0;
  for (size_t k = 0; k < spans.size(); ++k) {
    const SpanMatch &m = spans[k];
    out.text.append(text.substr(at, m.offset - at));
    MaskedText::Placeholder p;
    p.text = next_placeholder();
    p.span = k;
    // A placeholder glued to a word or digit would merge with it in the
    // model's tokens ("<b>Hallo" -> "101Hallo"): separate it by a space.
    p.pad_left = m.offset > 0 && !is_space(text[m.offset - 1]);
    const size_t end = m.offset + m.length;
    p.pad_right = end < text.size() && !is_space(text[end]) && is_word_byte(static_cast<unsigned char>(text[end]));
    if (p.pad_left) out.text.push_back(' ');
    p.offset = out.text.size();
    out.text += p.text;
    if (p.pad_right) out.text.push_back(' ');
    out.placeholders.push_back(std::move(p));
    at = end;
  }
  out.text.append(text.substr(at));
  return out;
}

namespace {
// The element name of an opening ("<b class=x>" -> "b") or closing ("</b>"
// -> "b") tag; empty for anything else (self-closing tags included).
std::string tag_name(const std::string &span, bool closing) {
  if (span.size() < 3 || span.front() != '<' || span.back() != '>' || span[span.size() - 2] == '/') return {};
  size_t i = 1;
  if (closing != (span[1] == '/')) return {};
  if (closing) ++i;
  size_t j = i;
  while (j < span.size() && span[j] != '>' && !is_space(span[j]) && span[j] != '/') ++j;
  return span.substr(i, j - i);
}

// An element's closing tag placed before its opening tag ("</b> ... <b>")
// cannot be what any target language needs: swap the two spans' places.
void fix_tag_pairs(const MaskedText &masked, const std::vector<std::string> &span_texts, RestoredText &res) {
  const size_t n = masked.placeholders.size();
  auto text_of = [&](size_t p) -> const std::string & { return span_texts[masked.placeholders[p].span]; };
  for (size_t o = 0; o < n; ++o) {
    const std::string name = tag_name(text_of(o), false);
    if (name.empty()) continue;
    // Its closing tag: the next "</name>" in source order, skipping nested pairs.
    size_t depth = 0, c = n;
    for (size_t q = o + 1; q < n && c == n; ++q) {
      if (tag_name(text_of(q), false) == name) ++depth;
      if (tag_name(text_of(q), true) == name) {
        if (depth == 0)
          c = q;
        else
          --depth;
      }
    }
    if (c == n) continue;
    ProtectedSpan &so = res.spans[o], &sc = res.spans[c];
    if (sc.target_offset >= so.target_offset) continue;
    // [close][middle][open] -> [open][middle][close]
    const size_t c_off = sc.target_offset, c_len = sc.target_length, o_off = so.target_offset, o_len = so.target_length;
    const std::string middle = res.text.substr(c_off + c_len, o_off - (c_off + c_len));
    res.text = res.text.substr(0, c_off) + text_of(o) + middle + text_of(c) + res.text.substr(o_off + o_len);
    for (size_t q = 0; q < n; ++q)
      if (q != o && q != c && res.spans[q].target_offset > c_off && res.spans[q].target_offset < o_off)
        res.spans[q].target_offset = res.spans[q].target_offset - c_len + o_len;
    so.target_offset = c_off;
    sc.target_offset = c_off + o_len + middle.size();
  }
}
}  // namespace

RestoredText restore_spans(const MaskedText &masked, const std::vector<std::string> &span_texts,
                           const ModelOutput &out) {
  const std::string &t = out.text;
  const size_t n = masked.placeholders.size();
  auto span_of = [&](size_t p) -> const std::string & { return span_texts[masked.placeholders[p].span]; };
  // Digit runs of the output.
  struct Run {
    size_t begin, end;
    std::vector<size_t> owners;  // placeholders placed here, in order
    bool exact = false;          // the run is one placeholder, as the model copied it
  };
  std::vector<Run> runs;
  for (size_t i = 0; i < t.size();) {
    if (!is_digit(t[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < t.size() && is_digit(t[j])) ++j;
    runs.push_back({i, j, {}, false});
    i = j;
  }
  // The target token whose text holds byte `pos`.
  auto token_at = [&](size_t pos) -> int64_t {
    if (out.token_starts.empty()) return -1;
    auto it = std::upper_bound(out.token_starts.begin(), out.token_starts.end(), pos);
    return it == out.token_starts.begin() ? 0 : static_cast<int64_t>(it - out.token_starts.begin()) - 1;
  };
  const bool have_attention = out.attention && out.source_len > 0 &&
                              out.attention->size() == out.token_starts.size() * out.source_len &&
                              out.placeholder_tokens.size() == n;
  // Attention of target token `tok` on placeholder p's source tokens.
  auto affinity = [&](int64_t tok, size_t p) -> double {
    if (!have_attention || tok < 0) return 0.0;
    double sum = 0.0;
    const auto [a, b] = out.placeholder_tokens[p];
    for (size_t s = a; s < b && s < out.source_len; ++s)
      sum += static_cast<double>((*out.attention)[static_cast<size_t>(tok) * out.source_len + s]);
    return sum;
  };
  auto run_affinity = [&](const Run &r, size_t p) {
    double best = 0.0;
    for (size_t pos = r.begin; pos < r.end; ++pos) best = std::max(best, affinity(token_at(pos), p));
    return best;
  };
  auto run_is = [&](const Run &r, const std::string &digits) {
    return t.compare(r.begin, r.end - r.begin, digits) == 0;
  };

  // The run is the decimal part of the number before it ("303,50"): no place
  // for a span of its own; it goes with its separator (below).
  auto decimal_part = [&](const Run &r) {
    return r.begin >= 2 && (t[r.begin - 1] == '.' || t[r.begin - 1] == ',') && is_digit(t[r.begin - 2]);
  };

  RestoredText res;
  res.spans.resize(n);
  std::vector<bool> placed(n, false);
  // 1. Placeholders the model copied: of several copies, the best attended (the first at a tie).
  for (size_t p = 0; p < n; ++p) {
    int64_t best = -1;
    double best_a = -1.0;
    for (size_t r = 0; r < runs.size(); ++r)
      if (runs[r].owners.empty() && run_is(runs[r], masked.placeholders[p].text)) {
        double a = run_affinity(runs[r], p);
        if (a > best_a) {
          best_a = a;
          best = static_cast<int64_t>(r);
        }
      }
    if (best >= 0) {
      runs[static_cast<size_t>(best)].owners.push_back(p);
      runs[static_cast<size_t>(best)].exact = true;
      placed[p] = true;
      res.spans[p].placement = kSpanCopied;
    }
  }
  // 2. Mangled placeholders: a digit run of the model's own (the masked
  // source had no other digits) that holds missing placeholders' digits
  // ("10112020" for 101 and 202; "10111" for 101) takes them, in the order
  // found; then the remaining runs take the remaining placeholders by
  // attention (else in order).
  const bool stray_removable = !masked.other_digits;
  if (stray_removable) {
    for (Run &r : runs) {
      if (r.exact) continue;
      for (size_t pos = r.begin; pos < r.end;) {
        int64_t hit = -1;
        for (size_t p = 0; p < n; ++p) {
          const std::string &d = masked.placeholders[p].text;
          if (!placed[p] && pos + d.size() <= r.end && t.compare(pos, d.size(), d) == 0 &&
              (hit < 0 || d.size() > masked.placeholders[static_cast<size_t>(hit)].text.size()))
            hit = static_cast<int64_t>(p);
        }
        if (hit < 0) {
          ++pos;
          continue;
        }
        const size_t p = static_cast<size_t>(hit);
        r.owners.push_back(p);
        placed[p] = true;
        res.spans[p].placement = kSpanAligned;
        pos += masked.placeholders[p].text.size();
      }
    }
    for (size_t p = 0; p < n; ++p) {
      if (placed[p]) continue;
      int64_t best = -1;
      double best_a = -1.0;
      for (size_t r = 0; r < runs.size(); ++r) {
        if (!runs[r].owners.empty() || decimal_part(runs[r])) continue;
        double a = run_affinity(runs[r], p);
        if (a > best_a) {
          best_a = a;
          best = static_cast<int64_t>(r);
        }
      }
      if (best < 0) break;
      runs[static_cast<size_t>(best)].owners.push_back(p);
      placed[p] = true;
      res.spans[p].placement = have_attention ? kSpanAligned : kSpanPositioned;
    }
  }

  // Edits on the output: replace [begin, end) by text, holding the spans of
  // `placed_here` at the given offsets of `text`.
  struct Edit {
    size_t begin, end;
    std::string text;
    std::vector<std::pair<size_t, size_t>> placed_here;  // (placeholder, offset in text)
  };
  std::vector<Edit> edits;
  auto is_currency = [](std::string_view s) {
    for (const char *c : {"\xE2\x82\xAC", "$", "\xC2\xA3", "\xC2\xA5"})  // € $ £ ¥
      if (s == c) return true;
    return false;
  };
  for (size_t r = 0; r < runs.size(); ++r) {
    if (!runs[r].owners.empty()) {
      size_t b = runs[r].begin, e = runs[r].end;
      const MaskedText::Placeholder &first = masked.placeholders[runs[r].owners.front()];
      const MaskedText::Placeholder &last = masked.placeholders[runs[r].owners.back()];
      // Take back the spaces mask_spans added around a glued span.
      if (first.pad_left && b > 0 && t[b - 1] == ' ') --b;
      if (last.pad_right && e < t.size() && t[e] == ' ') ++e;
      Edit ed{b, e, std::string(), {}};
      for (size_t p : runs[r].owners) {
        if (!ed.text.empty()) ed.text.push_back(' ');
        ed.placed_here.emplace_back(p, ed.text.size());
        ed.text += span_of(p);
      }
      // A currency sign the span holds, which the model wrote next to the
      // placeholder too ("€" + "149,00 €"): drop the model's.
      const std::string &fs = span_of(runs[r].owners.front());
      size_t q = ed.begin;
      if (q > 0 && t[q - 1] == ' ') --q;
      for (size_t len : {size_t{1}, size_t{2}, size_t{3}}) {
        if (q < len) break;
        const std::string sign = t.substr(q - len, len);
        if (!is_currency(sign) || fs.find(sign) == std::string::npos) continue;
        ed.begin = q - len;
        if (ed.begin > 0 && !is_space(t[ed.begin - 1])) {  // keep the word before apart
          ed.text.insert(0, " ");
          for (auto &po : ed.placed_here) po.second += 1;
        }
        break;
      }
      // The same after it ("4,90 €" + " €").
      const std::string &ls = span_of(runs[r].owners.back());
      size_t q_after = ed.end < t.size() && t[ed.end] == ' ' ? ed.end + 1 : ed.end;
      for (size_t len : {size_t{1}, size_t{2}, size_t{3}}) {
        if (q_after + len > t.size()) break;
        const std::string sign = t.substr(q_after, len);
        if (!is_currency(sign) || ls.find(sign) == std::string::npos) continue;
        ed.end = q_after + len;
        break;
      }
      // The model glued the placeholder to a word ("from101"): keep the span a word of its own.
      auto word = [](char c) { return is_word_byte(static_cast<unsigned char>(c)); };
      if (ed.begin > 0 && word(t[ed.begin - 1]) && word(ed.text.front())) {
        ed.text.insert(0, " ");
        for (auto &po : ed.placed_here) po.second += 1;
      }
      if (ed.end < t.size() && word(t[ed.end]) && word(ed.text.back())) ed.text.push_back(' ');
      edits.push_back(std::move(ed));
    } else if (stray_removable || (runs[r].end - runs[r].begin >= 3 && [&] {
                 for (size_t p = 0; p < n; ++p)
                   if (run_is(runs[r], masked.placeholders[p].text)) return true;
                 return false;
               }())) {
      // A model-made number (or an extra copy of a placeholder): the source
      // held no such digits, so it is not part of the translation. Drop it
      // with one space next to it, or, when it is the decimal part of the
      // number before ("€101.20" for "€101"), with its separator.
      size_t b = runs[r].begin, e = runs[r].end;
      if (decimal_part(runs[r]))
        --b;
      else if (e < t.size() && t[e] == ' ')
        ++e;
      else if (b > 0 && t[b - 1] == ' ')
        --b;
      edits.push_back({b, e, std::string(), {}});
    }
  }
  // 3. Still missing: insert where the attention points (the start of the
  // word holding the target token that attended most to the placeholder),
  // else at the span's relative position in the source, at a word start.
  const size_t src_len = masked.text.size();
  for (size_t p = 0; p < n; ++p) {
    if (placed[p]) continue;
    size_t pos = t.size();
    if (have_attention && !out.token_starts.empty()) {
      double best_a = -1.0;
      size_t best_tok = 0;
      for (size_t tok = 0; tok < out.token_starts.size(); ++tok) {
        double a = affinity(static_cast<int64_t>(tok), p);
        if (a > best_a) {
          best_a = a;
          best_tok = tok;
        }
      }
      pos = std::min(out.token_starts[best_tok], t.size());
      res.spans[p].placement = kSpanAligned;
    } else {
      const double frac =
          src_len ? static_cast<double>(masked.placeholders[p].offset) / static_cast<double>(src_len) : 1.0;
      pos = std::min(t.size(), static_cast<size_t>(frac * static_cast<double>(t.size())));
      res.spans[p].placement = kSpanPositioned;
    }
    // Not inside a word, a digit run or an edit: move to the start of the word.
    auto inside_edit = [&](size_t q) {
      for (const Edit &e : edits)
        if (q > e.begin && q < e.end) return true;
      return false;
    };
    while (pos > 0 && pos < t.size() && (!is_space(t[pos - 1]) || inside_edit(pos))) --pos;
    while (pos < t.size() && (static_cast<unsigned char>(t[pos]) & 0xC0) == 0x80) ++pos;
    const bool space_after = pos < t.size() && !is_space(t[pos]);
    const bool space_before = pos > 0 && !is_space(t[pos - 1]);
    Edit e{pos, pos, std::string(space_before ? " " : ""), {}};
    e.placed_here.emplace_back(p, e.text.size());
    e.text += span_of(p);
    if (space_after) e.text.push_back(' ');
    edits.push_back(std::move(e));
  }
  // Apply the edits in order (insertions at one place keep placeholder order).
  std::stable_sort(edits.begin(), edits.end(), [](const Edit &a, const Edit &b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    return a.end < b.end;
  });
  size_t at = 0;
  for (const Edit &e : edits) {
    size_t b = std::max(e.begin, at);  // overlapping space grabs: keep the first
    res.text.append(t, at, b - at);
    for (const auto &[p, off] : e.placed_here) {
      res.spans[p].target_offset = res.text.size() + off;
      res.spans[p].target_length = span_of(p).size();
    }
    res.text += e.text;
    at = std::max(at, e.end);
  }
  res.text.append(t, std::min(at, t.size()), std::string::npos);
  fix_tag_pairs(masked, span_texts, res);
  return res;
}

}  // namespace parley
