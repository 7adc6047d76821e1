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
//
// Protection (text/protect.hpp): spans are masked before tokenizing and put
// back verbatim after decoding; source_tokens then are the masked text's.
// Long texts: a text over the source limit (the encoder's positions, or
// max_source_tokens) is split into sentences (text/sentence_split.hpp), a
// sentence still over it at the whitespace nearest its middle; all pieces of
// all texts run as one batch (or batches of at most max_batch_tokens padded
// source tokens) and are joined with the original whitespace between them.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/decoding.hpp"
#include "format/model_file.hpp"
#include "model/transformer.hpp"
#include "text/protect.hpp"
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
  // Streaming, per hypothesis: (index in `inputs`, hypothesis, its text so
  // far, final). Greedy/sampling: called after each generated token with the
  // hypothesis' whole text so far (an unfinished UTF-8 sequence held back;
  // the same text is not sent twice), then once with final = true and the
  // hypothesis' final text; beam search: only the final texts, best first.
  // Returning false during a greedy/sampling stream finishes that
  // hypothesis there (its final call still comes). May be empty.
  std::function<bool(size_t text, size_t hypothesis, std::string_view text_so_far, bool final)> on_text;
  // Spans to protect (null: none).
  std::shared_ptr<const ProtectRules> protect;
  // Long texts: 0 = refuse a text over the limit (as before), 1 = split such
  // a text into sentences, 2 = always translate sentence by sentence.
  int32_t long_text = 0;
  size_t max_source_tokens = 0;  // 0: the encoder's positions; else the smaller of the two
  size_t max_batch_tokens = 0;   // 0: one batch; else rows x longest source per batch at most this
  // When set, the texts run through the model's serving engine (batched with
  // other requests); else on a contiguous KV cache of their own.
  Engine *engine = nullptr;
};

struct TextHypothesis {
  std::string text;
  float score = 0.0f;
  std::vector<int32_t> tokens;                 // generated ids (EOS included when reached)
  std::vector<float> attention;                // [tokens.size(), source_tokens.size()] when requested
  std::vector<ProtectedSpan> protected_spans;  // in source order
  // decoding.return_logprobs / num_alternatives: per token of `tokens`
  // (Hypothesis' semantics; a split text's pieces in order).
  std::vector<float> logprobs;
  int64_t alternatives = 0;
  std::vector<int32_t> alternative_ids;
  std::vector<float> alternative_logprobs;
  // It (or a piece of a split text) used up max_new_tokens, or the
  // decoder's positions: the translation may be cut short.
  bool cut_by_length = false;
};

struct TextTranslation {
  std::vector<int32_t> source_tokens;
  std::vector<TextHypothesis> hypotheses;  // best first
  parley_status error = PARLEY_OK;         // per_text_errors: why this text has no hypotheses
  std::string error_message;               // ... without the text's index ("" when error is PARLEY_OK)
  size_t segments = 1;                     // pieces translated (> 1: split; attention is then per piece, not kept)
};

std::vector<TextTranslation> translate_text(const Transformer &model, const ModelFile &file, const TextModel &text,
                                            const std::vector<std::string> &inputs,
                                            const TextTranslationOptions &options);

}  // namespace parley
