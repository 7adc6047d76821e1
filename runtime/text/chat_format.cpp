#include "text/chat_format.hpp"

#include "core/error.hpp"
#include "text/utf8.hpp"

namespace parley {

namespace {
const char *role_name(ChatRole r) {
  return r == ChatRole::kSystem ? "system"
         : r == ChatRole::kUser ? "user"
         : r == ChatRole::kTool ? "tool"
                                : "assistant";
}
std::string str(const flatbuffers::String *s) {
  return s ? s->str() : std::string();
}
bool py_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}
}  // namespace

std::string_view trim_unicode_space(std::string_view s) {
  size_t b = 0;
  while (b < s.size()) {
    size_t i = b;
    if (!py_space(utf8::next(s, i))) break;
    b = i;
  }
  size_t e = s.size();
  while (e > b) {
    size_t start = e - 1;
    while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t i = start;
    if (!py_space(utf8::next(s, i))) break;
    e = start;
  }
  return s.substr(b, e - b);
}

ChatFormat::ChatFormat(const format::ChatFormat &t)
    : begin_(str(t.begin())),
      prefix_{str(t.system_prefix()), str(t.user_prefix()), str(t.assistant_prefix())},
      suffix_{str(t.system_suffix()), str(t.user_suffix()), str(t.assistant_suffix())},
      generation_prompt_(str(t.generation_prompt())),
      default_system_(str(t.default_system())),
      separator_(str(t.system_separator())),
      strip_through_(str(t.assistant_strip_through())),
      placement_(t.system_placement()),
      trim_{t.trim_system(), t.trim_user(), t.trim_assistant()},
      alternate_(t.alternate()) {}

void ChatFormat::check_next(const std::vector<ChatMessage> &messages, ChatRole role) const {
  size_t index = messages.size();
  if (role == ChatRole::kTool)
    fail(PARLEY_ERROR_UNSUPPORTED, "message " + std::to_string(index) +
                                       ": tool messages need the model's Jinja chat template, which this file lacks");
  if (role == ChatRole::kSystem && index != 0)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "message " + std::to_string(index) + ": a system message may only start the conversation");
  if (!alternate_ || role == ChatRole::kSystem) return;
  size_t turn = index - (!messages.empty() && messages[0].role == ChatRole::kSystem ? 1 : 0);
  ChatRole want = turn % 2 == 0 ? ChatRole::kUser : ChatRole::kAssistant;
  if (role != want)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "message " + std::to_string(index) + ": this model's chat template needs " + role_name(want) + " and " +
             role_name(want == ChatRole::kUser ? ChatRole::kAssistant : ChatRole::kUser) + " turns to alternate, got " +
             role_name(role));
}

std::string ChatFormat::render(const std::vector<ChatMessage> &messages, bool add_generation_prompt,
                               std::vector<std::pair<size_t, size_t>> *text_ranges) const {
  std::vector<ChatMessage> seen;
  for (const ChatMessage &m : messages) {
    check_next(seen, m.role);
    seen.push_back(m);
  }
  auto content = [&](const ChatMessage &m) {
    auto r = static_cast<size_t>(m.role);
    std::string_view c = m.content;
    if (m.role == ChatRole::kAssistant && !strip_through_.empty()) {
      size_t at = c.rfind(strip_through_);
      if (at != std::string_view::npos) {
        c.remove_prefix(at + strip_through_.size());
        while (!c.empty() && c.front() == '\n') c.remove_prefix(1);
      }
    }
    return trim_[r] ? std::string(trim_unicode_space(c)) : std::string(c);
  };
  bool has_system = !messages.empty() && messages[0].role == ChatRole::kSystem;
  std::string system = has_system ? content(messages[0]) : default_system_;
  bool use_system = has_system || !default_system_.empty();

  // Which user message carries the system text when it is not its own turn.
  size_t carrier = messages.size();
  if (use_system && placement_ != format::SystemPlacement::OwnTurn) {
    for (size_t i = 0; i < messages.size(); ++i) {
      if (messages[i].role != ChatRole::kUser) continue;
      carrier = i;
      if (placement_ == format::SystemPlacement::FirstUserTurn) break;
    }
  }

  std::string out = begin_;
  if (text_ranges) text_ranges->clear();
  // A message's text; the template's default system text is the template's own.
  auto put_text = [&](const std::string &text, bool from_message) {
    if (from_message && text_ranges && !text.empty()) text_ranges->emplace_back(out.size(), out.size() + text.size());
    out += text;
  };
  if (use_system && placement_ == format::SystemPlacement::OwnTurn) {
    out += prefix_[0];
    put_text(system, has_system);
    out += suffix_[0];
  }
  for (size_t i = has_system ? 1 : 0; i < messages.size(); ++i) {
    auto r = static_cast<size_t>(messages[i].role);
    out += prefix_[r];
    if (i == carrier) {
      put_text(system, has_system);
      out += separator_;
    }
    put_text(content(messages[i]), true);
    out += suffix_[r];
  }
  if (add_generation_prompt) out += generation_prompt_;
  return out;
}

}  // namespace parley
