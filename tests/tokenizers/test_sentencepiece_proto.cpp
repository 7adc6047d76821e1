// Crafted SentencePiece protos (issue 10, item 3). Each test takes a real
// proto from a fixture file (NLLB's: nmt_nfkc charsmap; Mistral's: byte
// fallback), damages one field the way a hostile file would, and checks
// that building the tokenizer is refused with INVALID_MODEL and a message
// naming the field or piece, instead of libsentencepiece reading out of
// bounds later on ordinary text ('Ｗ' goes through the charsmap trie).
// The proto editing below is a test-local protobuf wire-format codec, so the
// runtime's own reader is not used to build its inputs.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "../common/proto_wire.hpp"
#include "core/error.hpp"
#include "format/model_file.hpp"
#include "text/text_model.hpp"
#include "text/tokenizer.hpp"

using namespace parley;

namespace {

std::string fixture(const std::string &family) {
  const char *d = std::getenv("PARLEY_TOKENIZER_DIR");
  return std::string(d ? d : "tests/tokenizers") + "/files/" + family + ".parley";
}

// ---- protobuf wire format ------------------------------------------------------

using F = parley::test::proto_wire::Field;
using parley::test::proto_wire::bytes_field;
using parley::test::proto_wire::float_field;
using parley::test::proto_wire::serialize;
using parley::test::proto_wire::varint_field;
std::vector<F> parse(std::string_view s) {
  return parley::test::proto_wire::parse_or_throw(s);
}

F piece(const std::string &text, float score, int type) {
  return bytes_field(1, serialize({bytes_field(1, text), float_field(2, score), varint_field(3, type)}));
}

// A ModelProto being edited: its top-level fields.
struct Proto {
  explicit Proto(std::vector<F> f) : fields(std::move(f)) {}
  std::vector<F> fields;

  std::vector<F *> pieces() {
    std::vector<F *> out;
    for (F &f : fields)
      if (f.num == 1) out.push_back(&f);
    return out;
  }
  // Replaces field `sub` of piece #i.
  void set_piece_field(size_t i, F sub) {
    F *p = pieces().at(i);
    auto body = parse(p->b);
    bool found = false;
    for (F &f : body)
      if (f.num == sub.num) f = sub, found = true;
    if (!found) body.push_back(sub);
    p->b = serialize(body);
  }
  // Appends a field to the (first) sub-message `num` (trainer_spec = 2, normalizer_spec = 3).
  void append_to(uint32_t num, F sub) {
    for (F &f : fields)
      if (f.num == num) {
        auto body = parse(f.b);
        body.push_back(sub);
        f.b = serialize(body);
        return;
      }
    fields.push_back(bytes_field(num, serialize({sub})));
  }
  std::string *charsmap() {
    for (F &f : fields)
      if (f.num == 3) {
        spec_ = parse(f.b);
        for (F &s : spec_)
          if (s.num == 2) {
            owner_ = &f;
            return &s.b;
          }
      }
    return nullptr;
  }
  // After editing *charsmap().
  void store_charsmap() { owner_->b = serialize(spec_); }
  std::string bytes() const { return serialize(fields); }

 private:
  std::vector<F> spec_;
  F *owner_ = nullptr;
};

// ---- a darts-clone double array (test-local reader) -------------------------

uint32_t get_unit(const std::string &cm, uint64_t p) {
  uint32_t u;
  std::memcpy(&u, cm.data() + 4 + 4 * p, 4);
  return u;
}
void set_unit(std::string &cm, uint64_t p, uint32_t u) {
  std::memcpy(cm.data() + 4 + 4 * p, &u, 4);
}
uint32_t trie_size(const std::string &cm) {
  uint32_t t;
  std::memcpy(&t, cm.data(), 4);
  return t;
}
void set_trie_size(std::string &cm, uint32_t t) {
  std::memcpy(cm.data(), &t, 4);
}
uint64_t offset_of(uint32_t u) {
  return static_cast<uint64_t>(u >> 10) << ((u & (1u << 9)) >> 6);
}
uint32_t with_offset(uint32_t u, uint32_t offset) {  // offset < 2^21
  return (u & ((1u << 31) | (1u << 8) | 0xFF)) | (offset << 10);
}
// Positions of the units on `key`'s path (the node for each byte) and of
// the value unit of its leaf.
struct Path {
  std::vector<uint64_t> nodes;
  uint64_t value_unit = 0;
};
Path walk(const std::string &cm, std::string_view key) {
  Path path;
  uint64_t pos = offset_of(get_unit(cm, 0));
  for (unsigned char c : key) {
    pos ^= c;
    uint32_t u = get_unit(cm, pos);
    EXPECT_EQ(u & ((1u << 31) | 0xFF), c) << "key not in the trie";
    path.nodes.push_back(pos);
    pos ^= offset_of(u);
  }
  EXPECT_TRUE((get_unit(cm, path.nodes.back()) >> 8) & 1) << "key has no leaf";
  path.value_unit = pos;
  return path;
}
size_t normalized_begin(const std::string &cm) {
  return 4 + trie_size(cm);
}

// Ordinary text through the charsmap: fullwidth letters, a ligature, a
// circled digit, and a run of 'a's (the hand-made chain tries below).
const std::string kProbe = "\xEF\xBC\xB7 ﬁ ① Ｗｏｒｌｄ " + std::string(40, 'a');

// ---- building tokenizers from an edited proto --------------------------------

class SentencePieceProto : public ::testing::Test {
 protected:
  void SetUp() override {
    nllb_ = ModelFile::open_file(fixture("nllb"), LoadOptions{});
    mistral_ = ModelFile::open_file(fixture("mistral"), LoadOptions{});
  }
  static Proto proto_of(const ModelFile &file) {
    const TokenizerView &v = file.tokenizers().at(0);
    return Proto{parse(std::string_view(reinterpret_cast<const char *>(v.data), v.length))};
  }
  static std::unique_ptr<Tokenizer> build(const ModelFile &file, const std::string &proto) {
    TokenizerView v = file.tokenizers().at(0);
    v.data = reinterpret_cast<const uint8_t *>(proto.data());
    v.length = proto.size();
    return Tokenizer::create(v, file.vocab_size());
  }
  // The load must be refused with INVALID_MODEL naming the defect. If it is
  // not, encode 'Ｗ' as `parley translate` would (that is where the
  // unchecked library crashed).
  static void expect_refused(const ModelFile &file, const std::string &proto, const std::vector<std::string> &needles) {
    try {
      auto tok = build(file, proto);
      ADD_FAILURE() << "loaded";
      (void)tok->encode(kProbe, true, tok->needs_language() ? tok->languages().front().first : std::string());
    } catch (const Error &e) {
      EXPECT_EQ(e.status(), PARLEY_ERROR_INVALID_MODEL) << e.what();
      for (const std::string &n : needles)
        EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "'" << n << "' not in: " << e.what();
    } catch (const std::exception &e) {
      ADD_FAILURE() << "not a parley::Error: " << e.what();
    }
  }
  std::unique_ptr<ModelFile> nllb_, mistral_;
};

constexpr const char *kW = "\xEF\xBC\xB7";  // U+FF37 FULLWIDTH LATIN CAPITAL LETTER W, NFKC -> 'W'

TEST_F(SentencePieceProto, TheFixturesStillLoadAndNormalize) {
  Proto p = proto_of(*nllb_);
  auto tok = build(*nllb_, p.bytes());
  // The charsmap's NFKC mapping is applied: 'Ｗ' encodes like 'W'.
  EXPECT_EQ(tok->encode(kW, false), tok->encode("W", false));
  EXPECT_EQ(tok->encode("ﬁne", false), tok->encode("fine", false));
  EXPECT_NO_THROW(build(*mistral_, proto_of(*mistral_).bytes()));
}

// The reported crash: the trie size 4 bytes short, the whole model file with
// its checksums intact otherwise (loaded without checksum verification, as
// a file with recomputed checksums would load).
TEST_F(SentencePieceProto, TrieSizeFourBytesShortInAWholeFile) {
  std::ifstream in(fixture("nllb"), std::ios::binary);
  std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const TokenizerView &v = nllb_->tokenizers().at(0);
  std::string proto(reinterpret_cast<const char *>(v.data), v.length);
  size_t at = file.find(proto);
  ASSERT_NE(at, std::string::npos);
  Proto p = proto_of(*nllb_);
  std::string *cm = p.charsmap();
  ASSERT_NE(cm, nullptr);
  size_t cm_at = file.find(*cm, at);
  ASSERT_NE(cm_at, std::string::npos);
  uint32_t t = trie_size(*cm) - 4;
  std::memcpy(file.data() + cm_at, &t, 4);
  LoadOptions options;
  options.verify_checksums = false;
  auto model = ModelFile::open_memory(file.data(), file.size(), false, options);  // what `parley inspect` checks
  try {
    auto text = build_text_model(*model);
    ADD_FAILURE() << "built";
    (void)text->source().encode(kProbe, true, text->source().languages().front().first);
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_INVALID_MODEL) << e.what();
    EXPECT_NE(std::string(e.what()).find("tokenizer #0: SentencePiece model: normalizer_spec.precompiled_charsmap"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(SentencePieceProto, TrieSizeFieldDamaged) {
  struct Case {
    int64_t delta;  // added to the trie size; INT64_MIN: set to 0
    const char *needle;
  };
  for (Case c : {Case{-4, "is not valid UTF-8"}, Case{-1, "not a positive multiple of 4"},
                 Case{std::numeric_limits<int64_t>::min(), "trie size 0 is not a positive multiple of 4"},
                 Case{1 << 20, "is past the"}}) {
    SCOPED_TRACE(c.delta);
    Proto p = proto_of(*nllb_);
    std::string *cm = p.charsmap();
    set_trie_size(*cm, c.delta == std::numeric_limits<int64_t>::min()
                           ? 0
                           : static_cast<uint32_t>(static_cast<int64_t>(trie_size(*cm)) + c.delta));
    p.store_charsmap();
    expect_refused(*nllb_, p.bytes(), {"normalizer_spec.precompiled_charsmap", c.needle});
  }
  // libsentencepiece's own check lets a size up to the blob's length - 1
  // through, 3 bytes past the end of the trie region.
  Proto p = proto_of(*nllb_);
  std::string *cm = p.charsmap();
  set_trie_size(*cm, static_cast<uint32_t>(cm->size() - 1));
  p.store_charsmap();
  expect_refused(*nllb_, p.bytes(), {"is past the"});
  // A charsmap too short to hold its trie size.
  p = proto_of(*nllb_);
  cm = p.charsmap();
  cm->resize(3);
  p.store_charsmap();
  expect_refused(*nllb_, p.bytes(), {"normalizer_spec.precompiled_charsmap is 3 bytes"});
}

TEST_F(SentencePieceProto, TrieNodeOutsideTheTrie) {
  for (size_t depth : {size_t{0}, size_t{1}, size_t{2}}) {
    SCOPED_TRACE(depth);
    Proto p = proto_of(*nllb_);
    std::string *cm = p.charsmap();
    const uint64_t units = trie_size(*cm) / 4;
    Path path = walk(*cm, kW);
    // Depth 0: the root's own offset; then the nodes on 'Ｗ''s path.
    uint64_t pos = depth == 0 ? 0 : path.nodes[depth - 1];
    uint32_t u = get_unit(*cm, pos);
    set_unit(*cm, pos, with_offset(u, static_cast<uint32_t>((pos ^ (units + 256)) & ((1u << 21) - 1))));
    p.store_charsmap();
    expect_refused(*nllb_, p.bytes(), {"trie unit " + std::to_string(pos) + " points to units", "outside the trie"});
  }
}

TEST_F(SentencePieceProto, LeafValuesAndNormalizedStrings) {
  {  // a leaf past the normalized strings
    Proto p = proto_of(*nllb_);
    std::string *cm = p.charsmap();
    Path path = walk(*cm, kW);
    auto past = static_cast<uint32_t>(cm->size() - normalized_begin(*cm) + 8);
    set_unit(*cm, path.value_unit, (1u << 31) | past);
    p.store_charsmap();
    expect_refused(*nllb_, p.bytes(), {"points to byte " + std::to_string(past), "past the"});
  }
  {  // 'Ｗ''s leaf points to the last string, whose NUL is gone
    Proto p = proto_of(*nllb_);
    std::string *cm = p.charsmap();
    Path path = walk(*cm, kW);
    ASSERT_EQ(cm->back(), '\0');
    size_t last = cm->find_last_of('\0', cm->size() - 2) + 1 - normalized_begin(*cm);
    cm->back() = 'x';
    set_unit(*cm, path.value_unit, (1u << 31) | static_cast<uint32_t>(last));
    p.store_charsmap();
    expect_refused(*nllb_, p.bytes(), {"normalized string at byte " + std::to_string(last), "no terminating NUL"});
  }
  {  // invalid UTF-8 in the string 'Ｗ' maps to
    Proto p = proto_of(*nllb_);
    std::string *cm = p.charsmap();
    Path path = walk(*cm, kW);
    uint32_t value = get_unit(*cm, path.value_unit) & 0x7FFFFFFF;
    (*cm)[normalized_begin(*cm) + value] = '\xFF';
    p.store_charsmap();
    expect_refused(*nllb_, p.bytes(), {"is not valid UTF-8"});
  }
}

TEST_F(SentencePieceProto, TrieCycle) {
  Proto p = proto_of(*nllb_);
  std::string *cm = p.charsmap();
  const uint64_t root_base = offset_of(get_unit(*cm, 0));
  Path path = walk(*cm, kW);
  // The node for 0xEF gets the root's children as its own: 0xEF 0xEF ... loops.
  uint64_t pos = path.nodes[0];
  set_unit(*cm, pos, with_offset(get_unit(*cm, pos), static_cast<uint32_t>(pos ^ root_base)));
  p.store_charsmap();
  expect_refused(*nllb_, p.bytes(), {"cycle"});
}

// A hand-made trie: "a", "aa", ... (`keys` of them), each a leaf mapping to
// "b". darts-clone layout: the root's children in block 1, node i's children
// in block i + 1; units that are not children carry a label that does not
// match their position.
std::string chain_charsmap(int keys) {
  const uint32_t blocks = static_cast<uint32_t>(keys) + 2;
  std::vector<uint32_t> units(256 * blocks);
  for (uint32_t p = 0; p < units.size(); ++p) units[p] = (p & 0xFF) ^ 1;  // label never equal to p ^ base
  units[0] = 256u << 10;                                                  // root: children at 256
  for (uint32_t i = 1; i <= static_cast<uint32_t>(keys); ++i) {
    uint32_t pos = 256 * i ^ 'a', child_base = 256 * (i + 1);
    units[pos] = ((pos ^ child_base) << 10) | (1u << 8) | 'a';
    units[child_base] = (1u << 31) | 0;  // value: byte 0 of the strings, "b"
  }
  std::string cm(4, '\0');
  set_trie_size(cm, static_cast<uint32_t>(units.size() * 4));
  cm.append(reinterpret_cast<const char *>(units.data()), units.size() * 4);
  cm += std::string("b\0", 2);
  return cm;
}

TEST_F(SentencePieceProto, AtMost32NestedNormalizationRules) {
  {
    Proto p = proto_of(*nllb_);
    *p.charsmap() = chain_charsmap(32);
    p.store_charsmap();
    auto tok = build(*nllb_, p.bytes());
    EXPECT_EQ(tok->encode(std::string(40, 'a'), false), tok->encode("bb", false));  // 32 + 8 'a's
  }
  Proto p = proto_of(*nllb_);
  *p.charsmap() = chain_charsmap(33);
  p.store_charsmap();
  expect_refused(*nllb_, p.bytes(), {"more than 32 leaves"});
}

TEST_F(SentencePieceProto, PieceTable) {
  struct Case {
    std::function<void(Proto &)> edit;
    std::vector<std::string> needles;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<Case> cases = {
      {[](Proto &p) { p.set_piece_field(5, bytes_field(1, "")); }, {"piece #5 is empty"}},
      {[](Proto &p) { p.set_piece_field(5, bytes_field(1, std::string("\0", 1))); },
       {"piece #5 '\\x00' contains a NUL byte"}},  // darts-clone's "zero-length key" before
      {[](Proto &p) { p.set_piece_field(7, bytes_field(1, std::string("ab\0c", 4))); }, {"piece #7", "NUL byte"}},
      {[](Proto &p) {  // darts-clone threw "zero-length key" (INTERNAL) building the user-defined matcher
         p.set_piece_field(5, bytes_field(1, std::string("\0", 1)));
         p.set_piece_field(5, varint_field(3, 4));
       },
       {"piece #5 '\\x00' contains a NUL byte"}},
      {[](Proto &p) {  // a unigram model: darts-clone threw "zero-length key" (INTERNAL) building its trie
         p.append_to(2, varint_field(3, 1));
         p.set_piece_field(5, bytes_field(1, std::string("\0", 1)));
       },
       {"piece #5 '\\x00' contains a NUL byte"}},
      {[](Proto &p) { p.set_piece_field(9, parse(p.pieces()[8]->b)[0]); }, {"piece #9", "repeats piece #8"}},
      {[](Proto &p) { p.set_piece_field(6, varint_field(3, 9)); }, {"piece #6", "has type 9"}},
      {[](Proto &p) { p.set_piece_field(6, varint_field(3, -1)); }, {"piece #6", "has type -1"}},
      {[nan](Proto &p) { p.set_piece_field(6, float_field(2, nan)); }, {"piece #6", "score that is not finite"}},
      {[](Proto &p) { p.set_piece_field(6, float_field(2, std::numeric_limits<float>::infinity())); },
       {"piece #6", "score that is not finite"}},
      {[](Proto &p) { p.set_piece_field(0, varint_field(3, 1)); }, {"no piece has type UNKNOWN"}},
      {[](Proto &p) { p.set_piece_field(4, varint_field(3, 2)); }, {"piece #4", "second UNKNOWN piece (piece #0"}},
      {[](Proto &p) { p.fields.push_back(piece("<0x41>", 0, 6)); }, {"BYTE piece", "byte_fallback is false"}},
      {[](Proto &p) { p.set_piece_field(10, bytes_field(1, "\xC3(")); }, {"piece #10 '\\xc3('", "not valid UTF-8"}},
      {[](Proto &p) { p.set_piece_field(10, bytes_field(1, std::string(2000, 'z'))); },
       {"piece #10", "2000 bytes long"}},
      {[](Proto &p) {
         std::string s;  // U+E000 (private use), 1..65 times
         for (int i = 1; i <= 65; ++i) p.fields.push_back(piece(s += "\xEE\x80\x80", 0, 4));
       },
       {"more than 64 USER_DEFINED pieces as prefixes"}},
      {[](Proto &p) { p.append_to(2, varint_field(3, 7)); }, {"trainer_spec.model_type 7"}},
      {[](Proto &p) {  // NLLB's model is BPE: Encode failed (INTERNAL) on that character
         p.set_piece_field(10, bytes_field(1, "\xEE\x80\x81"));
         p.set_piece_field(10, varint_field(3, 3));
       },
       {"piece #10", "one-character CONTROL piece"}},
      {[](Proto &p) { p.append_to(2, varint_field(40, 99999)); }, {"trainer_spec.unk_id 99999 is outside [0, "}},
      {[](Proto &p) { p.append_to(2, varint_field(40, -1)); }, {"trainer_spec.unk_id -1 is outside"}},
      {[](Proto &p) { p.append_to(2, varint_field(41, -2)); }, {"trainer_spec.bos_id -2 is outside [-1, "}},
      {[](Proto &p) { p.append_to(2, varint_field(43, 1600)); }, {"trainer_spec.pad_id 1600 is outside [-1, 1600)"}},
      {[](Proto &p) { p.append_to(2, varint_field(42, 1)); }, {"trainer_spec.eos_id and bos_id are both 1"}},
      {[](Proto &p) {
         p.fields.push_back(F{1, 5, 0, "abcd"});
       },
       {"ModelProto.pieces has wire type 5"}},
      {[](Proto &p) { p.fields.push_back(bytes_field(1, std::string("\x0a\x09", 2))); },
       {"piece #1600", "past the end"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(i);
    Proto p = proto_of(*nllb_);
    cases[i].edit(p);
    expect_refused(*nllb_, p.bytes(), cases[i].needles);
  }
}

// WORD and CHAR models: libsentencepiece's Encode failed (INTERNAL, "all
// normalized characters are not consumed") on text equal to a CONTROL piece,
// e.g. "<s>" (fuzz_sentencepiece found it).
TEST_F(SentencePieceProto, WordAndCharModelsAreUnsupported) {
  for (int type : {3, 4}) {
    Proto p = proto_of(*nllb_);
    p.append_to(2, varint_field(3, type));
    try {
      auto tok = build(*nllb_, p.bytes());
      ADD_FAILURE() << "loaded";
      (void)tok->encode("<s> x", false);
    } catch (const Error &e) {
      EXPECT_EQ(e.status(), PARLEY_ERROR_UNSUPPORTED) << e.what();
      EXPECT_NE(std::string(e.what()).find(type == 3 ? "model_type WORD is not supported" : "model_type CHAR"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST_F(SentencePieceProto, BytePieces) {
  // Mistral's proto has byte_fallback and the 256 byte pieces.
  auto byte_index = [](Proto &p, const std::string &text) {
    auto pieces = p.pieces();
    for (size_t i = 0; i < pieces.size(); ++i)
      if (parse(pieces[i]->b)[0].b == text) return i;
    ADD_FAILURE() << text << " not found";
    return size_t{0};
  };
  {
    Proto p = proto_of(*mistral_);
    p.set_piece_field(byte_index(p, "<0x41>"), bytes_field(1, "<0x4g>"));
    expect_refused(*mistral_, p.bytes(), {"'<0x4g>' is a BYTE piece not spelled <0xXX>"});
  }
  {
    Proto p = proto_of(*mistral_);
    p.set_piece_field(byte_index(p, "<0x41>"), varint_field(3, 1));  // now a normal piece
    expect_refused(*mistral_, p.bytes(), {"no BYTE piece for byte 65"});
  }
}

}  // namespace
