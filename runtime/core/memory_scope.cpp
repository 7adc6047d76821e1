#include "core/memory_scope.hpp"

namespace parley {

namespace {
thread_local const MemoryScope *t_innermost = nullptr;
thread_local const char *t_current_what = nullptr;
thread_local const char *t_failed = nullptr;
}  // namespace

MemoryScope::MemoryScope(const char *what) noexcept
    : what_(what), outer_(t_innermost), exceptions_(std::uncaught_exceptions()) {
  if (!outer_) t_failed = nullptr;  // a new outermost piece of work
  t_innermost = this;
  t_current_what = what_;
}

MemoryScope::~MemoryScope() {
  if (std::uncaught_exceptions() > exceptions_ && !t_failed) t_failed = what_;
  t_innermost = outer_;
  t_current_what = outer_ ? outer_->what_ : nullptr;
}

const char *MemoryScope::current() noexcept {
  return t_current_what;
}

const char *MemoryScope::take_failed() noexcept {
  const char *w = t_failed;
  t_failed = nullptr;
  return w;
}

}  // namespace parley
