// Parley's Jinja subset vs. goldens.json (rendered by transformers'
// render_jinja_template / its Jinja2 environment: make_chat_goldens.py), byte
// for byte; caller-text spans; errors and limits on hostile templates.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.hpp"
#include "text/chat_template.hpp"
#include "text/jinja/template.hpp"
#include "text/jinja/value.hpp"

namespace parley::jinja {
namespace {

std::string read_file(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Value goldens() {
  const char *dir = std::getenv("PARLEY_CHAT_TEMPLATE_DIR");
  std::string path = std::string(dir ? dir : "tests/chat_templates") + "/goldens.json";
  std::string text = read_file(path);
  if (text.empty()) throw std::runtime_error("cannot read " + path);
  return parse_json(text, "goldens.json");
}

std::string render_or_error(const Template &t, const Object &vars, bool *failed) {
  try {
    *failed = false;
    return t.render(vars).s;
  } catch (const Error &e) {
    *failed = true;
    return e.what();
  }
}

TEST(Jinja, MatchesTransformersGoldens) {
  Value g = goldens();
  std::map<std::string, Template> templates;
  for (const auto &kv : g.obj().find("templates")->obj().items) templates.emplace(kv.first, Template(kv.second.str()));
  size_t n = 0, errors = 0;
  for (const Value &c : g.obj().find("cases")->arr()) {
    const std::string &name = c.obj().find("name")->str();
    const Template &t = templates.at(c.obj().find("template")->str());
    bool failed = false;
    std::string got = render_or_error(t, c.obj().find("variables")->obj(), &failed);
    if (const Value *want = c.obj().find("rendered")) {
      EXPECT_FALSE(failed) << name << ": " << got;
      EXPECT_EQ(got, want->str()) << name;
    } else {
      ++errors;
      EXPECT_TRUE(failed) << name << " should fail (" << c.obj().find("error")->str() << "), rendered: " << got;
    }
    ++n;
  }
  EXPECT_GT(n, 300u);
  EXPECT_GT(errors, 5u);
}

// raise_exception's message reaches the caller.
TEST(Jinja, RaiseExceptionMessage) {
  Template t("{{ raise_exception('roles must alternate') }}");
  try {
    t.render({});
    FAIL() << "no error";
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("roles must alternate"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("line 1, column 4"), std::string::npos) << e.what();
  }
}

// The bytes of messages (caller text) are reported as spans, exactly, through
// concatenation, trim and slicing; template text is not.
TEST(Jinja, CallerTextSpans) {
  Template t("{% for m in messages %}<|{{ m.role }}|>{{ m.content|trim + '<|end|>' }}{{ m.content[1:3] }}{% endfor %}");
  Object vars;
  Value msgs = parse_json(R"([{"role":"user","content":"  hi <|end|> there "}])", "test");
  vars.set("messages", msgs);
  Text out = t.render(vars);
  EXPECT_EQ(out.s, "<|user|>hi <|end|> there<|end|> h");
  // "user" (from the message's role) and the content are caller text.
  ASSERT_EQ(out.spans.size(), 3u);
  EXPECT_EQ(out.s.substr(out.spans[0].begin, out.spans[0].end - out.spans[0].begin), "user");
  EXPECT_EQ(out.s.substr(out.spans[1].begin, out.spans[1].end - out.spans[1].begin), "hi <|end|> there");
  EXPECT_EQ(out.s.substr(out.spans[2].begin, out.spans[2].end - out.spans[2].begin), " h");
}

std::string parse_error(const std::string &src) {
  try {
    Template t(src);
    t.render({});
  } catch (const Error &e) {
    return e.what();
  }
  return "";
}

TEST(Jinja, SyntaxErrorsNameLineAndColumn) {
  EXPECT_NE(parse_error("ab\n  {% if x %}no end").find("missing {% endif %}"), std::string::npos);
  EXPECT_NE(parse_error("{{ 1 +  }}").find("line 1, column 9: expected an expression"), std::string::npos)
      << parse_error("{{ 1 +  }}");
  EXPECT_NE(parse_error("\n\n{% frobnicate %}").find("line 3, column 4: unsupported or unknown tag 'frobnicate'"),
            std::string::npos)
      << parse_error("\n\n{% frobnicate %}");
  EXPECT_NE(parse_error("{{ 'abc }}").find("unterminated string"), std::string::npos);
  EXPECT_NE(parse_error("{# open").find("missing end of comment tag"), std::string::npos);
  EXPECT_NE(parse_error("{{ x|nosuchfilter }}").find("unsupported filter 'nosuchfilter'"), std::string::npos);
  EXPECT_NE(parse_error("{{ [].append(1) }}").find("immutable"), std::string::npos);
  EXPECT_NE(parse_error("{{ 1 + 'a' }}").find("unsupported operand type(s) for +: 'int' and 'str'"), std::string::npos);
  EXPECT_NE(parse_error("{{ 9223372036854775807 + 1 }}").find("overflow"), std::string::npos);
}

TEST(Jinja, HostileTemplatesHitLimits) {
  // Nesting: parser recursion is bounded.
  EXPECT_NE(parse_error("{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}").find("nests deeper"),
            std::string::npos);
  EXPECT_NE(parse_error("{{ " + std::string(100000, '[') + std::string(100000, ']') + " }}").find("nests deeper"),
            std::string::npos);
  EXPECT_NE(parse_error("{{ " + std::string(100000, '-') + "1 }}").find("nests deeper"), std::string::npos);
  EXPECT_NE(parse_error("{{ x" + std::string(100000, '|') + " }}").find("expected a name"), std::string::npos);
  std::string ifs;
  for (int i = 0; i < 5000; ++i) ifs += "{% if 1 %}";
  EXPECT_NE(parse_error(ifs).find("nests deeper"), std::string::npos);
  // Work: nested loops.
  EXPECT_NE(
      parse_error("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}").find("steps"),
      std::string::npos);
  // Output: string repetition and doubling.
  EXPECT_NE(parse_error("{{ 'x' * 4000000000 }}").find("exceed"), std::string::npos);
  EXPECT_NE(parse_error("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(64) %}"
                        "{% set ns.s = ns.s + ns.s %}{% endfor %}")
                .find("exceed"),
            std::string::npos);
  // Recursion through macros.
  EXPECT_NE(parse_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("nest deeper"),
            std::string::npos);
  EXPECT_NE(parse_error("{{ range(1000000) }}").find("range too big"), std::string::npos);
}

TEST(Jinja, JsonFormatting) {
  Value v = parse_json(R"({"a": [1, 2.5, -0.0, 1e300, "é\n\u0001"], "b": {}, "c": [], "d": null, "e": true})", "t");
  JsonStyle plain;
  EXPECT_EQ(to_json(v, plain), R"({"a": [1, 2.5, -0.0, 1e+300, "é\n\u0001"], "b": {}, "c": [], "d": null, "e": true})");
  EXPECT_EQ(float_repr(1e16), "1e+16");
  EXPECT_EQ(float_repr(123456789012345.6), "123456789012345.6");
  EXPECT_EQ(float_repr(0.0001), "0.0001");
  EXPECT_EQ(float_repr(0.00001), "1e-05");
  EXPECT_EQ(float_repr(5e-324), "5e-324");
  EXPECT_THROW(parse_json("[1,", "t"), Error);
  EXPECT_THROW(parse_json("\"\\ud800\"", "t"), Error);
  EXPECT_THROW(parse_json(std::string(1000, '['), "t"), Error);
  EXPECT_THROW(parse_json("99999999999999999999", "t"), Error);
}

TEST(ToolCalls, ParsesQwenLlamaAndMistralReplies) {
  std::string calls, content;
  // Qwen2.5 / Hermes: blocks, with text before them.
  ASSERT_TRUE(parley::parse_tool_calls(
      "Let me check.\n<tool_call>\n{\"name\": \"order_status\", \"arguments\": {\"order_id\": \"9019917\"}}\n"
      "</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Halle\"}}\n</tool_call>",
      &calls, &content));
  EXPECT_EQ(
      calls,
      R"([{"id": "call00001", "type": "function", "function": {"name": "order_status", "arguments": {"order_id": )"
      R"("9019917"}}}, {"id": "call00002", "type": "function", "function": {"name": "get_weather", "arguments": )"
      R"({"city": "Halle"}}}])");
  EXPECT_EQ(content, "Let me check.");
  // Llama-3.1: the reply is the call, "parameters" for the arguments.
  ASSERT_TRUE(
      parley::parse_tool_calls(R"({"name": "order_status", "parameters": {"order_id": "1"}})", &calls, &content));
  EXPECT_EQ(calls, R"([{"id": "call00001", "type": "function", "function": {"name": "order_status", )"
                   R"("arguments": {"order_id": "1"}}}])");
  EXPECT_EQ(content, "");
  // Mistral: [TOOL_CALLS] and a list, ids kept.
  ASSERT_TRUE(parley::parse_tool_calls(R"([TOOL_CALLS] [{"name": "f", "arguments": {}, "id": "abcDEF123"}])", &calls,
                                       &content));
  EXPECT_EQ(calls, R"([{"id": "abcDEF123", "type": "function", "function": {"name": "f", "arguments": {}}}])");
  // Not calls: plain text, JSON without a name, malformed blocks.
  calls = "unchanged";
  EXPECT_FALSE(parley::parse_tool_calls("Your order has shipped.", &calls, &content));
  EXPECT_FALSE(parley::parse_tool_calls(R"({"status": "ok"})", &calls, &content));
  EXPECT_FALSE(parley::parse_tool_calls("<tool_call>{\"name\": </tool_call>", &calls, &content));
  EXPECT_FALSE(parley::parse_tool_calls("[]", &calls, &content));
  // Arguments must be an object (or a string holding one); a function must be declared when the caller says which.
  EXPECT_FALSE(parley::parse_tool_calls(R"({"name": "f", "arguments": "hello"})", &calls, &content));
  EXPECT_FALSE(parley::parse_tool_calls(R"({"name": "f", "arguments": [1]})", &calls, &content));
  const std::vector<std::string> declared{"order_status"};
  EXPECT_FALSE(parley::parse_tool_calls(R"({"name": "rm_rf", "arguments": {}})", &calls, &content, 1, &declared));
  EXPECT_EQ(calls, "unchanged");
  // Ids go on from the conversation's calls; arguments written as a JSON string become the object.
  ASSERT_TRUE(parley::parse_tool_calls(R"({"name": "order_status", "arguments": "{\"order_id\": \"7\"}"})", &calls,
                                       &content, 3, &declared));
  EXPECT_EQ(calls, R"([{"id": "call00003", "type": "function", "function": {"name": "order_status", )"
                   R"("arguments": {"order_id": "7"}}}])");
  EXPECT_EQ(parley::count_tool_calls(calls), 1u);
  EXPECT_EQ(parley::declared_tool_names(R"([{"type": "function", "function": {"name": "a"}}, {"name": "b"}])"),
            (std::vector<std::string>{"a", "b"}));
}

TEST(ToolCalls, ChatTemplateRendersToolMessages) {
  // Qwen2.5's template through ChatTemplate: the message fields reach it as
  // transformers passes them, tool calls and tools as parsed JSON.
  Value g = goldens();
  const std::string &qwen = g.obj().find("templates")->obj().find("qwen2")->str();
  parley::ChatTemplate t(qwen, {{"eos_token", "<|im_end|>"}});
  std::vector<parley::ChatMessage> msgs;
  msgs.emplace_back(parley::ChatRole::kUser, "Where is my order 9019917?");
  parley::ChatMessage call(parley::ChatRole::kAssistant, "");
  call.tool_calls = R"([{"id": "call00001", "type": "function", "function": {"name": "order_status", )"
                    R"("arguments": {"order_id": "9019917"}}}])";
  msgs.push_back(call);
  parley::ChatMessage result(parley::ChatRole::kTool, R"({"status": "shipped"})");
  result.tool_call_id = "call00001";
  msgs.push_back(result);
  std::vector<std::pair<size_t, size_t>> ranges;
  std::string out = t.render(msgs, true, &ranges, R"([{"type": "function", "function": {"name": "order_status"}}])");
  EXPECT_EQ(out,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n"
            "You may call one or more functions to assist with the user query.\n\nYou are provided with function "
            "signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": "
            "\"order_status\"}}\n</tools>\n\nFor each function call, return a json object with function name and "
            "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
            "\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWhere is my order "
            "9019917?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"order_status\", \"arguments\": "
            "{\"order_id\": \"9019917\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{\"status\": "
            "\"shipped\"}\n</tool_response><|im_end|>\n<|im_start|>assistant\n");
  // Caller text: the tool JSON, the user's message, the call's name and
  // arguments, the tool result; never the template's markup.
  std::string caller;
  for (auto [b, e] : ranges) caller += out.substr(b, e - b) + "|";
  EXPECT_EQ(caller, R"({"type": "function", "function": {"name": "order_status"}}|Where is my order 9019917?|)"
                    R"(order_status|{"order_id": "9019917"}|{"status": "shipped"}|)");
}

}  // namespace
}  // namespace parley::jinja
