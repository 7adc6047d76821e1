#include "server.hpp"

#include <httplib.h>
#include <parley/parley.h>
#include <pthread.h>
#include <signal.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>

#include "../core/escape.hpp"
#include "api.hpp"
#include "endpoints.hpp"

namespace parley_http {
namespace {

using Endpoint = void (*)(ServerState &, const httplib::Request &, httplib::Response &);

httplib::Server::Handler wrap(ServerState &state, Endpoint endpoint) {
  return [&state, endpoint](const httplib::Request &req, httplib::Response &res) {
    try {
      endpoint(state, req, res);
    } catch (const ApiError &e) {
      send_error(res, e);
    } catch (const std::bad_alloc &) {
      ApiError e;
      e.http_status = 503;
      e.type = "server_overloaded";
      e.message = "out of memory";
      send_error(res, e);
    } catch (const std::exception &ex) {
      ApiError e;
      e.http_status = 500;
      e.type = "server_error";
      e.message = ex.what();
      send_error(res, e);
    }
  };
}

// Route names for the metrics (bounded: unknown paths are "other").
std::string route_of(const std::string &path) {
  static const char *kRoutes[] = {"/v1/chat/completions", "/v1/completions", "/v1/translations",
                                  "/v1/models",           "/health",         "/metrics"};
  for (const char *r : kRoutes)
    if (path == r) return r;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

// The Content-Length header as a byte count; nullopt when it is none (not
// digits only, or past 19 digits).
std::optional<uint64_t> declared_length(const httplib::Request &req) {
  const std::string value = req.get_header_value("Content-Length");
  if (value.empty() || value.size() > 19) return std::nullopt;
  uint64_t length = 0;
  for (char c : value) {
    if (c < '0' || c > '9') return std::nullopt;
    length = length * 10 + static_cast<uint64_t>(c - '0');
  }
  return length;
}

// The body of an error httplib answers itself (no route, a body over the
// limit, a malformed request), in the same shape as the endpoints' errors.
void fill_error(const ServeArgs &args, const httplib::Request &req, httplib::Response &res) {
  if (!res.body.empty()) return;  // an endpoint's own error
  ApiError e;
  e.http_status = res.status;
  switch (res.status) {
    case 404:
      e.message = "no route " + req.method + " " + req.path;
      e.code = "not_found";
      break;
    case 413:
      e.message =
          "the request body is larger than " + std::to_string(args.max_body_bytes) + " bytes (--max-body-bytes)";
      e.code = "request_too_large";
      break;
    case 414:
    case 431:
      e.message = "the request line or headers are too long";
      e.code = "request_too_large";
      break;
    default:
      e.message = res.status >= 500 ? "internal server error" : "malformed HTTP request";
      if (res.status >= 500) e.type = "server_error";
  }
  send_error(res, e);
}

struct LoadedModels {
  std::vector<std::unique_ptr<LoadedModel>> *models;
  ~LoadedModels() {
    for (auto &m : *models) parley_model_free(m->model);
    models->clear();
  }
};

bool load_models(parley_runtime *rt, const ServeArgs &args, std::vector<std::unique_ptr<LoadedModel>> &out) {
  for (const std::string &spec : args.models) {
    auto m = std::make_unique<LoadedModel>();
    size_t eq = spec.find('=');
    if (eq != std::string::npos && eq > 0 && spec.substr(0, eq).find('/') == std::string::npos) {
      m->name = spec.substr(0, eq);
      m->path = spec.substr(eq + 1);
    } else {
      m->path = spec;
      std::string base = spec.substr(spec.find_last_of('/') + 1);
      m->name =
          base.size() > 7 && base.compare(base.size() - 7, 7, ".parley") == 0 ? base.substr(0, base.size() - 7) : base;
    }
    for (const auto &o : out)
      if (o->name == m->name) {
        std::fprintf(stderr, "parley serve: two models are named '%s' (use --model NAME=PATH)\n", m->name.c_str());
        return false;
      }
    parley_model_options mo;
    parley_model_options_init(&mo);
    mo.device = args.device.c_str();
    mo.kv_cache_dtype = args.kv_cache;
    mo.activation_dtype = args.activations;
    mo.kv_cache_budget_bytes = args.kv_budget_bytes;
    int32_t st = parley_model_load_file(rt, m->path.c_str(), &mo, &m->model);
    if (st == PARLEY_OK) st = parley_model_prepare(m->model);
    if (st != PARLEY_OK) {
      std::fprintf(stderr, "parley serve: loading model '%s' from %s failed: %s (%s)\n", m->name.c_str(),
                   m->path.c_str(), parley_last_error(), parley_status_name(st));
      parley_model_free(m->model);
      return false;
    }
    parley_model_info info{};
    info.struct_size = sizeof info;
    parley_model_get_info(m->model, &info);
    m->architecture = info.architecture ? info.architecture : "";
    m->decoder_only = info.kind == PARLEY_MODEL_DECODER_ONLY;
    if (m->decoder_only) {  // a chat model is one a session can be created for
      parley_chat_session *s = nullptr;
      m->chat = parley_chat_session_create(m->model, nullptr, &s) == PARLEY_OK;
      parley_chat_session_free(s);
    }
    int64_t vocab = 0;
    if (parley_model_config_int(m->model, "decoder_vocab_size", &vocab) == PARLEY_OK ||
        parley_model_config_int(m->model, "vocab_size", &vocab) == PARLEY_OK)
      m->vocab_size = vocab;
    int64_t positions = 0;
    if (parley_model_config_int(m->model, "decoder.max_positions", &positions) == PARLEY_OK)
      m->max_positions = positions;
    m->created = unix_now();
    std::fprintf(stderr, "parley serve: model '%s' (%s, %s) from %s\n", m->name.c_str(), m->architecture.c_str(),
                 m->decoder_only ? (m->chat ? "chat" : "text generation") : "translation", m->path.c_str());
    out.push_back(std::move(m));
  }
  return true;
}

}  // namespace

void block_shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int serve(parley_runtime *rt, const ServeArgs &args) {
  // A client that hangs up mid-response must not kill the server.
  signal(SIGPIPE, SIG_IGN);
  block_shutdown_signals();
  if (args.models.empty()) {
    std::fprintf(stderr, "parley serve: give at least one --model NAME=PATH\n");
    return 2;
  }
  ServerState state;
  state.limits.max_body_bytes = args.max_body_bytes;
  state.limits.max_tokens = args.max_tokens;
  state.limits.max_concurrent = args.max_concurrent;
  state.limits.grace_seconds = args.grace_seconds;
  state.limits.request_timeout_ms = args.request_timeout_ms;
  state.limits.drop_oldest = args.drop_oldest;
  LoadedModels guard{&state.models};
  if (!load_models(rt, args, state.models)) return 1;

  httplib::Server svr;
  size_t threads = args.http_threads ? args.http_threads : args.max_concurrent + 16;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr.set_payload_max_length(args.max_body_bytes);
  // One request per connection. httplib 0.11 decides whether a connection
  // stays open before routing, so a request refused from its headers (its
  // body unread: 413, 411, a bad Content-Length) would leave that body to be
  // read as the next request; and it answers only the first of pipelined
  // requests. A new connection per request costs far less than a token.
  svr.set_keep_alive_max_count(1);
  svr.set_read_timeout(30, 0);
  svr.set_write_timeout(30, 0);
  svr.set_tcp_nodelay(true);
  svr.Post("/v1/chat/completions", wrap(state, handle_chat_completions));
  svr.Post("/v1/completions", wrap(state, handle_completions));
  svr.Post("/v1/translations", wrap(state, handle_translations));
  svr.Get("/v1/models", wrap(state, handle_models));
  svr.Get(R"(/v1/models/(.+))", wrap(state, handle_models));
  svr.Get("/health", wrap(state, handle_health));
  svr.Get("/metrics", wrap(state, handle_metrics));
  // A known route with the wrong method: 405 (httplib itself answers 404).
  auto not_allowed = [](const httplib::Request &req, httplib::Response &res) {
    ApiError e;
    e.http_status = 405;
    e.message = "method " + req.method + " is not allowed on " + req.path;
    e.code = "method_not_allowed";
    send_error(res, e);
  };
  for (const char *path : {"/v1/chat/completions", "/v1/completions", "/v1/translations"}) svr.Get(path, not_allowed);
  for (const char *path : {"/v1/models", "/health", "/metrics"}) svr.Post(path, not_allowed);
  // A declared body over the limit, or a Content-Length that is no number:
  // answered from the headers. httplib would first read and drop the whole
  // declared body, holding a connection thread until its read timeout for a
  // client that never sends it (a 100 GB Content-Length got no answer).
  // Bodies whose size the headers do not state (chunked) or that grow when
  // decoded (gzip: 300 KiB became 300 MiB) would pass that check: refused
  // from the headers too. So is a second Content-Length (request smuggling
  // behind a proxy that reads the other one).
  auto refuse = [](httplib::Response &res, int status, const std::string &message, const char *code) {
    ApiError e;
    e.http_status = status;
    e.message = message;
    e.code = code;
    send_error(res, e);
    return httplib::Server::HandlerResponse::Handled;
  };
  svr.set_pre_routing_handler([&args, refuse](const httplib::Request &req, httplib::Response &res) {
    // Every route takes GET or POST. Others got 404, or (PATCH) no answer
    // while httplib waited for a body.
    if (req.method != "GET" && req.method != "HEAD" && req.method != "POST")
      return refuse(
          res, 405,
          "method " + parley::escape_untrusted(req.method, 32) + " is not allowed (the routes take GET or POST)",
          "method_not_allowed");
    if (req.has_header("Transfer-Encoding"))
      return refuse(res, 411,
                    "request bodies must come with a Content-Length (Transfer-Encoding \"" +
                        parley::escape_untrusted(req.get_header_value("Transfer-Encoding"), 64) +
                        "\" is not accepted: the body's size is checked against --max-body-bytes from it)",
                    "length_required");
    if (req.has_header("Content-Encoding")) {
      std::string coding = req.get_header_value("Content-Encoding");
      for (char &c : coding) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (coding != "identity")
        return refuse(res, 415,
                      "request bodies must not be compressed (Content-Encoding \"" +
                          parley::escape_untrusted(req.get_header_value("Content-Encoding"), 64) + "\")",
                      "unsupported_content_encoding");
    }
    if (req.get_header_value_count("Content-Length") > 1)
      return refuse(res, 400, "the request has more than one Content-Length header", "invalid_request");
    if (!req.has_header("Content-Length")) {
      // httplib would wait for a body until its read timeout (30 s).
      if (req.method == "POST")
        return refuse(res, 411, "a POST request needs a Content-Length header (and a JSON body)", "length_required");
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const std::optional<uint64_t> length = declared_length(req);
    const bool number = length.has_value();
    if (number && *length <= args.max_body_bytes) return httplib::Server::HandlerResponse::Unhandled;
    res.status = number ? 413 : 400;
    if (number) {
      fill_error(args, req, res);
    } else {
      ApiError e;
      e.http_status = 400;
      e.message = "the Content-Length header is not a byte count";
      e.code = "invalid_request";
      send_error(res, e);
    }
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_error_handler([&args](const httplib::Request &req, httplib::Response &res) { fill_error(args, req, res); });
  // "Expect: 100-continue" is answered before routing: a declared body over
  // the limit gets its 413 then, not a "100 Continue" inviting the upload.
  svr.set_expect_100_continue_handler([&args](const httplib::Request &req, httplib::Response &res) {
    const std::optional<uint64_t> length = declared_length(req);
    if (!length || *length <= args.max_body_bytes) return 100;  // a bad length: refused at routing
    res.status = 413;
    fill_error(args, req, res);
    return 413;
  });
  svr.set_logger([&state, &args](const httplib::Request &req, const httplib::Response &res) {
    state.count_response(route_of(req.path), res.status);
    if (args.log_requests)
      std::fprintf(stderr, "parley serve: %s %s %s -> %d\n", req.remote_addr.c_str(), req.method.c_str(),
                   req.path.c_str(), res.status);
  });

  int port = args.port;
  errno = 0;  // a host that does not resolve fails without an errno ("Success")
  if (port == 0) {
    port = svr.bind_to_any_port(args.host);
  } else if (!svr.bind_to_port(args.host, port)) {
    port = -1;
  }
  if (port < 0) {
    std::fprintf(stderr, "parley serve: cannot listen on %s:%d: %s\n", args.host.c_str(), args.port,
                 errno ? std::strerror(errno) : "the host is not an address of this machine, or does not resolve");
    return 1;
  }
  std::printf("parley serve: listening on http://%s:%d\n", args.host.c_str(), port);
  std::fflush(stdout);

  std::atomic<bool> listening_done{false};
  std::thread signals([&] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    const timespec tick{0, 100 * 1000 * 1000};
    while (!listening_done) {
      int sig = sigtimedwait(&set, nullptr, &tick);
      if (sig < 0) continue;
      std::fprintf(stderr, "parley serve: %s: no new connections; %zu request(s) in flight may finish within %.1f s\n",
                   sig == SIGINT ? "SIGINT" : "SIGTERM", state.in_flight(), args.grace_seconds);
      state.start_draining();
      svr.stop();
      auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(args.grace_seconds);
      bool cancelled = false;
      auto cancel = [&] {
        if (cancelled || state.in_flight() == 0) return;
        std::fprintf(stderr, "parley serve: cancelling %zu request(s) still in flight\n", state.in_flight());
        state.cancel_all();
        cancelled = true;
      };
      // Connection threads return when their client's read times out: one
      // that sends a byte now and then (a slow or hostile client) never does.
      // Past the grace period and kLingerSeconds more, with no request left
      // to finish, the process ends without waiting for them.
      constexpr int kLingerSeconds = 5;
      while (!listening_done) {
        svr.stop();  // (again, in case the signal came before listening began)
        // The deadline is checked before each wait, so that a grace period of
        // 0 (or one that has run out) cancels now, not a tick later: a short
        // reply can finish within a tick.
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline) cancel();
        if (now >= deadline + std::chrono::seconds(kLingerSeconds) && state.in_flight() == 0) {
          std::fprintf(stderr,
                       "parley serve: stopped with connection(s) still open %d s after the grace period (clients "
                       "that never finish a request); exiting without waiting for them\n",
                       kLingerSeconds);
          std::fflush(stdout);
          std::fflush(stderr);
          std::_Exit(0);
        }
        if (sigtimedwait(&set, nullptr, &tick) > 0) cancel();  // a second signal: cancel now
      }
    }
  });
  bool ok = svr.listen_after_bind();  // returns once stopped and every handler has returned
  listening_done = true;
  signals.join();
  std::fprintf(stderr, "parley serve: stopped (%llu request(s) cancelled at shutdown)\n",
               static_cast<unsigned long long>(state.requests_cancelled.load()));
  return ok || state.draining() ? 0 : 1;
}

}  // namespace parley_http
