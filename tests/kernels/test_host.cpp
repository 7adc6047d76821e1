#include "test_host.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace parley::test {

namespace {

thread_local bool t_in_parallel = false;

struct Scratch {
  void *ptr = nullptr;
  size_t size = 0;
  ~Scratch() { std::free(ptr); }
};
thread_local Scratch t_scratch;

}  // namespace

TestHost::TestHost(int threads) : threads_(threads) {
  services_.struct_size = sizeof(services_);
  services_.abi_version = PARLEY_PLUGIN_ABI_VERSION;
  services_.host = this;
  services_.log = &TestHost::log;
  services_.parallel_for = threads > 0 ? &TestHost::parallel_for : nullptr;
  services_.num_threads = &TestHost::num_threads;
  services_.scratch = &TestHost::scratch;
  services_.set_error = &TestHost::set_error;
  context_.struct_size = sizeof(context_);
  context_.host = &services_;
}

std::string TestHost::last_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void TestHost::clear_error() {
  std::lock_guard<std::mutex> lock(mu_);
  error_.clear();
}

std::vector<std::string> TestHost::logs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return logs_;
}

void TestHost::log(void *host, int32_t, const char *message) {
  auto *self = static_cast<TestHost *>(host);
  std::lock_guard<std::mutex> lock(self->mu_);
  self->logs_.emplace_back(message ? message : "");
}

void TestHost::set_error(void *host, const char *message) {
  auto *self = static_cast<TestHost *>(host);
  std::lock_guard<std::mutex> lock(self->mu_);
  self->error_ = message ? message : "";
}

int TestHost::num_threads(void *host) {
  int t = static_cast<TestHost *>(host)->threads_;
  return t > 0 ? t : 1;
}

void *TestHost::scratch(void *, size_t bytes) {
  Scratch &s = t_scratch;
  if (bytes > s.size) {
    std::free(s.ptr);
    s.size = 0;
    size_t rounded = (bytes + 63) & ~size_t(63);
    s.ptr = std::aligned_alloc(64, rounded);
    if (!s.ptr) return nullptr;
    s.size = rounded;
  }
  // Poison so that kernels relying on zeroed scratch fail.
  std::memset(s.ptr, 0xff, bytes);
  return s.ptr;
}

void TestHost::parallel_for(void *host, int64_t n, int64_t grain, parley_range_fn fn, void *user_data) {
  auto *self = static_cast<TestHost *>(host);
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    ++self->parallel_calls_;
  }
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (t_in_parallel || self->threads_ <= 1 || n <= grain) {
    fn(user_data, 0, n);
    return;
  }
  // Chunks of `grain` handed out dynamically; the caller takes part.
  const int64_t chunks = (n + grain - 1) / grain;
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    t_in_parallel = true;
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      int64_t b = c * grain, e = b + grain < n ? b + grain : n;
      fn(user_data, b, e);
    }
    t_in_parallel = false;
  };
  std::vector<std::thread> pool;
  const int64_t extra = std::min<int64_t>(self->threads_ - 1, chunks - 1);
  for (int64_t i = 0; i < extra; ++i) pool.emplace_back(worker);
  worker();
  for (auto &t : pool) t.join();
}

parley_kernel_fn find_kernel(parley_op op) {
  TestHost host;
  const parley_plugin_desc *d = parley_cpu_plugin_entry(PARLEY_PLUGIN_ABI_VERSION, host.services());
  if (!d) return nullptr;
  for (size_t i = 0; i < d->num_kernels; ++i) {
    const parley_kernel_desc &k = d->kernels[i];
    if (k.op == op && k.dtype == PARLEY_DTYPE_F32 && std::strcmp(k.device, "cpu") == 0) return k.run;
  }
  return nullptr;
}

}  // namespace parley::test
