#include "napi_util.hpp"

#include <cmath>
#include <cstring>

namespace parley_node {

void type_error(napi_env env, const std::string &message) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message.c_str());
  throw Thrown{};
}

void range_error(napi_env env, const std::string &message) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", message.c_str());
  throw Thrown{};
}

napi_value parley_error(napi_env env, parley_status status, const std::string &message) {
  const char *name = parley_status_name(status);
  napi_value code = nullptr, msg = nullptr, err = nullptr, num = nullptr;
  napi_create_string_utf8(env, name ? name : "PARLEY_ERROR_UNKNOWN", NAPI_AUTO_LENGTH, &code);
  const std::string text = message.empty() ? std::string(name ? name : "parley error") : message;
  napi_create_string_utf8(env, text.c_str(), text.size(), &msg);
  napi_create_error(env, code, msg, &err);
  napi_create_int32(env, status, &num);
  napi_set_named_property(env, err, "status", num);
  return err;
}

void check(napi_env env, parley_status status) {
  if (status == PARLEY_OK) return;
  const char *m = parley_last_error();
  napi_throw(env, parley_error(env, status, m ? m : ""));
  throw Thrown{};
}

void ok_or_throw(napi_env env, napi_status status, const char *what) {
  if (status == napi_ok) return;
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_error(env, "ERR_PARLEY_NAPI", (std::string("Node-API call failed: ") + what).c_str());
  throw Thrown{};
}

std::vector<napi_value> args_of(napi_env env, napi_callback_info info, size_t max) {
  std::vector<napi_value> argv(max, nullptr);
  size_t argc = max;
  ok_or_throw(env, napi_get_cb_info(env, info, &argc, argv.data(), nullptr, nullptr), "napi_get_cb_info");
  for (size_t i = argc; i < max; ++i) argv[i] = undefined(env);
  return argv;
}

napi_valuetype type_of(napi_env env, napi_value v) {
  napi_valuetype t = napi_undefined;
  ok_or_throw(env, napi_typeof(env, v, &t), "napi_typeof");
  return t;
}

bool is_nullish(napi_env env, napi_value v) {
  const napi_valuetype t = type_of(env, v);
  return t == napi_undefined || t == napi_null;
}

std::string get_string(napi_env env, napi_value v, const std::string &what) {
  if (type_of(env, v) != napi_string) type_error(env, what + " must be a string");
  size_t n = 0;
  ok_or_throw(env, napi_get_value_string_utf8(env, v, nullptr, 0, &n), "napi_get_value_string_utf8");
  std::string s(n + 1, '\0');
  ok_or_throw(env, napi_get_value_string_utf8(env, v, s.data(), s.size(), &n), "napi_get_value_string_utf8");
  s.resize(n);  // may hold NUL bytes: the C API is called with lengths and refuses them itself
  return s;
}

bool get_bool(napi_env env, napi_value v, const std::string &what) {
  if (type_of(env, v) != napi_boolean) type_error(env, what + " must be a boolean");
  bool b = false;
  ok_or_throw(env, napi_get_value_bool(env, v, &b), "napi_get_value_bool");
  return b;
}

double get_number(napi_env env, napi_value v, const std::string &what) {
  if (type_of(env, v) != napi_number) type_error(env, what + " must be a number");
  double d = 0;
  ok_or_throw(env, napi_get_value_double(env, v, &d), "napi_get_value_double");
  if (!std::isfinite(d)) range_error(env, what + " must be finite");
  return d;
}

int64_t get_int(napi_env env, napi_value v, const std::string &what, int64_t lo, int64_t hi) {
  int64_t out = 0;
  if (type_of(env, v) == napi_bigint) {
    bool lossless = false;
    ok_or_throw(env, napi_get_value_bigint_int64(env, v, &out, &lossless), "napi_get_value_bigint_int64");
    if (!lossless) range_error(env, what + " is out of range");
  } else {
    if (type_of(env, v) != napi_number) type_error(env, what + " must be an integer");
    double d = 0;
    ok_or_throw(env, napi_get_value_double(env, v, &d), "napi_get_value_double");
    if (!std::isfinite(d) || std::floor(d) != d) type_error(env, what + " must be an integer");
    if (d < -9007199254740992.0 || d > 9007199254740992.0) range_error(env, what + " is out of range");
    out = static_cast<int64_t>(d);
  }
  if (out < lo || out > hi) {
    range_error(
        env, what + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(out));
  }
  return out;
}

uint64_t get_u64(napi_env env, napi_value v, const std::string &what) {
  if (type_of(env, v) == napi_bigint) {
    uint64_t out = 0;
    bool lossless = false;
    ok_or_throw(env, napi_get_value_bigint_uint64(env, v, &out, &lossless), "napi_get_value_bigint_uint64");
    if (!lossless) range_error(env, what + " is out of range");
    return out;
  }
  return static_cast<uint64_t>(get_int(env, v, what, 0, INT64_MAX));
}

napi_value make_string(napi_env env, const char *s, size_t n) {
  napi_value v = nullptr;
  ok_or_throw(env, napi_create_string_utf8(env, s ? s : "", s ? n : 0, &v), "napi_create_string_utf8");
  return v;
}
napi_value make_string(napi_env env, const std::string &s) {
  return make_string(env, s.data(), s.size());
}
napi_value make_int(napi_env env, int64_t v) {
  napi_value out = nullptr;
  ok_or_throw(env, napi_create_int64(env, v, &out), "napi_create_int64");
  return out;
}
napi_value make_bool(napi_env env, bool v) {
  napi_value out = nullptr;
  ok_or_throw(env, napi_get_boolean(env, v, &out), "napi_get_boolean");
  return out;
}
napi_value undefined(napi_env env) {
  napi_value out = nullptr;
  napi_get_undefined(env, &out);
  return out;
}

Options::Options(napi_env env, napi_value v, const std::string &what, std::initializer_list<const char *> allowed)
    : env_(env), what_(what) {
  if (v == nullptr || is_nullish(env, v)) return;
  bool is_array = false;
  ok_or_throw(env, napi_is_array(env, v, &is_array), "napi_is_array");
  if (type_of(env, v) != napi_object || is_array) type_error(env, what + " must be an object");
  obj_ = v;
  napi_value keys = nullptr;
  ok_or_throw(env, napi_get_property_names(env, v, &keys), "napi_get_property_names");
  uint32_t n = 0;
  ok_or_throw(env, napi_get_array_length(env, keys, &n), "napi_get_array_length");
  for (uint32_t i = 0; i < n; ++i) {
    napi_value k = nullptr;
    ok_or_throw(env, napi_get_element(env, keys, i, &k), "napi_get_element");
    if (type_of(env, k) != napi_string) continue;
    const std::string key = get_string(env, k, what + " key");
    bool known = false;
    for (const char *a : allowed) known = known || key == a;
    if (!known) type_error(env, what + ": unknown option '" + key + "'");
  }
}

std::optional<napi_value> Options::get(const char *key) const {
  if (obj_ == nullptr) return std::nullopt;
  napi_value v = nullptr;
  ok_or_throw(env_, napi_get_named_property(env_, obj_, key, &v), "napi_get_named_property");
  if (type_of(env_, v) == napi_undefined) return std::nullopt;
  return v;
}

// ------------------------------------------------------------- handles

const napi_type_tag *tag_of(HandleKind kind) {
  // Random 128-bit tags (one per kind): a handle is recognised by its tag,
  // not by its shape, so no JS object can pass for one.
  static const napi_type_tag tags[] = {
      {0x9a1c3e52d4f70b16ULL, 0x5e2b8c9f01a4d377ULL},  // runtime
      {0x3f84b2a7c6e1d950ULL, 0x8b17e4c20f9a6d31ULL},  // model
      {0xd26e0a9b4c13f785ULL, 0x1c5a7e93b28f4d06ULL},  // session
      {0x6b09f4e1a7d2c358ULL, 0xe4a31b7c5d0f9286ULL},  // request
  };
  return &tags[static_cast<uint32_t>(kind) - 1];
}

const char *kind_name(HandleKind kind) {
  switch (kind) {
    case HandleKind::runtime:
      return "runtime";
    case HandleKind::model:
      return "model";
    case HandleKind::session:
      return "chat session";
    case HandleKind::request:
      return "request";
  }
  return "handle";
}

static void finalize_box(napi_env, void *data, void *) {
  delete static_cast<HandleBase *>(data);
}

napi_value wrap_handle(napi_env env, HandleKind kind, HandleBase *box) {
  napi_value obj = nullptr;
  if (napi_create_object(env, &obj) != napi_ok || napi_wrap(env, obj, box, finalize_box, nullptr, nullptr) != napi_ok) {
    delete box;
    ok_or_throw(env, napi_generic_failure, "napi_wrap");
  }
  ok_or_throw(env, napi_type_tag_object(env, obj, tag_of(kind)), "napi_type_tag_object");
  return obj;
}

HandleBase *unwrap_handle(napi_env env, napi_value v, HandleKind kind, const std::string &what) {
  bool ok = false;
  if (type_of(env, v) == napi_object) ok_or_throw(env, napi_check_object_type_tag(env, v, tag_of(kind), &ok), "tag");
  if (!ok) type_error(env, what + " must be a parley " + kind_name(kind));
  void *p = nullptr;
  ok_or_throw(env, napi_unwrap(env, v, &p), "napi_unwrap");
  return static_cast<HandleBase *>(p);
}

}  // namespace parley_node
