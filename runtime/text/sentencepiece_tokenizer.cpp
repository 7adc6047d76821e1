// SentencePiece tokenizers (Marian, M2M100, NLLB, mBART, Mistral/Llama-2
// style) through libsentencepiece, with the model's own id for each piece
// taken from the file's vocab table when it differs from the proto's order
// (Marian's shared vocab.json, the fairseq offset of NLLB/M2M100).
#include <sentencepiece_processor.h>

#include <memory>
#include <unordered_map>

#include "core/error.hpp"
#include "text/sentencepiece_encode.hpp"
#include "text/tokenizer.hpp"
#include "text/utf8.hpp"

namespace parley {

namespace {

// Protocol-buffer wire format, just enough to override one bool field of a
// nested message: a later occurrence of a scalar field wins when parsed.
bool read_varint(std::string_view s, size_t &i, uint64_t &v) {
  v = 0;
  for (int shift = 0; shift < 64 && i < s.size(); shift += 7) {
    auto b = static_cast<unsigned char>(s[i++]);
    v |= static_cast<uint64_t>(b & 0x7F) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}
void write_varint(std::string &out, uint64_t v) {
  do {
    unsigned char b = v & 0x7F;
    v >>= 7;
    out += static_cast<char>(v ? (b | 0x80) : b);
  } while (v);
}
// Walks the top-level fields of a ModelProto; `on_field(number, start, end,
// body)` sees each one (body: the payload of length-delimited fields).
template <typename Fn>
void for_each_field(std::string_view proto, Fn &&on_field) {
  for (size_t i = 0; i < proto.size();) {
    size_t start = i;
    uint64_t tag = 0, len = 0, scratch = 0;
    std::string_view body;
    if (!read_varint(proto, i, tag)) fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model: bad field tag");
    switch (tag & 7) {
      case 0:
        if (!read_varint(proto, i, scratch)) fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model: bad varint");
        break;
      case 1:
        i += 8;
        break;
      case 5:
        i += 4;
        break;
      case 2:
        if (!read_varint(proto, i, len) || len > proto.size() - i)
          fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model: field length past the end");
        body = proto.substr(i, len);
        i += len;
        break;
      default:
        fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model: unknown wire type");
    }
    if (i > proto.size()) fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model: field past the end");
    on_field(tag, start, i, body);
  }
}

constexpr uint64_t kNormalizerSpec = 3;                               // ModelProto.normalizer_spec
constexpr uint64_t kAddDummyPrefix = 3, kRemoveExtraWhitespaces = 4;  // NormalizerSpec fields

// A bool of ModelProto.normalizer_spec (proto2 default when absent).
bool normalizer_flag(std::string_view proto, uint64_t field, bool fallback) {
  bool value = fallback;
  for_each_field(proto, [&](uint64_t tag, size_t, size_t, std::string_view body) {
    if (tag != ((kNormalizerSpec << 3) | 2)) return;
    for_each_field(body, [&](uint64_t t, size_t s, size_t e, std::string_view) {
      if (t == (field << 3)) value = body[e - 1] != 0;  // one-byte varint for a bool
      (void)s;
    });
  });
  return value;
}

// The proto with normalizer_spec bools overridden (a later occurrence of a
// scalar field wins when protobuf parses).
std::string with_normalizer_flags(std::string_view proto, const std::vector<std::pair<uint64_t, bool>> &flags) {
  std::string out, extra;
  for (const auto &[field, v] : flags) {
    write_varint(extra, field << 3);
    extra += v ? '\x01' : '\x00';
  }
  bool patched = false;
  for_each_field(proto, [&](uint64_t tag, size_t start, size_t end, std::string_view body) {
    if (tag == ((kNormalizerSpec << 3) | 2) && !patched) {
      std::string b(body);
      b += extra;
      write_varint(out, tag);
      write_varint(out, b.size());
      out += b;
      patched = true;
    } else {
      out.append(proto.substr(start, end - start));
    }
  });
  if (!patched) {
    write_varint(out, (kNormalizerSpec << 3) | 2);
    write_varint(out, extra.size());
    out += extra;
  }
  return out;
}

std::unique_ptr<sentencepiece::SentencePieceProcessor> load(std::string_view proto) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  auto status = sp->LoadFromSerializedProto(proto);
  if (!status.ok())
    fail(PARLEY_ERROR_INVALID_MODEL, std::string("SentencePiece model does not load: ") + status.ToString());
  return sp;
}

// "<0x41>" -> 0x41; -1 if the piece is not a byte piece.
int byte_piece(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
  int hi = hex(p[3]), lo = hex(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const TokenizerView &view, uint32_t model_vocab) : Tokenizer(view, model_vocab) {
    std::string_view proto(reinterpret_cast<const char *>(view.data), view.length);
    // tokenizers' rebuilt pipelines for SentencePiece models (NLLB, mBART)
    // collapse runs of spaces to one instead of stripping them, so a leading
    // or trailing space survives as "▁": emulate with the proto's whitespace
    // removal turned off and our own collapsing.
    collapse_ =
        table_.decode_style() == format::DecodeStyle::Stream && normalizer_flag(proto, kRemoveExtraWhitespaces, true);
    std::vector<std::pair<uint64_t, bool>> flags;
    if (collapse_) flags.emplace_back(kRemoveExtraWhitespaces, false);
    sp_ = load(flags.empty() ? std::string(proto) : with_normalizer_flags(proto, flags));
    flags.emplace_back(kAddDummyPrefix, false);
    if (table_.prefix_first_only()) sp_rest_ = load(with_normalizer_flags(proto, flags));
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
      int b = byte_piece(p);
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
