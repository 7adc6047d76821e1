// UTF-8 helpers for the text layer: validation with the offending byte
// offset, the longest prefix that ends on a code point boundary (streaming
// never splits a code point), lossy decoding, and Unicode NFC.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace parley::utf8 {

// Length of the well-formed sequence starting at s[i] (1-4), or 0 if the
// bytes there are not a complete, well-formed UTF-8 sequence (RFC 3629:
// no overlongs, no surrogates, nothing past U+10FFFF).
size_t sequence_length(std::string_view s, size_t i);

// True when `s` is well-formed UTF-8; otherwise *bad_offset (if given) is
// the offset of the first byte that is not.
bool valid(std::string_view s, size_t *bad_offset = nullptr);

// Length of the longest prefix of `s` that does not end inside an
// incomplete (but possibly still completable) sequence. Invalid bytes count
// as complete: they are emitted (as U+FFFD by lossy()) rather than held.
size_t complete_prefix(std::string_view s);

// `s` with each maximal invalid subsequence replaced by U+FFFD, as Rust's
// String::from_utf8_lossy (used by Hugging Face tokenizers' decoders) does.
std::string lossy(std::string_view s);

// Unicode Normalization Form C (utf8proc). `s` must be valid UTF-8.
std::string nfc(std::string_view s);

// Appends the UTF-8 encoding of code point `cp`.
void append(std::string &out, uint32_t cp);

// Decodes the code point at s[i] (well-formed input), advancing i.
uint32_t next(std::string_view s, size_t &i);

}  // namespace parley::utf8
