// Internal error type: every failure inside the runtime is an Error carrying
// the public status and a message; the C API boundary (runtime/capi) turns it
// into a status code + thread-local message, so nothing ever escapes as an
// exception.
#pragma once

#include <parley/parley.h>

#include <stdexcept>
#include <string>

namespace parley {

class Error : public std::runtime_error {
 public:
  Error(parley_status status, std::string message) : std::runtime_error(std::move(message)), status_(status) {}
  parley_status status() const noexcept { return status_; }

 private:
  parley_status status_;
};

[[noreturn]] inline void fail(parley_status status, std::string message) {
  throw Error(status, std::move(message));
}

}  // namespace parley
