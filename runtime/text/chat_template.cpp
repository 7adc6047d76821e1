#include "text/chat_template.hpp"

#include <algorithm>
#include <cstdio>

#include "core/error.hpp"

namespace parley {

using jinja::Array;
using jinja::Object;
using jinja::Value;

namespace {

const char *role_name(ChatRole r) {
  switch (r) {
    case ChatRole::kSystem:
      return "system";
    case ChatRole::kUser:
      return "user";
    case ChatRole::kAssistant:
      return "assistant";
    case ChatRole::kTool:
      return "tool";
  }
  return "?";
}

Value message_value(const ChatMessage &m, size_t index) {
  Object o;
  o.set("role", Value::string(role_name(m.role)));
  o.set("content", Value::caller_text(m.content));
  if (!m.tool_calls.empty())
    o.set("tool_calls", jinja::parse_json(m.tool_calls, ("message " + std::to_string(index) + " tool_calls").c_str()));
  if (!m.tool_call_id.empty()) o.set("tool_call_id", Value::caller_text(m.tool_call_id));
  if (!m.name.empty()) o.set("name", Value::caller_text(m.name));
  return Value::object(std::move(o));
}

}  // namespace

ChatTemplate::ChatTemplate(std::string_view source, const std::vector<std::pair<std::string, std::string>> &variables)
    : template_(source) {
  for (const auto &kv : variables) variables_.set(kv.first, Value::string(kv.second));
}

std::string ChatTemplate::render(const std::vector<ChatMessage> &messages, bool add_generation_prompt,
                                 std::vector<std::pair<size_t, size_t>> *text_ranges,
                                 std::string_view tools_json) const {
  // What transformers' render_jinja_template passes: messages, tools and
  // documents (None when absent), add_generation_prompt, then the
  // tokenizer's special tokens.
  Object vars;
  Array msgs;
  for (size_t i = 0; i < messages.size(); ++i) msgs.push_back(message_value(messages[i], i));
  vars.set("messages", Value::array(std::move(msgs)));
  vars.set("tools", tools_json.empty() ? Value::none() : jinja::parse_json(tools_json, "tools"));
  vars.set("documents", Value::none());
  vars.set("add_generation_prompt", Value::boolean(add_generation_prompt));
  for (const auto &kv : variables_.items) vars.set(kv.first, kv.second);
  jinja::Text out = template_.render(vars);
  if (text_ranges) {
    text_ranges->clear();
    for (const jinja::Span &s : out.spans) text_ranges->emplace_back(s.begin, s.end);
  }
  return std::move(out.s);
}

void check_tools_json(std::string_view json) {
  Value v = jinja::parse_json(json, "tools");
  if (!v.is_array()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "tools: expected a JSON array of tool definitions");
  for (size_t i = 0; i < v.arr().size(); ++i)
    if (v.arr()[i].type() != jinja::Type::kObject)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "tools[" + std::to_string(i) + "]: expected a JSON object");
}

void check_tool_calls_json(std::string_view json) {
  Value v = jinja::parse_json(json, "tool_calls");
  if (!v.is_array()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "tool_calls: expected a JSON array");
  for (size_t i = 0; i < v.arr().size(); ++i) {
    const Value &c = v.arr()[i];
    std::string at = "tool_calls[" + std::to_string(i) + "]";
    if (c.type() != jinja::Type::kObject) fail(PARLEY_ERROR_INVALID_ARGUMENT, at + ": expected a JSON object");
    const Value *f = c.obj().find("function");
    if (!f || f->type() != jinja::Type::kObject)
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           at + ": expected a \"function\" object ({\"name\": ..., \"arguments\": ...})");
    const Value *name = f->obj().find("name");
    if (!name || !name->is_string()) fail(PARLEY_ERROR_INVALID_ARGUMENT, at + ".function: expected a \"name\" string");
  }
}

namespace {

bool try_json(std::string_view text, Value *out);

// One call object as a model writes it: {"name", "arguments"|"parameters"}.
bool call_from(const Value &v, size_t id_number, const std::vector<std::string> *declared, Array *calls) {
  if (v.type() != jinja::Type::kObject) return false;
  const Value *name = v.obj().find("name");
  const Value *args = v.obj().find("arguments");
  if (!args) args = v.obj().find("parameters");
  if (!name || !name->is_string() || !args) return false;
  // A function the request did not offer is no call a client could make.
  if (declared && std::find(declared->begin(), declared->end(), name->str()) == declared->end()) return false;
  // Arguments are an object; some models write it as a JSON string.
  Value object;
  if (args->is_string() && try_json(args->str(), &object) && object.type() == jinja::Type::kObject) args = &object;
  if (args->type() != jinja::Type::kObject) return false;
  Object fn;
  fn.set("name", *name);
  fn.set("arguments", *args);
  Object call;
  const Value *id = v.obj().find("id");
  char buf[16];
  std::snprintf(buf, sizeof buf, "call%05zu", 1 + (id_number - 1) % 99999);
  call.set("id", id && id->is_string() ? *id : Value::string(buf));
  call.set("type", Value::string("function"));
  call.set("function", Value::object(std::move(fn)));
  calls->push_back(Value::object(std::move(call)));
  return true;
}

bool try_json(std::string_view text, Value *out) {
  try {
    *out = jinja::parse_json(text, "tool call");
    return true;
  } catch (const Error &) {
    return false;
  }
}

}  // namespace

std::vector<std::string> declared_tool_names(std::string_view tools_json) {
  std::vector<std::string> names;
  Value v = jinja::parse_json(tools_json, "tools");
  if (!v.is_array()) return names;
  for (const Value &t : v.arr()) {
    if (t.type() != jinja::Type::kObject) continue;
    const Value *fn = t.obj().find("function");
    const Value *name = fn && fn->type() == jinja::Type::kObject ? fn->obj().find("name") : t.obj().find("name");
    if (name && name->is_string()) names.push_back(name->str());
  }
  return names;
}

size_t count_tool_calls(std::string_view calls_json) {
  Value v;
  return try_json(calls_json, &v) && v.is_array() ? v.arr().size() : 0;
}

bool parse_tool_calls(std::string_view reply, std::string *calls_json, std::string *content, size_t first_id,
                      const std::vector<std::string> *declared) {
  if (first_id == 0) first_id = 1;
  Array calls;
  std::string rest;
  static constexpr std::string_view kOpen = "<tool_call>", kClose = "</tool_call>";
  if (reply.find(kOpen) != std::string_view::npos) {
    size_t pos = 0;
    for (;;) {
      size_t open = reply.find(kOpen, pos);
      if (open == std::string_view::npos) {
        rest += reply.substr(pos);
        break;
      }
      rest += reply.substr(pos, open - pos);
      size_t body = open + kOpen.size();
      size_t close = reply.find(kClose, body);
      std::string_view inner =
          reply.substr(body, close == std::string_view::npos ? std::string_view::npos : close - body);
      Value v;
      if (!try_json(trim_unicode_space(inner), &v) || !call_from(v, first_id + calls.size(), declared, &calls))
        return false;
      if (close == std::string_view::npos) break;  // the reply stopped before </tool_call>
      pos = close + kClose.size();
    }
  } else {
    std::string_view t = trim_unicode_space(reply);
    for (std::string_view marker : {std::string_view("[TOOL_CALLS]"), std::string_view("<|python_tag|>")})
      if (t.substr(0, marker.size()) == marker) t = trim_unicode_space(t.substr(marker.size()));
    if (t.empty() || (t.front() != '{' && t.front() != '[')) return false;
    Value v;
    if (!try_json(t, &v)) return false;
    if (v.is_array()) {
      if (v.arr().empty()) return false;
      for (const Value &c : v.arr())
        if (!call_from(c, first_id + calls.size(), declared, &calls)) return false;
    } else if (!call_from(v, first_id, declared, &calls)) {
      return false;
    }
  }
  if (calls.empty()) return false;
  jinja::JsonStyle style;
  *calls_json = jinja::to_json(Value::array(std::move(calls)), style);
  *content = std::string(trim_unicode_space(rest));
  return true;
}

}  // namespace parley
