// The text side of a model file: its tokenizers (one shared, or a source and
// a target one for translation models) and its chat format. Built on first
// use of a text API so that token-level users pay nothing.
#pragma once

#include <memory>
#include <optional>

#include "format/model_file.hpp"
#include "text/chat_format.hpp"
#include "text/chat_template.hpp"
#include "text/tokenizer.hpp"

namespace parley {

struct TextModel {
  std::unique_ptr<Tokenizer> shared, source_only, target_only;
  std::optional<ChatFormat> chat;
  // The model's Jinja chat template, when the file has one and it parses
  // (else chat_template_error says why): renders what `chat` cannot.
  std::unique_ptr<ChatTemplate> chat_template;
  std::string chat_template_error;

  // Encodes the input text (translation source, or a dialogue prompt).
  const Tokenizer &source() const { return source_only ? *source_only : *shared; }
  // Decodes output ids (and encodes a translation's target prefix).
  const Tokenizer &target() const { return target_only ? *target_only : *shared; }
};

// Throws Error: UNSUPPORTED when the file has no tokenizer, INVALID_MODEL
// when its tokenizers are inconsistent.
std::unique_ptr<TextModel> build_text_model(const ModelFile &file);

}  // namespace parley
