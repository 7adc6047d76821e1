// libFuzzer target for SentencePiece protos (issue 10, item 3). An input is
// one selector byte and a serialized ModelProto. The selector picks a
// SentencePiece tokenizer table from the fixture files (NLLB, mBART, M2M100,
// Marian source/target, Mistral: their special tokens, languages, vocab
// remapping and decoding conventions); the proto replaces that table's blob,
// which is how the runtime receives it (TokenizerView; the container around
// it is fuzz_model_loader's business). The tokenizer is then built and run
// on text with NFKC-sensitive characters. A build may fail only with
// INVALID_MODEL (or UNSUPPORTED: WORD and CHAR models); a tokenizer that
// builds must encode and decode every text without an error, produce ids
// inside the model's vocabulary and valid UTF-8.
//
// The custom mutator parses the proto and changes what libsentencepiece
// trusts: the charsmap's trie size, units on the trie path of a corpus
// text, leaf values, the normalized strings; pieces (text, type, score,
// order, duplicates, nested user-defined symbols); trainer_spec ids, model
// type and flags; repeated message fields (protobuf merges them). Seeds:
// tests/fuzz/make_sentencepiece_seeds.sh.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../common/proto_wire.hpp"
#include "core/error.hpp"
#include "format/model_file.hpp"
#include "text/tokenizer.hpp"
#include "text/utf8.hpp"

extern "C" size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

namespace {

using parley::Error;
using parley::ModelFile;
using parley::Tokenizer;
using parley::TokenizerView;

// ---- the fixture tables ------------------------------------------------------

struct Base {
  TokenizerView view;
  uint32_t vocab;
};

std::vector<Base> load_bases() {
  const char *env = std::getenv("PARLEY_TOKENIZER_DIR");
  const std::string dir = env ? env : PARLEY_TOKENIZER_FIXTURES;
  static std::vector<std::unique_ptr<ModelFile>> files;  // alive for the process
  std::vector<Base> bases;
  // Selector order: make_sentencepiece_seeds.sh writes seeds with these bytes.
  const std::pair<const char *, parley_tokenizer_role> picks[] = {
      {"nllb", PARLEY_TOKENIZER_SHARED},   {"mbart", PARLEY_TOKENIZER_SHARED},  {"m2m100", PARLEY_TOKENIZER_SHARED},
      {"marian", PARLEY_TOKENIZER_SOURCE}, {"marian", PARLEY_TOKENIZER_TARGET}, {"mistral", PARLEY_TOKENIZER_SHARED}};
  for (const auto &[family, role] : picks) {
    auto file = ModelFile::open_file(dir + "/files/" + family + ".parley", parley::LoadOptions{});
    for (const TokenizerView &v : file->tokenizers())
      if (v.kind == PARLEY_TOKENIZER_SENTENCEPIECE && v.role == role) bases.push_back({v, file->vocab_size()});
    files.push_back(std::move(file));
  }
  if (bases.size() != 6) {
    std::fprintf(stderr, "fuzz_sentencepiece: expected 6 SentencePiece tables in %s/files, found %zu\n", dir.c_str(),
                 bases.size());
    std::abort();
  }
  return bases;
}

const std::vector<Base> &bases() {
  static const std::vector<Base> b = load_bases();
  return b;
}

// Ordinary text a support bot or translator gets, heavy on what NFKC and the
// charsmap change: fullwidth and halfwidth forms, ligatures, compatibility
// digits and letters, combining marks (NFC and NFD), Hangul syllables and
// jamo, emoji sequences, spaces of every kind, and valid UTF-8 that looks
// odd (noncharacters, private use, U+10FFFF, a BOM).
const char *const kTexts[] = {
    "\xEF\xBC\xB7",                            // Ｗ
    "Ｈｅｌｌｏ，　Ｗｏｒｌｄ！ ｶﾀｶﾅ ﾊﾟﾋﾟﾌﾟ",  // fullwidth, halfwidth katakana
    "ﬁne ﬂow ﬀ ﬃ ﬄ ﬅ ﬆ Ĳ ǆ",                   // ligatures
    "① ⑳ ⁴₂ ½ ¾ ２０２４ Ⅻ ⅻ ㎏ ㎞ ㍻ ℃ ™ №",  // compatibility digits and letters
    "e\xCC\x81 \xC3\xA9 A\xCC\x8A \xE2\x84\xAB \xC3\x85 o\xCC\x88\xCC\x81 \xE1\xB9\xA9",  // combining marks
    "한국어 텍스트 \xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB \xE3\x85\x8E\xE3\x85\x8F",        // Hangul, jamo
    "😀 👍🏽 👨‍👩‍👧‍👦 🇩🇪 🏳️‍🌈 ❤️ #️⃣",     // emoji sequences
    "a\xC2\xA0"
    "b\xE3\x80\x80"
    "c\xE2\x80\x8B"
    "d\xE2\x80\x8D"
    "e\t\tf\r\ng  h ",  // spaces of every kind
    "\xEF\xBB\xBF"
    "BOM \xEF\xBF\xBE \xEF\xB7\x90 \xEE\x80\x80 \xF4\x8F\xBF\xBF \xF0\x9F\xBF\xBF",  // odd but valid
    "Grüße aus Köln — «Straße» ‹x› „quoted“ ’tis …",
    "<s> </s> <unk> <pad> <0x41> ▁▁ eng_Latn __en__",
    "   leading and trailing   ",
    "",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Ω ℌ ℍ ℕ ℙ 𝐀𝐁𝐂 𝕏 ＡＢＣ ａｂｃ ｱｲｳ ㋐ ㌀ ﹏ ︵",
};

// A fuzzer-found defect: say what and stop (libFuzzer saves the input).
[[noreturn]] void finding(const std::string &what) {
  std::fprintf(stderr, "fuzz_sentencepiece: %s\n", what.c_str());
  std::abort();
}

void run(const Tokenizer &tok, uint32_t vocab) {
  const std::string lang = tok.needs_language() ? tok.languages().front().first : std::string();
  for (const char *text : kTexts) {
    for (bool special : {true, false}) {
      std::vector<int32_t> ids;
      try {
        ids = tok.encode(text, special, lang);
      } catch (const Error &e) {
        finding(std::string("encode failed on a tokenizer that built: ") + e.what());
      }
      for (int32_t id : ids)
        if (id < 0 || static_cast<uint32_t>(id) >= vocab) finding("encode gave id " + std::to_string(id));
      for (bool skip : {false, true}) {
        std::string out;
        try {
          out = tok.decode(ids, skip);
        } catch (const Error &e) {
          finding(std::string("decode failed: ") + e.what());
        }
        if (!parley::utf8::valid(out)) finding("decode gave invalid UTF-8");
      }
    }
  }
}

// ---- protobuf wire format ------------------------------------------------------

using F = parley::test::proto_wire::Field;
using parley::test::proto_wire::bytes_field;
using parley::test::proto_wire::float_field;
using parley::test::proto_wire::parse;
using parley::test::proto_wire::put_varint;
using parley::test::proto_wire::read_varint;
using parley::test::proto_wire::serialize;
using parley::test::proto_wire::varint_field;

// Sets (replaces or appends) field `sub` in a serialized message.
void set_in(std::string &msg, const F &sub) {
  std::vector<F> body;
  if (!parse(msg, body)) body.clear();
  bool found = false;
  for (F &f : body)
    if (f.num == sub.num) f = sub, found = true;
  if (!found) body.push_back(sub);
  msg = serialize(body);
}

// ---- mutations ---------------------------------------------------------------

using Rng = std::minstd_rand;

size_t pick(Rng &rng, size_t n) {
  return n == 0 ? 0 : rng() % n;
}

// Mostly (3 in 4) a piece a real model could have: whole characters of a
// corpus text and a private-use character that keeps it unique, so the
// tokenizer builds and the text reaches libsentencepiece; else a hostile one.
std::string piece_text(Rng &rng, const std::vector<F *> &pieces) {
  if (rng() % 4) {
    const std::string t = kTexts[pick(rng, std::size(kTexts))];
    std::string out = rng() % 2 ? "\xE2\x96\x81" : "";  // "▁"
    size_t i = 0, skip = pick(rng, 8), take = 1 + pick(rng, 4);
    for (size_t k = 0; i < t.size() && k < skip + take; ++k) {
      size_t n = std::max<size_t>(1, parley::utf8::sequence_length(t, i));
      if (k >= skip) out.append(t, i, n);
      i += n;
    }
    parley::utf8::append(out, 0xF0000 + static_cast<uint32_t>(rng() % 0xFFFD));  // plane 15 private use
    return out;
  }
  switch (rng() % 9) {
    case 0:
      return "";
    case 1:
      return std::string("\0", 1);
    case 2: {  // another piece's text
      std::vector<F> body;
      if (!pieces.empty() && parse(pieces[pick(rng, pieces.size())]->b, body))
        for (const F &f : body)
          if (f.num == 1) return f.b;
      return "x";
    }
    case 3: {  // a slice of a corpus text, maybe not on a character boundary
      std::string t = kTexts[pick(rng, std::size(kTexts))];
      size_t a = pick(rng, t.size() + 1), n = 1 + pick(rng, 12);
      return t.substr(a, n);
    }
    case 4: {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", static_cast<unsigned>(rng() & 0xFF));
      return rng() % 4 ? buf : "<0xZZ>";
    }
    case 5:
      return std::string(1 + pick(rng, 1500), static_cast<char>('a' + rng() % 3));
    case 6:
      return std::string(1, static_cast<char>(0x80 + rng() % 0x80));
    case 7:
      return "\xE2\x96\x81" + std::string(1, static_cast<char>('a' + rng() % 26));  // "▁x"
    default:
      return std::string(1, static_cast<char>('a' + rng() % 26));
  }
}

float special_score(Rng &rng) {
  switch (rng() % 6) {
    case 0:
      return std::numeric_limits<float>::quiet_NaN();
    case 1:
      return std::numeric_limits<float>::infinity();
    case 2:
      return -std::numeric_limits<float>::infinity();
    case 3:
      return std::numeric_limits<float>::max();
    case 4:
      return 0.0f;
    default:
      return -static_cast<float>(rng() % 100000) / 100.0f;
  }
}

void mutate_pieces(Rng &rng, std::vector<F> &top) {
  std::vector<F *> pieces;
  for (F &f : top)
    if (f.num == 1 && f.wire == 2) pieces.push_back(&f);
  if (pieces.empty()) {
    top.push_back(bytes_field(1, serialize({bytes_field(1, piece_text(rng, pieces)), varint_field(3, 1)})));
    return;
  }
  F &p = *pieces[pick(rng, pieces.size())];
  switch (rng() % 8) {
    case 0:
      set_in(p.b, bytes_field(1, piece_text(rng, pieces)));
      break;
    case 1: {  // mostly NORMAL, CONTROL, USER_DEFINED or UNUSED
      static const int64_t kTypes[] = {1, 3, 4, 5, 1, 3, 4, 5, 1, 3, 4, 5, 2, 6, 0, 7, -1};
      set_in(p.b, varint_field(3, kTypes[pick(rng, std::size(kTypes))]));
      break;
    }
    case 2:
      set_in(p.b, float_field(2, rng() % 4 ? -static_cast<float>(rng() % 100000) / 100.0f : special_score(rng)));
      break;
    case 3: {  // remove a piece (ids shift)
      size_t i = pick(rng, top.size());
      if (top[i].num == 1) top.erase(top.begin() + static_cast<long>(i));
      break;
    }
    case 4: {  // duplicate a piece somewhere (rarely: it is always refused)
      if (rng() % 4) break;
      F copy = p;
      top.insert(top.begin() + static_cast<long>(pick(rng, top.size() + 1)), copy);
      break;
    }
    case 5:  // swap two pieces
      std::swap(p.b, pieces[pick(rng, pieces.size())]->b);
      break;
    case 6: {  // nested user-defined symbols
      std::string s;
      const size_t k = 1 + pick(rng, 80);
      const char c = static_cast<char>('A' + rng() % 3);
      for (size_t i = 0; i < k; ++i)
        top.push_back(bytes_field(1, serialize({bytes_field(1, s += c), varint_field(3, 4)})));
      break;
    }
    default: {  // libFuzzer's own byte mutations on the piece's text
      std::vector<F> body;
      if (!parse(p.b, body)) break;
      for (F &f : body)
        if (f.num == 1 && f.wire == 2) {
          std::string t = f.b;
          t.resize(t.size() + 16);
          t.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t *>(t.data()), f.b.size(), t.size()));
          f.b = t;
        }
      p.b = serialize(body);
    }
  }
}

void mutate_trainer(Rng &rng, std::vector<F> &top, int64_t num_pieces) {
  static const uint32_t kFields[] = {3, 35, 40, 41, 42, 43, 24, 26};
  const uint32_t num = kFields[pick(rng, std::size(kFields))];
  int64_t value = num == 3                 ? static_cast<int64_t>(rng() % 7) - 1
                  : num >= 40 && num <= 43 ? (rng() % 2 ? static_cast<int64_t>(rng() % 4) - 2
                                                        : num_pieces - 2 + static_cast<int64_t>(rng() % 4))
                                           : static_cast<int64_t>(rng() % 2);
  for (F &f : top)
    if (f.num == 2 && f.wire == 2) {
      set_in(f.b, varint_field(num, value));
      return;
    }
  top.push_back(bytes_field(2, serialize({varint_field(num, value)})));
}

// darts-clone unit helpers (see runtime/text/sentencepiece_proto.cpp).
uint64_t unit_offset(uint32_t u) {
  return static_cast<uint64_t>(u >> 10) << ((u & (1u << 9)) >> 6);
}

void mutate_charsmap(Rng &rng, std::string &cm) {
  if (cm.size() <= 4 || rng() % 16 == 0) {
    cm = rng() % 2 ? std::string() : std::string(rng() % 6, '\x01');
    return;
  }
  uint32_t trie = 0;
  std::memcpy(&trie, cm.data(), 4);
  const uint64_t units = std::min<uint64_t>(trie, cm.size() - 4) / 4;
  auto get = [&](uint64_t p) {
    uint32_t u;
    std::memcpy(&u, cm.data() + 4 + 4 * p, 4);
    return u;
  };
  auto put = [&](uint64_t p, uint32_t u) { std::memcpy(cm.data() + 4 + 4 * p, &u, 4); };
  switch (rng() % 6) {
    case 0: {  // the trie size field
      int64_t delta = rng() % 4 == 0 ? static_cast<int64_t>(rng() % 2048) - 1024 : static_cast<int64_t>(rng() % 17) - 8;
      trie = static_cast<uint32_t>(static_cast<int64_t>(trie) + delta);
      std::memcpy(cm.data(), &trie, 4);
      break;
    }
    case 1:
    case 2: {  // a unit on the trie path of a corpus text (node or leaf value)
      if (units == 0) break;
      std::string t = kTexts[pick(rng, std::size(kTexts))];
      std::vector<uint64_t> path;
      uint64_t pos = unit_offset(get(0));
      path.push_back(0);
      for (unsigned char c : t) {
        pos ^= c;
        if (pos >= units || (get(pos) & ((1u << 31) | 0xFF)) != c) break;
        path.push_back(pos);
        pos ^= unit_offset(get(pos));
        if (pos >= units) break;
        if ((get(path.back()) >> 8) & 1) path.push_back(pos);  // the value unit
      }
      const uint64_t at = path[pick(rng, path.size())];
      uint32_t u = get(at);
      switch (rng() % 5) {
        case 0:
          u ^= 1u << (rng() % 32);
          break;
        case 1:
          u ^= 1u << 8;  // has_leaf
          break;
        case 2: {  // a value near the end of the normalized strings, or the start of another string
          const uint64_t begin = 4 + std::min<uint64_t>(trie, cm.size() - 4), norm = cm.size() - begin;
          size_t nul = cm.find('\0', begin + pick(rng, norm + 1));
          if (rng() % 2 && nul != std::string::npos && nul + 1 < cm.size()) {
            u = (1u << 31) | static_cast<uint32_t>(nul + 1 - begin);
          } else {
            u = (1u << 31) | static_cast<uint32_t>(norm - std::min<uint64_t>(norm, 3) + rng() % 6);
          }
          break;
        }
        case 3:  // an offset to somewhere else
          u = (u & ((1u << 31) | (1u << 8) | 0xFF)) | (static_cast<uint32_t>(rng() % (1u << 21)) << 10);
          break;
        default:
          u = static_cast<uint32_t>(rng());
      }
      put(at, u);
      break;
    }
    case 3:  // any unit
      if (units) put(pick(rng, units), get(pick(rng, units)) ^ (1u << (rng() % 32)));
      break;
    case 4: {  // the normalized strings: a byte, a NUL, the end
      const size_t begin = 4 + std::min<size_t>(trie, cm.size() - 4);
      if (begin >= cm.size()) break;
      size_t i = begin + pick(rng, cm.size() - begin);
      if (rng() % 3 == 0) {
        cm.resize(cm.size() - std::min<size_t>(cm.size() - begin, 1 + pick(rng, 4)));
      } else if (rng() % 2 && static_cast<unsigned char>(cm[i]) < 0x80 && cm[i] != '\0') {
        cm[i] = " a.Z\t"[rng() % 5];  // still valid UTF-8: a different normalization
      } else {
        cm[i] = cm[i] == '\0' ? 'x' : static_cast<char>(rng());
      }
      break;
    }
    default:  // libFuzzer's byte mutations on a window of the blob
    {
      size_t at = pick(rng, cm.size()), n = std::min<size_t>(64, cm.size() - at);
      std::string w = cm.substr(at, n);
      w.resize(n + 8);
      w.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t *>(w.data()), n, w.size()));
      cm.replace(at, n, w);
    }
  }
}

void mutate_normalizer(Rng &rng, std::vector<F> &top) {
  const uint32_t spec = rng() % 4 ? 3 : 5;  // normalizer_spec, sometimes denormalizer_spec
  F *f = nullptr;
  for (F &x : top)
    if (x.num == spec && x.wire == 2) f = &x;
  if (!f) {
    top.push_back(bytes_field(spec, ""));
    f = &top.back();
  }
  std::vector<F> body;
  if (!parse(f->b, body)) return;
  if (rng() % 4 == 0) {
    body.push_back(varint_field(3 + static_cast<uint32_t>(rng() % 3), static_cast<int64_t>(rng() % 2)));
  } else {
    F *cm = nullptr;
    for (F &x : body)
      if (x.num == 2 && x.wire == 2) cm = &x;
    if (!cm) {  // borrow NLLB's charsmap
      const Base &b = bases()[0];
      std::vector<F> nllb, n;
      parse(std::string_view(reinterpret_cast<const char *>(b.view.data), b.view.length), nllb);
      for (const F &x : nllb)
        if (x.num == 3 && parse(x.b, n))
          for (const F &y : n)
            if (y.num == 2) body.push_back(y);
      if (body.empty() || body.back().num != 2) return;
      cm = &body.back();
    }
    mutate_charsmap(rng, cm->b);
  }
  f->b = serialize(body);
}

// PARLEY_FUZZ_STATS=1: print, at exit, how many inputs built a tokenizer
// and why the others were refused (to judge the mutator, not a check).
struct Stats {
  size_t built = 0;
  std::map<std::string, size_t> refused;  // message without numbers and quoted text
  void refuse(const std::string &what) {
    std::string key;
    bool quote = false;
    for (char c : what) {
      if (c == '\'') quote = !quote;
      if (!quote && !(c >= '0' && c <= '9')) key += c;
    }
    ++refused[key.substr(0, 90)];
  }
  ~Stats() {
    if (!std::getenv("PARLEY_FUZZ_STATS")) return;
    std::fprintf(stderr, "fuzz_sentencepiece: %zu built\n", built);
    for (const auto &[why, n] : refused) std::fprintf(stderr, "  %6zu refused: %s\n", n, why.c_str());
  }
} stats;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const Base &base = bases()[data[0] % bases().size()];
  const std::string proto(reinterpret_cast<const char *>(data + 1), size - 1);
  TokenizerView view = base.view;
  view.data = reinterpret_cast<const uint8_t *>(proto.data());
  view.length = proto.size();
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = Tokenizer::create(view, base.vocab);
  } catch (const Error &e) {
    if (e.status() != PARLEY_ERROR_INVALID_MODEL && e.status() != PARLEY_ERROR_UNSUPPORTED)
      finding("building failed with status " + std::to_string(e.status()) + ": " + e.what());
    stats.refuse(e.what());
    return 0;
  }
  ++stats.built;
  run(*tok, base.vocab);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) {
  Rng rng(seed);
  std::vector<F> top;
  if (size < 2 || rng() % 32 == 0 || !parse(std::string_view(reinterpret_cast<const char *>(data + 1), size - 1), top))
    return LLVMFuzzerMutate(data, size, max_size);
  uint8_t selector = data[0];
  // Half the time start again from the fixture's own proto: most damaged
  // protos are refused, and so are their descendants, so without this few
  // inputs would get past the checks to the encoder.
  if (rng() % 2) {
    const TokenizerView &v = bases()[selector % bases().size()].view;
    parse(std::string_view(reinterpret_cast<const char *>(v.data), v.length), top);
  }
  const int rounds = rng() % 4 ? 1 : 2 + static_cast<int>(rng() % 3);
  for (int r = 0; r < rounds; ++r) {
    int64_t num_pieces = 0;
    for (const F &f : top) num_pieces += f.num == 1;
    switch (rng() % 10) {
      case 0:
        selector = static_cast<uint8_t>(rng());
        break;
      case 1:
      case 2:
      case 3:
        mutate_pieces(rng, top);
        break;
      case 4:
        mutate_trainer(rng, top, num_pieces);
        break;
      case 5: {  // repeat or drop a top-level field (protobuf merges repeats)
        size_t i = pick(rng, top.size());
        if (top.empty()) break;
        if (rng() % 2) {
          top.push_back(top[i]);
        } else {
          top.erase(top.begin() + static_cast<long>(i));
        }
        break;
      }
      default:
        mutate_normalizer(rng, top);
    }
  }
  std::string out = serialize(top);
  if (out.size() + 1 > max_size) return LLVMFuzzerMutate(data, size, max_size);
  data[0] = selector;
  std::memcpy(data + 1, out.data(), out.size());
  return out.size() + 1;
}
