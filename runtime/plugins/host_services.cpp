#include "plugins/host_services.hpp"

#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <new>
#include <vector>

namespace parley {

namespace {

// Per-thread state without C++ thread_local destructors: registering one
// allocates (glibc's __cxa_thread_atexit), and when that fails glibc aborts
// the process. Threads that start late (the serving engine's scheduler)
// reach their first kernel call when memory may already be short, so the
// kernel error is a fixed buffer and the scratch block hangs off a pthread
// key (its slot needs no allocation; its destructor frees the block when
// the thread ends).
constexpr size_t kKernelErrorBytes = 4096;
thread_local char t_kernel_error[kKernelErrorBytes];

struct ScratchBlock {
  void *ptr = nullptr;
  size_t size = 0;
};
pthread_key_t scratch_key() {
  static const pthread_key_t key = [] {
    pthread_key_t k;
    if (pthread_key_create(&k, [](void *p) {
          auto *b = static_cast<ScratchBlock *>(p);
          std::free(b->ptr);
          std::free(b);
        }) != 0)
      std::abort();  // at most PTHREAD_KEYS_MAX keys; this is the process's first use
    return k;
  }();
  return key;
}

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
  const pthread_key_t key = scratch_key();
  auto *block = static_cast<ScratchBlock *>(pthread_getspecific(key));
  if (!block) {
    block = static_cast<ScratchBlock *>(std::calloc(1, sizeof(ScratchBlock)));
    if (!block) return nullptr;
    if (pthread_setspecific(key, block) != 0) {
      std::free(block);
      return nullptr;
    }
  }
  if (block->size < bytes) {
    size_t rounded = (bytes + 63) & ~size_t{63};
    void *p = std::aligned_alloc(64, rounded);
    if (!p) return nullptr;
    std::free(block->ptr);
    block->ptr = p;
    block->size = rounded;
  }
  return block->ptr;
}

void svc_set_error(void *host, const char *message) {
  (void)host;
  std::snprintf(t_kernel_error, kKernelErrorBytes, "%s", message ? message : "");
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
  std::string s(t_kernel_error);
  t_kernel_error[0] = 0;
  return s;
}

}  // namespace parley
