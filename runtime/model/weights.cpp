#include "model/weights.hpp"

#include <cstring>

#include "core/error.hpp"
#include "core/escape.hpp"

namespace parley {

namespace {

float half_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::string shape_str(const std::vector<int64_t> &s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

int64_t WeightView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Weights::Weights(const ModelFile &file) : label_(file.label()) {
  for (const TensorView &t : file.tensors()) {
    WeightView v;
    v.shape = t.shape;
    int64_t n = v.numel();
    switch (t.dtype) {
      case PARLEY_DTYPE_F32:
        v.data = reinterpret_cast<const float *>(t.data);  // 64-byte aligned by the format
        break;
      case PARLEY_DTYPE_F16:
      case PARLEY_DTYPE_BF16: {
        auto buf = std::make_unique<float[]>(static_cast<size_t>(n));
        const uint8_t *src = t.data;
        for (int64_t i = 0; i < n; ++i) {
          uint16_t h;
          std::memcpy(&h, src + 2 * i, 2);
          buf[i] = t.dtype == PARLEY_DTYPE_F16 ? half_to_float(h) : bf16_to_float(h);
        }
        v.data = buf.get();
        owned_.push_back(std::move(buf));
        break;
      }
      case PARLEY_DTYPE_I8: {
        if (t.scale_tensor.empty()) continue;  // raw int8 data is not a weight
        const TensorView *s = file.find_tensor(t.scale_tensor);
        auto buf = std::make_unique<float[]>(static_cast<size_t>(n));
        const auto *q = reinterpret_cast<const int8_t *>(t.data);
        const auto *scale = reinterpret_cast<const float *>(s->data);
        // Scales run along `axis`: index of element i on that axis.
        int64_t inner = 1;
        for (size_t d = static_cast<size_t>(t.scale_axis) + 1; d < t.shape.size(); ++d) inner *= t.shape[d];
        int64_t axis_len = t.shape[static_cast<size_t>(t.scale_axis)];
        for (int64_t i = 0; i < n; ++i) buf[i] = q[i] * scale[(i / inner) % axis_len];
        v.data = buf.get();
        owned_.push_back(std::move(buf));
        break;
      }
      default:
        continue;  // integer tensors are not weights
    }
    views_.emplace(t.name, std::move(v));
  }
}

void Weights::place(std::shared_ptr<const DeviceMemory> mem) {
  if (mem->host_addressable()) return;
  for (auto &[name, view] : views_) {
    DeviceArray<float> d(mem, static_cast<size_t>(view.numel()));
    d.upload(view.data, d.size());
    view.data = d.data();
    on_device_.push_back(std::move(d));
  }
  owned_.clear();
}

const float *Weights::optional(const std::string &name, const std::vector<int64_t> &shape) const {
  auto it = views_.find(name);
  if (it == views_.end()) return nullptr;
  if (it->second.shape != shape)
    fail(PARLEY_ERROR_INVALID_MODEL, label_ + ": tensor " + quote_untrusted(name) + " has shape " +
                                         shape_str(it->second.shape) + " but the config needs " + shape_str(shape));
  return it->second.data;
}

const float *Weights::get(const std::string &name, const std::vector<int64_t> &shape) const {
  const float *p = optional(name, shape);
  if (!p)
    fail(PARLEY_ERROR_INVALID_MODEL, label_ + ": tensor " + quote_untrusted(name) + " " + shape_str(shape) +
                                         " is required by the config but missing");
  return p;
}

}  // namespace parley
