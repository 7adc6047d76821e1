#include "text/jinja/value.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/error.hpp"
#include "text/utf8.hpp"

namespace parley::jinja {

const Value *Object::find(std::string_view key) const {
  for (const auto &kv : items)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

void Object::set(std::string key, Value value) {
  for (auto &kv : items)
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  items.emplace_back(std::move(key), std::move(value));
}

Value Value::string(std::string s, std::vector<Span> spans) {
  auto t = std::make_shared<Text>();
  t->s = std::move(s);
  t->spans = std::move(spans);
  return string(std::move(t));
}

Value Value::string(std::shared_ptr<const Text> t) {
  Value v = with(Type::kString);
  v.text_ = std::move(t);
  return v;
}

Value Value::caller_text(std::string s) {
  std::vector<Span> spans;
  if (!s.empty()) spans.push_back({0, s.size()});
  return string(std::move(s), std::move(spans));
}

Value Value::array(Array a) {
  Value v = with(Type::kArray);
  v.arr_ = std::make_shared<const Array>(std::move(a));
  return v;
}

Value Value::tuple(Array a) {
  Value v = array(std::move(a));
  v.b_ = true;
  return v;
}

Value Value::object(Object o) {
  Value v = with(Type::kObject);
  v.obj_ = std::make_shared<Object>(std::move(o));
  return v;
}

Value Value::name_space(Object o) {
  Value v = with(Type::kNamespace);
  v.obj_ = std::make_shared<Object>(std::move(o));
  return v;
}

Value Value::macro(std::shared_ptr<const Macro> m) {
  Value v = with(Type::kMacro);
  v.macro_ = std::move(m);
  return v;
}

Value Value::builtin(std::string name) {
  Value v = string(std::move(name));
  v.type_ = Type::kBuiltin;
  return v;
}

bool Value::truthy() const {
  switch (type_) {
    case Type::kUndefined:
    case Type::kNone:
      return false;
    case Type::kBool:
      return b_;
    case Type::kInt:
      return i_ != 0;
    case Type::kFloat:
      return f_ != 0;
    case Type::kString:
      return !text_->s.empty();
    case Type::kArray:
      return !arr_->empty();
    case Type::kObject:
      return !obj_->items.empty();
    default:
      return true;
  }
}

bool Value::has_caller_text() const {
  switch (type_) {
    case Type::kString:
      return !text_->spans.empty();
    case Type::kArray:
      return std::any_of(arr_->begin(), arr_->end(), [](const Value &v) { return v.has_caller_text(); });
    case Type::kObject:
    case Type::kNamespace:
      return std::any_of(obj_->items.begin(), obj_->items.end(),
                         [](const auto &kv) { return kv.second.has_caller_text(); });
    default:
      return false;
  }
}

const char *type_name(const Value &v) {
  switch (v.type()) {
    case Type::kUndefined:
      return "undefined";
    case Type::kNone:
      return "none";
    case Type::kBool:
      return "bool";
    case Type::kInt:
      return "int";
    case Type::kFloat:
      return "float";
    case Type::kString:
      return "str";
    case Type::kArray:
      return "list";
    case Type::kObject:
      return "dict";
    case Type::kNamespace:
      return "namespace";
    case Type::kMacro:
      return "macro";
    case Type::kBuiltin:
      return "function";
  }
  return "?";
}

bool equal(const Value &a, const Value &b) {
  if (a.is_number() && b.is_number()) {
    if (a.type() == Type::kFloat || b.type() == Type::kFloat) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Type::kUndefined:
    case Type::kNone:
      return true;
    case Type::kString:
      return a.str() == b.str();
    case Type::kArray: {
      if (a.arr().size() != b.arr().size()) return false;
      for (size_t i = 0; i < a.arr().size(); ++i)
        if (!equal(a.arr()[i], b.arr()[i])) return false;
      return true;
    }
    case Type::kObject: {
      if (a.obj().items.size() != b.obj().items.size()) return false;
      for (const auto &kv : a.obj().items) {
        const Value *o = b.obj().find(kv.first);
        if (!o || !equal(kv.second, *o)) return false;
      }
      return true;
    }
    case Type::kNamespace:
      return &a.ns() == &b.ns();
    case Type::kMacro:
      return a.mac() == b.mac();
    case Type::kBuiltin:
      return a.builtin_name() == b.builtin_name();
    default:
      return false;
  }
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  // The shortest digits that read back to d (Python's repr, David Gay's
  // algorithm in CPython); then Python's layout: fixed for 1e-4 <= |d| < 1e16.
  char buf[64];
  int prec = 1;
  for (; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string s = buf;
  bool neg = s[0] == '-';
  if (neg) s.erase(0, 1);
  size_t e = s.find('e');
  int exp = std::atoi(s.c_str() + e + 1);
  std::string digits;
  for (size_t i = 0; i < e; ++i)
    if (s[i] != '.') digits += s[i];
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out += "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
      out += digits + std::string(static_cast<size_t>(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(exp) + 1) + "." + digits.substr(static_cast<size_t>(exp) + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char eb[16];
  std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  return out + eb;
}

namespace {

bool py_printable(uint32_t cp) {
  if (cp < 0x20 || cp == 0x7F) return false;
  if (cp >= 0x80 && cp <= 0xA0) return false;
  if (cp == 0xAD || cp == 0x2028 || cp == 0x2029 || (cp >= 0x200B && cp <= 0x200F) || cp == 0xFEFF) return false;
  return true;
}

void repr_string(std::string &out, std::string_view s) {
  bool dq = s.find('\'') != std::string_view::npos && s.find('"') == std::string_view::npos;
  char q = dq ? '"' : '\'';
  out += q;
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp = utf8::next(s, i);
    if (cp == static_cast<uint32_t>(q) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (!py_printable(cp)) {
      char b[16];
      if (cp < 0x100)
        std::snprintf(b, sizeof b, "\\x%02x", cp);
      else
        std::snprintf(b, sizeof b, "\\u%04x", cp);
      out += b;
    } else {
      utf8::append(out, cp);
    }
  }
  out += q;
}

void repr_into(std::string &out, const Value &v, int depth) {
  if (depth > 512) fail(PARLEY_ERROR_INVALID_ARGUMENT, "a value nests more than 512 levels deep");
  switch (v.type()) {
    case Type::kString:
      repr_string(out, v.str());
      return;
    case Type::kArray:
      out += v.is_tuple() ? '(' : '[';
      for (size_t i = 0; i < v.arr().size(); ++i) {
        if (i) out += ", ";
        repr_into(out, v.arr()[i], depth + 1);
      }
      if (v.is_tuple() && v.arr().size() == 1) out += ',';
      out += v.is_tuple() ? ')' : ']';
      return;
    case Type::kObject:
      out += '{';
      for (size_t i = 0; i < v.obj().items.size(); ++i) {
        if (i) out += ", ";
        repr_string(out, v.obj().items[i].first);
        out += ": ";
        repr_into(out, v.obj().items[i].second, depth + 1);
      }
      out += '}';
      return;
    case Type::kNamespace: {
      out += "<Namespace {";
      for (size_t i = 0; i < v.ns().items.size(); ++i) {
        if (i) out += ", ";
        repr_string(out, v.ns().items[i].first);
        out += ": ";
        repr_into(out, v.ns().items[i].second, depth + 1);
      }
      out += "}>";
      return;
    }
    default:
      out += to_text(v).s;
      return;
  }
}

void json_string(std::string &out, std::string_view s, bool ascii) {
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp = utf8::next(s, i);
    switch (cp) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default: {
        char b[16];
        if (cp < 0x20 || (ascii && cp >= 0x7F && cp < 0x10000)) {
          std::snprintf(b, sizeof b, "\\u%04x", cp);
          out += b;
        } else if (ascii && cp >= 0x10000) {
          uint32_t c = cp - 0x10000;
          std::snprintf(b, sizeof b, "\\u%04x\\u%04x", 0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF));
          out += b;
        } else {
          utf8::append(out, cp);
        }
      }
    }
  }
  out += '"';
}

void json_into(std::string &out, const Value &v, const JsonStyle &st, int level) {
  if (level > 512) fail(PARLEY_ERROR_INVALID_ARGUMENT, "tojson: a value nests more than 512 levels deep");
  auto newline = [&](int l) {
    if (!st.indent) return;
    out += '\n';
    for (int k = 0; k < l; ++k) out += st.indent_text;
  };
  switch (v.type()) {
    case Type::kNone:
      out += "null";
      return;
    case Type::kBool:
      out += v.as_bool() ? "true" : "false";
      return;
    case Type::kInt:
      out += std::to_string(v.as_int());
      return;
    case Type::kFloat: {
      double d = v.as_float();
      out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d < 0 ? "-Infinity" : "Infinity") : float_repr(d);
      return;
    }
    case Type::kString:
      json_string(out, v.str(), st.ensure_ascii);
      return;
    case Type::kArray: {
      if (v.arr().empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < v.arr().size(); ++i) {
        if (i) out += st.item_sep;
        newline(level + 1);
        json_into(out, v.arr()[i], st, level + 1);
      }
      newline(level);
      out += ']';
      return;
    }
    case Type::kObject: {
      if (v.obj().items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value> *> items;
      for (const auto &kv : v.obj().items) items.push_back(&kv);
      if (st.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto *a, auto *b) {
          // Python compares str by code point: UTF-8 byte order is the same.
          return a->first < b->first;
        });
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += st.item_sep;
        newline(level + 1);
        json_string(out, items[i]->first, st.ensure_ascii);
        out += st.key_sep;
        json_into(out, items[i]->second, st, level + 1);
      }
      newline(level);
      out += '}';
      return;
    }
    default:
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           std::string("tojson: Object of type ") + type_name(v) + " is not JSON serializable");
  }
}

class JsonReader {
 public:
  JsonReader(std::string_view s, const char *what) : s_(s), what_(what) {}
  Value document() {
    Value v = value(0);
    ws();
    if (i_ != s_.size()) error("unexpected text after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void error(const std::string &why) {
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         std::string(what_) + ": invalid JSON at byte " + std::to_string(i_) + ": " + why);
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool lit(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  unsigned hex4() {
    if (i_ + 4 > s_.size()) error("truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= static_cast<unsigned>(c - 'A' + 10);
      else
        error("bad \\u escape");
    }
    return v;
  }
  std::string string() {
    ++i_;  // "
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) error("unterminated string");
      char c = s_[i_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) error("unterminated string");
      char e = s_[i_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
          out += static_cast<char>(shared_escape(e));
          break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {
            if (!lit("\\u")) error("unpaired surrogate");
            unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            error("unpaired surrogate");
          }
          utf8::append(out, cp);
          break;
        }
        default:
          error("bad escape");
      }
    }
  }
  Value number() {
    size_t start = i_;
    if (s_[i_] == '-') ++i_;
    if (i_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[i_]))) error("bad number");
    if (s_[i_] == '0' && i_ + 1 < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_ + 1])))
      error("leading zero");
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
    bool is_float = false;
    if (i_ < s_.size() && s_[i_] == '.') {
      is_float = true;
      ++i_;
      if (i_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[i_]))) error("bad number");
      while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      is_float = true;
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (i_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[i_]))) error("bad number");
      while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
    }
    std::string text(s_.substr(start, i_ - start));
    if (is_float) return Value::number(std::strtod(text.c_str(), nullptr));
    errno = 0;
    long long v = std::strtoll(text.c_str(), nullptr, 10);
    if (errno == ERANGE) error("integer out of the 64-bit range");
    return Value::integer(v);
  }
  Value value(int depth) {
    if (depth > 128) error("nested more than 128 levels deep");
    ws();
    if (i_ >= s_.size()) error("unexpected end");
    char c = s_[i_];
    if (c == '{') {
      ++i_;
      Object o;
      ws();
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
        return Value::object(std::move(o));
      }
      for (;;) {
        ws();
        if (i_ >= s_.size() || s_[i_] != '"') error("expected a string key");
        std::string k = string();
        ws();
        if (i_ >= s_.size() || s_[i_] != ':') error("expected ':'");
        ++i_;
        o.set(std::move(k), value(depth + 1));  // a repeated key keeps its first place, last value (json.loads)
        ws();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == '}') {
          ++i_;
          return Value::object(std::move(o));
        }
        error("expected ',' or '}'");
      }
    }
    if (c == '[') {
      ++i_;
      Array a;
      ws();
      if (i_ < s_.size() && s_[i_] == ']') {
        ++i_;
        return Value::array(std::move(a));
      }
      for (;;) {
        a.push_back(value(depth + 1));
        ws();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == ']') {
          ++i_;
          return Value::array(std::move(a));
        }
        error("expected ',' or ']'");
      }
    }
    if (c == '"') return Value::caller_text(string());
    if (lit("true")) return Value::boolean(true);
    if (lit("false")) return Value::boolean(false);
    if (lit("null")) return Value::none();
    return number();
  }

  std::string_view s_;
  const char *what_;
  size_t i_ = 0;
};

}  // namespace

Text to_text(const Value &v) {
  Text t;
  switch (v.type()) {
    case Type::kUndefined:
      break;
    case Type::kNone:
      t.s = "None";
      break;
    case Type::kBool:
      t.s = v.as_bool() ? "True" : "False";
      break;
    case Type::kInt:
      t.s = std::to_string(v.as_int());
      break;
    case Type::kFloat:
      t.s = float_repr(v.as_float());
      break;
    case Type::kString:
      return *v.text();
    case Type::kMacro:
      t.s = "<macro>";
      break;
    case Type::kBuiltin:
      t.s = "<built-in function " + v.builtin_name() + ">";
      break;
    default:
      repr_into(t.s, v, 0);
      if (v.has_caller_text() && !t.s.empty()) t.spans.push_back({0, t.s.size()});
      break;
  }
  return t;
}

std::string repr(const Value &v) {
  std::string out;
  repr_into(out, v, 0);
  return out;
}

std::string to_json(const Value &v, const JsonStyle &style) {
  std::string out;
  json_into(out, v, style, 0);
  return out;
}

Value parse_json(std::string_view json, const char *what) {
  size_t bad = 0;
  if (!utf8::valid(json, &bad))
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         std::string(what) + ": not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
  return JsonReader(json, what).document();
}

}  // namespace parley::jinja
