// Results as JSON documents: one call hands a binding a whole result
// (docs/results_json.md describes the schema).
#include "capi/result_json.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "capi/api_guard.hpp"
#include "core/protect_names.hpp"
#include "text/protect.hpp"

using parley::capi::guarded;
using parley::capi::Json;
using parley::capi::require;

namespace parley::capi {

namespace {

constexpr uint32_t kKnownFlags = PARLEY_JSON_NO_TOKENS | PARLEY_JSON_NO_ATTENTION;

// nlohmann writes a non-finite number as null; done explicitly so that the
// document does not depend on that library default.
Json number(float v) {
  return std::isfinite(v) ? Json(v) : Json(nullptr);
}

Json numbers(const std::vector<float> &v) {
  Json a = Json::array();
  for (float x : v) a.push_back(number(x));
  return a;
}

const char *constraint_name(int8_t c) {
  switch (c) {
    case PARLEY_CONSTRAINT_COMPLETE:
      return "complete";
    case PARLEY_CONSTRAINT_INCOMPLETE:
      return "incomplete";
    default:
      return "none";
  }
}

const char *placement_name(int32_t p) {
  switch (p) {
    case PARLEY_SPAN_ALIGNED:
      return "aligned";
    case PARLEY_SPAN_POSITIONED:
      return "positioned";
    default:
      return "copied";
  }
}

}  // namespace

void check_json_flags(uint32_t flags) {
  if (flags & ~kKnownFlags)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "flags is " + std::to_string(flags) +
             ": known bits are PARLEY_JSON_NO_TOKENS (1) and PARLEY_JSON_NO_ATTENTION (2)");
}

Json translation_json(const parley_translation_result &result, uint32_t flags) {
  const bool tokens = !(flags & PARLEY_JSON_NO_TOKENS), attention = !(flags & PARLEY_JSON_NO_ATTENTION);
  Json texts = Json::array();
  for (const TextTranslation &t : result.items) {
    Json item = Json::object();
    item["status"] = parley_status_name(t.error);
    item["status_code"] = t.error;
    item["message"] = t.error_message;
    item["segments"] = t.segments;
    if (tokens) item["source_tokens"] = t.source_tokens;
    Json hyps = Json::array();
    for (const TextHypothesis &h : t.hypotheses) {
      Json j = Json::object();
      j["text"] = h.text;
      j["score"] = number(h.score);
      j["cut_by_length"] = h.cut_by_length;
      if (tokens) j["tokens"] = h.tokens;
      if (attention && !h.attention.empty()) {
        // Rows of the [target x source] matrix the attention getter returns.
        const size_t cols = t.source_tokens.size(), rows = cols ? h.attention.size() / cols : 0;
        Json m = Json::array();
        for (size_t r = 0; r < rows; ++r) {
          Json row = Json::array();
          for (size_t c = 0; c < cols; ++c) row.push_back(number(h.attention[r * cols + c]));
          m.push_back(std::move(row));
        }
        j["attention"] = std::move(m);
      }
      Json spans = Json::array();
      for (const ProtectedSpan &p : h.protected_spans)
        spans.push_back({{"kind", parley::protected_kind_name(p.kind)},
                         {"placement", placement_name(p.placement)},
                         {"source_offset", p.source_offset},
                         {"source_length", p.source_length},
                         {"target_offset", p.target_offset},
                         {"target_length", p.target_length}});
      j["protected_spans"] = std::move(spans);
      hyps.push_back(std::move(j));
    }
    item["hypotheses"] = std::move(hyps);
    texts.push_back(std::move(item));
  }
  return Json{{"kind", "translation"}, {"texts", std::move(texts)}};
}

Json generation_json(const parley_generation_result &result, uint32_t flags) {
  const bool tokens = !(flags & PARLEY_JSON_NO_TOKENS);
  Json batch = Json::array();
  for (const auto &item : result.items) {
    Json hyps = Json::array();
    for (const Hypothesis &h : item) {
      Json j = Json::object();
      if (tokens) j["tokens"] = h.tokens;
      j["score"] = number(h.score);
      if (!h.logprobs.empty()) j["logprobs"] = numbers(h.logprobs);
      j["constraint"] = constraint_name(h.constraint);
      hyps.push_back(std::move(j));
    }
    batch.push_back(Json{{"hypotheses", std::move(hyps)}});
  }
  return Json{{"kind", "generation"}, {"batch", std::move(batch)}};
}

void write_json(const Json &document, char **out_json, size_t *out_length) {
  // Texts are valid UTF-8 (decoding replaces bad bytes with U+FFFD); a
  // message quoting a caller's invalid bytes gets U+FFFD too instead of
  // failing the whole document.
  const std::string text = document.dump(-1, ' ', false, nlohmann::detail::error_handler_t::replace);
  char *out = static_cast<char *>(std::malloc(text.size() + 1));
  if (!out) throw std::bad_alloc();
  std::memcpy(out, text.c_str(), text.size() + 1);
  *out_json = out;
  if (out_length) *out_length = text.size();
}

}  // namespace parley::capi

extern "C" {

PARLEY_API parley_status parley_translation_result_json(const parley_translation_result *result, uint32_t flags,
                                                        char **out_json, size_t *out_length) {
  return guarded(__func__, [&] {
    require(result, "result");
    require(out_json, "out_json");
    parley::capi::check_json_flags(flags);
    parley::capi::write_json(parley::capi::translation_json(*result, flags), out_json, out_length);
  });
}

PARLEY_API parley_status parley_result_json(const parley_generation_result *result, uint32_t flags, char **out_json,
                                            size_t *out_length) {
  return guarded(__func__, [&] {
    require(result, "result");
    require(out_json, "out_json");
    parley::capi::check_json_flags(flags);
    parley::capi::write_json(parley::capi::generation_json(*result, flags), out_json, out_length);
  });
}

}  // extern "C"
