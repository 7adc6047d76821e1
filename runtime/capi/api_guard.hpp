// The C boundary: run a body, turning every exception into a status code and
// the thread-local last-error message. Nothing may escape a parley_* function
// but a thread's forced unwinding (below).
#pragma once

#include <cxxabi.h>
#include <parley/parley.h>

#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "core/error.hpp"
#include "core/memory_scope.hpp"

namespace parley::capi {

void set_last_error(const std::string &message);
void clear_last_error();

// Sets the last error to "<function>: <what>" without throwing: when memory
// is short, the message is what gets lost, never the process.
inline void report(const char *function, const char *prefix, const char *what) noexcept {
  try {
    set_last_error(std::string(function) + ": " + prefix + what);
  } catch (...) {
  }
}

// Not noexcept: a thread ended by pthread_exit or pthread_cancel unwinds
// with abi::__forced_unwind, which must pass (swallowed, it aborts the
// process with "FATAL: exception not rethrown"; through noexcept, it
// terminates). A host callback run inside a parley_* call ends its thread
// that way when, e.g., CPython shuts down while a daemon thread streams.
// (Catching it binds a reference to no object; GCC's UBSan reports that.)
template <typename Body>
__attribute__((no_sanitize("null"))) parley_status guarded(const char *function, Body &&body) {
  try {
    clear_last_error();
    (void)MemoryScope::take_failed();
    body();
    return PARLEY_OK;
  } catch (const Error &e) {
    report(function, "", e.what());
    return e.status();
  } catch (const std::bad_alloc &) {
    const char *what = MemoryScope::take_failed();  // the work the allocation was for, when known
    report(function, what ? "out of memory: while allocating " : "out of memory", what ? what : "");
    return PARLEY_ERROR_OUT_OF_MEMORY;
  } catch (const std::length_error &e) {  // a container asked for more than it can hold
    report(function, "out of memory: ", e.what());
    return PARLEY_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception &e) {
    report(function, "internal error: ", e.what());
    return PARLEY_ERROR_INTERNAL;
  } catch (const abi::__forced_unwind &) {
    throw;
  } catch (...) {
    report(function, "internal error (unknown exception)", "");
    return PARLEY_ERROR_INTERNAL;
  }
}

template <typename T>
void require(const T *p, const char *what) {
  if (!p) fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

// struct_size of a caller's struct must lie between the first release's size
// (`min_size`) and this library's sizeof.
inline void check_struct_size(size_t given, size_t min_size, size_t max_size, const char *what) {
  if (given < min_size || given > max_size)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string(what) + "->struct_size is " + std::to_string(given) +
                                            ", expected " + std::to_string(min_size) +
                                            (min_size == max_size ? std::string() : ".." + std::to_string(max_size)) +
                                            " (initialise it with the matching _init function or sizeof)");
}

// Copy a caller's options struct over `o` (this library's defaults, or
// zeros), its struct_size checked first (min_size .. sizeof): the fields an
// older caller's smaller struct lacks keep their value in `o`. NULL options
// leave `o` as it is.
template <typename T>
void copy_in(T &o, const T *options, size_t min_size, const char *what) {
  if (!options) return;
  check_struct_size(options->struct_size, min_size, sizeof *options, what);
  std::memcpy(&o, options, options->struct_size);
}

// Copy a fully filled output struct into the caller's, which may be from an
// older release (smaller); struct_size is kept as the caller set it.
template <typename T>
void copy_out(T *dst, const T &src) {
  size_t n = dst->struct_size;
  std::memcpy(reinterpret_cast<char *>(dst) + sizeof(size_t), reinterpret_cast<const char *>(&src) + sizeof(size_t),
              n - sizeof(size_t));
}

// The body of an options `_defaults` function: `options` must be non-NULL
// with a struct_size in min_size .. sizeof; then make()'s struct (this
// library's defaults) fills its first struct_size bytes.
template <typename T, typename Make>
void write_defaults(T *options, size_t min_size, Make make) {
  require(options, "options");
  check_struct_size(options->struct_size, min_size, sizeof *options, "options");
  const T d = make();
  copy_out(options, d);
}

}  // namespace parley::capi

// Size of a struct up to and including `field`: frozen for fields of the first release.
#define PARLEY_SIZE_THROUGH(type, field) (offsetof(type, field) + sizeof(((type *)nullptr)->field))
