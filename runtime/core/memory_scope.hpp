// What the runtime is allocating memory for, so that running out of it can
// be reported as "out of memory: ... for the KV cache" rather than a bare
// std::bad_alloc. A MemoryScope names the work of a block on this thread
// (a static string, no allocation). When an exception leaves the block, the
// innermost scope it leaves is remembered, and the C API boundary puts it in
// the message (capi/api_guard.hpp). Thread-local; costs two pointer writes.
#pragma once

#include <exception>

namespace parley {

class MemoryScope {
 public:
  explicit MemoryScope(const char *what) noexcept;
  ~MemoryScope();
  MemoryScope(const MemoryScope &) = delete;
  MemoryScope &operator=(const MemoryScope &) = delete;

  // The innermost scope open on this thread, or nullptr.
  static const char *current() noexcept;
  // The innermost scope the last exception on this thread left (cleared by
  // reading), or nullptr.
  static const char *take_failed() noexcept;

 private:
  const char *what_;
  const MemoryScope *outer_;
  int exceptions_;
};

}  // namespace parley
