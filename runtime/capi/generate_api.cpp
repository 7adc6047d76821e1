// parley_generate / parley_translate_tokens and their results.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "capi/api_guard.hpp"
#include "capi/request_control.hpp"
#include "capi/results.hpp"
#include "core/memory_scope.hpp"
#include "core/runtime.hpp"
#include "engine/generator.hpp"
#include "engine/json_schema_grammar.hpp"

using namespace parley;
using parley::capi::check_struct_size;
using parley::capi::guarded;
using parley::capi::require;

namespace parley {

namespace {
// An out-of-memory failure is the moment's, not the file's: it is not kept,
// so the next call tries again once memory is back.
bool transient(const std::exception_ptr &e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::bad_alloc &) {
    return true;
  } catch (const Error &err) {
    return err.status() == PARLEY_ERROR_OUT_OF_MEMORY;
  } catch (...) {
    return false;
  }
}
}  // namespace

const Transformer &Model::transformer() const {
  if (const Transformer *t = bound_.load(std::memory_order_acquire)) return *t;
  std::lock_guard<std::mutex> lock(bind_mutex_);
  MemoryScope memory_scope("the model's weights on its device (binding them at first use)");
  if (!bind_error_ && !transformer_) {
    try {
      transformer_ = std::make_unique<Transformer>(runtime, *file, device, kv_dtype, act_dtype);
    } catch (...) {
      std::exception_ptr e = std::current_exception();
      if (transient(e)) throw;
      bind_error_ = e;
    }
  }
  if (bind_error_) std::rethrow_exception(bind_error_);
  bound_.store(transformer_.get(), std::memory_order_release);
  return *transformer_;
}

Engine *Model::engine() const {
  if (engine_checked_.load(std::memory_order_acquire)) return engine_.get();
  const Transformer &t = transformer();
  std::lock_guard<std::mutex> lock(engine_mutex_);
  if (engine_checked_.load(std::memory_order_relaxed)) return engine_.get();
  if (use_engine && t.supports_paged()) {
    MemoryScope memory_scope("the serving engine's KV pool");
    // K/V computed from 16-bit activations differ from F32 ones: another identity.
    const std::string act =
        t.act_dtype() == PARLEY_DTYPE_F32 ? std::string() : std::string("activations=") + dtype_name(t.act_dtype());
    engine_ = std::make_unique<Engine>(t, engine_options,
                                       model_identity_key(*file, t.kv_dtype(), engine_options.block_size, act));
  }
  engine_checked_.store(true, std::memory_order_release);
  return engine_.get();
}

const TextModel &Model::text() const {
  if (const TextModel *t = text_ready_.load(std::memory_order_acquire)) return *t;
  std::lock_guard<std::mutex> lock(text_mutex_);
  MemoryScope memory_scope("the model's tokenizers and chat format (built at first use)");
  if (!text_error_ && !text_) {
    try {
      text_ = build_text_model(*file);
    } catch (...) {
      std::exception_ptr e = std::current_exception();
      if (transient(e)) throw;
      text_error_ = e;
    }
  }
  if (text_error_) std::rethrow_exception(text_error_);
  text_ready_.store(text_.get(), std::memory_order_release);
  return *text_;
}

std::shared_ptr<const TokenVocabulary> Model::token_vocabulary() const {
  const Tokenizer &tok = text().target();
  std::lock_guard<std::mutex> lock(vocab_mutex_);
  if (!vocab_) {
    MemoryScope memory_scope("the vocabulary's byte trie (built at the first constrained generation)");
    std::vector<std::string> bytes;
    std::vector<char> is_text;
    tok.token_bytes(&bytes, &is_text);
    vocab_ = std::make_shared<TokenVocabulary>(std::move(bytes), std::move(is_text));
  }
  return vocab_;
}

}  // namespace parley

namespace {

constexpr size_t kOptionsV1 = PARLEY_SIZE_THROUGH(parley_generation_options, user_data);
constexpr size_t kMaxBatch = 4096;
constexpr size_t kMaxSequence = 1 << 20;

void fill_from(const DecodingOptions &d, parley_generation_options &o) {
  o.max_new_tokens = static_cast<size_t>(d.max_new_tokens);
  o.min_new_tokens = static_cast<size_t>(d.min_new_tokens);
  o.num_beams = static_cast<size_t>(d.num_beams);
  o.num_return_sequences = static_cast<size_t>(d.num_return_sequences);
  o.length_penalty = static_cast<float>(d.length_penalty);
  o.early_stopping = d.early_stopping == EarlyStopping::kTrue ? 1 : d.early_stopping == EarlyStopping::kNever ? 2 : 0;
  o.no_repeat_ngram_size = static_cast<size_t>(d.no_repeat_ngram_size);
  o.repetition_penalty = static_cast<float>(d.repetition_penalty);
  o.do_sample = d.do_sample ? 1 : 0;
  o.temperature = static_cast<float>(d.temperature);
  o.top_k = static_cast<size_t>(d.top_k);
  o.top_p = static_cast<float>(d.top_p);
  o.min_p = static_cast<float>(d.min_p);
  o.seed = d.seed;
}

}  // namespace

namespace parley::capi {
// The caller's options over the model's defaults (which carry what the C
// struct has no field for: pad, forced BOS/EOS, suppressed tokens).
DecodingOptions resolve_generation_options(const ModelFile &file, const parley_generation_options *options) {
  DecodingOptions d = decoding_defaults(file);
  if (!options) return d;
  check_struct_size(options->struct_size, kOptionsV1, sizeof *options, "options");
  parley_generation_options o;
  parley_generation_options_init(nullptr, &o);
  std::memcpy(&o, options, options->struct_size);
  const std::pair<const char *, size_t> counts[] = {{"max_new_tokens", o.max_new_tokens},
                                                    {"min_new_tokens", o.min_new_tokens},
                                                    {"num_beams", o.num_beams},
                                                    {"num_return_sequences", o.num_return_sequences},
                                                    {"no_repeat_ngram_size", o.no_repeat_ngram_size},
                                                    {"top_k", o.top_k}};
  for (const auto &[name, v] : counts)
    if (v > (size_t{1} << 30))
      fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string("options->") + name + " is " + std::to_string(v) +
                                              ": absurdly large (at most 2^30; a negative value wrapped around?)");
  if (o.early_stopping < 0 || o.early_stopping > 2)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->early_stopping must be 0, 1 or 2");
  if (o.do_sample != 0 && o.do_sample != 1) fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->do_sample must be 0 or 1");
  const std::pair<const char *, float> reals[] = {{"length_penalty", o.length_penalty},
                                                  {"repetition_penalty", o.repetition_penalty},
                                                  {"temperature", o.temperature},
                                                  {"top_p", o.top_p},
                                                  {"min_p", o.min_p}};
  for (const auto &[name, f] : reals)
    if (!std::isfinite(f))
      fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string("options->") + name + " is not finite (" +
                                              (std::isnan(f) ? "NaN"
                                               : f > 0       ? "inf"
                                                             : "-inf") +
                                              ")");
  if (o.num_eos_token_ids && !o.eos_token_ids)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->eos_token_ids is NULL but num_eos_token_ids > 0");
  if (o.num_eos_token_ids > 1024) fail(PARLEY_ERROR_INVALID_ARGUMENT, "options: more than 1024 EOS ids");
  d.max_new_tokens = static_cast<int64_t>(o.max_new_tokens);
  d.min_new_tokens = static_cast<int64_t>(o.min_new_tokens);
  d.num_beams = static_cast<int64_t>(o.num_beams);
  d.num_return_sequences = static_cast<int64_t>(o.num_return_sequences);
  d.length_penalty = o.length_penalty;
  d.early_stopping = o.early_stopping == 1   ? EarlyStopping::kTrue
                     : o.early_stopping == 2 ? EarlyStopping::kNever
                                             : EarlyStopping::kFalse;
  d.no_repeat_ngram_size = static_cast<int64_t>(o.no_repeat_ngram_size);
  d.repetition_penalty = o.repetition_penalty;
  d.do_sample = o.do_sample != 0;
  d.temperature = o.temperature;
  d.top_k = static_cast<int64_t>(o.top_k);
  d.top_p = o.top_p;
  d.min_p = o.min_p;
  d.seed = o.seed;
  if (o.num_eos_token_ids) d.eos_token_ids.assign(o.eos_token_ids, o.eos_token_ids + o.num_eos_token_ids);
  if (d.max_new_tokens < 1) fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->max_new_tokens must be >= 1");
  if (options->struct_size >= PARLEY_SIZE_THROUGH(parley_generation_options, num_alternatives)) {
    if (o.return_logprobs != 0 && o.return_logprobs != 1)
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           "options->return_logprobs must be 0 or 1, got " + std::to_string(o.return_logprobs));
    if (o.num_alternatives > PARLEY_MAX_ALTERNATIVES)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->num_alternatives is " + std::to_string(o.num_alternatives) +
                                              ": at most PARLEY_MAX_ALTERNATIVES (" +
                                              std::to_string(PARLEY_MAX_ALTERNATIVES) + ") alternatives per step");
    d.return_logprobs = o.return_logprobs == 1;
    d.num_alternatives = static_cast<int64_t>(o.num_alternatives);
  }
  if (options->struct_size >= PARLEY_SIZE_THROUGH(parley_generation_options, num_logit_bias) && o.num_logit_bias) {
    if (o.num_logit_bias > PARLEY_MAX_LOGIT_BIAS)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->num_logit_bias is " + std::to_string(o.num_logit_bias) +
                                              ": at most PARLEY_MAX_LOGIT_BIAS (" +
                                              std::to_string(PARLEY_MAX_LOGIT_BIAS) + ") entries");
    if (!o.logit_bias_ids || !o.logit_bias_values)
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           "options->logit_bias_ids or logit_bias_values is NULL but num_logit_bias > 0");
    // Ids are checked against the vocabulary by validate_decoding_options.
    for (size_t i = 0; i < o.num_logit_bias; ++i) {
      if (!std::isfinite(o.logit_bias_values[i]))
        fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->logit_bias_values[" + std::to_string(i) + "] is not finite");
      d.logit_bias.emplace_back(o.logit_bias_ids[i], o.logit_bias_values[i]);
    }
  }
  if (o.on_token) {
    parley_token_fn fn = o.on_token;
    void *user = o.user_data;
    d.on_token = [fn, user](int64_t batch, int64_t sequence, int32_t token) {
      return fn(user, static_cast<size_t>(batch), static_cast<size_t>(sequence), token) == 0;
    };
  }
  return d;
}

bool wants_constraint(const parley_generation_options *options) {
  if (!options || options->struct_size <= kOptionsV1) return false;
  parley_generation_options o;
  parley_generation_options_init(nullptr, &o);
  std::memcpy(&o, options, std::min(options->struct_size, sizeof o));
  return o.grammar || o.json_schema;
}

// The grammar or JSON schema of `options` (appended fields), compiled and
// bound to the model's vocabulary; null when neither is set.
std::shared_ptr<const Constraint> resolve_constraint(const Model &model, const parley_generation_options *options) {
  if (!options || options->struct_size <= kOptionsV1) return nullptr;
  parley_generation_options o;
  parley_generation_options_init(nullptr, &o);
  std::memcpy(&o, options, std::min(options->struct_size, sizeof o));
  if (!o.grammar && !o.json_schema) return nullptr;
  if (o.grammar && o.json_schema) fail(PARLEY_ERROR_INVALID_ARGUMENT, "options: set grammar or json_schema, not both");
  constexpr size_t kMaxGrammarBytes = size_t{1} << 20;
  const char *src = o.grammar ? o.grammar : o.json_schema;
  const size_t n = strnlen(src, kMaxGrammarBytes + 1);
  if (n > kMaxGrammarBytes)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         std::string("options->") + (o.grammar ? "grammar" : "json_schema") + " is longer than 1 MiB");
  auto c = std::make_shared<Constraint>();
  const std::string_view text(src, n);
  c->what = o.grammar ? "grammar" : "JSON schema";
  c->grammar = Grammar::parse(o.grammar ? std::string(text) : json_schema_to_gbnf(text));
  c->vocab = model.token_vocabulary();
  return c;
}
}  // namespace parley::capi

namespace {
using parley::capi::resolve_generation_options;

std::vector<std::vector<int32_t>> read_batch(const int32_t *const *seqs, const size_t *lengths, size_t batch,
                                             const char *what, bool allow_empty) {
  if (batch == 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string("the batch of ") + what + " is empty");
  if (batch > kMaxBatch)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "batch of " + std::to_string(batch) + " exceeds " + std::to_string(kMaxBatch));
  require(seqs, what);
  require(lengths, "lengths");
  std::vector<std::vector<int32_t>> out(batch);
  for (size_t b = 0; b < batch; ++b) {
    if (lengths[b] == 0) {
      if (allow_empty) continue;
      fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string(what) + "[" + std::to_string(b) + "] is empty");
    }
    if (lengths[b] > kMaxSequence)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string(what) + "[" + std::to_string(b) + "] is longer than 2^20 tokens");
    if (!seqs[b]) fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string(what) + "[" + std::to_string(b) + "] is NULL");
    out[b].assign(seqs[b], seqs[b] + lengths[b]);
  }
  return out;
}

// Hypothesis `index` of prompt `batch_index` (NOT_FOUND naming the index out of range).
const Hypothesis &hypothesis_at(const parley_generation_result &result, size_t batch_index, size_t index) {
  if (batch_index >= result.items.size())
    fail(PARLEY_ERROR_NOT_FOUND, "batch index " + std::to_string(batch_index) + " out of range");
  const auto &hyps = result.items[batch_index];
  if (index >= hyps.size()) fail(PARLEY_ERROR_NOT_FOUND, "hypothesis index " + std::to_string(index) + " out of range");
  return hyps[index];
}

}  // namespace

namespace parley::capi {

Task<void> generate_task(const parley_model *model, const int32_t *const *prompts, const size_t *prompt_lengths,
                         size_t batch_size, const parley_generation_options *options,
                         parley_generation_result **out_result) {
  require(model, "model");
  require(out_result, "out_result");
  const RequestControl *control = take_request_control();
  DecodingOptions d = resolve_generation_options(*model->impl.file, options);
  apply_request_control(control, d, /*with_logprobs=*/true);
  auto batch = read_batch(prompts, prompt_lengths, batch_size, "prompts", false);
  if (!options) apply_max_length_to_prompts(*model->impl.file, batch, d);
  if (model->impl.file->kind() == PARLEY_MODEL_DECODER_ONLY) d.constraint = resolve_constraint(model->impl, options);
  auto result = std::make_unique<parley_generation_result>();
  Engine *engine = model->impl.engine();
  if (engine) {
    RunControl run{d.cancel, d.deadline, control ? control->resumer : nullptr};
    result->items = co_await parley::generate_task(*engine, batch, d, run);
  } else {
    result->items = generate(model->impl.transformer(), batch, d);
  }
  *out_result = result.release();
}

}  // namespace parley::capi

extern "C" {

PARLEY_API parley_status parley_generation_options_defaults(const parley_model *model,
                                                            parley_generation_options *options) {
  return guarded(__func__, [&] {
    parley::capi::write_defaults(options, kOptionsV1, [&] {
      parley_generation_options o{};
      o.struct_size = sizeof o;
      fill_from(model ? decoding_defaults(*model->impl.file) : DecodingOptions{}, o);
      return o;
    });
  });
}

PARLEY_API parley_status parley_model_prepare(const parley_model *model) {
  return guarded(__func__, [&] {
    require(model, "model");
    (void)model->impl.transformer();
  });
}

PARLEY_API parley_status parley_model_memory_usage(const parley_model *model, parley_model_memory *out) {
  return guarded(__func__, [&] {
    require(model, "model");
    require(out, "out");
    parley::capi::check_struct_size(out->struct_size, PARLEY_SIZE_THROUGH(parley_model_memory, kv_bytes_per_token),
                                    sizeof *out, "out");
    const Transformer &t = model->impl.transformer();
    parley_model_memory m{};
    m.struct_size = sizeof m;
    m.file_bytes = model->impl.file->file_size();
    for (const LinearPlan &e : t.linear_plan()) {
      m.packed_bytes += e.bytes;
      ++m.linear_weights;
      if (e.widened) ++m.widened_weights;
      if (e.source_released) m.released_bytes += e.source_bytes;
    }
    m.released_bytes = std::min(m.released_bytes, m.file_bytes);  // a tensor two weights share counts once at most
    m.converted_bytes = t.prepared_bytes() - m.packed_bytes;
    m.kv_bytes_per_token = t.check_kv_bytes(1, 1);
    if (const Engine *e = model->impl.engine_if_started()) m.kv_pool_bytes = e->stats().kv_budget_bytes;
    parley::capi::copy_out(out, m);
  });
}

PARLEY_API parley_status parley_model_serving_stats(const parley_model *model, parley_serving_stats *out) {
  return guarded(__func__, [&] {
    require(model, "model");
    require(out, "out");
    parley::capi::check_struct_size(out->struct_size, PARLEY_SIZE_THROUGH(parley_serving_stats, evictions), sizeof *out,
                                    "out");
    parley_serving_stats st{};
    st.struct_size = sizeof st;
    if (const Engine *e = model->impl.engine_if_started()) {
      const EngineStats s = e->stats();
      st.engine_active = 1;
      st.steps = s.steps;
      st.batched_rows = s.rows;
      st.max_batch_rows = static_cast<uint64_t>(s.max_batch_rows);
      st.prefill_tokens = s.prefill_tokens;
      st.decode_tokens = s.decode_tokens;
      st.reused_tokens = s.reused_tokens;
      st.preemptions = s.preemptions;
      st.refused = s.refused;
      st.cancelled = s.cancelled;
      st.timed_out = s.timed_out;
      st.waiting = static_cast<uint64_t>(std::max<int64_t>(0, s.waiting));
      st.kv_budget_bytes = s.kv_budget_bytes;
      st.kv_block_bytes = s.kv_block_bytes;
      st.kv_blocks = static_cast<uint64_t>(s.blocks.blocks);
      st.kv_blocks_free = static_cast<uint64_t>(s.blocks.free);
      st.kv_blocks_cached = static_cast<uint64_t>(s.blocks.cached);
      st.kv_blocks_in_use = static_cast<uint64_t>(s.blocks.in_use);
      st.prefix_hits = s.blocks.hits;
      st.prefix_misses = s.blocks.misses;
      st.evictions = s.blocks.evictions;
    }
    parley::capi::copy_out(out, st);
  });
}

PARLEY_API parley_status parley_generate(const parley_model *model, const int32_t *const *prompts,
                                         const size_t *prompt_lengths, size_t batch_size,
                                         const parley_generation_options *options,
                                         parley_generation_result **out_result) {
  return guarded(__func__, [&] {
    run_sync(parley::capi::generate_task(model, prompts, prompt_lengths, batch_size, options, out_result));
  });
}

PARLEY_API parley_status parley_translate_tokens(const parley_model *model, const int32_t *const *sources,
                                                 const size_t *source_lengths, size_t batch_size,
                                                 const int32_t *const *target_prefixes,
                                                 const size_t *target_prefix_lengths,
                                                 const parley_generation_options *options,
                                                 parley_generation_result **out_result) {
  return guarded(__func__, [&] {
    require(model, "model");
    require(out_result, "out_result");
    const ModelFile &file = *model->impl.file;
    if (file.kind() != PARLEY_MODEL_ENCODER_DECODER)
      fail(PARLEY_ERROR_UNSUPPORTED, "this is a decoder-only model: use parley_generate");
    DecodingOptions d = resolve_generation_options(file, options);
    parley::capi::apply_request_control(parley::capi::take_request_control(), d, /*with_logprobs=*/true);
    if (parley::capi::wants_constraint(options))
      fail(PARLEY_ERROR_UNSUPPORTED, "grammar / json_schema constrain chat and generation, not translation");
    auto batch = read_batch(sources, source_lengths, batch_size, "sources", false);
    std::vector<std::vector<int32_t>> prefixes(batch.size());
    if (target_prefixes)
      prefixes = read_batch(target_prefixes, target_prefix_lengths, batch_size, "target_prefixes", true);
    const int32_t start = file.decoder_start_token_id();
    std::vector<std::vector<int32_t>> prompts;
    for (const auto &p : prefixes) {
      std::vector<int32_t> prompt{start};
      prompt.insert(prompt.end(), p.begin(), p.end());
      prompts.push_back(std::move(prompt));
    }
    auto result = std::make_unique<parley_generation_result>();
    Engine *engine = model->impl.engine();
    result->items = engine ? translate(*engine, batch, prompts, d, RunControl{d.cancel, d.deadline})
                           : translate(model->impl.transformer(), batch, prompts, d);
    for (size_t b = 0; b < result->items.size(); ++b)  // hypotheses start with the prefix
      for (auto &h : result->items[b]) h.tokens.insert(h.tokens.begin(), prefixes[b].begin(), prefixes[b].end());
    *out_result = result.release();
  });
}

PARLEY_API parley_status parley_result_batch_size(const parley_generation_result *result, size_t *out_count) {
  return guarded(__func__, [&] {
    require(result, "result");
    require(out_count, "out_count");
    *out_count = result->items.size();
  });
}

PARLEY_API parley_status parley_result_hypothesis_count(const parley_generation_result *result, size_t batch_index,
                                                        size_t *out_count) {
  return guarded(__func__, [&] {
    require(result, "result");
    require(out_count, "out_count");
    if (batch_index >= result->items.size())
      fail(PARLEY_ERROR_NOT_FOUND, "batch index " + std::to_string(batch_index) + " out of range");
    *out_count = result->items[batch_index].size();
  });
}

PARLEY_API parley_status parley_result_hypothesis(const parley_generation_result *result, size_t batch_index,
                                                  size_t index, const int32_t **out_tokens, size_t *out_length,
                                                  float *out_score) {
  return guarded(__func__, [&] {
    require(result, "result");
    require(out_tokens, "out_tokens");
    require(out_length, "out_length");
    const Hypothesis &h = hypothesis_at(*result, batch_index, index);
    *out_tokens = h.tokens.data();
    *out_length = h.tokens.size();
    if (out_score) *out_score = h.score;
  });
}

PARLEY_API parley_status parley_result_hypothesis_logprobs(const parley_generation_result *result, size_t batch_index,
                                                           size_t index, const float **out_logprobs,
                                                           size_t *out_count) {
  return guarded(__func__, [&] {
    require(result, "result");
    require(out_logprobs, "out_logprobs");
    require(out_count, "out_count");
    const Hypothesis &h = hypothesis_at(*result, batch_index, index);
    if (h.logprobs.empty() && !h.tokens.empty())  // (a constrained sequence may end before its first token)
      fail(PARLEY_ERROR_NOT_FOUND,
           "no per-token log-probabilities: they were not requested (parley_generation_options.return_logprobs or "
           "parley_request_options.return_logprobs)");
    *out_logprobs = h.logprobs.data();
    *out_count = h.logprobs.size();
  });
}

PARLEY_API parley_status parley_result_hypothesis_alternatives(const parley_generation_result *result,
                                                               size_t batch_index, size_t index,
                                                               const int32_t **out_ids, const float **out_logprobs,
                                                               size_t *out_steps, size_t *out_k) {
  return guarded(__func__, [&] {
    require(result, "result");
    require(out_ids, "out_ids");
    require(out_logprobs, "out_logprobs");
    require(out_steps, "out_steps");
    require(out_k, "out_k");
    const Hypothesis &h = hypothesis_at(*result, batch_index, index);
    if (h.alternatives <= 0 && !h.tokens.empty())
      fail(PARLEY_ERROR_NOT_FOUND,
           "no alternatives: they were not requested (parley_generation_options.num_alternatives)");
    *out_ids = h.alternative_ids.data();
    *out_logprobs = h.alternative_logprobs.data();
    *out_k = static_cast<size_t>(h.alternatives);
    *out_steps = h.alternatives > 0 ? h.alternative_ids.size() / static_cast<size_t>(h.alternatives) : 0;
  });
}

PARLEY_API parley_status parley_result_hypothesis_constraint(const parley_generation_result *result, size_t batch_index,
                                                             size_t index, int32_t *out_status) {
  return guarded(__func__, [&] {
    require(result, "result");
    require(out_status, "out_status");
    *out_status = hypothesis_at(*result, batch_index, index).constraint;
  });
}

PARLEY_API void parley_result_free(parley_generation_result *result) {
  delete result;
}

}  // extern "C"
