// SentencePiece tokenizers (Marian, M2M100, NLLB, mBART, Mistral/Llama-2
// style) through libsentencepiece, with the model's own id for each piece
// taken from the file's vocab table when it differs from the proto's order
// (Marian's shared vocab.json, the fairseq offset of NLLB/M2M100).
#include <sentencepiece_processor.h>

#include <memory>
#include <unordered_map>

#include "core/error.hpp"
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
// ModelProto.normalizer_spec (field 3) .add_dummy_prefix (field 3) = false.
std::string without_dummy_prefix(std::string_view proto) {
  std::string out;
  bool patched = false;
  for (size_t i = 0; i < proto.size();) {
    size_t start = i;
    uint64_t tag = 0, len = 0, scratch = 0;
    if (!read_varint(proto, i, tag)) fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model: bad field tag");
    switch (tag & 7) {
      case 0:
        if (!read_varint(proto, i, scratch)) fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model: bad varint");
        break;
      case 1: i += 8; break;
      case 5: i += 4; break;
      case 2:
        if (!read_varint(proto, i, len) || len > proto.size() - i)
          fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model: field length past the end");
        if ((tag >> 3) == 3) {
          std::string body(proto.substr(i, len));
          body += '\x18';  // field 3, varint
          body += '\x00';
          write_varint(out, tag);
          write_varint(out, body.size());
          out += body;
          i += len;
          patched = true;
          continue;
        }
        i += len;
        break;
      default: fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model: unknown wire type");
    }
    if (i > proto.size()) fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model: field past the end");
    out.append(proto.substr(start, i - start));
  }
  if (!patched) out += std::string("\x1a\x02\x18\x00", 4);
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
    sp_ = load(proto);
    if (table_.prefix_first_only()) sp_rest_ = load(without_dummy_prefix(proto));
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

  void encode_text(std::string_view text, bool first, std::vector<int32_t> &out) const override {
    const auto &sp = (!first && sp_rest_) ? *sp_rest_ : *sp_;
    std::vector<std::string> pieces;
    auto status = sp.Encode(text, &pieces);
    if (!status.ok()) fail(PARLEY_ERROR_INTERNAL, "SentencePiece encode failed: " + status.ToString());
    for (const std::string &p : pieces) {
      auto it = ids_.find(p);
      if (it != ids_.end()) {
        out.push_back(it->second);
      } else if (unk_ >= 0) {
        out.push_back(unk_);
      }
    }
  }

  std::string decode_run(const std::vector<int32_t> &ids, bool first) const override {
    std::string bytes;
    for (int32_t id : ids) {
      if (static_cast<size_t>(id) >= pieces_.size()) continue;
      const std::string &p = pieces_[static_cast<size_t>(id)];
      int b = byte_piece(p);
      if (b >= 0) {
        bytes += static_cast<char>(b);
        continue;
      }
      for (size_t i = 0; i < p.size();) {  // "▁" (U+2581) is a space
        if (p.compare(i, 3, "\xE2\x96\x81") == 0) {
          bytes += ' ';
          i += 3;
        } else {
          bytes += p[i++];
        }
      }
    }
    if (first && !bytes.empty() && bytes[0] == ' ') bytes.erase(0, 1);  // the dummy prefix
    return utf8::lossy(bytes);
  }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_, sp_rest_;
  std::vector<std::string> pieces_;
  std::unordered_map<std::string, int32_t> ids_;
  int32_t unk_ = -1;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const TokenizerView &view, uint32_t model_vocab) {
  return std::make_unique<SentencePieceTokenizer>(view, model_vocab);
}

}  // namespace parley
