#include "engine/text_translation.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "core/escape.hpp"
#include "core/memory_scope.hpp"
#include "engine/generator.hpp"

namespace parley {

namespace {
int64_t decoder_start(const ModelFile &file) {
  return file.decoder_start_token_id();
}

// Head-averaged cross-attention of `tokens` (after the decoder prompt) over
// the source, by one teacher-forced pass.
std::vector<float> attention_of(const Transformer &model, const std::vector<int32_t> &source,
                                const std::vector<int32_t> &prompt, const std::vector<int32_t> &tokens, int64_t layer) {
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), tokens.begin(), tokens.end());
  // The last generated token is never fed during search; the attention of
  // token t is what the decoder saw when it produced token t (query at the
  // position before it).
  seq.pop_back();
  DecoderState st = model.start(1, static_cast<int64_t>(seq.size()), {source});
  st.record_cross_layer = layer;
  model.step(st, seq, static_cast<int64_t>(seq.size()));
  const int64_t heads = model.decoder_params().heads, n = static_cast<int64_t>(seq.size()), S = st.src_len;
  const int64_t skip = static_cast<int64_t>(prompt.size()) - 1;  // queries before the first generated token
  std::vector<float> out(tokens.size() * static_cast<size_t>(S), 0.f);
  for (int64_t t = 0; t < static_cast<int64_t>(tokens.size()); ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t s = 0; s < S; ++s)
        out[static_cast<size_t>(t * S + s)] +=
            st.cross_probs[static_cast<size_t>((h * n + skip + t) * S + s)] / static_cast<float>(heads);
  return out;
}

// The source ids of one text, or an Error whose message reads without the
// text's index (the caller adds it, or keeps it per text).
std::vector<int32_t> encode_source(const Tokenizer &src, const std::string &text, const std::string &language,
                                   int64_t max_positions) {
  if (text.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the text is empty");
  if (size_t nul = text.find('\0'); nul != std::string::npos)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "the text contains a NUL byte at byte offset " + std::to_string(nul));
  // Past the model's positions it cannot fit: stop tokenizing there.
  std::vector<int32_t> ids = src.encode(text, /*add_special=*/true, language,
                                        max_positions > 0 ? static_cast<size_t>(max_positions) : SIZE_MAX);
  if (max_positions > 0 && static_cast<int64_t>(ids.size()) > max_positions)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "the text is " + std::to_string(ids.size()) + " tokens, the model accepts " + std::to_string(max_positions));
  return ids;
}
}  // namespace

std::vector<TextTranslation> translate_text(const Transformer &model, const ModelFile &file, const TextModel &text,
                                            const std::vector<std::string> &inputs,
                                            const TextTranslationOptions &options) {
  MemoryScope memory_scope("the translation's tokens, hypotheses and text");
  if (!model.encoder_decoder())
    fail(PARLEY_ERROR_UNSUPPORTED, "translate needs an encoder-decoder model; this one is decoder-only (chat instead)");
  if (inputs.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the batch is empty");
  const Tokenizer &src = text.source();
  const Tokenizer &tgt = text.target();
  DecodingOptions dec = options.decoding;
  if (!options.target_language.empty()) {
    int32_t id = tgt.language_token(options.target_language);
    if (id < 0)
      fail(PARLEY_ERROR_NOT_FOUND, "unknown target language code " + quote_untrusted(options.target_language));
    dec.forced_bos_token_id = id;
  } else if (!tgt.languages().empty() && !dec.forced_bos_token_id) {
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "this multilingual model needs a target language (e.g. " +
                                            quote_untrusted(tgt.languages().front().first) + ")");
  }
  if (options.attention) {
    int64_t layers = model.decoder_params().layers;
    if (options.attention_layer < -1 || options.attention_layer >= layers)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "attention_layer " + std::to_string(options.attention_layer) +
                                              " is outside [-1, " + std::to_string(layers - 1) + "]");
  }

  const int64_t max_src = model.encoder_params().max_positions;
  std::vector<TextTranslation> out(inputs.size());
  std::vector<std::vector<int32_t>> sources;  // of the texts that pass, in order
  std::vector<size_t> kept;                   // their indices in `inputs`
  for (size_t i = 0; i < inputs.size(); ++i) {
    try {
      out[i].source_tokens = encode_source(src, inputs[i], options.source_language, max_src);
    } catch (const Error &e) {
      // Only the text's own faults stay with the text; an unknown language or a
      // file without tokenizer fails the call either way.
      if (!options.per_text_errors || e.status() != PARLEY_ERROR_INVALID_ARGUMENT)
        fail(e.status(), "text #" + std::to_string(i) + ": " + e.what());
      out[i].error = e.status();
      out[i].error_message = e.what();
      continue;
    }
    sources.push_back(out[i].source_tokens);
    kept.push_back(i);
  }
  if (kept.empty()) return out;  // every text failed on its own (per_text_errors)
  const std::vector<int32_t> prompt{static_cast<int32_t>(decoder_start(file))};
  const int64_t max_dec = model.decoder_params().max_positions;
  if (max_dec > 0) dec.max_new_tokens = std::min<int64_t>(dec.max_new_tokens, max_dec - 1);
  // Streaming partial texts (greedy/sampling: the hypotheses are final token by token).
  std::vector<std::vector<std::vector<int32_t>>> partial_tokens;
  std::vector<std::vector<std::string>> partial_sent;
  if (options.on_text && dec.num_beams == 1) {
    const size_t per_item = dec.do_sample ? static_cast<size_t>(dec.num_return_sequences) : 1;
    partial_tokens.assign(kept.size(), std::vector<std::vector<int32_t>>(per_item));
    partial_sent.assign(kept.size(), std::vector<std::string>(per_item));
    auto inner = dec.on_token;
    dec.on_token = [&, inner](int64_t b, int64_t s, int32_t token) {
      bool go = !inner || inner(b, s, token);
      const size_t k = static_cast<size_t>(b), j = static_cast<size_t>(s);
      std::vector<int32_t> &toks = partial_tokens[k][j];
      toks.push_back(token);
      std::string so_far = tgt.decode(toks, /*skip_special=*/true);
      // Lossy decoding shows an unfinished code point as U+FFFD until its last byte arrives: hold it back.
      while (so_far.size() >= 3 && so_far.compare(so_far.size() - 3, 3, "\xEF\xBF\xBD") == 0)
        so_far.resize(so_far.size() - 3);
      if (so_far != partial_sent[k][j]) {
        partial_sent[k][j] = so_far;
        if (!options.on_text(kept[k], j, so_far, false)) go = false;
      }
      return go;
    };
  }
  const std::vector<std::vector<int32_t>> prompts(sources.size(), prompt);
  auto hyps = options.engine ? translate(*options.engine, sources, prompts, dec, RunControl{dec.cancel, dec.deadline})
                             : translate(model, sources, prompts, dec);

  const int64_t layer = options.attention_layer < 0 ? model.decoder_params().layers - 1 : options.attention_layer;
  for (size_t k = 0; k < kept.size(); ++k) {
    const size_t i = kept[k];
    for (Hypothesis &h : hyps[k]) {
      TextHypothesis th;
      th.text = tgt.decode(h.tokens, /*skip_special=*/true);
      th.score = h.score;
      if (options.attention && !h.tokens.empty())
        th.attention = attention_of(model, out[i].source_tokens, prompt, h.tokens, layer);
      th.tokens = std::move(h.tokens);
      out[i].hypotheses.push_back(std::move(th));
    }
  }
  if (options.on_text)
    for (size_t k = 0; k < kept.size(); ++k)
      for (size_t j = 0; j < out[kept[k]].hypotheses.size(); ++j)
        (void)options.on_text(kept[k], j, out[kept[k]].hypotheses[j].text, true);
  return out;
}

}  // namespace parley
