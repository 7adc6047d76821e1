// Results as JSON documents (parley.h, "bindings: results in bulk as JSON";
// the schema is docs/results_json.md).
#pragma once

#include <parley/parley.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "capi/results.hpp"

namespace parley::capi {

// float as the number type: dump() then writes each score, log-probability and
// attention weight with float's max_digits10 (9) significant digits, which
// round-trips the float exactly, instead of 17 digits of its double widening.
using Json = nlohmann::basic_json<std::map, std::vector, std::string, bool, std::int64_t, std::uint64_t, float>;

// Refuses flags other than parley_json_flags (PARLEY_ERROR_INVALID_ARGUMENT).
void check_json_flags(uint32_t flags);
Json translation_json(const parley_translation_result &result, uint32_t flags);
Json generation_json(const parley_generation_result &result, uint32_t flags);
// The document as malloc'd NUL-terminated text for the caller (parley_string_free).
void write_json(const Json &document, char **out_json, size_t *out_length);

}  // namespace parley::capi
