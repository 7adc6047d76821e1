#include "engine/generator.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "engine/transformer_step_model.hpp"
#include "parley_generated.h"
#include "serve/engine_step_model.hpp"

namespace parley {

namespace {

int64_t cfg(const ModelFile &f, const std::string &key, int64_t fallback) {
  const ConfigEntry *e = f.find_config(key);
  return e ? e->int_value : fallback;
}

double cfgf(const ModelFile &f, const std::string &key, double fallback) {
  const ConfigEntry *e = f.find_config(key);
  return e ? e->float_value : fallback;
}

// Prefill rows of different lengths in one right-padded step; returns the
// logits of each row's last token.
std::vector<float> prefill(const Transformer &model, DecoderState &state,
                           const std::vector<std::vector<int32_t>> &rows) {
  const int64_t B = static_cast<int64_t>(rows.size());
  int64_t n_max = 0;
  for (const auto &r : rows) {
    if (r.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "a prompt is empty");
    n_max = std::max<int64_t>(n_max, static_cast<int64_t>(r.size()));
  }
  std::vector<int32_t> tokens(static_cast<size_t>(B * n_max), 0), counts;
  for (int64_t b = 0; b < B; ++b) {
    const auto &r = rows[static_cast<size_t>(b)];
    counts.push_back(static_cast<int32_t>(r.size()));
    std::copy(r.begin(), r.end(), tokens.begin() + b * n_max);
  }
  return model.step(state, tokens, n_max, /*last_only=*/true, counts);
}

// Beam search and multiple samples grow the batch to this many rows; refuse
// before allocating anything if their KV cache cannot fit.
void check_memory(const Transformer &model, size_t batch, int64_t capacity, int64_t src_len, const DecodingOptions &o) {
  int64_t per_item = std::max<int64_t>(1, o.num_beams);
  if (o.do_sample) per_item = std::max(per_item, o.num_return_sequences);
  uint64_t rows = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(batch), static_cast<uint64_t>(per_item), &rows) ||
      rows > (uint64_t{1} << 40))
    fail(PARLEY_ERROR_OUT_OF_MEMORY, "batch x beams is too large");
  model.check_kv_bytes(static_cast<int64_t>(rows), capacity, src_len);
}

int64_t longest(const std::vector<std::vector<int32_t>> &rows) {
  size_t n = 0;
  for (const auto &r : rows) n = std::max(n, r.size());
  return static_cast<int64_t>(n);
}

}  // namespace

void apply_max_length_to_prompts(const ModelFile &f, const std::vector<std::vector<int32_t>> &prompts,
                                 DecodingOptions &o) {
  const int64_t max_length = cfg(f, "generation.max_length", 0);
  if (f.kind() != PARLEY_MODEL_DECODER_ONLY || max_length <= 0) return;
  o.max_new_tokens = std::max<int64_t>(1, max_length - longest(prompts));
}

DecodingOptions decoding_defaults(const ModelFile &f) {
  DecodingOptions o;
  int64_t max_length = cfg(f, "generation.max_length", 0);
  if (max_length > 0)
    o.max_new_tokens = f.kind() == PARLEY_MODEL_ENCODER_DECODER ? std::max<int64_t>(1, max_length - 1) : max_length;
  else
    o.max_new_tokens = 256;
  o.num_beams = cfg(f, "generation.num_beams", 1);
  o.length_penalty = cfgf(f, "generation.length_penalty", 1.0);
  o.early_stopping = cfg(f, "generation.early_stopping", 0) ? EarlyStopping::kTrue : EarlyStopping::kFalse;
  o.no_repeat_ngram_size = cfg(f, "generation.no_repeat_ngram_size", 0);
  o.repetition_penalty = cfgf(f, "generation.repetition_penalty", 1.0);
  o.do_sample = cfg(f, "generation.do_sample", 0) != 0;
  o.temperature = cfgf(f, "generation.temperature", 1.0);
  int64_t top_k = cfg(f, "generation.top_k", 0);
  o.top_k = top_k;  // the converter stores only explicit values: 0 = off
  o.top_p = cfgf(f, "generation.top_p", 1.0);
  o.min_p = cfgf(f, "generation.min_p", 0.0);
  int64_t n_eos = cfg(f, "generation.num_eos_token_ids", 0);
  for (int64_t i = 0; i < n_eos; ++i)
    o.eos_token_ids.push_back(static_cast<int32_t>(cfg(f, "generation.eos_token_ids." + std::to_string(i), 0)));
  int64_t pad = cfg(f, "generation.pad_token_id", -1);
  if (pad >= 0) o.pad_token_id = static_cast<int32_t>(pad);
  int64_t bos = cfg(f, "generation.forced_bos_token_id", -1);
  if (bos >= 0) o.forced_bos_token_id = static_cast<int32_t>(bos);
  int64_t feos = cfg(f, "generation.forced_eos_token_id", -1);
  if (feos >= 0) o.forced_eos_token_ids = {static_cast<int32_t>(feos)};
  if (const auto *g = f.header().generation())
    if (g->suppress_tokens())
      for (int32_t id : *g->suppress_tokens()) o.suppress_tokens.push_back(id);
  return o;
}

std::vector<std::vector<Hypothesis>> generate(const Transformer &model,
                                              const std::vector<std::vector<int32_t>> &prompts,
                                              const DecodingOptions &options) {
  if (model.encoder_decoder())
    fail(PARLEY_ERROR_UNSUPPORTED, "this is an encoder-decoder model: translate instead of generate");
  if (prompts.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the batch is empty");
  validate_decoding_options(options, model.vocab());
  check_memory(model, prompts.size(), longest(prompts) + options.max_new_tokens, 0, options);
  DecoderState state = model.start(static_cast<int64_t>(prompts.size()), longest(prompts) + options.max_new_tokens);
  std::vector<float> last = prefill(model, state, prompts);
  TransformerStepModel step_model(model, std::move(state));
  return decode(step_model, last, prompts, options);
}

namespace {

// What generate / translate through the engine refuse up front, as the
// contiguous path does: lengths past the model's positions, and more
// beams/samples than the KV pool could ever hold at once.
void check_engine_request(Engine &engine, const std::vector<std::vector<int32_t>> &prompts,
                          const DecodingOptions &options) {
  for (const auto &p : prompts)
    if (p.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "a prompt is empty");
  validate_decoding_options(options, engine.model().vocab());
  const int64_t limit = engine.model().decoder_params().max_positions,
                wanted = longest(prompts) + options.max_new_tokens;
  if (limit > 0 && wanted > limit)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "requested length " + std::to_string(wanted) + " exceeds the model's " + std::to_string(limit) + " positions");
  // Beams / samples fork each prompt's row after the prefill; the forks share
  // the prompt's full blocks and need at least a block of their own each.
  // Refuse before anything runs when even that cannot fit the pool.
  {
    int64_t per_item = std::max<int64_t>(1, options.num_beams);
    if (options.do_sample) per_item = std::max(per_item, options.num_return_sequences);
    const EngineStats st = engine.stats();
    const uint64_t pool = st.kv_block_bytes ? st.kv_budget_bytes / st.kv_block_bytes : 0;
    const int64_t bs = engine.options().block_size;
    uint64_t need = 0;
    bool overflow = false;
    for (const auto &p : prompts)
      overflow |=
          __builtin_add_overflow(need, static_cast<uint64_t>(static_cast<int64_t>(p.size()) / bs + per_item), &need);
    if (overflow || need > pool)
      fail(PARLEY_ERROR_OUT_OF_MEMORY,
           std::to_string(prompts.size()) + " prompt(s) x " + std::to_string(per_item) +
               " beams/samples need at least " + (overflow ? std::string("2^64") : std::to_string(need)) +
               " KV cache blocks; the KV cache budget of " + std::to_string(st.kv_budget_bytes) + " bytes holds " +
               std::to_string(pool) + " (parley_model_options.kv_cache_budget_bytes)");
  }
}

}  // namespace

std::vector<std::vector<Hypothesis>> generate(Engine &engine, const std::vector<std::vector<int32_t>> &prompts,
                                              const DecodingOptions &options, const RunControl &control) {
  RunControl blocking = control;  // a resumer would let it suspend: run_sync cannot wait for that
  blocking.resumer = nullptr;
  return run_sync(generate_task(engine, prompts, options, blocking));
}

Task<std::vector<std::vector<Hypothesis>>> generate_task(Engine &engine,
                                                         const std::vector<std::vector<int32_t>> &prompts,
                                                         const DecodingOptions &options, RunControl control) {
  if (engine.model().encoder_decoder())
    fail(PARLEY_ERROR_UNSUPPORTED, "this is an encoder-decoder model: translate instead of generate");
  if (prompts.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the batch is empty");
  check_engine_request(engine, prompts, options);
  std::vector<Engine::SequencePtr> rows;
  std::vector<Engine::Sequence *> seqs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    rows.push_back(engine.open());
    seqs.push_back(rows.back().get());
  }
  std::vector<float> last;
  co_await engine.run_await(seqs, prompts, control, last);
  EngineStepModel step_model(engine, std::move(rows), control);
  co_return co_await decode_task(step_model, last, prompts, options);
}

std::vector<std::vector<Hypothesis>> translate(Engine &engine, const std::vector<std::vector<int32_t>> &sources,
                                               const std::vector<std::vector<int32_t>> &decoder_prompts,
                                               const DecodingOptions &options, const RunControl &control) {
  if (!engine.model().encoder_decoder())
    fail(PARLEY_ERROR_UNSUPPORTED, "this is a decoder-only model: generate instead");
  if (sources.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the batch is empty");
  if (decoder_prompts.size() != sources.size())
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "one decoder prompt per source is needed");
  // The encoder's own checks (Transformer::encode), made for the whole batch
  // before any source is encoded.
  const StackParams &enc = engine.model().encoder_params();
  const int64_t vocab = engine.model().vocab();
  for (size_t b = 0; b < sources.size(); ++b) {
    if (sources[b].empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "source " + std::to_string(b) + " is empty");
    const int64_t len = static_cast<int64_t>(sources[b].size());
    if ((enc.position == 1 || enc.position == 2) && len > enc.max_positions)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "source of " + std::to_string(len) + " tokens exceeds the encoder's " +
                                              std::to_string(enc.max_positions) + " positions");
    for (int64_t i = 0; i < len; ++i) {
      const int32_t id = sources[b][static_cast<size_t>(i)];
      if (id < 0 || id >= vocab)
        fail(PARLEY_ERROR_INVALID_ARGUMENT, "source token id " + std::to_string(id) + " (sequence " +
                                                std::to_string(b) + ", position " + std::to_string(i) +
                                                ") is outside the vocabulary of " + std::to_string(vocab));
    }
  }
  check_engine_request(engine, decoder_prompts, options);
  std::vector<Engine::SequencePtr> rows;
  std::vector<Engine::Sequence *> seqs;
  for (size_t i = 0; i < sources.size(); ++i) {
    rows.push_back(engine.open());
    seqs.push_back(rows.back().get());
  }
  engine.attach_sources(seqs, sources, control);
  std::vector<float> last = engine.run(seqs, decoder_prompts, control);
  EngineStepModel step_model(engine, std::move(rows), control);
  return decode(step_model, last, decoder_prompts, options);
}

std::vector<std::vector<Hypothesis>> translate(const Transformer &model,
                                               const std::vector<std::vector<int32_t>> &sources,
                                               const std::vector<std::vector<int32_t>> &decoder_prompts,
                                               const DecodingOptions &options) {
  if (!model.encoder_decoder()) fail(PARLEY_ERROR_UNSUPPORTED, "this is a decoder-only model: generate instead");
  if (sources.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the batch is empty");
  if (decoder_prompts.size() != sources.size())
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "one decoder prompt per source is needed");
  for (size_t b = 0; b < sources.size(); ++b)
    if (sources[b].empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "source " + std::to_string(b) + " is empty");
  validate_decoding_options(options, model.vocab());
  check_memory(model, sources.size(), longest(decoder_prompts) + options.max_new_tokens, longest(sources), options);
  DecoderState state =
      model.start(static_cast<int64_t>(sources.size()), longest(decoder_prompts) + options.max_new_tokens, sources);
  std::vector<float> last = prefill(model, state, decoder_prompts);
  TransformerStepModel step_model(model, std::move(state));
  return decode(step_model, last, decoder_prompts, options);
}

}  // namespace parley
