// Shared pieces of `parley serve`'s endpoints: OpenAI-shaped errors, typed
// field readers for request bodies, the loaded models, and the server's
// bookkeeping (admission, in-flight requests for shutdown, counters).
#pragma once

#include <parley/parley.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace httplib {
struct Request;
struct Response;
class DataSink;
}  // namespace httplib

namespace parley_http {

// Ordered: a JSON schema keeps its properties in the order the client wrote them
// (constrained output generates them in that order), and replies read naturally.
using json = nlohmann::ordered_json;

// An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int http_status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // "" -> null
  std::string code;   // "" -> null
};

// 400 invalid_request_error naming `param`.
[[noreturn]] void bad_request(const std::string &message, const std::string &param = "",
                              const std::string &code = "invalid_value");
json error_json(const ApiError &e);
void send_error(httplib::Response &res, const ApiError &e);
void send_json(httplib::Response &res, const json &body, int status = 200);
// A text/event-stream answer written by `provider` as its events come:
// chunked for HTTP/1.1, and for an HTTP/1.0 client (which knows no chunked
// encoding) a body that ends when the connection closes.
void send_event_stream(const httplib::Request &req, httplib::Response &res,
                       std::function<bool(size_t, httplib::DataSink &)> provider);
// The HTTP answer for a request that failed with parley status `status`.
ApiError error_from_status(int32_t status, const std::string &message);

// Typed access to a request body (a JSON object). Absent and null are the same.
const json *field(const json &body, const char *name);
// Refuse any member not in `known` (OpenAI: "Unrecognized request argument supplied").
void check_known_fields(const json &body, std::initializer_list<const char *> known, const std::string &where = "");
std::optional<std::string> opt_string(const json &body, const char *name, const std::string &where = "");
std::optional<double> opt_number(const json &body, const char *name, double lo, double hi);
std::optional<int64_t> opt_integer(const json &body, const char *name, int64_t lo, int64_t hi);
std::optional<bool> opt_bool(const json &body, const char *name);
// stream_options.include_usage (false when absent); errors name the nested field.
bool opt_include_usage(const json &body);
// `stop`: a string or an array of at most 4 non-empty strings.
std::vector<std::string> read_stop(const json &body);
// Parse the body as a JSON object (400 invalid_json naming the byte offset otherwise).
json parse_body(const httplib::Request &req);
// Whether a document nests deeper than parse_body accepts (64 levels): such
// a document is refused before anything copies or walks it recursively.
bool nested_too_deep(const json &v);

// A model the server holds (`--model name=path`).
struct LoadedModel {
  std::string name, path, architecture;
  parley_model *model = nullptr;
  bool decoder_only = false;
  bool chat = false;          // has a chat format (chat sessions can be created)
  int64_t vocab_size = 0;     // generated ids (logit_bias keys) are below this
  int64_t max_positions = 0;  // the decoder's positions (0: no limit): a reply that reaches them was cut
  // Whether a reply of `generated` tokens after `prompt` ones ended at a
  // limit (max_tokens or the positions) rather than by itself: "length".
  bool cut_by_length(uint64_t prompt, uint64_t generated, uint64_t max_new_tokens) const {
    return generated >= max_new_tokens ||
           (max_positions > 0 && prompt + generated >= static_cast<uint64_t>(max_positions));
  }
  int64_t created = 0;
  // Server-side counters (the engine keeps its own: parley_serving_stats).
  std::atomic<uint64_t> requests{0}, prompt_tokens{0}, completion_tokens{0};
};

struct ServeLimits {
  size_t max_body_bytes = 1 << 20;
  size_t max_tokens = 1024;        // most tokens one request may ask for
  size_t max_concurrent = 128;     // requests in flight before 503
  bool drop_oldest = false;        // a conversation past the model's positions loses its oldest turns
  size_t max_messages = 1024;      // chat messages per request
  size_t max_texts = 256;          // texts per translation request
  double grace_seconds = 10.0;     // shutdown: in-flight requests may finish this long
  int64_t request_timeout_ms = 0;  // 0: none (parley_request_options.deadline_ms)
};

// Per-request log of completed tokens for the tokens/s gauge.
class TokenRate {
 public:
  void add(uint64_t tokens);
  double per_second(double window_seconds);

 private:
  std::mutex mu_;
  std::deque<std::pair<double, uint64_t>> events_;
};

class ServerState {
 public:
  ServeLimits limits;
  std::vector<std::unique_ptr<LoadedModel>> models;
  TokenRate token_rate;
  std::atomic<uint64_t> rejected_overload{0}, requests_cancelled{0};
  std::atomic<uint64_t> client_disconnects{0};  // streams cancelled because the client went away

  // 404 model_not_found when no model has that name.
  LoadedModel &find_model(const std::string &name);

  // Admission: throws 503 when draining or at max_concurrent.
  void admit();
  void release();
  size_t in_flight() const { return in_flight_.load(); }
  bool draining() const { return draining_.load(); }
  void start_draining() { draining_ = true; }

  // Requests that shutdown may cancel. track() cancels at once after cancel_all().
  void track(parley_request *r);
  void untrack(parley_request *r);
  void cancel_all();
  bool cancelling() const { return cancelling_.load(); }
  // Wait until nothing is in flight or `seconds` passed; true when idle.
  bool wait_idle(double seconds);

  void count_response(const std::string &path, int status);
  std::map<std::pair<std::string, int>, uint64_t> response_counts();

 private:
  std::atomic<size_t> in_flight_{0};
  std::atomic<bool> draining_{false}, cancelling_{false};
  std::mutex mu_;
  std::condition_variable idle_cv_;
  std::set<parley_request *> active_;
  std::map<std::pair<std::string, int>, uint64_t> responses_;
};

// An admitted request: releases its slot when it goes out of scope.
class Admission {
 public:
  explicit Admission(ServerState &s) : s_(&s) { s.admit(); }
  ~Admission() {
    if (s_) s_->release();
  }
  Admission(Admission &&o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  Admission(const Admission &) = delete;
  Admission &operator=(const Admission &) = delete;

 private:
  ServerState *s_;
};

// A submitted request, tracked for shutdown; freed (cancelled and waited
// for if unfinished) when it goes out of scope.
class TrackedRequest {
 public:
  TrackedRequest(ServerState &s, parley_request *r) : s_(s), r_(r) { s.track(r); }
  ~TrackedRequest() {
    s_.untrack(r_);
    parley_request_free(r_);
  }
  TrackedRequest(const TrackedRequest &) = delete;
  TrackedRequest &operator=(const TrackedRequest &) = delete;
  parley_request *get() const { return r_; }
  // Wait for the end; returns the request's status and message.
  int32_t wait(std::string *message);

 private:
  ServerState &s_;
  parley_request *r_;
};

// Sampling settings shared by chat and text completions.
struct Sampling {
  std::optional<int64_t> max_tokens;
  std::optional<double> temperature, top_p;
  std::optional<int64_t> seed;
  std::vector<std::string> stop;
};
Sampling read_sampling(const json &body, const ServeLimits &limits);
// Fill `g` (already initialised from the model) from `s`; default_max when max_tokens is absent.
void apply_sampling(const Sampling &s, size_t default_max, size_t cap, parley_generation_options &g);
// Penalties absent or neutral.
void refuse_unsupported(const json &body);

// The most choices one request may ask for (`n`).
constexpr int64_t kMaxChoices = 8;
// The most alternatives per token a request may ask for (OpenAI's limit for top_logprobs).
constexpr int64_t kMaxTopLogprobs = 20;
// `n`: 1 when absent; 400 naming n outside [1, kMaxChoices].
size_t read_n(const json &body);
// `logit_bias`: {"token id": bias in [-100, 100]}; 400 naming the bad key.
struct LogitBias {
  std::vector<int32_t> ids;
  std::vector<float> values;
  // Point `g`'s logit_bias fields at these arrays (which must outlive its use).
  void apply(parley_generation_options &g) const;
};
LogitBias read_logit_bias(const json &body, int64_t vocab_size);
// Seeds of choice i of n: the request's seed plus i, so that sampled choices differ.
uint64_t choice_seed(uint64_t seed, size_t index);

// The text of token `id` alone (special tokens kept) and its UTF-8 bytes, as
// OpenAI's logprobs name tokens.
struct TokenText {
  std::string text;
  json bytes;  // array of byte values
};
TokenText token_text(const parley_model *model, int32_t id);

std::string new_id(const char *prefix);
int64_t unix_now();

}  // namespace parley_http
