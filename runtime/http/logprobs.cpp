#include "logprobs.hpp"

#include <algorithm>
#include <cmath>

namespace parley_http {
namespace {

// OpenAI reports a token the distribution excludes with -9999.0 (JSON has no -infinity).
double finite_logprob(float x) {
  return std::isfinite(x) ? static_cast<double>(x) : -9999.0;
}

size_t decoded_size(const parley_model *model, const int32_t *ids, size_t count) {
  if (count == 0) return 0;
  char *out = nullptr;
  size_t n = 0;
  if (parley_detokenize(model, ids, count, 1, &out) == PARLEY_OK && out) n = std::string(out).size();
  parley_string_free(out);
  return n;
}

}  // namespace

std::vector<size_t> trim_to_text(const parley_model *model, TokenScores &s, size_t text_size) {
  std::vector<size_t> offsets;
  size_t keep = 0;
  for (; keep < s.tokens.size(); ++keep) {
    size_t at = decoded_size(model, s.tokens.data(), keep);
    if (at >= text_size) break;
    offsets.push_back(at);
  }
  s.tokens.resize(keep);
  if (s.logprobs.size() > keep) s.logprobs.resize(keep);
  if (s.k > 0 && s.alternative_ids.size() > keep * s.k) {
    s.alternative_ids.resize(keep * s.k);
    s.alternative_logprobs.resize(keep * s.k);
  }
  return offsets;
}

json chat_logprobs(const parley_model *model, const TokenScores &s, size_t top) {
  json content = json::array();
  for (size_t i = 0; i < s.tokens.size(); ++i) {
    TokenText t = token_text(model, s.tokens[i]);
    json alts = json::array();
    for (size_t j = 0; j < std::min(top, s.k); ++j) {
      TokenText a = token_text(model, s.alternative_ids[i * s.k + j]);
      alts.push_back(
          {{"token", a.text}, {"logprob", finite_logprob(s.alternative_logprobs[i * s.k + j])}, {"bytes", a.bytes}});
    }
    content.push_back({{"token", t.text},
                       {"logprob", finite_logprob(i < s.logprobs.size() ? s.logprobs[i] : 0.0f)},
                       {"bytes", t.bytes},
                       {"top_logprobs", alts}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

json completion_logprobs(const parley_model *model, const TokenScores &s, const std::vector<size_t> &offsets,
                         size_t base_offset, size_t top) {
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       text_offset = json::array();
  for (size_t i = 0; i < s.tokens.size(); ++i) {
    tokens.push_back(token_text(model, s.tokens[i]).text);
    token_logprobs.push_back(finite_logprob(i < s.logprobs.size() ? s.logprobs[i] : 0.0f));
    json alts = json::object();  // two ids with the same text keep the better one (listed first)
    for (size_t j = 0; j < std::min(top, s.k); ++j) {
      std::string text = token_text(model, s.alternative_ids[i * s.k + j]).text;
      if (!alts.contains(text)) alts[text] = finite_logprob(s.alternative_logprobs[i * s.k + j]);
    }
    top_logprobs.push_back(alts);
    text_offset.push_back(base_offset + (i < offsets.size() ? offsets[i] : 0));
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top_logprobs},
          {"text_offset", text_offset}};
}

}  // namespace parley_http
