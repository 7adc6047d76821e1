// Renders a conversation into the prompt text a dialogue model was trained
// on, from the ChatFormat the converter reduced the model's Jinja chat
// template to (formats/parley.fbs). The converter proves the reduction on
// probe conversations against transformers' apply_chat_template, so this is
// plain string assembly, no template engine.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "format/model_file.hpp"
#include "parley_generated.h"

namespace parley {

enum class ChatRole { kSystem, kUser, kAssistant, kTool };

struct ChatMessage {
  ChatMessage() = default;
  ChatMessage(ChatRole r, std::string c) : role(r), content(std::move(c)) {}
  ChatRole role = ChatRole::kUser;
  std::string content;
  // Tool use (rendered only by the model's Jinja template, chat_template.hpp):
  // an assistant message's calls as a JSON array (empty: none), a tool
  // result's call id and function name (empty: none).
  std::string tool_calls, tool_call_id, name;
  // Needs the Jinja template: the per-role reduction has no place for it.
  bool uses_tools() const {
    return role == ChatRole::kTool || !tool_calls.empty() || !tool_call_id.empty() || !name.empty();
  }
};

class ChatFormat {
 public:
  explicit ChatFormat(const format::ChatFormat &table);

  // The prompt text for `messages` (a system message may only come first;
  // with `alternate`, user and assistant turns must alternate starting with
  // the user). Throws Error(INVALID_ARGUMENT) naming the offending message.
  // With `text_ranges`, it receives the byte ranges [begin, end) of the
  // prompt that hold the messages' text (sorted, disjoint): the caller
  // encodes them as text (Tokenizer::encode_prompt), so a message cannot
  // produce the template's control tokens; everything else is the template's.
  std::string render(const std::vector<ChatMessage> &messages, bool add_generation_prompt,
                     std::vector<std::pair<size_t, size_t>> *text_ranges = nullptr) const;

  // Checks that `role` may follow `messages` (same rules as render()).
  void check_next(const std::vector<ChatMessage> &messages, ChatRole role) const;

 private:
  std::string begin_, prefix_[3], suffix_[3], generation_prompt_, default_system_, separator_, strip_through_;
  format::SystemPlacement placement_;
  bool trim_[3];
  bool alternate_;
};

// Python's str.strip() (what Jinja's `trim` filter calls): Unicode whitespace.
std::string_view trim_unicode_space(std::string_view s);

}  // namespace parley
