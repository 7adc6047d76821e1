// Jinja's filters, tests, global functions and the Python methods templates
// call on strings and dicts (jinja2/filters.py, jinja2/tests.py, Python's
// str and dict), for the subset in template.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/jinja/template.hpp"
#include "text/jinja/value.hpp"

namespace parley::jinja {

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // The argument at position `i` or named `name`; nullptr when absent.
  const Value *get(size_t i, std::string_view name) const;
  // Refuses arguments beyond these (a clear error instead of ignoring them).
  void allow(const char *what, size_t max_pos, std::initializer_list<const char *> names) const;
};

// Counts work and checks sizes against the render's Limits.
class Budget {
 public:
  explicit Budget(const Limits &limits) : limits_(limits) {}
  void work(uint64_t n = 1);
  void check_size(size_t bytes) const;
  const Limits &limits() const { return limits_; }

 private:
  Limits limits_;
  uint64_t steps_ = 0;
};

Value apply_filter(Budget &b, const std::string &name, const Value &v, const Args &a);
bool apply_test(Budget &b, const std::string &name, const Value &v, const Args &a);
// obj.name(args): str and dict methods. Throws for anything else.
Value call_method(Budget &b, const Value &obj, const std::string &name, const Args &a);
// Global functions: range, namespace, dict, raise_exception, strftime_now.
Value call_global(Budget &b, const std::string &name, const Args &a);
bool is_global(std::string_view name);

// String helpers that keep caller-text spans exact.
Value concat_strings(Budget &b, const Text &x, const Text &y);
Value substring(const Text &t, size_t begin, size_t end);
// The items a filter or loop walks: list items, dict keys, string characters
// (an error, prefixed by `what` when not null, for anything else).
Array iterate(const Value &v, const char *what);
// Code point offsets of a UTF-8 string (size = code points + 1).
std::vector<size_t> code_points(std::string_view s);
// Python's str() of a value, as a string Value.
Value to_string_value(const Value &v);

}  // namespace parley::jinja
