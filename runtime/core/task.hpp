// Task<T>: a lazily started C++20 coroutine whose result (or exception) its
// awaiter receives. The decoding loops are such coroutines, so that a
// request's state lives in its frame rather than on a thread's stack: where
// a loop waits for the serving engine it suspends (Engine::run_await), and
// whoever the engine hands it back to resumes it. Called through run_sync()
// (the blocking calls), nothing suspends and the loop runs on the caller's
// thread as a plain call would.
//
// Thread-safety: a task is awaited once, by one coroutine or run_sync().
#pragma once

#include <cxxabi.h>

#include <atomic>
#include <coroutine>
#include <exception>
#include <optional>
#include <utility>

#include "core/error.hpp"

namespace parley {

namespace task_detail {

struct PromiseBase {
  std::coroutine_handle<> continuation;  // the awaiting coroutine
  std::exception_ptr error;
  // Set by whichever comes second of the task's end and its awaiter's
  // await_suspend returning: that one goes on with the awaiter. A task that
  // ends without suspending so returns into its awaiter's await_suspend,
  // which goes on without suspending: no stack grows with the number of
  // awaits (symmetric transfer is a tail call only in optimised builds
  // without sanitizers; a long generation in a debug build overflowed).
  std::atomic<bool> ended_or_awaited{false};

  std::suspend_always initial_suspend() noexcept { return {}; }
  struct Final {
    bool await_ready() noexcept { return false; }
    template <typename P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      PromiseBase &p = h.promise();
      // Second: the awaiter suspended meanwhile (this task waited somewhere
      // and ends on another thread), so it goes on from here.
      if (p.ended_or_awaited.exchange(true, std::memory_order_acq_rel) && p.continuation) return p.continuation;
      return std::noop_coroutine();
    }
    void await_resume() noexcept {}
  };
  Final final_suspend() noexcept { return {}; }
  // no_sanitize: catching abi::__forced_unwind binds a reference to no
  // object (UBSan reports it; capi/api_guard.hpp's guarded() does the same).
  __attribute__((no_sanitize("null"))) void unhandled_exception() {
    // A thread ended by pthread_exit / pthread_cancel (a host callback
    // inside a blocking call) unwinds with abi::__forced_unwind, which must
    // keep unwinding: kept here, it aborted the process.
    try {
      throw;
    } catch (const abi::__forced_unwind &) {
      throw;
    } catch (...) {
      error = std::current_exception();
    }
  }
};

template <typename T>
struct Promise : PromiseBase {
  std::optional<T> value;
  template <typename U>
  void return_value(U &&v) {
    value.emplace(std::forward<U>(v));
  }
  T result() {
    if (error) std::rethrow_exception(error);
    return std::move(*value);
  }
};

template <>
struct Promise<void> : PromiseBase {
  void return_void() {}
  void result() {
    if (error) std::rethrow_exception(error);
  }
};

}  // namespace task_detail

template <typename T>
class [[nodiscard]] Task {
 public:
  struct promise_type : task_detail::Promise<T> {
    Task get_return_object() { return Task(std::coroutine_handle<promise_type>::from_promise(*this)); }
  };

  Task(Task &&o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task &operator=(Task &&o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  ~Task() {
    if (h_) h_.destroy();
  }

  // co_await: runs the task here; the awaiting coroutine goes on at once
  // when it ended without suspending, else when it ends (on whatever
  // thread resumed it).
  bool await_ready() const noexcept { return false; }
  // Not noexcept: a thread ended inside the task (pthread_exit in a host
  // callback) unwinds out of resume() and on through the awaiting coroutine.
  bool await_suspend(std::coroutine_handle<> awaiting) {
    auto &p = h_.promise();
    p.continuation = awaiting;
    h_.resume();
    return !p.ended_or_awaited.exchange(true, std::memory_order_acq_rel);
  }
  T await_resume() { return take(); }

  // Starts the task on this thread (it runs until it ends or suspends).
  void start() { h_.resume(); }
  bool done() const { return h_.done(); }
  // The result of an ended task (rethrowing its exception).
  T take() { return h_.promise().result(); }

 private:
  explicit Task(std::coroutine_handle<promise_type> h) : h_(h) {}
  std::coroutine_handle<promise_type> h_;
};

// A coroutine that owns its frame (freed when it ends) and is started at
// once: a driver that may end on any thread, e.g. an asynchronous
// request's. Its body must not let an exception out.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    // A thread ended by pthread_exit in a host callback keeps unwinding
    // (the frame is then left, as the old worker thread's stack was).
    __attribute__((no_sanitize("null"))) void unhandled_exception() {
      try {
        throw;
      } catch (const abi::__forced_unwind &) {
        throw;
      } catch (...) {
        std::terminate();
      }
    }
  };
};

// Runs a task that cannot suspend (no awaiter in it was given somewhere to
// resume it: a blocking call) to its end on this thread.
template <typename T>
T run_sync(Task<T> task) {
  task.start();
  if (!task.done()) fail(PARLEY_ERROR_INTERNAL, "a blocking call's decoding loop suspended");
  return task.take();
}

// Where a suspended task goes on: the serving engine hands it here when
// what it waited for is ready (RunControl::resumer).
class Resumer {
 public:
  virtual ~Resumer() = default;
  // Resumes h soon, on some thread other than the caller's; never throws
  // (out of resources, it resumes h on the caller's thread after all).
  virtual void resume(std::coroutine_handle<> h) noexcept = 0;
};

}  // namespace parley
