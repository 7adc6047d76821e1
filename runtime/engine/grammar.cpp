// GBNF parser, compiler and matcher (see grammar.hpp).
#include "engine/grammar.hpp"

#include <algorithm>
#include <map>
#include <string>

#include "core/error.hpp"

namespace parley {

namespace {

constexpr size_t kMaxElements = 1 << 20;  // compiled size: {m,n} repetitions copy their item
constexpr uint32_t kMaxRepeat = 10000;
constexpr int kMaxNesting = 64;       // parentheses
constexpr size_t kMaxStacks = 20000;  // parse stacks alive at once

// An element before flattening.
struct Item {
  Grammar::Kind kind;
  bool negated = false;
  uint32_t ref = 0;
  std::vector<std::pair<uint32_t, uint32_t>> ranges;
};
using Sequence = std::vector<Item>;

struct RuleDef {
  std::string name;
  std::vector<Sequence> alts;
  bool defined = false;
  size_t first_use = std::string::npos;  // byte offset of the first reference (for "undefined")
};

}  // namespace

class GrammarCompiler {
 public:
  explicit GrammarCompiler(std::string_view text) : s_(text) {}

  std::shared_ptr<const Grammar> run() {
    skip_space(true);
    if (pos_ >= s_.size()) error_at(pos_, "the grammar is empty (it needs a rule 'root ::= ...')");
    while (pos_ < s_.size()) {
      const size_t name_at = pos_;
      std::string name = parse_name();
      skip_space(false);
      if (s_.substr(pos_, 3) != "::=") error_at(pos_, "expected '::=' after rule name '" + name + "'");
      pos_ += 3;
      skip_space(false);
      const uint32_t r = rule_id(name, std::string::npos);
      if (rules_[r].defined) error_at(name_at, "rule '" + name + "' is defined twice");
      rules_[r].defined = true;
      rules_[r].alts = parse_alternatives(name, 0);
      if (pos_ < s_.size()) {
        if (s_[pos_] == ')') error_at(pos_, "unbalanced ')'");
        if (s_[pos_] != '\n' && s_[pos_] != '\r')
          error_at(pos_, std::string("unexpected character '") + s_[pos_] + "'");
      }
      skip_space(true);
    }
    return compile();
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;
  std::vector<RuleDef> rules_;
  std::map<std::string, uint32_t, std::less<>> by_name_;
  size_t items_ = 0;

  [[noreturn]] void error_at(size_t at, const std::string &what) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "grammar: line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + what);
  }

  uint32_t rule_id(const std::string &name, size_t use_at) {
    auto it = by_name_.find(name);
    if (it != by_name_.end()) {
      if (use_at != std::string::npos && rules_[it->second].first_use == std::string::npos)
        rules_[it->second].first_use = use_at;
      return it->second;
    }
    const uint32_t id = static_cast<uint32_t>(rules_.size());
    rules_.push_back({name, {}, false, use_at});
    by_name_.emplace(name, id);
    return id;
  }

  uint32_t helper_rule(const std::string &parent, const char *what, std::vector<Sequence> alts) {
    const uint32_t id = static_cast<uint32_t>(rules_.size());
    rules_.push_back({parent + " (" + what + ")", std::move(alts), true, std::string::npos});
    return id;
  }

  static bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  }

  // Spaces, tabs, comments; newlines only when `newlines`.
  void skip_space(bool newlines) {
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c == ' ' || c == '\t' || (newlines && (c == '\n' || c == '\r'))) {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < s_.size() && s_[pos_] != '\n' && s_[pos_] != '\r') ++pos_;
      } else {
        break;
      }
    }
  }

  std::string parse_name() {
    const size_t start = pos_;
    while (pos_ < s_.size() && name_char(s_[pos_])) ++pos_;
    if (pos_ == start)
      error_at(start, pos_ < s_.size() ? std::string("expected a rule name, found '") + s_[pos_] + "'"
                                       : std::string("expected a rule name, found the end of the grammar"));
    return std::string(s_.substr(start, pos_ - start));
  }

  // A name followed by '::=' starts the next rule.
  bool at_rule_start() const {
    size_t p = pos_;
    while (p < s_.size() && name_char(s_[p])) ++p;
    if (p == pos_) return false;
    while (p < s_.size() && (s_[p] == ' ' || s_[p] == '\t')) ++p;
    return s_.substr(p, 3) == "::=";
  }

  // One code point of UTF-8 (the grammar text must be valid UTF-8).
  uint32_t next_code_point() {
    const size_t at = pos_;
    const auto b = static_cast<uint8_t>(s_[pos_]);
    int len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (len == 0 || pos_ + static_cast<size_t>(len) > s_.size()) error_at(at, "invalid UTF-8");
    uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu) : (b & 0x07u);
    for (int i = 1; i < len; ++i) {
      const auto c = static_cast<uint8_t>(s_[pos_ + static_cast<size_t>(i)]);
      if ((c & 0xC0) != 0x80) error_at(at, "invalid UTF-8");
      cp = cp << 6 | (c & 0x3Fu);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) error_at(at, "invalid UTF-8");
    pos_ += static_cast<size_t>(len);
    return cp;
  }

  uint32_t parse_hex(int digits) {
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      if (pos_ >= s_.size()) error_at(pos_, "unfinished escape: expected " + std::to_string(digits) + " hex digits");
      const char c = s_[pos_];
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (d < 0) error_at(pos_, std::string("expected a hex digit, found '") + c + "'");
      v = v << 4 | static_cast<uint32_t>(d);
      ++pos_;
    }
    return v;
  }

  // A (possibly escaped) character inside a literal or class.
  uint32_t parse_char() {
    if (pos_ >= s_.size()) error_at(pos_, "unexpected end of the grammar");
    if (s_[pos_] != '\\') return next_code_point();
    const size_t at = pos_;
    ++pos_;
    if (pos_ >= s_.size()) error_at(at, "unfinished escape");
    const char c = s_[pos_++];
    uint32_t cp = 0;
    switch (c) {
      case 'n':
        return '\n';
      case 'r':
        return '\r';
      case 't':
        return '\t';
      case '\\':
      case '"':
      case ']':
      case '[':
      case '-':
      case '/':
      case '\'':
      case '^':
        return static_cast<uint8_t>(c);
      case 'x':
        cp = parse_hex(2);
        break;
      case 'u':
        cp = parse_hex(4);
        break;
      case 'U':
        cp = parse_hex(8);
        break;
      default:
        error_at(at, std::string("unknown escape '\\") + c + "'");
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) error_at(at, "escape is not a Unicode scalar value");
    return cp;
  }

  void count_item() {
    if (++items_ > kMaxElements)
      error_at(pos_, "the grammar is too large (more than 2^20 elements once repetitions are expanded)");
  }

  std::vector<Sequence> parse_alternatives(const std::string &rule, int depth) {
    std::vector<Sequence> alts;
    alts.push_back(parse_sequence(rule, depth));
    while (pos_ < s_.size() && s_[pos_] == '|') {
      ++pos_;
      skip_space(true);
      alts.push_back(parse_sequence(rule, depth));
    }
    return alts;
  }

  uint32_t parse_count() {
    const size_t at = pos_;
    uint64_t v = 0;
    if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9') error_at(at, "expected a number in {m,n}");
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      v = v * 10 + static_cast<uint64_t>(s_[pos_] - '0');
      if (v > kMaxRepeat) error_at(at, "repetition count above " + std::to_string(kMaxRepeat));
      ++pos_;
    }
    return static_cast<uint32_t>(v);
  }

  Sequence parse_sequence(const std::string &rule, int depth) {
    Sequence seq;
    size_t last_start = SIZE_MAX;  // where the item a postfix operator applies to starts
    for (;;) {
      skip_space(depth > 0);
      if (pos_ >= s_.size()) break;
      const char c = s_[pos_];
      const size_t at = pos_;
      if (c == '"') {
        ++pos_;
        last_start = seq.size();
        while (pos_ < s_.size() && s_[pos_] != '"') {
          const uint32_t cp = parse_char();
          count_item();
          seq.push_back({Grammar::Kind::kChar, false, 0, {{cp, cp}}});
        }
        if (pos_ >= s_.size()) error_at(at, "unterminated string literal");
        ++pos_;
        if (seq.size() == last_start) last_start = SIZE_MAX;  // "" matches the empty string
      } else if (c == '[') {
        ++pos_;
        Item item{Grammar::Kind::kChar, false, 0, {}};
        if (pos_ < s_.size() && s_[pos_] == '^') {
          item.negated = true;
          ++pos_;
        }
        while (pos_ < s_.size() && s_[pos_] != ']') {
          const size_t char_at = pos_;
          const uint32_t lo = parse_char();
          uint32_t hi = lo;
          if (pos_ + 1 < s_.size() && s_[pos_] == '-' && s_[pos_ + 1] != ']') {
            ++pos_;
            hi = parse_char();
            if (hi < lo) error_at(char_at, "character range is backwards (its end is below its start)");
          }
          item.ranges.emplace_back(lo, hi);
        }
        if (pos_ >= s_.size()) error_at(at, "unterminated character class");
        ++pos_;
        count_item();
        last_start = seq.size();
        seq.push_back(std::move(item));
      } else if (c == '.') {
        ++pos_;
        count_item();
        last_start = seq.size();
        seq.push_back({Grammar::Kind::kChar, true, 0, {}});
      } else if (name_char(c)) {
        if (depth == 0 && at_rule_start()) break;
        std::string name = parse_name();
        count_item();
        last_start = seq.size();
        seq.push_back({Grammar::Kind::kRef, false, rule_id(name, at), {}});
      } else if (c == '(') {
        if (depth + 1 > kMaxNesting) error_at(at, "parentheses nested deeper than " + std::to_string(kMaxNesting));
        ++pos_;
        skip_space(true);
        std::vector<Sequence> alts = parse_alternatives(rule, depth + 1);
        if (pos_ >= s_.size() || s_[pos_] != ')') error_at(at, "unclosed '('");
        ++pos_;
        count_item();
        last_start = seq.size();
        seq.push_back({Grammar::Kind::kRef, false, helper_rule(rule, "group", std::move(alts)), {}});
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (last_start == SIZE_MAX || last_start >= seq.size())
          error_at(at, std::string("'") + c + "' has nothing before it to repeat");
        ++pos_;
        uint32_t min = 0, max = 0;
        bool unbounded = false;
        if (c == '*') {
          unbounded = true;
        } else if (c == '+') {
          min = 1;
          unbounded = true;
        } else if (c == '?') {
          max = 1;
        } else {
          skip_space(false);
          min = parse_count();
          skip_space(false);
          if (pos_ < s_.size() && s_[pos_] == ',') {
            ++pos_;
            skip_space(false);
            if (pos_ < s_.size() && s_[pos_] == '}') {
              unbounded = true;
            } else {
              max = parse_count();
              if (max < min) error_at(at, "{m,n} with n < m");
            }
          } else {
            max = min;
          }
          skip_space(false);
          if (pos_ >= s_.size() || s_[pos_] != '}') error_at(at, "expected '}' to close {m,n}");
          ++pos_;
        }
        Sequence item(seq.begin() + static_cast<std::ptrdiff_t>(last_start), seq.end());
        seq.resize(last_start);
        items_ += item.size() * (static_cast<size_t>(std::max(min, max)) + 1);
        if (items_ > kMaxElements)
          error_at(at, "the grammar is too large (more than 2^20 elements once repetitions are expanded)");
        for (uint32_t i = 0; i < min; ++i) seq.insert(seq.end(), item.begin(), item.end());
        if (unbounded) {
          // star ::= item star | (empty)
          const uint32_t star = helper_rule(rule, "repetition", {});
          Sequence again = item;
          again.push_back({Grammar::Kind::kRef, false, star, {}});
          rules_[star].alts = {again, {}};
          seq.push_back({Grammar::Kind::kRef, false, star, {}});
        } else if (max > min) {
          // opt_k ::= item opt_{k-1} | (empty): at most max - min more, one parse each.
          uint32_t next = UINT32_MAX;
          for (uint32_t k = 0; k < max - min; ++k) {
            Sequence more = item;
            if (next != UINT32_MAX) more.push_back({Grammar::Kind::kRef, false, next, {}});
            next = helper_rule(rule, "optional", {more, {}});
          }
          seq.push_back({Grammar::Kind::kRef, false, next, {}});
        }
        last_start = SIZE_MAX;
      } else if (c == '|' || c == ')' || c == '\n' || c == '\r') {
        break;
      } else {
        error_at(at, std::string("unexpected character '") + c + "'");
      }
    }
    return seq;
  }

  std::shared_ptr<const Grammar> compile() {
    auto root = by_name_.find("root");
    if (root == by_name_.end() || !rules_[root->second].defined)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "grammar: there is no rule 'root' (the start rule)");
    for (const RuleDef &r : rules_)
      if (!r.defined) error_at(r.first_use, "rule '" + r.name + "' is used but never defined");
    // Character classes: sorted, merged ranges.
    for (RuleDef &r : rules_)
      for (Sequence &alt : r.alts)
        for (Item &it : alt) {
          if (it.kind != Grammar::Kind::kChar) continue;
          std::sort(it.ranges.begin(), it.ranges.end());
          std::vector<std::pair<uint32_t, uint32_t>> merged;
          for (const auto &rg : it.ranges)
            if (!merged.empty() && rg.first <= merged.back().second + 1)
              merged.back().second = std::max(merged.back().second, rg.second);
            else
              merged.push_back(rg);
          it.ranges = std::move(merged);
        }
    const size_t n = rules_.size();
    // Productive rules (those deriving some finite string); alternatives
    // that need an unproductive rule or an empty class can never complete
    // and are dropped, so that every state the matcher reaches can finish.
    auto item_productive = [&](const Item &it, const std::vector<char> &prod) {
      if (it.kind == Grammar::Kind::kRef) return prod[it.ref] != 0;
      return it.negated ? !(it.ranges.size() == 1 && it.ranges[0].first == 0 && it.ranges[0].second >= 0x10FFFF)
                        : !it.ranges.empty();
    };
    std::vector<char> productive(n, 0);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        if (productive[r]) continue;
        for (const Sequence &alt : rules_[r].alts)
          if (std::all_of(alt.begin(), alt.end(), [&](const Item &it) { return item_productive(it, productive); })) {
            productive[r] = 1;
            changed = true;
            break;
          }
      }
    }
    if (!productive[root->second])
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           "grammar: the grammar admits nothing: rule 'root' cannot derive any finite string");
    for (RuleDef &r : rules_)
      r.alts.erase(std::remove_if(r.alts.begin(), r.alts.end(),
                                  [&](const Sequence &alt) {
                                    return !std::all_of(alt.begin(), alt.end(), [&](const Item &it) {
                                      return item_productive(it, productive);
                                    });
                                  }),
                   r.alts.end());
    // Nullable rules, then left recursion: a rule reaching itself through
    // the first elements of its alternatives (past nullable ones) would
    // make expansion loop for ever.
    std::vector<char> nullable(n, 0);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        if (nullable[r]) continue;
        for (const Sequence &alt : rules_[r].alts)
          if (std::all_of(alt.begin(), alt.end(),
                          [&](const Item &it) { return it.kind == Grammar::Kind::kRef && nullable[it.ref]; })) {
            nullable[r] = 1;
            changed = true;
            break;
          }
      }
    }
    std::vector<std::vector<uint32_t>> first(n);
    for (size_t r = 0; r < n; ++r)
      for (const Sequence &alt : rules_[r].alts)
        for (const Item &it : alt) {
          if (it.kind != Grammar::Kind::kRef) break;
          first[r].push_back(it.ref);
          if (!nullable[it.ref]) break;
        }
    std::vector<uint8_t> color(n, 0);  // 0 new, 1 on the path, 2 done
    for (size_t start = 0; start < n; ++start) {
      if (color[start]) continue;
      std::vector<std::pair<uint32_t, size_t>> path{{static_cast<uint32_t>(start), 0}};
      color[start] = 1;
      while (!path.empty()) {
        auto &[r, i] = path.back();
        if (i == first[r].size()) {
          color[r] = 2;
          path.pop_back();
          continue;
        }
        const uint32_t next = first[r][i++];
        if (color[next] == 1)
          fail(PARLEY_ERROR_INVALID_ARGUMENT,
               "grammar: rule '" + rules_[next].name +
                   "' is left-recursive: it can reach itself without consuming input (rewrite it right-recursively, "
                   "and do not repeat something that can match the empty string)");
        if (color[next] == 0) {
          color[next] = 1;
          path.emplace_back(next, 0);
        }
      }
    }
    // Flatten.
    auto g = std::shared_ptr<Grammar>(new Grammar());
    g->rules_.resize(n);
    for (size_t r = 0; r < n; ++r)
      for (const Sequence &alt : rules_[r].alts) {
        g->rules_[r].push_back(static_cast<uint32_t>(g->elements_.size()));
        for (const Item &it : alt) {
          Grammar::Element e{it.kind, it.negated, it.ref, 0, 0};
          if (it.kind == Grammar::Kind::kChar) {
            e.ranges_begin = static_cast<uint32_t>(g->ranges_.size());
            g->ranges_.insert(g->ranges_.end(), it.ranges.begin(), it.ranges.end());
            e.ranges_end = static_cast<uint32_t>(g->ranges_.size());
          }
          g->elements_.push_back(e);
        }
        g->elements_.push_back({Grammar::Kind::kEnd, false, 0, 0, 0});
      }
    g->root_ = root->second;
    return g;
  }
};

std::shared_ptr<const Grammar> Grammar::parse(std::string_view text) {
  return GrammarCompiler(text).run();
}

bool Grammar::admits(uint32_t pos, uint32_t cp) const {
  const Element &e = elements_[pos];
  bool in = false;
  for (uint32_t i = e.ranges_begin; i < e.ranges_end && !in; ++i)
    in = cp >= ranges_[i].first && cp <= ranges_[i].second;
  return in != e.negated;
}

bool Grammar::admits_some(uint32_t pos, uint32_t lo, uint32_t hi) const {
  const Element &e = elements_[pos];
  if (!e.negated) {
    for (uint32_t i = e.ranges_begin; i < e.ranges_end; ++i)
      if (ranges_[i].first <= hi && ranges_[i].second >= lo) return true;
    return false;
  }
  // Some code point of [lo, hi] outside the (sorted, merged) ranges.
  uint32_t cur = lo;
  for (uint32_t i = e.ranges_begin; i < e.ranges_end; ++i) {
    if (ranges_[i].second < cur) continue;
    if (ranges_[i].first > cur) return true;
    if (ranges_[i].second >= hi) return false;
    cur = ranges_[i].second + 1;
  }
  return cur <= hi;
}

void Grammar::expand(Stack stack, std::vector<Stack> &out) const {
  if (out.size() > kMaxStacks)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "grammar: too ambiguous: more than " + std::to_string(kMaxStacks) + " parses alive at once");
  if (stack.empty() || elements_[stack.back()].kind == Kind::kChar) {
    out.push_back(std::move(stack));
    return;
  }
  const uint32_t pos = stack.back();
  const uint32_t rule = elements_[pos].ref;
  stack.pop_back();
  if (elements_[pos + 1].kind != Kind::kEnd) stack.push_back(pos + 1);
  for (uint32_t start : rules_[rule]) {
    Stack s = stack;
    if (elements_[start].kind != Kind::kEnd) s.push_back(start);
    expand(std::move(s), out);
  }
}

namespace {
void sort_unique(std::vector<Grammar::Stack> &stacks) {
  std::sort(stacks.begin(), stacks.end());
  stacks.erase(std::unique(stacks.begin(), stacks.end()), stacks.end());
}
}  // namespace

std::vector<Grammar::Stack> Grammar::initial_stacks() const {
  std::vector<Stack> out;
  for (uint32_t start : rules_[root_]) expand(elements_[start].kind == Kind::kEnd ? Stack{} : Stack{start}, out);
  sort_unique(out);
  return out;
}

void Grammar::advance(const std::vector<Stack> &stacks, uint32_t cp, std::vector<Stack> &out) const {
  out.clear();
  for (const Stack &st : stacks) {
    if (st.empty() || !admits(st.back(), cp)) continue;
    Stack s = st;
    const uint32_t next = s.back() + 1;
    s.pop_back();
    if (elements_[next].kind != Kind::kEnd) s.push_back(next);
    expand(std::move(s), out);
  }
  sort_unique(out);
}

bool GrammarState::complete() const {
  if (remaining) return false;
  for (const auto &s : stacks)
    if (s.empty()) return true;
  return false;
}

bool GrammarState::finished() const {
  if (remaining || stacks.empty()) return false;
  for (const auto &s : stacks)
    if (!s.empty()) return false;
  return true;
}

bool advance_byte(const Grammar &g, const GrammarState &in, uint8_t b, GrammarState &out) {
  uint32_t cp;
  if (in.remaining == 0) {
    if (b < 0x80) {
      cp = b;
    } else {
      uint8_t len = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
      if (!len) return false;
      out.partial = len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu) : (b & 0x07u);
      out.seq_length = len;
      out.remaining = static_cast<uint8_t>(len - 1);
      if (&out != &in) out.stacks = in.stacks;
    }
    if (b < 0x80) {
      out.remaining = 0;
      out.partial = 0;
      out.seq_length = 0;
      g.advance(in.stacks, cp, out.stacks);
      return !out.stacks.empty();
    }
  } else {
    if ((b & 0xC0) != 0x80) return false;
    // The second byte rules out overlong forms, surrogates and values past
    // U+10FFFF, so that every completion of a prefix is a scalar value.
    if (in.remaining == in.seq_length - 1) {
      if (in.seq_length == 3 && in.partial == 0 && b < 0xA0) return false;
      if (in.seq_length == 3 && in.partial == 0xD && b > 0x9F) return false;
      if (in.seq_length == 4 && in.partial == 0 && b < 0x90) return false;
      if (in.seq_length == 4 && in.partial == 4 && b > 0x8F) return false;
    }
    const uint32_t partial = in.partial << 6 | (b & 0x3Fu);
    const uint8_t remaining = static_cast<uint8_t>(in.remaining - 1);
    if (remaining == 0) {
      g.advance(in.stacks, partial, out.stacks);
      out.partial = 0;
      out.remaining = 0;
      out.seq_length = 0;
      return !out.stacks.empty();
    }
    out.partial = partial;
    out.remaining = remaining;
    out.seq_length = in.seq_length;
    if (&out != &in) out.stacks = in.stacks;
  }
  // An unfinished code point: some stack must admit one of its completions.
  const uint32_t shift = 6u * out.remaining;
  uint32_t lo = out.partial << shift, hi = lo | ((1u << shift) - 1);
  hi = std::min<uint32_t>(hi, 0x10FFFF);
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  lo = std::max(lo, kMin[out.seq_length]);
  for (const auto &s : out.stacks)
    if (!s.empty() && g.admits_some(s.back(), lo, hi)) return true;
  return false;
}

}  // namespace parley
