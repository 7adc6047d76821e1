// A runtime for tests that loads only the plugins of the build tree
// (PARLEY_PLUGIN_BUILD_DIR, set by ctest), never the installed ones.
#pragma once

#include <parley/parley.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace parley::test {

// Creates the runtime into *out; returns the status (the message is in
// parley_last_error()). Throws when not run through ctest.
inline parley_status create_build_tree_runtime(int32_t num_threads, parley_runtime **out) {
  const char *dir = std::getenv("PARLEY_PLUGIN_BUILD_DIR");
  if (!dir) throw std::runtime_error("PARLEY_PLUGIN_BUILD_DIR is not set (run through ctest)");
  const char *dirs[] = {dir};
  parley_runtime_options o;
  parley_runtime_options_init(&o);
  o.plugin_sources = PARLEY_PLUGINS_NONE;
  o.plugin_dirs = dirs;
  o.num_plugin_dirs = 1;
  o.num_threads = num_threads;
  return parley_runtime_create(&o, out);
}

}  // namespace parley::test
