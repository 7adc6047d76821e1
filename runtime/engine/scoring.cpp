// Teacher-forced scoring (engine/scoring.hpp). Reference: transformers
// 5.23.0 — a model called with `labels` shifts them right (encoder-decoder:
// shift_tokens_right with decoder_start_token_id; decoder-only: the logits at
// position t predict token t + 1), and CTranslate2's score_batch returns
// log_softmax(logits) at each target token.
#include "engine/scoring.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.hpp"
#include "engine/logits_processors.hpp"
#include "engine/transformer_step_model.hpp"

namespace parley {

namespace {

// Positions per step call: at most 128 (bounds the activations and the
// attention scores of one pass, as a chunked prefill does) and at most 2^24
// logits (the [n, vocab] buffer, 64 MiB of float32). Later passes continue
// from the KV cache the earlier ones filled.
constexpr int64_t kMaxPositionsPerStep = 128;
constexpr int64_t kMaxLogitsPerStep = int64_t{1} << 24;

void check_ids(const std::vector<int32_t> &ids, int64_t vocab, const char *what, size_t item) {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string(what) + " token id " + std::to_string(ids[i]) + " (item " +
                                              std::to_string(item) + ", position " + std::to_string(i) +
                                              ") is outside the vocabulary of " + std::to_string(vocab));
}

}  // namespace

std::vector<ScoredTarget> score_targets(const Transformer &model, const std::vector<std::vector<int32_t>> &sources,
                                        const std::vector<std::vector<int32_t>> &contexts,
                                        const std::vector<std::vector<int32_t>> &targets) {
  const size_t batch = targets.size();
  if (batch == 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the batch is empty");
  if (contexts.size() != batch) fail(PARLEY_ERROR_INVALID_ARGUMENT, "one context per target is needed");
  const bool enc_dec = model.encoder_decoder();
  if (enc_dec && sources.size() != batch) fail(PARLEY_ERROR_INVALID_ARGUMENT, "one source per target is needed");
  if (!enc_dec && !sources.empty()) fail(PARLEY_ERROR_INTERNAL, "score_targets: sources for a decoder-only model");
  const int64_t vocab = model.vocab();
  const int64_t max_pos = model.decoder_params().max_positions;
  // Validate everything before running anything.
  for (size_t b = 0; b < batch; ++b) {
    if (contexts[b].empty())
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "item " + std::to_string(b) + ": the context (prompt) is empty");
    if (targets[b].empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "item " + std::to_string(b) + ": nothing to score");
    check_ids(contexts[b], vocab, "context", b);
    check_ids(targets[b], vocab, "target", b);
    const int64_t fed = static_cast<int64_t>(contexts[b].size() + targets[b].size() - 1);
    if (max_pos > 0 && fed > max_pos)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "item " + std::to_string(b) + ": context + target need " +
                                              std::to_string(fed) + " decoder positions; the model has " +
                                              std::to_string(max_pos));
    if (enc_dec) {  // (source ids are checked by the encoder, against the source vocabulary)
      if (sources[b].empty())
        fail(PARLEY_ERROR_INVALID_ARGUMENT, "item " + std::to_string(b) + ": the source is empty");
      const StackParams &enc = model.encoder_params();
      const int64_t len = static_cast<int64_t>(sources[b].size());
      if ((enc.position == 1 || enc.position == 2) && len > enc.max_positions)
        fail(PARLEY_ERROR_INVALID_ARGUMENT, "item " + std::to_string(b) + ": a source of " + std::to_string(len) +
                                                " tokens exceeds the encoder's " + std::to_string(enc.max_positions) +
                                                " positions");
    }
  }
  const std::string source = logits_source_of(model);
  std::vector<ScoredTarget> out(batch);
  for (size_t b = 0; b < batch; ++b) {
    const std::vector<int32_t> &ctx = contexts[b], &tgt = targets[b];
    // Fed: the context, then every target token but the last.
    std::vector<int32_t> fed = ctx;
    fed.insert(fed.end(), tgt.begin(), tgt.end() - 1);
    const int64_t n = static_cast<int64_t>(fed.size());
    model.check_kv_bytes(1, n, enc_dec ? static_cast<int64_t>(sources[b].size()) : 0);
    DecoderState state = enc_dec ? model.start(1, n, {sources[b]}) : model.start(1, n);
    ScoredTarget &r = out[b];
    r.tokens = tgt;
    r.logprobs.reserve(tgt.size());
    const int64_t chunk = std::max<int64_t>(1, std::min(kMaxPositionsPerStep, kMaxLogitsPerStep / vocab));
    const int64_t first = static_cast<int64_t>(ctx.size()) - 1;  // position whose logits predict tgt[0]
    for (int64_t at = 0; at < n; at += chunk) {
      const int64_t m = std::min(chunk, n - at);
      const std::vector<int32_t> piece(fed.begin() + at, fed.begin() + at + m);
      const std::vector<float> logits = model.step(state, piece, m);
      for (int64_t p = std::max(at, first); p < at + m; ++p) {
        const float *row = logits.data() + (p - at) * vocab;
        const double lse = decoding::log_sum_exp(row, vocab);
        decoding::check_logits_row(lse, row, vocab, p - first, source);
        const int32_t token = tgt[static_cast<size_t>(p - first)];
        // The float32 log-prob as log_softmax computes it (double accumulation).
        const float lp = static_cast<float>(static_cast<double>(row[token]) - lse);
        r.logprobs.push_back(lp);
        r.sum += static_cast<double>(row[token]) - lse;
      }
    }
  }
  return out;
}

}  // namespace parley
