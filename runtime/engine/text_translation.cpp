#include "engine/text_translation.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>

#include "core/error.hpp"
#include "core/escape.hpp"
#include "core/memory_scope.hpp"
#include "engine/generator.hpp"
#include "text/sentence_split.hpp"
#include "text/utf8.hpp"

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

// Checks of a text itself; messages read without the text's index (the
// caller adds it, or keeps it per text).
void check_text(const std::string &text) {
  if (text.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the text is empty");
  if (size_t nul = text.find('\0'); nul != std::string::npos)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "the text contains a NUL byte at byte offset " + std::to_string(nul));
  size_t bad = 0;
  if (!utf8::valid(text, &bad))
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "text is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
}

// One piece of a text that runs through the model: a byte range of the
// text with its protected spans masked.
struct Piece {
  size_t text = 0;            // index in the inputs
  size_t begin = 0, end = 0;  // in the text
  MaskedText masked;
  std::vector<size_t> spans;  // the text's spans inside [begin, end), in placeholder order
  std::vector<int32_t> ids;   // source ids of masked.text
};

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

class Splitter {
 public:
  Splitter(const Tokenizer &src, const std::string &language, size_t limit, int32_t long_text)
      : src_(src), language_(language), limit_(limit), long_text_(long_text) {
    // ICU locale from a language code: "de", "deu_Latn" -> "deu", "en_XX" -> "en".
    locale_ = language.substr(0, language.find_first_of("_-"));
  }

  // The pieces of text `index`; throws Error (without the index) when the
  // text cannot be translated.
  std::vector<Piece> pieces(const std::string &text, size_t index, const std::vector<SpanMatch> &spans) const {
    std::vector<Piece> out;
    if (long_text_ != 2) {
      Piece whole = make(text, index, spans, 0, text.size());
      if (!whole.ids.empty() || limit_ == 0) {
        out.push_back(std::move(whole));
        return out;
      }
      if (long_text_ == 0) {
        try {
          encode(whole.masked.text, limit_);  // fails with the tokenizer's "too long" message
        } catch (const Error &e) {
          if (e.status() != PARLEY_ERROR_INVALID_ARGUMENT) throw;
          fail(e.status(), std::string(e.what()) +
                               "; the long_text option \"split\" (PARLEY_LONG_TEXT_SPLIT) translates such a text "
                               "sentence by sentence");
        }
        fail(PARLEY_ERROR_INTERNAL, "a text over the limit was not refused");
      }
    }
    std::vector<std::pair<size_t, size_t>> keep;
    for (const SpanMatch &m : spans) keep.emplace_back(m.offset, m.offset + m.length);
    for (const auto &[b, e] : split_sentences(text, locale_, keep)) add(text, index, spans, b, e, out);
    return out;
  }

 private:
  // Source ids, or empty when the text is over `limit` tokens.
  std::vector<int32_t> encode(const std::string &masked, size_t limit) const {
    return src_.encode(masked, /*add_special=*/true, language_, limit ? limit : SIZE_MAX);
  }
  std::vector<int32_t> encode_bounded(const std::string &masked) const {
    try {
      return encode(masked, limit_);
    } catch (const Error &e) {
      if (limit_ && e.status() == PARLEY_ERROR_INVALID_ARGUMENT &&
          std::string_view(e.what()).rfind("the text is too long", 0) == 0)
        return {};
      throw;
    }
  }

  Piece make(const std::string &text, size_t index, const std::vector<SpanMatch> &spans, size_t b, size_t e) const {
    Piece p;
    p.text = index;
    p.begin = b;
    p.end = e;
    std::vector<SpanMatch> local;
    for (size_t k = 0; k < spans.size(); ++k)
      if (spans[k].offset >= b && spans[k].offset + spans[k].length <= e) {
        local.push_back({spans[k].offset - b, spans[k].length, spans[k].kind});
        p.spans.push_back(k);
      }
    p.masked = mask_spans(std::string_view(text).substr(b, e - b), local);
    p.ids = encode_bounded(p.masked.text);
    return p;
  }

  // Adds [b, e) as one piece, or halves it at the whitespace nearest its
  // middle (else at a character boundary) until each half fits.
  void add(const std::string &text, size_t index, const std::vector<SpanMatch> &spans, size_t b, size_t e,
           std::vector<Piece> &out) const {
    Piece p = make(text, index, spans, b, e);
    if (!p.ids.empty()) {
      out.push_back(std::move(p));
      return;
    }
    auto in_span = [&](size_t pos) {
      for (const SpanMatch &m : spans)
        if (pos > m.offset && pos < m.offset + m.length) return true;
      return false;
    };
    const size_t mid = b + (e - b) / 2;
    size_t cut = 0;
    for (size_t d = 0; d <= (e - b) / 2 && !cut; ++d)
      for (size_t pos : {mid - std::min(d, mid - b), std::min(mid + d, e - 1)})
        if (pos > b && pos < e && is_space(text[pos]) && !in_span(pos)) {
          cut = pos;
          break;
        }
    size_t left_end = cut, right_begin = cut;
    if (cut) {
      while (left_end > b && is_space(text[left_end - 1])) --left_end;
      while (right_begin < e && is_space(text[right_begin])) ++right_begin;
    } else {
      for (size_t d = 0; d <= (e - b) / 2 && !cut; ++d)
        for (size_t pos : {mid - std::min(d, mid - b), std::min(mid + d, e - 1)})
          if (pos > b && pos < e && (static_cast<unsigned char>(text[pos]) & 0xC0) != 0x80 && !in_span(pos)) {
            cut = pos;
            break;
          }
      left_end = right_begin = cut;
    }
    if (!cut || left_end <= b || right_begin >= e)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "bytes " + std::to_string(b) + ".." + std::to_string(e) +
                                              " of the text cannot be split to fit the limit of " +
                                              std::to_string(limit_) + " tokens");
    add(text, index, spans, b, left_end, out);
    add(text, index, spans, right_begin, e, out);
  }

  const Tokenizer &src_;
  const std::string &language_;
  size_t limit_;
  int32_t long_text_;
  std::string locale_;
};

// Byte offset in `text` where each of `tokens` starts (decoding prefixes).
std::vector<size_t> token_starts(const Tokenizer &tgt, const std::vector<int32_t> &tokens, size_t text_size) {
  std::vector<size_t> starts(tokens.size(), 0);
  std::vector<int32_t> prefix;
  size_t last = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    last = std::max(last, std::min(text_size, tgt.decode(prefix, /*skip_special=*/true).size()));
    starts[t] = last;
    prefix.push_back(tokens[t]);
  }
  return starts;
}

// Source token range of each placeholder of `p` (tokenizing the masked text's prefixes).
std::vector<std::pair<size_t, size_t>> placeholder_tokens(const Tokenizer &src, const Piece &p) {
  const std::vector<int32_t> plain = src.encode(p.masked.text, /*add_special=*/false);
  size_t lead = 0;  // special tokens before the text (a language token)
  for (size_t k = 0; k + plain.size() <= p.ids.size() && k < 4; ++k)
    if (std::equal(plain.begin(), plain.end(), p.ids.begin() + static_cast<std::ptrdiff_t>(k))) {
      lead = k;
      break;
    }
  std::vector<std::pair<size_t, size_t>> out;
  for (const MaskedText::Placeholder &ph : p.masked.placeholders) {
    size_t a = src.encode(std::string_view(p.masked.text).substr(0, ph.offset), false).size();
    size_t b = src.encode(std::string_view(p.masked.text).substr(0, ph.offset + ph.text.size()), false).size();
    a = std::min(a + lead, p.ids.size());
    b = std::min(std::max(b + lead, a + 1), p.ids.size());
    out.emplace_back(a, b);
  }
  return out;
}
}  // namespace

std::vector<TextTranslation> translate_text(const Transformer &model, const ModelFile &file, const TextModel &text,
                                            const std::vector<std::string> &inputs,
                                            const TextTranslationOptions &options) {
  MemoryScope memory_scope("the translation's tokens, hypotheses and text");
  if (!model.encoder_decoder())
    fail(PARLEY_ERROR_UNSUPPORTED, "translate needs an encoder-decoder model; this one is decoder-only (chat instead)");
  if (inputs.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the batch is empty");
  if (options.long_text < 0 || options.long_text > 2)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "long_text " + std::to_string(options.long_text) + " is not 0, 1 or 2");
  const Tokenizer &src = text.source();
  const Tokenizer &tgt = text.target();
  DecodingOptions dec = options.decoding;
  if (!options.target_language.empty()) {
    int32_t id = tgt.language_token(options.target_language);
    if (id < 0)
      fail(PARLEY_ERROR_NOT_FOUND, "target_language " + quote_untrusted(options.target_language) +
                                       " is not a language code of this model: " + tgt.describe_languages());
    dec.forced_bos_token_id = id;
  } else if (!tgt.languages().empty() && !dec.forced_bos_token_id) {
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "this multilingual model needs a target language (e.g. " +
                                            quote_untrusted(tgt.languages().front().first) + ")");
  }
  // Checked once here, not as "text #i: unknown language code" for every text.
  if (!options.source_language.empty() && src.language_token(options.source_language) < 0)
    fail(PARLEY_ERROR_NOT_FOUND, "source_language " + quote_untrusted(options.source_language) +
                                     " is not a language code of this model: " + src.describe_languages());
  const int64_t layers = model.decoder_params().layers;
  if (options.attention) {
    if (options.attention_layer < -1 || options.attention_layer >= layers)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "attention_layer " + std::to_string(options.attention_layer) +
                                              " is outside [-1, " + std::to_string(layers - 1) + "]");
  }

  const int64_t max_src = model.encoder_params().max_positions;
  size_t limit = max_src > 0 ? static_cast<size_t>(max_src) : 0;
  if (options.max_source_tokens) limit = limit ? std::min(limit, options.max_source_tokens) : options.max_source_tokens;
  const bool protecting = options.protect && !options.protect->empty();
  const Splitter splitter(src, options.source_language, limit, options.long_text);

  std::vector<TextTranslation> out(inputs.size());
  std::vector<std::vector<SpanMatch>> spans(inputs.size());
  std::vector<Piece> pieces;                                // of the texts that pass, in order
  std::vector<std::vector<size_t>> of_text(inputs.size());  // piece indices per text
  for (size_t i = 0; i < inputs.size(); ++i) {
    try {
      check_text(inputs[i]);
      if (protecting)
        spans[i] = options.protect->find(inputs[i], [&] {
          if (dec.cancel && dec.cancel->load(std::memory_order_acquire))
            fail(PARLEY_ERROR_CANCELLED, "the request was cancelled (while matching protect_patterns)");
          if (dec.deadline && std::chrono::steady_clock::now() >= *dec.deadline)
            fail(PARLEY_ERROR_TIMEOUT, "the request's deadline passed while matching protect_patterns");
        });
      std::vector<Piece> ps = splitter.pieces(inputs[i], i, spans[i]);
      out[i].segments = ps.size();
      for (Piece &p : ps) {
        of_text[i].push_back(pieces.size());
        pieces.push_back(std::move(p));
      }
    } catch (const Error &e) {
      // Only the text's own faults stay with the text; an unknown language or a
      // file without tokenizer fails the call either way.
      if (!options.per_text_errors || e.status() != PARLEY_ERROR_INVALID_ARGUMENT)
        fail(e.status(), "text #" + std::to_string(i) + ": " + e.what());
      out[i].error = e.status();
      out[i].error_message = e.what();
      of_text[i].clear();
      continue;
    }
  }
  // A text's tokens and attention are its piece's when it is one piece.
  for (size_t i = 0; i < inputs.size(); ++i)
    if (out[i].error == PARLEY_OK && of_text[i].size() == 1) out[i].source_tokens = pieces[of_text[i][0]].ids;

  const std::vector<int32_t> prompt{static_cast<int32_t>(decoder_start(file))};
  const int64_t max_dec = model.decoder_params().max_positions;
  if (max_dec > 0) dec.max_new_tokens = std::min<int64_t>(dec.max_new_tokens, max_dec - 1);

  // Batches: all pieces at once, or by max_batch_tokens (rows x the longest
  // source of the batch, as CTranslate2's batch_type="tokens"), pieces sorted
  // by length so that a batch pads little.
  std::vector<std::vector<size_t>> batches;
  if (!options.max_batch_tokens) {
    // All pieces at once, in order, as far as half of the serving engine's
    // KV pools hold them: a document split into many short sentences (a
    // list, a table) is not refused for the batch it became, and other
    // users keep room. A piece is counted with its source blocks and each
    // beam's blocks for a target of up to twice the source (the engine
    // waits or preempts when one runs longer).
    int64_t self_cap = 0, cross_cap = 0, bs = 1, per_item = 1;
    if (options.engine) {
      self_cap = options.engine->pool_blocks() / 2;
      cross_cap = options.engine->cross_pool_blocks() / 2;
      bs = std::max<int64_t>(1, options.engine->options().block_size);
      per_item = std::max<int64_t>(1, dec.num_beams);
      if (dec.do_sample) per_item = std::max(per_item, dec.num_return_sequences);
    }
    int64_t self_used = 0, cross_used = 0;
    batches.emplace_back();
    for (size_t k = 0; k < pieces.size(); ++k) {
      const int64_t len = static_cast<int64_t>(pieces[k].ids.size());
      const int64_t target = std::min<int64_t>(dec.max_new_tokens, 2 * len + 8) + 1;
      const int64_t self_need = per_item * ((target + bs - 1) / bs), cross_need = (len + bs - 1) / bs;
      if (options.engine && !batches.back().empty() &&
          (self_used + self_need > self_cap || cross_used + cross_need > cross_cap)) {
        batches.emplace_back();
        self_used = cross_used = 0;
      }
      batches.back().push_back(k);
      self_used += self_need;
      cross_used += cross_need;
    }
  } else {
    std::vector<size_t> order(pieces.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return pieces[a].ids.size() < pieces[b].ids.size(); });
    size_t longest = 0;
    for (size_t k : order) {
      const size_t len = pieces[k].ids.size();
      if (batches.empty() || (batches.back().size() + 1) * std::max(longest, len) > options.max_batch_tokens) {
        batches.emplace_back();
        longest = 0;
      }
      batches.back().push_back(k);
      longest = std::max(longest, len);
    }
  }

  // Streaming partial texts (greedy/sampling: the hypotheses are final token
  // by token) when each text is one unprotected piece; else only final texts.
  bool stream_partial = options.on_text && dec.num_beams == 1 && !protecting;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (out[i].segments != 1) stream_partial = false;
  std::vector<std::vector<Hypothesis>> hyps(pieces.size());
  for (const std::vector<size_t> &batch : batches) {
    if (batch.empty()) continue;
    std::vector<std::vector<int32_t>> sources;
    for (size_t k : batch) sources.push_back(pieces[k].ids);
    DecodingOptions d = dec;
    std::vector<std::vector<std::vector<int32_t>>> partial_tokens;
    std::vector<std::vector<std::string>> partial_sent;
    if (stream_partial) {
      const size_t per_item = d.do_sample ? static_cast<size_t>(d.num_return_sequences) : 1;
      partial_tokens.assign(batch.size(), std::vector<std::vector<int32_t>>(per_item));
      partial_sent.assign(batch.size(), std::vector<std::string>(per_item));
      auto inner = d.on_token;
      d.on_token = [&, inner](int64_t b, int64_t s, int32_t token) {
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
          if (!options.on_text(pieces[batch[k]].text, j, so_far, false)) go = false;
        }
        return go;
      };
    }
    const std::vector<std::vector<int32_t>> prompts(sources.size(), prompt);
    auto got = options.engine ? translate(*options.engine, sources, prompts, d, RunControl{d.cancel, d.deadline})
                              : translate(model, sources, prompts, d);
    for (size_t k = 0; k < batch.size(); ++k) hyps[batch[k]] = std::move(got[k]);
  }

  const int64_t layer = options.attention_layer < 0 ? layers - 1 : options.attention_layer;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (out[i].error != PARLEY_OK) continue;
    const std::string &input = inputs[i];
    const std::vector<size_t> &ps = of_text[i];
    size_t nhyp = ps.empty() ? static_cast<size_t>(std::max<int64_t>(1, dec.num_return_sequences)) : SIZE_MAX;
    for (size_t k : ps) nhyp = std::min(nhyp, hyps[k].size());
    for (size_t j = 0; j < nhyp; ++j) {
      TextHypothesis th;
      size_t at = 0;  // next byte of the input to copy
      for (size_t k : ps) {
        const Piece &p = pieces[k];
        Hypothesis &h = hyps[k][j];
        th.text.append(input, at, p.begin - at);
        std::string piece_text = tgt.decode(h.tokens, /*skip_special=*/true);
        const bool want_attention = options.attention && ps.size() == 1 && !h.tokens.empty();
        std::vector<float> attention;
        if ((want_attention || !p.masked.placeholders.empty()) && !h.tokens.empty())
          attention = attention_of(model, p.ids, prompt, h.tokens, layer);
        if (!p.masked.placeholders.empty()) {
          std::vector<std::string> span_texts;
          for (size_t s : p.spans) span_texts.push_back(input.substr(spans[i][s].offset, spans[i][s].length));
          ModelOutput mo;
          mo.token_starts = token_starts(tgt, h.tokens, piece_text.size());
          mo.attention = attention.empty() ? nullptr : &attention;
          mo.source_len = p.ids.size();
          mo.placeholder_tokens = placeholder_tokens(src, p);
          mo.text = std::move(piece_text);
          RestoredText r = restore_spans(p.masked, span_texts, mo);
          for (size_t q = 0; q < r.spans.size(); ++q) {
            ProtectedSpan ps_out = r.spans[q];
            const SpanMatch &m = spans[i][p.spans[p.masked.placeholders[q].span]];
            ps_out.kind = m.kind;
            ps_out.source_offset = m.offset;
            ps_out.source_length = m.length;
            ps_out.target_offset += th.text.size();
            th.protected_spans.push_back(ps_out);
          }
          piece_text = std::move(r.text);
        }
        th.text += piece_text;
        at = p.end;
        th.score += h.score;
        // With a forced EOS the last allowed token is EOS too: the length says it, not the last token.
        if (static_cast<int64_t>(h.tokens.size()) >= dec.max_new_tokens) th.cut_by_length = true;
        if (want_attention) th.attention = std::move(attention);
        th.tokens.insert(th.tokens.end(), h.tokens.begin(), h.tokens.end());
        th.logprobs.insert(th.logprobs.end(), h.logprobs.begin(), h.logprobs.end());
        if (h.alternatives > 0) th.alternatives = h.alternatives;
        th.alternative_ids.insert(th.alternative_ids.end(), h.alternative_ids.begin(), h.alternative_ids.end());
        th.alternative_logprobs.insert(th.alternative_logprobs.end(), h.alternative_logprobs.begin(),
                                       h.alternative_logprobs.end());
      }
      th.text.append(input, std::min(at, input.size()), std::string::npos);  // whitespace after the last piece
      out[i].hypotheses.push_back(std::move(th));
    }
    if (ps.size() > 1)
      for (size_t k : ps)
        out[i].source_tokens.insert(out[i].source_tokens.end(), pieces[k].ids.begin(), pieces[k].ids.end());
  }
  if (options.on_text)
    for (size_t i = 0; i < inputs.size(); ++i)
      for (size_t j = 0; j < out[i].hypotheses.size(); ++j)
        (void)options.on_text(i, j, out[i].hypotheses[j].text, true);
  return out;
}

}  // namespace parley
