// Byte-level BPE tokenizer (GPT-2, BART, Llama-3, Qwen2/3); built through
// Tokenizer::create. Declared here for the factory and for tests.
#pragma once

#include <cstdint>
#include <memory>

#include "text/tokenizer.hpp"

namespace parley {

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const TokenizerView &view, uint32_t model_vocab);

// Work done by byte-level BPE encoding on the calling thread since it
// started: one unit per merge-table lookup and per pre-tokenizer regex
// call. Tests use it to check that encoding scales linearly (a clock would
// make them flaky); it costs one thread-local increment per unit.
uint64_t bpe_work_on_this_thread();

}  // namespace parley
