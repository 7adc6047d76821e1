// Text produced by streaming callbacks (on the model's serving engine thread) and read
// by the HTTP thread that writes server-sent events.
#pragma once

#include <parley/parley.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>

namespace parley_http {

// Wakes a reader of several streams (the choices of one request) when any
// of them has news: a counter bumped on every push and finish.
class TextSignal {
 public:
  void notify() {
    std::lock_guard<std::mutex> lock(mu_);
    ++count_;
    cv_.notify_all();
  }
  uint64_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }
  // Wait up to `ms` until the counter moves past `seen`.
  void wait_past(uint64_t seen, int ms) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return count_ != seen; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t count_ = 0;
};

class TextStream {
 public:
  // Also notify `signal` (which must outlive the stream's callbacks) on every piece and at the end.
  void set_signal(TextSignal *signal) { signal_ = signal; }
  // parley_text_fn for parley_chat_options.on_text.
  static int32_t on_text(void *self, const char *text, size_t length) {
    static_cast<TextStream *>(self)->push(std::string(text, length));
    return 0;
  }
  // parley_request_fn: the request finished (its status is read from the request).
  static void on_complete(void *self, parley_request *, int32_t status) {
    static_cast<TextStream *>(self)->finish(status);
  }

  void push(std::string piece) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ += piece;
    ++pieces_;
    cv_.notify_all();
    if (signal_) signal_->notify();
  }
  void finish(int32_t status) {
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
    status_ = status;
    cv_.notify_all();
    if (signal_) signal_->notify();
  }
  // Wait up to `ms` for text or the end; move the text out. Returns true when finished.
  bool take(std::string *out, int ms) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return finished_ || !pending_.empty(); });
    out->swap(pending_);
    pending_.clear();
    return finished_;
  }
  // Wait until the first piece or the end (so that an early failure is answered as an HTTP error).
  void wait_started() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return finished_ || pieces_ > 0; });
  }
  bool finished() {
    std::lock_guard<std::mutex> lock(mu_);
    return finished_;
  }
  bool started() {
    std::lock_guard<std::mutex> lock(mu_);
    return pieces_ > 0;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;
  size_t pieces_ = 0;
  bool finished_ = false;
  int32_t status_ = PARLEY_OK;
  TextSignal *signal_ = nullptr;
};

}  // namespace parley_http
