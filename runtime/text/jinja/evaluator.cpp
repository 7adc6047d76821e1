// Walks the syntax tree (ast.hpp) with Jinja2's semantics for the subset
// in template.hpp: default Undefined (printing it gives "", using it in
// arithmetic or calling it fails), for-loop scopes (assignments in a loop
// body do not leak out; namespace() carries state across iterations),
// macros that see the template's top-level names.
#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "core/error.hpp"
#include "text/jinja/builtins.hpp"
#include "text/jinja/parser.hpp"
#include "text/jinja/template.hpp"

namespace parley::jinja {

namespace {

// An error that already names its place in the template.
class Located : public Error {
 public:
  using Error::Error;
};

std::string where(int line, int col) {
  return "chat template line " + std::to_string(line) + ", column " + std::to_string(col) + ": ";
}

[[noreturn]] void bad(const std::string &why) {
  fail(PARLEY_ERROR_INVALID_ARGUMENT, why);
}

std::string op_types(const char *op, const Value &a, const Value &b) {
  return std::string("unsupported operand type(s) for ") + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'";
}

template <typename Op>
int64_t checked(Op op, int64_t a, int64_t b) {
  int64_t r = 0;
  if (op(a, b, &r)) bad("integer overflow (beyond 64 bits)");
  return r;
}
bool add(int64_t a, int64_t b, int64_t *r) {
  return __builtin_add_overflow(a, b, r);
}
bool sub(int64_t a, int64_t b, int64_t *r) {
  return __builtin_sub_overflow(a, b, r);
}
bool mul(int64_t a, int64_t b, int64_t *r) {
  return __builtin_mul_overflow(a, b, r);
}

class Evaluator {
 public:
  Evaluator(const Limits &limits, const Object &variables) : budget_(limits) {
    frames_.emplace_back();
    for (const char *g : {"range", "namespace", "dict", "raise_exception", "strftime_now"})
      frames_[0][g] = Value::builtin(g);
    for (const auto &kv : variables.items) frames_[0][kv.first] = kv.second;
  }

  Text run(const Node &root) {
    sink_ = &out_;
    exec(root.body);
    return std::move(out_);
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  using Frame = std::unordered_map<std::string, Value>;

  void emit(const Text &t) {
    budget_.check_size(sink_->s.size() + t.s.size());
    size_t base = sink_->s.size();
    sink_->s += t.s;
    for (const Span &sp : t.spans) {
      Span s{sp.begin + base, sp.end + base};
      if (!sink_->spans.empty() && sink_->spans.back().end == s.begin)
        sink_->spans.back().end = s.end;
      else
        sink_->spans.push_back(s);
    }
  }

  const Value *lookup(const std::string &name) const {
    for (size_t k = frames_.size(); k-- > barrier_;) {
      auto it = frames_[k].find(name);
      if (it != frames_[k].end()) return &it->second;
    }
    auto it = frames_[0].find(name);
    return it != frames_[0].end() ? &it->second : nullptr;
  }

  Flow exec(const Body &body) {
    for (const auto &n : body) {
      Flow f = exec_located(*n);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  Flow exec_located(const Node &n) {
    try {
      return exec(n);
    } catch (const Located &) {
      throw;
    } catch (const Error &e) {
      throw Located(e.status(), where(n.line, n.col) + e.what());
    }
  }

  void assign(const std::vector<std::string> &targets, const Value &v) {
    if (targets.size() == 1) {
      frames_.back()[targets[0]] = v;
      return;
    }
    if (!v.is_array())
      bad(std::string("cannot unpack a ") + type_name(v) + " into " + std::to_string(targets.size()) + " names");
    if (v.arr().size() != targets.size())
      bad("cannot unpack " + std::to_string(v.arr().size()) + " values into " + std::to_string(targets.size()) +
          " names");
    for (size_t k = 0; k < targets.size(); ++k) frames_.back()[targets[k]] = v.arr()[k];
  }

  Flow exec(const Node &n) {
    budget_.work();
    switch (n.kind) {
      case Node::Kind::kText:
        emit(Text{n.text, {}});
        return Flow::kNormal;
      case Node::Kind::kOutput:
        emit(to_text(eval(*n.expr)));
        return Flow::kNormal;
      case Node::Kind::kIf:
        for (size_t k = 0; k < n.branches.size(); ++k)
          if (!n.conditions[k] || eval(*n.conditions[k]).truthy()) return exec(n.branches[k]);
        return Flow::kNormal;
      case Node::Kind::kFor:
        return exec_for(n);
      case Node::Kind::kSet: {
        Value v = eval(*n.expr);
        if (n.attr.empty()) {
          assign(n.targets, v);
          return Flow::kNormal;
        }
        const Value *ns = lookup(n.targets[0]);
        if (!ns || ns->type() != Type::kNamespace)
          bad("cannot assign attribute on a non-namespace object ('" + n.targets[0] + "')");
        if (!n.attr.empty() && n.attr[0] == '_') bad("namespace attribute names may not start with '_'");
        ns->ns().set(n.attr, std::move(v));
        return Flow::kNormal;
      }
      case Node::Kind::kSetBlock: {
        Text captured;
        Text *saved = sink_;
        sink_ = &captured;
        try {
          exec(n.body);
        } catch (...) {
          sink_ = saved;
          throw;
        }
        sink_ = saved;
        frames_.back()[n.targets[0]] = Value::string(std::move(captured.s), std::move(captured.spans));
        return Flow::kNormal;
      }
      case Node::Kind::kMacro:
        frames_.back()[n.macro->name] = Value::macro(n.macro);
        return Flow::kNormal;
      case Node::Kind::kBreak:
        return Flow::kBreak;
      case Node::Kind::kContinue:
        return Flow::kContinue;
      case Node::Kind::kScope:
        return exec(n.body);
    }
    return Flow::kNormal;
  }

  Flow exec_for(const Node &n) {
    Array items = iterate(eval(*n.expr), nullptr);
    if (n.filter) {
      Array kept;
      for (const Value &item : items) {
        budget_.work();
        frames_.emplace_back();
        try {
          assign(n.targets, item);
          if (eval(*n.filter).truthy()) kept.push_back(item);
        } catch (...) {
          frames_.pop_back();
          throw;
        }
        frames_.pop_back();
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec(n.else_body);
    const auto len = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < len; ++k) {
      budget_.work();
      Object loop;
      loop.set("index0", Value::integer(k));
      loop.set("index", Value::integer(k + 1));
      loop.set("revindex0", Value::integer(len - k - 1));
      loop.set("revindex", Value::integer(len - k));
      loop.set("first", Value::boolean(k == 0));
      loop.set("last", Value::boolean(k == len - 1));
      loop.set("length", Value::integer(len));
      loop.set("depth", Value::integer(1));
      loop.set("depth0", Value::integer(0));
      loop.set("previtem", k > 0 ? items[static_cast<size_t>(k - 1)] : Value());
      loop.set("nextitem", k + 1 < len ? items[static_cast<size_t>(k + 1)] : Value());
      frames_.emplace_back();
      Flow f;
      try {
        frames_.back()["loop"] = Value::object(std::move(loop));
        assign(n.targets, items[static_cast<size_t>(k)]);
        f = exec(n.body);
      } catch (...) {
        frames_.pop_back();
        throw;
      }
      frames_.pop_back();
      if (f == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  Value eval(const Expr &e) {
    try {
      return eval_here(e);
    } catch (const Located &) {
      throw;
    } catch (const Error &err) {
      throw Located(err.status(), where(e.line, e.col) + err.what());
    }
  }

  Args args_of(const Expr &e, size_t first) {
    Args a;
    for (size_t k = first; k < e.args.size(); ++k) a.pos.push_back(eval(*e.args[k]));
    for (const auto &kv : e.kwargs) a.kw.emplace_back(kv.first, eval(*kv.second));
    return a;
  }

  static std::string describe(const Expr &e) {
    if (e.kind == Expr::Kind::kName) return "'" + e.name + "'";
    if (e.kind == Expr::Kind::kAttr) return describe(*e.args[0]) + "." + e.name;
    return "a value";
  }

  Value index(const Value &obj, const Value &key) {
    if (obj.is_mapping()) {
      if (!key.is_string()) return Value();
      const Value *v = obj.obj().find(key.str());
      return v ? *v : Value();
    }
    if (obj.is_array() || obj.is_string()) {
      if (key.type() != Type::kInt && key.type() != Type::kBool) return Value();
      int64_t i = key.as_int();
      if (obj.is_array()) {
        auto n = static_cast<int64_t>(obj.arr().size());
        if (i < 0) i += n;
        return i >= 0 && i < n ? obj.arr()[static_cast<size_t>(i)] : Value();
      }
      std::vector<size_t> cps = code_points(obj.str());
      auto n = static_cast<int64_t>(cps.size()) - 1;
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value();
      return substring(*obj.text(), cps[static_cast<size_t>(i)], cps[static_cast<size_t>(i) + 1]);
    }
    return Value();
  }

  Value slice(const Value &obj, const Expr &e) {
    auto part = [&](size_t k, bool *given) -> int64_t {
      if (!e.args[k]) {
        *given = false;
        return 0;
      }
      Value v = eval(*e.args[k]);
      if (v.is_none()) {
        *given = false;
        return 0;
      }
      if (v.type() != Type::kInt && v.type() != Type::kBool) bad("slice indices must be integers or None");
      *given = true;
      return v.as_int();
    };
    bool has_start, has_stop, has_step;
    int64_t start = part(1, &has_start), stop = part(2, &has_stop), step = part(3, &has_step);
    if (!has_step) step = 1;
    if (step == 0) bad("slice step cannot be zero");
    if (obj.is_undefined()) bad("cannot slice an undefined value");
    if (!obj.is_array() && !obj.is_string()) bad(std::string("'") + type_name(obj) + "' object is not subscriptable");
    std::vector<size_t> cps;
    int64_t n;
    if (obj.is_string()) {
      cps = code_points(obj.str());
      n = static_cast<int64_t>(cps.size()) - 1;
    } else {
      n = static_cast<int64_t>(obj.arr().size());
    }
    // Python's PySlice_AdjustIndices.
    auto adjust = [&](int64_t v, bool given, int64_t dflt) {
      if (!given) return dflt;
      if (v < 0) {
        v += n;
        if (v < 0) v = step < 0 ? -1 : 0;
      } else if (v >= n) {
        v = step < 0 ? n - 1 : n;
      }
      return v;
    };
    start = adjust(start, has_start, step < 0 ? n - 1 : 0);
    stop = adjust(stop, has_stop, step < 0 ? -1 : n);
    if (obj.is_string() && step == 1) {
      if (stop < start) stop = start;
      return substring(*obj.text(), cps[static_cast<size_t>(start)], cps[static_cast<size_t>(stop)]);
    }
    Array out;
    std::string s;
    bool caller = false;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      budget_.work();
      if (obj.is_array()) {
        out.push_back(obj.arr()[static_cast<size_t>(i)]);
      } else {
        Value c = substring(*obj.text(), cps[static_cast<size_t>(i)], cps[static_cast<size_t>(i) + 1]);
        caller = caller || !c.text()->spans.empty();
        s += c.str();
      }
    }
    if (obj.is_array()) return Value::array(std::move(out));
    std::vector<Span> spans;
    if (caller && !s.empty()) spans.push_back({0, s.size()});
    return Value::string(std::move(s), std::move(spans));
  }

  Value call_macro(const Macro &m, const Args &a) {
    if (depth_ >= budget_.limits().max_call_depth)
      bad("macro calls nest deeper than " + std::to_string(budget_.limits().max_call_depth) + " levels");
    if (a.pos.size() > m.params.size())
      bad("macro '" + m.name + "' takes " + std::to_string(m.params.size()) + " arguments");
    Frame frame;
    for (size_t k = 0; k < m.params.size(); ++k) {
      const Value *v = k < a.pos.size() ? &a.pos[k] : nullptr;
      for (const auto &kv : a.kw)
        if (kv.first == m.params[k]) v = &kv.second;
      if (v)
        frame[m.params[k]] = *v;
      else if (m.defaults[k])
        frame[m.params[k]] = eval(*m.defaults[k]);
      else
        frame[m.params[k]] = Value();
    }
    for (const auto &kv : a.kw)
      if (std::find(m.params.begin(), m.params.end(), kv.first) == m.params.end())
        bad("macro '" + m.name + "' has no parameter '" + kv.first + "'");
    Text captured;
    Text *saved_sink = sink_;
    size_t saved_barrier = barrier_;
    frames_.push_back(std::move(frame));
    barrier_ = frames_.size() - 1;
    sink_ = &captured;
    ++depth_;
    auto restore = [&] {
      --depth_;
      sink_ = saved_sink;
      barrier_ = saved_barrier;
      frames_.pop_back();
    };
    try {
      exec(m.body);
    } catch (...) {
      restore();
      throw;
    }
    restore();
    return Value::string(std::move(captured.s), std::move(captured.spans));
  }

  Value call(const Value &callee, const Args &a, const Expr &at) {
    if (callee.type() == Type::kMacro) return call_macro(*callee.mac(), a);
    if (callee.type() == Type::kBuiltin) return call_global(budget_, callee.builtin_name(), a);
    bad(describe(at) + " is not callable (" + type_name(callee) + ")");
  }

  Value arithmetic(const std::string &op, const Value &x, const Value &y) {
    if (op == "~") return concat_strings(budget_, to_text(x), to_text(y));
    if (op == "==") return Value::boolean(equal(x, y));
    if (op == "!=") return Value::boolean(!equal(x, y));
    if (op == "in" || op == "notin") {
      bool hit;
      if (y.is_string()) {
        if (!x.is_string()) bad("'in <string>' requires a string as left operand, not " + std::string(type_name(x)));
        hit = y.str().find(x.str()) != std::string::npos;
      } else if (y.is_array()) {
        hit = std::any_of(y.arr().begin(), y.arr().end(), [&](const Value &v) { return equal(x, v); });
      } else if (y.is_mapping()) {
        hit = x.is_string() && y.obj().find(x.str());
      } else if (y.is_undefined()) {
        hit = false;
      } else {
        bad(std::string("argument of type '") + type_name(y) + "' is not iterable");
      }
      return Value::boolean(hit == (op == "in"));
    }
    if (x.is_undefined() || y.is_undefined()) bad(op_types(op.c_str(), x, y) + " (a value is undefined)");
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int c;
      if (x.is_number() && y.is_number()) {
        double a = x.as_float(), b = y.as_float();
        if (x.type() != Type::kFloat && y.type() != Type::kFloat)
          c = x.as_int() < y.as_int() ? -1 : x.as_int() > y.as_int() ? 1 : 0;
        else
          c = a < b ? -1 : a > b ? 1 : (a == b ? 0 : 2);
      } else if (x.is_string() && y.is_string()) {
        int r = x.str().compare(y.str());
        c = r < 0 ? -1 : r > 0 ? 1 : 0;
      } else {
        bad("'" + op + "' not supported between instances of '" + type_name(x) + "' and '" + type_name(y) + "'");
      }
      if (c == 2) return Value::boolean(false);  // NaN
      bool r = op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0;
      return Value::boolean(r);
    }
    if (op == "+") {
      if (x.is_string() && y.is_string()) return concat_strings(budget_, *x.text(), *y.text());
      if (x.is_array() && y.is_array()) {
        budget_.work(x.arr().size() + y.arr().size());
        Array out = x.arr();
        out.insert(out.end(), y.arr().begin(), y.arr().end());
        return Value::array(std::move(out));
      }
    }
    if (op == "*" && ((x.is_string() || x.is_array()) != (y.is_string() || y.is_array()))) {
      const Value &seq = x.is_string() || x.is_array() ? x : y;
      const Value &count = x.is_string() || x.is_array() ? y : x;
      if (count.type() != Type::kInt && count.type() != Type::kBool) bad(op_types("*", x, y));
      int64_t n = std::max<int64_t>(0, count.as_int());
      if (seq.is_string()) {
        if (n > 0 && seq.str().size() > 0) budget_.check_size(seq.str().size() * std::min<uint64_t>(n, UINT32_MAX));
        Value out = Value::string("");
        for (int64_t k = 0; k < n; ++k) out = concat_strings(budget_, *out.text(), *seq.text());
        return out;
      }
      budget_.work(static_cast<uint64_t>(std::min<int64_t>(n, INT32_MAX)) * (seq.arr().size() + 1));
      Array out;
      for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq.arr().begin(), seq.arr().end());
      return Value::array(std::move(out));
    }
    if (!x.is_number() || !y.is_number()) bad(op_types(op.c_str(), x, y));
    bool ints = x.type() != Type::kFloat && y.type() != Type::kFloat;
    if (op == "/") {
      if (y.as_float() == 0) bad("division by zero");
      return Value::number(x.as_float() / y.as_float());
    }
    if (ints) {
      int64_t a = x.as_int(), b = y.as_int();
      if (op == "+") return Value::integer(checked(add, a, b));
      if (op == "-") return Value::integer(checked(sub, a, b));
      if (op == "*") return Value::integer(checked(mul, a, b));
      if (op == "//" || op == "%") {
        if (b == 0) bad("integer division or modulo by zero");
        if (a == INT64_MIN && b == -1) bad("integer overflow (beyond 64 bits)");
        int64_t q = a / b, m = a % b;
        if (m != 0 && ((m < 0) != (b < 0))) {
          q -= 1;
          m += b;
        }
        return Value::integer(op == "//" ? q : m);
      }
      if (op == "**") {
        if (b < 0) return Value::number(std::pow(static_cast<double>(a), static_cast<double>(b)));
        int64_t acc = 1;
        if (a == 0 || a == 1) {
          acc = b == 0 ? 1 : a;
        } else if (a == -1) {
          acc = b % 2 ? -1 : 1;
        } else {
          for (int64_t k = 0; k < b; ++k) acc = checked(mul, acc, a);  // |a| >= 2: overflows within 63 steps
        }
        return Value::integer(acc);
      }
    }
    double a = x.as_float(), b = y.as_float();
    if (op == "+") return Value::number(a + b);
    if (op == "-") return Value::number(a - b);
    if (op == "*") return Value::number(a * b);
    if (op == "//" || op == "%") {
      if (b == 0) bad("float division or modulo by zero");
      double m = std::fmod(a, b);
      if (m != 0 && ((m < 0) != (b < 0))) m += b;
      return Value::number(op == "%" ? m : std::floor((a - m) / b + 0.5));
    }
    if (op == "**") return Value::number(std::pow(a, b));
    bad("unknown operator " + op);
  }

  Value eval_here(const Expr &e) {
    budget_.work();
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.value;
      case Expr::Kind::kName: {
        const Value *v = lookup(e.name);
        return v ? *v : Value();
      }
      case Expr::Kind::kAttr: {
        Value obj = eval(*e.args[0]);
        if (obj.is_undefined()) bad(describe(*e.args[0]) + " is undefined (reading ." + e.name + ")");
        if (obj.is_mapping()) {
          const Value *v = obj.obj().find(e.name);
          return v ? *v : Value();
        }
        return Value();
      }
      case Expr::Kind::kIndex: {
        Value obj = eval(*e.args[0]);
        Value key = eval(*e.args[1]);
        if (obj.is_undefined()) bad(describe(*e.args[0]) + " is undefined (subscripting it)");
        return index(obj, key);
      }
      case Expr::Kind::kSlice:
        return slice(eval(*e.args[0]), e);
      case Expr::Kind::kCall: {
        const Expr &callee = *e.args[0];
        if (callee.kind == Expr::Kind::kAttr) {
          Value obj = eval(*callee.args[0]);
          if (obj.is_undefined()) bad(describe(*callee.args[0]) + " is undefined (calling ." + callee.name + "())");
          Args a = args_of(e, 1);
          if (obj.is_mapping()) {
            const Value *member = obj.obj().find(callee.name);
            if (member && (member->type() == Type::kMacro || member->type() == Type::kBuiltin))
              return call(*member, a, callee);
          }
          return call_method(budget_, obj, callee.name, a);
        }
        Value f = eval(callee);
        if (f.is_undefined()) bad(describe(callee) + " is undefined (calling it)");
        return call(f, args_of(e, 1), callee);
      }
      case Expr::Kind::kFilter: {
        Value v = eval(*e.args[0]);
        return apply_filter(budget_, e.name, v, args_of(e, 1));
      }
      case Expr::Kind::kTest: {
        Value v = eval(*e.args[0]);
        bool r = apply_test(budget_, e.name, v, args_of(e, 1));
        return Value::boolean(r != e.negated);
      }
      case Expr::Kind::kNot:
        return Value::boolean(!eval(*e.args[0]).truthy());
      case Expr::Kind::kNeg:
      case Expr::Kind::kPos: {
        Value v = eval(*e.args[0]);
        bool neg = e.kind == Expr::Kind::kNeg;
        if (v.type() == Type::kFloat) return Value::number(neg ? -v.as_float() : v.as_float());
        if (v.type() == Type::kInt || v.type() == Type::kBool) {
          if (neg && v.as_int() == INT64_MIN) bad("integer overflow (beyond 64 bits)");
          return Value::integer(neg ? -v.as_int() : v.as_int());
        }
        bad(std::string("bad operand type for unary ") + (neg ? "-" : "+") + ": '" + type_name(v) + "'");
      }
      case Expr::Kind::kBinary: {
        Value x = eval(*e.args[0]);
        Value y = eval(*e.args[1]);
        return arithmetic(e.name, x, y);
      }
      case Expr::Kind::kAnd: {
        Value x = eval(*e.args[0]);
        return x.truthy() ? eval(*e.args[1]) : x;
      }
      case Expr::Kind::kOr: {
        Value x = eval(*e.args[0]);
        return x.truthy() ? x : eval(*e.args[1]);
      }
      case Expr::Kind::kCond:
        if (eval(*e.args[0]).truthy()) return eval(*e.args[1]);
        return e.args[2] ? eval(*e.args[2]) : Value();
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        Array out;
        for (const auto &x : e.args) out.push_back(eval(*x));
        return e.kind == Expr::Kind::kTuple ? Value::tuple(std::move(out)) : Value::array(std::move(out));
      }
      case Expr::Kind::kDict: {
        Object o;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          Value key = eval(*e.args[k]);
          if (!key.is_string()) bad(std::string("dict keys must be strings here, got ") + type_name(key));
          o.set(key.str(), eval(*e.args[k + 1]));
        }
        return Value::object(std::move(o));
      }
    }
    bad("unknown expression");
  }

  Budget budget_;
  std::vector<Frame> frames_;
  size_t barrier_ = 1;
  int depth_ = 0;
  Text out_;
  Text *sink_ = nullptr;
};

}  // namespace

Template::Template(std::string_view source)
    : root_(parse_template(source)), source_(std::make_shared<const std::string>(source)) {}
Template::~Template() = default;
Template::Template(Template &&) noexcept = default;
Template &Template::operator=(Template &&) noexcept = default;

Text Template::render(const Object &variables, const Limits &limits) const {
  return Evaluator(limits, variables).run(*root_);
}

}  // namespace parley::jinja
