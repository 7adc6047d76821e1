// The exported `_init` functions (parley.h, "bindings: exported _init
// functions"): for binding generators and FFI layers that cannot call the
// header's static inline variants.
#include <cstddef>

#include "capi/api_guard.hpp"

namespace {

// Each exported `_init` writes the size its struct had when the symbol was
// released (parley.h's size rule). These asserts pin that size through the
// struct's last field: appending a field fails here, as a reminder to add a
// new version node for the grown `_init` in capi/libparley.map and keep this
// one writing the old size (e.g. PARLEY_SIZE_THROUGH of the old last field).
template <typename T>
constexpr size_t rounded(size_t through) {
  return (through + alignof(T) - 1) / alignof(T) * alignof(T);
}
static_assert(sizeof(parley_runtime_options) ==
              rounded<parley_runtime_options>(PARLEY_SIZE_THROUGH(parley_runtime_options, min_severity)));
static_assert(sizeof(parley_model_options) ==
              rounded<parley_model_options>(PARLEY_SIZE_THROUGH(parley_model_options, activation_dtype)));
static_assert(sizeof(parley_generation_options) ==
              rounded<parley_generation_options>(PARLEY_SIZE_THROUGH(parley_generation_options, num_logit_bias)));
static_assert(sizeof(parley_translation_options) ==
              rounded<parley_translation_options>(PARLEY_SIZE_THROUGH(parley_translation_options, max_batch_tokens)));
static_assert(sizeof(parley_chat_options) ==
              rounded<parley_chat_options>(PARLEY_SIZE_THROUGH(parley_chat_options, context_policy)));
static_assert(sizeof(parley_request_options) ==
              rounded<parley_request_options>(PARLEY_SIZE_THROUGH(parley_request_options, num_alternatives)));

// NULL goes to the _defaults function, which reports it.
template <typename T>
T *sized(T *options) {
  if (options) options->struct_size = sizeof *options;
  return options;
}

}  // namespace

extern "C" {

PARLEY_API parley_status parley_runtime_options_init(parley_runtime_options *options) {
  return parley_runtime_options_defaults(sized(options));
}
PARLEY_API parley_status parley_model_options_init(parley_model_options *options) {
  return parley_model_options_defaults(sized(options));
}
PARLEY_API parley_status parley_generation_options_init(const parley_model *model, parley_generation_options *options) {
  return parley_generation_options_defaults(model, sized(options));
}
PARLEY_API parley_status parley_translation_options_init(parley_translation_options *options) {
  return parley_translation_options_defaults(sized(options));
}
PARLEY_API parley_status parley_chat_options_init(parley_chat_options *options) {
  return parley_chat_options_defaults(sized(options));
}
PARLEY_API parley_status parley_request_options_init(parley_request_options *options) {
  return parley_request_options_defaults(sized(options));
}

}  // extern "C"
