// A model's tensors as the file stores them, and float32 views where an op
// needs one.
//
// Nothing is widened up front. Linear weights go to the plugin in their
// stored dtype (ref() + Ops::prepare_linear); embedding tables are read in
// their stored dtype by the embedding kernel where the device is the host.
// f32() gives a float32 view on the model's device: F32 tensors on a
// host-addressable device are used in place from the mapped file
// (zero-copy); anything else is converted (F16/BF16/I8/I4 → F32) and/or
// uploaded once, on first use, and kept for the model's lifetime. That path
// serves the small tensors (norms, biases, position tables) and the
// fallbacks a device without a native kernel needs; expanded_bytes() counts
// what it holds.
#pragma once

#include <parley/plugin.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "format/model_file.hpp"
#include "model/device_memory.hpp"

namespace parley {

// One tensor as stored. For quantized tensors `scales` points at the F32
// scale tensor (PER_ROW: one per index of scale_axis; GROUPWISE: [rows,
// cols / group_size]).
struct TensorRef {
  std::string name;
  parley_dtype dtype = PARLEY_DTYPE_F32;
  std::vector<int64_t> shape;
  const uint8_t *data = nullptr;
  uint64_t length = 0;
  int32_t quant = PARLEY_QUANT_NONE;
  int32_t scale_axis = 0;
  const float *scales = nullptr;
  int64_t group_size = 0;
  int64_t numel() const;
};

class Weights {
 public:
  Weights(const ModelFile &file, std::shared_ptr<const DeviceMemory> mem);

  bool has(const std::string &name) const { return refs_.count(name) != 0; }
  // The stored tensor, which must exist with exactly `shape`; throws INVALID_MODEL naming it.
  const TensorRef &ref(const std::string &name, const std::vector<int64_t> &shape) const;
  // The stored tensor if present (checked against `shape`), else nullptr.
  const TensorRef *find(const std::string &name, const std::vector<int64_t> &shape) const;

  // A float32 copy/view of the tensor on the model's device (see the file comment).
  const float *f32(const std::string &name, const std::vector<int64_t> &shape);
  const float *f32_optional(const std::string &name, const std::vector<int64_t> &shape);
  // Bytes of float32 conversions and device copies held.
  uint64_t expanded_bytes() const { return expanded_bytes_; }
  // The model's device memory.
  const std::shared_ptr<const DeviceMemory> &memory() const { return mem_; }

 private:
  std::string label_;
  std::shared_ptr<const DeviceMemory> mem_;
  std::map<std::string, TensorRef> refs_;
  std::map<std::string, const float *> f32_;  // views handed out by f32()
  std::vector<std::unique_ptr<float[]>> owned_;
  std::vector<DeviceArray<float>> on_device_;
  uint64_t expanded_bytes_ = 0;
};

// Elements of a stored tensor converted to float32 (dst holds numel()).
void dequantize(const TensorRef &t, float *dst);

}  // namespace parley
