#include "api.hpp"

#include <httplib.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <mutex>
#include <random>

#include "../core/context_advice.hpp"
#include "../core/escape.hpp"

namespace parley_http {

void bad_request(const std::string &message, const std::string &param, const std::string &code) {
  ApiError e;
  e.message = message;
  e.param = param;
  e.code = code;
  throw e;
}

json error_json(const ApiError &e) {
  json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return json{{"error", err}};
}

void send_json(httplib::Response &res, const json &body, int status) {
  res.status = status;
  // Invalid UTF-8 cannot reach here from Parley (its texts are valid UTF-8),
  // but a replacement character beats an exception if it ever did.
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response &res, const ApiError &e) {
  send_json(res, error_json(e), e.http_status);
}

namespace {

// Without the C API's own framing: the functions' names ("parley_translate_n:
// ...") and the request getters' "the request failed: "; an HTTP client
// called neither.
std::string without_function_name(std::string message) {
  static const std::string kFailed = "the request failed: ";
  for (size_t at = 0; (at = message.find("parley_", at)) != std::string::npos;) {
    size_t end = at + 7;
    while (end < message.size() && (std::islower(static_cast<unsigned char>(message[end])) || message[end] == '_'))
      ++end;
    if (message.compare(end, 2, ": ") == 0)
      message.erase(at, end + 2 - at);
    else
      at = end;
  }
  for (size_t at; (at = message.find(kFailed)) != std::string::npos;) message.erase(at, kFailed.size());
  return message;
}

// The request field a runtime message is about, where its wording names one
// (the option's C name, or what the runtime calls it); "" when none does.
std::string param_of(const std::string &message) {
  static const std::pair<const char *, const char *> kNames[] = {
      {"protect_patterns", "protect_patterns"},
      {"glossary", "glossary"},
      {"JSON schema", "response_format"},
      {"json_schema", "response_format"},
      {"grammar", "response_format"},
      {"logit_bias", "logit_bias"},
      {"stop string", "stop"},
      {"tools", "tools"},
      {"messages", "messages"},
      {"the conversation is", "messages"},   // past the model's positions
      {"the text is too long", "messages"},  // the rendered conversation, past the tokenizer's limit
      {"source_language", "source_language"},
      {"target_language", "target_language"},
  };
  if (message.rfind("prompt: ", 0) == 0) return "prompt";  // /v1/completions names its prompt's failures so
  size_t best = std::string::npos;
  const char *param = "";
  for (const auto &[word, name] : kNames) {
    const size_t at = message.find(word);
    if (at < best) best = at, param = name;
  }
  return param;
}

}  // namespace

void send_event_stream(const httplib::Request &req, httplib::Response &res,
                       std::function<bool(size_t, httplib::DataSink &)> provider) {
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  if (req.version == "HTTP/1.0")
    res.set_content_provider("text/event-stream", std::move(provider));
  else
    res.set_chunked_content_provider("text/event-stream", std::move(provider));
}

ApiError error_from_status(int32_t status, const std::string &message) {
  ApiError e;
  e.message = message.empty() ? parley_status_name(status) : without_function_name(message);
  e.code = parley_status_name(status);
  e.message = parley::with_context_option(std::move(e.message), "parley serve --context drop-oldest");
  if (status == PARLEY_ERROR_INVALID_ARGUMENT || status == PARLEY_ERROR_UNSUPPORTED || status == PARLEY_ERROR_NOT_FOUND)
    e.param = param_of(e.message);
  switch (status) {
    case PARLEY_ERROR_INVALID_ARGUMENT:
    case PARLEY_ERROR_UNSUPPORTED:
    case PARLEY_ERROR_NOT_FOUND:  // an unknown language code, a template that refuses the conversation
      e.http_status = 400;
      break;
    case PARLEY_ERROR_BUSY:
    case PARLEY_ERROR_OUT_OF_MEMORY:  // the KV budget refused it after admission_timeout_ms
      e.http_status = 503;
      e.type = "server_overloaded";
      break;
    case PARLEY_ERROR_CANCELLED:
      e.http_status = 503;
      e.type = "server_shutting_down";
      e.message = "the request was cancelled: the server is shutting down";
      break;
    case PARLEY_ERROR_TIMEOUT:
      e.http_status = 504;
      e.type = "timeout";
      break;
    default:
      e.http_status = 500;
      e.type = "server_error";
  }
  return e;
}

const json *field(const json &body, const char *name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

void check_known_fields(const json &body, std::initializer_list<const char *> known, const std::string &where) {
  for (auto it = body.begin(); it != body.end(); ++it) {
    bool ok = false;
    for (const char *k : known) ok = ok || it.key() == k;
    if (!ok)
      bad_request("Unrecognized request argument supplied: " + where + it.key(), where + it.key(), "unknown_parameter");
  }
}

static const char *type_name(const json &v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

std::optional<std::string> opt_string(const json &body, const char *name, const std::string &where) {
  const json *v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_string())
    bad_request(where + name + " must be a string, not " + type_name(*v), where + name, "invalid_type");
  return v->get<std::string>();
}

std::optional<double> opt_number(const json &body, const char *name, double lo, double hi) {
  const json *v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad_request(std::string(name) + " must be a number, not " + type_name(*v), name, "invalid_type");
  double d = v->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi)
    bad_request(
        std::string(name) + " must be between " + json(lo).dump() + " and " + json(hi).dump() + ", not " + v->dump(),
        name);
  return d;
}

std::optional<int64_t> opt_integer(const json &body, const char *name, int64_t lo, int64_t hi) {
  const json *v = field(body, name);
  if (!v) return std::nullopt;
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  // A whole number written as a float (1.0) is that number; one past int64
  // arrives as a float too, and is out of range rather than "no integer".
  if (v->is_number_float()) {
    const double d = v->get<double>();
    // +-2^63 and beyond: an integer past int64 (-2^63 - 1 rounds to -2^63
    // as a double), out of range whatever the limits.
    constexpr double kTwo63 = 9223372036854775808.0;
    if (std::isfinite(d) && d == std::floor(d) &&
        (d < static_cast<double>(lo) || d > static_cast<double>(hi) || d <= -kTwo63 || d >= kTwo63))
      bad_request(std::string(name) + " must be an integer in " + range + ", not " + v->dump(), name);
    if (!std::isfinite(d) || d != std::floor(d))
      bad_request(std::string(name) + " must be an integer, not " + v->dump(), name, "invalid_type");
    return static_cast<int64_t>(d);
  }
  if (!v->is_number_integer())
    bad_request(std::string(name) + " must be an integer, not " + type_name(*v), name, "invalid_type");
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    bad_request(std::string(name) + " must be an integer in " + range + ", not " + v->dump(), name);
  int64_t i = v->get<int64_t>();
  if (i < lo || i > hi)
    bad_request(std::string(name) + " must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", not " +
                    std::to_string(i),
                name);
  return i;
}

std::optional<bool> opt_bool(const json &body, const char *name) {
  const json *v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean())
    bad_request(std::string(name) + " must be a boolean, not " + type_name(*v), name, "invalid_type");
  return v->get<bool>();
}

bool opt_include_usage(const json &body) {
  const json *so = field(body, "stream_options");
  if (!so) return false;
  if (!so->is_object()) bad_request("stream_options must be an object", "stream_options", "invalid_type");
  check_known_fields(*so, {"include_usage"}, "stream_options.");
  try {
    return opt_bool(*so, "include_usage").value_or(false);
  } catch (ApiError &e) {
    e.message = "stream_options." + e.message;
    e.param = "stream_options." + e.param;
    throw;
  }
}

std::vector<std::string> read_stop(const json &body) {
  const json *v = field(body, "stop");
  std::vector<std::string> out;
  if (!v) return out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() > 4) bad_request("stop holds at most 4 strings, not " + std::to_string(v->size()), "stop");
    for (const auto &s : *v) {
      if (!s.is_string()) bad_request("stop must be a string or an array of strings", "stop", "invalid_type");
      out.push_back(s.get<std::string>());
    }
  } else {
    bad_request(std::string("stop must be a string or an array of strings, not ") + type_name(*v), "stop",
                "invalid_type");
  }
  for (const auto &s : out)
    if (s.empty()) bad_request("stop strings must not be empty", "stop");
  return out;
}

// Deeper documents are refused before anything walks them recursively
// (serialising tools or a schema for the runtime recurses once per level).
constexpr int kMaxJsonDepth = 64;

static bool too_deep(const json &v, int depth) {
  if (depth > kMaxJsonDepth) return true;
  if (v.is_structured())
    for (const auto &child : v)
      if (too_deep(child, depth + 1)) return true;
  return false;
}

bool nested_too_deep(const json &v) {
  return too_deep(v, 1);
}

// The path of the first string (value or key) in `v` that holds a NUL byte,
// or "". The runtime takes NUL-terminated strings in many places (stop
// strings, glossary terms, patterns, language codes, ids): such a string was
// silently cut at the NUL.
static std::string string_with_nul(const json &v, const std::string &path) {
  if (v.is_string()) return v.get_ref<const std::string &>().find('\0') != std::string::npos ? path : "";
  if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) {
      std::string at = string_with_nul(v[i], path + "[" + std::to_string(i) + "]");
      if (!at.empty()) return at;
    }
  } else if (v.is_object()) {
    for (const auto &[key, child] : v.items()) {
      const std::string here = path.empty() ? key : path + "." + key;
      if (key.find('\0') != std::string::npos) return here;
      std::string at = string_with_nul(child, here);
      if (!at.empty()) return at;
    }
  }
  return "";
}

json parse_body(const httplib::Request &req) {
  json body;
  try {
    body = json::parse(req.body);
  } catch (const json::exception &e) {  // parse_error, and out_of_range for a number past a double (1e999)
    std::string why = e.what();
    if (why.size() > 300) why = why.substr(0, 300) + "...";  // a 100,000-digit number is not echoed back
    bad_request("the request body is not valid JSON: " + why, "", "invalid_json");
  }
  if (!body.is_object()) bad_request("the request body must be a JSON object", "", "invalid_json");
  if (nested_too_deep(body))
    bad_request("the request body is nested deeper than " + std::to_string(kMaxJsonDepth) + " levels", "",
                "invalid_json");
  const std::string nul = string_with_nul(body, "");
  if (!nul.empty())
    bad_request(parley::escape_untrusted(nul, 200) + " holds a NUL character (\\u0000), which no field accepts",
                parley::escape_untrusted(nul, 200), "invalid_value");
  return body;
}

void TokenRate::add(uint64_t tokens) {
  double now = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  std::lock_guard<std::mutex> lock(mu_);
  events_.emplace_back(now, tokens);
  while (!events_.empty() && events_.front().first < now - 300) events_.pop_front();
}

double TokenRate::per_second(double window) {
  double now = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t sum = 0;
  for (auto it = events_.rbegin(); it != events_.rend() && it->first >= now - window; ++it) sum += it->second;
  return static_cast<double>(sum) / window;
}

LoadedModel &ServerState::find_model(const std::string &name) {
  for (auto &m : models)
    if (m->name == name) return *m;
  ApiError e;
  e.http_status = 404;
  e.message = "The model '" + name + "' does not exist (GET /v1/models lists the models this server holds)";
  e.param = "model";
  e.code = "model_not_found";
  throw e;
}

void ServerState::admit() {
  if (draining_) {
    ApiError e;
    e.http_status = 503;
    e.type = "server_shutting_down";
    e.message = "the server is shutting down";
    throw e;
  }
  size_t n = in_flight_.fetch_add(1) + 1;
  if (n > limits.max_concurrent) {
    release();
    rejected_overload++;
    ApiError e;
    e.http_status = 503;
    e.type = "server_overloaded";
    e.message = "the server is at its limit of " + std::to_string(limits.max_concurrent) +
                " requests in flight (--max-concurrent); retry later";
    throw e;
  }
}

void ServerState::release() {
  std::lock_guard<std::mutex> lock(mu_);
  in_flight_--;
  idle_cv_.notify_all();
}

void ServerState::track(parley_request *r) {
  std::lock_guard<std::mutex> lock(mu_);
  active_.insert(r);
  if (cancelling_) parley_request_cancel(r);
}

void ServerState::untrack(parley_request *r) {
  std::lock_guard<std::mutex> lock(mu_);
  active_.erase(r);
}

void ServerState::cancel_all() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelling_ = true;
  for (parley_request *r : active_) {
    parley_request_cancel(r);
    requests_cancelled++;
  }
}

bool ServerState::wait_idle(double seconds) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return in_flight_ == 0; });
}

void ServerState::count_response(const std::string &path, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  responses_[{path, status}]++;
}

std::map<std::pair<std::string, int>, uint64_t> ServerState::response_counts() {
  std::lock_guard<std::mutex> lock(mu_);
  return responses_;
}

int32_t TrackedRequest::wait(std::string *message) {
  while (parley_request_wait(r_, 500) == PARLEY_ERROR_TIMEOUT) {
  }
  int32_t st = PARLEY_OK;
  const char *msg = "";
  parley_request_status(r_, &st, &msg);
  if (message) *message = msg ? msg : "";
  return st;
}

Sampling read_sampling(const json &body, const ServeLimits &limits) {
  Sampling s;
  s.max_tokens = opt_integer(body, "max_tokens", 1, static_cast<int64_t>(limits.max_tokens));
  if (auto m = opt_integer(body, "max_completion_tokens", 1, static_cast<int64_t>(limits.max_tokens))) {
    if (s.max_tokens && *s.max_tokens != *m)
      bad_request("max_tokens and max_completion_tokens disagree", "max_completion_tokens");
    s.max_tokens = m;
  }
  s.temperature = opt_number(body, "temperature", 0.0, 2.0);
  s.top_p = opt_number(body, "top_p", 0.0, 1.0);
  s.seed = opt_integer(body, "seed", INT64_MIN, INT64_MAX);
  s.stop = read_stop(body);
  return s;
}

namespace {

uint64_t random_seed() {
  static std::mutex mu;  // std::random_device is not guaranteed thread-safe
  static std::random_device device;
  std::lock_guard<std::mutex> lock(mu);
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

}  // namespace

void apply_sampling(const Sampling &s, size_t default_max, size_t cap, parley_generation_options &g) {
  g.num_beams = 1;
  g.num_return_sequences = 1;
  size_t def = default_max;
  if (g.max_new_tokens > 0 && g.max_new_tokens < def) def = g.max_new_tokens;
  g.max_new_tokens = s.max_tokens ? static_cast<size_t>(*s.max_tokens) : std::min(def, cap);
  // temperature 0 (or top_p 0) is greedy decoding, as OpenAI documents it;
  // a positive temperature samples; absent keeps the model's defaults. A
  // value too small for the options' float (1e-320) is 0 there: greedy too.
  if (s.temperature) {
    if (static_cast<float>(*s.temperature) == 0.0f) {
      g.do_sample = 0;
    } else {
      g.do_sample = 1;
      g.temperature = static_cast<float>(*s.temperature);
    }
  }
  if (s.top_p) {
    if (static_cast<float>(*s.top_p) == 0.0f)
      g.do_sample = 0;
    else
      g.top_p = static_cast<float>(*s.top_p);
  }
  // Without a seed, sampling differs from request to request, as OpenAI's
  // does (the model's default seed gave every request the same "random" reply).
  g.seed = s.seed ? static_cast<uint64_t>(*s.seed) : random_seed();
}

void refuse_unsupported(const json &body) {
  // Accepted and not used, but what OpenAI documents it to be: a string.
  opt_string(body, "user");
  for (const char *p : {"presence_penalty", "frequency_penalty"})
    if (auto v = opt_number(body, p, -2.0, 2.0); v && *v != 0.0)
      bad_request(std::string(p) + " is not supported (only 0)", p, "unsupported_value");
}

size_t read_n(const json &body) {
  return static_cast<size_t>(opt_integer(body, "n", 1, kMaxChoices).value_or(1));
}

LogitBias read_logit_bias(const json &body, int64_t vocab_size) {
  LogitBias out;
  const json *lb = field(body, "logit_bias");
  if (!lb) return out;
  if (!lb->is_object())
    bad_request(std::string("logit_bias must be an object mapping token ids to biases, not ") + type_name(*lb),
                "logit_bias", "invalid_type");
  for (auto it = lb->begin(); it != lb->end(); ++it) {
    const std::string &key = it.key();
    // A token id in decimal, as OpenAI's clients send them ("15496").
    bool digits = !key.empty() && key.size() <= 10 && key.find_first_not_of("0123456789") == std::string::npos;
    int64_t id = digits ? std::stoll(key) : -1;
    if (!digits || id >= vocab_size)
      bad_request("logit_bias: the key '" + key + "' is not a token id of this model (a decimal integer in [0, " +
                      std::to_string(vocab_size) + "))",
                  "logit_bias", "invalid_value");
    if (!it.value().is_number())
      bad_request("logit_bias: the value of token " + key + " must be a number, not " + type_name(it.value()),
                  "logit_bias", "invalid_type");
    double v = it.value().get<double>();
    if (!std::isfinite(v) || v < -100.0 || v > 100.0)
      bad_request("logit_bias: the value of token " + key + " must be between -100 and 100, not " + it.value().dump(),
                  "logit_bias", "invalid_value");
    out.ids.push_back(static_cast<int32_t>(id));
    out.values.push_back(static_cast<float>(v));
  }
  return out;
}

void LogitBias::apply(parley_generation_options &g) const {
  g.logit_bias_ids = ids.empty() ? nullptr : ids.data();
  g.logit_bias_values = values.empty() ? nullptr : values.data();
  g.num_logit_bias = ids.size();
}

uint64_t choice_seed(uint64_t seed, size_t index) {
  return seed + index;
}

TokenText token_text(const parley_model *model, int32_t id) {
  TokenText t;
  char *out = nullptr;
  if (parley_detokenize(model, &id, 1, 0, &out) == PARLEY_OK && out) t.text = out;
  parley_string_free(out);
  t.bytes = json::array();
  for (unsigned char c : t.text) t.bytes.push_back(static_cast<int>(c));
  return t;
}

std::string new_id(const char *prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s-%012llx%06llx", prefix, static_cast<unsigned long long>(salt & 0xffffffffffffULL),
                static_cast<unsigned long long>(++counter));
  return buf;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace parley_http
