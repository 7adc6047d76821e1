// Jinja subset source text to syntax tree (template.hpp documents the subset).
#pragma once

#include <memory>
#include <string_view>

#include "text/jinja/ast.hpp"

namespace parley::jinja {

// A kScope node holding the template's statements. Throws
// Error(INVALID_MODEL) "chat template line L, column C: ...".
std::unique_ptr<Node> parse_template(std::string_view source);

}  // namespace parley::jinja
