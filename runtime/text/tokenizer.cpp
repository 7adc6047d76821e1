#include "text/tokenizer.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "core/escape.hpp"
#include "text/chat_format.hpp"
#include "text/utf8.hpp"

namespace parley {

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const TokenizerView &view, uint32_t model_vocab);
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const TokenizerView &view, uint32_t model_vocab);

std::unique_ptr<Tokenizer> Tokenizer::create(const TokenizerView &view, uint32_t model_vocab) {
  std::unique_ptr<Tokenizer> t = view.kind == PARLEY_TOKENIZER_BYTE_LEVEL_BPE
                                     ? make_bpe_tokenizer(view, model_vocab)
                                     : make_sentencepiece_tokenizer(view, model_vocab);
  t->bind_template();
  return t;
}

namespace {
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
}  // namespace

Tokenizer::Tokenizer(const TokenizerView &view, uint32_t model_vocab) : table_(*view.table), model_vocab_(model_vocab) {
  if (const auto *sp = table_.special_tokens()) {
    for (const format::SpecialToken *s : *sp) {
      added_.push_back({s->content()->str(), s->id(), s->special(), s->lstrip(), s->rstrip()});
      added_by_text_.emplace(s->content()->str(), s->id());
    }
  }
  // Longest match wins (tokenizers' AddedVocabulary uses leftmost-longest).
  std::stable_sort(added_.begin(), added_.end(),
                   [](const Added &a, const Added &b) { return a.content.size() > b.content.size(); });
  trie_.emplace_back();
  for (size_t i = 0; i < added_.size(); ++i) {
    added_by_id_.emplace(added_[i].id, i);
    const std::string &c = added_[i].content;
    // An empty content would match everywhere and never advance: it is never matched.
    if (c.empty()) continue;
    has_nonspecial_ = has_nonspecial_ || !added_[i].special;
    uint32_t node = 0;
    for (size_t k = 0; k < c.size(); ++k) {
      const auto byte = static_cast<unsigned char>(c[k]);
      uint32_t child = 0;
      if (k == 0) {
        child = root_next_[byte];
      } else {
        for (const auto &[b, n] : trie_[node].next)
          if (b == byte) child = n;
      }
      if (!child) {
        child = static_cast<uint32_t>(trie_.size());
        trie_.emplace_back();
        if (k == 0)
          root_next_[byte] = child;
        else
          trie_[node].next.emplace_back(byte, child);
      }
      node = child;
    }
    // Equal contents: the first listed wins, as before.
    if (trie_[node].added < 0) trie_[node].added = static_cast<int32_t>(i);
  }
  if (const auto *langs = table_.languages())
    for (const format::Language *l : *langs) languages_.emplace_back(l->code()->str(), l->token_id());
  clean_up_ = table_.clean_up_spaces();
}

void Tokenizer::bind_template() {
  auto bind = [&](const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>> *tokens,
                  std::vector<int32_t> &out, const char *what) {
    if (!tokens) return;
    for (const flatbuffers::String *s : *tokens) {
      if (s->string_view() == "{lang}") {
        if (languages_.empty())
          fail(PARLEY_ERROR_INVALID_MODEL, std::string("tokenizer ") + what + " uses {lang} but lists no languages");
        needs_lang_ = true;
        out.push_back(-2);
        continue;
      }
      int32_t id = token_id(s->string_view());
      if (id < 0)
        fail(PARLEY_ERROR_INVALID_MODEL, std::string("tokenizer ") + what + " token " +
                                             quote_untrusted(s->string_view()) + " is not in its vocabulary");
      out.push_back(id);
    }
  };
  bind(table_.prefix(), prefix_, "prefix");
  bind(table_.suffix(), suffix_, "suffix");
}

int32_t Tokenizer::token_id(std::string_view token) const {
  auto it = added_by_text_.find(std::string(token));
  if (it != added_by_text_.end()) return it->second;
  return vocab_id(token);
}

int32_t Tokenizer::language_token(std::string_view code) const {
  for (const auto &[c, id] : languages_)
    if (c == code) return id;
  return -1;
}

std::string Tokenizer::describe_languages() const {
  if (languages_.empty()) return "it has no language codes (a model for one language pair)";
  constexpr size_t kShown = 8;
  std::string out = "its codes are ";
  for (size_t i = 0; i < languages_.size() && i < kShown; ++i)
    out += (i ? ", " : "") + quote_untrusted(languages_[i].first);
  if (languages_.size() > kShown) out += ", ... (" + std::to_string(languages_.size()) + " in all)";
  return out;
}

bool Tokenizer::is_special(int32_t id) const {
  auto it = added_by_id_.find(id);
  return it != added_by_id_.end() && added_[it->second].special;
}

std::vector<Tokenizer::Piece> Tokenizer::split_added(std::string_view text, bool parse_special,
                                                     const std::vector<std::pair<size_t, size_t>> &text_ranges) const {
  std::vector<Piece> pieces;
  if (!parse_special && !has_nonspecial_) {  // nothing may match
    if (!text.empty()) pieces.push_back({false, -1, text});
    return pieces;
  }
  size_t start = 0;  // start of the pending ordinary text
  size_t i = 0;
  size_t range = 0;  // first of text_ranges that ends after i
  while (i < text.size()) {
    while (range < text_ranges.size() && text_ranges[range].second <= i) ++range;
    // The longest added token that starts here and may match (leftmost-
    // longest, as tokenizers' AddedVocabulary).
    const Added *hit = nullptr;
    uint32_t node = root_next_[static_cast<unsigned char>(text[i])];
    for (size_t end = i + 1; node;) {
      if (trie_[node].added >= 0) {
        const Added &a = added_[static_cast<size_t>(trie_[node].added)];
        // A special token counts only in trusted text, not inside (or
        // reaching into) a message's text.
        if (!a.special || (parse_special && !(range < text_ranges.size() && text_ranges[range].first < end))) hit = &a;
      }
      if (end == text.size()) break;
      const auto byte = static_cast<unsigned char>(text[end++]);
      uint32_t child = 0;
      for (const auto &[b, n] : trie_[node].next)
        if (b == byte) {
          child = n;
          break;
        }
      node = child;
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t end = i + hit->content.size();
    size_t text_end = i;
    if (hit->lstrip)
      while (text_end > start && is_space(text[text_end - 1])) --text_end;
    if (hit->rstrip)
      while (end < text.size() && is_space(text[end])) ++end;
    if (text_end > start) pieces.push_back({false, -1, text.substr(start, text_end - start)});
    pieces.push_back({true, hit->id, {}});
    start = i = end;
  }
  if (start < text.size()) pieces.push_back({false, -1, text.substr(start)});
  return pieces;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, std::string_view lang,
                                       size_t max_tokens, bool parse_special) const {
  size_t bad = 0;
  if (!utf8::valid(text, &bad))
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "text is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
  return encode_split(text, add_special, lang, split_added(text, parse_special, {}), max_tokens);
}

std::vector<int32_t> Tokenizer::encode_prompt(std::string_view prompt,
                                              const std::vector<std::pair<size_t, size_t>> &text_ranges,
                                              size_t max_tokens) const {
  size_t bad = 0;
  if (!utf8::valid(prompt, &bad))
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "prompt is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
  for (size_t k = 0; k < text_ranges.size(); ++k)
    if (text_ranges[k].first > text_ranges[k].second || text_ranges[k].second > prompt.size() ||
        (k > 0 && text_ranges[k].first < text_ranges[k - 1].second))
      fail(PARLEY_ERROR_INTERNAL, "chat prompt text ranges are not sorted, disjoint ranges inside the prompt");
  return encode_split(prompt, false, {}, split_added(prompt, true, text_ranges), max_tokens);
}

std::vector<int32_t> Tokenizer::encode_split(std::string_view text, bool add_special, std::string_view lang,
                                             const std::vector<Piece> &pieces, size_t max_tokens) const {
  int32_t lang_id = -1;
  if (!lang.empty()) {
    lang_id = language_token(lang);
    if (lang_id < 0)
      fail(PARLEY_ERROR_NOT_FOUND, "unknown language code " + quote_untrusted(lang) + ": " + describe_languages());
  }
  if (add_special && needs_lang_ && lang_id < 0)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "this model needs a language code (e.g. " + quote_untrusted(languages_.front().first) + ")");
  std::vector<int32_t> ids;
  auto put = [&](const std::vector<int32_t> &tpl) {
    for (int32_t id : tpl) ids.push_back(id == -2 ? lang_id : id);
  };
  if (add_special) put(prefix_);
  bool first = true;
  auto too_long = [&] {
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "the text is too long: more than " + std::to_string(max_tokens) +
                                            " tokens, the model accepts " + std::to_string(max_tokens) +
                                            " here (the text has " + std::to_string(text.size()) +
                                            " bytes; tokenizing stopped once it could not fit)");
  };
  for (const Piece &p : pieces) {
    if (p.added)
      ids.push_back(p.id);
    else if (!encode_text_bounded(p.text, first, ids, max_tokens))
      too_long();
    first = false;
    if (ids.size() > max_tokens) too_long();
  }
  if (add_special) put(suffix_);
  if (ids.size() > max_tokens) too_long();
  return ids;
}

namespace {
// transformers' PreTrainedTokenizerBase.clean_up_tokenization.
std::string clean_up_tokenization(std::string s) {
  static const std::pair<const char *, const char *> rules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto &[from, to] : rules) {
    std::string out;
    std::string_view f(from);
    size_t pos = 0;
    for (size_t hit; (hit = s.find(f, pos)) != std::string::npos; pos = hit + f.size()) {
      out.append(s, pos, hit - pos);
      out.append(to);
    }
    out.append(s, pos, std::string::npos);
    s = std::move(out);
  }
  return s;
}
}  // namespace

void Tokenizer::token_bytes(std::vector<std::string> *bytes, std::vector<char> *text) const {
  bytes->assign(model_vocab_, std::string());
  text->assign(model_vocab_, 0);
  for (uint32_t id = 0; id < model_vocab_; ++id) {
    auto it = added_by_id_.find(static_cast<int32_t>(id));
    if (it != added_by_id_.end()) {
      const Added &a = added_[it->second];
      if (a.special) continue;
      (*bytes)[id] = a.content;
      (*text)[id] = 1;
      continue;
    }
    (*text)[id] = piece_bytes(static_cast<int32_t>(id), &(*bytes)[id]) ? 1 : 0;
  }
}

std::string Tokenizer::decode(const std::vector<int32_t> &ids, bool skip_special) const {
  const auto style = table_.decode_style();
  std::string out;
  std::vector<int32_t> run;
  bool first = true;
  auto flush = [&] {
    if (run.empty()) return;
    out += decode_run(run, first || style != format::DecodeStyle::Stream);
    first = false;
    run.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || static_cast<uint32_t>(id) >= model_vocab_)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "token id " + std::to_string(id) + " is outside the vocabulary");
    auto it = added_by_id_.find(id);
    if (it == added_by_id_.end()) {
      run.push_back(id);
      continue;
    }
    const Added &a = added_[it->second];
    if (skip_special && a.special) continue;  // a skipped token does not split the run around it
    flush();
    out += a.content;
    if (style == format::DecodeStyle::RunsSpaced) out += ' ';
    first = false;
  }
  flush();
  if (style == format::DecodeStyle::RunsSpaced) out = std::string(trim_unicode_space(out));
  return clean_up_ ? clean_up_tokenization(std::move(out)) : out;
}

}  // namespace parley
