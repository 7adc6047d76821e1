// GBNF grammars (llama.cpp's grammar format, grammars/README.md there) parsed
// into a pushdown automaton over Unicode code points, and its matcher.
//
// Syntax: `name ::= alternatives` rules (names [a-zA-Z0-9-_]), `|`
// alternation, `( )` grouping, postfix `*` `+` `?` `{m}` `{m,}` `{m,n}`,
// string literals "..." and character classes [...] ([^...] negated, a-z
// ranges) with the escapes \n \r \t \\ \" \] \[ \- \/ \xHH \uHHHH
// \UHHHHHHHH, `.` (any code point), `#` comments to the end of the line.
// A rule continues over newlines inside parentheses or after `|`. The start
// rule is `root`.
//
// The automaton follows llama.cpp's design: each rule is a list of
// alternatives, each alternative a sequence of elements (a character class
// or a reference to a rule); a matcher state is a set of stacks of
// positions, the top of each stack being the class the next code point must
// match (an empty stack: the input so far is a complete sentence).
// Repetitions become helper rules. Refused at compile time, with the rule's
// name: undefined rules, a missing root, left recursion (including a
// repetition of something that can match the empty string: the matcher
// would loop), and rules that cannot derive any finite string (a grammar
// that admits nothing).
//
// Thread-safety: a Grammar is immutable once built; GrammarState is a value.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace parley {

class Grammar {
 public:
  // Parses and compiles `text`; throws Error(INVALID_ARGUMENT) with
  // "grammar: line L, column C: what" for syntax errors, "grammar: rule
  // 'x' ..." for the checks above. `max_rules` bounds the compiled size
  // (repetitions {m,n} expand into copies).
  static std::shared_ptr<const Grammar> parse(std::string_view text);

  enum class Kind : uint8_t { kChar, kRef, kEnd };
  struct Element {
    Kind kind;
    bool negated = false;
    uint32_t ref = 0;           // kRef: rule index
    uint32_t ranges_begin = 0;  // kChar: [begin, end) into ranges()
    uint32_t ranges_end = 0;
  };
  using Stack = std::vector<uint32_t>;  // positions into elements(), top at the back

  const std::vector<Element> &elements() const { return elements_; }
  const std::vector<std::pair<uint32_t, uint32_t>> &ranges() const { return ranges_; }
  // Start positions of rule r's alternatives (an alternative starting at a
  // kEnd element is empty).
  const std::vector<uint32_t> &alternatives(uint32_t rule) const { return rules_[rule]; }
  size_t rule_count() const { return rules_.size(); }
  // Whether element `pos` (kChar) admits code point `cp`.
  bool admits(uint32_t pos, uint32_t cp) const;
  // Whether element `pos` (kChar) admits some code point in [lo, hi].
  bool admits_some(uint32_t pos, uint32_t lo, uint32_t hi) const;

  // The stacks of the start state (root's alternatives, expanded).
  std::vector<Stack> initial_stacks() const;
  // Appends to `out` the canonical stacks `stack` expands to: its top
  // reference is replaced by each alternative of the rule until every stack
  // has a character class on top, or is empty.
  void expand(Stack stack, std::vector<Stack> &out) const;
  // The stacks after code point `cp` (sorted, duplicates removed).
  void advance(const std::vector<Stack> &stacks, uint32_t cp, std::vector<Stack> &out) const;

 private:
  std::vector<Element> elements_;
  std::vector<std::pair<uint32_t, uint32_t>> ranges_;
  std::vector<std::vector<uint32_t>> rules_;
  uint32_t root_ = 0;
  friend class GrammarCompiler;
};

// A matcher over bytes: the grammar's stacks plus an unfinished UTF-8
// sequence (a token may end inside a code point).
struct GrammarState {
  std::vector<Grammar::Stack> stacks;
  uint32_t partial = 0;    // the bits of the unfinished code point so far
  uint8_t remaining = 0;   // continuation bytes it still needs
  uint8_t seq_length = 0;  // its total length in bytes
  // Nothing can follow: no stack (the input left the grammar).
  bool dead() const { return stacks.empty(); }
  // The input is a complete sentence of the grammar.
  bool complete() const;
  // Nothing but the end may follow (every stack empty).
  bool finished() const;
};

// Feeds one byte; returns false (leaving `out` unspecified) when the byte
// cannot continue any sentence: invalid UTF-8, or a code point (or the
// start of one) no stack admits.
bool advance_byte(const Grammar &g, const GrammarState &in, uint8_t byte, GrammarState &out);

}  // namespace parley
