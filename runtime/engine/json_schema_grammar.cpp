#include "engine/json_schema_grammar.hpp"

#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "core/error.hpp"

namespace parley {

namespace {

using Json = nlohmann::ordered_json;

constexpr int kMaxDepth = 64;
constexpr int64_t kMaxCount = 10000;  // GBNF's repetition limit

// The primitives every converted grammar shares.
constexpr const char *kBase = R"(ws ::= " "?
string ::= "\"" char* "\""
char ::= [^"\\\x00-\x1F\x7F] | "\\" ["\\/bfnrt]
int-part ::= "0" | [1-9] [0-9]{0,15}
number ::= "-"? int-part ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?
integer ::= "-"? int-part
boolean ::= "true" | "false"
null ::= "null"
value ::= object | array | string | number | boolean | null
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* )? ws "}"
array ::= "[" ws ( value ( ws "," ws value )* )? ws "]"
)";

// Never destroyed (here and below): a request may still compile a schema on
// another thread while exit() runs the static destructors.
const std::set<std::string> &kTypes =
    *new std::set<std::string>{"object", "array", "string", "number", "integer", "boolean", "null"};
const std::set<std::string> &kAnnotations =
    *new std::set<std::string>{"title", "description", "default", "examples", "$schema", "$id", "$comment"};

std::string gbnf_literal(const std::string &text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7F) {
      static const char *hex = "0123456789ABCDEF";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

class Converter {
 public:
  std::string run(const Json &schema) {
    std::string root = convert(schema, "", 0);
    return "root ::= " + root + "\n" + kBase + rules_;
  }

 private:
  std::string rules_;
  int next_ = 0;

  [[noreturn]] static void refuse(const std::string &path, const std::string &what) {
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "JSON schema: " + (path.empty() ? std::string("/") : path) + ": " + what);
  }

  std::string add_rule(const std::string &body) {
    const std::string name = "s" + std::to_string(next_++);
    rules_ += name + " ::= " + body + "\n";
    return name;
  }

  static int64_t count(const Json &s, const char *key, const std::string &path, int64_t fallback) {
    if (!s.contains(key)) return fallback;
    const Json &v = s.at(key);
    if (!v.is_number_integer() || v.get<int64_t>() < 0)
      refuse(path, std::string("'") + key + "' must be a non-negative integer");
    if (v.get<int64_t>() > kMaxCount) refuse(path, std::string("'") + key + "' above " + std::to_string(kMaxCount));
    return v.get<int64_t>();
  }

  static std::set<std::string> types_of(const Json &s, const std::string &path) {
    std::set<std::string> out;
    if (!s.contains("type")) return out;
    const Json &t = s.at("type");
    auto one = [&](const Json &v) {
      if (!v.is_string() || !kTypes.count(v.get<std::string>()))
        refuse(path, "'type' must be one of object, array, string, number, integer, boolean, null (or a list)");
      out.insert(v.get<std::string>());
    };
    if (t.is_array()) {
      if (t.empty()) refuse(path, "'type' is an empty list: the schema admits nothing");
      for (const Json &v : t) one(v);
    } else {
      one(t);
    }
    return out;
  }

  static bool value_has_type(const Json &v, const std::set<std::string> &types) {
    if (types.empty()) return true;
    if (v.is_object()) return types.count("object") > 0;
    if (v.is_array()) return types.count("array") > 0;
    if (v.is_string()) return types.count("string") > 0;
    if (v.is_boolean()) return types.count("boolean") > 0;
    if (v.is_null()) return types.count("null") > 0;
    if (v.is_number_integer() || v.is_number_unsigned()) return types.count("integer") || types.count("number");
    if (v.is_number_float())
      return types.count("number") ||
             (types.count("integer") && v.get<double>() == static_cast<double>(static_cast<int64_t>(v.get<double>())));
    return false;
  }

  // What a schema admits, as a set of type names, for oneOf's disjointness
  // test; `values` gets its enum/const values when it has them.
  static std::set<std::string> reach(const Json &s, std::vector<Json> *values) {
    if (s.is_object() && s.contains("const")) {
      values->push_back(s.at("const"));
      return {};
    }
    if (s.is_object() && s.contains("enum") && s.at("enum").is_array()) {
      for (const Json &v : s.at("enum")) values->push_back(v);
      return {};
    }
    std::set<std::string> t = s.is_object() ? types_of(s, "") : std::set<std::string>{};
    if (t.empty()) return kTypes;
    if (t.count("number")) t.insert("integer");
    if (t.count("integer")) t.insert("number");
    return t;
  }

  std::string convert(const Json &s, const std::string &path, int depth) {
    if (depth > kMaxDepth) refuse(path, "nested deeper than " + std::to_string(kMaxDepth) + " levels");
    if (s.is_boolean()) {
      if (!s.get<bool>()) refuse(path, "the schema 'false' admits nothing");
      return "value";
    }
    if (!s.is_object()) refuse(path, "a schema must be an object or a boolean");
    static const std::set<std::string> &known =
        *new std::set<std::string>{"type",      "properties", "required", "additionalProperties",
                                   "items",     "minItems",   "maxItems", "minLength",
                                   "maxLength", "enum",       "const",    "anyOf",
                                   "oneOf"};
    for (const auto &[key, v] : s.items())
      if (!known.count(key) && !kAnnotations.count(key)) refuse(path, "unsupported keyword '" + key + "'");
    const std::set<std::string> types = types_of(s, path);

    if (s.contains("anyOf") || s.contains("oneOf")) {
      if (s.contains("anyOf") && s.contains("oneOf")) refuse(path, "anyOf together with oneOf is not supported");
      const char *key = s.contains("anyOf") ? "anyOf" : "oneOf";
      for (const auto &[k, v] : s.items())
        if (k != key && !kAnnotations.count(k))
          refuse(path, std::string(key) + " together with '" + k + "' is not supported");
      const Json &branches = s.at(key);
      if (!branches.is_array() || branches.empty()) refuse(path, std::string("'") + key + "' must be a non-empty list");
      if (std::string(key) == "oneOf") {
        // Exactly one branch must match: refuse branches that could overlap.
        std::vector<std::set<std::string>> kinds;
        std::vector<std::vector<Json>> vals;
        for (const Json &b : branches) {
          vals.emplace_back();
          kinds.push_back(reach(b, &vals.back()));
        }
        for (size_t i = 0; i < kinds.size(); ++i)
          for (size_t j = i + 1; j < kinds.size(); ++j) {
            bool overlap = false;
            for (const std::string &t : kinds[i]) overlap = overlap || kinds[j].count(t);
            for (const Json &v : vals[i]) overlap = overlap || value_has_type(v, kinds[j]);
            for (const Json &v : vals[j]) overlap = overlap || value_has_type(v, kinds[i]);
            for (const Json &a : vals[i])
              for (const Json &b : vals[j]) overlap = overlap || a == b;
            if (overlap)
              refuse(path, "oneOf branches " + std::to_string(i) + " and " + std::to_string(j) +
                               " may both match (only branches disjoint by type or by value are supported; use "
                               "anyOf if either may match)");
          }
      }
      std::string body;
      for (size_t i = 0; i < branches.size(); ++i) {
        if (i) body += " | ";
        body += convert(branches[i], path + "/" + key + "/" + std::to_string(i), depth + 1);
      }
      return add_rule(body);
    }

    if (s.contains("const") || s.contains("enum")) {
      for (const auto &[k, v] : s.items())
        if (k != "const" && k != "enum" && k != "type" && !kAnnotations.count(k))
          refuse(path, "enum/const together with '" + k + "' is not supported");
      std::vector<Json> values;
      if (s.contains("const")) values.push_back(s.at("const"));
      if (s.contains("enum")) {
        if (!s.at("enum").is_array() || s.at("enum").empty()) refuse(path, "'enum' must be a non-empty list");
        std::vector<Json> listed(s.at("enum").begin(), s.at("enum").end());
        if (s.contains("const")) {  // both: the const, if the enum lists it
          bool listed_const = false;
          for (const Json &v : listed) listed_const = listed_const || v == values[0];
          if (!listed_const) values.clear();
        } else {
          values = listed;
        }
      }
      std::string body;
      for (const Json &v : values) {
        if (!value_has_type(v, types)) continue;
        if (!body.empty()) body += " | ";
        body += gbnf_literal(v.dump(-1, ' ', false, Json::error_handler_t::strict));
      }
      if (body.empty()) refuse(path, "no enum/const value has the schema's type: the schema admits nothing");
      return add_rule(body);
    }

    auto only = [&](const std::string &type, std::initializer_list<const char *> keys) {
      for (const char *k : keys)
        if (s.contains(k) && !(types.empty() || types.count(type)))
          refuse(path, std::string("'") + k + "' applies to type " + type + ", which the schema's type excludes");
    };
    only("object", {"properties", "required", "additionalProperties"});
    only("array", {"items", "minItems", "maxItems"});
    only("string", {"minLength", "maxLength"});

    std::set<std::string> want = types;
    if (want.empty()) {  // no type: what the keywords imply, else anything
      if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties"))
        want.insert("object");
      if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) want.insert("array");
      if (s.contains("minLength") || s.contains("maxLength")) want.insert("string");
      if (want.empty()) return "value";
      // Keywords of one type do not restrict the others: every other type stays admitted.
      for (const std::string &t : kTypes) want.insert(t);
    }
    std::string body;
    auto alt = [&](const std::string &rule) {
      if (!body.empty()) body += " | ";
      body += rule;
    };
    if (want.count("object")) alt(object_rule(s, path, depth));
    if (want.count("array")) alt(array_rule(s, path, depth));
    if (want.count("string")) alt(string_rule(s, path));
    if (want.count("number"))
      alt("number");
    else if (want.count("integer"))
      alt("integer");
    if (want.count("boolean")) alt("boolean");
    if (want.count("null")) alt("null");
    return add_rule(body);
  }

  std::string string_rule(const Json &s, const std::string &path) {
    const int64_t min = count(s, "minLength", path, 0), max = count(s, "maxLength", path, -1);
    if (min == 0 && max < 0) return "string";
    if (max >= 0 && max < min) refuse(path, "maxLength < minLength: the schema admits nothing");
    return add_rule("\"\\\"\" char{" + std::to_string(min) + "," + (max >= 0 ? std::to_string(max) : "") +
                    "} \"\\\"\"");
  }

  std::string array_rule(const Json &s, const std::string &path, int depth) {
    const std::string item = s.contains("items") ? convert(s.at("items"), path + "/items", depth + 1) : "value";
    const int64_t min = count(s, "minItems", path, 0), max = count(s, "maxItems", path, -1);
    if (max >= 0 && max < min) refuse(path, "maxItems < minItems: the schema admits nothing");
    if (max == 0) return add_rule("\"[\" ws \"]\"");
    const std::string more_min = std::to_string(min > 0 ? min - 1 : 0);
    const std::string more_max = max >= 0 ? std::to_string(max - 1) : "";
    const std::string list = item + " ( ws \",\" ws " + item + " ){" + more_min + "," + more_max + "}";
    return add_rule("\"[\" ws " + (min > 0 ? list : "( " + list + " )?") + " ws \"]\"");
  }

  std::string object_rule(const Json &s, const std::string &path, int depth) {
    std::vector<std::string> names;
    std::vector<std::string> values;
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s.at("required").is_array()) refuse(path, "'required' must be a list of property names");
      for (const Json &r : s.at("required")) {
        if (!r.is_string()) refuse(path, "'required' must be a list of property names");
        required.insert(r.get<std::string>());
      }
    }
    const bool has_props = s.contains("properties");
    if (has_props) {
      const Json &props = s.at("properties");
      if (!props.is_object()) refuse(path, "'properties' must be an object");
      for (const auto &[name, sub] : props.items()) {
        names.push_back(name);
        values.push_back(convert(sub, path + "/properties/" + name, depth + 1));
      }
    }
    const Json *extra = s.contains("additionalProperties") ? &s.at("additionalProperties") : nullptr;
    if (extra && !extra->is_boolean() && !extra->is_object())
      refuse(path, "'additionalProperties' must be a boolean or a schema");
    const bool closed = extra && extra->is_boolean() && !extra->get<bool>();
    for (const std::string &r : required)  // required but not described: any value
      if (std::find(names.begin(), names.end(), r) == names.end()) {
        if (closed)
          refuse(path, "property '" + r +
                           "' is required but not in 'properties', and 'additionalProperties' is false: no object "
                           "satisfies this schema");
        names.push_back(r);
        values.push_back("value");
      }
    if (names.empty()) {
      if (closed) return add_rule("\"{\" ws \"}\"");
      if (!extra || extra->is_boolean()) return "object";
      const std::string v = convert(*extra, path + "/additionalProperties", depth + 1);
      const std::string kv = "string ws \":\" ws " + v;
      return add_rule("\"{\" ws ( " + kv + " ( ws \",\" ws " + kv + " )* )? ws \"}\"");
    }
    if (extra && extra->is_object() && !has_props)
      refuse(path, "'additionalProperties' as a schema together with 'required' is not supported");
    if (extra && extra->is_object())
      refuse(path, "'additionalProperties' as a schema together with 'properties' is not supported");
    // Declared properties in order, optional ones skippable: first_i (none
    // written yet) and rest_i (some written: a comma first), from property i on.
    const size_t k = names.size();
    std::vector<std::string> first(k + 1), rest(k + 1);
    first[k] = rest[k] = "";
    for (size_t i = k; i-- > 0;) {
      const std::string kv = gbnf_literal(Json(names[i]).dump(-1, ' ', false, Json::error_handler_t::strict)) +
                             " ws \":\" ws " + values[i];
      const bool opt = !required.count(names[i]);
      const std::string r = add_rule("ws \",\" ws " + kv + (rest[i + 1].empty() ? "" : " " + rest[i + 1]) +
                                     (opt ? (rest[i + 1].empty() ? " | \"\"" : " | " + rest[i + 1]) : ""));
      const std::string f = add_rule(kv + (rest[i + 1].empty() ? "" : " " + rest[i + 1]) +
                                     (opt ? (first[i + 1].empty() ? " | \"\"" : " | " + first[i + 1]) : ""));
      rest[i] = r;
      first[i] = f;
    }
    return add_rule("\"{\" ws " + first[0] + " ws \"}\"");
  }
};

}  // namespace

std::string json_schema_to_gbnf(std::string_view text) {
  Json schema;
  try {
    schema = Json::parse(text.begin(), text.end());
  } catch (const Json::parse_error &e) {
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "JSON schema: not valid JSON at byte " + std::to_string(e.byte) + ": " + std::string(e.what()));
  } catch (const Json::exception &e) {  // e.g. a number too large for a double
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "JSON schema: not valid JSON: " + std::string(e.what()));
  }
  try {
    return Converter().run(schema);
  } catch (const Json::exception &e) {  // a value of an unexpected type the checks above missed
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "JSON schema: " + std::string(e.what()));
  }
}

}  // namespace parley
