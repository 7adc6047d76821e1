// The result handles of the C API, shared by their accessors
// (generate_api.cpp, text_api.cpp) and the JSON writer (result_json.cpp).
#pragma once

#include <parley/parley.h>

#include <vector>

#include "engine/decoding.hpp"
#include "engine/text_translation.hpp"

struct parley_generation_result {
  std::vector<std::vector<parley::Hypothesis>> items;
};

struct parley_translation_result {
  std::vector<parley::TextTranslation> items;
};
