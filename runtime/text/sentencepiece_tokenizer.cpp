// SentencePiece tokenizers (Marian, M2M100, NLLB, mBART, Mistral/Llama-2
// style) through libsentencepiece, with the model's own id for each piece
// taken from the file's vocab table when it differs from the proto's order
// (Marian's shared vocab.json, the fairseq offset of NLLB/M2M100).
#include <sentencepiece_processor.h>
#include <unicode/normalizer2.h>

#include <memory>
#include <mutex>
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
    if (!sp_rest_) {  // built when a long text first needs it (encode_text)
      proto_ = proto;
      bare_flags_ = flags;
    }
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
    // Words segment independently when "▁" is a piece and no piece holds a
    // "▁" after its first character (split_by_whitespace, whitespace as
    // prefix: what SentencePiece trains by default).
    words_independent_ = !sp_->IsUnknown(sp_->PieceToId(kWordStart));
    for (int i = 0; words_independent_ && i < sp_->GetPieceSize(); ++i)
      words_independent_ = sp_->IdToPiece(i).find(kWordStart, 1) == std::string::npos;
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
    const sentencepiece::SentencePieceProcessor *bare = sp_rest_.get();
    if (!bare && text.size() > 2 * kPartBytes) {
      std::call_once(bare_once_, [&] { sp_bare_ = load(sentencepiece_proto::for_library(proto_, bare_flags_)); });
      bare = sp_bare_.get();
    }
    // libsentencepiece joins a run of unknown characters into one piece by
    // copying the run once per character (PopulateSentencePieceText):
    // quadratic, 6 s for 100,000 emoji. A long text is therefore encoded in
    // parts cut inside such runs only, between two characters that no piece
    // holds (each encoded alone as itself), where NFKC always has a boundary:
    // no merge and no normalisation crosses such a cut, and the run's two
    // halves are joined again below. A run without such a boundary for
    // kForcedCutBytes (combining marks never give one: 4 MB of U+0301 took
    // minutes) is cut between two such characters anyway; NFKC's canonical
    // reordering of marks cannot reach across that cut, a difference only
    // such a run can show.
    size_t begin = 0;
    std::unordered_map<uint32_t, bool> opaque;
    while (begin < text.size()) {
      size_t end = text.size();
      if (bare && text.size() - begin > 2 * kPartBytes) end = part_end(*bare, text, begin + kPartBytes, opaque);
      std::vector<std::string> pieces =
          encode_pieces(begin == 0 ? sp : *bare, text.substr(begin, end - begin));  // OOM-safe
      for (size_t k = 0; k < pieces.size(); ++k) {
        auto it = ids_.find(pieces[k]);
        if (it != ids_.end()) {
          out.push_back(it->second);
        } else if (unk_ >= 0 && !(k == 0 && begin > 0)) {  // a part's first unknown piece continues the run
          out.push_back(unk_);
        }
      }
      begin = end;
    }
  }

  // With a budget, a long text is first encoded up to a word end a little
  // past what the budget could hold: when the words before the probe's last
  // two already need more ids than are left, the text cannot fit, and the
  // rest is not tokenized (1 s per MB before). Exact: words segment alone
  // (words_independent_), and normalisation reaches across a word end only
  // into the word before it (a charsmap rule spanning the space, NFKC at the
  // boundary), so those earlier words get the same ids as in the whole text.
  bool encode_text_bounded(std::string_view raw, bool first, std::vector<int32_t> &out, size_t limit) const override {
    const size_t room = limit > out.size() ? limit - out.size() : 0;
    if (limit != SIZE_MAX && words_independent_ && room < raw.size() / kProbeBytesPerId) {
      const size_t cut = raw.find(' ', kProbeBytesPerId * room + kProbeSlackBytes);
      if (cut != std::string_view::npos) {
        std::vector<int32_t> probe;
        encode_text(raw.substr(0, cut), first, probe);
        size_t word_starts = 0, sure = probe.size();
        while (sure > 0 && word_starts < 2) word_starts += starts_word(probe[--sure]) ? 1 : 0;
        if (word_starts == 2 && sure > room) {
          out.insert(out.end(), probe.begin(), probe.begin() + static_cast<std::ptrdiff_t>(sure));
          return false;
        }
      }
    }
    encode_text(raw, first, out);
    return out.size() <= limit;
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
  static constexpr size_t kPartBytes = 4096;
  static constexpr size_t kForcedCutBytes = 2 * kPartBytes;
  static constexpr const char *kWordStart = "\xE2\x96\x81";  // "▁"
  // The budget probe (encode_text_bounded) reads this many bytes per id
  // left, plus the slack: more than ids usually cover (about 4 bytes each).
  static constexpr size_t kProbeBytesPerId = 16, kProbeSlackBytes = 4096;

  bool starts_word(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < pieces_.size() &&
           pieces_[static_cast<size_t>(id)].rfind(kWordStart, 0) == 0;
  }

  // Whether character c can sit on either side of a cut (see encode_text):
  // no piece holds it and the library encodes it alone as itself.
  bool opaque_char(const sentencepiece::SentencePieceProcessor &bare, std::string_view c) const {
    if (ids_.count(std::string(c))) return false;
    const std::vector<std::string> alone = encode_pieces(bare, c);
    return alone.size() == 1 && alone[0] == c && bare.IsUnknown(bare.PieceToId(alone[0]));
  }

  // Where to end a part that should end near `from`: the first boundary at
  // or after it between two opaque characters where NFKC always has a
  // boundary (the second one never combines with what precedes it), or from
  // kForcedCutBytes on any boundary between two opaque characters; the
  // text's end if none.
  size_t part_end(const sentencepiece::SentencePieceProcessor &bare, std::string_view text, size_t from,
                  std::unordered_map<uint32_t, bool> &opaque) const {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2 *nfkc = icu::Normalizer2::getNFKCInstance(status);
    if (U_FAILURE(status) || !nfkc) return text.size();
    size_t i = from;
    while (i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) ++i;  // a code point's start
    bool prev_opaque = false;
    while (i < text.size()) {
      const size_t len = std::max<size_t>(1, utf8::sequence_length(text, i));
      size_t j = i;
      const uint32_t cp = utf8::next(text, j);
      auto it = opaque.find(cp);
      if (it == opaque.end()) it = opaque.emplace(cp, opaque_char(bare, text.substr(i, len))).first;
      if (it->second && prev_opaque && i > from &&
          (i >= from + kForcedCutBytes || nfkc->hasBoundaryBefore(static_cast<UChar32>(cp))))
        return i;
      prev_opaque = it->second;
      i += len;
    }
    return text.size();
  }

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_, sp_rest_;
  // Without a dummy prefix, for the parts after the first (see encode_text);
  // sp_rest_ serves when it exists. proto_ lies in the model file, which
  // outlives its tokenizers.
  std::string_view proto_;
  std::vector<std::pair<uint32_t, bool>> bare_flags_;
  mutable std::once_flag bare_once_;
  mutable std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_bare_;
  std::vector<std::string> pieces_;
  std::unordered_map<std::string, int32_t> ids_;
  bool words_independent_ = false;
  int32_t unk_ = -1;
  bool collapse_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const TokenizerView &view, uint32_t model_vocab) {
  return std::make_unique<SentencePieceTokenizer>(view, model_vocab);
}

}  // namespace parley
