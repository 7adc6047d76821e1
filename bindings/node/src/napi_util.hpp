// Small helpers over the Node-API C interface (js_native_api.h): errors as
// JS Error objects carrying the parley status, argument checks that throw
// TypeError instead of crashing, and typed handles (napi_type_tag_object, so
// that a model handle passed where a session is expected is refused).
#pragma once

#define NAPI_VERSION 8
#include <node_api.h>
#include <parley/parley.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

namespace parley_node {

// Set when a helper has thrown a JS exception: the caller returns nullptr
// to JS at once (the pending exception is what JS sees).
struct Thrown {};

// Throws (in JS) a TypeError with code ERR_INVALID_ARG_TYPE, then (in C++) Thrown.
[[noreturn]] void type_error(napi_env env, const std::string &message);
[[noreturn]] void range_error(napi_env env, const std::string &message);
// An Error whose .code is the status name (PARLEY_ERROR_...), .status the
// numeric code and message `message`.
napi_value parley_error(napi_env env, parley_status status, const std::string &message);
// Throws parley_error(status, parley_last_error()) unless status is PARLEY_OK.
void check(napi_env env, parley_status status);
// Throws (C++ Thrown) when a Node-API call failed; the pending JS exception,
// if any, stays pending, else an Error naming the call is thrown.
void ok_or_throw(napi_env env, napi_status status, const char *what);

// Runs f (which may throw Thrown) and returns its value, or nullptr with the
// JS exception pending.
template <typename F>
napi_value guarded(napi_env env, F &&f) {
  try {
    return f();
  } catch (const Thrown &) {
    return nullptr;
  } catch (const std::bad_alloc &) {
    napi_throw_error(env, "PARLEY_ERROR_OUT_OF_MEMORY", "out of memory in the parley Node addon");
    return nullptr;
  } catch (const std::exception &e) {  // no C++ exception may cross into Node
    napi_throw_error(env, "PARLEY_ERROR_INTERNAL", e.what());
    return nullptr;
  }
}

// The arguments of a call (missing ones are undefined).
std::vector<napi_value> args_of(napi_env env, napi_callback_info info, size_t max);

napi_valuetype type_of(napi_env env, napi_value v);
bool is_nullish(napi_env env, napi_value v);
std::string get_string(napi_env env, napi_value v, const std::string &what);
bool get_bool(napi_env env, napi_value v, const std::string &what);
// A number that is an integer in [lo, hi] (Number; a BigInt too for 64-bit values).
int64_t get_int(napi_env env, napi_value v, const std::string &what, int64_t lo, int64_t hi);
uint64_t get_u64(napi_env env, napi_value v, const std::string &what);
double get_number(napi_env env, napi_value v, const std::string &what);
napi_value make_string(napi_env env, const char *s, size_t n);
napi_value make_string(napi_env env, const std::string &s);
napi_value make_int(napi_env env, int64_t v);
napi_value make_bool(napi_env env, bool v);
napi_value undefined(napi_env env);

// An options object: undefined/null gives none; anything but a plain object
// is a TypeError; a key not in `allowed` is a TypeError naming it (a typo
// must not be ignored silently).
class Options {
 public:
  Options(napi_env env, napi_value v, const std::string &what, std::initializer_list<const char *> allowed);
  // The value of `key` unless absent or undefined.
  std::optional<napi_value> get(const char *key) const;
  std::string name(const char *key) const { return what_ + "." + key; }
  napi_env env() const { return env_; }

 private:
  napi_env env_;
  napi_value obj_ = nullptr;
  std::string what_;
};

// ------------------------------------------------------------- handles

enum class HandleKind : uint32_t { runtime = 1, model, session, request };

// What a JS handle object wraps: a shared owner of the native object (reset
// by close(); the finalizer deletes the box when the JS object is collected).
struct HandleBase {
  virtual ~HandleBase() = default;
};
template <typename T>
struct Box : HandleBase {
  std::shared_ptr<T> ptr;
  explicit Box(std::shared_ptr<T> p) : ptr(std::move(p)) {}
};

const napi_type_tag *tag_of(HandleKind kind);
const char *kind_name(HandleKind kind);

// A new JS object owning `box` (type-tagged with `kind`).
napi_value wrap_handle(napi_env env, HandleKind kind, HandleBase *box);
// The box of a handle of that kind; TypeError for anything else.
HandleBase *unwrap_handle(napi_env env, napi_value v, HandleKind kind, const std::string &what);

template <typename T>
napi_value wrap(napi_env env, HandleKind kind, std::shared_ptr<T> p) {
  auto *box = new Box<T>(std::move(p));
  return wrap_handle(env, kind, box);
}
// The live object of a handle; throws an Error (PARLEY_ERROR_INVALID_ARGUMENT,
// as the C API answers a NULL handle) when it was closed.
template <typename T>
std::shared_ptr<T> &unwrap_box(napi_env env, napi_value v, HandleKind kind, const std::string &what) {
  return static_cast<Box<T> *>(unwrap_handle(env, v, kind, what))->ptr;
}
template <typename T>
std::shared_ptr<T> unwrap(napi_env env, napi_value v, HandleKind kind, const std::string &what) {
  std::shared_ptr<T> &p = unwrap_box<T>(env, v, kind, what);
  if (!p) {
    napi_throw(env, parley_error(env, PARLEY_ERROR_INVALID_ARGUMENT, what + ": the " + kind_name(kind) + " is closed"));
    throw Thrown{};
  }
  return p;
}

// ------------------------------------------------------------- native objects

struct RuntimeHandle {
  parley_runtime *rt = nullptr;
  ~RuntimeHandle() { parley_runtime_free(rt); }
};
// Freed when its last owner lets go: the JS handle (close() or the
// finalizer), and each session and unfinished request of the model.
struct ModelHandle {
  parley_model *model = nullptr;
  ~ModelHandle() { parley_model_free(model); }
};
struct SessionHandle {
  parley_chat_session *session = nullptr;
  std::shared_ptr<ModelHandle> model;  // a session must not outlive its model
  ~SessionHandle() { parley_chat_session_free(session); }
};

}  // namespace parley_node
