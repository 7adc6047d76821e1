// Requests on a Transformer: prefill the prompts (one padded step for the
// whole batch), then hand the rows to decode() through the KV-cache step
// model. Also maps a model file's generation defaults to DecodingOptions.
#pragma once

#include <vector>

#include "engine/decoding.hpp"
#include "format/model_file.hpp"
#include "model/transformer.hpp"
#include "serve/engine.hpp"

namespace parley {

// DecodingOptions from the model's generation config (transformers' defaults
// where the file sets nothing).
DecodingOptions decoding_defaults(const ModelFile &file);

// transformers counts a decoder-only prompt in max_length (generation stops
// once prompt + new tokens reach it, after at least one new token): with the
// model's defaults (no caller options), a decoder-only file's max_length
// leaves max(1, max_length - longest prompt) new tokens. Other files and
// files without max_length: `o` unchanged.
void apply_max_length_to_prompts(const ModelFile &file, const std::vector<std::vector<int32_t>> &prompts,
                                 DecodingOptions &o);

// Decoder-only: continue each prompt (non-empty token ids).
std::vector<std::vector<Hypothesis>> generate(const Transformer &model,
                                              const std::vector<std::vector<int32_t>> &prompts,
                                              const DecodingOptions &options);

// The same through the serving engine: each prompt is a sequence of its own,
// batched with every other request the engine runs meanwhile.
std::vector<std::vector<Hypothesis>> generate(Engine &engine, const std::vector<std::vector<int32_t>> &prompts,
                                              const DecodingOptions &options, const RunControl &control = {});
// ... as a coroutine: with control.resumer set it holds no thread while the
// engine runs its rows (asynchronous requests). `prompts` and `options`
// must outlive it.
Task<std::vector<std::vector<Hypothesis>>> generate_task(Engine &engine,
                                                         const std::vector<std::vector<int32_t>> &prompts,
                                                         const DecodingOptions &options, RunControl control);

// Encoder-decoder: encode each source, then decode from its decoder prompt
// (the decoder start token, possibly followed by a target prefix).
std::vector<std::vector<Hypothesis>> translate(const Transformer &model,
                                               const std::vector<std::vector<int32_t>> &sources,
                                               const std::vector<std::vector<int32_t>> &decoder_prompts,
                                               const DecodingOptions &options);

// The same through the serving engine: each source is encoded into the
// engine's cross-attention pool, and its rows are batched with every other
// request the engine runs meanwhile.
std::vector<std::vector<Hypothesis>> translate(Engine &engine, const std::vector<std::vector<int32_t>> &sources,
                                               const std::vector<std::vector<int32_t>> &decoder_prompts,
                                               const DecodingOptions &options, const RunControl &control = {});

}  // namespace parley
