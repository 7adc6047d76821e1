#include "core/unwinder.hpp"

#include <mutex>

namespace parley {

namespace {
struct Probe {};
}  // namespace

void preload_unwinder() noexcept {
  static std::once_flag done;
  try {
    std::call_once(done, [] {
      std::once_flag probe;
      try {
        std::call_once(probe, [] { throw Probe{}; });  // unwinds through pthread_once
      } catch (const Probe &) {
      }
    });
  } catch (...) {  // the link could not be made now: a later exception may still find it
  }
}

}  // namespace parley
