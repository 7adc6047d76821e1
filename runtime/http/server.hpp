// `parley serve`: an HTTP server over the public C API (docs/serve.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct parley_runtime;

namespace parley_http {

struct ServeArgs {
  std::vector<std::string> models;  // "name=path" or "path" (named after the file)
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (printed)
  std::string device = "cpu";
  int32_t kv_cache = 0;          // parley_model_options.kv_cache_dtype
  int32_t activations = 0;       // parley_model_options.activation_dtype
  uint64_t kv_budget_bytes = 0;  // per model; 0: the runtime's default
  size_t max_body_bytes = 1 << 20;
  size_t max_tokens = 1024;
  size_t max_concurrent = 128;
  size_t http_threads = 0;  // 0: max_concurrent + 16
  double grace_seconds = 10.0;
  int64_t request_timeout_ms = 0;
  bool log_requests = false;
  bool drop_oldest = false;  // --context drop-oldest: parley_chat_options.context_policy
};

// Block SIGINT and SIGTERM in the calling thread and every thread it starts
// afterwards (call before the runtime creates its threads): serve() then
// receives them with sigwait and shuts down gracefully.
void block_shutdown_signals();

// Load the models, listen, serve until SIGINT/SIGTERM, shut down gracefully.
// Returns the process exit status (0 after a clean shutdown).
int serve(parley_runtime *runtime, const ServeArgs &args);

}  // namespace parley_http
