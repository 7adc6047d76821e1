// Values of the Jinja subset that renders chat templates (runtime/text/jinja):
// the JSON types a conversation is made of, plus what templates build
// (namespaces, macros). Semantics follow Python as Jinja2 runs it inside
// transformers' ImmutableSandboxedEnvironment (transformers/utils/
// chat_template_utils.py): str() and repr() spelling, json.dumps as its
// `tojson` filter calls it, equality across int/float/bool, truthiness.
//
// A string also records which of its bytes came from the caller's messages
// (`spans`): the chat session encodes those as plain text, so a user cannot
// type a control token; operations that move bytes predictably (+, ~,
// slicing, strip, split) keep the spans exact, others mark the whole result.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace parley::jinja {

struct Span {
  size_t begin, end;
};

struct Text {
  std::string s;
  std::vector<Span> spans;  // sorted, disjoint, non-empty
};

class Value;
using Array = std::vector<Value>;
struct Object {
  std::vector<std::pair<std::string, Value>> items;  // insertion order, unique keys
  const Value *find(std::string_view key) const;
  void set(std::string key, Value value);
};
struct Macro;

enum class Type : uint8_t {
  kUndefined,
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,
  kArray,
  kObject,
  kNamespace,
  kMacro,
  kBuiltin
};

class Value {
 public:
  Value() = default;
  static Value none() { return with(Type::kNone); }
  static Value boolean(bool b) {
    Value v = with(Type::kBool);
    v.b_ = b;
    return v;
  }
  static Value integer(int64_t i) {
    Value v = with(Type::kInt);
    v.i_ = i;
    return v;
  }
  static Value number(double f) {
    Value v = with(Type::kFloat);
    v.f_ = f;
    return v;
  }
  static Value string(std::string s, std::vector<Span> spans = {});
  static Value string(std::shared_ptr<const Text> t);
  // Text wholly from the caller (a message's content).
  static Value caller_text(std::string s);
  static Value array(Array a);
  // A Python tuple: an array that repr() writes with parentheses.
  static Value tuple(Array a);
  static Value object(Object o);
  static Value name_space(Object o);
  static Value macro(std::shared_ptr<const Macro> m);
  static Value builtin(std::string name);

  Type type() const { return type_; }
  bool is_undefined() const { return type_ == Type::kUndefined; }
  bool is_none() const { return type_ == Type::kNone; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_number() const { return type_ == Type::kInt || type_ == Type::kFloat || type_ == Type::kBool; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_tuple() const { return type_ == Type::kArray && b_; }
  bool is_mapping() const { return type_ == Type::kObject || type_ == Type::kNamespace; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return type_ == Type::kBool ? (b_ ? 1 : 0) : i_; }
  double as_float() const { return type_ == Type::kFloat ? f_ : static_cast<double>(as_int()); }
  const std::string &str() const { return text_->s; }
  const std::shared_ptr<const Text> &text() const { return text_; }
  const Array &arr() const { return *arr_; }
  const Object &obj() const { return *obj_; }
  Object &ns() const { return *obj_; }  // namespaces are the one mutable value
  const std::shared_ptr<const Macro> &mac() const { return macro_; }
  const std::string &builtin_name() const { return text_->s; }

  bool truthy() const;
  // Any byte from the caller's messages, anywhere inside.
  bool has_caller_text() const;

 private:
  static Value with(Type t) {
    Value v;
    v.type_ = t;
    return v;
  }
  Type type_ = Type::kUndefined;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const Text> text_;
  std::shared_ptr<const Array> arr_;
  std::shared_ptr<Object> obj_;
  std::shared_ptr<const Macro> macro_;
};

const char *type_name(const Value &v);
// Python's ==, across int/float/bool and deep for lists and dicts.
bool equal(const Value &a, const Value &b);
// Python's str(): strings as they are, lists/dicts as repr. Spans kept for strings.
Text to_text(const Value &v);
std::string repr(const Value &v);
std::string float_repr(double d);
// json.dumps(v, ensure_ascii=False, indent, separators, sort_keys): indent < 0
// means None; an empty `indent_text` with indent >= 0 means that many spaces.
struct JsonStyle {
  bool indent = false;
  std::string indent_text;
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
};
std::string to_json(const Value &v, const JsonStyle &style);
// json.loads for the caller's JSON (tools, tool calls): objects keep their
// key order, integers stay integers; strings count as the caller's text.
// Throws Error(INVALID_ARGUMENT) naming `what` and the byte offset.
Value parse_json(std::string_view json, const char *what);

// The character of the escapes JSON and Python strings share (\b \f \n \r
// \t), or -1.
inline int shared_escape(char e) {
  switch (e) {
    case 'b':
      return '\b';
    case 'f':
      return '\f';
    case 'n':
      return '\n';
    case 'r':
      return '\r';
    case 't':
      return '\t';
    default:
      return -1;
  }
}

}  // namespace parley::jinja
