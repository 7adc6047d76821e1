// The library advises PARLEY_CHAT_CONTEXT_DROP_OLDEST when a conversation
// passes the model's positions; the CLI and `parley serve` set that policy by
// an option of their own, so their messages name the option instead.
// Header-only, as protect_names.hpp: both tools use the public C API.
#pragma once

#include <string>
#include <string_view>

namespace parley {

inline std::string with_context_option(std::string message, std::string_view option) {
  static constexpr std::string_view kConstant = "PARLEY_CHAT_CONTEXT_DROP_OLDEST";
  for (size_t at; (at = message.find(kConstant)) != std::string::npos;) message.replace(at, kConstant.size(), option);
  return message;
}

}  // namespace parley
