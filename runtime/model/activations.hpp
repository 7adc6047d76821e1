// Activations on the model's device in its activation dtype
// (parley_model_options.activation_dtype: F32, or F16 where the device has
// F16 kernels for every op a model runs). The model code offsets and sizes
// them in elements; the element size is the buffer's, so the same code runs
// a float32 and a half-precision model, and a pointer to activations can
// never be passed where float parameters (norm weights, biases) belong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "model/device_memory.hpp"
#include "model/half.hpp"

namespace parley {

inline size_t activation_size(parley_dtype dtype) {
  return dtype == PARLEY_DTYPE_F16 || dtype == PARLEY_DTYPE_BF16 ? 2 : sizeof(float);
}

// A device address of activations and their element size. Not owning.
class Act {
 public:
  Act() = default;
  Act(void *ptr, size_t elem) : ptr_(static_cast<uint8_t *>(ptr)), elem_(elem) {}
  void *get() const { return ptr_; }
  size_t elem() const { return elem_; }
  size_t bytes(int64_t count) const { return static_cast<size_t>(count) * elem_; }
  Act operator+(int64_t count) const { return Act(ptr_ + bytes(count), elem_); }
  explicit operator bool() const { return ptr_ != nullptr; }
  bool operator==(const Act &o) const { return ptr_ == o.ptr_; }

 private:
  uint8_t *ptr_ = nullptr;
  size_t elem_ = sizeof(float);
};

// An owned device buffer of `count` activations (uninitialised). Move-only.
class ActArray {
 public:
  ActArray() = default;
  ActArray(std::shared_ptr<const DeviceMemory> mem, size_t count, size_t elem)
      : bytes_(std::move(mem), count * elem), elem_(elem) {}
  Act data() { return Act(bytes_.data(), elem_); }
  size_t size() const { return bytes_.size() / elem_; }
  bool empty() const { return bytes_.empty(); }
  size_t elem() const { return elem_; }
  // The raw bytes (for host copies of logits and attention outputs).
  const DeviceArray<uint8_t> &bytes() const { return bytes_; }

 private:
  DeviceArray<uint8_t> bytes_;
  size_t elem_ = sizeof(float);
};

// `count` activations of `dtype` at `src` (device) into host floats at `dst`.
inline void download_as_float(const DeviceMemory &mem, parley_dtype dtype, const void *src, size_t count, float *dst) {
  if (dtype == PARLEY_DTYPE_F32) {
    mem.to_host(dst, src, count * sizeof(float));
    return;
  }
  std::vector<uint16_t> raw(count);
  mem.to_host(raw.data(), src, count * sizeof(uint16_t));
  for (size_t i = 0; i < count; ++i) dst[i] = dtype == PARLEY_DTYPE_F16 ? half_to_float(raw[i]) : bf16_to_float(raw[i]);
}

}  // namespace parley
