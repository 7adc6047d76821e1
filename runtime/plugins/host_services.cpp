#include "plugins/host_services.hpp"

#include <cstdio>
#include <cstdlib>
#include <new>
#include <vector>

namespace parley {

namespace {

thread_local std::string t_kernel_error;

struct ScratchBlock {
  void *ptr = nullptr;
  size_t size = 0;
  ~ScratchBlock() { std::free(ptr); }
};
thread_local ScratchBlock t_scratch;

const char *severity_name(parley_log_severity s) {
  switch (s) {
    case PARLEY_SEVERITY_DEBUG:
      return "debug";
    case PARLEY_SEVERITY_INFO:
      return "info";
    case PARLEY_SEVERITY_WARNING:
      return "warning";
    case PARLEY_SEVERITY_ERROR:
      return "error";
  }
  return "log";
}

HostServices *self(void *host) {
  return static_cast<HostServices *>(host);
}

void svc_log(void *host, int32_t level, const char *message) {
  if (!host || !message) return;
  int l = static_cast<int>(level);
  if (l < PARLEY_SEVERITY_DEBUG || l > PARLEY_SEVERITY_ERROR) l = PARLEY_SEVERITY_ERROR;
  self(host)->log(static_cast<parley_log_severity>(l), message);
}

void svc_parallel_for(void *host, int64_t n, int64_t grain, parley_range_fn fn, void *user) {
  if (!host || !fn) return;
  self(host)->pool().parallel_for(n, grain, fn, user);
}

int svc_num_threads(void *host) {
  return host ? self(host)->pool().num_threads() : 1;
}

void *svc_scratch(void *host, size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes > (size_t{1} << 40)) return nullptr;
  if (t_scratch.size < bytes) {
    size_t rounded = (bytes + 63) & ~size_t{63};
    void *p = std::aligned_alloc(64, rounded);
    if (!p) return nullptr;
    std::free(t_scratch.ptr);
    t_scratch.ptr = p;
    t_scratch.size = rounded;
  }
  return t_scratch.ptr;
}

void svc_set_error(void *host, const char *message) {
  try {
    t_kernel_error = message ? message : "";
  } catch (...) {
  }
}

}  // namespace

HostServices::HostServices(int num_threads, parley_log_fn log_fn, void *log_user, parley_log_severity min_severity)
    : pool_(std::make_unique<ThreadPool>(num_threads)),
      log_fn_(log_fn),
      log_user_(log_user),
      min_severity_(min_severity) {
  table_.struct_size = sizeof(table_);
  table_.abi_version = PARLEY_PLUGIN_ABI_VERSION;
  table_.host = this;
  table_.log = svc_log;
  table_.parallel_for = svc_parallel_for;
  table_.num_threads = svc_num_threads;
  table_.scratch = svc_scratch;
  table_.set_error = svc_set_error;
}

void HostServices::log(parley_log_severity severity, const std::string &message) const {
  if (severity < min_severity_) return;
  if (log_fn_) {
    log_fn_(log_user_, severity, message.c_str());
  } else {
    std::fprintf(stderr, "parley %s: %s\n", severity_name(severity), message.c_str());
  }
}

std::string HostServices::take_kernel_error() {
  std::string s;
  s.swap(t_kernel_error);
  return s;
}

}  // namespace parley
