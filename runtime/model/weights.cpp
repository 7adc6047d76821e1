#include "model/weights.hpp"

#include <cstring>

#include "core/error.hpp"
#include "core/escape.hpp"
#include "model/half.hpp"

namespace parley {

namespace {

std::string shape_str(const std::vector<int64_t> &s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void dequantize(const TensorRef &t, float *dst) {
  const int64_t n = t.numel();
  switch (t.dtype) {
    case PARLEY_DTYPE_F32:
      std::memcpy(dst, t.data, static_cast<size_t>(n) * 4);
      return;
    case PARLEY_DTYPE_F16:
    case PARLEY_DTYPE_BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        dst[i] = t.dtype == PARLEY_DTYPE_F16 ? half_to_float(h) : bf16_to_float(h);
      }
      return;
    case PARLEY_DTYPE_I8:
    case PARLEY_DTYPE_I4: {
      auto q = [&](int64_t i) -> int {
        if (t.dtype == PARLEY_DTYPE_I8) return static_cast<int8_t>(t.data[i]);
        const uint8_t b = t.data[i / 2];
        return (i & 1) ? static_cast<int8_t>(b) >> 4 : static_cast<int8_t>(static_cast<uint8_t>(b << 4)) >> 4;
      };
      if (t.quant == PARLEY_QUANT_GROUPWISE) {
        const int64_t cols = t.shape.back(), groups = cols / t.group_size;
        for (int64_t i = 0; i < n; ++i) dst[i] = q(i) * t.scales[(i / cols) * groups + (i % cols) / t.group_size];
        return;
      }
      // PER_ROW: scales run along scale_axis.
      int64_t inner = 1;
      for (size_t d = static_cast<size_t>(t.scale_axis) + 1; d < t.shape.size(); ++d) inner *= t.shape[d];
      const int64_t axis_len = t.shape[static_cast<size_t>(t.scale_axis)];
      for (int64_t i = 0; i < n; ++i) dst[i] = q(i) * t.scales[(i / inner) % axis_len];
      return;
    }
    default:
      fail(PARLEY_ERROR_INTERNAL,
           "tensor " + quote_untrusted(t.name) + ": dtype " + std::to_string(t.dtype) + " cannot be converted to f32");
  }
}

Weights::Weights(const ModelFile &file, std::shared_ptr<const DeviceMemory> mem)
    : label_(file.label()), mem_(std::move(mem)) {
  for (const TensorView &t : file.tensors()) {
    TensorRef r;
    r.name = t.name;
    r.dtype = t.dtype;
    r.shape = t.shape;
    r.data = t.data;
    r.length = t.length;
    switch (t.dtype) {
      case PARLEY_DTYPE_F32:
      case PARLEY_DTYPE_F16:
      case PARLEY_DTYPE_BF16:
        break;
      case PARLEY_DTYPE_I8:
      case PARLEY_DTYPE_I4: {
        if (t.scale_tensor.empty()) continue;                    // raw integers are not a weight
        const TensorView *s = file.find_tensor(t.scale_tensor);  // the loader checked it exists, f32, right shape
        r.quant = t.quant ? t.quant : PARLEY_QUANT_PER_ROW;
        r.scale_axis = t.scale_axis;
        r.scales = reinterpret_cast<const float *>(s->data);
        r.group_size = t.group_size;
        break;
      }
      default:
        continue;  // integer tensors are not weights
    }
    refs_.emplace(t.name, std::move(r));
  }
}

const TensorRef *Weights::find(const std::string &name, const std::vector<int64_t> &shape) const {
  auto it = refs_.find(name);
  if (it == refs_.end()) return nullptr;
  if (it->second.shape != shape)
    fail(PARLEY_ERROR_INVALID_MODEL, label_ + ": tensor " + quote_untrusted(name) + " has shape " +
                                         shape_str(it->second.shape) + " but the config needs " + shape_str(shape));
  return &it->second;
}

const TensorRef &Weights::ref(const std::string &name, const std::vector<int64_t> &shape) const {
  const TensorRef *r = find(name, shape);
  if (!r)
    fail(PARLEY_ERROR_INVALID_MODEL, label_ + ": tensor " + quote_untrusted(name) + " " + shape_str(shape) +
                                         " is required by the config but missing");
  return *r;
}

const float *Weights::f32_optional(const std::string &name, const std::vector<int64_t> &shape) {
  const TensorRef *r = find(name, shape);
  if (!r) return nullptr;
  auto it = f32_.find(name);
  if (it != f32_.end()) return it->second;
  const size_t n = static_cast<size_t>(r->numel());
  const float *host = nullptr;
  std::unique_ptr<float[]> converted;
  if (r->dtype == PARLEY_DTYPE_F32 && r->quant == PARLEY_QUANT_NONE) {
    host = reinterpret_cast<const float *>(r->data);  // 64-byte aligned by the format
  } else {
    converted = std::make_unique<float[]>(n);
    dequantize(*r, converted.get());
    host = converted.get();
  }
  const float *view = host;
  if (!mem_->host_addressable()) {
    DeviceArray<float> d(mem_, n);
    d.upload(host, n);
    view = d.data();
    on_device_.push_back(std::move(d));
    expanded_bytes_ += n * sizeof(float);
  } else if (converted) {
    owned_.push_back(std::move(converted));
    expanded_bytes_ += n * sizeof(float);
  }
  f32_.emplace(name, view);
  return view;
}

const float *Weights::f32(const std::string &name, const std::vector<int64_t> &shape) {
  const float *p = f32_optional(name, shape);
  if (!p)
    fail(PARLEY_ERROR_INVALID_MODEL, label_ + ": tensor " + quote_untrusted(name) + " " + shape_str(shape) +
                                         " is required by the config but missing");
  return p;
}

}  // namespace parley
