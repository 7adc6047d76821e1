// JSON Lines output of `parley translate --json` and `parley chat --json`.
#pragma once

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace parley_cli {

// One JSON object on one line of stdout, flushed (a reader may be waiting for
// it). Invalid UTF-8 in a string is replaced, never thrown on.
inline void print_json_line(const nlohmann::json &j) {
  std::string text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text += '\n';
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

}  // namespace parley_cli
