#include "text/text_model.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace parley {

std::unique_ptr<TextModel> build_text_model(const ModelFile &file) {
  auto text = std::make_unique<TextModel>();
  for (size_t i = 0; i < file.tokenizers().size(); ++i) {
    const TokenizerView &view = file.tokenizers()[i];
    std::unique_ptr<Tokenizer> *slot = view.role == PARLEY_TOKENIZER_SOURCE   ? &text->source_only
                                       : view.role == PARLEY_TOKENIZER_TARGET ? &text->target_only
                                                                              : &text->shared;
    if (*slot) fail(PARLEY_ERROR_INVALID_MODEL, "tokenizer #" + std::to_string(i) + " repeats a role");
    try {
      // A target tokenizer's ids are decoder ids (format 1.3 may separate the vocabularies).
      *slot = Tokenizer::create(view, view.role == PARLEY_TOKENIZER_TARGET ? file.target_vocab_size()
                                      : view.role == PARLEY_TOKENIZER_SOURCE
                                          ? file.vocab_size()
                                          : std::min(file.vocab_size(), file.target_vocab_size()));
    } catch (const Error &e) {
      fail(e.status(), "tokenizer #" + std::to_string(i) + ": " + e.what());
    }
  }
  if (!text->shared && !(text->source_only && text->target_only)) {
    if (text->source_only || text->target_only)
      fail(PARLEY_ERROR_INVALID_MODEL, "the model file has a source or a target tokenizer but not both");
    fail(PARLEY_ERROR_UNSUPPORTED,
         "the model file has no tokenizer (convert it with its tokenizer files, or use the token-level API)");
  }
  if (const format::ChatFormat *c = file.header().chat_format()) text->chat.emplace(*c);
  return text;
}

}  // namespace parley
