#include "text/text_model.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace parley {

namespace {
// Generation ids are decoder ids: spelled by the target tokenizer (the
// shared one, unless format 1.3 separates the vocabularies).
std::string spell_token(const TextModel &text, const ModelFile &file, int64_t id) {
  return id >= 0 && id < static_cast<int64_t>(file.target_vocab_size())
             ? text.target().decode({static_cast<int32_t>(id)}, /*skip_special=*/false)
             : std::string();
}
}  // namespace

std::unique_ptr<TextModel> build_text_model(const ModelFile &file) {
  auto text = std::make_unique<TextModel>();
  for (size_t i = 0; i < file.tokenizers().size(); ++i) {
    const TokenizerView &view = file.tokenizers()[i];
    std::unique_ptr<Tokenizer> *slot = view.role == PARLEY_TOKENIZER_SOURCE   ? &text->source_only
                                       : view.role == PARLEY_TOKENIZER_TARGET ? &text->target_only
                                                                              : &text->shared;
    if (*slot) fail(PARLEY_ERROR_INVALID_MODEL, "tokenizer #" + std::to_string(i) + " repeats a role");
    try {
      // A target tokenizer's ids are decoder ids (format 1.3 may separate the vocabularies).
      *slot = Tokenizer::create(view, view.role == PARLEY_TOKENIZER_TARGET ? file.target_vocab_size()
                                      : view.role == PARLEY_TOKENIZER_SOURCE
                                          ? file.vocab_size()
                                          : std::min(file.vocab_size(), file.target_vocab_size()));
    } catch (const Error &e) {
      fail(e.status(), "tokenizer #" + std::to_string(i) + ": " + e.what());
    }
  }
  if (!text->shared && !(text->source_only && text->target_only)) {
    if (text->source_only || text->target_only)
      fail(PARLEY_ERROR_INVALID_MODEL, "the model file has a source or a target tokenizer but not both");
    fail(PARLEY_ERROR_UNSUPPORTED,
         "the model file has no tokenizer (convert it with its tokenizer files, or use the token-level API)");
  }
  if (const format::ChatFormat *c = file.header().chat_format()) text->chat.emplace(*c);
  if (const std::string *source = file.chat_template()) {
    // The template's other variables: the tokenizer's special tokens, stored
    // by the converter as metadata "chat_template.<name>" (e.g.
    // chat_template.bos_token), as apply_chat_template passes them.
    std::vector<std::pair<std::string, std::string>> variables;
    static constexpr std::string_view kPrefix = "chat_template.";
    for (const auto &kv : file.metadata())
      if (kv.first.size() > kPrefix.size() && kv.first.compare(0, kPrefix.size(), kPrefix) == 0)
        variables.emplace_back(kv.first.substr(kPrefix.size()), kv.second);
    // Files from converters before these entries: bos_token and eos_token
    // from the generation config's ids, as the tokenizer spells them; else
    // bos_token is the token the tokenizer puts first (add_special_tokens).
    if (variables.empty()) {
      const format::GenerationConfig *gen = file.header().generation();
      std::string bos = gen ? spell_token(*text, file, gen->bos_token_id()) : std::string();
      for (const TokenizerView &view : file.tokenizers())
        if (bos.empty() && view.role != PARLEY_TOKENIZER_TARGET && view.table->prefix() &&
            view.table->prefix()->size() > 0 && view.table->prefix()->Get(0)->str().find("{lang}") == std::string::npos)
          bos = view.table->prefix()->Get(0)->str();
      if (!bos.empty()) variables.emplace_back("bos_token", bos);
      if (gen && gen->eos_token_ids() && gen->eos_token_ids()->size() > 0) {
        std::string eos = spell_token(*text, file, gen->eos_token_ids()->Get(0));
        if (!eos.empty()) variables.emplace_back("eos_token", eos);
      }
    }
    try {
      text->chat_template = std::make_unique<ChatTemplate>(*source, variables);
    } catch (const Error &e) {
      // A broken template fails chat sessions that need it, not the model.
      text->chat_template_error = e.what();
    }
  }
  return text;
}

}  // namespace parley
