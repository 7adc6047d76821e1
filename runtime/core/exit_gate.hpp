// Kernel calls and the process's exit.
//
// A host may return from main (or call exit()) while Parley still computes on
// other threads: requests in flight, a daemon thread inside a blocking call.
// exit() then runs the static destructors of every library, oneDNN's among
// them (its JIT-compiled GEMM code is unmapped), while a kernel on another
// thread is still executing that code: the process died with SIGSEGV in about
// half of the runs of such a program.
//
// The gate closes at exit: a handler registered with atexit() marks the
// process as exiting, then waits (at most kExitWaitSeconds) for the kernel
// calls already running to return. Every kernel call after that is refused
// with PARLEY_ERROR_CANCELLED instead of entering a plugin, so the requests
// still in flight end with that error and nothing waits on them for ever.
//
// exit() runs handlers in the reverse order of their registration, and a
// library registers the destructor of a lazily built static when it builds
// it: inside the first call of some kernel. So the handler is registered again
// after each kernel entry point's first completed call (and each weight
// preparation, where the cpu plugin builds oneDNN's kernels), which keeps it
// ahead of everything those calls set up. Cheap after a kernel's first call;
// thread-safe.
#pragma once

namespace parley::exit_gate {

constexpr int kExitWaitSeconds = 10;

// True when the process is exiting: the caller must not call the kernel.
// Otherwise the call is counted as running until leave().
bool enter() noexcept;
void leave() noexcept;

// Registers the exit handler again if `entry` (a kernel or prepare function)
// has not completed a call before. May allocate; never throws.
void completed_first_call(const void *entry) noexcept;

// After a plugin library was unloaded: every entry counts as new again.
void forget_first_calls() noexcept;

// Enter/leave for one scope. `open()` is false when the gate refused the call.
class Call {
 public:
  Call() noexcept : open_(enter()) {}
  ~Call() {
    if (open_) leave();
  }
  Call(const Call &) = delete;
  Call &operator=(const Call &) = delete;
  bool open() const noexcept { return open_; }

 private:
  bool open_;
};

// The message of the refusal (for parley::fail).
const char *refusal_message() noexcept;

}  // namespace parley::exit_gate
