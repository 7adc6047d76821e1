// Translation of UTF-8 text: tokenize with the model's source tokenizer
// (language token per the file's template), decode with beam search from
// the decoder start token (forcing the target language token when the model
// is multilingual, as transformers' forced_bos_token_id does), detokenize
// with the target tokenizer. Optionally returns, per hypothesis, the
// head-averaged cross-attention of one decoder layer, recomputed by one
// teacher-forced pass over the final tokens (the attention a token saw is
// the same as during search: it depends only on its prefix).
//
// Each input is checked before any decoding: not empty, no NUL byte (text
// can arrive with an explicit length; a NUL is refused, never a terminator),
// valid UTF-8 (the tokenizer), at most the encoder's positions in tokens.
#pragma once

#include <string>
#include <vector>

#include "engine/decoding.hpp"
#include "format/model_file.hpp"
#include "model/transformer.hpp"
#include "text/text_model.hpp"

namespace parley {

class Engine;

struct TextTranslationOptions {
  DecodingOptions decoding;
  std::string source_language, target_language;  // empty: none
  bool attention = false;
  int64_t attention_layer = -1;  // -1: the last decoder layer
  // false: a text that cannot be translated fails the whole call ("text #i: ...",
  // i = its index in `inputs`); true: only that text fails (TextTranslation::error).
  bool per_text_errors = false;
  // When set, the texts run through the model's serving engine (batched with
  // other requests); else on a contiguous KV cache of their own.
  Engine *engine = nullptr;
};

struct TextHypothesis {
  std::string text;
  float score = 0.0f;
  std::vector<int32_t> tokens;   // generated ids (EOS included when reached)
  std::vector<float> attention;  // [tokens.size(), source_tokens.size()] when requested
};

struct TextTranslation {
  std::vector<int32_t> source_tokens;
  std::vector<TextHypothesis> hypotheses;  // best first
  parley_status error = PARLEY_OK;         // per_text_errors: why this text has no hypotheses
  std::string error_message;               // ... without the text's index ("" when error is PARLEY_OK)
};

std::vector<TextTranslation> translate_text(const Transformer &model, const ModelFile &file, const TextModel &text,
                                            const std::vector<std::string> &inputs,
                                            const TextTranslationOptions &options);

}  // namespace parley
