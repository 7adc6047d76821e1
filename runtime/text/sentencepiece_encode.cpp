#include "text/sentencepiece_encode.hpp"

#include <sentencepiece_processor.h>

#include <memory>
#include <new>

#include "core/error.hpp"

namespace parley {

namespace {
thread_local size_t t_longest_call = 0;
}

size_t sentencepiece_longest_call_on_this_thread(bool reset) {
  const size_t n = t_longest_call;
  if (reset) t_longest_call = 0;
  return n;
}

std::vector<std::string> encode_pieces(const sentencepiece::SentencePieceProcessor &sp, std::string_view text) {
  if (text.size() > t_longest_call) t_longest_call = text.size();
  auto result = std::make_unique<sentencepiece::ImmutableSentencePieceText>();
  sentencepiece::util::Status status;
  try {
    status = sp.Encode(text, result->mutable_proto());
  } catch (const std::bad_alloc &) {
    // libsentencepiece writes the message only after normalising and
    // segmenting (PopulateSentencePieceText, which starts with the text): a
    // failure before that leaves it empty and safe to destroy.
    if (result->text().empty() && result->pieces_size() == 0)
      fail(PARLEY_ERROR_OUT_OF_MEMORY, "out of memory in SentencePiece encoding");
    (void)result.release();  // maybe half-built by protobuf: destroying it could abort (see the header)
    fail(PARLEY_ERROR_OUT_OF_MEMORY,
         "out of memory in SentencePiece encoding (libsentencepiece's half-built result cannot be freed safely and "
         "is kept)");
  } catch (const std::exception &e) {
    // The proto was validated at load (text/sentencepiece_proto.hpp); anything
    // the library still throws is our bug, not the caller's input.
    fail(PARLEY_ERROR_INTERNAL, std::string("SentencePiece encode failed: ") + e.what());
  }
  if (!status.ok()) fail(PARLEY_ERROR_INTERNAL, "SentencePiece encode failed: " + status.ToString());
  std::vector<std::string> pieces;
  const size_t n = result->pieces_size();
  pieces.reserve(n);
  for (size_t i = 0; i < n; ++i) pieces.push_back(result->pieces(static_cast<int>(i)).piece());
  return pieces;
}

}  // namespace parley
