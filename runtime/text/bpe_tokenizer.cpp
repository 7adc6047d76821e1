// Byte-level BPE (GPT-2, BART, Llama-3, Qwen2/3) as Hugging Face tokenizers
// runs it: optional NFC normalizer, Split(pre_tokenizer_regex, Isolated),
// ByteLevel (bytes mapped to printable code points, GPT-2's
// bytes_to_unicode), BPE merges by rank, ByteLevel decoder with lossy UTF-8.
// Reference: tokenizers 0.23 pre_tokenizers/byte_level.rs, models/bpe/model.rs.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

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
  static const ByteMap m;
  return m;
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
        fail(PARLEY_ERROR_INVALID_MODEL, "BPE merge #" + std::to_string(rank) + " makes " + quote_untrusted(merged) +
                                             ", which is not in the vocabulary");
      merges_.emplace(std::string(line), Merge{rank++, it->second});
    }
    if (const flatbuffers::String *re = table_.pre_tokenizer_regex()) {
      int err = 0;
      PCRE2_SIZE off = 0;
      regex_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(re->c_str()), re->size(), PCRE2_UTF | PCRE2_UCP, &err,
                                 &off, nullptr));
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
    }
  }

 protected:
  int32_t vocab_id(std::string_view token) const override {
    auto it = ids_.find(std::string(token));
    return it == ids_.end() ? -1 : it->second;
  }

  void encode_text(std::string_view raw, bool first, std::vector<int32_t> &out) const override {
    std::string text = table_.normalization() == format::Normalization::NFC ? utf8::nfc(raw) : std::string(raw);
    if (table_.add_prefix_space() && first && !text.empty() && text[0] != ' ') text.insert(text.begin(), ' ');
    if (!regex_) {
      bpe_word(text, out);
      return;
    }
    std::unique_ptr<pcre2_match_data, Pcre2DataFree> md(pcre2_match_data_create_from_pattern(regex_.get(), nullptr));
    if (!md) fail(PARLEY_ERROR_OUT_OF_MEMORY, "out of memory: cannot allocate the pre-tokenizer regex's match data");
    const auto *subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t pos = 0, gap = 0;
    while (pos <= text.size()) {
      int rc = pcre2_match(regex_.get(), subject, text.size(), pos, 0, md.get(), limits_.get());
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT)
        fail(PARLEY_ERROR_INVALID_ARGUMENT, "the model's pre-tokenizer regex exceeded its match limits on this text");
      if (rc == PCRE2_ERROR_NOMEMORY) fail(PARLEY_ERROR_OUT_OF_MEMORY, "out of memory in the pre-tokenizer regex");
      if (rc < 0) fail(PARLEY_ERROR_INTERNAL, "pre-tokenizer regex failed with PCRE2 error " + std::to_string(rc));
      PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md.get());
      size_t s = ov[0], e = ov[1];
      if (s > gap) bpe_word(std::string_view(text).substr(gap, s - gap), out);  // Isolated: gaps are words too
      if (e > s) {
        bpe_word(std::string_view(text).substr(s, e - s), out);
        pos = gap = e;
      } else {  // empty match: step one code point
        if (s >= text.size()) break;
        size_t n = utf8::sequence_length(text, s);
        pos = s + (n ? n : 1);
      }
    }
    if (gap < text.size()) bpe_word(std::string_view(text).substr(gap), out);
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

  void bpe_word(std::string_view word, std::vector<int32_t> &out) const {
    if (word.empty()) return;
    const ByteMap &m = byte_map();
    std::string mapped;
    for (unsigned char b : word) mapped += m.to_text[b];
    if (table_.ignore_merges()) {
      auto it = ids_.find(mapped);
      if (it != ids_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    std::vector<std::string> sym;
    for (size_t i = 0; i < mapped.size();) {
      size_t s = i;
      utf8::next(mapped, i);
      sym.emplace_back(mapped, s, i - s);
    }
    // Repeatedly merge the adjacent pair of lowest rank (models/bpe/word.rs).
    std::string key;
    while (sym.size() > 1) {
      int32_t best = INT32_MAX;
      size_t at = 0;
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        key.assign(sym[i]).append(" ").append(sym[i + 1]);
        auto it = merges_.find(key);
        if (it != merges_.end() && it->second.rank < best) {
          best = it->second.rank;
          at = i;
        }
      }
      if (best == INT32_MAX) break;
      sym[at] += sym[at + 1];
      sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(at) + 1);
    }
    for (const std::string &s : sym) {
      auto it = ids_.find(s);
      if (it != ids_.end())
        out.push_back(it->second);
      else if (table_.unk_id() >= 0)
        out.push_back(table_.unk_id());
      // else: tokenizers drops a symbol it cannot map (no unk token)
    }
  }

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int32_t> ids_;
  std::unordered_map<std::string, Merge> merges_;
  std::unique_ptr<pcre2_code, Pcre2CodeFree> regex_;
  std::unique_ptr<pcre2_match_context, Pcre2ContextFree> limits_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const TokenizerView &view, uint32_t model_vocab) {
  return std::make_unique<BpeTokenizer>(view, model_vocab);
}

}  // namespace parley
