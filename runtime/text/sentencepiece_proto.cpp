// Field numbers and types: sentencepiece_model.proto (ModelProto,
// TrainerSpec, NormalizerSpec). What libsentencepiece 0.1.97 trusts:
// normalizer.cc (Normalizer::Init, NormalizePrefix, PrefixMatcher),
// model_interface.cc (InitializePieces), unigram_model.cc / bpe_model.cc,
// model_factory.cc, and darts-clone's DoubleArrayUnit / commonPrefixSearch.
#include "text/sentencepiece_proto.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "core/error.hpp"
#include "text/utf8.hpp"

namespace parley::sentencepiece_proto {

namespace {

[[noreturn]] void bad(const std::string &what) {
  fail(PARLEY_ERROR_INVALID_MODEL, "SentencePiece model: " + what);
}

// A piece or string from the file, quoted for a message: printable ASCII
// and well-formed UTF-8 as is, everything else as \xNN, cut after 40 bytes.
std::string quoted(std::string_view s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 40;) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c >= 0x80 ? utf8::sequence_length(s, i) : 0;
    if (n > 1) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    if (c >= 0x20 && c < 0x7F && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      static const char *hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
    ++i;
  }
  if (s.size() > 40) out += "...";
  return out + "'";
}

// ---- protobuf wire format --------------------------------------------------

enum Wire : uint32_t { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

struct Field {
  uint32_t number = 0;
  Wire wire = kVarint;
  uint64_t varint = 0;
  uint32_t fixed32 = 0;
  std::string_view bytes;
  size_t start = 0, end = 0;  // the whole field, tag included
};

bool read_varint(std::string_view s, size_t &i, uint64_t &v) {
  v = 0;
  for (int k = 0; k < 10 && i < s.size(); ++k) {
    auto b = static_cast<unsigned char>(s[i++]);
    v |= static_cast<uint64_t>(b & 0x7F) << (7 * k);
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

// Calls fn(field) for each field of a message; `where` names the message.
template <typename Fn>
void each_field(std::string_view msg, const std::string &where, Fn &&fn) {
  for (size_t i = 0; i < msg.size();) {
    Field f;
    f.start = i;
    uint64_t tag = 0;
    if (!read_varint(msg, i, tag) || tag > 0xFFFFFFFFu || (tag >> 3) == 0)
      bad(where + ": bad field tag at byte " + std::to_string(f.start));
    f.number = static_cast<uint32_t>(tag >> 3);
    switch (tag & 7) {
      case kVarint:
        f.wire = kVarint;
        if (!read_varint(msg, i, f.varint)) bad(where + ": bad varint in field " + std::to_string(f.number));
        break;
      case kFixed64:
        f.wire = kFixed64;
        if (msg.size() - i < 8) bad(where + ": field " + std::to_string(f.number) + " runs past the end");
        i += 8;
        break;
      case kFixed32:
        f.wire = kFixed32;
        if (msg.size() - i < 4) bad(where + ": field " + std::to_string(f.number) + " runs past the end");
        std::memcpy(&f.fixed32, msg.data() + i, 4);  // little-endian, as the wire format
        i += 4;
        break;
      case kBytes: {
        f.wire = kBytes;
        uint64_t len = 0;
        if (!read_varint(msg, i, len) || len > msg.size() - i)
          bad(where + ": field " + std::to_string(f.number) + " runs past the end");
        f.bytes = msg.substr(i, len);
        i += len;
        break;
      }
      default:  // groups (3, 4) and the undefined 6, 7: SentencePiece uses none
        bad(where + ": field " + std::to_string(f.number) + " has wire type " + std::to_string(tag & 7));
    }
    f.end = i;
    fn(f);
  }
}

void expect_wire(const Field &f, Wire wire, const std::string &name) {
  if (f.wire != wire)
    bad(name + " has wire type " + std::to_string(f.wire) + ", the schema says " + std::to_string(wire));
}

// ---- the parsed proto ------------------------------------------------------

enum PieceType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct Piece {
  std::string_view text;
  float score = 0;
  int32_t type = kNormal;
};

struct Normalizer {
  std::string_view charsmap;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true;
};

struct Proto {
  std::vector<Piece> pieces;
  int32_t model_type = 1;  // UNIGRAM
  bool byte_fallback = false;
  int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  Normalizer normalizer, denormalizer;
};

Piece parse_piece(std::string_view body, size_t index) {
  Piece p;
  const std::string where = "piece #" + std::to_string(index);
  each_field(body, where, [&](const Field &f) {
    if (f.number == 1) {
      expect_wire(f, kBytes, where + " piece");
      p.text = f.bytes;
    } else if (f.number == 2) {
      expect_wire(f, kFixed32, where + " score");
      std::memcpy(&p.score, &f.fixed32, 4);
    } else if (f.number == 3) {
      expect_wire(f, kVarint, where + " type");
      if (f.varint < static_cast<uint64_t>(kNormal) || f.varint > static_cast<uint64_t>(kByte))
        bad(where + " " + quoted(p.text) + " has type " + std::to_string(static_cast<int64_t>(f.varint)) +
            ", not one the schema defines (1..6)");
      p.type = static_cast<int32_t>(f.varint);
    }
  });
  return p;
}

// An int32 field: protobuf keeps the low 32 bits of the varint.
int32_t as_int32(const Field &f) {
  return static_cast<int32_t>(static_cast<uint32_t>(f.varint));
}

void parse_trainer(std::string_view body, Proto &proto) {
  each_field(body, "trainer_spec", [&](const Field &f) {
    auto int_field = [&](const char *name, int32_t &out) {
      expect_wire(f, kVarint, std::string("trainer_spec.") + name);
      out = as_int32(f);
    };
    switch (f.number) {
      case 3:
        int_field("model_type", proto.model_type);
        break;
      case 35:
        expect_wire(f, kVarint, "trainer_spec.byte_fallback");
        proto.byte_fallback = f.varint != 0;
        break;
      case 40:
        int_field("unk_id", proto.unk_id);
        break;
      case 41:
        int_field("bos_id", proto.bos_id);
        break;
      case 42:
        int_field("eos_id", proto.eos_id);
        break;
      case 43:
        int_field("pad_id", proto.pad_id);
        break;
      default:
        break;
    }
  });
}

void parse_normalizer(std::string_view body, const std::string &name, Normalizer &n) {
  each_field(body, name, [&](const Field &f) {
    if (f.number == 2) {
      expect_wire(f, kBytes, name + ".precompiled_charsmap");
      n.charsmap = f.bytes;
    } else if (f.number == kAddDummyPrefix || f.number == kRemoveExtraWhitespaces || f.number == 5) {
      expect_wire(f, kVarint, name + " field " + std::to_string(f.number));
      if (f.number == kAddDummyPrefix) n.add_dummy_prefix = f.varint != 0;
      if (f.number == kRemoveExtraWhitespaces) n.remove_extra_whitespaces = f.varint != 0;
    }
  });
}

Proto parse(std::string_view bytes) {
  Proto proto;
  each_field(bytes, "ModelProto", [&](const Field &f) {
    switch (f.number) {
      case 1:
        expect_wire(f, kBytes, "ModelProto.pieces");
        proto.pieces.push_back(parse_piece(f.bytes, proto.pieces.size()));
        break;
      case 2:
        expect_wire(f, kBytes, "ModelProto.trainer_spec");
        parse_trainer(f.bytes, proto);
        break;
      case 3:
        expect_wire(f, kBytes, "ModelProto.normalizer_spec");
        parse_normalizer(f.bytes, "normalizer_spec", proto.normalizer);
        break;
      case 4:  // self_test_data: dropped by for_library; its wire format is checked above
        expect_wire(f, kBytes, "ModelProto.self_test_data");
        break;
      case 5:
        expect_wire(f, kBytes, "ModelProto.denormalizer_spec");
        parse_normalizer(f.bytes, "denormalizer_spec", proto.denormalizer);
        break;
      default:
        break;
    }
  });
  return proto;
}

// ---- checks ----------------------------------------------------------------

std::string piece_name(const Proto &proto, size_t i) {
  return "piece #" + std::to_string(i) + " " + quoted(proto.pieces[i].text);
}

void check_pieces(const Proto &proto) {
  const auto &pieces = proto.pieces;
  if (pieces.empty()) bad("the model has no pieces");
  if (pieces.size() > 0x7FFFFFFF) bad("too many pieces");
  std::unordered_map<std::string_view, size_t> seen;
  seen.reserve(pieces.size());
  size_t unknown = pieces.size();
  std::vector<bool> bytes(256, false);
  std::vector<std::string_view> user_defined;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Piece &p = pieces[i];
    if (p.text.empty()) bad("piece #" + std::to_string(i) + " is empty");
    if (p.text.size() > kMaxPieceBytes)
      bad(piece_name(proto, i) + " is " + std::to_string(p.text.size()) + " bytes long (at most " +
          std::to_string(kMaxPieceBytes) + ")");
    if (p.text.find('\0') != std::string_view::npos) bad(piece_name(proto, i) + " contains a NUL byte");
    size_t off = 0;
    if (!utf8::valid(p.text, &off))
      bad(piece_name(proto, i) + " is not valid UTF-8 (byte " + std::to_string(off) + ")");
    if (!std::isfinite(p.score)) bad(piece_name(proto, i) + " has a score that is not finite");
    auto [it, fresh] = seen.emplace(p.text, i);
    if (!fresh) bad(piece_name(proto, i) + " repeats piece #" + std::to_string(it->second));
    if (p.type == kUnknown) {
      if (unknown != pieces.size())
        bad(piece_name(proto, i) + " is a second UNKNOWN piece (piece #" + std::to_string(unknown) + " is one)");
      unknown = i;
    }
    if (p.type == kByte) {
      if (!proto.byte_fallback) bad(piece_name(proto, i) + " is a BYTE piece but trainer_spec.byte_fallback is false");
      int b = sentencepiece_proto::byte_of(p.text);
      if (b < 0) bad(piece_name(proto, i) + " is a BYTE piece not spelled <0xXX>");
      bytes[static_cast<size_t>(b)] = true;
    }
    if (p.type == kUserDefined) user_defined.push_back(p.text);
  }
  if (unknown == pieces.size()) bad("no piece has type UNKNOWN");
  if (proto.byte_fallback) {
    auto missing = std::find(bytes.begin(), bytes.end(), false);
    if (missing != bytes.end())
      bad("trainer_spec.byte_fallback is set but there is no BYTE piece for byte " +
          std::to_string(missing - bytes.begin()));
  }
  // PrefixMatcher keeps 64 results: count, for each user-defined symbol, the
  // user-defined symbols that are prefixes of it (itself included). In
  // sorted order the prefixes of a string form a chain just before it.
  std::sort(user_defined.begin(), user_defined.end());
  std::vector<std::string_view> chain;
  for (std::string_view s : user_defined) {
    while (!chain.empty() && s.substr(0, chain.back().size()) != chain.back()) chain.pop_back();
    chain.push_back(s);
    if (chain.size() > 64) bad("USER_DEFINED piece " + quoted(s) + " has more than 64 USER_DEFINED pieces as prefixes");
  }
}

void check_trainer(const Proto &proto) {
  if (proto.model_type < 1 || proto.model_type > 4)
    bad("trainer_spec.model_type " + std::to_string(proto.model_type) +
        " is not UNIGRAM (1), BPE (2), WORD (3) or CHAR (4)");
  // WORD and CHAR models look every word or character up among all pieces,
  // CONTROL ones included, and a CONTROL match makes Encode fail ("all
  // normalized characters are not consumed") on text such as "<s>". No
  // model family Parley converts uses them.
  if (proto.model_type > 2)
    fail(PARLEY_ERROR_UNSUPPORTED, std::string("SentencePiece model: trainer_spec.model_type ") +
                                       (proto.model_type == 3 ? "WORD" : "CHAR") +
                                       " is not supported (UNIGRAM and BPE are)");
  // The BPE model starts from single characters and looks each up among all
  // pieces: a one-character CONTROL piece fails Encode the same way.
  if (proto.model_type == 2)
    for (size_t i = 0; i < proto.pieces.size(); ++i)
      if (proto.pieces[i].type == kControl &&
          utf8::sequence_length(proto.pieces[i].text, 0) == proto.pieces[i].text.size())
        bad(piece_name(proto, i) + " is a one-character CONTROL piece, which the BPE model cannot encode around");
  const auto n = static_cast<int64_t>(proto.pieces.size());
  const std::pair<const char *, int32_t> ids[] = {
      {"unk_id", proto.unk_id}, {"bos_id", proto.bos_id}, {"eos_id", proto.eos_id}, {"pad_id", proto.pad_id}};
  for (size_t k = 0; k < 4; ++k) {
    const auto &[name, id] = ids[k];
    const int64_t lowest = k == 0 ? 0 : -1;  // the trainer always has an unk; the others may be off
    if (id < lowest || id >= n)
      bad(std::string("trainer_spec.") + name + " " + std::to_string(id) + " is outside [" + std::to_string(lowest) +
          ", " + std::to_string(n) + ")");
    for (size_t j = 0; j < k; ++j)
      if (id >= 0 && ids[j].second == id)
        bad(std::string("trainer_spec.") + name + " and " + ids[j].first + " are both " + std::to_string(id));
  }
}

}  // namespace

// darts-clone's DoubleArrayUnit (third_party/darts_clone/darts.h): a 32-bit
// unit holds a label (low byte; bit 31 set on value units so they never
// match), has_leaf (bit 8), and the XOR offset to its children's block
// (bits 10..31, shifted left by 8 more when bit 9 is set). A value unit's
// low 31 bits are the leaf's value. commonPrefixSearch reads, for each
// input byte c, the unit at base ^ c, so every byte of the 256-unit block at
// a reachable node's base gets read.
void check_charsmap(std::string_view blob, const std::string &field) {
  if (blob.empty()) return;
  const std::string where = field + ".precompiled_charsmap";
  if (blob.size() <= 4) bad(where + " is " + std::to_string(blob.size()) + " bytes, too short for its trie size");
  uint32_t trie_size = 0;
  std::memcpy(&trie_size, blob.data(), 4);  // little-endian (the library swaps on big-endian hosts)
  if (trie_size > blob.size() - 4)
    bad(where + ": trie size " + std::to_string(trie_size) + " is past the " + std::to_string(blob.size() - 4) +
        " bytes after it");
  if (trie_size == 0 || trie_size % 4 != 0)
    bad(where + ": trie size " + std::to_string(trie_size) + " is not a positive multiple of 4 (4-byte units)");
  const char *trie = blob.data() + 4;
  const uint64_t n = trie_size / 4;
  const std::string_view normalized = blob.substr(4 + static_cast<size_t>(trie_size));
  auto unit = [&](uint64_t p) {
    uint32_t u;
    std::memcpy(&u, trie + 4 * p, 4);
    return u;
  };
  auto offset = [](uint32_t u) -> uint64_t { return static_cast<uint64_t>(u >> 10) << ((u & (1u << 9)) >> 6); };

  // For each offset of `normalized`: 0 = a NUL-terminated valid UTF-8
  // string starts there, 1 = no NUL before the end, 2 = invalid UTF-8.
  std::vector<uint8_t> string_state;
  auto check_value = [&](uint64_t at, uint32_t value) {
    if (value >= normalized.size())
      bad(where + ": the leaf at trie unit " + std::to_string(at) + " points to byte " + std::to_string(value) +
          ", past the " + std::to_string(normalized.size()) + " bytes of normalized strings");
    if (string_state.empty()) {
      string_state.assign(normalized.size() + 1, 1);
      for (size_t i = normalized.size(); i-- > 0;) {
        if (normalized[i] == '\0') {
          string_state[i] = 0;
        } else {
          size_t len = utf8::sequence_length(normalized, i);
          string_state[i] = len == 0 ? 2 : string_state[i + len];
        }
      }
    }
    if (string_state[value] == 1)
      bad(where + ": the normalized string at byte " + std::to_string(value) + " (leaf at trie unit " +
          std::to_string(at) + ") has no terminating NUL");
    if (string_state[value] == 2)
      bad(where + ": the normalized string at byte " + std::to_string(value) + " (leaf at trie unit " +
          std::to_string(at) + ") is not valid UTF-8");
  };
  auto check_block = [&](uint64_t from, uint64_t base) {
    if ((base | 0xFF) >= n)
      bad(where + ": trie unit " + std::to_string(from) + " points to units " + std::to_string(base & ~0xFFull) + ".." +
          std::to_string(base | 0xFF) + ", outside the trie's " + std::to_string(n) + " units");
  };

  // The children of each base, found in one pass: the unit at p is the
  // child for byte c of the node whose base is p ^ c when its label is c
  // (value units have bit 31 set and are nobody's child).
  std::vector<uint32_t> first(n + 1, 0), children;
  for (uint64_t p = 0; p < n; ++p) {
    const uint32_t u = unit(p);
    const uint64_t b = p ^ (u & 0xFF);
    if (!(u >> 31) && b < n) ++first[b + 1];
  }
  for (uint64_t b = 0; b < n; ++b) first[b + 1] += first[b];
  children.resize(first[n]);
  {
    std::vector<uint32_t> fill(first.begin(), first.end() - 1);
    for (uint64_t p = 0; p < n; ++p) {
      const uint32_t u = unit(p);
      const uint64_t b = p ^ (u & 0xFF);
      if (!(u >> 31) && b < n) children[fill[b]++] = static_cast<uint32_t>(p);
    }
  }

  // Depth-first over children blocks (nodes sharing a base share their
  // children: darts-clone merges common suffixes), remembering per base the
  // most leaves on a path below it; a block met again while still open is a
  // cycle.
  constexpr uint8_t kMaxLeaves = 32;  // Normalizer::kMaxTrieResultsSize
  enum : uint8_t { kNew, kOpen, kDone };
  std::vector<uint8_t> state(n, kNew), most(n, 0);
  struct Frame {
    uint64_t base;
    uint32_t next;  // index into children of the next child to visit
    uint8_t best;   // most leaves on a path below, so far
    uint8_t leaf;   // 1 when the edge into this block's node has a leaf
  };
  const uint64_t root_base = offset(unit(0));
  check_block(0, root_base);
  std::vector<Frame> stack{{root_base, first[root_base], 0, 0}};
  state[root_base] = kOpen;
  while (!stack.empty()) {
    Frame &f = stack.back();
    if (f.next == first[f.base + 1]) {
      state[f.base] = kDone;
      most[f.base] = f.best;
      const uint8_t through = static_cast<uint8_t>(std::min<int>(kMaxLeaves + 1, f.leaf + f.best));
      stack.pop_back();
      if (!stack.empty()) stack.back().best = std::max(stack.back().best, through);
      continue;
    }
    const uint64_t pos = children[f.next++];
    const uint32_t u = unit(pos);
    const uint64_t child_base = pos ^ offset(u);
    check_block(pos, child_base);
    const uint8_t leaf = (u >> 8) & 1;
    if (leaf) check_value(child_base, unit(child_base) & 0x7FFFFFFFu);
    if (state[child_base] == kOpen) bad(where + ": the trie has a cycle through unit " + std::to_string(pos));
    if (state[child_base] == kDone) {
      f.best = std::max(f.best, static_cast<uint8_t>(std::min<int>(kMaxLeaves + 1, leaf + most[child_base])));
    } else {
      state[child_base] = kOpen;
      stack.push_back({child_base, first[child_base], 0, leaf});  // invalidates f
    }
  }
  if (most[root_base] > kMaxLeaves)
    bad(where + ": a path through the trie has more than " + std::to_string(kMaxLeaves) +
        " leaves (libsentencepiece keeps " + std::to_string(kMaxLeaves) + " matches)");
}

Summary check_model_proto(std::string_view bytes) {
  Proto proto = parse(bytes);
  check_pieces(proto);
  check_trainer(proto);
  check_charsmap(proto.normalizer.charsmap, "normalizer_spec");
  check_charsmap(proto.denormalizer.charsmap, "denormalizer_spec");
  Summary s;
  s.num_pieces = proto.pieces.size();
  s.add_dummy_prefix = proto.normalizer.add_dummy_prefix;
  s.remove_extra_whitespaces = proto.normalizer.remove_extra_whitespaces;
  return s;
}

std::string for_library(std::string_view proto, const std::vector<std::pair<uint32_t, bool>> &normalizer_flags) {
  std::string out;
  out.reserve(proto.size() + 16);
  each_field(proto, "ModelProto", [&](const Field &f) {
    if (f.number != 4) out.append(proto.substr(f.start, f.end - f.start));
  });
  if (!normalizer_flags.empty()) {
    std::string spec;
    for (const auto &[field, value] : normalizer_flags) {
      write_varint(spec, static_cast<uint64_t>(field) << 3);
      spec += value ? '\x01' : '\x00';
    }
    write_varint(out, (3u << 3) | kBytes);  // ModelProto.normalizer_spec
    write_varint(out, spec.size());
    out += spec;
  }
  return out;
}

int byte_of(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
  int hi = hex(p[3]), lo = hex(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace parley::sentencepiece_proto
