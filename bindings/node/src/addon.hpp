// The functions the addon exports (index.js wraps them in classes).
#pragma once

#include <vector>

#include "napi_util.hpp"

namespace parley_node {

void register_objects(std::vector<napi_property_descriptor> &out);
void register_requests(std::vector<napi_property_descriptor> &out);

}  // namespace parley_node
