// libFuzzer target for the model loader. Checksums would stop almost every
// mutation at the door, so the target repairs them first: the fuzzer then
// reaches the FlatBuffers verifier and the semantic checks behind them.
#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "format/model_file.hpp"
#include "text/text_model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::vector<uint8_t> b(data, data + size);
  bool verify = false;
  if (size >= 64) {
    uint64_t hoff, hlen;
    std::memcpy(&hoff, b.data() + 16, 8);
    std::memcpy(&hlen, b.data() + 24, 8);
    if (hoff <= size && hlen <= size - hoff) {
      uint64_t h = XXH3_64bits(b.data() + hoff, hlen);
      std::memcpy(b.data() + 32, &h, 8);
    }
    uint64_t p = XXH3_64bits(b.data(), 56);
    std::memcpy(b.data() + 56, &p, 8);
    verify = (b[63] & 1) != 0;  // exercise both load modes
  }
  parley::LoadOptions options;
  options.verify_checksums = verify;
  try {
    auto model = parley::ModelFile::open_memory(b.data(), b.size(), false, options);
    // Touch what a host would read after loading.
    for (const auto &t : model->tensors()) (void)model->find_tensor(t.name);
    for (const auto &c : model->config()) (void)c.int_value;
    // The tokenizers and chat format a text API call would build, and a
    // round trip through them: a hostile file must fail with an Error.
    auto text = parley::build_text_model(*model);
    static const char *probe = "Hallo <s> Welt \xF0\x9F\x99\x82 x</s>";
    std::vector<int32_t> ids = text->source().encode(
        probe, true, text->source().needs_language() ? text->source().languages().front().first : std::string());
    // Target text (scoring, a translation's target side) through the target
    // tokenizer and back: with separate vocabularies (format 1.3) its ids are
    // decoder ids, the source's need not be.
    const parley::Tokenizer &tgt = text->target();
    (void)tgt.decode(tgt.encode(probe, true, tgt.needs_language() ? tgt.languages().front().first : std::string()),
                     true);
    try {
      (void)tgt.decode(ids, false);
    } catch (const parley::Error &) {
    }
    (void)text->source().encode(probe, false, {}, SIZE_MAX, /*parse_special=*/true);
    if (text->chat) {
      std::vector<std::pair<size_t, size_t>> text_ranges;
      std::string prompt = text->chat->render({{parley::ChatRole::kUser, probe}}, true, &text_ranges);
      (void)text->source().encode_prompt(prompt, text_ranges);
    }
  } catch (const parley::Error &) {
  }
  return 0;
}
