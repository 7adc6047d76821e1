// OpenAI's `logprobs` objects from Parley's per-token log-probabilities and
// top-k alternatives: chat's {"content": [{token, logprob, bytes,
// top_logprobs}]} and the legacy completions' {tokens, token_logprobs,
// top_logprobs, text_offset}.
#pragma once

#include <parley/parley.h>

#include <cstdint>
#include <string>
#include <vector>

#include "api.hpp"

namespace parley_http {

// One choice's generated tokens with their log-probabilities and, when
// asked for, k alternatives per token ([tokens x k] row-major, best first).
struct TokenScores {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  size_t k = 0;
  std::vector<int32_t> alternative_ids;
  std::vector<float> alternative_logprobs;
};

// Keep the tokens that begin inside the reply's text (its first
// `text_size` bytes): a token that starts at or after its end decodes to
// nothing there (the EOS token) or was cut away by a stop string. Returns
// each kept token's byte offset in the text (detokenized prefixes, special
// tokens skipped, as the reply's text is decoded).
std::vector<size_t> trim_to_text(const parley_model *model, TokenScores &s, size_t text_size);

// choices[i].logprobs of a chat completion: top (0..20) alternatives per token.
json chat_logprobs(const parley_model *model, const TokenScores &s, size_t top);

// choices[i].logprobs of a legacy completion; text_offset counts bytes from
// the start of the prompt (`base_offset` = its size), as OpenAI's do.
json completion_logprobs(const parley_model *model, const TokenScores &s, const std::vector<size_t> &offsets,
                         size_t base_offset, size_t top);

}  // namespace parley_http
