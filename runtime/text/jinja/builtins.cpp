#include "text/jinja/builtins.hpp"

#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <ctime>

#include "core/error.hpp"
#include "text/chat_format.hpp"
#include "text/utf8.hpp"

namespace parley::jinja {

namespace {

[[noreturn]] void bad(const std::string &why) {
  fail(PARLEY_ERROR_INVALID_ARGUMENT, why);
}

std::string quoted(const std::string &s) {
  return "'" + s + "'";
}

const std::string &need_string(const Value &v, const char *what) {
  if (!v.is_string()) bad(std::string(what) + ": expected a string, got " + type_name(v));
  return v.str();
}

int64_t need_int(const Value &v, const char *what) {
  if (v.type() != Type::kInt && v.type() != Type::kBool)
    bad(std::string(what) + ": expected an integer, got " + type_name(v));
  return v.as_int();
}

// Python str(x) for filters that call soft_str (Undefined gives "").
Text soft_text(const Value &v) {
  return to_text(v);
}

// A string wholly marked as the caller's when any of its inputs was.
Value derived(std::string s, bool caller) {
  std::vector<Span> spans;
  if (caller && !s.empty()) spans.push_back({0, s.size()});
  return Value::string(std::move(s), std::move(spans));
}

std::string map_case(std::string_view s, int (*f)(utf8proc_int32_t)) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) utf8::append(out, static_cast<uint32_t>(f(static_cast<utf8proc_int32_t>(utf8::next(s, i)))));
  return out;
}
int to_upper(utf8proc_int32_t c) {
  return utf8proc_toupper(c);
}
int to_lower(utf8proc_int32_t c) {
  return utf8proc_tolower(c);
}

std::string capitalize(std::string_view s) {
  std::string out;
  size_t i = 0;
  bool first = true;
  while (i < s.size()) {
    auto c = static_cast<utf8proc_int32_t>(utf8::next(s, i));
    utf8::append(out, static_cast<uint32_t>(first ? utf8proc_totitle(c) : utf8proc_tolower(c)));
    first = false;
  }
  return out;
}

// Python's str.title(): a letter after a non-letter is upper-cased, others lowered.
std::string title(std::string_view s) {
  std::string out;
  size_t i = 0;
  bool prev_cased = false;
  while (i < s.size()) {
    auto c = static_cast<utf8proc_int32_t>(utf8::next(s, i));
    utf8proc_category_t cat = utf8proc_category(c);
    bool cased = cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
    utf8::append(out, static_cast<uint32_t>(cased ? (prev_cased ? utf8proc_tolower(c) : utf8proc_totitle(c)) : c));
    prev_cased = cased;
  }
  return out;
}

bool in_chars(uint32_t cp, std::string_view chars) {
  size_t i = 0;
  while (i < chars.size())
    if (utf8::next(chars, i) == cp) return true;
  return false;
}

// str.strip/lstrip/rstrip([chars]).
Value strip(const Value &v, const Value *chars, bool left, bool right) {
  const Text &t = *v.text();
  std::string_view s = t.s;
  bool ws = !chars || chars->is_none() || chars->is_undefined();
  std::string_view cs = ws ? std::string_view() : std::string_view(need_string(*chars, "strip"));
  auto strip_cp = [&](uint32_t cp) {
    if (ws) {
      std::string tmp;
      utf8::append(tmp, cp);
      return trim_unicode_space(tmp).empty();
    }
    return in_chars(cp, cs);
  };
  size_t b = 0, e = s.size();
  if (left)
    while (b < e) {
      size_t i = b;
      if (!strip_cp(utf8::next(s, i))) break;
      b = i;
    }
  if (right)
    while (e > b) {
      size_t start = e - 1;
      while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      size_t i = start;
      if (!strip_cp(utf8::next(s, i))) break;
      e = start;
    }
  return substring(t, b, e);
}

Value split(Budget &budget, const Value &v, const Value *sep_v, const Value *maxsplit_v) {
  const Text &t = *v.text();
  std::string_view s = t.s;
  int64_t maxsplit = maxsplit_v && !maxsplit_v->is_none() ? need_int(*maxsplit_v, "split maxsplit") : -1;
  Array out;
  if (!sep_v || sep_v->is_none()) {  // runs of whitespace, none at the ends
    size_t i = 0;
    auto space_at = [&](size_t at, size_t *next) {
      size_t j = at;
      uint32_t cp = utf8::next(s, j);
      *next = j;
      std::string tmp;
      utf8::append(tmp, cp);
      return trim_unicode_space(tmp).empty();
    };
    size_t nx = 0;
    while (i < s.size()) {
      while (i < s.size() && space_at(i, &nx)) i = nx;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = s.size();
        Value rest = strip(substring(t, i, e), nullptr, false, true);
        out.push_back(rest);
        break;
      }
      size_t b = i;
      while (i < s.size() && !space_at(i, &nx)) i = nx;
      out.push_back(substring(t, b, i));
      budget.work();
    }
    return Value::array(std::move(out));
  }
  const std::string &sep = need_string(*sep_v, "split separator");
  if (sep.empty()) bad("split: empty separator");
  size_t b = 0;
  for (;;) {
    budget.work();
    size_t at =
        (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) ? std::string_view::npos : s.find(sep, b);
    if (at == std::string_view::npos) {
      out.push_back(substring(t, b, s.size()));
      break;
    }
    out.push_back(substring(t, b, at));
    b = at + sep.size();
  }
  return Value::array(std::move(out));
}

Value json_filter(const Value &v, const Args &a) {
  a.allow("tojson", 4, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonStyle st;
  if (const Value *x = a.get(0, "ensure_ascii")) st.ensure_ascii = x->truthy();
  if (const Value *x = a.get(1, "indent"); x && !x->is_none()) {
    st.indent = true;
    if (x->is_string()) {
      st.indent_text = x->str();
    } else {
      int64_t n = need_int(*x, "tojson indent");
      st.indent_text = std::string(static_cast<size_t>(std::clamp<int64_t>(n, 0, 64)), ' ');
    }
    st.item_sep = ",";
  }
  if (const Value *x = a.get(2, "separators"); x && !x->is_none()) {
    if (!x->is_array() || x->arr().size() != 2 || !x->arr()[0].is_string() || !x->arr()[1].is_string())
      bad("tojson: separators must be a pair of strings");
    st.item_sep = x->arr()[0].str();
    st.key_sep = x->arr()[1].str();
  }
  if (const Value *x = a.get(3, "sort_keys")) st.sort_keys = x->truthy();
  return derived(to_json(v, st), v.has_caller_text());
}

}  // namespace

Array iterate(const Value &v, const char *what) {
  switch (v.type()) {
    case Type::kUndefined:
      return {};
    case Type::kArray:
      return v.arr();
    case Type::kObject: {
      Array keys;
      for (const auto &kv : v.obj().items) keys.push_back(Value::string(kv.first));
      return keys;
    }
    case Type::kString: {
      Array chars;
      std::vector<size_t> cps = code_points(v.str());
      for (size_t k = 0; k + 1 < cps.size(); ++k) chars.push_back(substring(*v.text(), cps[k], cps[k + 1]));
      return chars;
    }
    default:
      bad((what ? std::string(what) + ": '" : std::string("'")) + type_name(v) + "' object is not iterable");
  }
}

namespace {

Value get_attribute(const Value &v, const std::string &path) {
  Value cur = v;
  size_t b = 0;
  for (;;) {
    size_t dot = path.find('.', b);
    std::string part = path.substr(b, dot == std::string::npos ? std::string::npos : dot - b);
    const Value *next = cur.is_mapping() ? cur.obj().find(part) : nullptr;
    if (!next && cur.is_array() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
      size_t k = std::stoul(part);
      if (k < cur.arr().size()) next = &cur.arr()[k];
    }
    cur = next ? *next : Value();
    if (dot == std::string::npos) return cur;
    b = dot + 1;
  }
}

// select/reject/selectattr/rejectattr: (attribute,) test name, test args.
Value select(Budget &budget, const Value &v, const Args &a, bool by_attr, bool keep) {
  Array out;
  size_t first_test = by_attr ? 1 : 0;
  std::string attr;
  if (by_attr) {
    if (a.pos.empty() || !a.pos[0].is_string()) bad("selectattr/rejectattr: expected an attribute name");
    attr = a.pos[0].str();
  }
  std::string test;
  Args targs;
  if (a.pos.size() > first_test) {
    test = need_string(a.pos[first_test], "select test name");
    targs.pos.assign(a.pos.begin() + static_cast<std::ptrdiff_t>(first_test) + 1, a.pos.end());
  }
  for (const Value &item : iterate(v, "select")) {
    budget.work();
    Value x = by_attr ? get_attribute(item, attr) : item;
    bool ok = test.empty() ? x.truthy() : apply_test(budget, test, x, targs);
    if (ok == keep) out.push_back(item);
  }
  return Value::array(std::move(out));
}

Value map_filter(Budget &budget, const Value &v, const Args &a) {
  Array out;
  const Value *attribute = nullptr;
  for (const auto &kv : a.kw)
    if (kv.first == "attribute") attribute = &kv.second;
  if (attribute) {
    const Value *dflt = nullptr;
    for (const auto &kv : a.kw)
      if (kv.first == "default")
        dflt = &kv.second;
      else if (kv.first != "attribute")
        bad("map: unexpected argument '" + kv.first + "'");
    std::string path = need_string(*attribute, "map attribute");
    for (const Value &item : iterate(v, "map")) {
      budget.work();
      Value x = get_attribute(item, path);
      out.push_back(x.is_undefined() && dflt ? *dflt : x);
    }
    return Value::array(std::move(out));
  }
  if (a.pos.empty() || !a.pos[0].is_string()) bad("map: expected a filter name or attribute=");
  Args fargs;
  fargs.pos.assign(a.pos.begin() + 1, a.pos.end());
  fargs.kw = a.kw;
  for (const Value &item : iterate(v, "map")) {
    budget.work();
    out.push_back(apply_filter(budget, a.pos[0].str(), item, fargs));
  }
  return Value::array(std::move(out));
}

size_t length(const Value &v) {
  switch (v.type()) {
    case Type::kUndefined:
      return 0;
    case Type::kString:
      return code_points(v.str()).size() - 1;
    case Type::kArray:
      return v.arr().size();
    case Type::kObject:
    case Type::kNamespace:
      return v.obj().items.size();
    default:
      bad(std::string("object of type '") + type_name(v) + "' has no len()");
  }
}

bool parse_int(const std::string &s, int64_t *out) {
  std::string_view t = trim_unicode_space(s);
  std::string clean;
  for (char c : t)
    if (c != '_') clean += c;
  if (clean.empty()) return false;
  char *end = nullptr;
  errno = 0;
  long long v = std::strtoll(clean.c_str(), &end, 10);
  if (errno || *end) return false;
  *out = v;
  return true;
}

}  // namespace

const Value *Args::get(size_t i, std::string_view name) const {
  if (i < pos.size()) return &pos[i];
  for (const auto &kv : kw)
    if (kv.first == name) return &kv.second;
  return nullptr;
}

void Args::allow(const char *what, size_t max_pos, std::initializer_list<const char *> names) const {
  if (pos.size() > max_pos) bad(std::string(what) + ": too many arguments");
  for (const auto &kv : kw)
    if (std::none_of(names.begin(), names.end(), [&](const char *n) { return kv.first == n; }))
      bad(std::string(what) + ": unexpected keyword argument '" + kv.first + "'");
}

void Budget::work(uint64_t n) {
  steps_ += n;
  if (steps_ > limits_.max_steps)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "rendering takes more than " + std::to_string(limits_.max_steps) + " steps (a runaway loop?)");
}

void Budget::check_size(size_t bytes) const {
  if (bytes > limits_.max_output)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "a rendered string would exceed " + std::to_string(limits_.max_output) + " bytes");
}

std::vector<size_t> code_points(std::string_view s) {
  std::vector<size_t> out;
  size_t i = 0;
  while (i < s.size()) {
    out.push_back(i);
    utf8::next(s, i);
  }
  out.push_back(s.size());
  return out;
}

Value substring(const Text &t, size_t begin, size_t end) {
  std::vector<Span> spans;
  for (const Span &sp : t.spans) {
    size_t b = std::max(sp.begin, begin), e = std::min(sp.end, end);
    if (b < e) spans.push_back({b - begin, e - begin});
  }
  return Value::string(t.s.substr(begin, end - begin), std::move(spans));
}

Value concat_strings(Budget &b, const Text &x, const Text &y) {
  b.check_size(x.s.size() + y.s.size());
  auto t = std::make_shared<Text>();
  t->s.reserve(x.s.size() + y.s.size());
  t->s = x.s;
  t->s += y.s;
  t->spans = x.spans;
  for (const Span &sp : y.spans) {
    Span s{sp.begin + x.s.size(), sp.end + x.s.size()};
    if (!t->spans.empty() && t->spans.back().end == s.begin)
      t->spans.back().end = s.end;
    else
      t->spans.push_back(s);
  }
  return Value::string(std::move(t));
}

Value to_string_value(const Value &v) {
  if (v.is_string()) return v;
  Text t = to_text(v);
  return Value::string(std::move(t.s), std::move(t.spans));
}

Value apply_filter(Budget &b, const std::string &name, const Value &v, const Args &a) {
  b.work();
  if (name == "trim") {
    a.allow("trim", 1, {"chars"});
    return strip(to_string_value(v), a.get(0, "chars"), true, true);
  }
  if (name == "length" || name == "count") {
    a.allow(name.c_str(), 0, {});
    return Value::integer(static_cast<int64_t>(length(v)));
  }
  if (name == "tojson") return json_filter(v, a);
  if (name == "upper" || name == "lower" || name == "capitalize" || name == "title") {
    a.allow(name.c_str(), 0, {});
    Text t = soft_text(v);
    std::string s = name == "upper"        ? map_case(t.s, to_upper)
                    : name == "lower"      ? map_case(t.s, to_lower)
                    : name == "capitalize" ? capitalize(t.s)
                                           : title(t.s);
    return derived(std::move(s), !t.spans.empty());
  }
  if (name == "default" || name == "d") {
    a.allow("default", 2, {"default_value", "boolean"});
    const Value *d = a.get(0, "default_value");
    const Value *boolean = a.get(1, "boolean");
    bool use = v.is_undefined() || (boolean && boolean->truthy() && !v.truthy());
    return use ? (d ? *d : Value::string("")) : v;
  }
  if (name == "join") {
    a.allow("join", 2, {"d", "attribute"});
    const Value *sep = a.get(0, "d");
    const Value *attr = a.get(1, "attribute");
    Text sep_t = sep ? soft_text(*sep) : Text{};
    Value out = Value::string("");
    bool first = true;
    for (const Value &item : iterate(v, "join")) {
      Value x = attr ? get_attribute(item, need_string(*attr, "join attribute")) : item;
      if (!first) out = concat_strings(b, *out.text(), sep_t);
      out = concat_strings(b, *out.text(), soft_text(x));
      first = false;
      b.work();
    }
    return out;
  }
  if (name == "items") {
    a.allow("items", 0, {});
    if (v.is_undefined()) return Value::array({});
    if (!v.is_mapping()) bad("items: can only get item pairs from a mapping");
    Array out;
    for (const auto &kv : v.obj().items) out.push_back(Value::tuple({Value::string(kv.first), kv.second}));
    return Value::array(std::move(out));
  }
  if (name == "first" || name == "last") {
    a.allow(name.c_str(), 0, {});
    Array items = iterate(v, name.c_str());
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") {
    a.allow("list", 0, {});
    return Value::array(iterate(v, "list"));
  }
  if (name == "string") {
    a.allow("string", 0, {});
    return to_string_value(v);
  }
  if (name == "safe") return v;
  if (name == "int") {
    a.allow("int", 2, {"default", "base"});
    const Value *d = a.get(0, "default");
    Value dflt = d ? *d : Value::integer(0);
    if (v.type() == Type::kInt || v.type() == Type::kBool) return Value::integer(v.as_int());
    if (v.type() == Type::kFloat) {
      double f = v.as_float();
      if (!std::isfinite(f) || std::fabs(f) >= 9.2e18) return dflt;
      return Value::integer(static_cast<int64_t>(f));
    }
    if (v.is_string()) {
      int64_t i = 0;
      if (parse_int(v.str(), &i)) return Value::integer(i);
      char *end = nullptr;
      std::string s(trim_unicode_space(v.str()));
      double f = std::strtod(s.c_str(), &end);
      if (!s.empty() && !*end && std::isfinite(f) && std::fabs(f) < 9.2e18)
        return Value::integer(static_cast<int64_t>(f));
    }
    return dflt;
  }
  if (name == "float") {
    a.allow("float", 1, {"default"});
    const Value *d = a.get(0, "default");
    if (v.is_number()) return Value::number(v.as_float());
    if (v.is_string()) {
      std::string s(trim_unicode_space(v.str()));
      char *end = nullptr;
      double f = std::strtod(s.c_str(), &end);
      if (!s.empty() && !*end) return Value::number(f);
    }
    return d ? *d : Value::number(0.0);
  }
  if (name == "abs") {
    a.allow("abs", 0, {});
    if (v.type() == Type::kFloat) return Value::number(std::fabs(v.as_float()));
    int64_t i = need_int(v, "abs");
    if (i == INT64_MIN) bad("abs: integer overflow");
    return Value::integer(i < 0 ? -i : i);
  }
  if (name == "replace") {
    a.allow("replace", 3, {"old", "new", "count"});
    const Value *o = a.get(0, "old"), *n = a.get(1, "new"), *c = a.get(2, "count");
    if (!o || !n) bad("replace: expected old and new strings");
    Text t = soft_text(v);
    const std::string &from = need_string(*o, "replace old");
    const std::string &to = need_string(*n, "replace new");
    int64_t count = c && !c->is_none() ? need_int(*c, "replace count") : -1;
    std::string out;
    size_t pos = 0;
    int64_t done = 0;
    if (from.empty()) {
      // Python inserts `to` between characters, at both ends.
      std::vector<size_t> cps = code_points(t.s);
      for (size_t k = 0; k < cps.size(); ++k) {
        if (count < 0 || done < count) {
          out += to;
          ++done;
        }
        if (k + 1 < cps.size()) out += t.s.substr(cps[k], cps[k + 1] - cps[k]);
        b.check_size(out.size());
      }
    } else {
      while (count < 0 || done < count) {
        size_t at = t.s.find(from, pos);
        if (at == std::string::npos) break;
        out += t.s.substr(pos, at - pos);
        out += to;
        pos = at + from.size();
        ++done;
        b.check_size(out.size());
      }
      out += t.s.substr(pos);
    }
    return derived(std::move(out), !t.spans.empty() || n->has_caller_text());
  }
  if (name == "select") return select(b, v, a, false, true);
  if (name == "reject") return select(b, v, a, false, false);
  if (name == "selectattr") return select(b, v, a, true, true);
  if (name == "rejectattr") return select(b, v, a, true, false);
  if (name == "map") return map_filter(b, v, a);
  bad("unsupported filter " + quoted(name));
}

bool apply_test(Budget &b, const std::string &name, const Value &v, const Args &a) {
  b.work();
  auto arg = [&]() -> const Value & {
    if (a.pos.size() != 1 || !a.kw.empty()) bad("test " + quoted(name) + " takes one argument");
    return a.pos[0];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.type() == Type::kInt;
  if (name == "float") return v.type() == Type::kFloat;
  if (name == "boolean") return v.type() == Type::kBool;
  if (name == "true") return v.type() == Type::kBool && v.as_bool();
  if (name == "false") return v.type() == Type::kBool && !v.as_bool();
  if (name == "mapping") return v.type() == Type::kObject;
  if (name == "iterable") return v.is_undefined() || v.is_string() || v.is_array() || v.type() == Type::kObject;
  if (name == "sequence") return v.is_undefined() || v.is_string() || v.is_array() || v.type() == Type::kObject;
  if (name == "callable") return v.type() == Type::kMacro || v.type() == Type::kBuiltin;
  if (name == "equalto" || name == "eq" || name == "==") return equal(v, arg());
  if (name == "ne" || name == "!=") return !equal(v, arg());
  if (name == "sameas") {
    const Value &o = arg();
    if (v.type() != o.type()) return false;
    if (v.is_none() || v.is_undefined()) return true;
    if (v.type() == Type::kBool) return v.as_bool() == o.as_bool();
    return equal(v, o) && (v.type() != Type::kArray && v.type() != Type::kObject);
  }
  if (name == "in") {
    const Value &o = arg();
    if (o.is_string()) return v.is_string() && o.str().find(v.str()) != std::string::npos;
    if (o.is_array()) return std::any_of(o.arr().begin(), o.arr().end(), [&](const Value &x) { return equal(v, x); });
    if (o.is_mapping()) return v.is_string() && o.obj().find(v.str());
    bad("test 'in': argument of type '" + std::string(type_name(o)) + "' is not a container");
  }
  if (name == "odd" || name == "even") {
    int64_t i = need_int(v, name.c_str());
    return ((i % 2) != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    int64_t d = need_int(arg(), "divisibleby");
    if (d == 0) bad("divisibleby: division by zero");
    return need_int(v, "divisibleby") % d == 0;
  }
  if (name == "lower") return v.is_string() && map_case(v.str(), to_lower) == v.str();
  if (name == "upper") return v.is_string() && map_case(v.str(), to_upper) == v.str();
  bad("unsupported test " + quoted(name));
}

Value call_method(Budget &b, const Value &obj, const std::string &name, const Args &a) {
  b.work();
  if (obj.is_string()) {
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      a.allow(name.c_str(), 1, {});
      return strip(obj, a.get(0, ""), name != "rstrip", name != "lstrip");
    }
    if (name == "split") {
      a.allow("split", 2, {"sep", "maxsplit"});
      return split(b, obj, a.get(0, "sep"), a.get(1, "maxsplit"));
    }
    if (name == "startswith" || name == "endswith") {
      a.allow(name.c_str(), 1, {});
      const Value *p = a.get(0, "");
      if (!p) bad(name + ": expected an argument");
      Array options = p->is_array() ? p->arr() : Array{*p};
      for (const Value &o : options) {
        const std::string &x = need_string(o, name.c_str());
        const std::string &s = obj.str();
        bool hit = name == "startswith" ? s.compare(0, x.size(), x) == 0
                                        : s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
        if (hit) return Value::boolean(true);
      }
      return Value::boolean(false);
    }
    if (name == "upper" || name == "lower" || name == "capitalize" || name == "title") {
      a.allow(name.c_str(), 0, {});
      return apply_filter(b, name, obj, Args{});
    }
    if (name == "replace") {
      a.allow("replace", 3, {});
      return apply_filter(b, "replace", obj, a);
    }
    if (name == "find" || name == "rfind" || name == "count") {
      a.allow(name.c_str(), 1, {});
      const Value *p = a.get(0, "");
      if (!p) bad(name + ": expected an argument");
      const std::string &x = need_string(*p, name.c_str());
      const std::string &s = obj.str();
      if (name == "count") {
        if (x.empty()) return Value::integer(static_cast<int64_t>(code_points(s).size()));
        int64_t n = 0;
        for (size_t at = s.find(x); at != std::string::npos; at = s.find(x, at + x.size())) ++n;
        return Value::integer(n);
      }
      size_t at = name == "find" ? s.find(x) : s.rfind(x);
      if (at == std::string::npos) return Value::integer(-1);
      return Value::integer(static_cast<int64_t>(code_points(s.substr(0, at)).size() - 1));
    }
    if (name == "join") {
      a.allow("join", 1, {});
      const Value *p = a.get(0, "");
      if (!p) bad("join: expected an iterable");
      Value out = Value::string("");
      bool first = true;
      for (const Value &item : iterate(*p, "join")) {
        if (!item.is_string()) bad("join: expected str items, got " + std::string(type_name(item)));
        if (!first) out = concat_strings(b, *out.text(), *obj.text());
        out = concat_strings(b, *out.text(), *item.text());
        first = false;
      }
      return out;
    }
    if (name == "isdigit" || name == "isalpha" || name == "isspace") {
      a.allow(name.c_str(), 0, {});
      const std::string &s = obj.str();
      if (s.empty()) return Value::boolean(false);
      if (name == "isspace") return Value::boolean(trim_unicode_space(s).empty());
      size_t i = 0;
      while (i < s.size()) {
        auto c = static_cast<utf8proc_int32_t>(utf8::next(s, i));
        utf8proc_category_t cat = utf8proc_category(c);
        bool ok = name == "isdigit" ? cat == UTF8PROC_CATEGORY_ND
                                    : (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO);
        if (!ok) return Value::boolean(false);
      }
      return Value::boolean(true);
    }
  }
  if (obj.type() == Type::kObject) {
    if (name == "items") {
      a.allow("items", 0, {});
      return apply_filter(b, "items", obj, Args{});
    }
    if (name == "keys" || name == "values") {
      a.allow(name.c_str(), 0, {});
      Array out;
      for (const auto &kv : obj.obj().items) out.push_back(name == "keys" ? Value::string(kv.first) : kv.second);
      return Value::array(std::move(out));
    }
    if (name == "get") {
      a.allow("get", 2, {});
      const Value *k = a.get(0, "");
      if (!k) bad("get: expected a key");
      const Value *hit = k->is_string() ? obj.obj().find(k->str()) : nullptr;
      if (hit) return *hit;
      const Value *d = a.get(1, "");
      return d ? *d : Value::none();
    }
  }
  if ((obj.is_array() || obj.is_mapping()) &&
      (name == "append" || name == "pop" || name == "update" || name == "extend" || name == "insert" ||
       name == "remove" || name == "clear" || name == "setdefault" || name == "sort" || name == "reverse"))
    bad(std::string("'") + type_name(obj) + "." + name + "': templates cannot modify values (immutable sandbox)");
  bad(std::string("'") + type_name(obj) + "' object has no method " + quoted(name));
}

bool is_global(std::string_view name) {
  return name == "range" || name == "namespace" || name == "dict" || name == "raise_exception" ||
         name == "strftime_now";
}

Value call_global(Budget &b, const std::string &name, const Args &a) {
  if (name == "range") {
    a.allow("range", 3, {});
    if (a.pos.empty()) bad("range expected at least 1 argument");
    int64_t start = 0, stop = 0, step = 1;
    if (a.pos.size() == 1) {
      stop = need_int(a.pos[0], "range");
    } else {
      start = need_int(a.pos[0], "range");
      stop = need_int(a.pos[1], "range");
      if (a.pos.size() == 3) step = need_int(a.pos[2], "range");
    }
    if (step == 0) bad("range: step must not be zero");
    Array out;
    // Jinja's sandbox caps ranges at 100000 items (MAX_RANGE).
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (out.size() >= 100000) bad("range too big (more than 100000 items)");
      b.work();
      out.push_back(Value::integer(i));
      if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
    }
    return Value::array(std::move(out));
  }
  if (name == "namespace" || name == "dict") {
    Object o;
    if (a.pos.size() > 1) bad(name + " expected at most 1 positional argument");
    if (!a.pos.empty()) {
      if (a.pos[0].type() != Type::kObject) bad(name + ": the positional argument must be a dict");
      o = a.pos[0].obj();
    }
    for (const auto &kv : a.kw) o.set(kv.first, kv.second);
    if (name == "namespace") {
      for (const auto &kv : o.items)
        if (!kv.first.empty() && kv.first[0] == '_')
          bad("namespace: attribute names may not start with '_' ('" + kv.first + "')");
      return Value::name_space(std::move(o));
    }
    return Value::object(std::move(o));
  }
  if (name == "raise_exception") {
    const Value *m = a.get(0, "message");
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "the chat template refused the conversation: " + (m ? to_text(*m).s : ""));
  }
  if (name == "strftime_now") {
    a.allow("strftime_now", 1, {});
    const Value *f = a.get(0, "format");
    if (!f) bad("strftime_now: expected a format");
    const std::string &fmt = need_string(*f, "strftime_now");
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[512];
    size_t n = fmt.size() < 200 ? std::strftime(buf, sizeof buf, fmt.c_str(), &tm) : 0;
    if (n == 0 && !fmt.empty()) bad("strftime_now: format too long or empty result");
    return Value::string(std::string(buf, n));
  }
  bad("unknown function " + quoted(name));
}

}  // namespace parley::jinja
