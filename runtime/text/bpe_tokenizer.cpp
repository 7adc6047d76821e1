// Byte-level BPE (GPT-2, BART, Llama-3, Qwen2/3) as Hugging Face tokenizers
// runs it: optional NFC normalizer, Split(pre_tokenizer_regex, Isolated),
// ByteLevel (bytes mapped to printable code points, GPT-2's
// bytes_to_unicode), BPE merges by rank, ByteLevel decoder with lossy UTF-8.
// Reference: tokenizers 0.23 pre_tokenizers/byte_level.rs, models/bpe/model.rs.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/bpe_tokenizer.hpp"

#include <pcre2.h>

#include <algorithm>
#include <array>
#include <climits>
#include <memory>
#include <new>
#include <unordered_map>

#include "core/error.hpp"
#include "core/escape.hpp"
#include "text/tokenizer.hpp"
#include "text/utf8.hpp"

namespace parley {

namespace {

thread_local uint64_t work_units = 0;

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the
// other 68 to U+0100 onwards in byte order.
struct ByteMap {
  std::array<std::string, 256> to_text;
  std::unordered_map<uint32_t, uint8_t> to_byte;
  ByteMap() {
    uint32_t extra = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      uint32_t cp = printable ? b : extra++;
      utf8::append(to_text[b], cp);
      to_byte.emplace(cp, static_cast<uint8_t>(b));
    }
  }
};
const ByteMap &byte_map() {
  // Never destroyed: a request may still decode on another thread while
  // exit() runs the static destructors.
  static const ByteMap &m = *new ByteMap;
  return m;
}

// `s` between quotes with backslashes, control bytes and bytes that are not
// UTF-8 written as escapes (file content must not reach a terminal raw).
std::string quoted(std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 200;) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : utf8::sequence_length(s, i);
    if (c == '\\') {
      out += "\\\\";
    } else if (n == 1 && c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else if (n > 1) {
      out.append(s, i, n);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
      n = 1;
    }
    i += n;
  }
  if (s.size() > 200) out += "...";
  return out + "'";
}

struct Pcre2CodeFree {
  void operator()(pcre2_code *c) const { pcre2_code_free(c); }
};
struct Pcre2ContextFree {
  void operator()(pcre2_match_context *c) const { pcre2_match_context_free(c); }
};
struct Pcre2DataFree {
  void operator()(pcre2_match_data *d) const { pcre2_match_data_free(d); }
};

class BpeTokenizer final : public Tokenizer {
 public:
  BpeTokenizer(const TokenizerView &view, uint32_t model_vocab) : Tokenizer(view, model_vocab) {
    const auto *vocab = table_.vocab();
    if (!vocab || vocab->size() == 0)  // format 1.0 files kept BPE tables in the blob; nothing reads those
      fail(PARLEY_ERROR_INVALID_MODEL, "byte-level BPE tokenizer has no vocabulary (re-convert the model)");
    vocab_.reserve(vocab->size());
    for (flatbuffers::uoffset_t i = 0; i < vocab->size(); ++i) {
      vocab_.push_back(vocab->Get(i)->str());
      ids_.emplace(vocab_.back(), static_cast<int32_t>(i));
    }
    // Merges: "left right" per line, rank = line number.
    std::string_view blob(reinterpret_cast<const char *>(view.data), view.length);
    int32_t rank = 0;
    for (size_t pos = 0; pos < blob.size();) {
      size_t nl = blob.find('\n', pos);
      if (nl == std::string_view::npos) nl = blob.size();
      std::string_view line = blob.substr(pos, nl - pos);
      pos = nl + 1;
      if (line.empty()) continue;
      size_t sp = line.find(' ');
      if (sp == std::string_view::npos || sp == 0 || sp + 1 == line.size())
        fail(PARLEY_ERROR_INVALID_MODEL, "BPE merge #" + std::to_string(rank) + " is not 'left right'");
      std::string merged = std::string(line.substr(0, sp)) + std::string(line.substr(sp + 1));
      auto it = ids_.find(merged);
      if (it == ids_.end())
        fail(PARLEY_ERROR_INVALID_MODEL,
             "BPE merge #" + std::to_string(rank) + " makes " + quoted(merged) + ", which is not in the vocabulary");
      // As tokenizers (MergeTokenOutOfVocabulary): both halves must be tokens.
      int32_t halves[2];
      for (int k = 0; k < 2; ++k) {
        std::string half(k == 0 ? line.substr(0, sp) : line.substr(sp + 1));
        auto h = ids_.find(half);
        if (h == ids_.end())
          fail(PARLEY_ERROR_INVALID_MODEL,
               "BPE merge #" + std::to_string(rank) + " uses " + quoted(half) + ", which is not in the vocabulary");
        halves[k] = h->second;
      }
      merges_.emplace(pair_key(halves[0], halves[1]), Merge{rank++, it->second});
    }
    const ByteMap &bytes = byte_map();
    for (size_t b = 0; b < 256; ++b) {
      auto it = ids_.find(bytes.to_text[b]);
      byte_id_[b] = it == ids_.end() ? -1 : it->second;
    }
    for (const std::string &t : vocab_) longest_token_ = std::max(longest_token_, t.size());
    const int32_t unk = table_.unk_id();
    const bool unk_empty =
        unk >= 0 && (static_cast<size_t>(unk) >= vocab_.size() || vocab_[static_cast<size_t>(unk)].empty());
    raw_bytes_per_token_ = unk_empty ? 0 : longest_token_;
    if (const flatbuffers::String *re = table_.pre_tokenizer_regex()) {
      int err = 0;
      PCRE2_SIZE off = 0;
      // No \C: it matches one byte even in UTF mode, and a match that ends
      // inside a character would make the next (unchecked) call start there.
      regex_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(re->c_str()), re->size(),
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &err, &off, nullptr));
      if (!regex_) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        fail(PARLEY_ERROR_INVALID_MODEL, "pre-tokenizer regex does not compile at offset " + std::to_string(off) +
                                             ": " + reinterpret_cast<const char *>(msg));
      }
      pcre2_jit_compile(regex_.get(), PCRE2_JIT_COMPLETE);  // optional speed-up; matching works without it
      // The regex comes from the file: bound backtracking so a hostile
      // pattern fails instead of hanging.
      limits_.reset(pcre2_match_context_create(nullptr));
      if (!limits_) throw std::bad_alloc();
      pcre2_set_match_limit(limits_.get(), 10'000'000);
      pcre2_set_depth_limit(limits_.get(), 100'000);
      pcre2_set_heap_limit(limits_.get(), 64 * 1024);  // KiB
      // A regex that matches the empty string would split text into empty
      // words (tokenizers then isolates every character); no real
      // tokenizer's does, so such a file is refused. (The matching loop
      // also copes with regexes that match empty only somewhere.)
      std::unique_ptr<pcre2_match_data, Pcre2DataFree> md(pcre2_match_data_create_from_pattern(regex_.get(), nullptr));
      if (!md) throw std::bad_alloc();
      PCRE2_SPTR empty = reinterpret_cast<PCRE2_SPTR>("");
      if (pcre2_match(regex_.get(), empty, 0, 0, 0, md.get(), limits_.get()) >= 0)
        fail(PARLEY_ERROR_INVALID_MODEL,
             "pre-tokenizer regex " + quoted(re->string_view()) + " matches the empty string");
    }
  }

 protected:
  int32_t vocab_id(std::string_view token) const override {
    auto it = ids_.find(std::string(token));
    return it == ids_.end() ? -1 : it->second;
  }

  void encode_text(std::string_view raw, bool first, std::vector<int32_t> &out) const override {
    (void)encode_text_bounded(raw, first, out, SIZE_MAX);
  }

  // False as soon as the text cannot fit in `limit` ids: a caller with a
  // context budget does not pay for the rest of a long text. Linear in the
  // text: PCRE2 checks UTF-8 once (the whole stretch, here) instead of on
  // every call, and each word's merges take O(n log n) (bpe_word).
  bool encode_text_bounded(std::string_view raw, bool first, std::vector<int32_t> &out, size_t limit) const override {
    std::string text = table_.normalization() == format::Normalization::NFC ? utf8::nfc(raw) : std::string(raw);
    if (table_.add_prefix_space() && first && !text.empty() && text[0] != ' ') text.insert(text.begin(), ' ');
    Scratch scratch;
    if (!regex_) return bpe_word(text, out, scratch, limit);
    std::unique_ptr<pcre2_match_data, Pcre2DataFree> md(pcre2_match_data_create_from_pattern(regex_.get(), nullptr));
    if (!md) fail(PARLEY_ERROR_OUT_OF_MEMORY, "out of memory: cannot allocate the pre-tokenizer regex's match data");
    const auto *subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    // Encode() validated the text and NFC keeps it valid; a stretch cut by an
    // added token whose content is not whole code points is not, and then
    // PCRE2's own check (on the first call) reports it.
    const uint32_t utf_check = utf8::valid(text) ? PCRE2_NO_UTF_CHECK : 0;
    // Matches as tokenizers' Split(Isolated) finds them (onig's find_iter):
    // an empty match right where the previous match ended is skipped by
    // searching again one code point further; other empty matches are kept
    // but make no word. Every byte lands in exactly one word (a match or a
    // gap between matches), whatever the regex.
    size_t pos = 0, gap = 0, last_end = SIZE_MAX;
    auto word = [&](size_t from, size_t to) {
      return bpe_word(std::string_view(text).substr(from, to - from), out, scratch, limit);
    };
    while (pos <= text.size()) {
      ++work_units;
      PCRE2_SIZE s = 0, e = 0;
      if (!match(subject, text.size(), pos, utf_check, md.get(), &s, &e)) break;
      if (s == e && pos == last_end) {
        if (pos >= text.size()) break;
        size_t n = utf8::sequence_length(text, pos);
        pos += n ? n : 1;
        continue;
      }
      if (s > gap && !word(gap, s)) return false;  // Isolated: gaps are words too
      if (e > s && !word(s, e)) return false;
      gap = pos = last_end = e;
    }
    return gap >= text.size() || word(gap, text.size());
  }

  bool piece_bytes(int32_t id, std::string *out) const override {
    if (id < 0 || static_cast<size_t>(id) >= vocab_.size()) return false;
    const ByteMap &m = byte_map();
    const std::string &tok = vocab_[static_cast<size_t>(id)];
    out->clear();
    for (size_t i = 0; i < tok.size();) {
      auto it = m.to_byte.find(utf8::next(tok, i));
      if (it == m.to_byte.end()) {
        *out = tok;  // as decode_run: a token outside the byte alphabet passes through
        break;
      }
      *out += static_cast<char>(it->second);
    }
    return !out->empty();
  }

  std::string decode_run(const std::vector<int32_t> &ids, bool) const override {
    const ByteMap &m = byte_map();
    std::string bytes;
    for (int32_t id : ids) {
      if (static_cast<size_t>(id) >= vocab_.size()) continue;  // embedding rows past the tokenizer's vocabulary
      const std::string &tok = vocab_[static_cast<size_t>(id)];
      std::string mapped;
      bool ok = true;
      for (size_t i = 0; i < tok.size() && ok;) {
        auto it = m.to_byte.find(utf8::next(tok, i));
        if (it == m.to_byte.end())
          ok = false;
        else
          mapped += static_cast<char>(it->second);
      }
      bytes += ok ? mapped : tok;  // as tokenizers: a token outside the byte alphabet passes through
    }
    return utf8::lossy(bytes);
  }

 private:
  struct Merge {
    int32_t rank, id;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 | static_cast<uint32_t>(right);
  }
  const Merge *merge_of(int32_t left, int32_t right) const {
    ++work_units;
    auto it = merges_.find(pair_key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }

  // One symbol of a word being merged: a doubly linked list over a vector.
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // -1 at the ends
    bool gone;           // merged into its left neighbour
  };
  // A candidate merge of the symbol at `pos` with its right neighbour.
  struct Candidate {
    int32_t rank, pos, id;
    // std::*_heap keep the largest on top; lowest rank, then leftmost, wins.
    bool operator<(const Candidate &o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  // Buffers reused across the words of one call.
  struct Scratch {
    std::vector<Symbol> sym;
    std::vector<Candidate> heap;
    std::string mapped;
  };

  bool match(PCRE2_SPTR subject, size_t length, size_t pos, uint32_t utf_check, pcre2_match_data *md, PCRE2_SIZE *s,
             PCRE2_SIZE *e) const {
    int rc = pcre2_match(regex_.get(), subject, length, pos, utf_check, md, limits_.get());
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // the JIT's 32 KiB stack; the interpreter has the heap limit below
      rc = pcre2_match(regex_.get(), subject, length, pos, utf_check | PCRE2_NO_JIT, md, limits_.get());
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "the model's pre-tokenizer regex exceeded its match limits on this text");
    if (rc == PCRE2_ERROR_NOMEMORY) fail(PARLEY_ERROR_OUT_OF_MEMORY, "out of memory in the pre-tokenizer regex");
    if (rc < 0) fail(PARLEY_ERROR_INTERNAL, "pre-tokenizer regex failed with PCRE2 error " + std::to_string(rc));
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    if (ov[0] < pos || ov[0] > ov[1] || ov[1] > length)  // \K in a lookaround could report such a match
      fail(PARLEY_ERROR_INVALID_MODEL, "the model's pre-tokenizer regex reported a match that goes backwards");
    *s = ov[0];
    *e = ov[1];
    return true;
  }

  // Merges as tokenizers' Word::merge_all (models/bpe/word.rs): a heap of
  // candidate pairs ordered by (rank, position), entries made stale by an
  // earlier merge skipped when popped. Equal to repeatedly merging the
  // lowest-ranked adjacent pair, leftmost first, in O(n log n) instead of
  // O(n^2) for a word of n bytes. Tokenizers has no cap on word length (its
  // MAX_LENGTH only bounds the cache), so neither is there one here.
  // False (nothing appended) when the word cannot fit in `limit` ids: each
  // id covers at most raw_bytes_per_token_ bytes of it, so a word needs at
  // least (its bytes that are kept) / raw_bytes_per_token_ of them.
  bool bpe_word(std::string_view word, std::vector<int32_t> &out, Scratch &w, size_t limit) const {
    if (word.empty()) return true;
    if (limit != SIZE_MAX && raw_bytes_per_token_ > 0 && word.size() > raw_bytes_per_token_) {
      size_t kept = word.size();
      if (table_.unk_id() < 0)  // bytes outside the vocabulary are dropped
        for (unsigned char b : word) kept -= byte_id_[b] < 0;
      size_t at_least = (kept + raw_bytes_per_token_ - 1) / raw_bytes_per_token_;
      if (out.size() + at_least > limit) return false;
    }
    const ByteMap &m = byte_map();
    if (table_.ignore_merges() && word.size() <= longest_token_) {
      w.mapped.clear();
      for (unsigned char b : word) w.mapped += m.to_text[b];
      auto it = ids_.find(w.mapped);
      if (it != ids_.end()) {
        out.push_back(it->second);
        return out.size() <= limit;
      }
    }
    // A byte outside the vocabulary becomes the unknown token, or (no unknown
    // token) is dropped before merging, as tokenizers' merge_word does.
    w.sym.clear();
    for (unsigned char b : word) {
      int32_t id = byte_id_[b] >= 0 ? byte_id_[b] : table_.unk_id();
      if (id < 0) continue;
      auto at = static_cast<int32_t>(w.sym.size());
      w.sym.push_back({id, at - 1, at + 1, false});
    }
    if (w.sym.empty()) return true;
    w.sym.back().next = -1;
    w.heap.clear();
    for (size_t i = 0; i + 1 < w.sym.size(); ++i)
      if (const Merge *mg = merge_of(w.sym[i].id, w.sym[i + 1].id))
        w.heap.push_back({mg->rank, static_cast<int32_t>(i), mg->id});
    std::make_heap(w.heap.begin(), w.heap.end());
    auto push = [&](int32_t pos) {
      const Symbol &a = w.sym[static_cast<size_t>(pos)];
      if (a.next < 0) return;
      if (const Merge *mg = merge_of(a.id, w.sym[static_cast<size_t>(a.next)].id)) {
        w.heap.push_back({mg->rank, pos, mg->id});
        std::push_heap(w.heap.begin(), w.heap.end());
      }
    };
    while (!w.heap.empty()) {
      std::pop_heap(w.heap.begin(), w.heap.end());
      Candidate c = w.heap.back();
      w.heap.pop_back();
      Symbol &left = w.sym[static_cast<size_t>(c.pos)];
      if (left.gone || left.next < 0) continue;
      // Stale when either side has changed since: then the pair's merge (if
      // any) makes a longer token, so a different id.
      Symbol &right = w.sym[static_cast<size_t>(left.next)];
      const Merge *now = merge_of(left.id, right.id);
      if (!now || now->id != c.id) continue;
      left.id = c.id;
      right.gone = true;
      left.next = right.next;
      if (right.next >= 0) w.sym[static_cast<size_t>(right.next)].prev = c.pos;
      if (left.prev >= 0) push(left.prev);
      push(c.pos);
    }
    for (int32_t i = 0; i >= 0; i = w.sym[static_cast<size_t>(i)].next) out.push_back(w.sym[static_cast<size_t>(i)].id);
    return out.size() <= limit;
  }

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int32_t> ids_;
  std::array<int32_t, 256> byte_id_;  // vocabulary id of each byte's symbol, or -1
  size_t longest_token_ = 0;          // bytes of the longest vocabulary entry
  // Most text bytes one id can stand for (0: no bound known). A token's
  // string has at least one byte per text byte it covers (the byte-level
  // alphabet's characters are 1-2 bytes long, and merges concatenate), so
  // longest_token_ -- unless the unknown token, which covers one text byte,
  // has an empty string or none.
  size_t raw_bytes_per_token_ = 0;
  std::unordered_map<uint64_t, Merge> merges_;  // keyed by pair_key(left id, right id)
  std::unique_ptr<pcre2_code, Pcre2CodeFree> regex_;
  std::unique_ptr<pcre2_match_context, Pcre2ContextFree> limits_;
};

}  // namespace

uint64_t bpe_work_on_this_thread() {
  return work_units;
}

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const TokenizerView &view, uint32_t model_vocab) {
  return std::make_unique<BpeTokenizer>(view, model_vocab);
}

}  // namespace parley
