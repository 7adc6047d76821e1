// A chat session's conversation as bytes a host can store (a database row,
// a file) and give back later, to the same model or another chat model:
// parley_chat_session_save / _restore.
//
// Layout (little-endian): "PLYCHAT\0", u32 version (1, or 2 with K/V), u32
// flags (bit 0: the first message is the session's system prompt; bit 1:
// K/V follow the messages, version 2 only), u64 message count, then per
// message u32 role (0 system, 1 user, 2 assistant), u64 byte length and the
// UTF-8 content; with bit 1 the K/V: u64 token count and the token ids (i32
// each) the K/V stand for, the engine identity (BlockKey lo, hi: u64 each;
// serve/block_manager.hpp: model file, KV dtype and block size), u64 bytes
// per block, u64 block count and the blocks' bytes (Transformer::
// read_kv_block); then u64 XXH3-64 of everything before it. Without K/V,
// version 1 is written (what every Parley reads): the K/V of a restored
// conversation are then found in the serving engine's prefix cache when
// they are still there, and recomputed otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "text/chat_format.hpp"

namespace parley {

struct ChatSnapshot {
  bool has_system = false;  // messages[0] is the system prompt
  std::vector<ChatMessage> messages;
  // Version 2: the K/V of the first kv_blocks full blocks of kv_tokens.
  bool has_kv = false;
  std::vector<int32_t> kv_tokens;
  uint64_t kv_identity_lo = 0, kv_identity_hi = 0;
  uint64_t kv_block_bytes = 0, kv_blocks = 0;
  std::string kv_data;  // kv_blocks * kv_block_bytes bytes
};

// Throws UNSUPPORTED for a message that uses tools (not stored by version 1).
std::string save_chat(const ChatSnapshot &snapshot);
// Throws INVALID_ARGUMENT naming what is wrong (size, magic, version,
// checksum, a role or length out of range). Content is checked later, by
// the session (UTF-8, role order).
ChatSnapshot load_chat(const void *data, size_t size);

}  // namespace parley
