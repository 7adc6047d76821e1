// A conversation with a decoder-only model that keeps its KV cache between
// turns. Each turn renders the whole conversation with the model's chat
// format and tokenizes it, keeps the longest prefix that is already in the
// cache, and runs the model only on the rest, so a follow-up question costs
// its own tokens, not the history's. The reply streams as UTF-8 text that
// never splits a code point and never shows a (partial) stop string.
//
// Thread-safety: one thread uses a session at a time, except cancel(), which
// any thread may call while generate() runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/decoding.hpp"
#include "model/transformer.hpp"
#include "serve/engine.hpp"
#include "text/text_model.hpp"

namespace parley {

// While ChatReplyOptions::on_text runs: what the text handed over so far
// covers.
struct ChatStreamProgress {
  bool in_text = false;  // set only during an on_text call
  // Reply tokens whose text the pieces so far hold entirely (this piece
  // included; an EOS is never covered).
  size_t tokens = 0;
  // The reply so far (its tokens, and logprobs / alternatives as asked for).
  const Hypothesis *hypothesis = nullptr;
};

struct ChatReplyOptions {
  DecodingOptions decoding;  // num_beams must be 1; on_token is the session's
  std::vector<std::string> stop;
  // Text deltas as they become final; returning false ends the reply there.
  std::function<bool(std::string_view)> on_text;
  // With decoding.return_logprobs: receives the reply's per-token
  // log-probabilities (Hypothesis::logprobs). decoding.cancel set before or
  // during the turn cancels it like cancel().
  std::vector<float> *logprobs = nullptr;
  // Receives the turn's hypothesis: its generated tokens (an EOS and what a
  // stop string cut included), and logprobs / alternatives when
  // decoding.return_logprobs / num_alternatives asked for them.
  Hypothesis *hypothesis = nullptr;
  // Updated around every on_text call (see ChatStreamProgress). May be null.
  ChatStreamProgress *progress = nullptr;
  // Context policy: false = a conversation too long for the model fails the
  // turn; true = the oldest turns after the system prompt are dropped from
  // the conversation until the prompt leaves room for the reply.
  bool drop_oldest = false;
  // reply_task: where the turn goes on after waiting for the serving engine
  // without a thread (asynchronous requests). NULL: it blocks its thread.
  Resumer *resumer = nullptr;
};

struct ChatCounters {
  uint64_t last_prompt_tokens = 0;     // tokens of the rendered prompt at the last turn
  uint64_t last_reused_tokens = 0;     // ... of which were already in the KV cache
  uint64_t last_processed_tokens = 0;  // ... the model ran on (prompt part, excluding the reply)
  uint64_t last_generated_tokens = 0;
  uint64_t total_processed_tokens = 0;  // prompt tokens the model ran on over the session
  uint64_t cached_tokens = 0;           // tokens in the KV cache now
  uint64_t last_dropped_messages = 0;   // messages the context policy dropped at the last turn
  uint64_t total_dropped_messages = 0;
  // Renderings of the conversation the last turn took to fit it (drop-oldest
  // bisects: O(log turns)).
  uint64_t last_prompt_renders = 0;
  // The last reply's ConstraintStatus (0 without a grammar).
  int32_t last_constraint_status = 0;
};

class ChatSession {
 public:
  // Throws Error: UNSUPPORTED for encoder-decoder models or files without
  // a chat format / tokenizer.
  // With an engine, the session's turns run through it (batched with every
  // other request of the model); between turns the session holds no KV
  // memory: its full blocks stay in the engine's prefix cache, where the
  // next turn finds them unless they were evicted meanwhile (then they are
  // recomputed). Without one, the session keeps its own contiguous cache.
  ChatSession(const Transformer &model, const TextModel &text, const DecodingOptions &defaults,
              std::string system_prompt, bool has_system, Engine *engine = nullptr);

  void append(ChatRole role, std::string content);
  // Any message, tool use included (ChatMessage): tool calls are checked
  // (check_tool_calls_json), and need the model's Jinja chat template.
  void append(ChatMessage message);
  // Tool definitions (a JSON array, check_tools_json) the template renders
  // on every turn; empty: none. With tools, a reply that holds tool calls
  // (parse_tool_calls) of declared functions is stored as an assistant
  // message with tool_calls, ids numbered on from the conversation's calls.
  void set_tools(std::string tools_json);
  const std::string &tools() const { return tools_; }
  // Generates the assistant's reply, appends it to the conversation and
  // returns it. Throws Error(CANCELLED) when cancel() was called (the
  // conversation is then unchanged; the cache keeps what it computed).
  std::string reply(const ChatReplyOptions &options);
  // The same as a coroutine: with options.resumer it holds no thread while
  // the serving engine runs the turn. `options` must outlive it.
  Task<std::string> reply_task(const ChatReplyOptions &options);
  void cancel() { cancel_.store(true); }
  // Back to the system prompt only (the cached system prompt is reused).
  void reset();
  // Drops the last message (not the session's system prompt); NOT_FOUND when
  // there is none.
  void remove_last();

  const std::vector<ChatMessage> &messages() const { return messages_; }
  bool has_system() const { return base_messages_ > 0; }  // messages()[0] is the session's system prompt
  const ChatCounters &counters() const { return counters_; }
  // The serving engine the turns run through (nullptr: a contiguous cache),
  // and the tokens whose K/V the session's engine sequence stands for (empty
  // before the first turn).
  Engine *engine() const { return engine_; }
  std::vector<int32_t> engine_tokens() const { return seq_ ? seq_->tokens() : std::vector<int32_t>(); }
  // The chain root of the session's engine blocks: NULL for the model's
  // shared one, or a private root (set before the first turn) for a session
  // restored with K/V from outside, whose blocks then serve it alone.
  const BlockKey *kv_root() const { return private_root_ ? &*private_root_ : nullptr; }
  void set_private_kv_root(const BlockKey &root) { private_root_ = root; }
  const DecodingOptions &defaults() const { return defaults_; }

 private:
  void ensure_capacity(int64_t tokens);
  // The prompt: the per-role reduction where it applies, else the Jinja template.
  std::string render(const std::vector<ChatMessage> &conversation,
                     std::vector<std::pair<size_t, size_t>> *text_ranges) const;
  bool needs_template(const std::vector<ChatMessage> &conversation) const;
  // needs_template(messages_) in O(1): appends stay constant-time in long conversations.
  bool session_needs_template() const { return !text_.chat || !tools_.empty() || tool_messages_ > 0; }
  // Runs `fresh` (the prompt after the reused prefix) and the decoding loop;
  // returns the prompt's... see reply().
  // Both return the turn's hypothesis.
  Hypothesis run_turn_contiguous(const std::vector<int32_t> &ids, size_t keep, DecodingOptions &dec);
  Task<Hypothesis> run_turn_engine(const std::vector<int32_t> &ids, DecodingOptions &dec, Resumer *resumer);

  const Transformer &model_;
  const TextModel &text_;
  DecodingOptions defaults_;
  std::vector<ChatMessage> messages_;
  std::string tools_;
  std::vector<std::string> tool_names_;  // the functions tools_ declares
  size_t base_messages_ = 0;             // the system prompt, kept by reset()
  size_t tool_messages_ = 0;             // messages_ entries that use tools
  Engine *engine_ = nullptr;
  Engine::SequencePtr seq_;  // engine path: the conversation's tokens (K/V in the engine)
  std::optional<BlockKey> private_root_;
  DecoderState state_;
  std::vector<int32_t> cached_;  // token ids whose K/V are in state_
  ChatCounters counters_;
  std::atomic<bool> cancel_{false};
};

}  // namespace parley
