// GBNF parser and matcher, JSON-schema conversion, and the token mask
// (engine/grammar.hpp, json_schema_grammar.hpp, token_constraint.hpp).
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "engine/grammar.hpp"
#include "engine/json_schema_grammar.hpp"
#include "engine/token_constraint.hpp"

using namespace parley;

namespace {

uint64_t test_seed() {
  static const uint64_t seed = [] {
    const char *env = std::getenv("PARLEY_TEST_SEED");
    uint64_t s = env ? std::strtoull(env, nullptr, 10) : 20261205u;
    std::printf("grammar tests: seed %llu (PARLEY_TEST_SEED overrides)\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

// Feeds `text` byte by byte; 1 = complete sentence, 0 = a viable prefix, -1 = rejected.
int run(const Grammar &g, const std::string &text) {
  GrammarState st, next;
  st.stacks = g.initial_stacks();
  for (char c : text) {
    if (!advance_byte(g, st, static_cast<uint8_t>(c), next)) return -1;
    std::swap(st, next);
  }
  return st.complete() ? 1 : 0;
}

std::string error_of(const std::string &grammar) {
  try {
    Grammar::parse(grammar);
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_INVALID_ARGUMENT) << grammar;
    return e.what();
  }
  return "";
}

std::string schema_error(const std::string &schema) {
  try {
    Grammar::parse(json_schema_to_gbnf(schema));
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_INVALID_ARGUMENT) << schema;
    return e.what();
  }
  return "";
}

}  // namespace

TEST(GrammarParser, AcceptsValidGrammars) {
  struct Case {
    const char *grammar;
    std::vector<std::string> yes, no;
  };
  const std::vector<Case> cases = {
      {R"(root ::= "a")", {"a"}, {"", "b", "aa"}},
      {R"(root ::= "ab" | "cd")", {"ab", "cd"}, {"a", "ac", "abcd"}},
      {R"(root ::= [a-c]+)", {"a", "abc", "cccb"}, {"", "d", "ad"}},
      {R"(root ::= [^a-c]*)", {"", "xyz", "é"}, {"a", "xb"}},
      {R"(root ::= "x"? "y")", {"y", "xy"}, {"xxy", "x"}},
      {R"(root ::= "a"{3})", {"aaa"}, {"aa", "aaaa"}},
      {R"(root ::= "a"{2,})", {"aa", "aaaaa"}, {"a"}},
      {R"(root ::= "a"{1,3})", {"a", "aa", "aaa"}, {"", "aaaa"}},
      {R"(root ::= "a"{0,2} "b")", {"b", "ab", "aab"}, {"aaab"}},
      {R"(root ::= ("ab" | "c")* "!")", {"!", "ab!", "cabc!"}, {"a!", "abab"}},
      {"root ::= item (\",\" item)*\nitem ::= [0-9]+", {"1", "12,3,456"}, {",", "1,", "1,,2"}},
      {"# a comment\nroot ::= a b # trailing\na ::= \"a\"\n\nb ::= \"b\"\n", {"ab"}, {"a", "ba"}},
      {"root ::= (\n  \"a\" |\n  \"b\"\n)", {"a", "b"}, {"ab"}},
      {"root ::= \"a\" |\n  \"b\"", {"a", "b"}, {"c"}},
      {R"(root ::= "\n\t\\\"\x41\u00e9\U0001F600")", {"\n\t\\\"Aé😀"}, {"\n"}},
      {R"(root ::= [\]\-\[]+)", {"]", "-[]"}, {"a"}},
      {R"(root ::= [-a]+)", {"-", "a-a"}, {"b"}},
      {R"(root ::= [a-]+)", {"-", "a-"}, {"b"}},
      {R"(root ::= .)", {"a", "é", "😀", "\n"}, {"", "ab"}},
      {R"(root ::= [é-ë] "ü")", {"éü", "ëü"}, {"eü", "ìü"}},
      {R"(root ::= "")", {""}, {"a"}},
      {"root ::= x\nx ::= \"(\" x \")\" | \"\"", {"", "()", "((()))"}, {"(", "())"}},
      {R"(root   ::=   "a"   "b"  )", {"ab"}, {"a b"}},
      {R"(root ::= dash-name_1
dash-name_1 ::= "ok")",
       {"ok"},
       {"o"}},
      {R"(root ::= ("a" | "b")+ "c"? )", {"a", "abba", "abc"}, {"c", "abcc"}},
      {R"(root ::= "a" bad | "b"
bad ::= bad "x")",
       {"b"},
       {"a", "ax"}},  // alternatives through a rule that derives nothing are dropped
  };
  for (const Case &c : cases) {
    std::shared_ptr<const Grammar> g;
    ASSERT_NO_THROW(g = Grammar::parse(c.grammar)) << c.grammar;
    for (const std::string &s : c.yes) EXPECT_EQ(run(*g, s), 1) << c.grammar << " should accept '" << s << "'";
    for (const std::string &s : c.no) EXPECT_NE(run(*g, s), 1) << c.grammar << " should reject '" << s << "'";
  }
}

TEST(GrammarParser, RefusesInvalidGrammarsWithPosition) {
  struct Case {
    std::string grammar;
    const char *message;
  };
  const std::vector<Case> cases = {
      {"", "empty"},
      {"   # only a comment\n", "empty"},
      {"a ::= \"x\"", "no rule 'root'"},
      {"root ::= \"x\" y", "line 1, column 14: rule 'y' is used but never defined"},
      {"root := \"x\"", "line 1, column 6: expected '::='"},
      {"root ::= \"abc", "line 1, column 10: unterminated string literal"},
      {"root ::= [abc", "unterminated character class"},
      {"root ::= [z-a]", "backwards"},
      {"root ::= (\"a\"", "unclosed '('"},
      {"root ::= \"a\")", "unbalanced ')'"},
      {"root ::= *", "nothing before it to repeat"},
      {"root ::= \"a\" | +", "nothing before it to repeat"},
      {"root ::= \"a\"{2,1}", "n < m"},
      {"root ::= \"a\"{x}", "expected a number"},
      {"root ::= \"a\"{1,2", "expected '}'"},
      {"root ::= \"a\"{99999}", "repetition count above"},
      {"root ::= \"\\q\"", "unknown escape"},
      {"root ::= \"\\x4\"", "hex digit"},
      {"root ::= \"\\uD800\"", "not a Unicode scalar value"},
      {"root ::= \"\xC3\"", "invalid UTF-8"},
      {"root ::= \"a\"\nroot ::= \"b\"", "line 2, column 1: rule 'root' is defined twice"},
      {"root ::= root \"a\" | \"b\"", "left-recursive"},
      {"root ::= x\nx ::= y \"a\"\ny ::= \"\" | x", "left-recursive"},
      {"root ::= (\"a\"?)*", "left-recursive"},
      {"root ::= \"a\" root", "admits nothing"},
      {"root ::= []", "admits nothing"},
      {"root ::= \"a\" $", "unexpected character '$'"},
      {"root ::= \"a\"\n  \"b\"", "line 2, column 3: expected a rule name"},
      {"root ::= " + std::string(70, '(') + "\"a\"" + std::string(70, ')'), "nested deeper"},
      {"root ::= " +
           [] {
             std::string r;
             for (int i = 0; i < 11; ++i) r += "\"abcdefghij\"{10000} ";
             return r;
           }(),
       "too large"},
  };
  for (const Case &c : cases) {
    const std::string msg = error_of(c.grammar);
    EXPECT_NE(msg.find(c.message), std::string::npos) << c.grammar << "\n -> " << msg;
    EXPECT_EQ(msg.rfind("grammar: ", 0), 0u) << msg;
  }
}

TEST(GrammarMatcher, PartialUtf8AndInvalidBytes) {
  auto g = Grammar::parse(R"(root ::= [a-zé]+)");
  EXPECT_EQ(run(*g, "\xC3"), 0);       // a prefix of é
  EXPECT_EQ(run(*g, "\xC3\xA9"), 1);   // é
  EXPECT_EQ(run(*g, "\xC3\xA8"), -1);  // è
  EXPECT_EQ(run(*g, "\xE2"), -1);      // no admitted code point starts with E2
  EXPECT_EQ(run(*g, "\xFF"), -1);
  EXPECT_EQ(run(*g, "\xC0\xA1"), -1);  // overlong
  auto any = Grammar::parse(R"(root ::= .*)");
  EXPECT_EQ(run(*any, "\xED\xA0\x80"), -1);      // a surrogate
  EXPECT_EQ(run(*any, "\xF4\x90\x80\x80"), -1);  // past U+10FFFF
  EXPECT_EQ(run(*any, "\xE0\x80"), -1);          // overlong 3-byte
  EXPECT_EQ(run(*any, "\xF0\x9F\x98\x80"), 1);
  EXPECT_EQ(run(*any, "\x80"), -1);  // a lone continuation byte
  auto ascii = Grammar::parse(R"(root ::= [^\x80-\U0010FFFF]*)");
  EXPECT_EQ(run(*ascii, "\xC3"), -1);  // every completion is excluded
}

TEST(JsonSchema, ConvertsAndValidates) {
  struct Case {
    const char *schema;
    std::vector<std::string> yes, no;
  };
  const std::vector<Case> cases = {
      {R"({"type":"string"})", {R"("")", R"("ab c")", R"("a\"b\\n")"}, {"ab", R"("a)", "1", "\"\x01\""}},
      {R"({"type":"string","minLength":2,"maxLength":3})", {R"("ab")", R"("a\nb")"}, {R"("a")", R"("abcd")"}},
      {R"({"type":"integer"})", {"0", "-12", "1234567890"}, {"01", "1.5", "-", "1e3"}},
      {R"({"type":"number"})", {"0", "-1.25", "3e10", "2.5E-3"}, {".5", "1.", "+1", "01"}},
      {R"({"type":"boolean"})", {"true", "false"}, {"True", "1"}},
      {R"({"type":"null"})", {"null"}, {"nil"}},
      {R"({"type":["string","null"]})", {"null", R"("x")"}, {"1"}},
      {R"({"enum":["red","green",3,null]})", {R"("red")", "3", "null"}, {R"("blue")", "4"}},
      {R"({"const":{"a":[1,"x"]}})", {R"({"a":[1,"x"]})"}, {R"({"a":[1]})"}},
      {R"({"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3})",
       {"[1]", "[1, 2,3]", "[ 1 ]"},
       {"[]", "[1,2,3,4]", "[1,]", R"(["a"])"}},
      {R"({"type":"array","maxItems":0})", {"[]", "[ ]"}, {"[1]"}},
      {R"({"type":"array"})", {"[]", R"([1,"a",{"b":null},[true]])"}, {"[,]"}},
      {R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name"],"additionalProperties":false})",
       {R"({"name":"x"})", R"({"name":"x","age":3})", R"({ "name": "x" , "age": 3 })"},
       {R"({})", R"({"age":3})", R"({"age":3,"name":"x"})", R"({"name":"x","other":1})", R"({"name":"x",})"}},
      {R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"},"c":{"type":"integer"}}})",
       {"{}", R"({"a":1})", R"({"b":1,"c":2})", R"({"a":1,"c":2})"},
       {R"({,"b":1})", R"({"a":1,})"}},
      {R"({"type":"object","properties":{"o":{"type":"object","properties":{"x":{"type":"boolean"}},"required":["x"]}},"required":["o"]})",
       {R"({"o":{"x":true}})"},
       {R"({"o":{}})"}},
      {R"({"type":"object","additionalProperties":{"type":"integer"}})", {"{}", R"({"a":1,"b":2})"}, {R"({"a":"x"})"}},
      {R"({"type":"object","additionalProperties":false})", {"{}"}, {R"({"a":1})"}},
      {R"({"anyOf":[{"type":"integer"},{"type":"string","maxLength":1}]})", {"1", R"("a")"}, {R"("ab")", "true"}},
      {R"({"oneOf":[{"type":"boolean"},{"enum":["x","y"]}]})", {"true", R"("y")"}, {"null"}},
      {R"({})", {"1", R"({"a":[null]})"}, {"{"}},
      {"true", {"[]"}, {"]"}},
      {R"({"type":"string","title":"t","description":"d","default":"x","examples":["y"],"$schema":"s","$comment":"c"})",
       {R"("z")"},
       {}},
      {R"({"enum":["é\"\\"]})", {R"("é\"\\")"}, {R"("é")"}},
  };
  for (const Case &c : cases) {
    std::shared_ptr<const Grammar> g;
    ASSERT_NO_THROW(g = Grammar::parse(json_schema_to_gbnf(c.schema))) << c.schema;
    for (const std::string &s : c.yes) EXPECT_EQ(run(*g, s), 1) << c.schema << " should accept " << s;
    for (const std::string &s : c.no) EXPECT_NE(run(*g, s), 1) << c.schema << " should reject " << s;
  }
}

TEST(JsonSchema, RefusesWhatItCannotGuarantee) {
  struct Case {
    const char *schema;
    const char *message;
  };
  const std::vector<Case> cases = {
      {R"({"type":"string",)", "not valid JSON at byte"},
      {R"({"const":777e7777777})", "not valid JSON"},  // nlohmann's out_of_range (found by fuzz_grammar)
      {R"({"type":"integer","minimum":0})", "/: unsupported keyword 'minimum'"},
      {R"({"properties":{"a":{"type":"string","pattern":"x+"}}})", "/properties/a: unsupported keyword 'pattern'"},
      {R"({"$ref":"#/defs/x"})", "unsupported keyword '$ref'"},
      {R"({"allOf":[{}]})", "unsupported keyword 'allOf'"},
      {R"({"type":"strin"})", "'type' must be one of"},
      {R"({"type":[]})", "admits nothing"},
      {"false", "admits nothing"},
      {R"({"type":"string","enum":[1,2]})", "admits nothing"},
      {R"({"type":"array","minItems":3,"maxItems":2})", "admits nothing"},
      {R"({"type":"string","minLength":5,"maxLength":1})", "admits nothing"},
      {R"({"type":"array","maxItems":-1})", "non-negative integer"},
      {R"({"oneOf":[{"type":"integer"},{"type":"number"}]})", "may both match"},
      {R"({"oneOf":[{"type":"string"},{"const":"a"}]})", "may both match"},
      {R"({"anyOf":[]})", "non-empty list"},
      {R"({"anyOf":[{}],"type":"string"})", "together with 'type'"},
      {R"({"enum":["a"],"maxLength":3})", "together with 'maxLength'"},
      {R"({"type":"string","items":{}})", "applies to type array"},
      {R"({"properties":{"a":{}},"additionalProperties":{"type":"string"}})", "not supported"},
      // A required property that additionalProperties: false forbids.
      {R"({"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":false,"required":["zz"]})",
       "no object satisfies"},
      {R"({"type":"object","additionalProperties":false,"required":["zz"]})", "no object satisfies"},
      {"[1]", "must be an object or a boolean"},
  };
  for (const Case &c : cases) {
    const std::string msg = schema_error(c.schema);
    EXPECT_NE(msg.find(c.message), std::string::npos) << c.schema << "\n -> " << msg;
  }
  std::string deep;
  for (int i = 0; i < 80; ++i) deep += R"({"type":"array","items":)";
  deep += "{}";
  for (int i = 0; i < 80; ++i) deep += "}";
  EXPECT_NE(schema_error(deep).find("nested deeper"), std::string::npos);
}

// The mask equals brute force (feeding each token's bytes to a copy of the
// state), on a vocabulary with multi-byte tokens, tokens that end inside a
// UTF-8 sequence, lone continuation bytes and non-text tokens, along random
// walks through several grammars.
TEST(TokenMask, EqualsBruteForce) {
  std::vector<std::string> bytes = {
      "",         "{",        "}",    "\"", "a",    "ab",   "abc",      " ",        ":",    ",",
      "1",        "12",       "0",    "-",  "\xC3", "\xA9", "\xC3\xA9", "\xE2\x82", "\xAC", "\xE2\x82\xAC",
      "é\"",      "\"}",      "true", "tr", "ue",   "null", "[",        "]",        "\\",   "n",
      "\xF0\x9F", "\x98\x80", "x"};
  std::vector<char> text(bytes.size(), 1);
  text[0] = 0;               // a control token
  bytes.push_back("<eos>");  // the EOS id: never text
  text.push_back(0);
  const int32_t eos = static_cast<int32_t>(bytes.size() - 1);
  auto vocab = std::make_shared<TokenVocabulary>(bytes, text);
  const std::vector<std::string> grammars = {
      json_schema_to_gbnf(
          R"({"type":"object","properties":{"a":{"type":"string","maxLength":4},"b":{"type":"integer"}}})"),
      R"(root ::= [a-zé€😀]+ "!"?)",
      R"(root ::= ("ab" | "\"" [^"]* "\"")+)",
      json_schema_to_gbnf(R"({"type":"array","items":{"enum":["é","€",true,null]},"maxItems":4})"),
  };
  std::mt19937_64 rng(test_seed());
  for (const std::string &gtext : grammars) {
    auto c = std::make_shared<Constraint>();
    c->grammar = Grammar::parse(gtext);
    c->vocab = vocab;
    for (int walk = 0; walk < 20; ++walk) {
      ConstraintState st(c);
      for (int step = 0; step < 30; ++step) {
        std::vector<float> scores(bytes.size(), 0.0f);
        const int64_t admitted = st.mask(scores.data(), {eos});
        std::vector<int32_t> allowed;
        for (size_t t = 0; t < bytes.size(); ++t) {
          ConstraintState copy = st;
          const bool ok = copy.accept(static_cast<int32_t>(t), {eos});
          const bool masked_in = scores[t] == 0.0f;
          ASSERT_EQ(ok, masked_in) << "token '" << bytes[t] << "' at step " << step << " of " << gtext;
          if (ok) allowed.push_back(static_cast<int32_t>(t));
        }
        ASSERT_EQ(admitted, static_cast<int64_t>(allowed.size()));
        ASSERT_EQ(scores[static_cast<size_t>(eos)] == 0.0f, st.complete());
        if (allowed.empty()) break;
        const int32_t pick = allowed[rng() % allowed.size()];
        if (pick == eos) break;
        ASSERT_TRUE(st.accept(pick, {eos}));
      }
    }
  }
}
