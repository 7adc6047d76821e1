// Protobuf wire format for tests that build or mutate serialized messages
// (SentencePiece ModelProto): a message as its list of top-level fields.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace parley::test::proto_wire {

struct Field {
  uint32_t num = 0;
  uint32_t wire = 0;  // 0 varint, 1 fixed64, 2 bytes, 5 fixed32
  uint64_t v = 0;     // varint value
  std::string b;      // bytes / fixed payload
};

inline bool read_varint(std::string_view s, size_t &i, uint64_t &v) {
  v = 0;
  for (int k = 0; k < 10 && i < s.size(); ++k) {
    auto c = static_cast<unsigned char>(s[i++]);
    v |= static_cast<uint64_t>(c & 0x7F) << (7 * k);
    if (!(c & 0x80)) return true;
  }
  return false;
}

inline void put_varint(std::string &out, uint64_t v) {
  do {
    unsigned char c = v & 0x7F;
    v >>= 7;
    out += static_cast<char>(v ? (c | 0x80) : c);
  } while (v);
}

// False on a malformed message (truncated varint or payload, wire type 3/4/6/7).
inline bool parse(std::string_view s, std::vector<Field> &out) {
  out.clear();
  for (size_t i = 0; i < s.size();) {
    uint64_t tag = 0, len = 0;
    if (!read_varint(s, i, tag)) return false;
    Field f;
    f.num = static_cast<uint32_t>(tag >> 3);
    f.wire = static_cast<uint32_t>(tag & 7);
    if (f.wire == 0) {
      if (!read_varint(s, i, f.v)) return false;
    } else if (f.wire == 1 || f.wire == 5) {
      len = f.wire == 1 ? 8 : 4;
    } else if (f.wire == 2) {
      if (!read_varint(s, i, len)) return false;
    } else {
      return false;
    }
    if (len > s.size() - i) return false;
    f.b = std::string(s.substr(i, len));
    i += len;
    out.push_back(std::move(f));
  }
  return true;
}

// For messages the test made itself: a malformed one is a bug in the test.
inline std::vector<Field> parse_or_throw(std::string_view s) {
  std::vector<Field> out;
  if (!parse(s, out)) throw std::runtime_error("malformed protobuf message");
  return out;
}

inline std::string serialize(const std::vector<Field> &fields) {
  std::string out;
  for (const Field &f : fields) {
    put_varint(out, (uint64_t{f.num} << 3) | f.wire);
    if (f.wire == 0) put_varint(out, f.v);
    if (f.wire == 2) put_varint(out, f.b.size());
    if (f.wire != 0) out += f.b;
  }
  return out;
}

inline Field varint_field(uint32_t num, int64_t v) {
  return Field{num, 0, static_cast<uint64_t>(v), {}};
}
inline Field bytes_field(uint32_t num, std::string b) {
  return Field{num, 2, 0, std::move(b)};
}
inline Field float_field(uint32_t num, float x) {
  Field f{num, 5, 0, std::string(4, '\0')};
  std::memcpy(f.b.data(), &x, 4);
  return f;
}

}  // namespace parley::test::proto_wire
