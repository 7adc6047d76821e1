// Whole-number settings read from environment variables.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace parley {

// The value of `name` when it is a whole number in [lo, hi]; `fallback` when
// unset or empty; otherwise `fallback`, after a line on stderr naming the
// variable, its text and the range (`what`: e.g. "microseconds", or "").
inline int64_t integer_from_environment(const char *name, int64_t lo, int64_t hi, int64_t fallback,
                                        const char *what = "") {
  const char *text = std::getenv(name);
  if (!text || !*text) return fallback;
  char *end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0' || v < lo || v > hi) {
    std::fprintf(stderr, "parley: %s=\"%s\" is not a whole number%s%s from %lld to %lld; using %lld\n", name, text,
                 *what ? " of " : "", what, static_cast<long long>(lo), static_cast<long long>(hi),
                 static_cast<long long>(fallback));
    return fallback;
  }
  return static_cast<int64_t>(v);
}

}  // namespace parley
