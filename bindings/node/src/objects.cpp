// Runtimes, models and chat sessions: creation, the quick synchronous calls,
// close(), and model loading on the libuv thread pool (napi_async_work), so
// that reading and checking a model file never blocks the JS thread.
#include <cstring>

#include "addon.hpp"
#include "options.hpp"

namespace parley_node {

namespace {

napi_value runtime_create(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 1);
    const Options opts(env, argv[0], "options", {"numThreads", "pluginDirs", "pluginSources", "minSeverity"});
    parley_runtime_options o{};
    check(env, (parley_runtime_options_init)(&o));
    std::vector<std::string> dirs;
    std::vector<const char *> ptrs;
    if (auto v = opts.get("numThreads"))
      o.num_threads = static_cast<int32_t>(get_int(env, *v, opts.name("numThreads"), 0, 1024));
    if (auto v = opts.get("pluginSources")) {
      o.plugin_sources = static_cast<uint32_t>(get_int(env, *v, opts.name("pluginSources"), 0, UINT32_MAX));
    }
    if (auto v = opts.get("minSeverity"))
      o.min_severity = static_cast<int32_t>(get_int(env, *v, opts.name("minSeverity"), 0, 3));
    if (auto v = opts.get("pluginDirs")) {
      dirs = get_strings(env, *v, opts.name("pluginDirs"));
      for (const std::string &d : dirs) {
        if (std::memchr(d.data(), 0, d.size())) type_error(env, opts.name("pluginDirs") + " holds a NUL byte");
        ptrs.push_back(d.c_str());
      }
      o.plugin_dirs = ptrs.data();
      o.num_plugin_dirs = ptrs.size();
    }
    auto h = std::make_shared<RuntimeHandle>();
    check(env, parley_runtime_create(&o, &h->rt));
    return wrap(env, HandleKind::runtime, std::move(h));
  });
}

// A path for the C API: a JS string without NUL bytes (which would cut it).
std::string get_path(napi_env env, napi_value v, const std::string &what) {
  std::string s = get_string(env, v, what);
  if (std::memchr(s.data(), 0, s.size())) type_error(env, what + " holds a NUL byte");
  return s;
}

// A function (handle, name) -> undefined: `call(handle, name)` gives the
// parley_status; `name` is a string without NUL bytes (get_path).
template <typename Handle, typename Call>
napi_value with_handle_and_name(napi_env env, napi_callback_info info, HandleKind kind, const char *handle_what,
                                const char *name_what, Call call) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 2);
    auto h = unwrap<Handle>(env, argv[0], kind, handle_what);
    const std::string name = get_path(env, argv[1], name_what);
    check(env, call(h, name.c_str()));
    return undefined(env);
  });
}

napi_value runtime_load_plugin(napi_env env, napi_callback_info info) {
  return with_handle_and_name<RuntimeHandle>(
      env, info, HandleKind::runtime, "runtime", "path",
      [](const auto &rt, const char *path) { return parley_runtime_load_plugin(rt->rt, path); });
}

// Releases the JS object's share: the native object is freed once nothing
// else (a session, a running request) holds it. Closing twice is harmless.
template <typename T>
napi_value close_handle(napi_env env, napi_callback_info info, HandleKind kind) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 1);
    unwrap_box<T>(env, argv[0], kind, kind_name(kind)).reset();
    return undefined(env);
  });
}
napi_value runtime_close(napi_env env, napi_callback_info info) {
  return close_handle<RuntimeHandle>(env, info, HandleKind::runtime);
}
napi_value model_close(napi_env env, napi_callback_info info) {
  return close_handle<ModelHandle>(env, info, HandleKind::model);
}
napi_value session_close(napi_env env, napi_callback_info info) {
  return close_handle<SessionHandle>(env, info, HandleKind::session);
}

// ------------------------------------------------------------- model loading

struct LoadWork {
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  std::shared_ptr<RuntimeHandle> rt;
  std::unique_ptr<ModelOptions> options;
  std::string path;
  std::vector<char> bytes;  // a model given as bytes
  bool from_memory = false;
  parley_model *model = nullptr;
  parley_status status = PARLEY_OK;
  std::string message;  // parley_last_error() of the worker thread
};

void load_execute(napi_env, void *p) {
  auto *w = static_cast<LoadWork *>(p);
  // An empty buffer is passed on too: the C API names the problem.
  static const char empty = 0;
  const void *data = w->bytes.empty() ? &empty : w->bytes.data();
  w->status = w->from_memory ? parley_model_load_memory(w->rt->rt, data, w->bytes.size(), &w->options->o, &w->model)
                             : parley_model_load_file(w->rt->rt, w->path.c_str(), &w->options->o, &w->model);
  std::vector<char>().swap(w->bytes);  // the model holds its own copy
  if (w->status != PARLEY_OK) w->message = parley_last_error();
}

void load_complete(napi_env env, napi_status status, void *p) {
  std::unique_ptr<LoadWork> w(static_cast<LoadWork *>(p));
  auto h = std::make_shared<ModelHandle>();
  h->model = w->model;  // owned from here on, whatever happens next
  napi_delete_async_work(env, w->work);
  if (status != napi_ok) return;  // the environment is going away
  napi_value result = nullptr;
  if (w->status != PARLEY_OK) {
    napi_reject_deferred(env, w->deferred, parley_error(env, w->status, w->message));
    return;
  }
  guarded(env, [&] {
    result = wrap(env, HandleKind::model, h);
    return result;
  });
  if (result) {
    napi_resolve_deferred(env, w->deferred, result);
  } else {
    napi_value e = nullptr;
    napi_get_and_clear_last_exception(env, &e);
    napi_reject_deferred(env, w->deferred, e);
  }
}

// load(runtime, pathOrBuffer, options) -> Promise<model handle>
napi_value model_load(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 3);
    auto w = std::make_unique<LoadWork>();
    w->rt = unwrap<RuntimeHandle>(env, argv[0], HandleKind::runtime, "runtime");
    bool is_buffer = false, is_typed = false;
    ok_or_throw(env, napi_is_buffer(env, argv[1], &is_buffer), "napi_is_buffer");
    ok_or_throw(env, napi_is_typedarray(env, argv[1], &is_typed), "napi_is_typedarray");
    if (is_buffer || is_typed) {
      void *data = nullptr;
      size_t size = 0;
      if (is_typed) {
        napi_typedarray_type t{};
        size_t n = 0;
        ok_or_throw(env, napi_get_typedarray_info(env, argv[1], &t, &n, &data, nullptr, nullptr), "typedarray");
        if (t != napi_uint8_array) type_error(env, "source must be a path, a Buffer or a Uint8Array");
        size = n;
      } else {
        ok_or_throw(env, napi_get_buffer_info(env, argv[1], &data, &size), "napi_get_buffer_info");
      }
      // Copied here, on the JS thread: the load runs on another thread, and
      // JS could change or detach the buffer meanwhile. (The C API copies
      // once more: borrow_memory needs 64-byte alignment and a buffer that
      // outlives the model, which a JS buffer cannot promise.)
      const char *bytes = static_cast<const char *>(data);
      w->bytes.assign(bytes, bytes + size);
      w->from_memory = true;
    } else if (type_of(env, argv[1]) == napi_string) {
      w->path = get_path(env, argv[1], "path");
    } else {
      type_error(env, "source must be a path, a Buffer or a Uint8Array");
    }
    w->options = std::make_unique<ModelOptions>(env, argv[2]);
    napi_value promise = nullptr, name = make_string(env, "parley.loadModel");
    ok_or_throw(env, napi_create_promise(env, &w->deferred, &promise), "napi_create_promise");
    ok_or_throw(env, napi_create_async_work(env, nullptr, name, load_execute, load_complete, w.get(), &w->work),
                "napi_create_async_work");
    if (napi_queue_async_work(env, w->work) != napi_ok) {
      napi_delete_async_work(env, w->work);
      ok_or_throw(env, napi_generic_failure, "napi_queue_async_work");
    }
    w.release();  // load_complete owns it
    return promise;
  });
}

// ------------------------------------------------------------- model queries

napi_value model_info(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 1);
    auto m = unwrap<ModelHandle>(env, argv[0], HandleKind::model, "model");
    parley_model_info mi{};
    mi.struct_size = sizeof mi;
    check(env, parley_model_get_info(m->model, &mi));
    napi_value o = nullptr;
    ok_or_throw(env, napi_create_object(env, &o), "napi_create_object");
    auto set = [&](const char *k, napi_value v) { ok_or_throw(env, napi_set_named_property(env, o, k, v), k); };
    set("architecture", make_string(env, std::string(mi.architecture ? mi.architecture : "")));
    set("kind", make_string(env, mi.kind == PARLEY_MODEL_ENCODER_DECODER ? "encoder-decoder" : "decoder-only"));
    set("formatVersion", make_string(env, std::to_string(mi.format_major) + "." + std::to_string(mi.format_minor)));
    set("vocabSize", make_int(env, mi.vocab_size));
    set("numTensors", make_int(env, static_cast<int64_t>(mi.num_tensors)));
    set("numTokenizers", make_int(env, static_cast<int64_t>(mi.num_tokenizers)));
    set("hasChatTemplate", make_bool(env, mi.has_chat_template != 0));
    set("fileSize", make_int(env, static_cast<int64_t>(mi.file_size)));
    set("weightsSize", make_int(env, static_cast<int64_t>(mi.weights_size)));
    set("device", make_string(env, std::string(mi.device ? mi.device : "")));
    return o;
  });
}

// tokenize(model, text, flags) -> Int32Array
napi_value model_tokenize(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 3);
    auto m = unwrap<ModelHandle>(env, argv[0], HandleKind::model, "model");
    const std::string text = get_string(env, argv[1], "text");
    const int32_t flags = is_nullish(env, argv[2]) ? PARLEY_TOKENIZE_ADD_SPECIAL
                                                   : static_cast<int32_t>(get_int(env, argv[2], "flags", 0, INT32_MAX));
    size_t n = 0;
    check(env, parley_tokenize_n(m->model, text.data(), text.size(), flags, nullptr, nullptr, 0, &n));
    napi_value buf = nullptr, arr = nullptr;
    void *data = nullptr;
    ok_or_throw(env, napi_create_arraybuffer(env, n * sizeof(int32_t), &data, &buf), "napi_create_arraybuffer");
    check(env,
          parley_tokenize_n(m->model, text.data(), text.size(), flags, nullptr, static_cast<int32_t *>(data), n, &n));
    ok_or_throw(env, napi_create_typedarray(env, napi_int32_array, n, buf, 0, &arr), "napi_create_typedarray");
    return arr;
  });
}

// detokenize(model, ids, skipSpecial) -> string
napi_value model_detokenize(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 3);
    auto m = unwrap<ModelHandle>(env, argv[0], HandleKind::model, "model");
    const std::vector<int32_t> ids = get_ids(env, argv[1], "ids");
    const bool skip = is_nullish(env, argv[2]) ? true : get_bool(env, argv[2], "skipSpecialTokens");
    char *s = nullptr;
    check(env, parley_detokenize(m->model, ids.data(), ids.size(), skip ? 1 : 0, &s));
    napi_value out = make_string(env, s, std::strlen(s));
    parley_string_free(s);
    return out;
  });
}

napi_value model_verify_tensor(napi_env env, napi_callback_info info) {
  return with_handle_and_name<ModelHandle>(
      env, info, HandleKind::model, "model", "name",
      [](const auto &m, const char *name) { return parley_model_verify_tensor(m->model, name); });
}

// ------------------------------------------------------------- chat sessions

// chatCreate(model, systemPrompt | null) -> session handle
napi_value session_create(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 2);
    auto m = unwrap<ModelHandle>(env, argv[0], HandleKind::model, "model");
    auto h = std::make_shared<SessionHandle>();
    h->model = m;
    if (is_nullish(env, argv[1])) {
      check(env, parley_chat_session_create(m->model, nullptr, &h->session));
    } else {
      const std::string system = get_string(env, argv[1], "systemPrompt");
      check(env, parley_chat_session_create_n(m->model, system.data(), system.size(), &h->session));
    }
    return wrap(env, HandleKind::session, std::move(h));
  });
}

int32_t get_role(napi_env env, napi_value v) {
  if (type_of(env, v) == napi_string) {
    const std::string r = get_string(env, v, "role");
    if (r == "system") return PARLEY_ROLE_SYSTEM;
    if (r == "user") return PARLEY_ROLE_USER;
    if (r == "assistant") return PARLEY_ROLE_ASSISTANT;
    if (r == "tool") return PARLEY_ROLE_TOOL;
    type_error(env, "role must be \"system\", \"user\", \"assistant\" or \"tool\"");
  }
  // A number is passed on as is: the C API refuses unknown roles itself.
  return static_cast<int32_t>(get_int(env, v, "role", INT32_MIN, INT32_MAX));
}

const char *role_name(int32_t role) {
  switch (role) {
    case PARLEY_ROLE_SYSTEM:
      return "system";
    case PARLEY_ROLE_USER:
      return "user";
    case PARLEY_ROLE_ASSISTANT:
      return "assistant";
    case PARLEY_ROLE_TOOL:
      return "tool";
  }
  return "unknown";
}

napi_value session_append(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 3);
    auto s = unwrap<SessionHandle>(env, argv[0], HandleKind::session, "session");
    const int32_t role = get_role(env, argv[1]);
    const std::string content = get_string(env, argv[2], "content");
    check(env, parley_chat_append_n(s->session, role, content.data(), content.size()));
    return undefined(env);
  });
}

napi_value session_message_count(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 1);
    auto s = unwrap<SessionHandle>(env, argv[0], HandleKind::session, "session");
    size_t n = 0;
    check(env, parley_chat_message_count(s->session, &n));
    return make_int(env, static_cast<int64_t>(n));
  });
}

// message(session, index) -> {role, content}
napi_value session_message(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 2);
    auto s = unwrap<SessionHandle>(env, argv[0], HandleKind::session, "session");
    const size_t index = static_cast<size_t>(get_int(env, argv[1], "index", 0, INT64_MAX));
    int32_t role = 0;
    const char *content = nullptr;
    check(env, parley_chat_message(s->session, index, &role, &content));
    napi_value o = nullptr;
    ok_or_throw(env, napi_create_object(env, &o), "napi_create_object");
    ok_or_throw(env, napi_set_named_property(env, o, "role", make_string(env, std::string(role_name(role)))), "role");
    ok_or_throw(env, napi_set_named_property(env, o, "content", make_string(env, content, std::strlen(content))),
                "content");
    return o;
  });
}

template <parley_status (*F)(parley_chat_session *)>
napi_value session_call(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 1);
    auto s = unwrap<SessionHandle>(env, argv[0], HandleKind::session, "session");
    check(env, F(s->session));
    return undefined(env);
  });
}

napi_value session_stats(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 1);
    auto s = unwrap<SessionHandle>(env, argv[0], HandleKind::session, "session");
    parley_chat_stats st{};
    st.struct_size = sizeof st;
    check(env, parley_chat_stats_get(s->session, &st));
    napi_value o = nullptr;
    ok_or_throw(env, napi_create_object(env, &o), "napi_create_object");
    auto set = [&](const char *k, uint64_t v) {
      ok_or_throw(env, napi_set_named_property(env, o, k, make_int(env, static_cast<int64_t>(v))), k);
    };
    set("promptTokens", st.prompt_tokens);
    set("reusedTokens", st.reused_tokens);
    set("processedTokens", st.processed_tokens);
    set("generatedTokens", st.generated_tokens);
    set("totalProcessedTokens", st.total_processed_tokens);
    set("cachedTokens", st.cached_tokens);
    set("droppedMessages", st.dropped_messages);
    set("totalDroppedMessages", st.total_dropped_messages);
    return o;
  });
}

}  // namespace

void register_objects(std::vector<napi_property_descriptor> &out) {
  auto add = [&](const char *name, napi_callback f) { add_function(out, name, f); };
  add("runtimeCreate", runtime_create);
  add("runtimeLoadPlugin", runtime_load_plugin);
  add("runtimeClose", runtime_close);
  add("modelLoad", model_load);
  add("modelClose", model_close);
  add("modelInfo", model_info);
  add("modelTokenize", model_tokenize);
  add("modelDetokenize", model_detokenize);
  add("modelVerifyTensor", model_verify_tensor);
  add("sessionCreate", session_create);
  add("sessionClose", session_close);
  add("sessionAppend", session_append);
  add("sessionMessageCount", session_message_count);
  add("sessionMessage", session_message);
  add("sessionRemoveLast", session_call<parley_chat_remove_last>);
  add("sessionReset", session_call<parley_chat_reset>);
  add("sessionCancel", session_call<parley_chat_cancel>);
  add("sessionStats", session_stats);
}

}  // namespace parley_node
