#include "engine/chat_session.hpp"

#include <algorithm>
#include <cstring>
#include <optional>

#include "core/error.hpp"
#include "core/memory_scope.hpp"
#include "engine/token_constraint.hpp"
#include "engine/transformer_step_model.hpp"
#include "serve/engine_step_model.hpp"
#include "text/utf8.hpp"

namespace parley {

namespace {
size_t count_tool_messages(const std::vector<ChatMessage> &messages) {
  size_t n = 0;
  for (const ChatMessage &m : messages) n += m.uses_tools() ? 1 : 0;
  return n;
}
}  // namespace

ChatSession::ChatSession(const Transformer &model, const TextModel &text, const DecodingOptions &defaults,
                         std::string system_prompt, bool has_system, Engine *engine)
    : model_(model), text_(text), defaults_(defaults), engine_(engine) {
  if (model.encoder_decoder())
    fail(PARLEY_ERROR_UNSUPPORTED, "chat needs a decoder-only model; this one is encoder-decoder (translate instead)");
  if (!text.chat && !text.chat_template) {
    if (!text.chat_template_error.empty())
      fail(PARLEY_ERROR_INVALID_MODEL, "the model's chat template cannot be used: " + text.chat_template_error);
    fail(PARLEY_ERROR_UNSUPPORTED, "the model file has no chat format (it was converted without a chat template)");
  }
  if (has_system) append(ChatRole::kSystem, std::move(system_prompt));
  base_messages_ = messages_.size();
}

void ChatSession::append(ChatRole role, std::string content) {
  ChatMessage m;
  m.role = role;
  m.content = std::move(content);
  append(std::move(m));
}

void ChatSession::append(ChatMessage m) {
  size_t bad = 0;
  for (const std::string *s : {&m.content, &m.tool_call_id, &m.name})
    if (!utf8::valid(*s, &bad))
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "message is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
  if (!m.tool_calls.empty()) {
    if (m.role != ChatRole::kAssistant) fail(PARLEY_ERROR_INVALID_ARGUMENT, "only assistant messages carry tool calls");
    check_tool_calls_json(m.tool_calls);
  }
  if (m.uses_tools() && !text_.chat_template)
    fail(PARLEY_ERROR_UNSUPPORTED,
         "tool calls and tool results need the model's Jinja chat template" +
             (text_.chat_template_error.empty() ? std::string(", which this model file lacks")
                                                : ", which cannot be used: " + text_.chat_template_error));
  // Whatever renders it (a tool message used to let one through).
  if (m.role == ChatRole::kSystem && !messages_.empty())
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "message " + std::to_string(messages_.size()) + ": a system message may only start the conversation");
  // The per-role reduction checks the role order as its template would; the
  // Jinja template checks at rendering (raise_exception).
  if (!session_needs_template() && !m.uses_tools()) text_.chat->check_next(messages_, m.role);
  tool_messages_ += m.uses_tools() ? 1 : 0;
  messages_.push_back(std::move(m));
}

void ChatSession::set_tools(std::string tools_json) {
  if (!tools_json.empty()) {
    check_tools_json(tools_json);
    if (!text_.chat_template)
      fail(PARLEY_ERROR_UNSUPPORTED,
           "tools need the model's Jinja chat template" +
               (text_.chat_template_error.empty() ? std::string(", which this model file lacks")
                                                  : ", which cannot be used: " + text_.chat_template_error));
  }
  tool_names_ = tools_json.empty() ? std::vector<std::string>{} : declared_tool_names(tools_json);
  tools_ = std::move(tools_json);
}

bool ChatSession::needs_template(const std::vector<ChatMessage> &conversation) const {
  return !text_.chat || !tools_.empty() || count_tool_messages(conversation) > 0;
}

std::string ChatSession::render(const std::vector<ChatMessage> &conversation,
                                std::vector<std::pair<size_t, size_t>> *text_ranges) const {
  if (!needs_template(conversation))
    return text_.chat->render(conversation, /*add_generation_prompt=*/true, text_ranges);
  return text_.chat_template->render(conversation, /*add_generation_prompt=*/true, text_ranges, tools_);
}

void ChatSession::reset() {
  messages_.resize(base_messages_);
  tool_messages_ = count_tool_messages(messages_);
  cancel_.store(false);
}

void ChatSession::remove_last() {
  if (messages_.size() <= base_messages_) fail(PARLEY_ERROR_NOT_FOUND, "no message to remove after the system prompt");
  tool_messages_ -= messages_.back().uses_tools() ? 1 : 0;
  messages_.pop_back();
}

void ChatSession::ensure_capacity(int64_t tokens) {
  if (state_.batch == 1 && state_.capacity >= tokens) return;
  const int64_t limit = model_.decoder_params().max_positions;
  int64_t cap = std::max<int64_t>(tokens, std::max<int64_t>(256, state_.capacity * 2));
  if (limit > 0) cap = std::min(cap, limit);
  if (cap < tokens)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "the conversation needs " + std::to_string(tokens) +
                                            " tokens, more than the model's " + std::to_string(limit) + " positions");
  if (state_.batch == 1)
    model_.grow(state_, cap);  // keeps the cached conversation
  else
    state_ = model_.start(1, cap);
}

namespace {
// Length of the longest suffix of `text` that is a proper prefix of a stop string.
size_t partial_stop(std::string_view text, const std::vector<std::string> &stops) {
  size_t hold = 0;
  for (const std::string &s : stops)
    for (size_t n = std::min(s.size() - 1, text.size()); n > hold; --n)
      if (text.substr(text.size() - n) == std::string_view(s).substr(0, n)) {
        hold = n;
        break;
      }
  return hold;
}
}  // namespace

std::string ChatSession::reply(const ChatReplyOptions &options) {
  MemoryScope memory_scope("the conversation's prompt, tokens and reply");
  if (!options.resumer) return run_sync(reply_task(options));
  ChatReplyOptions blocking = options;  // a resumer would let it suspend: run_sync cannot wait for that
  blocking.resumer = nullptr;
  return run_sync(reply_task(blocking));
}

// No MemoryScope inside (thread-local: a turn may suspend on one thread and
// go on on another); reply() opens one around the blocking call.
Task<std::string> ChatSession::reply_task(const ChatReplyOptions &options) {
  cancel_.store(false);
  // A request cancelled before its turn began (its flag is set before it
  // calls cancel(), and cleared never): applied here, after the reset above.
  if (options.decoding.cancel && options.decoding.cancel->load()) cancel_.store(true);
  const DecodingOptions &o = options.decoding;
  if (o.num_beams != 1 || o.num_return_sequences != 1)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "chat replies use greedy search or sampling (num_beams = 1)");
  for (const std::string &s : options.stop) {
    if (s.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "a stop string is empty");
    if (!utf8::valid(s)) fail(PARLEY_ERROR_INVALID_ARGUMENT, "a stop string is not valid UTF-8");
  }
  validate_decoding_options(o, model_.vocab());

  const Tokenizer &tok = text_.source();
  // Only the template's markup may produce control tokens: "<|eot_id|>"
  // typed by a user stays text (encode_prompt).
  const int64_t limit = model_.decoder_params().max_positions;
  // The conversation this turn sends: with the drop-oldest policy, whole
  // turns after the system prompt leave it until the prompt leaves room for
  // the reply (max_new_tokens, at most half the model's positions). The
  // session's messages change only when the turn succeeds.
  //
  // Where the conversation may be cut: cuts[k] drops messages
  // [base_messages_, cuts[k]) (k whole turns: a message, then up to the next
  // user message; never the last message). The prompt shrinks as k grows,
  // so the first k that fits is found by bisection: O(log turns) renders of
  // the conversation, where dropping turn after turn re-rendered it once per
  // dropped turn (100,000 messages: half an hour).
  const int64_t reserve = limit > 0 ? std::min<int64_t>(std::max<int64_t>(1, o.max_new_tokens), limit / 2) : 0;
  std::vector<size_t> cuts{base_messages_};
  if (options.drop_oldest)
    while (messages_.size() > cuts.back() + 1) {
      size_t end = cuts.back() + 1;
      while (end < messages_.size() - 1 && messages_[end].role != ChatRole::kUser) ++end;
      cuts.push_back(end);
    }
  struct Attempt {
    std::vector<int32_t> ids;
    bool short_of_reply = false, too_long = false;
    std::optional<Error> error;  // tokenizing stopped past the limit
  };
  counters_.last_prompt_renders = 0;
  auto attempt = [&](size_t k) {
    ++counters_.last_prompt_renders;
    std::vector<ChatMessage> conversation(messages_.begin(), messages_.begin() + base_messages_);
    conversation.insert(conversation.end(), messages_.begin() + static_cast<std::ptrdiff_t>(cuts[k]), messages_.end());
    std::vector<std::pair<size_t, size_t>> text_ranges;
    const std::string prompt = render(conversation, &text_ranges);
    Attempt a;
    try {
      // A prompt of limit tokens leaves no room for the reply: stop tokenizing there.
      a.ids = tok.encode_prompt(prompt, text_ranges, limit > 0 ? static_cast<size_t>(limit - 1) : SIZE_MAX);
      if (a.ids.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the conversation renders to no tokens");
      a.too_long = limit > 0 && static_cast<int64_t>(a.ids.size()) >= limit;
      a.short_of_reply = limit > 0 && static_cast<int64_t>(a.ids.size()) + reserve > limit;
    } catch (const Error &e) {  // past the limit, tokenizing stops with INVALID_ARGUMENT
      if (e.status() != PARLEY_ERROR_INVALID_ARGUMENT) throw;
      a.error = e;
      a.short_of_reply = true;
    }
    return a;
  };
  // The first cut whose prompt leaves room for the reply; the last cut
  // (only the last message left) when none does.
  size_t k = 0;
  Attempt chosen = attempt(0);
  if (chosen.short_of_reply && cuts.size() > 1) {
    size_t lo = 1, hi = cuts.size() - 1;  // the answer lies in [lo, hi]
    std::optional<Attempt> at_hi;
    while (lo < hi) {
      const size_t mid = lo + (hi - lo) / 2;
      Attempt a = attempt(mid);
      if (a.short_of_reply) {
        lo = mid + 1;
      } else {
        hi = mid;
        at_hi = std::move(a);
      }
    }
    k = lo;
    chosen = at_hi && k == hi ? std::move(*at_hi) : attempt(k);
  }
  const size_t dropped = cuts[k] - base_messages_;
  if (chosen.error)  // the last cut, and its prompt alone passes the limit
    fail(chosen.error->status(),
         std::string(chosen.error->what()) +
             (options.drop_oldest ? "" : " (PARLEY_CHAT_CONTEXT_DROP_OLDEST drops the oldest turns instead)"));
  if (chosen.too_long)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "the conversation is " + std::to_string(chosen.ids.size()) + " tokens, the model accepts at most " +
             std::to_string(limit - 1) + " before its reply" +
             (options.drop_oldest ? " (its last message alone is too long)"
                                  : " (PARLEY_CHAT_CONTEXT_DROP_OLDEST drops the oldest turns instead)"));
  std::vector<int32_t> ids = std::move(chosen.ids);
  std::vector<ChatMessage> conversation(messages_.begin(), messages_.begin() + base_messages_);
  conversation.insert(conversation.end(), messages_.begin() + static_cast<std::ptrdiff_t>(cuts[k]), messages_.end());

  // Reuse the cached prefix; at least the last prompt token is run, for its logits.
  size_t keep = 0;
  while (keep < cached_.size() && keep < ids.size() && cached_[keep] == ids[keep]) ++keep;
  keep = std::min(keep, ids.size() - 1);
  DecodingOptions dec = o;
  if (limit > 0) dec.max_new_tokens = std::min<int64_t>(dec.max_new_tokens, limit - static_cast<int64_t>(ids.size()));
  counters_.last_prompt_tokens = ids.size();

  // Stream: decode everything generated so far, emit what is final. A
  // constrained reply is the bytes the grammar matched (the tokenizer's
  // decoder may drop a leading space or clean up spaces before punctuation,
  // which could change a JSON string the schema constrains).
  std::vector<int32_t> generated;
  auto text_of = [&](const std::vector<int32_t> &reply_ids) {
    return o.constraint ? o.constraint->text_of(reply_ids) : tok.decode(reply_ids, /*skip_special=*/true);
  };
  std::string reply_text;
  size_t emitted = 0;
  bool stopped_by_string = false, stopped_by_host = false;
  // For options.progress: the reply so far, and per generated token the
  // length of the reply's text once it was added (SIZE_MAX for an EOS).
  const Hypothesis *so_far = nullptr;
  std::vector<size_t> text_ends;
  auto emit_upto = [&](size_t end) {
    if (end <= emitted) return true;
    if (!options.on_text) {
      emitted = end;
      return true;
    }
    if (options.progress) {
      size_t covered = 0;
      while (covered < text_ends.size() && text_ends[covered] <= end) ++covered;
      *options.progress = {true, covered, so_far};
    }
    struct Done {
      ChatStreamProgress *p;
      ~Done() {
        if (p) *p = {};
      }
    } done{options.progress};
    bool go = options.on_text(std::string_view(reply_text).substr(emitted, end - emitted));
    emitted = end;
    return go;
  };
  if (options.progress) dec.on_hypothesis = [&](int64_t, int64_t, const Hypothesis &h) { so_far = &h; };
  dec.on_token = [&](int64_t, int64_t, int32_t token) {
    generated.push_back(token);
    text_ends.push_back(SIZE_MAX);
    if (cancel_.load()) return false;
    if (std::find(dec.eos_token_ids.begin(), dec.eos_token_ids.end(), token) != dec.eos_token_ids.end()) return true;
    reply_text = text_of(generated);
    for (const std::string &s : options.stop) {
      size_t at = reply_text.find(s);
      if (at != std::string::npos) {
        reply_text.resize(at);
        stopped_by_string = true;
      }
    }
    text_ends.back() = reply_text.size();
    if (stopped_by_string) {
      emit_upto(reply_text.size());
      return false;
    }
    // Hold back an unfinished code point (lossy decoding shows it as U+FFFD
    // until its last byte arrives) and any tail that may begin a stop string.
    size_t end = reply_text.size();
    while (end >= 3 && std::memcmp(reply_text.data() + end - 3, "\xEF\xBF\xBD", 3) == 0) end -= 3;
    end -= partial_stop(std::string_view(reply_text).substr(0, end), options.stop);
    if (!emit_upto(end)) {
      reply_text.resize(end);
      stopped_by_host = true;
      return false;
    }
    return true;
  };

  Hypothesis turn;
  if (engine_) {
    turn = co_await run_turn_engine(ids, dec, options.resumer);
  } else {
    turn = run_turn_contiguous(ids, keep, dec);
    // The cache holds the prompt and every generated token but the last.
    if (!generated.empty()) cached_.insert(cached_.end(), generated.begin(), generated.end() - 1);
    state_.lengths[0] = static_cast<int32_t>(cached_.size());
  }
  counters_.last_generated_tokens = generated.size();
  counters_.cached_tokens = cached_.size();
  if (cancel_.load()) {
    if (engine_) engine_->count_stopped(PARLEY_ERROR_CANCELLED);  // stopped by on_token, between engine runs
    fail(PARLEY_ERROR_CANCELLED, "the reply was cancelled");
  }
  if (!stopped_by_string && !stopped_by_host) {
    reply_text = text_of(generated);
    so_far = &turn;  // decode()'s own hypothesis is gone
    emit_upto(reply_text.size());
  }
  // A reply cut by a stop string or the host is not what the grammar matched.
  counters_.last_constraint_status = !o.constraint ? 0
                                     : (stopped_by_string || stopped_by_host)
                                         ? static_cast<int32_t>(ConstraintStatus::kIncomplete)
                                         : turn.constraint;
  if (options.logprobs) *options.logprobs = turn.logprobs;
  if (options.hypothesis) *options.hypothesis = std::move(turn);
  ChatMessage answer;
  answer.role = ChatRole::kAssistant;
  answer.content = reply_text;
  // With tools, a reply that calls them is kept as structured tool calls, so
  // the next turn renders them in the template's own format.
  if (!tools_.empty()) {
    std::string calls, content;
    size_t earlier = 0;  // calls in the conversation: the new ids follow theirs
    for (const ChatMessage &m : conversation) earlier += m.tool_calls.empty() ? 0 : count_tool_calls(m.tool_calls);
    // (Tools whose entries name no function at all: any name is taken.)
    if (parse_tool_calls(reply_text, &calls, &content, earlier + 1, tool_names_.empty() ? nullptr : &tool_names_)) {
      answer.tool_calls = std::move(calls);
      answer.content = std::move(content);
    }
  }
  conversation.push_back(std::move(answer));
  messages_ = std::move(conversation);
  tool_messages_ = count_tool_messages(messages_);
  counters_.last_dropped_messages = dropped;
  counters_.total_dropped_messages += dropped;
  co_return reply_text;
}

Hypothesis ChatSession::run_turn_contiguous(const std::vector<int32_t> &ids, size_t keep, DecodingOptions &dec) {
  ensure_capacity(static_cast<int64_t>(ids.size()) + dec.max_new_tokens);
  state_.lengths[0] = static_cast<int32_t>(keep);
  cached_.resize(keep);
  std::vector<int32_t> fresh(ids.begin() + static_cast<std::ptrdiff_t>(keep), ids.end());
  std::vector<float> last = model_.step(state_, fresh, static_cast<int64_t>(fresh.size()), /*last_only=*/true);
  cached_ = ids;
  counters_.last_reused_tokens = keep;
  counters_.last_processed_tokens = fresh.size();
  counters_.total_processed_tokens += fresh.size();
  TransformerStepModel step(model_, std::move(state_));
  Hypothesis turn;
  try {
    turn = std::move(decode(step, last, {ids}, dec).front().front());
  } catch (...) {
    state_ = std::move(step.state());
    state_.lengths[0] = std::min<int32_t>(state_.lengths[0], static_cast<int32_t>(cached_.size()));
    cached_.resize(static_cast<size_t>(state_.lengths[0]));
    throw;
  }
  state_ = std::move(step.state());
  return turn;
}

// The engine keeps the K/V; the session keeps the tokens. Whatever the
// outcome, the session parks its sequence (its full blocks stay findable,
// its memory is released) and remembers the tokens that ran.
Task<Hypothesis> ChatSession::run_turn_engine(const std::vector<int32_t> &ids, DecodingOptions &dec, Resumer *resumer) {
  if (!seq_)
    seq_ = engine_->open(kv_root());
  else
    engine_->renew(*seq_);
  size_t keep = 0;
  const std::vector<int32_t> &had = seq_->tokens();
  while (keep < had.size() && keep < ids.size() && had[keep] == ids[keep]) ++keep;
  keep = std::min(keep, ids.size() - 1);
  engine_->truncate(*seq_, static_cast<int64_t>(keep));
  RunControl control;
  control.cancel = &cancel_;
  control.deadline = dec.deadline;
  control.resumer = resumer;
  EngineStepModel step(*engine_, {seq_}, control);
  // Runs however the turn ends (also when a host callback ends the thread
  // with pthread_exit, whose unwinding no handler here may stop).
  struct Finish {
    ChatSession &s;
    EngineStepModel &step;
    ~Finish() {
      try {
        s.seq_ = step.sequences().front();
        s.engine_->park(*s.seq_);
        s.cached_ = s.seq_->tokens();
        s.counters_.cached_tokens = s.cached_.size();
      } catch (...) {  // out of memory copying the tokens: the next turn recomputes them
        s.cached_.clear();
        s.counters_.cached_tokens = 0;
      }
    }
  } finish{*this, step};
  Hypothesis turn;
  {
    std::vector<int64_t> computed;
    const std::vector<Engine::Sequence *> seqs{seq_.get()};
    const std::vector<std::vector<int32_t>> fresh{
        std::vector<int32_t>(ids.begin() + static_cast<std::ptrdiff_t>(keep), ids.end())};
    std::vector<float> last;
    co_await engine_->run_await(seqs, fresh, control, last, nullptr, &computed);
    counters_.last_processed_tokens = static_cast<uint64_t>(computed.front());
    counters_.last_reused_tokens = ids.size() - counters_.last_processed_tokens;
    counters_.total_processed_tokens += counters_.last_processed_tokens;
    const std::vector<std::vector<int32_t>> prompts{ids};
    std::vector<std::vector<Hypothesis>> got = co_await decode_task(step, last, prompts, dec);
    turn = std::move(got.front().front());
  }
  co_return turn;
}

}  // namespace parley
