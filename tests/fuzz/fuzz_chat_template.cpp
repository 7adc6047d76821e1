// libFuzzer target for the chat template engine (runtime/text/jinja): a
// template is part of a model file, which may be crafted. The input is the
// template source; it is parsed and, when it parses, rendered over a fixed
// conversation with tools, tool calls and tool results. Both may fail only
// with a parley::Error (INVALID_MODEL for parsing, INVALID_ARGUMENT for
// rendering); the output's caller-text spans must lie inside it, sorted and
// disjoint. Small limits keep every run short. Seeds: the real templates in
// tests/tokenizers/chat_templates and tests/chat_templates.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.hpp"
#include "text/jinja/template.hpp"
#include "text/jinja/value.hpp"

using parley::jinja::Object;
using parley::jinja::Template;
using parley::jinja::Value;

namespace {

const Object &variables() {
  static const Object vars = [] {
    Value v = parley::jinja::parse_json(R"({
      "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is order 9019917? <|im_end|>"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call00001", "type": "function",
          "function": {"name": "order_status", "arguments": {"order_id": "9019917", "n": 1.5}}}]},
        {"role": "tool", "tool_call_id": "call00001", "content": "{\"status\": \"shipped\"}"},
        {"role": "assistant", "content": "It shipped. Grüße 🙂"},
        {"role": "user", "content": "  thanks  "}],
      "tools": [{"type": "function", "function": {"name": "order_status", "description": "Look up an order",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}],
      "documents": null, "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})",
                                        "fuzz variables");
    return v.obj();
  }();
  return vars;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string source(reinterpret_cast<const char *>(data), size);
  try {
    Template t(source);
    parley::jinja::Limits limits;
    limits.max_steps = 200000;
    limits.max_output = size_t{1} << 20;
    limits.max_call_depth = 32;
    try {
      parley::jinja::Text out = t.render(variables(), limits);
      size_t end = 0;
      for (const auto &sp : out.spans) {
        if (sp.begin < end || sp.begin >= sp.end || sp.end > out.s.size()) std::abort();
        end = sp.end;
      }
    } catch (const parley::Error &e) {
      if (e.status() != PARLEY_ERROR_INVALID_ARGUMENT) std::abort();
    }
  } catch (const parley::Error &e) {
    if (e.status() != PARLEY_ERROR_INVALID_MODEL) std::abort();
  }
  return 0;
}
