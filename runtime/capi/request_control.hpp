// What a parley_request's worker thread hands to the blocking call it runs
// (request_api.cpp): its cancel flag, deadline and log-probability wish. The
// blocking entry points take it from a thread-local once, at the point where
// they build their DecodingOptions, so a blocking call made later from a
// streaming callback on the same thread does not inherit it.
#pragma once

#include <parley/parley.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <optional>
#include <vector>

#include "engine/chat_session.hpp"
#include "engine/decoding.hpp"

namespace parley::capi {

struct RequestControl {
  const std::atomic<bool> *cancel = nullptr;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  bool return_logprobs = false;
  int64_t num_alternatives = 0;  // chat only (request_options->num_alternatives)
  // chat: where the reply's hypothesis goes (tokens, log-probabilities,
  // alternatives) when return_logprobs or num_alternatives asked for them.
  Hypothesis *reply = nullptr;
  // chat: what the streamed text covers, while the host's on_text runs.
  ChatStreamProgress *progress = nullptr;
  // Where the call goes on after waiting for the serving engine without a
  // thread (its *_task form, run by the request); NULL: it blocks.
  Resumer *resumer = nullptr;
};

// Set (and cleared with nullptr) by a request's worker around its call.
void set_request_control(const RequestControl *control);
// The calling thread's request control, handed out once (nullptr when none).
const RequestControl *take_request_control();
// Copies the control's cancel flag, deadline and (when with_logprobs) wish into d.
inline void apply_request_control(const RequestControl *c, DecodingOptions &d, bool with_logprobs) {
  if (!c) return;
  d.cancel = c->cancel;
  d.deadline = c->deadline;
  if (with_logprobs) d.return_logprobs = d.return_logprobs || c->return_logprobs;
}

// text_api.cpp: a request holds its chat session (busy flag) from submission
// to the end of its turn. acquire throws Error(BUSY) when it is in use.
void chat_session_acquire(parley_chat_session *session);
void chat_session_release(parley_chat_session *session);
const parley_model *chat_session_model(const parley_chat_session *session);

// A reference to a model (parley_model::refs). The last release deletes it,
// on a thread of its own when called on a serving engine's thread (the
// model's engine joins that thread when it goes). NULL: no-op.
void retain(const parley_model *model) noexcept;
void release(const parley_model *model) noexcept;

// One reference, dropped when this goes: declared first in its struct, so
// that it goes after everything else there that uses the model.
class ModelRef {
 public:
  ModelRef() = default;
  ~ModelRef() { release(model_); }
  ModelRef(const ModelRef &) = delete;
  ModelRef &operator=(const ModelRef &) = delete;
  void hold(const parley_model *model) noexcept {
    retain(model);
    release(model_);
    model_ = model;
  }

 private:
  const parley_model *model_ = nullptr;
};
// parley_chat_generate for a caller that holds the session.
parley_status chat_generate_held(parley_chat_session *session, const parley_chat_options *options, char **out_reply);
// The same as a coroutine (throwing what parley_chat_generate reports), and
// parley_generate's: with the request control's resumer they hold no thread
// while the serving engine runs them. Arguments must outlive them.
Task<void> chat_generate_task(parley_chat_session *session, const parley_chat_options *options, char **out_reply);
Task<void> generate_task(const parley_model *model, const int32_t *const *prompts, const size_t *prompt_lengths,
                         size_t batch_size, const parley_generation_options *options,
                         parley_generation_result **out_result);
// The status (and thread's last error, "function: message") that the C
// boundary reports for an exception (capi/api_guard.hpp).
parley_status status_of(const char *function, std::exception_ptr error);

}  // namespace parley::capi
