// A chat session's conversation as bytes a host can store (a database row,
// a file) and give back later, to the same model or another chat model:
// parley_chat_session_save / _restore.
//
// Layout (little-endian): "PLYCHAT\0", u32 version (1), u32 flags (bit 0:
// the first message is the session's system prompt), u64 message count,
// then per message u32 role (0 system, 1 user, 2 assistant), u64 byte
// length and the UTF-8 content, then u64 XXH3-64 of everything before it.
// Only the text is stored: the K/V of a restored conversation is found in
// the serving engine's prefix cache when it is still there, and recomputed
// otherwise.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "text/chat_format.hpp"

namespace parley {

struct ChatSnapshot {
  bool has_system = false;  // messages[0] is the system prompt
  std::vector<ChatMessage> messages;
};

// Throws UNSUPPORTED for a message that uses tools (not stored by version 1).
std::string save_chat(const ChatSnapshot &snapshot);
// Throws INVALID_ARGUMENT naming what is wrong (size, magic, version,
// checksum, a role or length out of range). Content is checked later, by
// the session (UTF-8, role order).
ChatSnapshot load_chat(const void *data, size_t size);

}  // namespace parley
