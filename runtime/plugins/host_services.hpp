// The table of services the runtime hands to plugins (parley_host_services):
// logging through the runtime's callback, parallel_for over its thread pool,
// per-thread scratch memory, and a per-thread slot for a kernel's error text.
#pragma once

#include <parley/parley.h>
#include <parley/plugin.h>

#include <memory>
#include <string>

#include "core/thread_pool.hpp"

namespace parley {

class HostServices {
 public:
  HostServices(int num_threads, parley_log_fn log_fn, void *log_user, parley_log_severity min_severity);

  const parley_host_services *table() const { return &table_; }
  void log(parley_log_severity severity, const std::string &message) const;
  ThreadPool &pool() { return *pool_; }

  // The message a kernel attached with set_error on this thread (consumed).
  static std::string take_kernel_error();

 private:
  parley_host_services table_{};
  std::unique_ptr<ThreadPool> pool_;
  parley_log_fn log_fn_;
  void *log_user_;
  parley_log_severity min_severity_;
};

}  // namespace parley
