// parley_score_tokens / parley_score_text and their result (engine/scoring.hpp).
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "capi/api_guard.hpp"
#include "core/memory_scope.hpp"
#include "core/runtime.hpp"
#include "engine/scoring.hpp"

using namespace parley;
using parley::capi::check_struct_size;
using parley::capi::guarded;
using parley::capi::require;

struct parley_score_result {
  std::vector<ScoredTarget> items;
};

namespace {

constexpr size_t kMaxItems = 4096;
constexpr size_t kMaxSequence = size_t{1} << 20;
constexpr size_t kMaxTextBytes = size_t{1} << 26;  // 64 MiB per text
constexpr size_t kScoreOptionsV1 = PARLEY_SIZE_THROUGH(parley_score_options, target_language);

parley_score_options read_options(const parley_score_options *options) {
  parley_score_options o{};
  o.struct_size = sizeof o;
  parley::capi::copy_in(o, options, kScoreOptionsV1, "options");
  return o;
}

std::vector<int32_t> read_ids(const int32_t *const *seqs, const size_t *lengths, size_t i, const char *what) {
  const std::string name = std::string(what) + "[" + std::to_string(i) + "]";
  if (lengths[i] == 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, name + " is empty");
  if (lengths[i] > kMaxSequence) fail(PARLEY_ERROR_INVALID_ARGUMENT, name + " is longer than 2^20 tokens");
  if (!seqs[i]) fail(PARLEY_ERROR_INVALID_ARGUMENT, name + " is NULL");
  return std::vector<int32_t>(seqs[i], seqs[i] + lengths[i]);
}

void check_batch(size_t batch) {
  if (batch == 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the batch is empty");
  if (batch > kMaxItems)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "batch of " + std::to_string(batch) + " exceeds " + std::to_string(kMaxItems));
}

std::string text_of(const char *s, const char *what, size_t i) {
  const std::string name = std::string(what) + "[" + std::to_string(i) + "]";
  if (!s) fail(PARLEY_ERROR_INVALID_ARGUMENT, name + " is NULL");
  const size_t n = strnlen(s, kMaxTextBytes + 1);
  if (n > kMaxTextBytes) fail(PARLEY_ERROR_INVALID_ARGUMENT, name + " is longer than 64 MiB");
  if (n == 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, name + " is empty");
  return std::string(s, n);
}

std::string language_of(const char *s, const char *what) {
  if (!s) return {};
  const size_t n = strnlen(s, 257);
  if (n > 256) fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string("options->") + what + " is longer than 256 bytes");
  return std::string(s, n);
}

// What the scoring engine gets: per item, the source (encoder-decoder), the
// context (not scored) and the target (scored). Decoder-only items without a
// prompt use their first target token as the context.
struct ScoreInputs {
  std::vector<std::vector<int32_t>> sources, contexts, targets;
};

void add_item(const Model &model, ScoreInputs &in, std::vector<int32_t> source, std::vector<int32_t> target,
              bool has_source, size_t i) {
  const ModelFile &file = *model.file;
  if (file.kind() == PARLEY_MODEL_ENCODER_DECODER) {
    in.sources.push_back(std::move(source));
    in.contexts.push_back({file.decoder_start_token_id()});
  } else if (has_source) {
    in.contexts.push_back(std::move(source));
  } else {
    if (target.size() < 2)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "targets[" + std::to_string(i) +
                                              "] has a single token: without a prompt (sources) its first token is "
                                              "context only, so a decoder-only target needs at least 2");
    in.contexts.push_back({target.front()});
    target.erase(target.begin());
  }
  in.targets.push_back(std::move(target));
}

parley_score_result *run(const Model &model, const ScoreInputs &in) {
  MemoryScope memory_scope("the scored targets' KV cache and log-probabilities");
  auto result = std::make_unique<parley_score_result>();
  result->items = score_targets(model.transformer(), in.sources, in.contexts, in.targets);
  return result.release();
}

}  // namespace

extern "C" {

PARLEY_API parley_status parley_score_options_defaults(parley_score_options *options) {
  return guarded(
      __func__, [&] { parley::capi::write_defaults(options, kScoreOptionsV1, [] { return parley_score_options{}; }); });
}

PARLEY_API parley_status parley_score_tokens(const parley_model *model, const int32_t *const *sources,
                                             const size_t *source_lengths, const int32_t *const *targets,
                                             const size_t *target_lengths, size_t batch_size,
                                             const parley_score_options *options, parley_score_result **out_result) {
  return guarded(__func__, [&] {
    require(model, "model");
    require(out_result, "out_result");
    (void)read_options(options);
    check_batch(batch_size);
    require(targets, "targets");
    require(target_lengths, "target_lengths");
    const bool enc_dec = model->impl.file->kind() == PARLEY_MODEL_ENCODER_DECODER;
    if (enc_dec && !sources)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "sources is NULL: an encoder-decoder model scores a target given a source");
    if (sources) require(source_lengths, "source_lengths");
    ScoreInputs in;
    for (size_t i = 0; i < batch_size; ++i) {
      std::vector<int32_t> src = sources ? read_ids(sources, source_lengths, i, "sources") : std::vector<int32_t>{};
      add_item(model->impl, in, std::move(src), read_ids(targets, target_lengths, i, "targets"), sources != nullptr, i);
    }
    *out_result = run(model->impl, in);
  });
}

PARLEY_API parley_status parley_score_text(const parley_model *model, const char *const *sources,
                                           const char *const *targets, size_t count,
                                           const parley_score_options *options, parley_score_result **out_result) {
  return guarded(__func__, [&] {
    require(model, "model");
    require(out_result, "out_result");
    const parley_score_options o = read_options(options);
    check_batch(count);
    require(targets, "targets");
    const bool enc_dec = model->impl.file->kind() == PARLEY_MODEL_ENCODER_DECODER;
    if (enc_dec && !sources)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "sources is NULL: an encoder-decoder model scores a target given a source");
    const std::string src_lang = language_of(o.source_language, "source_language");
    const std::string tgt_lang = language_of(o.target_language, "target_language");
    const TextModel &text = model->impl.text();
    const Tokenizer &src_tok = text.source(), &tgt_tok = text.target();
    if (enc_dec && tgt_lang.empty() && !tgt_tok.languages().empty())
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "this multilingual model needs options->target_language (e.g. \"" +
                                              tgt_tok.languages().front().first + "\")");
    ScoreInputs in;
    for (size_t i = 0; i < count; ++i) {
      try {
        std::vector<int32_t> src, tgt;
        if (sources) {
          const std::string s = text_of(sources[i], "sources", i);
          src = src_tok.encode(s, /*add_special=*/true, enc_dec ? std::string_view(src_lang) : std::string_view{});
        }
        const std::string t = text_of(targets[i], "targets", i);
        // Encoder-decoder: as tokenizer(text_target=...); decoder-only: special
        // tokens (a BOS) only when the target is the whole sequence.
        tgt = enc_dec ? tgt_tok.encode(t, true, tgt_lang) : tgt_tok.encode(t, /*add_special=*/sources == nullptr);
        if (tgt.empty())
          fail(PARLEY_ERROR_INVALID_ARGUMENT, "targets[" + std::to_string(i) + "] tokenizes to nothing to score");
        if (sources && src.empty())
          fail(PARLEY_ERROR_INVALID_ARGUMENT, "sources[" + std::to_string(i) + "] tokenizes to no token");
        add_item(model->impl, in, std::move(src), std::move(tgt), sources != nullptr, i);
      } catch (const Error &e) {
        const std::string what = e.what();
        if (what.rfind("sources[", 0) == 0 || what.rfind("targets[", 0) == 0) throw;
        fail(e.status(), "text #" + std::to_string(i) + ": " + what);
      }
    }
    *out_result = run(model->impl, in);
  });
}

PARLEY_API parley_status parley_score_result_count(const parley_score_result *result, size_t *out_count) {
  return guarded(__func__, [&] {
    require(result, "result");
    require(out_count, "out_count");
    *out_count = result->items.size();
  });
}

PARLEY_API parley_status parley_score_result_item(const parley_score_result *result, size_t index,
                                                  const int32_t **out_tokens, const float **out_logprobs,
                                                  size_t *out_count, double *out_sum) {
  return guarded(__func__, [&] {
    require(result, "result");
    require(out_tokens, "out_tokens");
    require(out_logprobs, "out_logprobs");
    require(out_count, "out_count");
    if (index >= result->items.size())
      fail(PARLEY_ERROR_NOT_FOUND,
           "item " + std::to_string(index) + " >= " + std::to_string(result->items.size()) + " items in the result");
    const ScoredTarget &s = result->items[index];
    *out_tokens = s.tokens.data();
    *out_logprobs = s.logprobs.data();
    *out_count = s.logprobs.size();
    if (out_sum) *out_sum = s.sum;
  });
}

PARLEY_API void parley_score_result_free(parley_score_result *result) {
  delete result;
}

}  // extern "C"
