// Renders a conversation with the model's own Jinja chat template (the
// `chat_template` source in the model file), through the embedded Jinja
// subset (text/jinja), exactly as transformers' apply_chat_template does.
// Used where the per-role reduction (chat_format.hpp) does not apply: files
// whose template does not reduce, and conversations with tools, tool calls
// and tool results.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/chat_format.hpp"
#include "text/jinja/template.hpp"

namespace parley {

class ChatTemplate {
 public:
  // `variables`: the strings transformers passes besides the conversation
  // (the tokenizer's special tokens: bos_token, eos_token, ...). Throws
  // Error(INVALID_MODEL) naming the line and column of a syntax error.
  ChatTemplate(std::string_view source, const std::vector<std::pair<std::string, std::string>> &variables);

  // The prompt for `messages` (tools: a JSON array of tool definitions, or
  // empty for none). text_ranges as for ChatFormat::render: the bytes that
  // came from the caller (message contents, tool definitions and calls).
  // Throws Error(INVALID_ARGUMENT) when the template refuses the
  // conversation (raise_exception) or rendering fails.
  std::string render(const std::vector<ChatMessage> &messages, bool add_generation_prompt,
                     std::vector<std::pair<size_t, size_t>> *text_ranges, std::string_view tools_json) const;

 private:
  jinja::Template template_;
  jinja::Object variables_;
};

// Validates a tools array (JSON array of objects) / a message's tool calls
// (JSON array of objects with a "function" object holding a "name" string);
// throws Error(INVALID_ARGUMENT) naming what is wrong.
void check_tools_json(std::string_view json);
void check_tool_calls_json(std::string_view json);

// The tool calls in a model's reply, in the form messages carry them
// (Hugging Face / OpenAI: [{"id", "type": "function", "function": {"name",
// "arguments": {...}}}]), and the reply's text outside them. Recognises
// Hermes/Qwen2.5 "<tool_call>{...}</tool_call>" blocks, and a reply that is
// (after an optional "[TOOL_CALLS]" or "<|python_tag|>") a JSON object or
// array of objects with "name" and "arguments" or "parameters" (Mistral,
// Llama-3.1). Calls without an id get "call00001", "call00002", ... from
// `first_id` on (nine alphanumeric characters, as Mistral's template
// requires; a conversation passes the number of calls it holds plus one, so
// that ids stay unique in it). A call must name a function and carry its
// arguments as a JSON object (or a string holding one, taken as the object);
// with `declared`, the function must be one of those names. Returns false
// (outputs untouched) when the reply holds no such call, or holds another.
bool parse_tool_calls(std::string_view reply, std::string *calls_json, std::string *content, size_t first_id = 1,
                      const std::vector<std::string> *declared = nullptr);
// The function names of a tools array (check_tools_json's): each entry's
// "function"."name", or its own "name".
std::vector<std::string> declared_tool_names(std::string_view tools_json);
// The number of calls in a tool_calls JSON array (0 for anything else).
size_t count_tool_calls(std::string_view calls_json);

}  // namespace parley
