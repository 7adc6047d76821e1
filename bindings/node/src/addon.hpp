// The functions the addon exports (index.js wraps them in classes).
#pragma once

#include <vector>

#include "napi_util.hpp"

namespace parley_node {

// Append exported function `name` (a plain, non-writable property).
inline void add_function(std::vector<napi_property_descriptor> &out, const char *name, napi_callback f) {
  out.push_back({name, nullptr, f, nullptr, nullptr, nullptr, napi_default, nullptr});
}

void register_objects(std::vector<napi_property_descriptor> &out);
void register_requests(std::vector<napi_property_descriptor> &out);

}  // namespace parley_node
