// Test helpers: read a model file into memory, take it apart into the
// FlatBuffers object form and put it back together with valid checksums, so
// a test can plant one specific defect behind intact checksums.
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "parley_generated.h"

namespace parley::test {

using Bytes = std::vector<uint8_t>;

inline std::string data_dir() {
  const char *d = std::getenv("PARLEY_TEST_DATA_DIR");
  if (!d) throw std::runtime_error("PARLEY_TEST_DATA_DIR is not set (run through ctest)");
  return d;
}

inline std::string plugin_dir() {
  const char *d = std::getenv("PARLEY_PLUGIN_BUILD_DIR");
  if (!d) throw std::runtime_error("PARLEY_PLUGIN_BUILD_DIR is not set (run through ctest)");
  return d;
}

inline Bytes read_file(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

inline void write_file(const std::string &path, const Bytes &b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char *>(b.data()), static_cast<std::streamsize>(b.size()));
}

inline uint64_t get64(const Bytes &b, size_t at) {
  uint64_t v;
  std::memcpy(&v, b.data() + at, 8);
  return v;
}
inline void put64(Bytes &b, size_t at, uint64_t v) {
  std::memcpy(b.data() + at, &v, 8);
}
inline void put16(Bytes &b, size_t at, uint16_t v) {
  std::memcpy(b.data() + at, &v, 2);
}

// Recompute the preamble checksum (bytes 0..55) after editing the preamble.
inline void fix_preamble(Bytes &b) {
  put64(b, 56, XXH3_64bits(b.data(), 56));
}

// Recompute header and preamble checksums after editing header bytes in place.
// A damaged header range (offset/length past the end) is left as it is.
inline void fix_checksums(Bytes &b) {
  uint64_t off = get64(b, 16), len = get64(b, 24);
  if (off <= b.size() && len <= b.size() - off) put64(b, 32, XXH3_64bits(b.data() + off, len));
  fix_preamble(b);
}

struct Parts {
  format::ModelT model;
  Bytes data;  // the data section
};

inline Parts split(const Bytes &b) {
  Parts p;
  uint64_t hoff = get64(b, 16), hlen = get64(b, 24), doff = get64(b, 40), dlen = get64(b, 48);
  format::GetModel(b.data() + hoff)->UnPackTo(&p.model);
  p.data.assign(b.begin() + static_cast<long>(doff), b.begin() + static_cast<long>(doff + dlen));
  (void)hlen;
  return p;
}

// Assemble a file from parts; `edit_preamble` may change fields before the
// preamble checksum is computed.
inline Bytes join(const Parts &p, const std::function<void(Bytes &)> &edit_preamble = {}) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(format::Model::Pack(fbb, &p.model), format::ModelIdentifier());
  const uint8_t *h = fbb.GetBufferPointer();
  uint64_t hlen = fbb.GetSize();
  uint64_t doff = (64 + hlen + 63) / 64 * 64;
  Bytes out(doff + p.data.size(), 0);
  const uint8_t magic[8] = {0x89, 'P', 'R', 'L', 'Y', '\r', '\n', 0x1a};
  std::memcpy(out.data(), magic, 8);
  put16(out, 8, 1);
  put16(out, 10, 0);
  uint32_t psize = 64;
  std::memcpy(out.data() + 12, &psize, 4);
  put64(out, 16, 64);
  put64(out, 24, hlen);
  put64(out, 32, XXH3_64bits(h, hlen));
  put64(out, 40, doff);
  put64(out, 48, p.data.size());
  std::memcpy(out.data() + 64, h, hlen);
  if (!p.data.empty()) std::memcpy(out.data() + doff, p.data.data(), p.data.size());
  if (edit_preamble) edit_preamble(out);
  fix_preamble(out);
  return out;
}

inline Bytes rewrite(const Bytes &b, const std::function<void(Parts &)> &edit) {
  Parts p = split(b);
  edit(p);
  return join(p);
}

// Issue 11 (format 1.2): I4 tensors and group-wise scales. make_groupwise
// turns the reference file's int8 down projection [32, 64] into a group-wise
// tensor of `dtype` (its bytes reused: any byte is a valid pair of i4
// values) with a new scale tensor [32, 64 / group] appended to the data
// section under the old scale's name; every checksum is recomputed.
inline constexpr const char *kDown = "decoder.layers.1.mlp.down_proj.weight";
inline constexpr const char *kDownScale = "decoder.layers.1.mlp.down_proj.weight_scale";

inline format::TensorT &tensor_named(Parts &p, const std::string &name) {
  for (auto &t : p.model.tensors)
    if (t->name == name) return *t;
  throw std::runtime_error("the reference file has no tensor " + name);
}

inline void set_region(Parts &p, format::TensorT &t, const std::vector<uint8_t> &bytes) {
  size_t at = (p.data.size() + 63) / 64 * 64;
  p.data.resize(at + bytes.size(), 0);
  std::memcpy(p.data.data() + at, bytes.data(), bytes.size());
  t.offset = at;
  t.length = bytes.size();
  t.checksum = XXH3_64bits(bytes.data(), bytes.size());
}

inline void make_groupwise(Parts &p, format::DType dtype, uint32_t group, float bad_scale = 1.0f) {
  format::TensorT &w = tensor_named(p, kDown);
  format::TensorT &s = tensor_named(p, kDownScale);
  w.dtype = dtype;
  w.length = dtype == format::DType::I4 ? 32 * 64 / 2 : 32 * 64;
  w.checksum = XXH3_64bits(p.data.data() + w.offset, w.length);
  w.quantization->scheme = format::QuantScheme::SymmetricGroupwise;
  w.quantization->axis = 0;
  w.quantization->group_size = group;
  std::vector<float> scales(32 * (64 / group));
  for (size_t i = 0; i < scales.size(); ++i) scales[i] = 0.01f * static_cast<float>(i + 1);
  scales[scales.size() / 2] *= bad_scale;  // NaN or infinity when a case asks for it
  std::vector<uint8_t> bytes(scales.size() * sizeof(float));
  std::memcpy(bytes.data(), scales.data(), bytes.size());
  s.shape = {32, int64_t{64} / group};
  set_region(p, s, bytes);
}

}  // namespace parley::test
