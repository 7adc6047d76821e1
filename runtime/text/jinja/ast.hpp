// The syntax tree the parser (parser.cpp) builds and the evaluator
// (evaluator.cpp) walks. Internal to runtime/text/jinja.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja/value.hpp"

namespace parley::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,  // value
    kName,     // name
    kAttr,     // args[0].name
    kIndex,    // args[0][args[1]]
    kSlice,    // args[0][args[1]:args[2]:args[3]] (null parts omitted)
    kCall,     // args[0](args[1:], kwargs)
    kFilter,   // args[0] | name(args[1:], kwargs)
    kTest,     // args[0] is [not] name(args[1:])
    kNot,
    kNeg,
    kPos,
    kBinary,  // args[0] name args[1]: + - * / // % ** ~ == != < <= > >= in notin
    kAnd,
    kOr,
    kCond,  // args[1] if args[0] else args[2] (args[2] null: undefined)
    kList,
    kTuple,
    kDict,  // keys args[0], args[2], ...; values args[1], args[3], ...
  };
  Kind kind;
  int line = 0, col = 0;
  Value value;
  std::string name;
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Macro {
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // one per param, null when none
  Body body;
};

struct Node {
  enum class Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue, kScope };
  Kind kind;
  int line = 0, col = 0;
  std::string text;                  // kText
  ExprPtr expr;                      // kOutput; kSet value; kFor iterable
  std::vector<ExprPtr> conditions;   // kIf: one per branch, null for else
  std::vector<Body> branches;        // kIf
  std::vector<std::string> targets;  // kFor loop variables; kSet/kSetBlock names (or namespace)
  std::string attr;                  // kSet: `set ns.attr = ...`
  ExprPtr filter;                    // kFor: `for x in xs if cond`
  Body body, else_body;              // kFor, kSetBlock, kScope (generation blocks)
  std::shared_ptr<const Macro> macro;
};

}  // namespace parley::jinja
