// libsentencepiece's Encode under memory pressure. It builds a protobuf
// SentencePieceText, and protobuf is not exception-safe: when allocating a
// piece fails, RepeatedPtrField::Add has already counted the new slot, so
// destroying the half-built message deletes an uninitialised pointer
// (libprotobuf FATAL "CHECK failed: GetArena() == nullptr", std::terminate).
// encode_pieces() lets libsentencepiece fill a message that this file owns;
// when the encode throws, that message is kept alive (never destroyed) and
// the call fails with OUT_OF_MEMORY saying so: the process loses the bytes
// of one half-built result instead of its life.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace parley {

// The pieces of `text`. Throws Error: OUT_OF_MEMORY (see above), INTERNAL
// when libsentencepiece reports a failure.
std::vector<std::string> encode_pieces(const sentencepiece::SentencePieceProcessor &sp, std::string_view text);

// The longest text one encode_pieces call on this thread gave the library
// since the last reset: libsentencepiece's cost grows with the square of an
// unknown-character run inside one call, so the tests check that a long
// text is encoded in parts.
size_t sentencepiece_longest_call_on_this_thread(bool reset = false);

}  // namespace parley
