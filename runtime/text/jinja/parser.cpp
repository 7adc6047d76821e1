// Lexer and parser of the Jinja subset (template.hpp). Whitespace control
// follows jinja2/lexer.py with trim_blocks=True and lstrip_blocks=True, as
// transformers compiles chat templates; operator precedence follows
// jinja2/parser.py.
#include "text/jinja/parser.hpp"

#include <cstring>

#include "core/error.hpp"
#include "text/chat_format.hpp"
#include "text/utf8.hpp"

namespace parley::jinja {

namespace {

enum class Tok { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
  Tok kind;
  std::string text;
  int line, col;
  int64_t i = 0;
  double f = 0;
};

constexpr int kMaxDepth = 200;

[[noreturn]] void syntax(int line, int col, const std::string &what) {
  fail(PARLEY_ERROR_INVALID_MODEL,
       "chat template line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + what);
}

bool py_space_only(std::string_view s) {
  return !s.empty() && trim_unicode_space(s).empty();
}

std::string_view rstrip_py(std::string_view s) {
  std::string_view t = trim_unicode_space(s);
  if (t.empty()) return s.substr(0, 0);
  return s.substr(0, static_cast<size_t>(t.data() - s.data()) + t.size());
}

size_t skip_py_space(std::string_view s, size_t i) {
  std::string_view rest = s.substr(i);
  std::string_view t = trim_unicode_space(rest);
  return t.empty() ? s.size() : i + static_cast<size_t>(t.data() - rest.data());
}

// Jinja normalises \r\n and \r to \n and drops one trailing newline
// (keep_trailing_newline=False).
std::string normalise(std::string_view src) {
  std::string out;
  out.reserve(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i] == '\r') {
      out += '\n';
      if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
    } else {
      out += src[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class Lexer {
 public:
  explicit Lexer(const std::string &src) : s_(src) {}

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < s_.size()) {
      size_t p = pos_;
      char kind = 0;
      while ((p = s_.find('{', p)) != std::string::npos) {
        if (p + 1 < s_.size() && (s_[p + 1] == '{' || s_[p + 1] == '%' || s_[p + 1] == '#')) {
          kind = s_[p + 1];
          break;
        }
        ++p;
      }
      if (!kind) {
        text(std::string_view(s_).substr(pos_));
        break;
      }
      std::string_view data = std::string_view(s_).substr(pos_, p - pos_);
      char sign = p + 2 < s_.size() && (s_[p + 2] == '-' || s_[p + 2] == '+') ? s_[p + 2] : 0;
      if (sign == '-') {
        data = rstrip_py(data);
      } else if (sign != '+' && kind != '{') {
        size_t nl = data.rfind('\n');
        size_t l_pos = nl == std::string_view::npos ? 0 : nl + 1;
        if ((l_pos > 0 || line_starting) && py_space_only(data.substr(l_pos))) data = data.substr(0, l_pos);
      }
      text(data);
      advance_to(p);
      int line = line_, col = col_;
      advance_to(p + 2 + (sign ? 1 : 0));
      if (kind == '#') {
        size_t e = s_.find("#}", pos_);
        if (e == std::string::npos) syntax(line, col, "missing end of comment tag");
        char end_sign = e > pos_ && (s_[e - 1] == '-' || s_[e - 1] == '+') ? s_[e - 1] : 0;
        advance_to(e + 2);
        finish_tag(end_sign, /*block=*/true);
      } else {
        bool block = kind == '%';
        out_.push_back({block ? Tok::kBlockBegin : Tok::kVarBegin, "", line, col});
        if (block) check_raw(line, col);
        tag(block, line, col);
      }
      line_starting = pos_ > 0 && s_[pos_ - 1] == '\n';
    }
    out_.push_back({Tok::kEof, "", line_, col_});
    return std::move(out_);
  }

 private:
  void advance_to(size_t p) {
    for (; pos_ < p; ++pos_) {
      if (s_[pos_] == '\n') {
        ++line_;
        col_ = 1;
      } else {
        ++col_;
      }
    }
  }
  void text(std::string_view data) {
    if (!data.empty()) out_.push_back({Tok::kText, std::string(data), line_, col_});
  }
  void finish_tag(char sign, bool block) {
    if (sign == '-')
      advance_to(skip_py_space(s_, pos_));
    else if (sign != '+' && block && pos_ < s_.size() && s_[pos_] == '\n')
      advance_to(pos_ + 1);
  }
  void check_raw(int line, int col) {
    size_t i = pos_;
    while (i < s_.size() && (s_[i] == ' ' || s_[i] == '\t' || s_[i] == '\n')) ++i;
    if (s_.compare(i, 3, "raw") == 0 &&
        (i + 3 >= s_.size() || !(std::isalnum(static_cast<unsigned char>(s_[i + 3])) || s_[i + 3] == '_')))
      syntax(line, col, "{% raw %} blocks are not supported");
  }
  void tag(bool block, int line, int col) {
    const char *end = block ? "%}" : "}}";
    int depth = 0;
    for (;;) {
      while (pos_ < s_.size() && std::strchr(" \t\n\r\f\v", s_[pos_]) && s_[pos_]) advance_to(pos_ + 1);
      if (pos_ >= s_.size()) syntax(line, col, block ? "missing end of block tag %}" : "missing end of print tag }}");
      if (depth == 0) {
        char sign = s_[pos_] == '-' || (block && s_[pos_] == '+') ? s_[pos_] : 0;
        if (s_.compare(pos_ + (sign ? 1 : 0), 2, end) == 0) {
          out_.push_back({block ? Tok::kBlockEnd : Tok::kVarEnd, "", line_, col_});
          advance_to(pos_ + (sign ? 3 : 2));
          finish_tag(sign, block);
          return;
        }
      }
      Token t{Tok::kOp, "", line_, col_};
      char c = s_[pos_];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t b = pos_;
        while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_'))
          advance_to(pos_ + 1);
        t.kind = Tok::kName;
        t.text = s_.substr(b, pos_ - b);
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        number(t);
      } else if (c == '\'' || c == '"') {
        string(t);
      } else {
        static const char *ops[] = {"//", "**", "==", "!=", "<=", ">="};
        for (const char *op : ops)
          if (s_.compare(pos_, 2, op) == 0) t.text = op;
        if (t.text.empty()) {
          if (!std::strchr("+-*/%~()[]{},.:|=<>", c))
            syntax(line_, col_, std::string("unexpected character '") + c + "'");
          t.text = std::string(1, c);
        }
        if (c == '(' || c == '[' || c == '{') ++depth;
        if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
        advance_to(pos_ + t.text.size());
      }
      out_.push_back(std::move(t));
    }
  }
  void number(Token &t) {
    size_t b = pos_;
    auto digits = [&] {
      while (pos_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_'))
        advance_to(pos_ + 1);
    };
    digits();
    bool is_float = false;
    if (pos_ + 1 < s_.size() && s_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(s_[pos_ + 1]))) {
      is_float = true;
      advance_to(pos_ + 1);
      digits();
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      size_t save = pos_;
      size_t q = pos_ + 1;
      if (q < s_.size() && (s_[q] == '+' || s_[q] == '-')) ++q;
      if (q < s_.size() && std::isdigit(static_cast<unsigned char>(s_[q]))) {
        is_float = true;
        advance_to(q);
        digits();
      } else {
        pos_ = save;
      }
    }
    std::string txt;
    for (size_t i = b; i < pos_; ++i)
      if (s_[i] != '_') txt += s_[i];
    if (is_float) {
      t.kind = Tok::kFloat;
      t.f = std::strtod(txt.c_str(), nullptr);
    } else {
      t.kind = Tok::kInt;
      errno = 0;
      t.i = std::strtoll(txt.c_str(), nullptr, 10);
      if (errno == ERANGE) syntax(t.line, t.col, "integer literal out of the 64-bit range");
    }
    t.text = txt;
  }
  // Jinja decodes string literals with Python's "unicode-escape".
  void string(Token &t) {
    char q = s_[pos_];
    advance_to(pos_ + 1);
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) syntax(t.line, t.col, "unterminated string");
      char c = s_[pos_];
      if (c == q) {
        advance_to(pos_ + 1);
        break;
      }
      if (c != '\\' || pos_ + 1 >= s_.size()) {
        out += c;
        advance_to(pos_ + 1);
        continue;
      }
      char e = s_[pos_ + 1];
      advance_to(pos_ + 2);
      auto hex = [&](int n) {
        uint32_t v = 0;
        for (int k = 0; k < n; ++k) {
          if (pos_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[pos_])))
            syntax(t.line, t.col, "truncated \\x, \\u or \\U escape in a string");
          char h = s_[pos_];
          v = v * 16 + static_cast<uint32_t>(
                           std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
          advance_to(pos_ + 1);
        }
        return v;
      };
      switch (e) {
        case '\n':
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
          out += static_cast<char>(shared_escape(e));
          break;
        case 'v':
          out += '\v';
          break;
        case 'x':
          utf8::append(out, hex(2));
          break;
        case 'u':
        case 'U': {
          uint32_t cp = hex(e == 'u' ? 4 : 8);
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            syntax(t.line, t.col, "a \\u escape names a surrogate or no code point");
          utf8::append(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t v = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '7'; ++k) {
              v = v * 8 + static_cast<uint32_t>(s_[pos_] - '0');
              advance_to(pos_ + 1);
            }
            utf8::append(out, v);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    t.kind = Tok::kString;
    t.text = std::move(out);
  }

  const std::string &s_;
  size_t pos_ = 0;
  int line_ = 1, col_ = 1;
  std::vector<Token> out_;
};

class Parser {
 public:
  explicit Parser(std::vector<Token> toks) : t_(std::move(toks)) {}

  Body document() {
    Body body = statements({});
    if (peek().kind != Tok::kEof) error("unexpected tag");
    return body;
  }

 private:
  const Token &peek(size_t k = 0) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  const Token &next() {
    const Token &t = t_[i_];
    if (i_ + 1 < t_.size()) ++i_;
    return t;
  }
  [[noreturn]] void error(const std::string &what) const { syntax(peek().line, peek().col, what); }
  bool is_op(const char *op, size_t k = 0) const { return peek(k).kind == Tok::kOp && peek(k).text == op; }
  bool is_name(const char *n, size_t k = 0) const { return peek(k).kind == Tok::kName && peek(k).text == n; }
  void expect_op(const char *op) {
    if (!is_op(op)) error(std::string("expected '") + op + "'");
    next();
  }
  std::string expect_name() {
    if (peek().kind != Tok::kName) error("expected a name");
    return next().text;
  }
  void expect_block_end() {
    if (peek().kind != Tok::kBlockEnd) error("expected end of block tag %}");
    next();
  }
  struct Deeper {
    explicit Deeper(Parser &p) : p_(p) {
      if (++p_.depth_ > kMaxDepth) p_.error("the template nests deeper than " + std::to_string(kMaxDepth) + " levels");
    }
    ~Deeper() { --p_.depth_; }
    Parser &p_;
  };
  ExprPtr make(Expr::Kind k, const Token &at) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = at.line;
    e->col = at.col;
    return e;
  }
  std::unique_ptr<Node> node(Node::Kind k, const Token &at) {
    auto n = std::make_unique<Node>();
    n->kind = k;
    n->line = at.line;
    n->col = at.col;
    return n;
  }

  // Statements until a block tag whose name is in `ends` (left unconsumed:
  // the tag's BlockBegin and name are the next tokens).
  Body statements(std::initializer_list<const char *> ends) {
    Deeper d(*this);
    Body body;
    for (;;) {
      const Token &t = peek();
      if (t.kind == Tok::kEof) {
        if (ends.size() == 0) return body;
        error(std::string("missing {% ") + *(ends.end() - 1) + " %}");
      }
      if (t.kind == Tok::kText) {
        auto n = node(Node::Kind::kText, t);
        n->text = next().text;
        body.push_back(std::move(n));
      } else if (t.kind == Tok::kVarBegin) {
        next();
        auto n = node(Node::Kind::kOutput, t);
        n->expr = tuple_expr(true);
        if (peek().kind != Tok::kVarEnd) error("expected end of print tag }}");
        next();
        body.push_back(std::move(n));
      } else if (t.kind == Tok::kBlockBegin) {
        if (peek(1).kind != Tok::kName) syntax(peek(1).line, peek(1).col, "expected a tag name");
        for (const char *e : ends)
          if (peek(1).text == e) return body;
        next();
        body.push_back(statement());
      } else {
        error("unexpected token");
      }
    }
  }

  void end_tag(const char *name) {
    next();  // BlockBegin
    if (!is_name(name)) error(std::string("expected {% ") + name + " %}");
    next();
    expect_block_end();
  }

  std::unique_ptr<Node> statement() {
    const Token &at = peek();
    std::string name = next().text;
    if (name == "if") {
      auto n = node(Node::Kind::kIf, at);
      n->conditions.push_back(tuple_expr(true));
      expect_block_end();
      for (;;) {
        n->branches.push_back(statements({"elif", "else", "endif"}));
        next();
        std::string which = next().text;
        if (which == "endif") {
          expect_block_end();
          return n;
        }
        if (which == "elif") {
          n->conditions.push_back(tuple_expr(true));
        } else {
          if (!n->conditions.back()) error("{% else %} after {% else %}");
          n->conditions.push_back(nullptr);
        }
        expect_block_end();
      }
    }
    if (name == "for") {
      auto n = node(Node::Kind::kFor, at);
      bool paren = is_op("(");
      if (paren) next();
      n->targets.push_back(expect_name());
      while (is_op(",")) {
        next();
        if (paren && is_op(")")) break;
        n->targets.push_back(expect_name());
      }
      if (paren) expect_op(")");
      if (!is_name("in")) error("expected 'in'");
      next();
      n->expr = tuple_expr(false);
      if (is_name("if")) {
        next();
        n->filter = expression(true);
      }
      if (is_name("recursive")) error("recursive loops are not supported");
      expect_block_end();
      n->body = statements({"else", "endfor"});
      next();
      if (next().text == "else") {
        expect_block_end();
        n->else_body = statements({"endfor"});
        end_tag("endfor");
      } else {
        expect_block_end();
      }
      return n;
    }
    if (name == "set") {
      std::string target = expect_name();
      if (is_op(".")) {
        next();
        auto n = node(Node::Kind::kSet, at);
        n->targets.push_back(target);
        n->attr = expect_name();
        expect_op("=");
        n->expr = tuple_expr(true);
        expect_block_end();
        return n;
      }
      std::vector<std::string> targets{target};
      while (is_op(",")) {
        next();
        targets.push_back(expect_name());
      }
      if (is_op("=")) {
        next();
        auto n = node(Node::Kind::kSet, at);
        n->targets = std::move(targets);
        n->expr = tuple_expr(true);
        expect_block_end();
        return n;
      }
      if (targets.size() != 1) error("expected '='");
      if (is_op("|")) error("filtered {% set %} blocks are not supported");
      expect_block_end();
      auto n = node(Node::Kind::kSetBlock, at);
      n->targets = std::move(targets);
      n->body = statements({"endset"});
      end_tag("endset");
      return n;
    }
    if (name == "macro") {
      auto m = std::make_shared<Macro>();
      m->name = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        m->params.push_back(expect_name());
        if (is_op("=")) {
          next();
          m->defaults.push_back(expression(true));
        } else {
          m->defaults.push_back(nullptr);
        }
        if (!is_op(",")) break;
        next();
      }
      expect_op(")");
      expect_block_end();
      m->body = statements({"endmacro"});
      end_tag("endmacro");
      auto n = node(Node::Kind::kMacro, at);
      n->macro = std::move(m);
      return n;
    }
    if (name == "break" || name == "continue") {
      expect_block_end();
      return node(name == "break" ? Node::Kind::kBreak : Node::Kind::kContinue, at);
    }
    if (name == "generation") {  // transformers' AssistantTracker: renders its body
      expect_block_end();
      auto n = node(Node::Kind::kScope, at);
      n->body = statements({"endgeneration"});
      end_tag("endgeneration");
      return n;
    }
    syntax(at.line, at.col, "unsupported or unknown tag '" + name + "'");
  }

  // parse_tuple: `a, b` without parentheses is a tuple.
  ExprPtr tuple_expr(bool with_cond) {
    const Token &at = peek();
    ExprPtr first = expression(with_cond);
    if (!is_op(",")) return first;
    auto t = make(Expr::Kind::kTuple, at);
    t->args.push_back(std::move(first));
    while (is_op(",")) {
      next();
      if (peek().kind == Tok::kVarEnd || peek().kind == Tok::kBlockEnd || is_op(")") || is_op("=")) break;
      t->args.push_back(expression(with_cond));
    }
    return t;
  }

  ExprPtr expression(bool with_cond) {
    Deeper d(*this);
    if (!with_cond) return or_expr();
    ExprPtr e = or_expr();
    while (is_name("if")) {
      const Token &at = next();
      auto c = make(Expr::Kind::kCond, at);
      c->args.push_back(or_expr());
      c->args.push_back(std::move(e));
      if (is_name("else")) {
        next();
        c->args.push_back(expression(true));
      } else {
        c->args.push_back(nullptr);
      }
      e = std::move(c);
    }
    return e;
  }
  ExprPtr or_expr() {
    ExprPtr e = and_expr();
    while (is_name("or")) {
      auto o = make(Expr::Kind::kOr, next());
      o->args.push_back(std::move(e));
      o->args.push_back(and_expr());
      e = std::move(o);
    }
    return e;
  }
  ExprPtr and_expr() {
    ExprPtr e = not_expr();
    while (is_name("and")) {
      auto o = make(Expr::Kind::kAnd, next());
      o->args.push_back(std::move(e));
      o->args.push_back(not_expr());
      e = std::move(o);
    }
    return e;
  }
  ExprPtr not_expr() {
    if (is_name("not")) {
      Deeper d(*this);
      auto n = make(Expr::Kind::kNot, next());
      n->args.push_back(not_expr());
      return n;
    }
    return compare();
  }
  ExprPtr binary(const Token &at, std::string op, ExprPtr l, ExprPtr r) {
    auto b = make(Expr::Kind::kBinary, at);
    b->name = std::move(op);
    b->args.push_back(std::move(l));
    b->args.push_back(std::move(r));
    return b;
  }
  ExprPtr compare() {
    ExprPtr e = math1();
    for (;;) {
      const Token &at = peek();
      std::string op;
      if (at.kind == Tok::kOp && (at.text == "==" || at.text == "!=" || at.text == "<" || at.text == ">" ||
                                  at.text == "<=" || at.text == ">="))
        op = next().text;
      else if (is_name("in"))
        op = (next(), "in");
      else if (is_name("not") && is_name("in", 1))
        op = (next(), next(), "notin");
      else
        return e;
      e = binary(at, op, std::move(e), math1());
    }
  }
  ExprPtr math1() {
    ExprPtr e = concat();
    while (is_op("+") || is_op("-")) {
      const Token &at = next();
      e = binary(at, at.text, std::move(e), concat());
    }
    return e;
  }
  ExprPtr concat() {
    ExprPtr e = math2();
    while (is_op("~")) {
      const Token &at = next();
      e = binary(at, "~", std::move(e), math2());
    }
    return e;
  }
  ExprPtr math2() {
    ExprPtr e = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token &at = next();
      e = binary(at, at.text, std::move(e), power());
    }
    return e;
  }
  ExprPtr power() {
    ExprPtr e = unary(true);
    while (is_op("**")) {
      const Token &at = next();
      e = binary(at, "**", std::move(e), unary(true));
    }
    return e;
  }
  ExprPtr unary(bool with_filter) {
    Deeper d(*this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Token &at = next();
      e = make(at.text == "-" ? Expr::Kind::kNeg : Expr::Kind::kPos, at);
      e->args.push_back(unary(false));
    } else {
      e = postfix(primary());
    }
    if (with_filter) return filters(std::move(e));
    return e;
  }
  ExprPtr primary() {
    Deeper d(*this);
    const Token &at = peek();
    if (at.kind == Tok::kName) {
      next();
      auto e = make(Expr::Kind::kLiteral, at);
      if (at.text == "true" || at.text == "True")
        e->value = Value::boolean(true);
      else if (at.text == "false" || at.text == "False")
        e->value = Value::boolean(false);
      else if (at.text == "none" || at.text == "None")
        e->value = Value::none();
      else {
        e->kind = Expr::Kind::kName;
        e->name = at.text;
      }
      return e;
    }
    if (at.kind == Tok::kString) {
      std::string s = next().text;
      while (peek().kind == Tok::kString) s += next().text;
      auto e = make(Expr::Kind::kLiteral, at);
      e->value = Value::string(std::move(s));
      return e;
    }
    if (at.kind == Tok::kInt || at.kind == Tok::kFloat) {
      next();
      auto e = make(Expr::Kind::kLiteral, at);
      e->value = at.kind == Tok::kInt ? Value::integer(at.i) : Value::number(at.f);
      return e;
    }
    if (is_op("(")) {
      next();
      if (is_op(")")) {
        next();
        return make(Expr::Kind::kTuple, at);
      }
      ExprPtr e = expression(true);
      if (is_op(",")) {
        auto t = make(Expr::Kind::kTuple, at);
        t->args.push_back(std::move(e));
        while (is_op(",")) {
          next();
          if (is_op(")")) break;
          t->args.push_back(expression(true));
        }
        e = std::move(t);
      }
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      next();
      auto e = make(Expr::Kind::kList, at);
      while (!is_op("]")) {
        e->args.push_back(expression(true));
        if (!is_op(",")) break;
        next();
      }
      expect_op("]");
      return e;
    }
    if (is_op("{")) {
      next();
      auto e = make(Expr::Kind::kDict, at);
      while (!is_op("}")) {
        e->args.push_back(expression(true));
        expect_op(":");
        e->args.push_back(expression(true));
        if (!is_op(",")) break;
        next();
      }
      expect_op("}");
      return e;
    }
    error("expected an expression");
  }
  void call_args(Expr &e) {
    expect_op("(");
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) error("*args and **kwargs are not supported");
      if (peek().kind == Tok::kName && is_op("=", 1)) {
        std::string k = next().text;
        next();
        e.kwargs.emplace_back(std::move(k), expression(true));
      } else {
        if (!e.kwargs.empty()) error("a positional argument follows a keyword argument");
        e.args.push_back(expression(true));
      }
      if (!is_op(",")) break;
      next();
    }
    expect_op(")");
  }
  ExprPtr postfix(ExprPtr e) {
    for (int n = 0;; ++n) {
      if (n > kMaxDepth) error("too many subscripts or calls in a row");
      const Token &at = peek();
      if (is_op(".")) {
        next();
        auto a = make(Expr::Kind::kAttr, at);
        if (peek().kind == Tok::kInt) {
          a->kind = Expr::Kind::kIndex;
          a->args.push_back(std::move(e));
          auto idx = make(Expr::Kind::kLiteral, peek());
          idx->value = Value::integer(next().i);
          a->args.push_back(std::move(idx));
        } else {
          a->name = expect_name();
          a->args.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (is_op("[")) {
        next();
        ExprPtr parts[3];
        bool slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!is_op(":") && !is_op("]")) parts[k] = expression(true);
          if (k < 2 && is_op(":")) {
            slice = true;
            next();
          } else {
            break;
          }
        }
        expect_op("]");
        auto s = make(slice ? Expr::Kind::kSlice : Expr::Kind::kIndex, at);
        s->args.push_back(std::move(e));
        if (!slice && !parts[0]) syntax(at.line, at.col, "empty subscript");
        for (int k = 0; k < (slice ? 3 : 1); ++k) s->args.push_back(std::move(parts[k]));
        e = std::move(s);
      } else if (is_op("(")) {
        auto c = make(Expr::Kind::kCall, at);
        c->line = e->line;  // errors point at the callee
        c->col = e->col;
        c->args.push_back(std::move(e));
        call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }
  ExprPtr filters(ExprPtr e) {
    for (int n = 0;; ++n) {
      if (n > kMaxDepth) error("too many filters in a row");
      const Token &at = peek();
      if (is_op("|")) {
        next();
        auto f = make(Expr::Kind::kFilter, at);
        f->name = expect_name();
        while (is_op(".")) {
          next();
          f->name += "." + expect_name();
        }
        f->args.push_back(std::move(e));
        if (is_op("(")) call_args(*f);
        e = std::move(f);
      } else if (is_name("is")) {
        next();
        auto t = make(Expr::Kind::kTest, at);
        if (is_name("not")) {
          next();
          t->negated = true;
        }
        t->name = expect_name();
        t->args.push_back(std::move(e));
        if (is_op("(")) {
          call_args(*t);
        } else {
          const Token &a = peek();
          bool arg = (a.kind == Tok::kString || a.kind == Tok::kInt || a.kind == Tok::kFloat || is_op("[") ||
                      is_op("{") || is_op("-") || is_op("+")) ||
                     (a.kind == Tok::kName && a.text != "else" && a.text != "or" && a.text != "and" && a.text != "if" &&
                      a.text != "in" && a.text != "not" && a.text != "is");
          if (arg) t->args.push_back(postfix(primary()));
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

std::unique_ptr<Node> parse_template(std::string_view source) {
  if (!utf8::valid(source)) fail(PARLEY_ERROR_INVALID_MODEL, "chat template: not valid UTF-8");
  std::string src = normalise(source);
  auto root = std::make_unique<Node>();
  root->kind = Node::Kind::kScope;
  root->body = Parser(Lexer(src).run()).document();
  return root;
}

}  // namespace parley::jinja
