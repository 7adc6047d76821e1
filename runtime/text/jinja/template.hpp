// A Jinja2 subset, enough to render Hugging Face chat templates exactly as
// transformers' apply_chat_template does (Jinja2's ImmutableSandboxedEnvironment
// with trim_blocks and lstrip_blocks, plus loopcontrols and transformers'
// globals: raise_exception, strftime_now, namespace, and its `tojson`).
// tests/chat_templates holds the parity goldens that specify it.
//
// Templates come from model files, which may be crafted: parsing and
// rendering throw Error with the template's line and column for anything
// wrong or unsupported, and stop at limits on nesting, work and output
// instead of exhausting the stack or memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "text/jinja/value.hpp"

namespace parley::jinja {

struct Node;

struct Limits {
  size_t max_output = size_t{16} << 20;  // bytes of rendered text, and of any one string
  uint64_t max_steps = 5'000'000;        // statements run, loop iterations and items built
  int max_call_depth = 64;               // nested macro calls
};

class Template {
 public:
  // Parses `source`. Throws Error(INVALID_MODEL) "chat template line L,
  // column C: ..." for a syntax error or a construct outside the subset.
  explicit Template(std::string_view source);
  ~Template();
  Template(Template &&) noexcept;
  Template &operator=(Template &&) noexcept;

  // Renders with these top-level variables. The result's spans are the
  // bytes that came from caller text (strings marked by Value::caller_text
  // or parse_json). Throws Error(INVALID_ARGUMENT) "chat template line L,
  // column C: ..." when rendering fails (an error the template raises with
  // raise_exception() is reported as its message).
  Text render(const Object &variables, const Limits &limits = {}) const;

 private:
  std::shared_ptr<const Node> root_;
  std::shared_ptr<const std::string> source_;
};

}  // namespace parley::jinja
