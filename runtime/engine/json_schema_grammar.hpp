// JSON schema -> GBNF grammar (grammar.hpp) whose sentences are JSON texts
// that validate against the schema. The grammar admits a subset of the
// valid documents: compact layout (at most one space around punctuation),
// declared properties in declaration order (no undeclared ones when
// `properties` is given), numbers with at most 16 integer and 16 fraction
// digits, strings without \u escapes.
//
// Supported: type (a name or a list: object, array, string, number,
// integer, boolean, null), properties, required, additionalProperties
// (true/false, or a schema when there are no `properties`), items,
// minItems, maxItems, minLength, maxLength, enum, const, anyOf, oneOf (only
// when its branches are disjoint by type or by value, so that exactly one
// matches), and the annotations title, description, default, examples,
// $schema, $id, $comment. Any other keyword is refused with
// INVALID_ARGUMENT naming it and where it is ("JSON schema:
// /properties/age: unsupported keyword 'minimum'"), as are malformed JSON
// (with its byte offset) and schemas that admit nothing.
#pragma once

#include <string>
#include <string_view>

namespace parley {

std::string json_schema_to_gbnf(std::string_view schema);

}  // namespace parley
