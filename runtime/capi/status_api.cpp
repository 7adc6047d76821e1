// Version, status names and the thread-local last error.
#include <parley/parley.h>

#include <string>

#include "capi/api_guard.hpp"
#include "format/model_file.hpp"

namespace parley::capi {

namespace {
thread_local std::string t_last_error;
}

void set_last_error(const std::string &message) {
  try {
    t_last_error = message;
  } catch (...) {
    t_last_error.clear();
  }
}

void clear_last_error() {
  t_last_error.clear();
}

}  // namespace parley::capi

#define PARLEY_STR2(x) #x
#define PARLEY_STR(x) PARLEY_STR2(x)

extern "C" {

PARLEY_API uint32_t parley_version(void) {
  return PARLEY_VERSION_NUMBER;
}

PARLEY_API const char *parley_version_string(void) {
  return PARLEY_STR(PARLEY_VERSION_MAJOR) "." PARLEY_STR(PARLEY_VERSION_MINOR) "." PARLEY_STR(PARLEY_VERSION_PATCH);
}

PARLEY_API const char *parley_last_error(void) {
  return parley::capi::t_last_error.c_str();
}

PARLEY_API const char *parley_status_name(int32_t status) {
  switch (status) {
    case PARLEY_OK:
      return "PARLEY_OK";
    case PARLEY_ERROR_INVALID_ARGUMENT:
      return "PARLEY_ERROR_INVALID_ARGUMENT";
    case PARLEY_ERROR_OUT_OF_MEMORY:
      return "PARLEY_ERROR_OUT_OF_MEMORY";
    case PARLEY_ERROR_IO:
      return "PARLEY_ERROR_IO";
    case PARLEY_ERROR_INVALID_MODEL:
      return "PARLEY_ERROR_INVALID_MODEL";
    case PARLEY_ERROR_UNSUPPORTED_VERSION:
      return "PARLEY_ERROR_UNSUPPORTED_VERSION";
    case PARLEY_ERROR_CHECKSUM:
      return "PARLEY_ERROR_CHECKSUM";
    case PARLEY_ERROR_NOT_FOUND:
      return "PARLEY_ERROR_NOT_FOUND";
    case PARLEY_ERROR_PLUGIN:
      return "PARLEY_ERROR_PLUGIN";
    case PARLEY_ERROR_DEVICE:
      return "PARLEY_ERROR_DEVICE";
    case PARLEY_ERROR_UNSUPPORTED:
      return "PARLEY_ERROR_UNSUPPORTED";
    case PARLEY_ERROR_INTERNAL:
      return "PARLEY_ERROR_INTERNAL";
    case PARLEY_ERROR_CANCELLED:
      return "PARLEY_ERROR_CANCELLED";
    case PARLEY_ERROR_BUSY:
      return "PARLEY_ERROR_BUSY";
    case PARLEY_ERROR_TIMEOUT:
      return "PARLEY_ERROR_TIMEOUT";
  }
  return "PARLEY_ERROR_UNKNOWN";
}

PARLEY_API const char *parley_dtype_name(int32_t dtype) {
  return parley::dtype_name(dtype);
}

}  // extern "C"
