/*
 * parley/parley.hpp — a thin, header-only C++17 wrapper of the C API in
 * parley/parley.h.
 *
 *  - Handles (Runtime, Model, TranslationResult, GenerationResult,
 *    ChatSession, Request) own one C handle each and free it in their
 *    destructor; they are move-only. A moved-from handle is empty (get() is
 *    nullptr); using it throws parley::Error with PARLEY_ERROR_INVALID_ARGUMENT,
 *    as the C API does for NULL.
 *  - Every failing call throws parley::Error, carrying the parley_status
 *    and parley_last_error()'s message of that call.
 *  - Text goes in as std::string_view (through the C API's `_n` functions,
 *    so no NUL terminator is needed and a NUL inside is refused, not cut).
 *  - Streaming callbacks are std::function. An exception thrown by a
 *    callback stops the call at that point (the callback returns "stop" to
 *    Parley) and is rethrown from the wrapper call once Parley has returned;
 *    it never crosses the C boundary.
 *  - Options are the C structs, filled by the *_options() helpers below (the
 *    header's inline _init functions, so struct_size is this header's).
 *  - Thread-safety is the C API's (parley.h): e.g. a Model may be shared by
 *    threads, ChatSession::cancel may be called from any thread.
 */
#ifndef PARLEY_PARLEY_HPP
#define PARLEY_PARLEY_HPP

#include <parley/parley.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#if defined(__GLIBCXX__)
#include <cxxabi.h>  // abi::__forced_unwind: a callback that ends its thread must unwind on
#endif
// Catching abi::__forced_unwind binds a reference to no object (a forced
// unwinding has none); GCC's UBSan reports that binding, harmlessly.
#if defined(__GLIBCXX__) && defined(__has_attribute)
#if __has_attribute(no_sanitize)
#define PARLEY_HPP_CATCHES_FORCED_UNWIND __attribute__((no_sanitize("null")))
#endif
#endif
#ifndef PARLEY_HPP_CATCHES_FORCED_UNWIND
#define PARLEY_HPP_CATCHES_FORCED_UNWIND
#endif

namespace parley {

/* A failed Parley call: its status and message. */
class Error : public std::runtime_error {
 public:
  Error(parley_status status, const std::string &message) : std::runtime_error(message), status_(status) {}
  parley_status status() const noexcept { return status_; }
  /* "PARLEY_ERROR_NOT_FOUND", ... */
  const char *status_name() const noexcept { return parley_status_name(status_); }

 private:
  parley_status status_;
};

/* Throws Error(status, parley_last_error()) unless status is PARLEY_OK. */
inline void check(parley_status status) {
  if (status != PARLEY_OK) throw Error(status, parley_last_error());
}

namespace detail {

/* A move-only owner of a C handle freed by Free. */
template <typename T, void (*Free)(T *)>
class Handle {
 public:
  Handle() noexcept = default;
  explicit Handle(T *owned) noexcept : p_(owned) {}
  Handle(Handle &&other) noexcept : p_(std::exchange(other.p_, nullptr)) {}
  Handle &operator=(Handle &&other) noexcept {
    if (this != &other) reset(std::exchange(other.p_, nullptr));
    return *this;
  }
  Handle(const Handle &) = delete;
  Handle &operator=(const Handle &) = delete;
  ~Handle() { reset(); }

  T *get() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }
  /* Gives up ownership (the caller frees it with the C function). */
  T *release() noexcept { return std::exchange(p_, nullptr); }
  void reset(T *p = nullptr) noexcept {
    if (p_) Free(p_);
    p_ = p;
  }

 private:
  T *p_ = nullptr;
};

/* Keeps the first exception a callback threw, to rethrow after the C call. */
struct CallbackState {
  std::exception_ptr error;
  void rethrow() {
    if (error) std::rethrow_exception(std::exchange(error, nullptr));
  }
};

inline std::string take_string(char *s) {
  std::string out = s ? std::string(s) : std::string();
  parley_string_free(s);
  return out;
}

inline std::string take_json(char *s, size_t length) {
  std::string out(s, length);
  parley_string_free(s);
  return out;
}

}  // namespace detail

/* ------------------------------------------------------------ options */

inline parley_runtime_options runtime_options() {
  parley_runtime_options o;
  check(parley_runtime_options_init(&o));
  return o;
}
inline parley_model_options model_options() {
  parley_model_options o;
  check(parley_model_options_init(&o));
  return o;
}
class Model;
/* The model's generation defaults (transformers' for a null model). */
inline parley_generation_options generation_options(const Model *model = nullptr);
inline parley_translation_options translation_options() {
  parley_translation_options o;
  check(parley_translation_options_init(&o));
  return o;
}
inline parley_chat_options chat_options() {
  parley_chat_options o;
  check(parley_chat_options_init(&o));
  return o;
}
inline parley_request_options request_options() {
  parley_request_options o;
  check(parley_request_options_init(&o));
  return o;
}

/* ------------------------------------------------------------ runtime */

class Runtime {
 public:
  Runtime() = default;
  /* parley_runtime_create; options may be null (defaults). */
  explicit Runtime(const parley_runtime_options *options) {
    parley_runtime *rt = nullptr;
    check(parley_runtime_create(options, &rt));
    h_.reset(rt);
  }
  static Runtime create(const parley_runtime_options *options = nullptr) { return Runtime(options); }

  parley_runtime *get() const noexcept { return h_.get(); }
  void load_plugin(const std::string &path) { check(parley_runtime_load_plugin(h_.get(), path.c_str())); }
  size_t plugin_count() const {
    size_t n = 0;
    check(parley_runtime_plugin_count(h_.get(), &n));
    return n;
  }

 private:
  detail::Handle<parley_runtime, parley_runtime_free> h_;
};

/* ------------------------------------------------------------ results */

/* A row-major [rows x cols] view of attention weights, owned by its result. */
struct Attention {
  const float *weights = nullptr;
  size_t rows = 0; /* target tokens */
  size_t cols = 0; /* source tokens */
  float at(size_t row, size_t col) const { return weights[row * cols + col]; }
};

class TranslationResult {
 public:
  TranslationResult() = default;
  explicit TranslationResult(parley_translation_result *owned) noexcept : h_(owned) {}
  parley_translation_result *get() const noexcept { return h_.get(); }

  size_t size() const {
    size_t n = 0;
    check(parley_translation_result_count(h_.get(), &n));
    return n;
  }
  size_t hypothesis_count(size_t text) const {
    size_t n = 0;
    check(parley_translation_result_hypothesis_count(h_.get(), text, &n));
    return n;
  }
  /* Valid while the result lives. */
  std::string_view text(size_t text, size_t hypothesis = 0) const {
    const char *t = nullptr;
    check(parley_translation_result_text(h_.get(), text, hypothesis, &t, nullptr));
    return t;
  }
  float score(size_t text, size_t hypothesis = 0) const {
    const char *t = nullptr;
    float s = 0.0f;
    check(parley_translation_result_text(h_.get(), text, hypothesis, &t, &s));
    return s;
  }
  std::vector<int32_t> source_tokens(size_t text) const {
    const int32_t *ids = nullptr;
    size_t n = 0;
    check(parley_translation_result_source_tokens(h_.get(), text, &ids, &n));
    return std::vector<int32_t>(ids, ids + n);
  }
  std::vector<int32_t> target_tokens(size_t text, size_t hypothesis = 0) const {
    const int32_t *ids = nullptr;
    size_t n = 0;
    check(parley_translation_result_target_tokens(h_.get(), text, hypothesis, &ids, &n));
    return std::vector<int32_t>(ids, ids + n);
  }
  /* Throws PARLEY_ERROR_NOT_FOUND when attention was not requested. */
  Attention attention(size_t text, size_t hypothesis = 0) const {
    Attention a;
    check(parley_translation_result_attention(h_.get(), text, hypothesis, &a.weights, &a.rows, &a.cols));
    return a;
  }
  /* per_text_errors: the text's status (PARLEY_OK when translated) and message. */
  std::pair<parley_status, std::string_view> error(size_t text) const {
    int32_t st = PARLEY_OK;
    const char *message = nullptr;
    check(parley_translation_result_error(h_.get(), text, &st, &message));
    return {st, message};
  }
  /* The whole result as JSON (docs/results_json.md); flags: parley_json_flags. */
  std::string json(uint32_t flags = 0) const {
    char *s = nullptr;
    size_t n = 0;
    check(parley_translation_result_json(h_.get(), flags, &s, &n));
    return detail::take_json(s, n);
  }

 private:
  detail::Handle<parley_translation_result, parley_translation_result_free> h_;
};

class GenerationResult {
 public:
  GenerationResult() = default;
  explicit GenerationResult(parley_generation_result *owned) noexcept : h_(owned) {}
  parley_generation_result *get() const noexcept { return h_.get(); }

  size_t size() const {
    size_t n = 0;
    check(parley_result_batch_size(h_.get(), &n));
    return n;
  }
  size_t hypothesis_count(size_t item) const {
    size_t n = 0;
    check(parley_result_hypothesis_count(h_.get(), item, &n));
    return n;
  }
  std::vector<int32_t> tokens(size_t item, size_t hypothesis = 0) const {
    const int32_t *ids = nullptr;
    size_t n = 0;
    check(parley_result_hypothesis(h_.get(), item, hypothesis, &ids, &n, nullptr));
    return std::vector<int32_t>(ids, ids + n);
  }
  float score(size_t item, size_t hypothesis = 0) const {
    const int32_t *ids = nullptr;
    size_t n = 0;
    float s = 0.0f;
    check(parley_result_hypothesis(h_.get(), item, hypothesis, &ids, &n, &s));
    return s;
  }
  /* Throws PARLEY_ERROR_NOT_FOUND when log-probabilities were not requested. */
  std::vector<float> logprobs(size_t item, size_t hypothesis = 0) const {
    const float *p = nullptr;
    size_t n = 0;
    check(parley_result_hypothesis_logprobs(h_.get(), item, hypothesis, &p, &n));
    return std::vector<float>(p, p + n);
  }
  std::string json(uint32_t flags = 0) const {
    char *s = nullptr;
    size_t n = 0;
    check(parley_result_json(h_.get(), flags, &s, &n));
    return detail::take_json(s, n);
  }

 private:
  detail::Handle<parley_generation_result, parley_result_free> h_;
};

/* ------------------------------------------------------------ model */

/* Translation streaming: (text index, hypothesis, text so far, final); return false to finish that hypothesis. */
using TranslationTextFn = std::function<bool(size_t, size_t, std::string_view, bool)>;
/* Chat streaming: each new piece of the reply; return false to end the reply there. */
using ChatTextFn = std::function<bool(std::string_view)>;

class Model {
 public:
  Model() = default;
  /* parley_model_load_file; options may be null (defaults). */
  static Model load(const Runtime &runtime, const std::string &path, const parley_model_options *options = nullptr) {
    parley_model *m = nullptr;
    check(parley_model_load_file(runtime.get(), path.c_str(), options, &m));
    return Model(m);
  }
  /* parley_model_load_memory (a copy unless options->borrow_memory). */
  static Model load_memory(const Runtime &runtime, const void *data, size_t size,
                           const parley_model_options *options = nullptr) {
    parley_model *m = nullptr;
    check(parley_model_load_memory(runtime.get(), data, size, options, &m));
    return Model(m);
  }
  parley_model *get() const noexcept { return h_.get(); }

  parley_model_info info() const {
    parley_model_info i{};
    i.struct_size = sizeof i;
    check(parley_model_get_info(h_.get(), &i));
    return i;
  }
  int64_t config_int(const std::string &key) const {
    int64_t v = 0;
    check(parley_model_config_int(h_.get(), key.c_str(), &v));
    return v;
  }
  void verify_tensor(const std::string &name) const { check(parley_model_verify_tensor(h_.get(), name.c_str())); }

  /* flags: parley_tokenize_flags; language may be null. */
  std::vector<int32_t> tokenize(std::string_view text, int32_t flags = PARLEY_TOKENIZE_ADD_SPECIAL,
                                const char *language = nullptr) const {
    size_t n = 0;
    check(parley_tokenize_n(h_.get(), text.data(), text.size(), flags, language, nullptr, 0, &n));
    std::vector<int32_t> ids(n);
    check(parley_tokenize_n(h_.get(), text.data(), text.size(), flags, language, ids.data(), ids.size(), &n));
    return ids;
  }
  std::string detokenize(const std::vector<int32_t> &ids, bool skip_special_tokens = true) const {
    char *s = nullptr;
    check(parley_detokenize(h_.get(), ids.data(), ids.size(), skip_special_tokens ? 1 : 0, &s));
    return detail::take_string(s);
  }

  /* parley_translate_n; options may be null (defaults). */
  TranslationResult translate(const std::vector<std::string_view> &texts,
                              const parley_translation_options *options = nullptr) const {
    std::vector<const char *> ptrs;
    std::vector<size_t> lengths;
    for (std::string_view t : texts) {
      ptrs.push_back(t.data());
      lengths.push_back(t.size());
    }
    parley_translation_result *r = nullptr;
    check(parley_translate_n(h_.get(), ptrs.data(), lengths.data(), texts.size(), options, &r));
    return TranslationResult(r);
  }
  /* Streaming translation: options' on_text / user_data are replaced by on_text. */
  TranslationResult translate(const std::vector<std::string_view> &texts, parley_translation_options options,
                              TranslationTextFn on_text) const {
    Stream<TranslationTextFn> s{std::move(on_text), {}};
    options.on_text = &translation_trampoline;
    options.user_data = &s;
    TranslationResult r;
    try {
      r = translate(texts, &options);
    } catch (...) {
      s.state.rethrow();  // the callback's exception explains the stop better than the call's status
      throw;
    }
    s.state.rethrow();
    return r;
  }

  /* parley_generate of token prompts (each non-empty); options may be null. */
  GenerationResult generate(const std::vector<std::vector<int32_t>> &prompts,
                            const parley_generation_options *options = nullptr) const {
    std::vector<const int32_t *> ptrs;
    std::vector<size_t> lengths;
    for (const auto &p : prompts) {
      ptrs.push_back(p.data());
      lengths.push_back(p.size());
    }
    parley_generation_result *r = nullptr;
    check(parley_generate(h_.get(), ptrs.data(), lengths.data(), prompts.size(), options, &r));
    return GenerationResult(r);
  }

 private:
  explicit Model(parley_model *owned) noexcept : h_(owned) {}

  template <typename Fn>
  struct Stream {
    Fn fn;
    detail::CallbackState state;
  };
  PARLEY_HPP_CATCHES_FORCED_UNWIND
  static int32_t translation_trampoline(void *user_data, size_t text, size_t hypothesis, const char *t, size_t length,
                                        int32_t is_final) {
    auto *s = static_cast<Stream<TranslationTextFn> *>(user_data);
    if (s->state.error) return 1;
    try {
      return s->fn(text, hypothesis, std::string_view(t, length), is_final != 0) ? 0 : 1;
#if defined(__GLIBCXX__)
    } catch (const abi::__forced_unwind &) {  // pthread_exit / pthread_cancel: swallowed, it aborts
      throw;
#endif
    } catch (...) {
      s->state.error = std::current_exception();
      return 1;
    }
  }

  detail::Handle<parley_model, parley_model_free> h_;
};

inline parley_generation_options generation_options(const Model *model) {
  parley_generation_options o;
  check(parley_generation_options_init(model ? model->get() : nullptr, &o));
  return o;
}

/* ------------------------------------------------------------ requests */

/* A request running in the background (parley_*_submit). Freeing it cancels and waits. */
class Request {
 public:
  Request() = default;
  explicit Request(parley_request *owned) noexcept : h_(owned) {}
  parley_request *get() const noexcept { return h_.get(); }

  /* true when done; false when timeout_ms passed first (< 0: wait for ever). */
  bool wait(int64_t timeout_ms = -1) {
    parley_status st = parley_request_wait(h_.get(), timeout_ms);
    if (st == PARLEY_ERROR_TIMEOUT) return false;
    check(st);
    return true;
  }
  bool done() const {
    int32_t d = 0;
    check(parley_request_poll(h_.get(), &d));
    return d != 0;
  }
  void cancel() { check(parley_request_cancel(h_.get())); }
  /* The request's own status (PARLEY_ERROR_BUSY while it runs) and message. */
  std::pair<parley_status, std::string> status() const {
    int32_t st = PARLEY_OK;
    const char *message = nullptr;
    check(parley_request_status(h_.get(), &st, &message));
    return {st, message ? message : ""};
  }
  /* The results: throw the request's own error when it failed. */
  std::string take_reply() {
    char *s = nullptr;
    check(parley_request_take_reply(h_.get(), &s));
    return detail::take_string(s);
  }
  TranslationResult take_translation() {
    parley_translation_result *r = nullptr;
    check(parley_request_take_translation_result(h_.get(), &r));
    return TranslationResult(r);
  }
  GenerationResult take_generation() {
    parley_generation_result *r = nullptr;
    check(parley_request_take_generation_result(h_.get(), &r));
    return GenerationResult(r);
  }
  std::string json(uint32_t flags = 0) const {
    char *s = nullptr;
    size_t n = 0;
    check(parley_request_json(h_.get(), flags, &s, &n));
    return detail::take_json(s, n);
  }

 private:
  detail::Handle<parley_request, parley_request_free> h_;
};

/* ------------------------------------------------------------ chat */

class ChatSession {
 public:
  ChatSession() = default;
  /* A session without a system message. */
  explicit ChatSession(const Model &model) {
    parley_chat_session *s = nullptr;
    check(parley_chat_session_create_n(model.get(), nullptr, 0, &s));
    h_.reset(s);
  }
  ChatSession(const Model &model, std::string_view system_prompt) {
    parley_chat_session *s = nullptr;
    // A non-null pointer even for "": an empty system message, not none.
    check(parley_chat_session_create_n(model.get(), system_prompt.data() ? system_prompt.data() : "",
                                       system_prompt.size(), &s));
    h_.reset(s);
  }
  parley_chat_session *get() const noexcept { return h_.get(); }

  /* role: parley_chat_role. */
  void append(int32_t role, std::string_view content) {
    check(parley_chat_append_n(h_.get(), role, content.data(), content.size()));
  }
  /* The reply, appended to the conversation; options may be null. */
  std::string generate(const parley_chat_options *options = nullptr) {
    char *s = nullptr;
    check(parley_chat_generate(h_.get(), options, &s));
    return detail::take_string(s);
  }
  /* Streaming: options' on_text / user_data are replaced by on_text. */
  std::string generate(ChatTextFn on_text, parley_chat_options options = chat_options()) {
    Stream s{std::move(on_text), {}};
    options.on_text = &trampoline;
    options.user_data = &s;
    char *reply = nullptr;
    parley_status st = parley_chat_generate(h_.get(), &options, &reply);
    std::string out = detail::take_string(reply);
    if (st != PARLEY_OK) {
      Error e(st, parley_last_error());
      s.state.rethrow();
      throw e;
    }
    s.state.rethrow();
    return out;
  }
  /* From any thread: the running generate stops with PARLEY_ERROR_CANCELLED. */
  void cancel() { check(parley_chat_cancel(h_.get())); }
  void reset() { check(parley_chat_reset(h_.get())); }
  void remove_last() { check(parley_chat_remove_last(h_.get())); }
  size_t message_count() const {
    size_t n = 0;
    check(parley_chat_message_count(h_.get(), &n));
    return n;
  }
  /* Role and content of message `index` (valid until the session changes). */
  std::pair<int32_t, std::string_view> message(size_t index) const {
    int32_t role = 0;
    const char *content = nullptr;
    check(parley_chat_message(h_.get(), index, &role, &content));
    return {role, content};
  }
  parley_chat_stats stats() const {
    parley_chat_stats st{};
    st.struct_size = sizeof st;
    check(parley_chat_stats_get(h_.get(), &st));
    return st;
  }
  /* parley_chat_submit: the turn runs on a worker thread; options and
   * request_options may be null (no streaming through this wrapper: a
   * std::function would have to outlive the request). */
  Request submit(const parley_chat_options *options = nullptr,
                 const parley_request_options *request_options = nullptr) {
    parley_request *r = nullptr;
    check(parley_chat_submit(h_.get(), options, request_options, &r));
    return Request(r);
  }

 private:
  struct Stream {
    ChatTextFn fn;
    detail::CallbackState state;
  };
  PARLEY_HPP_CATCHES_FORCED_UNWIND
  static int32_t trampoline(void *user_data, const char *text, size_t length) {
    auto *s = static_cast<Stream *>(user_data);
    if (s->state.error) return 1;
    try {
      return s->fn(std::string_view(text, length)) ? 0 : 1;
#if defined(__GLIBCXX__)
    } catch (const abi::__forced_unwind &) {  // pthread_exit / pthread_cancel: swallowed, it aborts
      throw;
#endif
    } catch (...) {
      s->state.error = std::current_exception();
      return 1;
    }
  }

  detail::Handle<parley_chat_session, parley_chat_session_free> h_;
};

/* parley_translate_submit of texts (copied at submission). */
inline Request translate_submit(const Model &model, const std::vector<std::string_view> &texts,
                                const parley_translation_options *options = nullptr,
                                const parley_request_options *request_options = nullptr) {
  std::vector<const char *> ptrs;
  std::vector<size_t> lengths;
  for (std::string_view t : texts) {
    ptrs.push_back(t.data());
    lengths.push_back(t.size());
  }
  parley_request *r = nullptr;
  check(parley_translate_submit(model.get(), ptrs.data(), lengths.data(), texts.size(), options, request_options, &r));
  return Request(r);
}

}  // namespace parley

#endif /* PARLEY_PARLEY_HPP */
