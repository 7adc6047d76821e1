// Chat turns, translations and generations as parley requests
// (parley_*_submit): the work runs on the request's own Parley worker
// thread, never on the JS thread, and settles a Promise. Streaming pieces
// and the completion travel to the JS thread through one
// napi_threadsafe_function per request, in order, so every piece reaches
// its callback before the Promise settles. The queue is bounded: when JS
// falls behind, the producer waits (backpressure), and a cancel issued from
// a callback lands within a few pieces. The producer is the model's serving
// engine thread (Parley runs request callbacks there), so the wait holds
// every request of the model, not just this one.
#include <atomic>
#include <new>

#include "addon.hpp"
#include "options.hpp"

namespace parley_node {

namespace {

constexpr size_t kQueuedPieces = 8;

struct Message {
  enum Type { chat_piece, translation_text, token, done } type = done;
  std::string text;
  size_t a = 0, b = 0;
  int32_t token_id = 0;
  bool final = false;
};

struct Request {
  napi_env env = nullptr;
  parley_request *req = nullptr;  // touched on the JS thread only
  napi_threadsafe_function tsfn = nullptr;
  napi_deferred deferred = nullptr;
  std::shared_ptr<ModelHandle> model;  // what the request uses stays alive until it is done
  std::shared_ptr<SessionHandle> session;
  std::atomic<bool> stop{false};  // a callback returned false or threw: end the stream
  napi_ref thrown = nullptr;      // what a callback threw: the Promise rejects with it
  uint32_t json_flags = 0;
  bool settled = false;
  // Set while the environment cleanup hook is registered (the request is
  // unfinished): keeps the object alive for the hook.
  std::shared_ptr<Request> keep_alive;
};

void cleanup_hook(void *arg);

// Called on the JS thread once the worker has queued its completion.
void finish(napi_env env, Request *r) {
  std::shared_ptr<Request> keep = std::move(r->keep_alive);
  if (r->settled || r->req == nullptr) return;
  r->settled = true;
  napi_remove_env_cleanup_hook(env, cleanup_hook, r);
  parley_request_wait(r->req, -1);  // the completion callback is returning: microseconds
  int32_t status = PARLEY_OK;
  const char *message = "";
  parley_request_status(r->req, &status, &message);
  char *json = nullptr;
  size_t length = 0;
  const parley_status jst = parley_request_json(r->req, r->json_flags, &json, &length);
  const std::string jmessage = jst == PARLEY_OK ? "" : parley_last_error();
  napi_value doc = nullptr;
  if (jst == PARLEY_OK) napi_create_string_utf8(env, json, length, &doc);
  if (r->thrown) {
    napi_value e = nullptr;
    napi_get_reference_value(env, r->thrown, &e);
    napi_reject_deferred(env, r->deferred, e);
    napi_delete_reference(env, r->thrown);
    r->thrown = nullptr;
  } else if (jst != PARLEY_OK) {
    napi_reject_deferred(env, r->deferred, parley_error(env, jst, jmessage));
  } else if (status != PARLEY_OK) {
    napi_value e = parley_error(env, status, message ? message : "");
    napi_set_named_property(env, e, "json", doc);  // the request document: status, message, no result
    napi_reject_deferred(env, r->deferred, e);
  } else {
    napi_resolve_deferred(env, r->deferred, doc);
  }
  parley_string_free(json);
  parley_request_free(r->req);
  r->req = nullptr;
  napi_release_threadsafe_function(r->tsfn, napi_tsfn_release);
  r->session.reset();  // may free a closed session or model, now unused
  r->model.reset();
}

// The environment is going away (process exit, a Worker terminated) with the
// request unfinished: stop the queue (a worker waiting on it returns) and
// cancel and free the request (waits at most one decoding step).
void cleanup_hook(void *arg) {
  auto *r = static_cast<Request *>(arg);
  std::shared_ptr<Request> keep = std::move(r->keep_alive);
  if (r->req == nullptr) return;
  napi_release_threadsafe_function(r->tsfn, napi_tsfn_abort);
  parley_request_free(r->req);
  r->req = nullptr;
}

void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  std::unique_ptr<Message> m(static_cast<Message *>(data));
  if (env == nullptr) return;  // torn down: only free the message
  auto *r = static_cast<Request *>(context);
  if (m->type == Message::done) {
    finish(env, r);
    return;
  }
  if (js_cb == nullptr || r->thrown || r->settled) return;
  napi_value argv[4] = {};
  size_t argc = 0;
  if (m->type == Message::chat_piece) {
    napi_create_string_utf8(env, m->text.data(), m->text.size(), &argv[argc++]);
  } else if (m->type == Message::translation_text) {
    napi_create_int64(env, static_cast<int64_t>(m->a), &argv[argc++]);
    napi_create_int64(env, static_cast<int64_t>(m->b), &argv[argc++]);
    napi_create_string_utf8(env, m->text.data(), m->text.size(), &argv[argc++]);
    napi_get_boolean(env, m->final, &argv[argc++]);
  } else {
    napi_create_int64(env, static_cast<int64_t>(m->a), &argv[argc++]);
    napi_create_int64(env, static_cast<int64_t>(m->b), &argv[argc++]);
    napi_create_int32(env, m->token_id, &argv[argc++]);
  }
  napi_value recv = undefined(env), ret = nullptr;
  const napi_status st = napi_call_function(env, recv, js_cb, argc, argv, &ret);
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (st != napi_ok || pending) {
    // The callback threw: keep the exception for the Promise, stop the work.
    napi_value e = nullptr;
    napi_get_and_clear_last_exception(env, &e);
    if (e) napi_create_reference(env, e, 1, &r->thrown);
    r->stop = true;
    if (r->req) parley_request_cancel(r->req);
    return;
  }
  napi_valuetype t = napi_undefined;
  bool value = true;
  if (ret && napi_typeof(env, ret, &t) == napi_ok && t == napi_boolean &&
      napi_get_value_bool(env, ret, &value) == napi_ok && !value) {
    r->stop = true;  // false: end the stream (pieces already produced still arrive)
  }
}

void finalize_tsfn(napi_env, void *data, void *) {
  delete static_cast<std::shared_ptr<Request> *>(data);
}

// Engine thread: queue a message (waits while the queue is full). False when
// the queue is closed (the environment is going away).
bool post(Request *r, Message *m) {
  if (m == nullptr) return false;
  if (napi_call_threadsafe_function(r->tsfn, m, napi_tsfn_blocking) != napi_ok) {
    delete m;
    return false;
  }
  return true;
}

int32_t on_chat_piece(void *user, const char *text, size_t length) {
  // The piece is delivered even after a callback said stop: returning
  // nonzero ends the reply *with* this piece, and the reply must equal what
  // was streamed.
  auto *r = static_cast<Request *>(user);
  try {
    auto *m = new Message;
    m->type = Message::chat_piece;
    m->text.assign(text, length);
    if (!post(r, m)) return 1;
  } catch (const std::bad_alloc &) {
    return 1;
  }
  return r->stop.load() ? 1 : 0;
}

int32_t on_translation_text(void *user, size_t text_index, size_t hypothesis, const char *text, size_t length,
                            int32_t is_final) {
  auto *r = static_cast<Request *>(user);
  try {
    auto *m = new Message;
    m->type = Message::translation_text;
    m->a = text_index;
    m->b = hypothesis;
    m->text.assign(text, length);
    m->final = is_final != 0;
    if (!post(r, m)) return 1;
  } catch (const std::bad_alloc &) {
    return 1;
  }
  return r->stop.load() ? 1 : 0;
}

int32_t on_token(void *user, size_t batch_index, size_t sequence_index, int32_t token) {
  auto *r = static_cast<Request *>(user);
  auto *m = new (std::nothrow) Message;
  if (m == nullptr) return 1;
  m->type = Message::token;
  m->a = batch_index;
  m->b = sequence_index;
  m->token_id = token;
  if (!post(r, m)) return 1;
  return r->stop.load() ? 1 : 0;
}

void on_complete(void *user, parley_request *, int32_t) {
  auto *r = static_cast<Request *>(user);
  post(r, new (std::nothrow) Message);  // Message::done
}

napi_value get_callback(napi_env env, napi_value v, const char *what) {
  if (is_nullish(env, v)) return nullptr;
  if (type_of(env, v) != napi_function) type_error(env, std::string(what) + " must be a function");
  return v;
}

// The request object, its Promise and its queue; `submit` starts the work
// (returns the status of the parley_*_submit call).
template <typename Submit>
napi_value start(napi_env env, std::shared_ptr<Request> r, napi_value callback, parley_request_options &ro,
                 Submit &&submit) {
  r->env = env;
  napi_value handle = wrap(env, HandleKind::request, r);
  napi_value promise = nullptr;
  ok_or_throw(env, napi_create_promise(env, &r->deferred, &promise), "napi_create_promise");
  ok_or_throw(env, napi_set_named_property(env, handle, "promise", promise), "promise");
  auto *holder = new std::shared_ptr<Request>(r);
  const napi_status ts =
      napi_create_threadsafe_function(env, callback, nullptr, make_string(env, "parley.request"), kQueuedPieces, 1,
                                      holder, finalize_tsfn, r.get(), call_js, &r->tsfn);
  if (ts != napi_ok) {
    delete holder;
    ok_or_throw(env, ts, "napi_create_threadsafe_function");
  }
  ro.on_complete = on_complete;
  ro.user_data = r.get();
  const parley_status st = submit();
  if (st != PARLEY_OK) {
    r->settled = true;
    napi_reject_deferred(env, r->deferred, parley_error(env, st, parley_last_error()));
    napi_release_threadsafe_function(r->tsfn, napi_tsfn_release);
    r->session.reset();
    r->model.reset();
    return handle;
  }
  r->keep_alive = r;
  napi_add_env_cleanup_hook(env, cleanup_hook, r.get());
  return handle;
}

// chatSubmit(session, options, onText | null) -> request handle
napi_value chat_submit(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 3);
    auto s = unwrap<SessionHandle>(env, argv[0], HandleKind::session, "session");
    ChatOptions o(env, s->model->model, argv[1]);
    napi_value cb = get_callback(env, argv[2], "onText");
    auto r = std::make_shared<Request>();
    r->session = s;
    r->model = s->model;
    r->json_flags = o.request.json_flags;
    if (cb) {
      o.o.on_text = on_chat_piece;
      o.o.user_data = r.get();
    }
    return start(env, r, cb, o.request.o, [&] { return parley_chat_submit(s->session, &o.o, &o.request.o, &r->req); });
  });
}

// translate(model, texts, options, onText | null) -> request handle
napi_value translate(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 4);
    auto m = unwrap<ModelHandle>(env, argv[0], HandleKind::model, "model");
    const std::vector<std::string> texts = get_strings(env, argv[1], "texts");
    TranslationOptions o(env, m->model, argv[2]);
    napi_value cb = get_callback(env, argv[3], "onText");
    std::vector<const char *> ptrs;
    std::vector<size_t> lengths;
    for (const std::string &t : texts) {
      ptrs.push_back(t.data());
      lengths.push_back(t.size());
    }
    auto r = std::make_shared<Request>();
    r->model = m;
    r->json_flags = o.request.json_flags;
    if (cb) {
      o.o.on_text = on_translation_text;
      o.o.user_data = r.get();
    }
    return start(env, r, cb, o.request.o, [&] {
      return parley_translate_submit(m->model, ptrs.data(), lengths.data(), ptrs.size(), &o.o, &o.request.o, &r->req);
    });
  });
}

// generate(model, prompts, options, onToken | null) -> request handle
napi_value generate(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 4);
    auto m = unwrap<ModelHandle>(env, argv[0], HandleKind::model, "model");
    bool is_array = false;
    ok_or_throw(env, napi_is_array(env, argv[1], &is_array), "napi_is_array");
    if (!is_array) type_error(env, "prompts must be an array of token id arrays");
    uint32_t n = 0;
    ok_or_throw(env, napi_get_array_length(env, argv[1], &n), "napi_get_array_length");
    std::vector<std::vector<int32_t>> prompts(n);
    std::vector<const int32_t *> ptrs;
    std::vector<size_t> lengths;
    for (uint32_t i = 0; i < n; ++i) {
      napi_value e = nullptr;
      ok_or_throw(env, napi_get_element(env, argv[1], i, &e), "napi_get_element");
      prompts[i] = get_ids(env, e, "prompts[" + std::to_string(i) + "]");
      ptrs.push_back(prompts[i].data());
      lengths.push_back(prompts[i].size());
    }
    GenerateOptions o(env, m->model, argv[2]);
    napi_value cb = get_callback(env, argv[3], "onToken");
    if (!o.generation) o.generation = std::make_unique<GenerationOptions>(env, m->model, nullptr, "options.generation");
    auto r = std::make_shared<Request>();
    r->model = m;
    r->json_flags = o.request.json_flags;
    if (cb) {
      o.generation->o.on_token = on_token;
      o.generation->o.user_data = r.get();
    }
    return start(env, r, cb, o.request.o, [&] {
      return parley_generate_submit(m->model, ptrs.data(), lengths.data(), ptrs.size(), &o.generation->o, &o.request.o,
                                    &r->req);
    });
  });
}

// cancel(request): parley_request_cancel; after the end, nothing happens.
napi_value request_cancel(napi_env env, napi_callback_info info) {
  return guarded(env, [&] {
    auto argv = args_of(env, info, 1);
    std::shared_ptr<Request> &r = unwrap_box<Request>(env, argv[0], HandleKind::request, "request");
    if (r && r->req) check(env, parley_request_cancel(r->req));
    return undefined(env);
  });
}

}  // namespace

void register_requests(std::vector<napi_property_descriptor> &out) {
  auto add = [&](const char *name, napi_callback f) { add_function(out, name, f); };
  add("chatSubmit", chat_submit);
  add("translate", translate);
  add("generate", generate);
  add("requestCancel", request_cancel);
}

}  // namespace parley_node
