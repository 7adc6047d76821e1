// Constrained decoding: the tokens a grammar admits next, as a mask over the
// vocabulary. The vocabulary's tokens are stored as the bytes they add to
// the output (byte-level BPE mapped back to bytes, SentencePiece "▁" as a
// space and <0xNN> byte-fallback pieces as that byte) in a byte trie; the
// mask walks the trie depth-first from the grammar state, advancing it one
// byte per edge and pruning a subtree as soon as no parse survives, so its
// cost is the number of trie nodes the grammar lets through (a JSON string's
// contents admit most of the vocabulary; a keyword, a few nodes). Tokens that
// end inside a UTF-8 sequence are admitted when some code point completing
// it is admitted. Control/special tokens never are; the EOS ids exactly when
// the output so far is a complete sentence.
//
// Thread-safety: TokenVocabulary and Constraint are immutable and shared;
// a ConstraintState belongs to one row.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/grammar.hpp"

namespace parley {

class TokenVocabulary {
 public:
  // bytes[i]: what token i adds to the output; text[i] == 0 for tokens that
  // are not text (control tokens, ids past the tokenizer's vocabulary).
  TokenVocabulary(std::vector<std::string> bytes, std::vector<char> text);
  int64_t size() const { return static_cast<int64_t>(bytes_.size()); }
  const std::string &bytes(int32_t id) const { return bytes_[static_cast<size_t>(id)]; }
  bool is_text(int32_t id) const { return text_[static_cast<size_t>(id)] != 0; }

  struct Node {
    uint32_t edges_begin, edges_end;    // children: edges_[begin, end), sorted by byte
    uint32_t tokens_begin, tokens_end;  // tokens ending here: token_ids_[begin, end)
  };
  const std::vector<Node> &nodes() const { return nodes_; }
  const std::vector<std::pair<uint8_t, uint32_t>> &edges() const { return edges_; }
  const std::vector<int32_t> &token_ids() const { return token_ids_; }

 private:
  std::vector<std::string> bytes_;
  std::vector<char> text_;
  std::vector<Node> nodes_;  // [0] is the root
  std::vector<std::pair<uint8_t, uint32_t>> edges_;
  std::vector<int32_t> token_ids_;
};

// A grammar bound to a vocabulary and the EOS ids of a request.
struct Constraint {
  std::shared_ptr<const Grammar> grammar;
  std::shared_ptr<const TokenVocabulary> vocab;
  std::string what;  // "grammar" or "JSON schema", for messages
  // The output of `tokens` (generated ids; EOS ids and non-text tokens add nothing).
  std::string text_of(const std::vector<int32_t> &tokens) const;
};

// Hypothesis::constraint values.
enum class ConstraintStatus : int8_t {
  kNone = 0,        // no constraint
  kComplete = 1,    // the output is a complete sentence of the grammar
  kIncomplete = 2,  // it stopped before (max_new_tokens, a stop string, a callback, no admissible token)
};

class ConstraintState {
 public:
  explicit ConstraintState(std::shared_ptr<const Constraint> c);
  // Sets scores[t] = -inf for every token t the grammar does not admit
  // now (EOS ids admitted iff complete()). Returns the number admitted.
  int64_t mask(float *scores, const std::vector<int32_t> &eos_ids);
  // Feeds a chosen token; false when the grammar rejects it (the state is
  // then unchanged). EOS ids are accepted when complete().
  bool accept(int32_t token, const std::vector<int32_t> &eos_ids);
  bool complete() const;
  // Nothing but the end can follow.
  bool finished() const;
  // Marks the output as having left the grammar (never complete again).
  void reject() { current_ = -1; }

 private:
  // Grammar states met so far, interned, with the transitions between them
  // and the tokens each admits: the trie walk from a state is done once,
  // later steps in the same state (inside a JSON string, after each
  // character) reuse it. Copies of a state (beams of one request) share the
  // cache; it is not locked, so they must be used by one thread at a time.
  struct Cache;
  int32_t transition(int32_t from, uint8_t byte);
  void walk(uint32_t node, int32_t state, std::vector<int32_t> &admitted);
  std::shared_ptr<const Constraint> c_;
  std::shared_ptr<Cache> cache_;
  int32_t current_ = -1;
};

}  // namespace parley
