// SentencePiece tokenizers (Marian, M2M100, NLLB, mBART, Mistral/Llama-2
// style) through libsentencepiece, with the model's own id for each piece
// taken from the file's vocab table when it differs from the proto's order
// (Marian's shared vocab.json, the fairseq offset of NLLB/M2M100).
#include <sentencepiece_processor.h>

#include <memory>
#include <new>
#include <unordered_map>

#include "core/error.hpp"
#include "core/escape.hpp"
#include "text/sentencepiece_encode.hpp"
#include "text/sentencepiece_proto.hpp"
#include "text/tokenizer.hpp"
#include "text/utf8.hpp"

namespace parley {

namespace {

std::unique_ptr<sentencepiece::SentencePieceProcessor> load(std::string_view proto) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  sentencepiece::util::Status status;
  try {  // darts-clone throws (checked protos should not get there)
    status = sp->LoadFromSerializedProto(proto);
  } catch (const std::bad_alloc &) {
    throw;
  } catch (const std::exception &e) {
    fail(PARLEY_ERROR_INVALID_MODEL, std::string("SentencePiece model does not load: ") + e.what());
  }
  if (!status.ok())
    fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model does not load: " + escape_untrusted(status.ToString(), 512));
  return sp;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const TokenizerView &view, uint32_t model_vocab) : Tokenizer(view, model_vocab) {
    std::string_view proto(reinterpret_cast<const char *>(view.data), view.length);
    // libsentencepiece trusts its proto (a bad charsmap trie reads out of
    // bounds on ordinary text): check every field it relies on first.
    const sentencepiece_proto::Summary checked = sentencepiece_proto::check_model_proto(proto);
    // tokenizers' rebuilt pipelines for SentencePiece models (NLLB, mBART)
    // collapse runs of spaces to one instead of stripping them, so a leading
    // or trailing space survives as "▁": emulate with the proto's whitespace
    // removal turned off and our own collapsing.
    collapse_ = table_.decode_style() == format::DecodeStyle::Stream && checked.remove_extra_whitespaces;
    std::vector<std::pair<uint32_t, bool>> flags;
    if (collapse_) flags.emplace_back(sentencepiece_proto::kRemoveExtraWhitespaces, false);
    sp_ = load(sentencepiece_proto::for_library(proto, flags));
    flags.emplace_back(sentencepiece_proto::kAddDummyPrefix, false);
    if (table_.prefix_first_only()) sp_rest_ = load(sentencepiece_proto::for_library(proto, flags));
    if (const auto *vocab = table_.vocab()) {
      for (flatbuffers::uoffset_t i = 0; i < vocab->size(); ++i) {
        pieces_.push_back(vocab->Get(i)->str());
        ids_.emplace(pieces_.back(), static_cast<int32_t>(i));
      }
    } else {
      for (int i = 0; i < sp_->GetPieceSize(); ++i) pieces_.push_back(sp_->IdToPiece(i));
      if (pieces_.size() > model_vocab)
        fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model has " + std::to_string(pieces_.size()) +
                                             " pieces, more than the model's vocabulary of " +
                                             std::to_string(model_vocab));
      for (size_t i = 0; i < pieces_.size(); ++i) ids_.emplace(pieces_[i], static_cast<int32_t>(i));
    }
    unk_ = table_.unk_id() >= 0 ? table_.unk_id() : (table_.vocab() ? -1 : sp_->unk_id());
  }

 protected:
  int32_t vocab_id(std::string_view token) const override {
    auto it = ids_.find(std::string(token));
    return it == ids_.end() ? -1 : it->second;
  }

  void encode_text(std::string_view raw, bool first, std::vector<int32_t> &out) const override {
    std::string collapsed;
    if (collapse_) {  // the proto's charsmap turns tabs into spaces before tokenizers' Replace(" {2,}", " ")
      for (char c : raw) {
        if (c == '\t' || c == '\n' || c == '\r') c = ' ';
        if (!(c == ' ' && !collapsed.empty() && collapsed.back() == ' ')) collapsed += c;
      }
      raw = collapsed;
    }
    std::string_view text = raw;
    // tokenizers' Metaspace prepends "▁" only to the first stretch of text,
    // and not when it already starts with a space (which becomes "▁").
    bool prefix = first && !(table_.decode_style() == format::DecodeStyle::Stream && !text.empty() && text[0] == ' ');
    const auto &sp = (!prefix && sp_rest_) ? *sp_rest_ : *sp_;
    std::vector<std::string> pieces = encode_pieces(sp, text);  // text/sentencepiece_encode.hpp: OOM-safe
    for (const std::string &p : pieces) {
      auto it = ids_.find(p);
      if (it != ids_.end()) {
        out.push_back(it->second);
      } else if (unk_ >= 0) {
        out.push_back(unk_);
      }
    }
  }

  bool piece_bytes(int32_t id, std::string *out) const override {
    if (id < 0 || static_cast<size_t>(id) >= pieces_.size() || id == unk_) return false;
    if (sp_ && id < sp_->GetPieceSize() && (sp_->IsControl(id) || sp_->IsUnknown(id))) return false;
    const std::string &p = pieces_[static_cast<size_t>(id)];
    const int b = sentencepiece_proto::byte_of(p);
    if (b >= 0) {
      *out = std::string(1, static_cast<char>(b));
      return true;
    }
    out->clear();
    for (size_t i = 0; i < p.size();) {
      if (p.compare(i, 3, "\xE2\x96\x81") == 0) {
        *out += ' ';
        i += 3;
      } else {
        *out += p[i++];
      }
    }
    return !out->empty();
  }

  // `strip`: drop the leading space the dummy prefix put there.
  std::string decode_run(const std::vector<int32_t> &ids, bool strip) const override {
    const bool stream = table_.decode_style() == format::DecodeStyle::Stream;
    std::string text, bytes;
    // tokenizers' ByteFallback decoder: a run of byte pieces that is not
    // valid UTF-8 becomes one U+FFFD per byte; libsentencepiece decodes the
    // bytes lossily instead.
    auto flush_bytes = [&] {
      if (bytes.empty()) return;
      if (!stream || utf8::valid(bytes)) {
        text += stream ? bytes : utf8::lossy(bytes);
      } else {
        for (size_t i = 0; i < bytes.size(); ++i) text += "\xEF\xBF\xBD";
      }
      bytes.clear();
    };
    for (int32_t id : ids) {
      if (static_cast<size_t>(id) >= pieces_.size()) continue;
      const std::string &p = pieces_[static_cast<size_t>(id)];
      int b = sentencepiece_proto::byte_of(p);
      if (b >= 0) {
        bytes += static_cast<char>(b);
        continue;
      }
      flush_bytes();
      for (size_t i = 0; i < p.size();) {  // "▁" (U+2581) is a space
        if (p.compare(i, 3, "\xE2\x96\x81") == 0) {
          text += ' ';
          i += 3;
        } else {
          text += p[i++];
        }
      }
    }
    flush_bytes();
    if (strip && !text.empty() && text[0] == ' ') text.erase(0, 1);
    return text;
  }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_, sp_rest_;
  std::vector<std::string> pieces_;
  std::unordered_map<std::string, int32_t> ids_;
  int32_t unk_ = -1;
  bool collapse_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const TokenizerView &view, uint32_t model_vocab) {
  return std::make_unique<SentencePieceTokenizer>(view, model_vocab);
}

}  // namespace parley
