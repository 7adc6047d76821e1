// Text C API: tokenize/detokenize, parley_translate and chat sessions.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "capi/api_guard.hpp"
#include "capi/request_control.hpp"
#include "capi/results.hpp"
#include "core/runtime.hpp"
#include "engine/chat_session.hpp"
#include "engine/chat_snapshot.hpp"
#include "engine/generator.hpp"
#include "engine/text_translation.hpp"

using namespace parley;
using parley::capi::check_struct_size;
using parley::capi::copy_in;
using parley::capi::guarded;
using parley::capi::require;

namespace parley::capi {
DecodingOptions resolve_generation_options(const ModelFile &file, const parley_generation_options *options);
std::shared_ptr<const Constraint> resolve_constraint(const Model &model, const parley_generation_options *options);
bool wants_constraint(const parley_generation_options *options);
}  // namespace parley::capi
using parley::capi::resolve_generation_options;

struct parley_chat_session {
  parley::capi::ModelRef model_ref;  // first: released after impl is gone
  const parley_model *model;
  std::unique_ptr<ChatSession> impl;
  // Set while a call uses the session. A second call meanwhile — from the
  // on_text callback of parley_chat_generate, or from another thread — gets
  // PARLEY_ERROR_BUSY instead of re-entering the session (a generate inside
  // generate crashed; an append or reset there reordered the conversation).
  mutable std::atomic<bool> busy{false};
};

namespace {

// A chain root no other session shares: the model's identity mixed with 128
// random bits (a block key collision would need 2^64 tries).
BlockKey private_kv_root(const BlockKey &identity) {
  std::random_device rd;
  auto draw = [&] { return (static_cast<uint64_t>(rd()) << 32) ^ rd(); };
  BlockKey k;
  k.lo = identity.lo ^ draw();
  k.hi = identity.hi ^ draw();
  return k;
}

constexpr size_t kMaxTexts = 4096;
constexpr size_t kMaxTextBytes = size_t{1} << 26;  // 64 MiB per text
constexpr size_t kMaxStops = 64;
constexpr size_t kTranslationOptionsV1 = PARLEY_SIZE_THROUGH(parley_translation_options, attention_layer);
static_assert(sizeof(parley_translation_options) > kTranslationOptionsV1, "per_text_errors follows the v1 fields");
constexpr size_t kChatOptionsV1 = PARLEY_SIZE_THROUGH(parley_chat_options, user_data);
constexpr size_t kChatStatsV1 = PARLEY_SIZE_THROUGH(parley_chat_stats, cached_tokens);

std::string text_arg(const char *s, const char *what) {
  require(s, what);
  size_t n = strnlen(s, kMaxTextBytes + 1);
  if (n > kMaxTextBytes) fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string(what) + " is longer than 64 MiB");
  return std::string(s, n);
}

// Text given with an explicit length (the _n entry points). NULL only with
// length 0. check_nul: refuse a NUL byte inside it, naming its offset (a NUL
// is never a terminator here); translate checks per text instead.
std::string text_arg_n(const char *s, size_t n, const std::string &what, bool check_nul = true) {
  if (!s && n) fail(PARLEY_ERROR_INVALID_ARGUMENT, what + " is NULL but its length is " + std::to_string(n));
  if (n > kMaxTextBytes) fail(PARLEY_ERROR_INVALID_ARGUMENT, what + " is longer than 64 MiB");
  if (!n) return std::string();
  if (check_nul)
    if (const void *z = std::memchr(s, 0, n))
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           what + " contains a NUL byte at byte offset " + std::to_string(static_cast<const char *>(z) - s));
  return std::string(s, n);
}

char *dup_string(const std::string &s) {
  char *out = static_cast<char *>(std::malloc(s.size() + 1));
  if (!out) throw std::bad_alloc();
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

const TextTranslation &item(const parley_translation_result *r, size_t index) {
  require(r, "result");
  if (index >= r->items.size())
    fail(PARLEY_ERROR_NOT_FOUND, "text index " + std::to_string(index) + " >= " + std::to_string(r->items.size()));
  return r->items[index];
}
const TextHypothesis &hyp(const parley_translation_result *r, size_t index, size_t h) {
  const TextTranslation &t = item(r, index);
  if (h >= t.hypotheses.size())
    fail(PARLEY_ERROR_NOT_FOUND, "hypothesis " + std::to_string(h) + " >= " + std::to_string(t.hypotheses.size()) +
                                     " for text " + std::to_string(index));
  return t.hypotheses[h];
}

constexpr const char *kBusyMessage =
    "the chat session is in use by another call (one from its own on_text callback, or from another thread); "
    "a session serves one call at a time";

// Holds a session's busy flag for the duration of one API call.
class SessionUse {
 public:
  explicit SessionUse(const parley_chat_session *s) : s_(s) {
    require(s, "session");
    if (s->busy.exchange(true, std::memory_order_acquire)) {
      s_ = nullptr;
      fail(PARLEY_ERROR_BUSY, kBusyMessage);
    }
  }
  ~SessionUse() {
    if (s_) s_->busy.store(false, std::memory_order_release);
  }
  SessionUse(const SessionUse &) = delete;
  SessionUse &operator=(const SessionUse &) = delete;
  ChatSession &session() const { return *s_->impl; }

 private:
  const parley_chat_session *s_;
};

}  // namespace

extern "C" {

PARLEY_API parley_status parley_tokenize(const parley_model *model, const char *text, int32_t add_special_tokens,
                                         const char *language, int32_t *ids, size_t capacity, size_t *out_count) {
  return guarded(__func__, [&] {
    require(model, "model");
    require(out_count, "out_count");
    std::string t = text_arg(text, "text");
    std::string lang = language ? text_arg(language, "language") : std::string();
    if (language && lang.empty())  // an unset variable, not a choice: NULL says "no language token"
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "language is an empty string; pass NULL for no language token");
    if (add_special_tokens < 0)
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           "add_special_tokens is negative (" + std::to_string(add_special_tokens) +
               "); pass 0, 1 (PARLEY_TOKENIZE_ADD_SPECIAL) and/or PARLEY_TOKENIZE_PARSE_SPECIAL");
    const bool parse_special = (add_special_tokens & PARLEY_TOKENIZE_PARSE_SPECIAL) != 0;
    const bool add_special = (add_special_tokens & ~PARLEY_TOKENIZE_PARSE_SPECIAL) != 0;
    std::vector<int32_t> v = model->impl.text().source().encode(t, add_special, lang, SIZE_MAX, parse_special);
    if (!ids && capacity == 0) {
      *out_count = v.size();
      return;
    }
    require(ids, "ids");
    if (capacity < v.size()) {
      *out_count = v.size();
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           "capacity " + std::to_string(capacity) + " is smaller than the " + std::to_string(v.size()) + " ids");
    }
    std::copy(v.begin(), v.end(), ids);
    *out_count = v.size();
  });
}

PARLEY_API parley_status parley_tokenize_n(const parley_model *model, const char *text, size_t text_length,
                                           int32_t add_special_tokens, const char *language, int32_t *ids,
                                           size_t capacity, size_t *out_count) {
  // Checked here, then the same call as parley_tokenize (the text has no NUL, so its copy's c_str() is all of it).
  std::string copy;
  parley_status st = guarded(__func__, [&] { copy = text_arg_n(text, text_length, "text"); });
  if (st != PARLEY_OK) return st;
  return parley_tokenize(model, copy.c_str(), add_special_tokens, language, ids, capacity, out_count);
}

PARLEY_API parley_status parley_detokenize(const parley_model *model, const int32_t *ids, size_t count,
                                           int32_t skip_special_tokens, char **out_text) {
  return guarded(__func__, [&] {
    require(model, "model");
    require(out_text, "out_text");
    if (count && !ids) fail(PARLEY_ERROR_INVALID_ARGUMENT, "ids is NULL but count > 0");
    if (count > (size_t{1} << 26)) fail(PARLEY_ERROR_INVALID_ARGUMENT, "count is absurdly large (> 2^26)");
    std::string s =
        model->impl.text().target().decode(std::vector<int32_t>(ids, ids + count), skip_special_tokens != 0);
    *out_text = dup_string(s);
  });
}

PARLEY_API void parley_string_free(char *text) {
  std::free(text);
}

PARLEY_API parley_status parley_translation_options_defaults(parley_translation_options *options) {
  return guarded(__func__, [&] {
    parley::capi::write_defaults(options, kTranslationOptionsV1, [] {
      parley_translation_options d{};
      d.attention_layer = -1;
      return d;
    });
  });
}

}  // extern "C"

namespace {
// parley_translate and parley_translate_n: lengths NULL means NUL-terminated texts.
void translate_impl(const parley_model *model, const char *const *texts, const size_t *lengths, size_t count,
                    const parley_translation_options *options, parley_translation_result **out_result) {
  require(model, "model");
  require(out_result, "out_result");
  if (count == 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the batch is empty");
  require(texts, "texts");
  if (count > kMaxTexts) fail(PARLEY_ERROR_INVALID_ARGUMENT, "more than 4096 texts in one call");
  parley_translation_options o{};
  o.struct_size = sizeof o;
  parley_translation_options_defaults(&o);
  copy_in(o, options, kTranslationOptionsV1, "options");
  const ModelFile &file = *model->impl.file;
  if (file.kind() != PARLEY_MODEL_ENCODER_DECODER)
    fail(PARLEY_ERROR_UNSUPPORTED, "translate needs an encoder-decoder model; this one is decoder-only (chat instead)");
  TextTranslationOptions t;
  t.decoding = resolve_generation_options(file, o.generation);
  t.decoding.on_token = nullptr;
  if (capi::wants_constraint(o.generation))
    fail(PARLEY_ERROR_UNSUPPORTED, "grammar / json_schema constrain chat and generation, not translation");
  capi::apply_request_control(capi::take_request_control(), t.decoding, /*with_logprobs=*/true);
  if (o.on_text) {
    parley_translation_text_fn fn = o.on_text;
    void *user = o.user_data;
    t.on_text = [fn, user](size_t text, size_t hypothesis, std::string_view so_far, bool final) {
      return fn(user, text, hypothesis, so_far.data(), so_far.size(), final ? 1 : 0) == 0;
    };
  }
  if (o.source_language) t.source_language = text_arg(o.source_language, "options->source_language");
  if (o.target_language) t.target_language = text_arg(o.target_language, "options->target_language");
  if (o.return_attention != 0 && o.return_attention != 1)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->return_attention must be 0 or 1");
  if (o.per_text_errors != 0 && o.per_text_errors != 1)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->per_text_errors must be 0 or 1");
  t.attention = o.return_attention != 0;
  t.attention_layer = o.attention_layer;
  t.per_text_errors = o.per_text_errors != 0;
  t.engine = model->impl.engine();
  if (o.long_text < PARLEY_LONG_TEXT_ERROR || o.long_text > PARLEY_LONG_TEXT_SPLIT_ALWAYS)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "options->long_text " + std::to_string(o.long_text) + " is not a parley_long_text (0, 1 or 2)");
  t.long_text = o.long_text;
  t.max_source_tokens = o.max_source_tokens;
  t.max_batch_tokens = o.max_batch_tokens;
  if (o.protect || o.num_protect_patterns || o.num_glossary) {
    if (o.protect & ~static_cast<uint32_t>(PARLEY_PROTECT_ALL))
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           "options->protect " + std::to_string(o.protect) + " holds bits outside PARLEY_PROTECT_ALL (0x1f)");
    auto strings = [](const char *const *arr, size_t n, size_t max, const char *name) {
      if (n > max)
        fail(PARLEY_ERROR_INVALID_ARGUMENT,
             std::string("options->num_") + name + " is " + std::to_string(n) + ": at most " + std::to_string(max));
      if (n && !arr)
        fail(PARLEY_ERROR_INVALID_ARGUMENT,
             std::string("options->") + name + " is NULL but num_" + name + " is " + std::to_string(n));
      std::vector<std::string> out;
      out.reserve(n);
      for (size_t i = 0; i < n; ++i)
        out.push_back(text_arg(arr[i], (std::string("options->") + name + "[" + std::to_string(i) + "]").c_str()));
      return out;
    };
    t.protect = std::make_shared<ProtectRules>(
        o.protect, strings(o.protect_patterns, o.num_protect_patterns, kMaxProtectPatterns, "protect_patterns"),
        strings(o.glossary, o.num_glossary, kMaxGlossaryTerms, "glossary"));
  }
  std::vector<std::string> inputs;
  inputs.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    std::string what = "texts[" + std::to_string(i) + "]";
    // A NUL inside a text is the text's own fault: translate_text refuses it per text.
    inputs.push_back(lengths ? text_arg_n(texts[i], lengths[i], what, /*check_nul=*/false)
                             : text_arg(texts[i], what.c_str()));
  }
  auto result = std::make_unique<parley_translation_result>();
  result->items = translate_text(model->impl.transformer(), file, model->impl.text(), inputs, t);
  *out_result = result.release();
}
}  // namespace

extern "C" {

PARLEY_API parley_status parley_translate(const parley_model *model, const char *const *texts, size_t count,
                                          const parley_translation_options *options,
                                          parley_translation_result **out_result) {
  return guarded(__func__, [&] { translate_impl(model, texts, nullptr, count, options, out_result); });
}

PARLEY_API parley_status parley_translate_n(const parley_model *model, const char *const *texts, const size_t *lengths,
                                            size_t count, const parley_translation_options *options,
                                            parley_translation_result **out_result) {
  return guarded(__func__, [&] {
    if (count) require(lengths, "lengths");
    translate_impl(model, texts, lengths, count, options, out_result);
  });
}

PARLEY_API parley_status parley_translation_result_error(const parley_translation_result *result, size_t index,
                                                         int32_t *out_status, const char **out_message) {
  return guarded(__func__, [&] {
    require(out_status, "out_status");
    const TextTranslation &t = item(result, index);
    *out_status = t.error;
    if (out_message) *out_message = t.error_message.c_str();
  });
}

PARLEY_API parley_status parley_translation_result_count(const parley_translation_result *result, size_t *out_count) {
  return guarded(__func__, [&] {
    require(result, "result");
    require(out_count, "out_count");
    *out_count = result->items.size();
  });
}

PARLEY_API parley_status parley_translation_result_hypothesis_count(const parley_translation_result *result,
                                                                    size_t index, size_t *out_count) {
  return guarded(__func__, [&] {
    require(out_count, "out_count");
    *out_count = item(result, index).hypotheses.size();
  });
}

PARLEY_API parley_status parley_translation_result_text(const parley_translation_result *result, size_t index,
                                                        size_t hypothesis, const char **out_text, float *out_score) {
  return guarded(__func__, [&] {
    require(out_text, "out_text");
    const TextHypothesis &h = hyp(result, index, hypothesis);
    *out_text = h.text.c_str();
    if (out_score) *out_score = h.score;
  });
}

PARLEY_API parley_status parley_translation_result_source_tokens(const parley_translation_result *result, size_t index,
                                                                 const int32_t **out_ids, size_t *out_count) {
  return guarded(__func__, [&] {
    require(out_ids, "out_ids");
    require(out_count, "out_count");
    const TextTranslation &t = item(result, index);
    *out_ids = t.source_tokens.data();
    *out_count = t.source_tokens.size();
  });
}

PARLEY_API parley_status parley_translation_result_target_tokens(const parley_translation_result *result, size_t index,
                                                                 size_t hypothesis, const int32_t **out_ids,
                                                                 size_t *out_count) {
  return guarded(__func__, [&] {
    require(out_ids, "out_ids");
    require(out_count, "out_count");
    const TextHypothesis &h = hyp(result, index, hypothesis);
    *out_ids = h.tokens.data();
    *out_count = h.tokens.size();
  });
}

PARLEY_API parley_status parley_translation_result_attention(const parley_translation_result *result, size_t index,
                                                             size_t hypothesis, const float **out_weights,
                                                             size_t *out_target_len, size_t *out_source_len) {
  return guarded(__func__, [&] {
    require(out_weights, "out_weights");
    require(out_target_len, "out_target_len");
    require(out_source_len, "out_source_len");
    const TextHypothesis &h = hyp(result, index, hypothesis);
    if (h.attention.empty() && !h.tokens.empty())
      fail(PARLEY_ERROR_NOT_FOUND, item(result, index).segments > 1
                                       ? "the text was translated in " + std::to_string(item(result, index).segments) +
                                             " pieces (long_text): its attention is not kept"
                                       : std::string("attention was not requested (options->return_attention)"));
    *out_weights = h.attention.data();
    *out_target_len = h.tokens.size();
    *out_source_len = item(result, index).source_tokens.size();
  });
}

PARLEY_API parley_status parley_translation_result_hypothesis_logprobs(const parley_translation_result *result,
                                                                       size_t index, size_t hypothesis,
                                                                       const float **out_logprobs, size_t *out_count) {
  return guarded(__func__, [&] {
    require(out_logprobs, "out_logprobs");
    require(out_count, "out_count");
    const TextHypothesis &h = hyp(result, index, hypothesis);
    if (h.logprobs.empty() && !h.tokens.empty())
      fail(PARLEY_ERROR_NOT_FOUND,
           "no per-token log-probabilities: they were not requested (options->generation->return_logprobs, or "
           "request_options->return_logprobs)");
    *out_logprobs = h.logprobs.data();
    *out_count = h.logprobs.size();
  });
}

PARLEY_API parley_status parley_translation_result_hypothesis_alternatives(const parley_translation_result *result,
                                                                           size_t index, size_t hypothesis,
                                                                           const int32_t **out_ids,
                                                                           const float **out_logprobs,
                                                                           size_t *out_steps, size_t *out_k) {
  return guarded(__func__, [&] {
    require(out_ids, "out_ids");
    require(out_logprobs, "out_logprobs");
    require(out_steps, "out_steps");
    require(out_k, "out_k");
    const TextHypothesis &h = hyp(result, index, hypothesis);
    if (h.alternatives <= 0 && !h.tokens.empty())
      fail(PARLEY_ERROR_NOT_FOUND, "no alternatives: they were not requested (options->generation->num_alternatives)");
    *out_ids = h.alternative_ids.data();
    *out_logprobs = h.alternative_logprobs.data();
    *out_k = static_cast<size_t>(std::max<int64_t>(0, h.alternatives));
    *out_steps = h.alternatives > 0 ? h.alternative_ids.size() / static_cast<size_t>(h.alternatives) : 0;
  });
}

PARLEY_API parley_status parley_translation_result_protected_count(const parley_translation_result *result,
                                                                   size_t index, size_t hypothesis, size_t *out_count) {
  return guarded(__func__, [&] {
    require(out_count, "out_count");
    *out_count = hyp(result, index, hypothesis).protected_spans.size();
  });
}

PARLEY_API parley_status parley_translation_result_protected_span(const parley_translation_result *result, size_t index,
                                                                  size_t hypothesis, size_t span,
                                                                  parley_protected_span *out) {
  return guarded(__func__, [&] {
    require(out, "out");
    check_struct_size(out->struct_size, sizeof *out, sizeof *out, "out");
    const TextHypothesis &h = hyp(result, index, hypothesis);
    if (span >= h.protected_spans.size())
      fail(PARLEY_ERROR_NOT_FOUND, "span " + std::to_string(span) + " >= " + std::to_string(h.protected_spans.size()));
    const ProtectedSpan &p = h.protected_spans[span];
    parley_protected_span o{};
    o.struct_size = out->struct_size;
    o.kind = p.kind;
    o.placement = p.placement;
    o.source_offset = p.source_offset;
    o.source_length = p.source_length;
    o.target_offset = p.target_offset;
    o.target_length = p.target_length;
    parley::capi::copy_out(out, o);
  });
}

PARLEY_API parley_status parley_translation_result_segments(const parley_translation_result *result, size_t index,
                                                            size_t *out_count) {
  return guarded(__func__, [&] {
    require(out_count, "out_count");
    *out_count = item(result, index).segments;
  });
}

PARLEY_API parley_status parley_translation_result_cut_by_length(const parley_translation_result *result, size_t index,
                                                                 size_t hypothesis, int32_t *out_cut) {
  return guarded(__func__, [&] {
    require(out_cut, "out_cut");
    *out_cut = hyp(result, index, hypothesis).cut_by_length ? 1 : 0;
  });
}

PARLEY_API void parley_translation_result_free(parley_translation_result *result) {
  delete result;
}

PARLEY_API parley_status parley_chat_session_create(const parley_model *model, const char *system_prompt,
                                                    parley_chat_session **out_session) {
  return guarded(__func__, [&] {
    require(model, "model");
    require(out_session, "out_session");
    std::string system = system_prompt ? text_arg(system_prompt, "system_prompt") : std::string();
    const ModelFile &file = *model->impl.file;
    if (file.kind() == PARLEY_MODEL_ENCODER_DECODER)
      fail(PARLEY_ERROR_UNSUPPORTED,
           "chat needs a decoder-only model; this one is encoder-decoder (translate instead)");
    auto s = std::make_unique<parley_chat_session>();
    s->model_ref.hold(model);
    s->model = model;
    s->impl = std::make_unique<ChatSession>(model->impl.transformer(), model->impl.text(), decoding_defaults(file),
                                            std::move(system), system_prompt != nullptr, model->impl.engine());
    *out_session = s.release();
  });
}

PARLEY_API void parley_chat_session_free(parley_chat_session *session) {
  if (!session) return;
  // Freeing a session a running call still uses would crash that call: refuse.
  if (session->busy.exchange(true, std::memory_order_acquire)) {
    parley::capi::report(__func__, "PARLEY_ERROR_BUSY: ", kBusyMessage);
    return;
  }
  delete session;
}

PARLEY_API parley_status parley_chat_append(parley_chat_session *session, int32_t role, const char *content) {
  return guarded(__func__, [&] {
    SessionUse use(session);
    ChatSession &s = use.session();
    if (role < PARLEY_ROLE_SYSTEM || role > PARLEY_ROLE_TOOL)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "unknown role " + std::to_string(role));
    s.append(static_cast<ChatRole>(role), text_arg(content, "content"));
  });
}

PARLEY_API parley_status parley_chat_options_defaults(parley_chat_options *options) {
  return guarded(__func__,
                 [&] { parley::capi::write_defaults(options, kChatOptionsV1, [] { return parley_chat_options{}; }); });
}

}  // extern "C"

namespace {
// parley_chat_generate's body; the caller holds the session.
Task<void> chat_generate_coro(parley_chat_session *session, const parley_chat_options *options, char **out_reply) {
  {
    ChatSession &s = *session->impl;
    parley_chat_options o{};
    o.struct_size = sizeof o;
    copy_in(o, options, kChatOptionsV1, "options");
    ChatReplyOptions r;
    r.decoding = o.generation ? resolve_generation_options(*session->model->impl.file, o.generation) : s.defaults();
    r.decoding.on_token = nullptr;
    // A chat reply's log-probabilities and alternatives come only through a
    // request (parley_request_reply_logprobs / _alternatives, asked for in
    // its request options).
    r.decoding.return_logprobs = false;
    r.decoding.num_alternatives = 0;
    r.decoding.constraint = capi::resolve_constraint(session->model->impl, o.generation);
    const capi::RequestControl *control = capi::take_request_control();
    capi::apply_request_control(control, r.decoding, /*with_logprobs=*/true);
    if (control) {
      r.decoding.num_alternatives = control->num_alternatives;
      if (control->return_logprobs || control->num_alternatives > 0) r.hypothesis = control->reply;
      r.progress = control->progress;
      r.resumer = control->resumer;
    }
    if (o.num_stop_strings > kMaxStops) fail(PARLEY_ERROR_INVALID_ARGUMENT, "more than 64 stop strings");
    if (o.num_stop_strings && !o.stop_strings)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->stop_strings is NULL but num_stop_strings > 0");
    for (size_t i = 0; i < o.num_stop_strings; ++i)
      r.stop.push_back(text_arg(o.stop_strings[i], ("stop_strings[" + std::to_string(i) + "]").c_str()));
    if (o.on_text) {
      parley_text_fn fn = o.on_text;
      void *user = o.user_data;
      r.on_text = [fn, user](std::string_view piece) { return fn(user, piece.data(), piece.size()) == 0; };
    }
    if (options && options->struct_size > kChatOptionsV1) {  // appended: context_policy
      if (o.context_policy != PARLEY_CHAT_CONTEXT_ERROR && o.context_policy != PARLEY_CHAT_CONTEXT_DROP_OLDEST)
        fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->context_policy " + std::to_string(o.context_policy) +
                                                " is neither PARLEY_CHAT_CONTEXT_ERROR nor _DROP_OLDEST");
      r.drop_oldest = o.context_policy == PARLEY_CHAT_CONTEXT_DROP_OLDEST;
    }
    std::string reply = co_await s.reply_task(r);
    if (out_reply) {
      char *copy = static_cast<char *>(std::malloc(reply.size() + 1));
      if (!copy) {  // the turn did not happen: take the reply back out of the conversation
        s.remove_last();
        fail(PARLEY_ERROR_OUT_OF_MEMORY,
             "out of memory: cannot allocate the reply's " + std::to_string(reply.size() + 1) + " bytes for out_reply");
      }
      std::memcpy(copy, reply.c_str(), reply.size() + 1);
      *out_reply = copy;
    }
  }
}

void chat_generate_impl(parley_chat_session *session, const parley_chat_options *options, char **out_reply) {
  MemoryScope memory_scope("the conversation's prompt, tokens and reply");
  run_sync(chat_generate_coro(session, options, out_reply));
}
}  // namespace

namespace parley::capi {
void chat_session_acquire(parley_chat_session *session) {
  require(session, "session");
  if (session->busy.exchange(true, std::memory_order_acquire)) fail(PARLEY_ERROR_BUSY, kBusyMessage);
}
void chat_session_release(parley_chat_session *session) {
  session->busy.store(false, std::memory_order_release);
}
const parley_model *chat_session_model(const parley_chat_session *session) {
  return session->model;
}
parley_status chat_generate_held(parley_chat_session *session, const parley_chat_options *options, char **out_reply) {
  return guarded("parley_chat_generate", [&] { chat_generate_impl(session, options, out_reply); });
}
Task<void> chat_generate_task(parley_chat_session *session, const parley_chat_options *options, char **out_reply) {
  return chat_generate_coro(session, options, out_reply);
}
}  // namespace parley::capi

namespace {

// parley_chat_session_save(_kv): the conversation, and with_kv the K/V of
// its leading full blocks that the engine's cache holds now.
void save_session(const parley_chat_session *session, bool with_kv, char **out_data, size_t *out_size) {
  SessionUse use(session);
  require(out_data, "out_data");
  require(out_size, "out_size");
  ChatSnapshot snap;
  snap.has_system = use.session().has_system();
  snap.messages = use.session().messages();
  if (with_kv) {
    Engine *engine = use.session().engine();
    if (!engine)
      fail(PARLEY_ERROR_UNSUPPORTED,
           "saving a chat with its K/V needs the serving engine (parley_model_options.serving_engine); this model "
           "runs without it (parley_chat_session_save stores the text)");
    snap.has_kv = true;
    snap.kv_tokens = use.session().engine_tokens();
    snap.kv_identity_lo = engine->identity().lo;
    snap.kv_identity_hi = engine->identity().hi;
    snap.kv_block_bytes = engine->kv_block_bytes();
    int64_t blocks = 0;
    snap.kv_data = engine->export_prefix(snap.kv_tokens, &blocks, use.session().kv_root());
    snap.kv_blocks = static_cast<uint64_t>(blocks);
  }
  const std::string bytes = save_chat(snap);
  char *copy = static_cast<char *>(std::malloc(bytes.size()));
  if (!copy)
    fail(PARLEY_ERROR_OUT_OF_MEMORY,
         "out of memory: cannot allocate the " + std::to_string(bytes.size()) + " bytes of the saved chat");
  std::memcpy(copy, bytes.data(), bytes.size());
  *out_data = copy;
  *out_size = bytes.size();
}

}  // namespace

extern "C" {

PARLEY_API parley_status parley_chat_generate(parley_chat_session *session, const parley_chat_options *options,
                                              char **out_reply) {
  return guarded(__func__, [&] {
    SessionUse use(session);
    chat_generate_impl(session, options, out_reply);
  });
}

PARLEY_API parley_status parley_chat_cancel(parley_chat_session *session) {
  if (!session) return PARLEY_ERROR_INVALID_ARGUMENT;  // no last-error text: must stay async-safe
  session->impl->cancel();
  return PARLEY_OK;
}

PARLEY_API parley_status parley_chat_reset(parley_chat_session *session) {
  return guarded(__func__, [&] { SessionUse(session).session().reset(); });
}

PARLEY_API parley_status parley_chat_remove_last(parley_chat_session *session) {
  return guarded(__func__, [&] { SessionUse(session).session().remove_last(); });
}

PARLEY_API parley_status parley_chat_message_count(const parley_chat_session *session, size_t *out_count) {
  return guarded(__func__, [&] {
    SessionUse use(session);
    require(out_count, "out_count");
    *out_count = use.session().messages().size();
  });
}

PARLEY_API parley_status parley_chat_message(const parley_chat_session *session, size_t index, int32_t *out_role,
                                             const char **out_content) {
  return guarded(__func__, [&] {
    SessionUse use(session);
    require(out_role, "out_role");
    require(out_content, "out_content");
    const auto &m = use.session().messages();
    if (index >= m.size())
      fail(PARLEY_ERROR_NOT_FOUND, "message " + std::to_string(index) + " >= " + std::to_string(m.size()));
    *out_role = static_cast<int32_t>(m[index].role);
    *out_content = m[index].content.c_str();
  });
}

PARLEY_API parley_status parley_chat_stats_get(const parley_chat_session *session, parley_chat_stats *stats) {
  return guarded(__func__, [&] {
    SessionUse use(session);
    require(stats, "stats");
    check_struct_size(stats->struct_size, kChatStatsV1, sizeof *stats, "stats");
    const ChatCounters &c = use.session().counters();
    parley_chat_stats out{};
    out.struct_size = stats->struct_size;
    out.prompt_tokens = c.last_prompt_tokens;
    out.reused_tokens = c.last_reused_tokens;
    out.processed_tokens = c.last_processed_tokens;
    out.generated_tokens = c.last_generated_tokens;
    out.total_processed_tokens = c.total_processed_tokens;
    out.cached_tokens = c.cached_tokens;
    out.dropped_messages = c.last_dropped_messages;
    out.total_dropped_messages = c.total_dropped_messages;
    out.constraint_status = c.last_constraint_status;
    parley::capi::copy_out(stats, out);
  });
}

PARLEY_API parley_status parley_chat_session_create_n(const parley_model *model, const char *system_prompt,
                                                      size_t system_length, parley_chat_session **out_session) {
  // Checked here, then the same call as parley_chat_session_create (no NUL inside, so c_str() is all of it).
  std::string copy;
  parley_status st = guarded(__func__, [&] {
    if (system_prompt) copy = text_arg_n(system_prompt, system_length, "system_prompt");
  });
  if (st != PARLEY_OK) return st;
  return parley_chat_session_create(model, system_prompt ? copy.c_str() : nullptr, out_session);
}

PARLEY_API parley_status parley_chat_append_n(parley_chat_session *session, int32_t role, const char *content,
                                              size_t length) {
  std::string copy;
  parley_status st = guarded(__func__, [&] { copy = text_arg_n(content, length, "content"); });
  if (st != PARLEY_OK) return st;
  return parley_chat_append(session, role, copy.c_str());
}

PARLEY_API parley_status parley_chat_append_message(parley_chat_session *session,
                                                    const parley_chat_message_ex *message) {
  return guarded(__func__, [&] {
    SessionUse use(session);
    require(message, "message");
    constexpr size_t kMessageExV1 = sizeof(parley_chat_message_ex);
    check_struct_size(message->struct_size, kMessageExV1, sizeof *message, "message");
    if (message->role < PARLEY_ROLE_SYSTEM || message->role > PARLEY_ROLE_TOOL)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "message->role: unknown role " + std::to_string(message->role));
    ChatMessage m;
    m.role = static_cast<ChatRole>(message->role);
    m.content = text_arg_n(message->content, message->content_length, "message->content");
    if (message->tool_calls) m.tool_calls = text_arg(message->tool_calls, "message->tool_calls");
    if (message->tool_call_id) m.tool_call_id = text_arg(message->tool_call_id, "message->tool_call_id");
    if (message->name) m.name = text_arg(message->name, "message->name");
    if (message->tool_calls && m.tool_calls.empty())
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "message->tool_calls is empty (pass NULL for none)");
    use.session().append(std::move(m));
  });
}

PARLEY_API parley_status parley_chat_set_tools(parley_chat_session *session, const char *tools_json) {
  return guarded(__func__, [&] {
    SessionUse use(session);
    use.session().set_tools(tools_json ? text_arg(tools_json, "tools_json") : std::string());
  });
}

PARLEY_API parley_status parley_chat_tool_calls(const parley_chat_session *session, size_t index,
                                                const char **out_tool_calls, const char **out_tool_call_id,
                                                const char **out_name) {
  return guarded(__func__, [&] {
    SessionUse use(session);
    const auto &m = use.session().messages();
    if (index >= m.size())
      fail(PARLEY_ERROR_NOT_FOUND, "message " + std::to_string(index) + " >= " + std::to_string(m.size()));
    auto opt = [](const std::string &v) { return v.empty() ? nullptr : v.c_str(); };
    if (out_tool_calls) *out_tool_calls = opt(m[index].tool_calls);
    if (out_tool_call_id) *out_tool_call_id = opt(m[index].tool_call_id);
    if (out_name) *out_name = opt(m[index].name);
  });
}

PARLEY_API parley_status parley_chat_session_save(const parley_chat_session *session, char **out_data,
                                                  size_t *out_size) {
  return guarded(__func__, [&] { save_session(session, false, out_data, out_size); });
}

PARLEY_API parley_status parley_chat_session_save_kv(const parley_chat_session *session, char **out_data,
                                                     size_t *out_size) {
  return guarded(__func__, [&] { save_session(session, true, out_data, out_size); });
}

PARLEY_API parley_status parley_chat_session_restore(const parley_model *model, const void *data, size_t size,
                                                     parley_chat_session **out_session) {
  return guarded(__func__, [&] {
    require(model, "model");
    require(out_session, "out_session");
    const ModelFile &file = *model->impl.file;
    if (file.kind() == PARLEY_MODEL_ENCODER_DECODER)
      fail(PARLEY_ERROR_UNSUPPORTED,
           "chat needs a decoder-only model; this one is encoder-decoder (translate instead)");
    ChatSnapshot snap = load_chat(data, size);
    // Saved K/V go to the prefix cache only under the same engine identity
    // (model file, KV dtype, block size): other K/V would be wrong here, so
    // they are skipped and the next turn computes them. They are keyed under
    // a chain root of this session's own: the blob's checksum proves no
    // origin (anyone can forge K/V and checksum), so its blocks must never
    // answer another session's prompt, as they would under the shared root.
    Engine *engine = model->impl.engine();
    const bool import_kv = snap.has_kv && engine && snap.kv_identity_lo == engine->identity().lo &&
                           snap.kv_identity_hi == engine->identity().hi &&
                           snap.kv_block_bytes == engine->kv_block_bytes();
    BlockKey private_root{};
    if (import_kv) {
      private_root = private_kv_root(engine->identity());
      engine->import_prefix(snap.kv_tokens, snap.kv_data.data(), static_cast<int64_t>(snap.kv_blocks), &private_root);
    }
    std::string system = snap.has_system ? snap.messages[0].content : std::string();
    auto s = std::make_unique<parley_chat_session>();
    s->model_ref.hold(model);
    s->model = model;
    s->impl = std::make_unique<ChatSession>(model->impl.transformer(), model->impl.text(), decoding_defaults(file),
                                            std::move(system), snap.has_system, model->impl.engine());
    if (import_kv) s->impl->set_private_kv_root(private_root);
    for (size_t i = snap.has_system ? 1 : 0; i < snap.messages.size(); ++i) {
      try {
        s->impl->append(snap.messages[i].role, std::move(snap.messages[i].content));
      } catch (const Error &e) {
        fail(e.status(), "saved chat message " + std::to_string(i) + ": " + e.what());
      }
    }
    *out_session = s.release();
  });
}

}  // extern "C"
