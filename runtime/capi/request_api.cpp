// Asynchronous requests: a submitted chat turn, generation or translation
// runs the blocking call it mirrors on a worker thread of a process-wide
// pool (RequestWorkers: threads reused, started on demand up to
// PARLEY_REQUEST_WORKERS, default 256; past that requests wait their turn
// in submission order).
// Concurrent requests of one model meet in the serving engine,
// which batches them like concurrent blocking calls. The request owns copies
// of every argument; its cancel flag, deadline and log-probability wish
// reach the blocking call through a thread-local RequestControl. The host's
// callbacks (streaming and completion) run on the engine's scheduler thread
// (Engine::call_on_engine_thread): the copies' callback fields point at
// trampolines here that hand the host's function over and wait for it.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "capi/api_guard.hpp"
#include "capi/request_control.hpp"
#include "capi/result_json.hpp"
#include "core/environment.hpp"
#include "core/runtime.hpp"
#include "serve/engine.hpp"
#include "text/protect.hpp"

using namespace parley;
using parley::capi::check_struct_size;
using parley::capi::copy_in;
using parley::capi::guarded;
using parley::capi::require;

namespace {
enum class Kind { kChat, kGenerate, kTranslate, kTranslateTokens };
const char *kind_name(Kind k) {
  switch (k) {
    case Kind::kChat:
      return "a chat turn (parley_chat_submit)";
    case Kind::kGenerate:
      return "a generation (parley_generate_submit)";
    case Kind::kTranslate:
      return "a text translation (parley_translate_submit)";
    case Kind::kTranslateTokens:
      return "a token translation (parley_translate_tokens_submit)";
  }
  return "?";
}

constexpr int64_t kMaxUnfinished = int64_t{1} << 16;
// Worker threads that run requests at once (PARLEY_REQUEST_WORKERS
// overrides it): the engine's default batch (max_batch_sequences). Past
// this, requests queue here. More decoding threads would only wait in the
// engine: tests/bench/request_flood.c, 5,000 four-token generations of the
// demo model, took 2.8 s with 128 workers, 3.1 s with 256, 5.9 s with 1,024.
constexpr size_t kDefaultMaxWorkers = 256;
// Extra workers, past the limit, that a cancelled queued request may start
// so that it ends (and its completion callback runs) without waiting for a
// running request to finish.
constexpr size_t kMaxExtraWorkers = 64;
constexpr size_t kMaxBatch = 4096;
constexpr size_t kMaxSequence = size_t{1} << 20;
constexpr size_t kMaxTextBytes = size_t{1} << 26;
constexpr size_t kMaxStops = 64;
std::atomic<int64_t> g_unfinished{0};

thread_local const parley::capi::RequestControl *t_control = nullptr;
thread_local const parley_request *t_worker_of = nullptr;  // the request this thread is the worker of

// An owned copy of a parley_generation_options (struct_size kept as the
// caller's, so the blocking call reads exactly what it would have read).
struct GenerationCopy {
  parley_generation_options o{};
  std::vector<int32_t> eos, logit_bias_ids;
  std::vector<float> logit_bias_values;
  std::vector<char> grammar, json_schema;  // appended fields: owned, NUL-terminated copies (heap: survive moves)
  bool set = false;
  const parley_generation_options *get() const { return set ? &o : nullptr; }
};

void copy_generation(const parley_generation_options *src, GenerationCopy &dst, const std::string &what) {
  if (!src) return;
  copy_in(dst.o, src, PARLEY_SIZE_THROUGH(parley_generation_options, user_data), what.c_str());
  if (dst.o.num_eos_token_ids) {
    if (!dst.o.eos_token_ids)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, what + "->eos_token_ids is NULL but num_eos_token_ids > 0");
    if (dst.o.num_eos_token_ids > 1024) fail(PARLEY_ERROR_INVALID_ARGUMENT, what + ": more than 1024 EOS ids");
    dst.eos.assign(dst.o.eos_token_ids, dst.o.eos_token_ids + dst.o.num_eos_token_ids);
    dst.o.eos_token_ids = dst.eos.data();
  }
  // grammar / json_schema: copied up to 1 byte past their 1 MiB limit (the
  // blocking call refuses the over-long text itself).
  constexpr size_t kMaxGrammarBytes = size_t{1} << 20;
  if (src->struct_size >= offsetof(parley_generation_options, grammar) + sizeof(const char *) && dst.o.grammar) {
    dst.grammar.assign(dst.o.grammar, dst.o.grammar + strnlen(dst.o.grammar, kMaxGrammarBytes + 1));
    dst.grammar.push_back('\0');
    dst.o.grammar = dst.grammar.data();
  }
  if (src->struct_size >= offsetof(parley_generation_options, json_schema) + sizeof(const char *) &&
      dst.o.json_schema) {
    dst.json_schema.assign(dst.o.json_schema, dst.o.json_schema + strnlen(dst.o.json_schema, kMaxGrammarBytes + 1));
    dst.json_schema.push_back('\0');
    dst.o.json_schema = dst.json_schema.data();
  }
  // logit_bias (appended): owned copies; the blocking call checks the values.
  if (src->struct_size >= PARLEY_SIZE_THROUGH(parley_generation_options, num_logit_bias) && dst.o.num_logit_bias) {
    if (dst.o.num_logit_bias > PARLEY_MAX_LOGIT_BIAS)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, what + "->num_logit_bias is " + std::to_string(dst.o.num_logit_bias) +
                                              ": at most PARLEY_MAX_LOGIT_BIAS (" +
                                              std::to_string(PARLEY_MAX_LOGIT_BIAS) + ") entries");
    if (!dst.o.logit_bias_ids || !dst.o.logit_bias_values)
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           what + "->logit_bias_ids or logit_bias_values is NULL but num_logit_bias > 0");
    dst.logit_bias_ids.assign(dst.o.logit_bias_ids, dst.o.logit_bias_ids + dst.o.num_logit_bias);
    dst.logit_bias_values.assign(dst.o.logit_bias_values, dst.o.logit_bias_values + dst.o.num_logit_bias);
    dst.o.logit_bias_ids = dst.logit_bias_ids.data();
    dst.o.logit_bias_values = dst.logit_bias_values.data();
  }
  dst.set = true;
}

// A NUL-terminated string, copied up to one byte past the library's limit
// (the blocking call then reports the over-long text itself).
std::string copy_cstr(const char *s) {
  return std::string(s, strnlen(s, kMaxTextBytes + 1));
}

// Token sequences: owned rows and the pointer/length arrays the blocking call reads.
struct BatchCopy {
  std::vector<std::vector<int32_t>> rows;
  std::vector<const int32_t *> ptrs;
  std::vector<size_t> lengths;
  bool present = false;
};

void copy_batch(const int32_t *const *seqs, const size_t *lengths, size_t batch, const char *what, BatchCopy &dst) {
  if (batch == 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string("the batch of ") + what + " is empty");
  if (batch > kMaxBatch)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "batch of " + std::to_string(batch) + " exceeds " + std::to_string(kMaxBatch));
  require(seqs, what);
  require(lengths, "lengths");
  dst.rows.resize(batch);
  for (size_t b = 0; b < batch; ++b) {
    if (lengths[b] > kMaxSequence)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string(what) + "[" + std::to_string(b) + "] is longer than 2^20 tokens");
    if (lengths[b] && !seqs[b])
      fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string(what) + "[" + std::to_string(b) + "] is NULL");
    if (lengths[b]) dst.rows[b].assign(seqs[b], seqs[b] + lengths[b]);
  }
  for (auto &r : dst.rows) {
    dst.ptrs.push_back(r.data());
    dst.lengths.push_back(r.size());
  }
  dst.present = true;
}

}  // namespace

namespace {
// Where a request's suspended coroutine goes on: the resume pool, tagged
// with the request (ResumePool::run_here).
struct RequestResumer final : parley::Resumer {
  const void *owner = nullptr;
  void resume(std::coroutine_handle<> h) noexcept override;
};
}  // namespace

struct parley_request {
  parley::capi::ModelRef model_ref;  // first: released after everything else (set by start())
  Kind kind = Kind::kGenerate;
  std::atomic<bool> cancel{false};
  parley::capi::RequestControl control;
  parley_request_fn on_complete = nullptr;
  void *user_data = nullptr;
  std::function<parley_status(parley_request &)> work;  // the blocking call on the copies below
  // The same call as a coroutine (chat turns, generations), run instead of
  // `work` when the model has a serving engine: while the engine computes
  // its rows it holds no thread (run_async).
  std::function<parley::Task<void>(parley_request &)> async_work;
  const char *function = "";  // the C function `work` is, for the messages of async_work's errors
  RequestResumer resumer;

  // Inputs (owned copies).
  const parley_model *model = nullptr;
  parley_chat_session *session = nullptr;
  bool session_held = false;  // under mu: the session's busy flag is still ours
  parley_chat_options chat{};
  std::vector<std::string> stops;
  std::vector<const char *> stop_ptrs;
  GenerationCopy generation;
  BatchCopy batch, prefixes;
  parley_translation_options translation{};
  bool has_translation_options = false;
  std::string source_language, target_language;
  std::vector<std::string> protect_patterns, glossary;  // options->protect_patterns / glossary
  std::vector<const char *> protect_pattern_ptrs, glossary_ptrs;
  std::vector<std::string> texts;
  std::vector<const char *> text_ptrs;
  std::vector<size_t> text_lengths;
  bool with_lengths = false;

  // Outcome.
  mutable std::mutex mu;
  std::condition_variable cv;
  bool finished = false, done = false;
  parley_status status = PARLEY_ERROR_BUSY;
  std::string message;
  char *reply = nullptr;
  parley_generation_result *generation_result = nullptr;
  parley_translation_result *translation_result = nullptr;
  bool taken = false;
  bool free_when_done = false;  // parley_request_free was called on the worker thread
  bool released = false;        // the worker no longer touches the request (parley_request_free may delete it)
  // A chat reply's hypothesis (tokens, logprobs, alternatives) when its
  // request options asked for log-probabilities or alternatives.
  parley::Hypothesis reply_hypothesis;
  bool has_reply_logprobs = false, has_reply_alternatives = false;
  // A chat turn's streamed text, while its on_text runs (parley_request_reply_progress).
  parley::ChatStreamProgress stream_progress;
  // Under RequestWorkers' lock: the request's place in its queue while it
  // waits for a worker.
  const void *workers = nullptr;  // the RequestWorkers it was submitted to
  bool queued = false;
  std::list<parley_request *>::iterator queue_entry;
  bool deadline_watched = false;  // in the pool's deadline timer while queued
  std::multimap<std::chrono::steady_clock::time_point, parley_request *>::iterator deadline_entry;

  // The host's streaming callbacks; the copies above call the trampolines.
  parley_token_fn host_on_token = nullptr;
  parley_text_fn host_on_text = nullptr;
  parley_translation_text_fn host_on_translation = nullptr;
  void *host_stream_data = nullptr;
  // Where the host's callbacks run: the model's serving engine (set by the
  // worker before the work), or NULL: on the worker thread.
  parley::Engine *engine = nullptr;

  ~parley_request() {
    parley_string_free(reply);
    parley_result_free(generation_result);
    parley_translation_result_free(translation_result);
  }
};

namespace parley::capi {
parley_status status_of(const char *function, std::exception_ptr error) {
  return guarded(function, [&] { std::rethrow_exception(error); });
}
void set_request_control(const RequestControl *control) {
  t_control = control;
}
const RequestControl *take_request_control() {
  const RequestControl *c = t_control;
  t_control = nullptr;
  return c;
}
}  // namespace parley::capi

namespace {

void run(parley_request *r);

// The process's instance of a pool kept in `current` (made at first use,
// never destroyed). A forked child makes its own, since the parent's
// threads do not exist there; the parent's is left as it is (its mutex may
// be held). Pool(pid) and pool->pid() identify the process.
template <typename Pool>
Pool &of_this_process(std::atomic<Pool *> &current) {
  Pool *p = current.load(std::memory_order_acquire);
  const pid_t pid = getpid();
  while (!p || p->pid() != pid) {
    auto *fresh = new Pool(pid);
    if (current.compare_exchange_strong(p, fresh, std::memory_order_acq_rel))
      p = fresh;
    else
      delete fresh;  // another thread made it first; `p` is now that one
  }
  return *p;
}

// The process's request workers. Threads are started on demand, while more
// requests wait than workers are idle, up to max_workers_; an idle worker
// ends after kIdleExit. Never destroyed (a host may exit with requests in
// flight: see runtime/core/exit_gate.hpp); a forked child makes its own,
// since the parent's threads do not exist there.
class RequestWorkers {
 public:
  static RequestWorkers &get() { return of_this_process(current_); }
  pid_t pid() const { return pid_; }
  template <typename P>
  friend P &of_this_process(std::atomic<P *> &current);

  // Queues r (the caller still owns it on failure). Throws Error(OUT_OF_MEMORY)
  // when no worker exists and none can be started.
  void submit(parley_request *r) {
    std::lock_guard<std::mutex> lock(mu_);
    r->workers = this;
    r->queue_entry = queue_.insert(queue_.end(), r);
    r->queued = true;
    if (queue_.size() <= idle_ || workers_ >= max_workers_) {
      cv_.notify_one();
      if (r->control.deadline) watch_deadline(r);
      return;
    }
    try {
      start_worker();
    } catch (...) {
      if (workers_ > 0) return;  // a running worker takes it in turn
      queue_.erase(r->queue_entry);
      r->queued = false;
      throw;
    }
  }

  // The process's pool, if it made one (no allocation: for noexcept callers).
  static RequestWorkers *existing() {
    RequestWorkers *w = current_.load(std::memory_order_acquire);
    return w && w->pid_ == getpid() ? w : nullptr;
  }

  // A cancelled request that still waits for a worker goes first, with a
  // worker of its own when none is idle (at most kMaxExtraWorkers past the
  // limit), so that it ends now instead of after some running request.
  void expedite(parley_request *r) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (r->workers == this) expedite_locked(r);
  }

 private:
  static constexpr std::chrono::seconds kIdleExit{30};
  using Clock = std::chrono::steady_clock;

  static bool ends_at_once(const parley_request &r) {
    return r.cancel.load() || (r.control.deadline && Clock::now() >= *r.control.deadline);
  }

  void expedite_locked(parley_request *r) noexcept {
    if (!r->queued) return;
    queue_.splice(queue_.begin(), queue_, r->queue_entry);
    if (idle_ > 0) {
      cv_.notify_one();
      return;
    }
    if (workers_ >= max_workers_ + kMaxExtraWorkers) return;
    try {
      start_worker();
    } catch (...) {  // it waits for a running worker instead
    }
  }

  // A queued request whose deadline passes is expedited then (it ends with
  // TIMEOUT at once), by a timer thread started with the first such request.
  // Under mu_. Without the timer (no thread could start), it times out when
  // a worker takes it.
  void watch_deadline(parley_request *r) noexcept {
    if (!timer_started_) {
      try {
        std::thread([this] { timer_loop(); }).detach();
        timer_started_ = true;
      } catch (...) {
        return;
      }
    }
    try {
      r->deadline_entry = deadlines_.emplace(*r->control.deadline, r);
    } catch (...) {  // out of memory: it times out when a worker takes it
      return;
    }
    r->deadline_watched = true;
    timer_cv_.notify_one();
  }
  void unwatch_deadline(parley_request *r) {
    if (!r->deadline_watched) return;
    deadlines_.erase(r->deadline_entry);
    r->deadline_watched = false;
  }
  void timer_loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (deadlines_.empty()) {
        timer_cv_.wait(lock);
        continue;
      }
      // A copy: a worker may take (and unwatch) that request meanwhile.
      const Clock::time_point next = deadlines_.begin()->first;
      if (Clock::now() < next) {
        timer_cv_.wait_until(lock, next);
        continue;
      }
      parley_request *r = deadlines_.begin()->second;
      unwatch_deadline(r);
      expedite_locked(r);
    }
  }

  explicit RequestWorkers(pid_t pid) : pid_(pid), max_workers_(max_workers_from_environment()) {}

  // PARLEY_REQUEST_WORKERS when set to a whole number 1 ... 65536, else the
  // default (an unusable value is reported on stderr).
  static size_t max_workers_from_environment() {
    return static_cast<size_t>(integer_from_environment("PARLEY_REQUEST_WORKERS", 1, 65536, kDefaultMaxWorkers));
  }

  // Under mu_.
  void start_worker() {
    try {
      std::thread([this] { loop(); }).detach();
    } catch (const std::system_error &e) {
      fail(PARLEY_ERROR_OUT_OF_MEMORY, std::string("cannot start a request worker thread: ") + e.what());
    }
    ++workers_;
  }

  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      // Past the limit (the extra workers expedite starts; workers are
      // interchangeable), a worker takes only requests that end at once
      // (cancelled, or past their deadline), and ends when none waits.
      if (workers_ > max_workers_ && (queue_.empty() || !ends_at_once(*queue_.front()))) break;
      if (queue_.empty()) {
        ++idle_;
        const bool got = cv_.wait_for(lock, kIdleExit, [&] { return !queue_.empty(); });
        --idle_;
        if (!got) break;
        continue;
      }
      parley_request *r = queue_.front();
      queue_.pop_front();
      r->queued = false;
      unwatch_deadline(r);
      lock.unlock();
      run(r);
      lock.lock();
    }
    --workers_;
  }

  static inline std::atomic<RequestWorkers *> current_{nullptr};
  const pid_t pid_;
  const size_t max_workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::list<parley_request *> queue_;
  size_t workers_ = 0, idle_ = 0;
  // Deadlines of queued requests (watch_deadline), earliest first.
  std::multimap<Clock::time_point, parley_request *> deadlines_;
  std::condition_variable timer_cv_;
  bool timer_started_ = false;
};

void cancel_request(parley_request &r) noexcept {
  r.cancel.store(true);
  if (RequestWorkers *workers = RequestWorkers::existing()) workers->expedite(&r);
  // A chat turn also stops through its session's flag (the engine's run and
  // the stream check it). Only while the request still holds the session:
  // afterwards the host may have freed it.
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.session_held) parley_chat_cancel(r.session);
}

void release_session(parley_request &r) {
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.session_held) parley::capi::chat_session_release(r.session);
  r.session_held = false;
}

// Runs one of r's host callbacks where parley.h promises: on its model's
// engine thread, or on the worker when the model has no engine.
template <class F>
void in_callback(parley_request &r, F &&f) {
  auto body = [&] {
    const parley_request *outer = t_worker_of;
    t_worker_of = &r;  // parley_request_wait / _free on r know they are inside its callback
    struct Restore {
      const parley_request *outer;
      ~Restore() { t_worker_of = outer; }
    } restore{outer};
    f();
  };
  if (r.engine)
    r.engine->call_on_engine_thread(body, &r);
  else
    body();
}

int32_t token_trampoline(void *user_data, size_t batch_index, size_t sequence_index, int32_t token) {
  auto &r = *static_cast<parley_request *>(user_data);
  int32_t ret = 0;
  in_callback(r, [&] { ret = r.host_on_token(r.host_stream_data, batch_index, sequence_index, token); });
  return ret;
}
int32_t text_trampoline(void *user_data, const char *text, size_t length) {
  auto &r = *static_cast<parley_request *>(user_data);
  int32_t ret = 0;
  in_callback(r, [&] { ret = r.host_on_text(r.host_stream_data, text, length); });
  return ret;
}
int32_t translation_trampoline(void *user_data, size_t text_index, size_t hypothesis, const char *text, size_t length,
                               int32_t is_final) {
  auto &r = *static_cast<parley_request *>(user_data);
  int32_t ret = 0;
  in_callback(r,
              [&] { ret = r.host_on_translation(r.host_stream_data, text_index, hypothesis, text, length, is_final); });
  return ret;
}

// Points the copies' streaming callbacks at the trampolines.
void route_stream_callbacks(parley_request &r) {
  switch (r.kind) {
    case Kind::kGenerate:
    case Kind::kTranslateTokens:
      if (r.generation.set && r.generation.o.on_token) {
        r.host_on_token = r.generation.o.on_token;
        r.host_stream_data = r.generation.o.user_data;
        r.generation.o.on_token = token_trampoline;
        r.generation.o.user_data = &r;
      }
      break;
    case Kind::kChat:
      if (r.chat.on_text) {
        r.host_on_text = r.chat.on_text;
        r.host_stream_data = r.chat.user_data;
        r.chat.on_text = text_trampoline;
        r.chat.user_data = &r;
      }
      break;
    case Kind::kTranslate:
      // on_text is zero in the copy when the caller's struct predates it.
      if (r.has_translation_options && r.translation.on_text) {
        r.host_on_translation = r.translation.on_text;
        r.host_stream_data = r.translation.user_data;
        r.translation.on_text = translation_trampoline;
        r.translation.user_data = &r;
      }
      break;
  }
}

// The serving engine the request's work will use (starting it as the work
// would); NULL without one, or when the model cannot be bound (the work
// then reports why).
parley::Engine *engine_for(const parley_request &r) {
  const parley_model *model = r.kind == Kind::kChat ? parley::capi::chat_session_model(r.session) : r.model;
  try {
    return model ? model->impl.engine() : nullptr;
  } catch (...) {
    return nullptr;
  }
}

// Threads that resume suspended request coroutines (run_async) after the
// serving engine ran their rows: a few, whatever the number of requests
// (each runs a request's decoding between two engine steps). Never
// destroyed, like RequestWorkers; a forked child makes its own.
class ResumePool {
 public:
  static ResumePool &get() { return of_this_process(current_); }
  static ResumePool *existing() {
    ResumePool *p = current_.load(std::memory_order_acquire);
    return p && p->pid_ == getpid() ? p : nullptr;
  }
  pid_t pid() const { return pid_; }
  template <typename P>
  friend P &of_this_process(std::atomic<P *> &current);

  // Resumes h soon on a pool thread; `owner`: the request it belongs to.
  void post(std::coroutine_handle<> h, const void *owner) noexcept {
    try {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back({h, owner});
      // A thread blocked in a streaming callback (waiting for the engine
      // thread) is not idle: another one starts while work waits.
      if (queue_.size() > idle_ && threads_ < max_threads_) start_thread();
    } catch (...) {  // no memory for the queue, or no thread at all: go on here
      h.resume();
      return;
    }
    cv_.notify_one();
  }

  // Resumes owner's coroutines waiting here on this thread, now. A callback
  // on the engine thread that frees another request waits for it to end;
  // the pool's threads may all be waiting for that callback to return.
  void run_here(const void *owner) {
    for (;;) {
      std::coroutine_handle<> h;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = std::find_if(queue_.begin(), queue_.end(), [&](const Item &x) { return x.owner == owner; });
        if (it == queue_.end()) return;
        h = it->h;
        queue_.erase(it);
      }
      h.resume();
    }
  }

 private:
  struct Item {
    std::coroutine_handle<> h;
    const void *owner;
  };
  explicit ResumePool(pid_t pid) : pid_(pid) {}

  // Under mu_. Throws when no thread exists and none can start (post()
  // then goes on inline).
  void start_thread() {
    try {
      std::thread([this] { loop(); }).detach();
      ++threads_;
    } catch (const std::system_error &) {
      if (threads_ == 0) throw;
    }
  }

  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return !queue_.empty(); });
      --idle_;
      std::coroutine_handle<> h = queue_.front().h;
      queue_.pop_front();
      lock.unlock();
      h.resume();
      lock.lock();
    }
  }

  // Enough for the callbacks of many streaming requests waiting for the
  // engine thread at once; threads start only while work waits.
  static constexpr size_t max_threads_ = 64;
  static inline std::atomic<ResumePool *> current_{nullptr};
  const pid_t pid_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  size_t threads_ = 0, idle_ = 0;
};

void RequestResumer::resume(std::coroutine_handle<> h) noexcept {
  ResumePool::get().post(h, owner);
}

// The request ended with `st`: its results, the completion callback, and
// its release (or its deletion, when it was freed from one of its own
// callbacks). r must not be touched after this.
void finish(parley_request *r, parley_status st, std::string message, parley::Hypothesis &hypothesis) {
  if (r->session) release_session(*r);  // before the callback: it may submit the next turn
  {
    std::lock_guard<std::mutex> lock(r->mu);
    r->status = st;
    r->message = std::move(message);
    if (st == PARLEY_OK && r->kind == Kind::kChat && (r->control.return_logprobs || r->control.num_alternatives > 0)) {
      r->has_reply_logprobs = r->control.return_logprobs;
      r->has_reply_alternatives = r->control.num_alternatives > 0;
      r->reply_hypothesis = std::move(hypothesis);
    }
    r->finished = true;
  }
  if (r->on_complete) in_callback(*r, [&] { r->on_complete(r->user_data, r, st); });
  bool free_now;
  {
    std::lock_guard<std::mutex> lock(r->mu);
    r->done = true;
    free_now = r->free_when_done;
    r->released = !free_now;
    // Under the lock: a parley_request_free waiting for `released` deletes
    // r only after this worker's last touch (the unlock).
    r->cv.notify_all();
  }
  // Freed from one of its own callbacks: nobody else may use the handle now
  // (parley_request_free's contract), so the worker deletes it.
  if (free_now) delete r;
  g_unfinished.fetch_sub(1);
}

// Runs r's async_work: on the worker until the first wait for the serving
// engine, then on the resume pool's threads; the worker is free meanwhile.
parley::Detached drive(parley_request *r) {
  parley::Hypothesis hypothesis;
  if (r->kind == Kind::kChat) {
    r->control.reply = &hypothesis;
    r->control.progress = &r->stream_progress;
  }
  r->resumer.owner = r;
  r->control.resumer = &r->resumer;
  parley_status st = PARLEY_OK;
  std::string message;
  std::exception_ptr error;
  parley::capi::set_request_control(&r->control);  // taken at the work's start, on this thread
  try {
    co_await r->async_work(*r);
  } catch (const abi::__forced_unwind &) {
    throw;  // a callback ended this thread (pthread_exit): as on a worker, it unwinds
  } catch (...) {
    error = std::current_exception();
  }
  parley::capi::set_request_control(nullptr);
  if (error) {
    st = parley::capi::status_of(r->function, error);
    message = parley_last_error();
  }
  finish(r, st, std::move(message), hypothesis);
}

void run(parley_request *r) {
  t_worker_of = r;
  r->engine = engine_for(*r);
  parley_status st;
  std::string message;
  parley::Hypothesis hypothesis;
  if (r->cancel.load()) {
    st = PARLEY_ERROR_CANCELLED;
    message = "parley_request: the request was cancelled before it started";
  } else if (r->control.deadline && std::chrono::steady_clock::now() >= *r->control.deadline) {
    st = PARLEY_ERROR_TIMEOUT;
    message = "parley_request: the request's deadline passed before it started";
  } else if (r->async_work && r->engine) {
    t_worker_of = nullptr;
    drive(r);  // may end, and free r, before it returns
    return;
  } else {
    if (r->kind == Kind::kChat) {
      r->control.reply = &hypothesis;
      r->control.progress = &r->stream_progress;
    }
    parley::capi::set_request_control(&r->control);
    st = r->work(*r);
    parley::capi::set_request_control(nullptr);
    if (st != PARLEY_OK) message = parley_last_error();
  }
  t_worker_of = nullptr;
  finish(r, st, std::move(message), hypothesis);
}

// Common part of the submit functions: request options, the limit, the worker.
void start(std::unique_ptr<parley_request> r, const parley_request_options *options, parley_request **out_request) {
  parley_request_options o{};
  o.struct_size = sizeof o;
  copy_in(o, options, PARLEY_SIZE_THROUGH(parley_request_options, return_logprobs), "request_options");
  if (o.num_alternatives > PARLEY_MAX_ALTERNATIVES)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "request_options->num_alternatives is " + std::to_string(o.num_alternatives) +
                                            ": at most PARLEY_MAX_ALTERNATIVES (" +
                                            std::to_string(PARLEY_MAX_ALTERNATIVES) + ") alternatives per step");
  if (o.num_alternatives > 0 && r->kind != Kind::kChat)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string("request_options->num_alternatives is for chat requests; ") +
                                            kind_name(r->kind) +
                                            " request takes num_alternatives from its generation options");
  if (o.deadline_ms < 0)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "request_options->deadline_ms is " + std::to_string(o.deadline_ms) + "; use 0 for none or a positive value");
  if (o.deadline_ms > (int64_t{1} << 40))
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "request_options->deadline_ms is absurdly large (> 2^40)");
  if (o.return_logprobs != 0 && o.return_logprobs != 1)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "request_options->return_logprobs must be 0 or 1, got " + std::to_string(o.return_logprobs));
  r->on_complete = o.on_complete;
  r->user_data = o.user_data;
  r->control.cancel = &r->cancel;
  r->control.return_logprobs = o.return_logprobs != 0;
  r->control.num_alternatives = static_cast<int64_t>(o.num_alternatives);
  if (o.deadline_ms > 0)
    r->control.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(o.deadline_ms);
  // The model's first request binds its weights (and builds the kernels'
  // JIT code) here, on the caller's thread, not on the worker: a host that
  // exits with requests in flight must not exit while that runs (see
  // runtime/core/exit_gate.hpp). A failure is the work's to report.
  (void)engine_for(*r);
  if (g_unfinished.fetch_add(1) >= kMaxUnfinished) {
    g_unfinished.fetch_sub(1);
    fail(PARLEY_ERROR_BUSY, "too many unfinished requests (" + std::to_string(kMaxUnfinished) +
                                "); wait for some to finish before submitting more");
  }
  if (r->session) {
    try {
      parley::capi::chat_session_acquire(r->session);
    } catch (...) {
      g_unfinished.fetch_sub(1);
      throw;
    }
    r->session_held = true;
  }
  r->model_ref.hold(r->model);  // a chat request's session holds its model
  route_stream_callbacks(*r);
  parley_request *raw = r.get();
  // Published before the worker may run (and, from a callback, free) it.
  *out_request = raw;
  try {
    RequestWorkers::get().submit(raw);
  } catch (...) {
    *out_request = nullptr;
    g_unfinished.fetch_sub(1);
    if (raw->session) parley::capi::chat_session_release(raw->session);
    throw;
  }
  (void)r.release();
}

}  // namespace

extern "C" {

PARLEY_API parley_status parley_request_options_defaults(parley_request_options *options) {
  return guarded(__func__, [&] {
    parley::capi::write_defaults(options, PARLEY_SIZE_THROUGH(parley_request_options, return_logprobs),
                                 [] { return parley_request_options{}; });
  });
}

PARLEY_API parley_status parley_chat_submit(parley_chat_session *session, const parley_chat_options *options,
                                            const parley_request_options *request_options,
                                            parley_request **out_request) {
  return guarded(__func__, [&] {
    require(session, "session");
    require(out_request, "out_request");
    auto r = std::make_unique<parley_request>();
    r->kind = Kind::kChat;
    r->session = session;
    bool has_options = options != nullptr;
    if (options) {
      copy_in(r->chat, options, PARLEY_SIZE_THROUGH(parley_chat_options, user_data), "options");
      if (r->chat.num_stop_strings > kMaxStops) fail(PARLEY_ERROR_INVALID_ARGUMENT, "more than 64 stop strings");
      if (r->chat.num_stop_strings && !r->chat.stop_strings)
        fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->stop_strings is NULL but num_stop_strings > 0");
      for (size_t i = 0; i < r->chat.num_stop_strings; ++i) {
        if (!r->chat.stop_strings[i])
          fail(PARLEY_ERROR_INVALID_ARGUMENT, "stop_strings[" + std::to_string(i) + "] is NULL");
        r->stops.push_back(copy_cstr(r->chat.stop_strings[i]));
      }
      for (const auto &s : r->stops) r->stop_ptrs.push_back(s.c_str());
      r->chat.stop_strings = r->stop_ptrs.data();
      copy_generation(r->chat.generation, r->generation, "options->generation");
      r->chat.generation = r->generation.get();
    }
    r->work = [has_options](parley_request &q) {
      return parley::capi::chat_generate_held(q.session, has_options ? &q.chat : nullptr, &q.reply);
    };
    r->async_work = [has_options](parley_request &q) {
      return parley::capi::chat_generate_task(q.session, has_options ? &q.chat : nullptr, &q.reply);
    };
    r->function = "parley_chat_generate";
    start(std::move(r), request_options, out_request);
  });
}

PARLEY_API parley_status parley_generate_submit(const parley_model *model, const int32_t *const *prompts,
                                                const size_t *prompt_lengths, size_t batch_size,
                                                const parley_generation_options *options,
                                                const parley_request_options *request_options,
                                                parley_request **out_request) {
  return guarded(__func__, [&] {
    require(model, "model");
    require(out_request, "out_request");
    auto r = std::make_unique<parley_request>();
    r->kind = Kind::kGenerate;
    r->model = model;
    copy_batch(prompts, prompt_lengths, batch_size, "prompts", r->batch);
    copy_generation(options, r->generation, "options");
    r->work = [](parley_request &q) {
      return parley_generate(q.model, q.batch.ptrs.data(), q.batch.lengths.data(), q.batch.rows.size(),
                             q.generation.get(), &q.generation_result);
    };
    r->async_work = [](parley_request &q) {
      return parley::capi::generate_task(q.model, q.batch.ptrs.data(), q.batch.lengths.data(), q.batch.rows.size(),
                                         q.generation.get(), &q.generation_result);
    };
    r->function = "parley_generate";
    start(std::move(r), request_options, out_request);
  });
}

PARLEY_API parley_status parley_translate_tokens_submit(const parley_model *model, const int32_t *const *sources,
                                                        const size_t *source_lengths, size_t batch_size,
                                                        const int32_t *const *target_prefixes,
                                                        const size_t *target_prefix_lengths,
                                                        const parley_generation_options *options,
                                                        const parley_request_options *request_options,
                                                        parley_request **out_request) {
  return guarded(__func__, [&] {
    require(model, "model");
    require(out_request, "out_request");
    auto r = std::make_unique<parley_request>();
    r->kind = Kind::kTranslateTokens;
    r->model = model;
    copy_batch(sources, source_lengths, batch_size, "sources", r->batch);
    if (target_prefixes) copy_batch(target_prefixes, target_prefix_lengths, batch_size, "target_prefixes", r->prefixes);
    copy_generation(options, r->generation, "options");
    r->work = [](parley_request &q) {
      return parley_translate_tokens(q.model, q.batch.ptrs.data(), q.batch.lengths.data(), q.batch.rows.size(),
                                     q.prefixes.present ? q.prefixes.ptrs.data() : nullptr,
                                     q.prefixes.present ? q.prefixes.lengths.data() : nullptr, q.generation.get(),
                                     &q.generation_result);
    };
    start(std::move(r), request_options, out_request);
  });
}

PARLEY_API parley_status parley_translate_submit(const parley_model *model, const char *const *texts,
                                                 const size_t *lengths, size_t count,
                                                 const parley_translation_options *options,
                                                 const parley_request_options *request_options,
                                                 parley_request **out_request) {
  return guarded(__func__, [&] {
    require(model, "model");
    require(out_request, "out_request");
    if (count == 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the batch is empty");
    if (count > kMaxBatch) fail(PARLEY_ERROR_INVALID_ARGUMENT, "more than 4096 texts in one call");
    require(texts, "texts");
    auto r = std::make_unique<parley_request>();
    r->kind = Kind::kTranslate;
    r->model = model;
    r->with_lengths = lengths != nullptr;
    for (size_t i = 0; i < count; ++i) {
      std::string what = "texts[" + std::to_string(i) + "]";
      if (lengths) {
        if (!texts[i] && lengths[i]) fail(PARLEY_ERROR_INVALID_ARGUMENT, what + " is NULL but its length is not 0");
        if (lengths[i] > kMaxTextBytes) fail(PARLEY_ERROR_INVALID_ARGUMENT, what + " is longer than 64 MiB");
        r->texts.emplace_back(texts[i] ? std::string(texts[i], lengths[i]) : std::string());
        r->text_lengths.push_back(lengths[i]);
      } else {
        if (!texts[i]) fail(PARLEY_ERROR_INVALID_ARGUMENT, what + " is NULL");
        r->texts.push_back(copy_cstr(texts[i]));
      }
    }
    for (const auto &t : r->texts) r->text_ptrs.push_back(t.c_str());
    if (options) {
      check_struct_size(options->struct_size, PARLEY_SIZE_THROUGH(parley_translation_options, attention_layer),
                        sizeof r->translation, "options");
      std::memcpy(&r->translation, options, options->struct_size);
      if (r->translation.source_language) {
        r->source_language = copy_cstr(r->translation.source_language);
        r->translation.source_language = r->source_language.c_str();
      }
      if (r->translation.target_language) {
        r->target_language = copy_cstr(r->translation.target_language);
        r->translation.target_language = r->target_language.c_str();
      }
      copy_generation(r->translation.generation, r->generation, "options->generation");
      r->translation.generation = r->generation.get();
      // The caller may free its pattern and glossary arrays once submit returns.
      auto copy_strings = [](const char *const *arr, size_t n, size_t max, const char *name,
                             std::vector<std::string> &store, std::vector<const char *> &ptrs) {
        if (n > max)
          fail(PARLEY_ERROR_INVALID_ARGUMENT,
               std::string("options->num_") + name + " is " + std::to_string(n) + ": at most " + std::to_string(max));
        if (n && !arr)
          fail(PARLEY_ERROR_INVALID_ARGUMENT,
               std::string("options->") + name + " is NULL but num_" + name + " is " + std::to_string(n));
        for (size_t i = 0; i < n; ++i) {
          if (!arr[i])
            fail(PARLEY_ERROR_INVALID_ARGUMENT,
                 std::string("options->") + name + "[" + std::to_string(i) + "] is NULL");
          store.push_back(copy_cstr(arr[i]));
        }
        for (const std::string &x : store) ptrs.push_back(x.c_str());
        return n ? ptrs.data() : nullptr;
      };
      r->translation.protect_patterns =
          copy_strings(r->translation.protect_patterns, r->translation.num_protect_patterns, kMaxProtectPatterns,
                       "protect_patterns", r->protect_patterns, r->protect_pattern_ptrs);
      r->translation.glossary = copy_strings(r->translation.glossary, r->translation.num_glossary, kMaxGlossaryTerms,
                                             "glossary", r->glossary, r->glossary_ptrs);
      r->has_translation_options = true;
    }
    r->work = [](parley_request &q) {
      const parley_translation_options *o = q.has_translation_options ? &q.translation : nullptr;
      if (q.with_lengths)
        return parley_translate_n(q.model, q.text_ptrs.data(), q.text_lengths.data(), q.text_ptrs.size(), o,
                                  &q.translation_result);
      return parley_translate(q.model, q.text_ptrs.data(), q.text_ptrs.size(), o, &q.translation_result);
    };
    start(std::move(r), request_options, out_request);
  });
}

PARLEY_API parley_status parley_request_wait(parley_request *request, int64_t timeout_ms) {
  return guarded(__func__, [&] {
    require(request, "request");
    if (t_worker_of == request)
      fail(PARLEY_ERROR_BUSY, "called from the request's own callback (it would wait for itself)");
    std::unique_lock<std::mutex> lock(request->mu);
    if (parley::Engine::on_engine_thread() && !request->done)
      fail(PARLEY_ERROR_BUSY,
           "called on a serving engine's thread (from a request's callback) for a request that has not finished: it "
           "could wait for a step of that thread; use parley_request_poll or the request's completion callback");
    auto is_done = [&] { return request->done; };
    if (timeout_ms < 0) {
      request->cv.wait(lock, is_done);
    } else if (!request->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), is_done)) {
      fail(PARLEY_ERROR_TIMEOUT,
           "the request is still running after " + std::to_string(timeout_ms) + " ms (the wait timed out; it goes on)");
    }
  });
}

PARLEY_API parley_status parley_request_poll(const parley_request *request, int32_t *out_done) {
  return guarded(__func__, [&] {
    require(request, "request");
    require(out_done, "out_done");
    std::lock_guard<std::mutex> lock(request->mu);
    *out_done = request->done ? 1 : 0;
  });
}

PARLEY_API parley_status parley_request_cancel(parley_request *request) {
  return guarded(__func__, [&] {
    require(request, "request");
    cancel_request(*request);
  });
}

PARLEY_API parley_status parley_request_status(const parley_request *request, int32_t *out_status,
                                               const char **out_message) {
  return guarded(__func__, [&] {
    require(request, "request");
    require(out_status, "out_status");
    std::lock_guard<std::mutex> lock(request->mu);
    *out_status = request->finished ? request->status : PARLEY_ERROR_BUSY;
    if (out_message) *out_message = request->finished ? request->message.c_str() : "";
  });
}

}  // extern "C"

namespace {
// Checks shared by the take functions; returns with the lock held.
std::unique_lock<std::mutex> finished_of_kind(parley_request *r, Kind kind, const void *out) {
  require(r, "request");
  require(out, "out");
  std::unique_lock<std::mutex> lock(r->mu);
  if (r->kind != kind)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         std::string("the request is ") + kind_name(r->kind) + ", not " + kind_name(kind));
  if (!r->finished) fail(PARLEY_ERROR_BUSY, "the request has not finished yet (parley_request_wait)");
  if (r->status != PARLEY_OK) fail(r->status, std::string("the request failed: ") + r->message);
  if (r->taken) fail(PARLEY_ERROR_NOT_FOUND, "the result was already taken from this request");
  return lock;
}
// The checks of the chat reply getters: a finished chat request that did not fail.
// `what` names the values, `result_getter` where a generation's are.
void check_reply_request(const parley_request *request, const char *what, const char *result_getter) {
  if (request->kind != Kind::kChat)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string("the request is ") + kind_name(request->kind) + ": its " + what +
                                            " are in its result (" + result_getter + ")");
  if (!request->finished) fail(PARLEY_ERROR_BUSY, "the request has not finished yet (parley_request_wait)");
  if (request->status != PARLEY_OK) fail(PARLEY_ERROR_NOT_FOUND, std::string("the turn failed: it has no ") + what);
}
}  // namespace

extern "C" {

PARLEY_API parley_status parley_request_take_reply(parley_request *request, char **out_reply) {
  return guarded(__func__, [&] {
    auto lock = finished_of_kind(request, Kind::kChat, out_reply);
    *out_reply = request->reply;
    request->reply = nullptr;
    request->taken = true;
  });
}

PARLEY_API parley_status parley_request_take_generation_result(parley_request *request,
                                                               parley_generation_result **out_result) {
  return guarded(__func__, [&] {
    require(request, "request");
    auto lock = finished_of_kind(
        request, request->kind == Kind::kTranslateTokens ? Kind::kTranslateTokens : Kind::kGenerate, out_result);
    *out_result = request->generation_result;
    request->generation_result = nullptr;
    request->taken = true;
  });
}

PARLEY_API parley_status parley_request_take_translation_result(parley_request *request,
                                                                parley_translation_result **out_result) {
  return guarded(__func__, [&] {
    auto lock = finished_of_kind(request, Kind::kTranslate, out_result);
    *out_result = request->translation_result;
    request->translation_result = nullptr;
    request->taken = true;
  });
}

PARLEY_API parley_status parley_request_reply_logprobs(const parley_request *request, const float **out_logprobs,
                                                       size_t *out_count) {
  return guarded(__func__, [&] {
    require(request, "request");
    require(out_logprobs, "out_logprobs");
    require(out_count, "out_count");
    std::lock_guard<std::mutex> lock(request->mu);
    check_reply_request(request, "log-probabilities", "parley_result_hypothesis_logprobs");
    if (!request->has_reply_logprobs)
      fail(PARLEY_ERROR_NOT_FOUND, "log-probabilities were not requested (request_options->return_logprobs)");
    *out_logprobs = request->reply_hypothesis.logprobs.data();
    *out_count = request->reply_hypothesis.logprobs.size();
  });
}

PARLEY_API parley_status parley_request_reply_tokens(const parley_request *request, const int32_t **out_tokens,
                                                     size_t *out_count) {
  return guarded(__func__, [&] {
    require(request, "request");
    require(out_tokens, "out_tokens");
    require(out_count, "out_count");
    std::lock_guard<std::mutex> lock(request->mu);
    check_reply_request(request, "tokens", "parley_result_hypothesis");
    if (!request->has_reply_logprobs && !request->has_reply_alternatives)
      fail(PARLEY_ERROR_NOT_FOUND,
           "the reply's tokens are kept only with request_options->return_logprobs or num_alternatives");
    *out_tokens = request->reply_hypothesis.tokens.data();
    *out_count = request->reply_hypothesis.tokens.size();
  });
}

PARLEY_API parley_status parley_request_reply_alternatives(const parley_request *request, const int32_t **out_ids,
                                                           const float **out_logprobs, size_t *out_steps,
                                                           size_t *out_k) {
  return guarded(__func__, [&] {
    require(request, "request");
    require(out_ids, "out_ids");
    require(out_logprobs, "out_logprobs");
    require(out_steps, "out_steps");
    require(out_k, "out_k");
    std::lock_guard<std::mutex> lock(request->mu);
    check_reply_request(request, "alternatives", "parley_result_hypothesis_alternatives");
    if (!request->has_reply_alternatives)
      fail(PARLEY_ERROR_NOT_FOUND, "alternatives were not requested (request_options->num_alternatives)");
    const parley::Hypothesis &h = request->reply_hypothesis;
    *out_ids = h.alternative_ids.data();
    *out_logprobs = h.alternative_logprobs.data();
    *out_k = static_cast<size_t>(h.alternatives);
    *out_steps = h.alternatives > 0 ? h.alternative_ids.size() / static_cast<size_t>(h.alternatives) : 0;
  });
}

PARLEY_API parley_status parley_request_reply_progress(const parley_request *request, parley_reply_progress *out) {
  return guarded(__func__, [&] {
    require(out, "out");
    parley::capi::check_struct_size(out->struct_size, sizeof(parley_reply_progress), sizeof *out, "out");
    const parley_request *r = request ? request : t_worker_of;
    // Only inside its callback: the worker waits there, so the turn's state holds still.
    if (!r || t_worker_of != r || !r->stream_progress.in_text)
      fail(PARLEY_ERROR_BUSY, std::string("not inside ") + (request ? "this request's" : "a request's") +
                                  " on_text callback: the reply's progress is read only there");
    if (r->kind != Kind::kChat)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string("the request is ") + kind_name(r->kind) + ", not a chat turn");
    const parley::ChatStreamProgress &p = r->stream_progress;
    parley_reply_progress o{};
    o.struct_size = sizeof o;
    if (const parley::Hypothesis *h = p.hypothesis) {
      o.tokens = std::min(p.tokens, h->tokens.size());
      o.token_ids = h->tokens.data();
      if (r->control.return_logprobs && h->logprobs.size() >= o.tokens) o.logprobs = h->logprobs.data();
      if (h->alternatives > 0 && h->alternative_ids.size() >= o.tokens * static_cast<size_t>(h->alternatives)) {
        o.alternatives = static_cast<size_t>(h->alternatives);
        o.alternative_ids = h->alternative_ids.data();
        o.alternative_logprobs = h->alternative_logprobs.data();
      }
    }
    parley::capi::copy_out(out, o);
  });
}

PARLEY_API void parley_request_free(parley_request *request) {
  if (!request) return;
  cancel_request(*request);  // no effect once finished
  if (t_worker_of == request) {
    // From one of its own callbacks: joining would wait for this very
    // thread. The worker frees the request once its completion callback
    // (if any) has returned.
    std::lock_guard<std::mutex> lock(request->mu);
    request->free_when_done = true;
    return;
  }
  if (parley::Engine::on_engine_thread()) {
    // From another request's callback: this request's callbacks may be
    // queued for this very thread, so they run here while it winds down
    // (its own only: no third request's callback runs inside the caller's).
    std::unique_lock<std::mutex> lock(request->mu);
    while (!request->done) {
      lock.unlock();
      parley::Engine::run_queued_calls_here(request);
      // Its coroutine, resumed by the engine but waiting for a pool thread
      // (they may all wait for this callback), goes on here: it was
      // cancelled, so it ends at its next step.
      if (ResumePool *pool = ResumePool::existing()) pool->run_here(request);
      lock.lock();
      request->cv.wait_for(lock, std::chrono::milliseconds(1), [&] { return request->done; });
    }
  }
  {
    std::unique_lock<std::mutex> lock(request->mu);
    request->cv.wait(lock, [&] { return request->released; });
  }
  delete request;
}

PARLEY_API parley_status parley_request_json(const parley_request *request, uint32_t flags, char **out_json,
                                             size_t *out_length) {
  return guarded(__func__, [&] {
    using parley::capi::Json;
    require(request, "request");
    require(out_json, "out_json");
    parley::capi::check_json_flags(flags);
    std::lock_guard<std::mutex> lock(request->mu);
    if (!request->finished) fail(PARLEY_ERROR_BUSY, "the request has not finished yet (parley_request_wait)");
    if (request->taken) fail(PARLEY_ERROR_NOT_FOUND, "the result was already taken from this request");
    static constexpr const char *kKinds[] = {"chat", "generation", "translation", "translate_tokens"};
    Json doc = {{"request", kKinds[static_cast<int>(request->kind)]},
                {"status", parley_status_name(request->status)},
                {"status_code", request->status},
                {"message", request->message},
                {"result", nullptr}};
    if (request->status == PARLEY_OK) {
      if (request->kind == Kind::kChat) {
        Json chat = {{"kind", "chat"}, {"reply", request->reply ? request->reply : ""}};
        if (request->has_reply_logprobs) {
          Json lp = Json::array();
          for (float x : request->reply_hypothesis.logprobs) lp.push_back(std::isfinite(x) ? Json(x) : Json(nullptr));
          chat["logprobs"] = std::move(lp);
        }
        doc["result"] = std::move(chat);
      } else if (request->kind == Kind::kTranslate) {
        doc["result"] = parley::capi::translation_json(*request->translation_result, flags);
      } else {
        doc["result"] = parley::capi::generation_json(*request->generation_result, flags);
      }
    }
    parley::capi::write_json(doc, out_json, out_length);
  });
}

}  // extern "C"
