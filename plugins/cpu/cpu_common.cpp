#include "cpu_common.h"

#include <cstdio>

namespace parley::cpu {

const char *dtype_name(int64_t dtype) {
  switch (dtype) {
    case PARLEY_DTYPE_F32:
      return "F32";
    case PARLEY_DTYPE_F16:
      return "F16";
    case PARLEY_DTYPE_BF16:
      return "BF16";
    case PARLEY_DTYPE_I8:
      return "I8";
    case PARLEY_DTYPE_I32:
      return "I32";
    case PARLEY_DTYPE_U8:
      return "U8";
    case PARLEY_DTYPE_I64:
      return "I64";
    case PARLEY_DTYPE_I4:
      return "I4";
    default:
      return "unknown";
  }
}

parley_kernel_status Host::fail(parley_kernel_status status, const char *fmt, ...) const {
  if (h_ && h_->set_error) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    h_->set_error(h_->host, buf);
  }
  return status;
}

}  // namespace parley::cpu
