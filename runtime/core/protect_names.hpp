// The name of a protected span's kind (parley_translation_result_protected_span),
// as the JSON results, `parley serve` and `parley translate --show-protected`
// print it. Header-only: the CLI and the HTTP server use the public C API and
// this file, not the library's internals.
#pragma once

#include <parley/parley.h>

#include <cstdint>

namespace parley {

inline const char *protected_kind_name(uint32_t kind) {
  switch (kind) {
    case PARLEY_PROTECT_NUMBERS:
      return "number";
    case PARLEY_PROTECT_EMAILS:
      return "email";
    case PARLEY_PROTECT_URLS:
      return "url";
    case PARLEY_PROTECT_PLACEHOLDERS:
      return "placeholder";
    case PARLEY_PROTECT_MARKUP:
      return "markup";
    case PARLEY_PROTECT_PATTERN:
      return "pattern";
    case PARLEY_PROTECT_GLOSSARY:
      return "glossary";
    default:
      return "other";
  }
}

}  // namespace parley
