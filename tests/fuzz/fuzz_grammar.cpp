// libFuzzer target for constrained output's parsers: the first byte selects
// GBNF (even) or JSON schema (odd); the rest is the text. Every input must
// either compile or fail with parley::Error(INVALID_ARGUMENT); a compiled
// grammar is then run for a few hundred bytes of the input (the matcher must
// neither crash nor loop: left recursion is refused at compile time).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.hpp"
#include "engine/grammar.hpp"
#include "engine/json_schema_grammar.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const bool schema = (data[0] & 1) != 0;
  const std::string_view text(reinterpret_cast<const char *>(data + 1), size - 1);
  try {
    auto g = parley::Grammar::parse(schema ? parley::json_schema_to_gbnf(text) : std::string(text));
    parley::GrammarState st;
    st.stacks = g->initial_stacks();
    parley::GrammarState next;
    // Walk the grammar with the input's own bytes (mostly rejected early;
    // grammars that accept their own text get exercised deeper).
    for (size_t i = 0; i < text.size() && i < 512; ++i) {
      if (!parley::advance_byte(*g, st, static_cast<uint8_t>(text[i]), next)) break;
      std::swap(st, next);
    }
    (void)st.complete();
  } catch (const parley::Error &e) {
    if (e.status() != PARLEY_ERROR_INVALID_ARGUMENT) __builtin_trap();
  }
  return 0;
}
