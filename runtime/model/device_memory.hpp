// Memory on the device a model runs on, reached only through the device's
// plugin functions (allocate, release, copy). The Transformer keeps weights,
// activations and the KV cache here and never dereferences them on the host:
// on a CUDA device these are GPU addresses. Host code sees data only through
// explicit to_host / to_device copies (logits, attention probabilities,
// token ids, positions, lengths).
//
// The cpu device's memory is host memory; host_addressable() lets the model
// skip a copy there (the final logits are written straight into the caller's
// vector, float32 weights stay zero-copy in the mapped file) without a
// second code path for anything else. tests/device_guard runs every parity
// test on a device whose memory faults when the host touches it, so a missed
// copy fails a test instead of crashing a GPU host.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "plugins/registry.hpp"

namespace parley {

struct Runtime;

class DeviceMemory {
 public:
  // `device` must be available. Keeps the runtime (and so the plugin) alive.
  DeviceMemory(std::shared_ptr<Runtime> runtime, const Device &device);

  const std::string &name() const { return device_.name; }
  bool host_addressable() const { return device_.kind == PARLEY_DEVICE_CPU; }
  void *state() const { return device_.state; }

  // Uninitialised device memory, 64-byte aligned; throws OUT_OF_MEMORY naming
  // the size, what it was for (core/memory_scope.hpp) and the device's own
  // message.
  void *allocate(size_t bytes) const;
  void release(void *ptr) const noexcept;
  // Copies in the device's stream order; to_host returns when the bytes are
  // on the host. A host source may be reused as soon as to_device returns.
  void to_device(void *dst, const void *src, size_t bytes) const;
  void to_host(void *dst, const void *src, size_t bytes) const;
  void on_device(void *dst, const void *src, size_t bytes) const;

 private:
  void copy(void *dst, const void *src, size_t bytes, parley_copy_kind kind, const char *what) const;
  std::shared_ptr<Runtime> runtime_;
  Device device_;
};

// A typed device allocation owned by one object (move-only). Elements are
// uninitialised until written by a copy or a kernel.
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(std::shared_ptr<const DeviceMemory> mem, size_t count) : mem_(std::move(mem)), count_(count) {
    if (count_) ptr_ = static_cast<T *>(mem_->allocate(count_ * sizeof(T)));
  }
  // A copy of `host` on the device.
  DeviceArray(std::shared_ptr<const DeviceMemory> mem, const std::vector<T> &host)
      : DeviceArray(std::move(mem), host.size()) {
    upload(host.data(), host.size());
  }
  DeviceArray(DeviceArray &&o) noexcept : mem_(std::move(o.mem_)), ptr_(o.ptr_), count_(o.count_) {
    o.ptr_ = nullptr;
    o.count_ = 0;
  }
  DeviceArray &operator=(DeviceArray &&o) noexcept {
    if (this != &o) {
      reset();
      mem_ = std::move(o.mem_);
      ptr_ = o.ptr_;
      count_ = o.count_;
      o.ptr_ = nullptr;
      o.count_ = 0;
    }
    return *this;
  }
  DeviceArray(const DeviceArray &) = delete;
  DeviceArray &operator=(const DeviceArray &) = delete;
  ~DeviceArray() { reset(); }

  void reset() noexcept {
    if (ptr_) mem_->release(ptr_);
    ptr_ = nullptr;
    count_ = 0;
  }
  T *data() { return ptr_; }
  const T *data() const { return ptr_; }
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }

  // Host <-> device for `n` elements starting at element `offset`.
  void upload(const T *src, size_t n, size_t offset = 0) {
    if (n) mem_->to_device(ptr_ + offset, src, n * sizeof(T));
  }
  void download(T *dst, size_t n, size_t offset = 0) const {
    if (n) mem_->to_host(dst, ptr_ + offset, n * sizeof(T));
  }
  std::vector<T> to_vector() const {
    std::vector<T> out(count_);
    download(out.data(), count_);
    return out;
  }

 private:
  std::shared_ptr<const DeviceMemory> mem_;
  T *ptr_ = nullptr;
  size_t count_ = 0;
};

}  // namespace parley
