// Text produced by streaming callbacks (on the model's serving engine thread) and read
// by the HTTP thread that writes server-sent events.
#pragma once

#include <parley/parley.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>

#include "logprobs.hpp"

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
  // Collect, with every piece of a chat request's text, the tokens it
  // completes with their log-probabilities (parley_request_reply_progress).
  void collect_scores() { scores_wanted_ = true; }
  // parley_text_fn for parley_chat_options.on_text.
  static int32_t on_text(void *self, const char *text, size_t length) {
    auto *s = static_cast<TextStream *>(self);
    TokenScores done;
    if (s->scores_wanted_) {
      parley_reply_progress p{};
      p.struct_size = sizeof p;
      // NULL: the request whose callback this is (its handle may not be back yet).
      if (parley_request_reply_progress(nullptr, &p) == PARLEY_OK) s->scored_up_to(p, &done);
    }
    s->push(std::string(text, length), std::move(done));
    return 0;
  }
  // parley_request_fn: the request finished (its status is read from the request).
  static void on_complete(void *self, parley_request *, int32_t status) {
    static_cast<TextStream *>(self)->finish(status);
  }

  void push(std::string piece, TokenScores scores = {}) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ += piece;
    append(pending_scores_, scores);
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
  // Wait up to `ms` for text or the end; move the text (and the scores of
  // the tokens it completes, when collected) out. Returns true when finished.
  bool take(std::string *out, int ms, TokenScores *scores = nullptr) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return finished_ || !pending_.empty(); });
    out->swap(pending_);
    pending_.clear();
    if (scores) {
      *scores = std::move(pending_scores_);
      pending_scores_ = {};
    }
    return finished_;
  }
  // Tokens whose scores were handed out with pieces so far.
  size_t scored_tokens() {
    std::lock_guard<std::mutex> lock(mu_);
    return scored_;
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
  bool scores_wanted_ = false;
  TokenScores pending_scores_;
  size_t scored_ = 0;  // tokens whose scores are in pending_scores_ or were taken

  // The tokens p covers beyond those already collected (callback thread).
  void scored_up_to(const parley_reply_progress &p, TokenScores *out) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = scored_; i < p.tokens; ++i) {
      out->tokens.push_back(p.token_ids[i]);
      out->logprobs.push_back(p.logprobs ? p.logprobs[i] : 0.0f);
      if (p.alternatives > 0) {
        out->k = p.alternatives;
        out->alternative_ids.insert(out->alternative_ids.end(), p.alternative_ids + i * p.alternatives,
                                    p.alternative_ids + (i + 1) * p.alternatives);
        out->alternative_logprobs.insert(out->alternative_logprobs.end(), p.alternative_logprobs + i * p.alternatives,
                                         p.alternative_logprobs + (i + 1) * p.alternatives);
      }
    }
    if (p.tokens > scored_) scored_ = p.tokens;
  }
  static void append(TokenScores &to, const TokenScores &more) {
    to.tokens.insert(to.tokens.end(), more.tokens.begin(), more.tokens.end());
    to.logprobs.insert(to.logprobs.end(), more.logprobs.begin(), more.logprobs.end());
    if (more.k) to.k = more.k;
    to.alternative_ids.insert(to.alternative_ids.end(), more.alternative_ids.begin(), more.alternative_ids.end());
    to.alternative_logprobs.insert(to.alternative_logprobs.end(), more.alternative_logprobs.begin(),
                                   more.alternative_logprobs.end());
  }
};

}  // namespace parley_http
