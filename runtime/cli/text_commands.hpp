// `parley translate`, `parley chat` and `parley convert`: text front ends
// over the public C API (and, for convert, the Python converter).
#pragma once

#include <parley/parley.h>

#include <cstdint>
#include <string>
#include <vector>

struct parley_runtime;

namespace parley_cli {

struct TranslateArgs {
  std::string model, source_language, target_language;
  int32_t kv_cache = 0;  // parley_model_options.kv_cache_dtype (--kv-cache)
  size_t beam = 0, nbest = 1, batch = 16, max_length = 0;
  float length_penalty = 0.f;  // 0: the model's default
  bool scores = false;
  std::string input;          // file to read ("" = stdin)
  std::string unit = "line";  // line | paragraph | document
  std::string long_text = "split";
  size_t max_source_tokens = 0, max_batch_tokens = 0;
  std::string protect;  // comma-separated classes
  std::vector<std::string> protect_patterns, glossary;
  std::string glossary_file;
  bool show_protected = false;
  bool json = false;  // --json: one JSON object per input line on stdout
};

struct ChatArgs {
  std::string model, system, system_file;
  std::string grammar_file, json_schema_file;  // constrained replies (docs/constrained_output.md)
  int32_t kv_cache = 0;                        // parley_model_options.kv_cache_dtype (--kv-cache)
  std::vector<std::string> stop;
  size_t max_tokens = 0;
  bool sample = false, show_stats = false;
  float temperature = 0.f, top_p = 0.f;
  size_t top_k = 0;
  uint64_t seed = 0;
  bool json = false;              // --json: one JSON object per reply on stdout (no streaming)
  std::string context = "error";  // --context: error | drop-oldest (parley_chat_options.context_policy)
};

struct ScoreArgs {
  std::string model, source_language, target_language, input;
  bool per_token = false;
  bool json = false;  // --json: one JSON object per input line on stdout
};

int translate(parley_runtime *rt, const TranslateArgs &a);
int score(parley_runtime *rt, const ScoreArgs &a);  // score_command.cpp
int chat(parley_runtime *rt, const ChatArgs &a);
int convert(const std::vector<std::string> &args);  // convert_command.cpp

// --json forms of `parley plugins` and `parley inspect` (json_commands.cpp).
int plugins_json(parley_runtime *rt);
// The CLI's name of a KV-cache or activation element type (--kv-cache, --activations).
inline const char *type_label(int32_t dtype) {
  return dtype == PARLEY_DTYPE_F16    ? "f16"
         : dtype == PARLEY_DTYPE_BF16 ? "bf16"
         : dtype == PARLEY_DTYPE_I8   ? "int8"
                                      : "f32";
}

int inspect_json(parley_runtime *rt, const std::string &path, bool verify, const std::string &device, int32_t kv_cache,
                 int32_t activations);

}  // namespace parley_cli
