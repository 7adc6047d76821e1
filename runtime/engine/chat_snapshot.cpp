#include "engine/chat_snapshot.hpp"

#include <xxhash.h>

#include <climits>
#include <cstdint>
#include <cstring>

#include "core/error.hpp"

namespace parley {

namespace {

constexpr char kMagic[8] = {'P', 'L', 'Y', 'C', 'H', 'A', 'T', '\0'};
constexpr uint32_t kVersion = 1, kVersionKv = 2;

template <typename T>
void put(std::string &out, T v) {
  for (size_t i = 0; i < sizeof v; ++i) out.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
}

class Reader {
 public:
  Reader(const unsigned char *p, size_t n) : p_(p), n_(n) {}
  template <typename T>
  T get(const char *what) {
    need(sizeof(T), what);
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(p_[at_ + i]) << (8 * i);
    at_ += sizeof(T);
    return static_cast<T>(v);
  }
  std::string bytes(uint64_t n, const char *what) {
    need(n, what);
    std::string s(reinterpret_cast<const char *>(p_ + at_), static_cast<size_t>(n));
    at_ += static_cast<size_t>(n);
    return s;
  }
  size_t left() const { return n_ - at_; }

 private:
  void need(uint64_t n, const char *what) {
    if (n > n_ - at_)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string("saved chat is truncated: ") + what + " needs " +
                                              std::to_string(n) + " bytes, " + std::to_string(n_ - at_) + " are left");
  }
  const unsigned char *p_;
  size_t n_, at_ = 0;
};

}  // namespace

std::string save_chat(const ChatSnapshot &snapshot) {
  for (size_t i = 0; i < snapshot.messages.size(); ++i)
    if (snapshot.messages[i].uses_tools())
      fail(PARLEY_ERROR_UNSUPPORTED, "message " + std::to_string(i) +
                                         " uses tools: saving conversations with tool calls or results is not "
                                         "supported yet (version 1 stores role and text only)");
  if (snapshot.has_kv && snapshot.kv_data.size() != snapshot.kv_blocks * snapshot.kv_block_bytes)
    fail(PARLEY_ERROR_INTERNAL, "save_chat: the K/V bytes do not match their block count");
  std::string out(kMagic, sizeof kMagic);
  put<uint32_t>(out, snapshot.has_kv ? kVersionKv : kVersion);
  put<uint32_t>(out, (snapshot.has_system ? 1u : 0u) | (snapshot.has_kv ? 2u : 0u));
  put<uint64_t>(out, snapshot.messages.size());
  for (const ChatMessage &m : snapshot.messages) {
    put<uint32_t>(out, static_cast<uint32_t>(m.role));
    put<uint64_t>(out, m.content.size());
    out += m.content;
  }
  if (snapshot.has_kv) {
    put<uint64_t>(out, snapshot.kv_tokens.size());
    for (int32_t t : snapshot.kv_tokens) put<uint32_t>(out, static_cast<uint32_t>(t));
    put<uint64_t>(out, snapshot.kv_identity_lo);
    put<uint64_t>(out, snapshot.kv_identity_hi);
    put<uint64_t>(out, snapshot.kv_block_bytes);
    put<uint64_t>(out, snapshot.kv_blocks);
    out += snapshot.kv_data;
  }
  put<uint64_t>(out, XXH3_64bits(out.data(), out.size()));
  return out;
}

ChatSnapshot load_chat(const void *data, size_t size) {
  constexpr size_t kFixed = sizeof kMagic + 4 + 4 + 8 + 8;
  if (!data) fail(PARLEY_ERROR_INVALID_ARGUMENT, "saved chat data is NULL");
  if (size < kFixed)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "saved chat of " + std::to_string(size) +
                                            " bytes is shorter than its header (" + std::to_string(kFixed) + ")");
  const auto *p = static_cast<const unsigned char *>(data);
  if (std::memcmp(p, kMagic, sizeof kMagic) != 0)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "not a saved Parley chat (bad magic)");
  uint64_t stored = 0;
  for (size_t i = 0; i < 8; ++i) stored |= static_cast<uint64_t>(p[size - 8 + i]) << (8 * i);
  if (stored != XXH3_64bits(p, size - 8))
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "saved chat is corrupt (checksum mismatch)");
  Reader r(p + sizeof kMagic, size - sizeof kMagic - 8);
  const uint32_t version = r.get<uint32_t>("the version");
  if (version != kVersion && version != kVersionKv)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "saved chat version " + std::to_string(version) +
                                            " is not supported (this Parley reads versions " +
                                            std::to_string(kVersion) + " and " + std::to_string(kVersionKv) + ")");
  const uint32_t flags = r.get<uint32_t>("the flags");
  if (flags > (version == kVersionKv ? 3u : 1u))
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "saved chat (version " + std::to_string(version) + ") has unknown flags " + std::to_string(flags));
  const uint64_t count = r.get<uint64_t>("the message count");
  if (count > r.left() / 12)  // each message takes at least 12 bytes
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "saved chat claims " + std::to_string(count) + " messages in " + std::to_string(size) + " bytes");
  ChatSnapshot s;
  s.has_system = flags & 1u;
  s.has_kv = flags & 2u;
  s.messages.reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) {
    const uint32_t role = r.get<uint32_t>("a message's role");
    if (role > static_cast<uint32_t>(ChatRole::kAssistant))
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           "saved chat message " + std::to_string(i) + " has unknown role " + std::to_string(role));
    const uint64_t length = r.get<uint64_t>("a message's length");
    s.messages.push_back({static_cast<ChatRole>(role), r.bytes(length, "a message's content")});
    // Messages are NUL-terminated text (parley_chat_append): a NUL inside one
    // would cut what the C API hands out (parley_chat_message).
    if (const size_t nul = s.messages.back().content.find('\0'); nul != std::string::npos)
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           "saved chat message " + std::to_string(i) + " contains a NUL byte at offset " + std::to_string(nul));
  }
  if (s.has_kv) {
    const uint64_t tokens = r.get<uint64_t>("the K/V token count");
    if (tokens > r.left() / 4)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "saved chat claims " + std::to_string(tokens) + " K/V tokens in " +
                                              std::to_string(r.left()) + " remaining bytes");
    s.kv_tokens.reserve(static_cast<size_t>(tokens));
    for (uint64_t i = 0; i < tokens; ++i) {
      const uint32_t t = r.get<uint32_t>("a K/V token id");
      if (t > static_cast<uint32_t>(INT32_MAX))
        fail(PARLEY_ERROR_INVALID_ARGUMENT, "saved chat K/V token " + std::to_string(i) + " is negative");
      s.kv_tokens.push_back(static_cast<int32_t>(t));
    }
    s.kv_identity_lo = r.get<uint64_t>("the K/V identity");
    s.kv_identity_hi = r.get<uint64_t>("the K/V identity");
    s.kv_block_bytes = r.get<uint64_t>("the K/V block size in bytes");
    s.kv_blocks = r.get<uint64_t>("the K/V block count");
    if (s.kv_block_bytes == 0 || s.kv_blocks > r.left() / s.kv_block_bytes ||
        s.kv_blocks * s.kv_block_bytes != r.left())
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "saved chat K/V: " + std::to_string(s.kv_blocks) + " blocks of " +
                                              std::to_string(s.kv_block_bytes) + " bytes do not fill the " +
                                              std::to_string(r.left()) + " bytes left");
    s.kv_data = r.bytes(r.left(), "the K/V blocks");
  }
  if (r.left() != 0)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "saved chat has " + std::to_string(r.left()) + " bytes after its messages");
  if (s.has_system && (s.messages.empty() || s.messages[0].role != ChatRole::kSystem))
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "saved chat says it has a system prompt but its first message is not one");
  return s;
}

}  // namespace parley
