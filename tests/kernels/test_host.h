// A host-services implementation for the kernel tests: a std::thread based
// parallel_for (nested calls run serially), per-thread 64-byte aligned scratch,
// and set_error/log capture.
#ifndef PARLEY_TESTS_KERNELS_TEST_HOST_H
#define PARLEY_TESTS_KERNELS_TEST_HOST_H

#include <parley/plugin.h>

#include <mutex>
#include <string>
#include <vector>

extern "C" const parley_plugin_desc *parley_cpu_plugin_entry(uint32_t host_abi_version,
                                                             const parley_host_services *host);

namespace parley::test {

class TestHost {
 public:
  // threads == 0: no parallel_for service at all (the kernel must run serially).
  explicit TestHost(int threads = 3);

  const parley_host_services *services() const { return &services_; }
  const parley_kernel_context *context() const { return &context_; }

  std::string last_error() const;
  void clear_error();
  std::vector<std::string> logs() const;
  int parallel_calls() const { return parallel_calls_; }

 private:
  static void log(void *host, int32_t level, const char *message);
  static void parallel_for(void *host, int64_t n, int64_t grain, parley_range_fn fn, void *user_data);
  static int num_threads(void *host);
  static void *scratch(void *host, size_t bytes);
  static void set_error(void *host, const char *message);

  int threads_;
  parley_host_services services_{};
  parley_kernel_context context_{};
  mutable std::mutex mu_;
  std::string error_;
  std::vector<std::string> logs_;
  int parallel_calls_ = 0;
};

// The cpu plugin's kernel for an op (F32, device "cpu"), or nullptr.
parley_kernel_fn find_kernel(parley_op op);

}  // namespace parley::test

#endif
