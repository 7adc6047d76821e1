// parley.node: a Node-API addon over the C ABI (include/parley/parley.h).
// Node-API is ABI-stable across Node versions (NAPI_VERSION 8: Node >= 12.22,
// 14.17, 16, 18, 20...), so one build serves every Node of the machine.
#include "addon.hpp"

namespace parley_node {
namespace {

napi_value version(napi_env env, napi_callback_info) {
  return guarded(env, [&] { return make_string(env, std::string(parley_version_string())); });
}

napi_value status_name(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 1);
    const int32_t code = static_cast<int32_t>(get_int(env, argv[0], "status", INT32_MIN, INT32_MAX));
    return make_string(env, std::string(parley_status_name(code)));
  });
}

napi_value init(napi_env env, napi_value exports) {
  std::vector<napi_property_descriptor> props;
  add_function(props, "version", version);
  add_function(props, "statusName", status_name);
  register_objects(props);
  register_requests(props);
  if (napi_define_properties(env, exports, props.size(), props.data()) != napi_ok) return nullptr;
  return exports;
}

}  // namespace
}  // namespace parley_node

NAPI_MODULE(NODE_GYP_MODULE_NAME, parley_node::init)
