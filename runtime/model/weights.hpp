// F32 views of a model's weights. F32 tensors are used in place from the
// mapped file (zero-copy); F16/BF16 tensors and int8 tensors with
// per-channel scales are expanded to F32 once at load, so every kernel sees
// F32 until the plugins grow native low-precision kernels. place() moves
// them to the model's device once (nothing to do on a host-addressable one).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "format/model_file.hpp"
#include "model/device_memory.hpp"

namespace parley {

struct WeightView {
  const float *data = nullptr;
  std::vector<int64_t> shape;
  int64_t numel() const;
};

class Weights {
 public:
  explicit Weights(const ModelFile &file);
  // Upload every tensor to `mem` unless it is host-addressable; afterwards
  // get()/optional() return device pointers and the host expansions are freed.
  void place(std::shared_ptr<const DeviceMemory> mem);
  bool has(const std::string &name) const { return views_.count(name) != 0; }
  // The tensor, which must exist with exactly `shape`; throws INVALID_MODEL naming it.
  const float *get(const std::string &name, const std::vector<int64_t> &shape) const;
  // The tensor if present (checked against `shape`), else nullptr.
  const float *optional(const std::string &name, const std::vector<int64_t> &shape) const;

 private:
  std::string label_;
  std::map<std::string, WeightView> views_;
  std::vector<std::unique_ptr<float[]>> owned_;
  std::vector<DeviceArray<float>> on_device_;
};

}  // namespace parley
