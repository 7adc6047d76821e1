// Tokenizers stored in the model file, run in-process. The base class does
// what every Hugging Face tokenizer does around its model: added tokens are
// matched verbatim in the text first and never split (AddedVocabulary), the
// stretches between them go to the model (byte-level BPE or SentencePiece),
// except that special-token strings ("</s>", "<|eot_id|>") written in text
// are text unless the caller trusts it (HF's split_special_tokens=True: a
// customer must not be able to close a chat turn by typing its marker),
// and add_special_tokens wraps the ids in the file's prefix/suffix template
// (with "{lang}" bound to the chosen language). Decoding groups the ids of
// ordinary tokens and hands each run to the model's decoder.
//
// Thread-safety: immutable after construction; encode/decode are const and
// may be called from many threads.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "format/model_file.hpp"
#include "parley_generated.h"

namespace parley {

class Tokenizer {
 public:
  // Builds the tokenizer a view describes; throws Error(INVALID_MODEL)
  // naming what in the file is inconsistent.
  static std::unique_ptr<Tokenizer> create(const TokenizerView &view, uint32_t model_vocab);
  virtual ~Tokenizer() = default;

  // Text (valid UTF-8; checked, INVALID_ARGUMENT naming the byte offset) to
  // ids. With add_special, the prefix/suffix template is applied; `lang`
  // selects the language token for "{lang}" (NOT_FOUND for an unknown code,
  // INVALID_ARGUMENT when the template needs one and none is given).
  // With max_tokens, a text that makes more ids fails with INVALID_ARGUMENT
  // ("text is too long: more than N tokens ...") as soon as that is certain, before the
  // rest of it is tokenized (a context-length check that costs what fits).
  // Special-token strings in the text become their ids only with
  // parse_special (trusted text); otherwise they are split like any other
  // text, as transformers does with split_special_tokens=True: tokenizers'
  // AddedVocabulary then skips special added tokens but still matches the
  // non-special ones (Qwen's "<tool_call>"), the slow SentencePiece classes
  // (Marian, M2M100), whose added tokens are all special, match none.
  std::vector<int32_t> encode(std::string_view text, bool add_special, std::string_view lang = {},
                              size_t max_tokens = SIZE_MAX, bool parse_special = false) const;

  // A rendered chat prompt (no prefix/suffix template): special-token
  // strings are control tokens except where they touch one of the byte
  // ranges `text_ranges` ([begin, end), sorted, disjoint: the messages'
  // content), where they are text. The stretches between control tokens are
  // encoded whole, so a conversation without such strings in its messages
  // gives exactly the ids of encode(prompt, false, {}, SIZE_MAX, true), i.e. of
  // apply_chat_template(tokenize=True). max_tokens as for encode.
  std::vector<int32_t> encode_prompt(std::string_view prompt, const std::vector<std::pair<size_t, size_t>> &text_ranges,
                                     size_t max_tokens = SIZE_MAX) const;

  // Ids to UTF-8 text (invalid byte sequences become U+FFFD). Ids outside
  // the vocabulary: INVALID_ARGUMENT.
  std::string decode(const std::vector<int32_t> &ids, bool skip_special) const;

  // What each id of the model's vocabulary adds to the output as raw bytes
  // (constrained decoding matches these): byte-level BPE tokens mapped back
  // to bytes, SentencePiece pieces with "▁" as a space and <0xNN> pieces
  // as that byte, non-special added tokens as their content. text[i] is 0
  // for ids that are not text: special tokens, the unknown token, ids past
  // the tokenizer's vocabulary.
  void token_bytes(std::vector<std::string> *bytes, std::vector<char> *text) const;

  // Token id of a language code, or -1.
  int32_t language_token(std::string_view code) const;
  const std::vector<std::pair<std::string, int32_t>> &languages() const { return languages_; }
  // For messages: "its codes are 'de', 'en', ... (N in all)", or "it has no language codes".
  std::string describe_languages() const;
  bool needs_language() const { return needs_lang_; }
  // Id of a token written as text (added token or vocabulary entry), or -1.
  int32_t token_id(std::string_view token) const;
  bool is_special(int32_t id) const;

 protected:
  explicit Tokenizer(const TokenizerView &view, uint32_t model_vocab);
  // Second construction phase, after the subclass can answer token_id.
  void bind_template();
  // Ids of a stretch of text with no added token in it; `first` when it
  // starts the input (SentencePiece's dummy prefix, GPT-2's prefix space).
  virtual void encode_text(std::string_view text, bool first, std::vector<int32_t> &out) const = 0;
  // As encode_text, but false as soon as `out` is certain to end up with
  // more than `limit` ids; `out` then holds only part of the text's ids.
  virtual bool encode_text_bounded(std::string_view text, bool first, std::vector<int32_t> &out, size_t limit) const {
    encode_text(text, first, out);
    return out.size() <= limit;
  }
  // Text of a run of ordinary (not added) token ids; `first` when the run
  // starts the output.
  virtual std::string decode_run(const std::vector<int32_t> &ids, bool first) const = 0;
  virtual int32_t vocab_id(std::string_view token) const = 0;
  // token_bytes() for an ordinary (not added) id; false when it is not text.
  virtual bool piece_bytes(int32_t id, std::string *out) const = 0;

  const format::Tokenizer &table_;
  uint32_t model_vocab_;

 private:
  struct Added {
    std::string content;
    int32_t id;
    bool special, lstrip, rstrip;
  };
  struct Piece {
    bool added;
    int32_t id;  // added token id
    std::string_view text;
  };
  // `parse_special`: special tokens may match anywhere except where they
  // touch `text_ranges`; without it nowhere. Non-special ones match anywhere.
  std::vector<Piece> split_added(std::string_view text, bool parse_special,
                                 const std::vector<std::pair<size_t, size_t>> &text_ranges) const;
  std::vector<int32_t> encode_split(std::string_view text, bool add_special, std::string_view lang,
                                    const std::vector<Piece> &pieces, size_t max_tokens) const;

  std::vector<Added> added_;  // longest first
  // The added tokens' contents as a byte trie: matching at a position walks
  // it once (cost: the longest match), whatever the number of added tokens
  // (Llama-3 has 256 that all start with "<|").
  struct TrieNode {
    std::vector<std::pair<unsigned char, uint32_t>> next;  // byte -> node
    int32_t added = -1;                                    // index into added_ of the token ending here
  };
  std::vector<TrieNode> trie_;                       // [0]: the root (its children are in root_next_)
  std::array<uint32_t, 256> root_next_{};            // first byte -> node, 0 = none
  bool has_nonspecial_ = false;                      // any added token matched in untrusted text
  std::unordered_map<int32_t, size_t> added_by_id_;  // index into added_
  std::unordered_map<std::string, int32_t> added_by_text_;
  std::vector<std::pair<std::string, int32_t>> languages_;
  std::vector<int32_t> prefix_, suffix_;  // -2 = the language token
  bool needs_lang_ = false;
  bool clean_up_ = false;
};

}  // namespace parley
