// JS option objects (camelCase keys) to the C option structs, which are
// filled by the exported parley_*_options_init functions first (defaults,
// struct_size) and then overridden key by key. Each struct keeps the
// strings and arrays it points to alive until the submit call has copied them.
#pragma once

#include <string>
#include <vector>

#include "napi_util.hpp"

namespace parley_node {

struct ModelOptions {
  parley_model_options o{};
  std::string device;
  ModelOptions(napi_env env, napi_value v);
};

struct GenerationOptions {
  parley_generation_options o{};
  std::string grammar, json_schema;
  std::vector<int32_t> eos;
  GenerationOptions(napi_env env, const parley_model *model, napi_value v, const std::string &what);
  GenerationOptions(const GenerationOptions &) = delete;
};

struct RequestOptions {
  parley_request_options o{};
  uint32_t json_flags = 0;  // PARLEY_JSON_* for the result document
};

struct TranslationOptions {
  parley_translation_options o{};
  std::unique_ptr<GenerationOptions> generation;
  std::string source_language, target_language;
  std::vector<std::string> patterns, glossary;
  std::vector<const char *> pattern_ptrs, glossary_ptrs;
  RequestOptions request;
  TranslationOptions(napi_env env, const parley_model *model, napi_value v);
};

struct ChatOptions {
  parley_chat_options o{};
  std::unique_ptr<GenerationOptions> generation;
  std::vector<std::string> stops;
  std::vector<const char *> stop_ptrs;
  RequestOptions request;
  ChatOptions(napi_env env, const parley_model *model, napi_value v);
};

// Generation (token level): generation options and request options in one object.
struct GenerateOptions {
  std::unique_ptr<GenerationOptions> generation;
  RequestOptions request;
  GenerateOptions(napi_env env, const parley_model *model, napi_value v);
};

// An array of strings (JS strings may hold NUL bytes: kept, with lengths).
std::vector<std::string> get_strings(napi_env env, napi_value v, const std::string &what);
// An array of int32 ids: an Array of integers or an Int32Array.
std::vector<int32_t> get_ids(napi_env env, napi_value v, const std::string &what);

}  // namespace parley_node
