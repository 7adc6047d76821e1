// The SentencePiece ModelProto stored in a model file, read and checked
// before libsentencepiece sees it. The library trusts its input: a
// precompiled_charsmap trie whose nodes point outside the trie, a leaf value
// past the normalized strings or a string without its NUL make it read out
// of bounds on ordinary text; a piece with a NUL byte becomes a zero-length
// key that darts-clone throws on; more than 32 (normalizer) or 64
// (user-defined symbols) nested matches overflow fixed result arrays; an
// unknown model_type leaves it a null model; text matching a CONTROL piece
// fails Encode in WORD, CHAR (and, for one character, BPE) models. What is
// checked, so that a model that passes cannot make the library misbehave, is
// listed at check_model_proto.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace parley::sentencepiece_proto {

// NormalizerSpec fields the tokenizer reads or overrides.
constexpr uint32_t kAddDummyPrefix = 3, kRemoveExtraWhitespaces = 4;

// What the tokenizer needs from a checked proto.
struct Summary {
  size_t num_pieces = 0;
  bool add_dummy_prefix = true;          // NormalizerSpec defaults (proto2)
  bool remove_extra_whitespaces = true;  //
};

// Parses a serialized ModelProto with protobuf's rules (a later scalar wins,
// repeated occurrences of a message field merge) and checks:
// - the wire format: tags, varints, lengths inside their message; wire types
//   of the fields read here as the schema declares them;
// - pieces: at least one; each 1..kMaxPieceBytes bytes of valid UTF-8 with
//   no NUL, unique, a type the schema defines, a finite score; exactly one
//   UNKNOWN piece; BYTE pieces only with byte_fallback, spelled "<0xXX>", all
//   256 of them with byte_fallback; at most 64 USER_DEFINED pieces that are
//   prefixes of one another;
// - trainer_spec: model_type UNIGRAM or BPE (WORD and CHAR: UNSUPPORTED),
//   for BPE no one-character CONTROL piece; unk_id a piece,
//   bos_id/eos_id/pad_id a piece or -1, the ones set distinct;
// - normalizer_spec and denormalizer_spec: check_charsmap.
// Throws Error(INVALID_MODEL) naming the field or piece, or UNSUPPORTED.
Summary check_model_proto(std::string_view proto);

// Checks a precompiled_charsmap: <uint32 LE trie size><darts-clone double
// array><NUL-terminated normalized strings>. The trie size must be a
// non-zero multiple of 4 inside the blob; every node reachable from the root
// (any byte may follow any node) must have its whole 256-unit block of
// children inside the trie; the trie must be acyclic with at most 32 leaves
// on any path (libsentencepiece's result array); each reachable leaf value
// must point to a NUL-terminated string of valid UTF-8 inside the normalized
// strings. An empty blob means no charsmap. `field` names the blob in
// messages. Throws Error(INVALID_MODEL).
void check_charsmap(std::string_view blob, const std::string &field);

// The proto to hand to libsentencepiece: self_test_data dropped (the library
// would run every sample through Encode at load and log the failing ones,
// raw file bytes, to stderr) and the given NormalizerSpec bools overridden by
// one normalizer_spec appended at the end (protobuf merges it in last, so it
// wins over every earlier occurrence). `proto` must have passed
// check_model_proto.
std::string for_library(std::string_view proto, const std::vector<std::pair<uint32_t, bool>> &normalizer_flags);

// "<0x41>" -> 0x41 as ModelInterface's PieceToByte reads it (upper case);
// -1 if `piece` is not a byte piece.
int byte_of(std::string_view piece);

// Longest piece accepted, in bytes. SentencePiece's trainer keeps pieces to
// 16 characters by default; user-defined symbols are longer but not
// kilobytes, and the BPE model resegments unused pieces recursively (one
// stack frame per character).
constexpr size_t kMaxPieceBytes = 1024;

}  // namespace parley::sentencepiece_proto
