#include "options.hpp"

#include <cstring>

namespace parley_node {

namespace {

size_t get_size(const Options &opts, const char *key, size_t current) {
  if (auto v = opts.get(key)) return static_cast<size_t>(get_int(opts.env(), *v, opts.name(key), 0, INT64_MAX));
  return current;
}
int32_t get_i32(const Options &opts, const char *key, int32_t current, int32_t lo = INT32_MIN, int32_t hi = INT32_MAX) {
  if (auto v = opts.get(key)) return static_cast<int32_t>(get_int(opts.env(), *v, opts.name(key), lo, hi));
  return current;
}
int32_t get_flag(const Options &opts, const char *key, int32_t current) {
  if (auto v = opts.get(key)) return get_bool(opts.env(), *v, opts.name(key)) ? 1 : 0;
  return current;
}
float get_float(const Options &opts, const char *key, float current) {
  if (auto v = opts.get(key)) return static_cast<float>(get_number(opts.env(), *v, opts.name(key)));
  return current;
}

void check_init(napi_env env, parley_status st) {
  check(env, st);
}

void read_request(const Options &opts, RequestOptions &r) {
  napi_env env = opts.env();
  check_init(env, (parley_request_options_init)(&r.o));
  if (auto v = opts.get("deadlineMs")) r.o.deadline_ms = get_int(env, *v, opts.name("deadlineMs"), 0, INT64_MAX);
  r.o.return_logprobs = get_flag(opts, "returnLogprobs", r.o.return_logprobs);
  if (auto v = opts.get("noTokens")) {
    if (get_bool(env, *v, opts.name("noTokens"))) r.json_flags |= PARLEY_JSON_NO_TOKENS;
  }
  if (auto v = opts.get("noAttention")) {
    if (get_bool(env, *v, opts.name("noAttention"))) r.json_flags |= PARLEY_JSON_NO_ATTENTION;
  }
}

std::unique_ptr<GenerationOptions> read_generation(const Options &opts, const parley_model *model) {
  auto v = opts.get("generation");
  if (!v) return nullptr;
  return std::make_unique<GenerationOptions>(opts.env(), model, *v, opts.name("generation"));
}

}  // namespace

std::vector<std::string> get_strings(napi_env env, napi_value v, const std::string &what) {
  bool is_array = false;
  ok_or_throw(env, napi_is_array(env, v, &is_array), "napi_is_array");
  if (!is_array) type_error(env, what + " must be an array of strings");
  uint32_t n = 0;
  ok_or_throw(env, napi_get_array_length(env, v, &n), "napi_get_array_length");
  std::vector<std::string> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    napi_value e = nullptr;
    ok_or_throw(env, napi_get_element(env, v, i, &e), "napi_get_element");
    out.push_back(get_string(env, e, what + "[" + std::to_string(i) + "]"));
  }
  return out;
}

std::vector<int32_t> get_ids(napi_env env, napi_value v, const std::string &what) {
  bool typed = false;
  ok_or_throw(env, napi_is_typedarray(env, v, &typed), "napi_is_typedarray");
  if (typed) {
    napi_typedarray_type t{};
    size_t n = 0;
    void *data = nullptr;
    ok_or_throw(env, napi_get_typedarray_info(env, v, &t, &n, &data, nullptr, nullptr), "napi_get_typedarray_info");
    if (t != napi_int32_array) type_error(env, what + " must be an Int32Array or an array of integers");
    std::vector<int32_t> out(n);
    if (n) std::memcpy(out.data(), data, n * sizeof(int32_t));
    return out;
  }
  bool is_array = false;
  ok_or_throw(env, napi_is_array(env, v, &is_array), "napi_is_array");
  if (!is_array) type_error(env, what + " must be an Int32Array or an array of integers");
  uint32_t n = 0;
  ok_or_throw(env, napi_get_array_length(env, v, &n), "napi_get_array_length");
  std::vector<int32_t> out(n);
  for (uint32_t i = 0; i < n; ++i) {
    napi_value e = nullptr;
    ok_or_throw(env, napi_get_element(env, v, i, &e), "napi_get_element");
    out[i] = static_cast<int32_t>(get_int(env, e, what + "[" + std::to_string(i) + "]", INT32_MIN, INT32_MAX));
  }
  return out;
}

ModelOptions::ModelOptions(napi_env env, napi_value v) {
  const Options opts(env, v, "options",
                     {"device", "verifyChecksums", "readIntoMemory", "kvCacheDtype", "servingEngine", "kvBlockSize",
                      "kvCacheBudgetBytes", "maxBatchSequences", "maxBatchTokens", "prefillChunkTokens",
                      "admissionTimeoutMs", "activationDtype"});
  check_init(env, (parley_model_options_init)(&o));
  if (auto d = opts.get("device")) {
    device = get_string(env, *d, opts.name("device"));
    o.device = device.c_str();
  }
  o.verify_checksums = get_flag(opts, "verifyChecksums", o.verify_checksums);
  o.read_into_memory = get_flag(opts, "readIntoMemory", o.read_into_memory);
  o.kv_cache_dtype = get_i32(opts, "kvCacheDtype", o.kv_cache_dtype);
  o.serving_engine = get_flag(opts, "servingEngine", o.serving_engine);
  o.kv_block_size = get_i32(opts, "kvBlockSize", o.kv_block_size);
  if (auto b = opts.get("kvCacheBudgetBytes"))
    o.kv_cache_budget_bytes = get_u64(env, *b, opts.name("kvCacheBudgetBytes"));
  o.max_batch_sequences = get_i32(opts, "maxBatchSequences", o.max_batch_sequences);
  o.max_batch_tokens = get_i32(opts, "maxBatchTokens", o.max_batch_tokens);
  o.prefill_chunk_tokens = get_i32(opts, "prefillChunkTokens", o.prefill_chunk_tokens);
  o.admission_timeout_ms = get_i32(opts, "admissionTimeoutMs", o.admission_timeout_ms);
  o.activation_dtype = get_i32(opts, "activationDtype", o.activation_dtype);
}

GenerationOptions::GenerationOptions(napi_env env, const parley_model *model, napi_value v, const std::string &what) {
  const Options opts(
      env, v, what,
      {"maxNewTokens", "minNewTokens", "numBeams", "numReturnSequences", "lengthPenalty", "earlyStopping",
       "noRepeatNgramSize", "repetitionPenalty", "doSample", "temperature", "topK", "topP", "minP", "seed",
       "eosTokenIds", "grammar", "jsonSchema", "returnLogprobs", "numAlternatives"});
  check_init(env, (parley_generation_options_init)(model, &o));
  o.max_new_tokens = get_size(opts, "maxNewTokens", o.max_new_tokens);
  o.min_new_tokens = get_size(opts, "minNewTokens", o.min_new_tokens);
  o.num_beams = get_size(opts, "numBeams", o.num_beams);
  o.num_return_sequences = get_size(opts, "numReturnSequences", o.num_return_sequences);
  o.length_penalty = get_float(opts, "lengthPenalty", o.length_penalty);
  if (auto e = opts.get("earlyStopping")) {  // true, false or "never", as transformers
    if (type_of(env, *e) == napi_string) {
      if (get_string(env, *e, opts.name("earlyStopping")) != "never") {
        type_error(env, opts.name("earlyStopping") + " must be true, false or \"never\"");
      }
      o.early_stopping = 2;
    } else {
      o.early_stopping = get_bool(env, *e, opts.name("earlyStopping")) ? 1 : 0;
    }
  }
  o.no_repeat_ngram_size = get_size(opts, "noRepeatNgramSize", o.no_repeat_ngram_size);
  o.repetition_penalty = get_float(opts, "repetitionPenalty", o.repetition_penalty);
  o.do_sample = get_flag(opts, "doSample", o.do_sample);
  o.temperature = get_float(opts, "temperature", o.temperature);
  o.top_k = get_size(opts, "topK", o.top_k);
  o.top_p = get_float(opts, "topP", o.top_p);
  o.min_p = get_float(opts, "minP", o.min_p);
  if (auto s = opts.get("seed")) o.seed = get_u64(env, *s, opts.name("seed"));
  if (auto e = opts.get("eosTokenIds")) {
    eos = get_ids(env, *e, opts.name("eosTokenIds"));
    o.eos_token_ids = eos.empty() ? nullptr : eos.data();
    o.num_eos_token_ids = eos.size();
  }
  if (auto g = opts.get("grammar")) {
    grammar = get_string(env, *g, opts.name("grammar"));
    o.grammar = grammar.c_str();
  }
  if (auto s = opts.get("jsonSchema")) {  // a string (index.js serialises an object)
    json_schema = get_string(env, *s, opts.name("jsonSchema"));
    o.json_schema = json_schema.c_str();
  }
  o.return_logprobs = get_flag(opts, "returnLogprobs", o.return_logprobs);
  o.num_alternatives = get_size(opts, "numAlternatives", o.num_alternatives);
}

TranslationOptions::TranslationOptions(napi_env env, const parley_model *model, napi_value v) {
  const Options opts(env, v, "options",
                     {"generation", "sourceLanguage", "targetLanguage", "returnAttention", "attentionLayer",
                      "perTextErrors", "protect", "longText", "protectPatterns", "glossary", "maxSourceTokens",
                      "maxBatchTokens", "deadlineMs", "returnLogprobs", "noTokens", "noAttention", "onText", "signal"});
  check_init(env, (parley_translation_options_init)(&o));
  generation = read_generation(opts, model);
  if (generation) o.generation = &generation->o;
  if (auto s = opts.get("sourceLanguage")) {
    source_language = get_string(env, *s, opts.name("sourceLanguage"));
    o.source_language = source_language.c_str();
  }
  if (auto s = opts.get("targetLanguage")) {
    target_language = get_string(env, *s, opts.name("targetLanguage"));
    o.target_language = target_language.c_str();
  }
  o.return_attention = get_flag(opts, "returnAttention", o.return_attention);
  o.attention_layer = get_i32(opts, "attentionLayer", o.attention_layer);
  o.per_text_errors = get_flag(opts, "perTextErrors", o.per_text_errors);
  if (auto p = opts.get("protect"))
    o.protect = static_cast<uint32_t>(get_int(env, *p, opts.name("protect"), 0, UINT32_MAX));
  o.long_text = get_i32(opts, "longText", o.long_text);
  if (auto p = opts.get("protectPatterns")) {
    patterns = get_strings(env, *p, opts.name("protectPatterns"));
    for (const std::string &s : patterns) pattern_ptrs.push_back(s.c_str());
    o.protect_patterns = pattern_ptrs.data();
    o.num_protect_patterns = pattern_ptrs.size();
  }
  if (auto g = opts.get("glossary")) {
    glossary = get_strings(env, *g, opts.name("glossary"));
    for (const std::string &s : glossary) glossary_ptrs.push_back(s.c_str());
    o.glossary = glossary_ptrs.data();
    o.num_glossary = glossary_ptrs.size();
  }
  o.max_source_tokens = get_size(opts, "maxSourceTokens", o.max_source_tokens);
  o.max_batch_tokens = get_size(opts, "maxBatchTokens", o.max_batch_tokens);
  read_request(opts, request);
}

ChatOptions::ChatOptions(napi_env env, const parley_model *model, napi_value v) {
  const Options opts(
      env, v, "options",
      {"generation", "stopStrings", "contextPolicy", "deadlineMs", "returnLogprobs", "onText", "signal"});
  check_init(env, (parley_chat_options_init)(&o));
  generation = read_generation(opts, model);
  if (generation) o.generation = &generation->o;
  if (auto s = opts.get("stopStrings")) {
    stops = get_strings(env, *s, opts.name("stopStrings"));
    for (const std::string &x : stops) stop_ptrs.push_back(x.c_str());
    o.stop_strings = stop_ptrs.data();
    o.num_stop_strings = stop_ptrs.size();
  }
  if (auto c = opts.get("contextPolicy")) {
    const std::string p = get_string(env, *c, opts.name("contextPolicy"));
    if (p == "error") {
      o.context_policy = PARLEY_CHAT_CONTEXT_ERROR;
    } else if (p == "dropOldest") {
      o.context_policy = PARLEY_CHAT_CONTEXT_DROP_OLDEST;
    } else {
      type_error(env, opts.name("contextPolicy") + " must be \"error\" or \"dropOldest\"");
    }
  }
  read_request(opts, request);
}

GenerateOptions::GenerateOptions(napi_env env, const parley_model *model, napi_value v) {
  const Options opts(env, v, "options",
                     {"generation", "deadlineMs", "returnLogprobs", "noTokens", "onToken", "signal"});
  generation = read_generation(opts, model);
  read_request(opts, request);
}

}  // namespace parley_node
