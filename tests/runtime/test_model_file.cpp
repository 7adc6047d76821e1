// The loader against hostile files: every defect must give its documented
// status and a message naming what is wrong — never a crash or a hang.
// Base files come from the Python reference writer (tests/data).
#include <gtest/gtest.h>
#include <parley/plugin.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "../common/gtest_seed.h"
#include "core/error.hpp"
#include "format/model_file.hpp"
#include "model_bytes.hpp"

using namespace parley;
using namespace parley::test;

namespace {

struct Outcome {
  parley_status status = PARLEY_OK;
  std::string message;
};

Outcome load(const Bytes &b, bool verify = true) {
  LoadOptions o;
  o.verify_checksums = verify;
  try {
    ModelFile::open_memory(b.data(), b.size(), false, o);
    return {};
  } catch (const Error &e) {
    return {e.status(), e.what()};
  }
}

#define EXPECT_LOAD_ERROR(bytes, st, fragment)                                 \
  do {                                                                         \
    Outcome out_ = load(bytes);                                                \
    EXPECT_EQ(out_.status, st) << out_.message;                                \
    EXPECT_NE(out_.message.find(fragment), std::string::npos) << out_.message; \
  } while (0)

class ModelFileTest : public ::testing::Test {
 protected:
  void SetUp() override { good = read_file(data_dir() + "/tiny_decoder.parley"); }
  Bytes good;
};

TEST_F(ModelFileTest, ReferenceFileLoads) {
  Outcome o = load(good);
  ASSERT_EQ(o.status, PARLEY_OK) << o.message;
  LoadOptions lo;
  auto m = ModelFile::open_memory(good.data(), good.size(), false, lo);
  EXPECT_EQ(m->architecture(), "LlamaForCausalLM");
  EXPECT_EQ(m->kind(), PARLEY_MODEL_DECODER_ONLY);
  EXPECT_GT(m->tensors().size(), 10u);
  for (const auto &t : m->tensors()) {
    EXPECT_EQ(t.offset % 64, 0u) << t.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << t.name;
  }
  // Round trip through the object API keeps it loadable (the helpers are sound).
  EXPECT_EQ(load(rewrite(good, [](Parts &) {})).status, PARLEY_OK);
}

TEST_F(ModelFileTest, Seq2SeqAndBigSparseFilesLoad) {
  Bytes s2s = read_file(data_dir() + "/tiny_seq2seq.parley");
  Outcome o = load(s2s);
  EXPECT_EQ(o.status, PARLEY_OK) << o.message;
  // > 4 GiB, sparse: exercises 64-bit offsets through mmap, checksums included.
  LoadOptions lo;
  auto big = ModelFile::open_file(data_dir() + "/big_sparse.parley", lo);
  EXPECT_GT(big->file_size(), uint64_t{4} << 30);
  const TensorView *after = big->find_tensor("zz.after_4g");
  ASSERT_NE(after, nullptr);
  EXPECT_GT(after->offset, uint64_t{4} << 30);
  big->verify_tensor(*after);
}

TEST_F(ModelFileTest, TruncationAtEverySectionBoundary) {
  LoadOptions lo;
  auto m = ModelFile::open_memory(good.data(), good.size(), false, lo);
  const Preamble &p = m->preamble();
  std::vector<size_t> cuts = {0,
                              1,
                              8,
                              63,
                              64,
                              65,
                              static_cast<size_t>(p.header_offset + p.header_length / 2),
                              static_cast<size_t>(p.header_offset + p.header_length),
                              static_cast<size_t>(p.data_offset),
                              good.size() - 1};
  for (const auto &t : m->tensors()) {
    cuts.push_back(static_cast<size_t>(p.data_offset + t.offset));
    cuts.push_back(static_cast<size_t>(p.data_offset + t.offset + t.length / 2));
  }
  std::string path = ::testing::TempDir() + "/truncated.parley";
  for (size_t cut : cuts) {
    // Through a real file: mmap and fstat are the path truncated downloads take.
    write_file(path, Bytes(good.begin(), good.begin() + static_cast<long>(cut)));
    Outcome o;
    try {
      ModelFile::open_file(path, LoadOptions{});
    } catch (const Error &e) {
      o = {e.status(), e.what()};
    }
    EXPECT_EQ(o.status, PARLEY_ERROR_INVALID_MODEL) << "cut at " << cut << ": " << o.message;
    EXPECT_TRUE(o.message.find("truncated") != std::string::npos) << o.message;
  }
}

TEST_F(ModelFileTest, TrailingBytesRefused) {
  Bytes b = good;
  b.push_back(0);
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "trailing");
}

TEST_F(ModelFileTest, WrongMagic) {
  Bytes b = good;
  b[1] = 'X';
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "bad magic");
  Bytes zeros(4096, 0);
  EXPECT_LOAD_ERROR(zeros, PARLEY_ERROR_INVALID_MODEL, "bad magic");
}

TEST_F(ModelFileTest, NewerMajorRefusedNamingBothVersions) {
  Bytes b = good;
  put16(b, 8, 2);
  put16(b, 10, 3);
  fix_preamble(b);
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_UNSUPPORTED_VERSION, "format 2.3 is not supported");
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_UNSUPPORTED_VERSION, "reads format 1.x");
  put16(b, 8, 0);
  fix_preamble(b);
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_UNSUPPORTED_VERSION, "format 0.3");
}

TEST_F(ModelFileTest, NewerMinorAccepted) {
  Bytes b = good;
  put16(b, 10, 7);
  fix_preamble(b);
  EXPECT_EQ(load(b).status, PARLEY_OK);
}

TEST_F(ModelFileTest, PreambleFieldsChecked) {
  struct Case {
    size_t at;
    uint64_t value;
    const char *fragment;
  };
  uint64_t hlen = get64(good, 24), doff = get64(good, 40);
  for (Case c : {Case{16, 128, "header_offset"}, Case{24, 4, "header_length"},
                 Case{24, uint64_t{1} << 40, "header_length"}, Case{40, doff + 1, "not a multiple of 64"},
                 Case{40, 64, "overlaps the header"}, Case{48, ~uint64_t{0} - 10, "overflows"},
                 Case{48, uint64_t{1} << 40, "truncated"}, Case{24, hlen + 1, "header checksum"}}) {
    Bytes b = good;
    put64(b, c.at, c.value);
    fix_preamble(b);
    Outcome o = load(b);
    EXPECT_NE(o.status, PARLEY_OK);
    EXPECT_NE(o.message.find(c.fragment), std::string::npos) << "field at " << c.at << ": " << o.message;
  }
  Bytes b = good;
  uint32_t psize = 128;
  std::memcpy(b.data() + 12, &psize, 4);
  fix_preamble(b);
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "preamble_size");
}

TEST_F(ModelFileTest, BitFlipsInPreambleAndHeaderAreCaughtByChecksums) {
  uint64_t hlen = get64(good, 24);
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  for (int i = 0; i < 200; ++i) {
    Bytes b = good;
    size_t at = 12 + rng() % (52 + hlen);  // past the magic and version
    b[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
    Outcome o = load(b);
    EXPECT_EQ(o.status, PARLEY_ERROR_CHECKSUM) << "flip at byte " << at << ": " << o.message;
  }
}

TEST_F(ModelFileTest, BitFlipInDataNamesTheTensor) {
  LoadOptions lo;
  auto m = ModelFile::open_memory(good.data(), good.size(), false, lo);
  for (const auto &t : m->tensors()) {
    if (!t.length) continue;
    Bytes b = good;
    b[m->preamble().data_offset + t.offset + t.length / 2] ^= 0x10;
    EXPECT_LOAD_ERROR(b, PARLEY_ERROR_CHECKSUM, "tensor '" + t.name + "'");
    EXPECT_EQ(load(b, /*verify=*/false).status, PARLEY_OK) << "verification can be skipped";
  }
}

TEST_F(ModelFileTest, CorruptHeaderBehindValidChecksumFailsVerification) {
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  uint64_t hlen = get64(good, 24);
  int refused = 0;
  for (int i = 0; i < 500; ++i) {
    Bytes b = good;
    for (int k = 0; k < 4; ++k) b[64 + rng() % hlen] = static_cast<uint8_t>(rng());
    fix_checksums(b);
    Outcome o = load(b);  // anything but a crash; most are refused
    refused += o.status != PARLEY_OK;
    EXPECT_TRUE(o.status == PARLEY_OK || o.status == PARLEY_ERROR_INVALID_MODEL || o.status == PARLEY_ERROR_CHECKSUM)
        << o.message;
  }
  EXPECT_GT(refused, 0);
  Bytes b = good;
  std::memset(b.data() + 64, 0xff, 16);  // root offset and identifier
  fix_checksums(b);
  EXPECT_NE(load(b).status, PARLEY_OK);
}

TEST_F(ModelFileTest, MissingFileIdentifier) {
  Bytes b = good;
  std::memcpy(b.data() + 64 + 4, "XXXX", 4);
  fix_checksums(b);
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "file identifier");
}

TEST_F(ModelFileTest, TensorOffsetPastEnd) {
  Bytes b = rewrite(good, [](Parts &p) { p.model.tensors[0]->offset = p.data.size() + 64 * 100; });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "past the end of the data section");
  b = rewrite(good, [](Parts &p) { p.model.tensors[0]->offset = ~uint64_t{63}; });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "overflows");
}

TEST_F(ModelFileTest, SizeOverflowAndLengthMismatch) {
  Bytes b = rewrite(good, [](Parts &p) { p.model.tensors[0]->shape = {int64_t{1} << 62, 16}; });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "overflows");
  b = rewrite(good, [](Parts &p) { p.model.tensors[0]->shape = {int64_t{1} << 31, int64_t{1} << 31, 4}; });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "overflows");
  b = rewrite(good, [](Parts &p) { p.model.tensors[0]->length += 4; });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "does not match dtype");
  b = rewrite(good, [](Parts &p) { p.model.tensors[0]->shape = {-4, 2}; });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "negative dimension");
  b = rewrite(good, [](Parts &p) { p.model.tensors[0]->shape = std::vector<int64_t>(9, 1); });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "rank 9");
  b = rewrite(good, [](Parts &p) { p.model.tensors[0]->dtype = static_cast<format::DType>(42); });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "unknown dtype");
}

TEST_F(ModelFileTest, DuplicateUnsortedAndBadNames) {
  Bytes b = rewrite(good, [](Parts &p) { p.model.tensors[1]->name = p.model.tensors[0]->name; });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "duplicate tensor");
  b = rewrite(good, [](Parts &p) { std::swap(p.model.tensors[0], p.model.tensors[1]); });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "sorted");
  b = rewrite(good, [](Parts &p) { p.model.tensors[0]->name = ""; });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "name '' is empty");
  b = rewrite(good, [](Parts &p) { p.model.tensors[0]->name = std::string("a\nb"); });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "not printable");
}

TEST_F(ModelFileTest, MisalignedAndOverlappingRegions) {
  Bytes b = rewrite(good, [](Parts &p) { p.model.tensors[0]->offset += 4; });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "not a multiple of 64");
  b = rewrite(good, [](Parts &p) {
    auto &t0 = *p.model.tensors[0];
    auto &t1 = *p.model.tensors[1];
    t1.offset = t0.offset;  // same bytes, checksums valid for t0 only
    t1.checksum = t0.checksum;
    t1.length = t0.length;
    t1.shape = t0.shape;
    t1.dtype = t0.dtype;
  });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "overlaps");
}

TEST_F(ModelFileTest, ConfigValuesInRange) {
  auto expect = [&](const std::function<void(format::ModelConfigT &)> &edit, const char *fragment) {
    Bytes b = rewrite(good, [&](Parts &p) { edit(*p.model.config); });
    EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, fragment);
  };
  expect([](auto &c) { c.vocab_size = 0; }, "vocab_size");
  expect([](auto &c) { c.decoder->num_heads = 3; }, "num_heads");
  expect([](auto &c) { c.decoder->num_layers = 100000; }, "num_layers");
  expect([](auto &c) { c.decoder->hidden_size = 0; }, "hidden_size");
  expect([](auto &c) { c.decoder->norm_epsilon = std::nanf(""); }, "norm_epsilon");
  expect([](auto &c) { c.decoder->rope_dim = 3; }, "rotary dimension (3) must be even");
  expect(
      [](auto &c) {
        c.decoder->head_dim = 7;  // rope_dim 0 means head_dim: odd, so no rotation pairs
        c.decoder->rope_dim = 0;
      },
      "rotary dimension (7) must be even");
  expect([](auto &c) { c.decoder->activation = static_cast<format::Activation>(9); }, "activation");
  expect([](auto &c) { c.kind = format::ModelKind::EncoderDecoder; }, "config.encoder is required");
  expect([](auto &c) { c.architecture = ""; }, "architecture");
}

TEST_F(ModelFileTest, GenerationTokenIdsInVocabulary) {
  Bytes b = rewrite(good, [](Parts &p) { p.model.generation->eos_token_ids.push_back(100000); });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "outside the vocabulary");
  b = rewrite(good, [](Parts &p) { p.model.generation->bos_token_id = -7; });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "bos_token_id");
}

TEST_F(ModelFileTest, QuantizationScalesMustExist) {
  Parts parts = split(good);
  format::TensorT *quantized = nullptr;
  for (auto &t : parts.model.tensors)
    if (t->quantization && t->quantization->scheme == format::QuantScheme::SymmetricPerChannel) quantized = t.get();
  ASSERT_NE(quantized, nullptr) << "the reference file has an int8 tensor with scales";
  quantized->quantization->scale_tensor = "no.such.tensor";
  EXPECT_LOAD_ERROR(join(parts), PARLEY_ERROR_INVALID_MODEL, "is missing");
}

TEST_F(ModelFileTest, DuplicateMetadataKeys) {
  Bytes b = rewrite(good, [](Parts &p) {
    auto kv = std::make_unique<format::KeyValueT>();
    kv->key = p.model.metadata[0]->key;
    kv->value = "again";
    p.model.metadata.push_back(std::move(kv));
  });
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "duplicate metadata key");
}

// Issue 10 item 5: every enum and integer field of parley.fbs is range-checked
// at load. One case per field (and per consistency rule), each planted behind
// valid checksums; the message must name the field.
struct FieldCase {
  const char *field;  // also the fragment the message must contain
  std::function<void(Parts &)> edit;
};

format::TokenizerT &first_tokenizer(Parts &p) {
  if (p.model.tokenizers.empty()) throw std::runtime_error("the reference file has no tokenizer");
  return *p.model.tokenizers[0];
}
format::GenerationConfigT &generation(Parts &p) {
  if (!p.model.generation) p.model.generation = std::make_unique<format::GenerationConfigT>();
  return *p.model.generation;
}

std::vector<FieldCase> stack_cases(const std::string &stack) {
  auto cfg = [stack](Parts &p) -> format::StackConfigT & {
    return stack == "encoder" ? *p.model.config->encoder : *p.model.config->decoder;
  };
  auto c = [&](const char *field, std::function<void(format::StackConfigT &)> edit) {
    return FieldCase{field, [cfg, edit](Parts &p) { edit(cfg(p)); }};
  };
  return {
      c("num_layers", [](auto &s) { s.num_layers = 1025; }),
      c("num_layers", [](auto &s) { s.num_layers = 0; }),
      c("hidden_size", [](auto &s) { s.hidden_size = 65537; }),
      c("hidden_size", [](auto &s) { s.hidden_size = 0; }),
      c("num_heads", [](auto &s) { s.num_heads = 0; }),
      c("num_heads", [](auto &s) { s.num_heads = 2048; }),
      c("num_kv_heads", [](auto &s) { s.num_kv_heads = 2000; }),
      c("num_kv_heads", [](auto &s) { s.num_kv_heads = s.num_heads + 1; }),  // does not divide num_heads
      c("head_dim", [](auto &s) { s.head_dim = 1025; }),
      c("hidden_size",
        [](auto &s) {  // no head_dim given: hidden_size must split evenly over the heads
          s.head_dim = 0;
          s.hidden_size = s.num_heads * 3 + 1;
        }),
      c("head_dim",
        [](auto &s) {  // derived head_dim too large
          s.head_dim = 0;
          s.num_heads = 1;
          s.num_kv_heads = 1;
          s.hidden_size = 4096;
        }),
      c("ffn_size", [](auto &s) { s.ffn_size = 0; }),
      c("ffn_size", [](auto &s) { s.ffn_size = 1048577; }),
      c("activation", [](auto &s) { s.activation = static_cast<format::Activation>(0); }),
      c("activation", [](auto &s) { s.activation = static_cast<format::Activation>(255); }),
      c("norm", [](auto &s) { s.norm = static_cast<format::NormKind>(2); }),
      c("norm_placement", [](auto &s) { s.norm_placement = static_cast<format::NormPlacement>(255); }),
      c("position", [](auto &s) { s.position = static_cast<format::PositionKind>(4); }),
      c("max_positions", [](auto &s) { s.max_positions = 16777217; }),
      c("max_positions",
        [](auto &s) {  // a learned table needs rows
          s.position = format::PositionKind::Learned;
          s.max_positions = 0;
        }),
      c("position_offset", [](auto &s) { s.position_offset = (1u << 20) + 1; }),
      c("rope_dim", [](auto &s) { s.rope_dim = 2048; }),
      c("rope_dim",
        [](auto &s) {
          s.position = format::PositionKind::Rotary;
          s.rope_dim = 3;
        }),
      c("rope_scaling", [](auto &s) { s.rope_scaling = static_cast<format::RopeScaling>(3); }),
      c("rope_original_max_positions", [](auto &s) { s.rope_original_max_positions = 16777217; }),
      c("rope_original_max_positions",
        [](auto &s) {  // llama3 scaling divides by it
          s.rope_scaling = format::RopeScaling::Llama3;
          s.rope_original_max_positions = 0;
        }),
      c("rope_high_freq_factor",
        [](auto &s) {  // llama3 scaling divides by (high - low)
          s.rope_scaling = format::RopeScaling::Llama3;
          s.rope_original_max_positions = 8192;
          s.rope_low_freq_factor = 4.0f;
          s.rope_high_freq_factor = 4.0f;
        }),
      c("norm_epsilon", [](auto &s) { s.norm_epsilon = 0.0f; }),
      c("rope_theta", [](auto &s) { s.rope_theta = -1.0f; }),
      c("embedding_scale", [](auto &s) { s.embedding_scale = INFINITY; }),
      c("rope_scaling_factor", [](auto &s) { s.rope_scaling_factor = 0.0f; }),
      c("rope_low_freq_factor", [](auto &s) { s.rope_low_freq_factor = NAN; }),
      c("rope_high_freq_factor", [](auto &s) { s.rope_high_freq_factor = -2.0f; }),
      // format 1.3 sliding windows: one per layer, each <= 2^24
      c("layer_windows", [](auto &s) { s.layer_windows.assign(s.num_layers + 1, 0u); }),
      c("layer_windows", [](auto &s) { s.layer_windows.assign(s.num_layers, (1u << 24) + 1); }),
  };
}

std::vector<FieldCase> model_cases() {
  using namespace format;
  return {
      {"config.kind", [](Parts &p) { p.model.config->kind = static_cast<ModelKind>(2); }},
      {"config.vocab_size", [](Parts &p) { p.model.config->vocab_size = 16777217; }},
      {"config.vocab_size", [](Parts &p) { p.model.config->vocab_size = 0; }},
      // format 1.3: a separate target vocabulary belongs to encoder-decoder models only
      {"config.decoder_vocab_size", [](Parts &p) { p.model.config->decoder_vocab_size = 16777217; }},
      {"config.decoder_vocab_size", [](Parts &p) { p.model.config->decoder_vocab_size = 7; }},
      {"dtype", [](Parts &p) { p.model.tensors[0]->dtype = static_cast<DType>(8); }},  // 7 is I4 (format 1.2)
      {"negative dimension", [](Parts &p) { p.model.tensors[0]->shape[0] = -1; }},
      {"length", [](Parts &p) { p.model.tensors[0]->length += 1; }},
      {"offset", [](Parts &p) { p.model.tensors[0]->offset += 1; }},
      {"quantization.scheme",
       [](Parts &p) {  // 2 is SymmetricGroupwise (format 1.2)
         p.model.tensors[0]->quantization = std::make_unique<QuantizationT>();
         p.model.tensors[0]->quantization->scheme = static_cast<QuantScheme>(3);
       }},
      {"quantization.group_size",
       [](Parts &p) {  // a group size means nothing to per-channel scales
         for (auto &t : p.model.tensors)
           if (t->quantization && t->quantization->scheme == QuantScheme::SymmetricPerChannel)
             t->quantization->group_size = 32;
       }},
      {"quantization axis",
       [](Parts &p) {
         for (auto &t : p.model.tensors)
           if (t->quantization && t->quantization->scheme == QuantScheme::SymmetricPerChannel)
             t->quantization->axis = static_cast<int32_t>(t->shape.size());
       }},
      {"tokenizer #0 model: offset", [](Parts &p) { first_tokenizer(p).model->offset += 8; }},
      {"tokenizer #0 model: bytes", [](Parts &p) { first_tokenizer(p).model->length = p.data.size() + 1; }},
      {"tokenizer #0.kind", [](Parts &p) { first_tokenizer(p).kind = static_cast<TokenizerKind>(2); }},
      {"tokenizer #0.role", [](Parts &p) { first_tokenizer(p).role = static_cast<TokenizerRole>(3); }},
      {"tokenizer #0.normalization",
       [](Parts &p) { first_tokenizer(p).normalization = static_cast<Normalization>(2); }},
      {"tokenizer #0.decode_style", [](Parts &p) { first_tokenizer(p).decode_style = static_cast<DecodeStyle>(255); }},
      {"tokenizer #0.decode_style", [](Parts &p) { first_tokenizer(p).decode_style = static_cast<DecodeStyle>(3); }},
      {"tokenizer #1.role",
       [](Parts &p) {  // a second tokenizer with the same role: which one runs?
         auto second = std::make_unique<TokenizerT>();
         second->kind = first_tokenizer(p).kind;
         second->role = first_tokenizer(p).role;
         second->model = std::make_unique<BlobT>(*first_tokenizer(p).model);
         p.model.tokenizers.push_back(std::move(second));
       }},
      {"tokenizer #0: unk_id", [](Parts &p) { first_tokenizer(p).unk_id = 64; }},
      {"tokenizer #0: unk_id", [](Parts &p) { first_tokenizer(p).unk_id = -2; }},
      {"tokenizer #0: special token id", [](Parts &p) { first_tokenizer(p).special_tokens[0]->id = 64; }},
      {"tokenizer #0: special token id", [](Parts &p) { first_tokenizer(p).special_tokens[0]->id = -1; }},
      {"tokenizer #0: vocabulary of",
       [](Parts &p) { first_tokenizer(p).vocab.resize(p.model.config->vocab_size + 1, "x"); }},
      {"tokenizer #0: language 'xx' token 64",
       [](Parts &p) {
         auto l = std::make_unique<LanguageT>();
         l->code = "xx";
         l->token_id = 64;
         first_tokenizer(p).languages.push_back(std::move(l));
       }},
      {"tokenizer #0: language code '' is empty",
       [](Parts &p) {
         auto l = std::make_unique<LanguageT>();
         l->token_id = 5;
         first_tokenizer(p).languages.push_back(std::move(l));
       }},
      {"tokenizer #0: language code 'xx' is listed twice",
       [](Parts &p) {
         for (int k = 0; k < 2; ++k) {
           auto l = std::make_unique<LanguageT>();
           l->code = "xx";
           l->token_id = 5 + k;
           first_tokenizer(p).languages.push_back(std::move(l));
         }
       }},
      {"generation.bos_token_id", [](Parts &p) { generation(p).bos_token_id = 64; }},
      {"generation.pad_token_id", [](Parts &p) { generation(p).pad_token_id = -5; }},
      {"generation.decoder_start_token_id", [](Parts &p) { generation(p).decoder_start_token_id = 1 << 30; }},
      {"generation.forced_bos_token_id", [](Parts &p) { generation(p).forced_bos_token_id = 64; }},
      {"generation.forced_eos_token_id", [](Parts &p) { generation(p).forced_eos_token_id = 64; }},
      {"generation.eos_token_ids",
       [](Parts &p) {
         generation(p).eos_token_ids = {2, 64};
       }},
      {"generation.eos_token_ids", [](Parts &p) { generation(p).eos_token_ids = {-1}; }},
      {"generation.eos_token_ids", [](Parts &p) { generation(p).eos_token_ids.assign(65, 2); }},
      {"generation.suppress_tokens", [](Parts &p) { generation(p).suppress_tokens = {64}; }},
      {"generation.suppress_tokens", [](Parts &p) { generation(p).suppress_tokens.assign(65, 3); }},
      {"generation.max_length", [](Parts &p) { generation(p).max_length = 16777217; }},
      {"generation.num_beams", [](Parts &p) { generation(p).num_beams = 0; }},
      {"generation.num_beams", [](Parts &p) { generation(p).num_beams = 1025; }},
      {"generation.no_repeat_ngram_size", [](Parts &p) { generation(p).no_repeat_ngram_size = 0xffffffffu; }},
      {"generation.top_k", [](Parts &p) { generation(p).top_k = 0xffffffffu; }},
      {"generation.top_p", [](Parts &p) { generation(p).top_p = 1.5f; }},
      {"generation.min_p", [](Parts &p) { generation(p).min_p = -0.5f; }},
      {"generation.temperature", [](Parts &p) { generation(p).temperature = -1.0f; }},
      {"generation.length_penalty", [](Parts &p) { generation(p).length_penalty = NAN; }},
      {"generation.repetition_penalty", [](Parts &p) { generation(p).repetition_penalty = 0.0f; }},
      {"chat_format.system_placement",
       [](Parts &p) {
         if (!p.model.chat_format) p.model.chat_format = std::make_unique<ChatFormatT>();
         p.model.chat_format->system_placement = static_cast<SystemPlacement>(3);
       }},
  };
}

void expect_refused(const Bytes &base, const FieldCase &c, const std::string &prefix) {
  Bytes b = rewrite(base, c.edit);
  Outcome o = load(b, /*verify=*/false);  // the semantic check, not a checksum, must refuse it
  EXPECT_EQ(o.status, PARLEY_ERROR_INVALID_MODEL) << prefix << c.field << ": " << o.message;
  EXPECT_NE(o.message.find(prefix + c.field), std::string::npos)
      << "expected '" << prefix << c.field << "' in: " << o.message;
}

TEST_F(ModelFileTest, EveryEnumAndIntegerFieldIsRangeChecked) {
  for (const FieldCase &c : model_cases()) expect_refused(good, c, "");
  for (const FieldCase &c : stack_cases("decoder")) expect_refused(good, c, "config decoder.");
  Bytes s2s = read_file(data_dir() + "/tiny_seq2seq.parley");
  ASSERT_EQ(load(s2s).status, PARLEY_OK);
  for (const FieldCase &c : stack_cases("encoder")) expect_refused(s2s, c, "config encoder.");
  // A window counts back from the query's position: the encoder has none.
  expect_refused(s2s,
                 {"layer_windows",
                  [](Parts &p) {
                    auto &e = *p.model.config->encoder;
                    e.layer_windows.assign(e.num_layers, 0u);
                    e.layer_windows.back() = 4;
                  }},
                 "config encoder.");
  // ... and the decoder's may have them (0: a full-attention layer).
  Bytes windowed = rewrite(s2s, [](Parts &p) {
    auto &d = *p.model.config->decoder;
    d.layer_windows.assign(d.num_layers, 3u);
    d.layer_windows[0] = 0;
    p.model.config->encoder->layer_windows.assign(p.model.config->encoder->num_layers, 0u);
  });
  EXPECT_EQ(load(windowed, false).status, PARLEY_OK) << load(windowed, false).message;
  // The edits themselves are sound: each field at an in-range value still loads.
  Bytes ok = rewrite(good, [](Parts &p) {
    first_tokenizer(p).decode_style = format::DecodeStyle::RunsSpaced;
    generation(p).top_k = 100000;  // larger than the vocabulary: transformers clamps it, so do we
    generation(p).no_repeat_ngram_size = 3;
    p.model.config->decoder->rope_scaling = format::RopeScaling::Llama3;
    p.model.config->decoder->rope_original_max_positions = 8192;
  });
  Outcome o = load(ok, false);
  EXPECT_EQ(o.status, PARLEY_OK) << o.message;
}

// Issue 11 (format 1.2): I4 tensors and group-wise scales, planted by
// make_groupwise (model_bytes.hpp) behind valid checksums, so only the
// semantic checks can refuse what the cases below plant.
TEST_F(ModelFileTest, GroupwiseI4AndI8Load) {
  for (format::DType dtype : {format::DType::I4, format::DType::I8})
    for (uint32_t group : {32u, 64u}) {
      Bytes b = rewrite(good, [&](Parts &p) { make_groupwise(p, dtype, group); });
      LoadOptions o;
      std::unique_ptr<ModelFile> f;
      ASSERT_NO_THROW(f = ModelFile::open_memory(b.data(), b.size(), false, o)) << load(b).message;
      const TensorView *w = f->find_tensor(kDown);
      ASSERT_NE(w, nullptr);
      EXPECT_EQ(w->dtype, dtype == format::DType::I4 ? PARLEY_DTYPE_I4 : PARLEY_DTYPE_I8);
      EXPECT_EQ(w->length, dtype == format::DType::I4 ? 1024u : 2048u);
      EXPECT_EQ(w->quant, PARLEY_QUANT_GROUPWISE);
      EXPECT_EQ(w->group_size, group);
      EXPECT_EQ(w->scale_tensor, kDownScale);
      EXPECT_EQ(f->find_tensor(kDownScale)->shape, (std::vector<int64_t>{32, 64 / group}));
    }
  // The per-channel tensor of the reference file reports PER_ROW, no group.
  LoadOptions o;
  auto f = ModelFile::open_memory(good.data(), good.size(), false, o);
  EXPECT_EQ(f->find_tensor(kDown)->quant, PARLEY_QUANT_PER_ROW);
  EXPECT_EQ(f->find_tensor(kDown)->group_size, 0);
}

// The Python writer's I4 files (tests/data/make_test_models.py) as the loader
// sees them: the nibble layout of PARLEY_DTYPE_I4, decoded here by its
// definition in plugin.h, matches what the writer was given.
int i4_at(const TensorView &t, int64_t i) {
  const uint8_t b = t.data[i / 2];
  const int nibble = (i % 2) ? b >> 4 : b & 0xF;
  return nibble >= 8 ? nibble - 16 : nibble;
}

TEST_F(ModelFileTest, PythonWrittenI4FileLoads) {
  Bytes b = read_file(data_dir() + "/tiny_decoder_int4.parley");
  LoadOptions o;
  auto f = ModelFile::open_memory(b.data(), b.size(), false, o);
  EXPECT_EQ(f->preamble().minor, 2);
  const TensorView *pattern = f->find_tensor("zz.i4_pattern");
  ASSERT_NE(pattern, nullptr);
  ASSERT_EQ(pattern->dtype, PARLEY_DTYPE_I4);
  ASSERT_EQ(pattern->shape, (std::vector<int64_t>{2, 64}));
  ASSERT_EQ(pattern->length, 64u);
  for (int64_t i = 0; i < 128; ++i) ASSERT_EQ(i4_at(*pattern, i), (7 * i + 3) % 16 - 8) << "element " << i;
  size_t i4_weights = 0;
  for (const TensorView &t : f->tensors()) {
    if (t.dtype != PARLEY_DTYPE_I4 || t.quant == PARLEY_QUANT_NONE) continue;
    ++i4_weights;
    EXPECT_EQ(t.quant, PARLEY_QUANT_GROUPWISE) << t.name;
    EXPECT_EQ(t.group_size, 32) << t.name;
    EXPECT_EQ(t.scale_tensor, t.name + ".scale");
    EXPECT_EQ(f->find_tensor(t.scale_tensor)->shape, (std::vector<int64_t>{t.shape[0], t.shape[1] / 32})) << t.name;
    // The converter's rule maps each group's largest-magnitude weight to -8 exactly.
    for (int64_t g = 0; g < t.shape[0] * t.shape[1] / 32; ++g) {
      bool extreme = false;
      for (int64_t i = g * 32; i < (g + 1) * 32; ++i) extreme |= i4_at(t, i) == -8;
      EXPECT_TRUE(extreme) << t.name << " group " << g;
    }
  }
  EXPECT_EQ(i4_weights, 13u);  // 7 Linear weights per layer, less the I8 down projection of layer 1
  for (const char *name : {"decoder.embed_tokens.weight", "lm_head.weight"}) {
    const TensorView *t = f->find_tensor(name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, PARLEY_DTYPE_I8) << name;
    EXPECT_EQ(t->quant, PARLEY_QUANT_PER_ROW) << name;
  }
}

TEST(DtypeSizes, I4IsHalfAByteNeverZero) {
  uint64_t bytes = 0;
  EXPECT_TRUE(tensor_bytes(PARLEY_DTYPE_I4, 64, &bytes));
  EXPECT_EQ(bytes, 32u);
  EXPECT_FALSE(tensor_bytes(PARLEY_DTYPE_I4, 3, &bytes));
  EXPECT_FALSE(tensor_bytes(PARLEY_DTYPE_COUNT_, 4, &bytes));
  EXPECT_FALSE(tensor_bytes(PARLEY_DTYPE_F32, uint64_t{1} << 63, &bytes));
  EXPECT_EQ(dtype_bits(PARLEY_DTYPE_I4), 4u);
  EXPECT_EQ(dtype_bits(PARLEY_DTYPE_BF16), 16u);
  EXPECT_THROW(dtype_size(PARLEY_DTYPE_I4), Error);  // no whole-byte size: loud, not 0
}

TEST_F(ModelFileTest, GroupwiseAndI4FieldsAreChecked) {
  using format::DType;
  auto gw = [](DType dtype, uint32_t group, std::function<void(Parts &)> then = {}) {
    return [=](Parts &p) {
      make_groupwise(p, dtype, group);
      if (then) then(p);
    };
  };
  const std::string down = std::string("tensor '") + kDown + "': ";
  const FieldCase cases[] = {
      {"quantization.group_size = 48 is not 32, 64 or 128",
       gw(DType::I4, 32, [](Parts &p) { tensor_named(p, kDown).quantization->group_size = 48; })},
      {"quantization.group_size = 0 is not 32, 64 or 128",
       gw(DType::I8, 32, [](Parts &p) { tensor_named(p, kDown).quantization->group_size = 0; })},
      {"quantization.group_size = 128 does not divide the row length 64",
       gw(DType::I4, 64, [](Parts &p) { tensor_named(p, kDown).quantization->group_size = 128; })},
      {"scale tensor 'decoder.layers.1.mlp.down_proj.weight_scale' must be f32 of shape [32, 1]",
       gw(DType::I4, 32, [](Parts &p) { tensor_named(p, kDown).quantization->group_size = 64; })},
      {"scale tensor 'decoder.layers.1.mlp.down_proj.weight_scale' must be f32 of shape [32]",
       [](Parts &p) {  // per-channel scheme, group-wise scale shape
         make_groupwise(p, DType::I8, 32);
         tensor_named(p, kDown).quantization->scheme = format::QuantScheme::SymmetricPerChannel;
         tensor_named(p, kDown).quantization->group_size = 0;
       }},
      {"quantization.axis = 1 must be 0",
       gw(DType::I8, 32, [](Parts &p) { tensor_named(p, kDown).quantization->axis = 1; })},
      {"group-wise quantization needs dtype i8 or i4, not f32",
       gw(DType::I8, 32,
          [](Parts &p) {
            auto &w = tensor_named(p, kDown);
            w.dtype = DType::F32;
            w.length = 32 * 64 * 4;
            w.offset = 0;  // a region long enough; checksums are not what is tested
          })},
      {"group-wise quantization needs a 2-D tensor, not rank 3", gw(DType::I8, 32,
                                                                    [](Parts &p) {
                                                                      tensor_named(p, kDown).shape = {2, 16, 64};
                                                                    })},
      {"dtype i4 needs rank >= 1 and an even last dimension (two elements per byte), shape has last dimension 33",
       gw(DType::I4, 32,
          [](Parts &p) {
            auto &w = tensor_named(p, kDown);
            w.shape = {2, 33};
            w.length = 33;
            w.quantization.reset();
          })},
      {"dtype i4 needs rank >= 1 and an even last dimension (two elements per byte), shape has rank 0",
       gw(DType::I4, 32,
          [](Parts &p) {
            auto &w = tensor_named(p, kDown);
            w.shape = {};
            w.length = 0;
            w.quantization.reset();
          })},
      // Before format 1.2 an i4 tensor had element size 0, so any shape with length 0 passed.
      {"length 0 does not match dtype i4 x shape (1024 bytes)",
       gw(DType::I4, 32, [](Parts &p) { tensor_named(p, kDown).length = 0; })},
      {"length 2048 does not match dtype i4 x shape (1024 bytes)",
       gw(DType::I4, 32, [](Parts &p) { tensor_named(p, kDown).length = 2048; })},
      {"quantization scale tensor 'decoder.layers.1.mlp.down_proj.weight_scale' element 32 is not finite (nan)",
       [](Parts &p) { make_groupwise(p, DType::I4, 32, NAN); }},
      {"quantization scale tensor 'decoder.layers.1.mlp.down_proj.weight_scale' element 16 is not finite (inf)",
       [](Parts &p) { make_groupwise(p, DType::I8, 64, INFINITY); }},
      {"quantization scale tensor 'decoder.layers.1.mlp.down_proj.weight_scale' element 5 is not finite (-inf)",
       [](Parts &p) {  // per-channel scales are checked too
         auto &s = tensor_named(p, kDownScale);
         float f;
         std::vector<uint8_t> bytes(p.data.begin() + static_cast<long>(s.offset),
                                    p.data.begin() + static_cast<long>(s.offset + s.length));
         std::memcpy(&f, bytes.data() + 20, 4);
         f = -INFINITY;
         std::memcpy(bytes.data() + 20, &f, 4);
         set_region(p, s, bytes);
       }},
      {"quantization.scheme has unknown value 3",
       gw(DType::I4, 32,
          [](Parts &p) { tensor_named(p, kDown).quantization->scheme = static_cast<format::QuantScheme>(3); })},
  };
  for (const FieldCase &c : cases) {
    Bytes b = rewrite(good, c.edit);
    Outcome o = load(b, /*verify=*/true);
    EXPECT_EQ(o.status, PARLEY_ERROR_INVALID_MODEL) << c.field << ": " << o.message;
    EXPECT_NE(o.message.find(down + c.field), std::string::npos)
        << "expected '" << down << c.field << "' in: " << o.message;
  }
}

// Issue 10 item 6: the loader and `parley inspect` share one blob check.
// The new checks refuse no real model: every committed file still loads.
TEST(ModelFileCommitted, EveryCommittedModelLoads) {
  size_t n = 0;
  for (const std::string &dir : {std::string(PARLEY_PARITY_MODELS_DIR), data_dir()})
    for (const auto &e : std::filesystem::directory_iterator(dir)) {
      if (e.path().extension() != ".parley" || e.path().filename().string().rfind("big_", 0) == 0) continue;
      Outcome o = load(read_file(e.path().string()));
      EXPECT_EQ(o.status, PARLEY_OK) << e.path() << ": " << o.message;
      ++n;
    }
  EXPECT_GT(n, 20u);
}

// Format 1.3, Marian with separate vocabularies (tests/parity/models/
// marian_separate_text.parley: source 60 ids, target 80): a Target
// tokenizer's ids count in decoder_vocab_size, a Source one's in vocab_size,
// each side on its own, and generation ids are decoder ids.
TEST(ModelFileSeparateVocabularies, EachTokenizerIsCheckedAgainstItsSide) {
  const Bytes good = read_file(std::string(PARLEY_PARITY_MODELS_DIR) + "/marian_separate_text.parley");
  LoadOptions lo;
  auto m = ModelFile::open_memory(good.data(), good.size(), false, lo);
  const uint32_t src = m->vocab_size(), tgt = m->target_vocab_size();
  ASSERT_LT(src, tgt);
  auto side = [](Parts &p, format::TokenizerRole role) -> format::TokenizerT & {
    for (auto &t : p.model.tokenizers)
      if (t->role == role) return *t;
    throw std::runtime_error("the file has no tokenizer of that role");
  };
  auto target = [&](Parts &p) -> format::TokenizerT & { return side(p, format::TokenizerRole::Target); };
  auto source = [&](Parts &p) -> format::TokenizerT & { return side(p, format::TokenizerRole::Source); };
  const std::string larger = " tokens is larger than the model's ";
  // The target side may use every decoder id, not one more.
  EXPECT_EQ(load(rewrite(good, [&](Parts &p) { target(p).vocab.resize(tgt, "x"); })).status, PARLEY_OK);
  EXPECT_LOAD_ERROR(rewrite(good, [&](Parts &p) { target(p).vocab.resize(tgt + 1, "x"); }), PARLEY_ERROR_INVALID_MODEL,
                    std::to_string(tgt + 1) + larger + std::to_string(tgt));
  EXPECT_EQ(load(rewrite(good, [&](Parts &p) { target(p).unk_id = static_cast<int32_t>(tgt) - 1; })).status, PARLEY_OK);
  EXPECT_LOAD_ERROR(rewrite(good, [&](Parts &p) { target(p).unk_id = static_cast<int32_t>(tgt); }),
                    PARLEY_ERROR_INVALID_MODEL, "unk_id " + std::to_string(tgt) + " is outside the vocabulary");
  EXPECT_LOAD_ERROR(rewrite(good, [&](Parts &p) { target(p).special_tokens[0]->id = static_cast<int32_t>(tgt); }),
                    PARLEY_ERROR_INVALID_MODEL, "special token id " + std::to_string(tgt) + " is outside");
  // The source side stops at the (here smaller) source vocabulary, although
  // those ids would be decoder ids.
  EXPECT_LOAD_ERROR(rewrite(good, [&](Parts &p) { source(p).vocab.resize(src + 1, "x"); }), PARLEY_ERROR_INVALID_MODEL,
                    std::to_string(src + 1) + larger + std::to_string(src));
  EXPECT_LOAD_ERROR(rewrite(good, [&](Parts &p) { source(p).unk_id = static_cast<int32_t>(src); }),
                    PARLEY_ERROR_INVALID_MODEL, "unk_id " + std::to_string(src) + " is outside the vocabulary");
  // Generation ids are decoder ids: one past the source vocabulary is fine.
  EXPECT_EQ(
      load(rewrite(good, [&](Parts &p) { p.model.generation->decoder_start_token_id = static_cast<int32_t>(src); }))
          .status,
      PARLEY_OK);
  EXPECT_LOAD_ERROR(
      rewrite(good, [&](Parts &p) { p.model.generation->decoder_start_token_id = static_cast<int32_t>(tgt); }),
      PARLEY_ERROR_INVALID_MODEL, "generation.decoder_start_token_id");
}

TEST_F(ModelFileTest, TokenizerBlobBitFlipNamesTheTokenizer) {
  LoadOptions lo;
  auto m = ModelFile::open_memory(good.data(), good.size(), false, lo);
  ASSERT_FALSE(m->tokenizers().empty());
  const TokenizerView &t = m->tokenizers()[0];
  ASSERT_GT(t.length, 0u);
  Bytes b = good;
  b[m->preamble().data_offset + t.table->model()->offset() + t.length / 2] ^= 0x04;
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_CHECKSUM, "tokenizer #0: model blob checksum mismatch");
  lo.verify_checksums = false;
  auto damaged = ModelFile::open_memory(b.data(), b.size(), false, lo);
  try {
    damaged->verify_tokenizer(0);
    ADD_FAILURE() << "a flipped bit in the blob was not noticed";
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_CHECKSUM);
    EXPECT_NE(std::string(e.what()).find("tokenizer #0"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(m->verify_tokenizer(0));
}

// Issue 10 item 7: names and strings from the file reach messages escaped.
bool has_raw_control(const std::string &s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

TEST_F(ModelFileTest, MessagesEscapeControlBytesFromTheFile) {
  const std::string hostile = std::string("evil\x1b[2J\x1b]0;pwned\x07", 18) + std::string("\0tail", 5);
  auto check = [&](const Bytes &b, parley_status st, const char *what) {
    Outcome o = load(b);
    EXPECT_EQ(o.status, st) << what << ": " << o.message;
    EXPECT_FALSE(has_raw_control(o.message)) << what << ": raw control byte in the message";
    EXPECT_NE(o.message.find("evil\\x1b[2J\\x1b]0;pwned\\x07\\x00tail"), std::string::npos)
        << what << ": " << o.message;
  };
  check(rewrite(good, [&](Parts &p) { p.model.tensors[0]->name = hostile; }), PARLEY_ERROR_INVALID_MODEL,
        "tensor name");
  check(rewrite(good,
                [&](Parts &p) {
                  auto kv = std::make_unique<format::KeyValueT>();
                  kv->key = hostile;
                  kv->value = "v";
                  p.model.metadata.push_back(std::move(kv));
                }),
        PARLEY_ERROR_INVALID_MODEL, "metadata key");
  check(rewrite(good, [&](Parts &p) { p.model.config->architecture = hostile; }), PARLEY_ERROR_INVALID_MODEL,
        "architecture");
  check(rewrite(good,
                [&](Parts &p) {
                  auto l = std::make_unique<format::LanguageT>();
                  l->code = hostile;
                  l->token_id = 5;
                  first_tokenizer(p).languages.push_back(std::move(l));
                }),
        PARLEY_ERROR_INVALID_MODEL, "language code");
  // A NUL inside a string the C API hands out NUL-terminated is refused, not cut.
  check(rewrite(good,
                [&](Parts &p) {
                  auto kv = std::make_unique<format::KeyValueT>();
                  kv->key = "zz";
                  kv->value = hostile;
                  p.model.metadata.push_back(std::move(kv));
                }),
        PARLEY_ERROR_INVALID_MODEL, "metadata value");
  check(rewrite(good,
                [&](Parts &p) {
                  p.model.chat_template = std::make_unique<format::ChatTemplateT>();
                  p.model.chat_template->source = hostile;
                }),
        PARLEY_ERROR_INVALID_MODEL, "chat_template.source");
  // A name the loader accepts (bytes >= 0x80 are allowed: UTF-8) but that is not
  // UTF-8 (0x9b is the 8-bit CSI of some terminals): escaped in a checksum error.
  Bytes b = rewrite(good, [](Parts &p) {
    auto &t = *p.model.tensors.back();
    t.name =
        "zz\x9b"
        "31m";
    t.checksum ^= 1;
  });
  Outcome o = load(b);
  EXPECT_EQ(o.status, PARLEY_ERROR_CHECKSUM) << o.message;
  EXPECT_NE(o.message.find("'zz\\x9b31m'"), std::string::npos) << o.message;
  EXPECT_EQ(o.message.find('\x9b'), std::string::npos) << o.message;
}

TEST_F(ModelFileTest, RandomDamageNeverCrashes) {
  // Structure-aware mutations behind valid checksums: the verifier and the
  // semantic checks, not the checksums, must stop these.
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  for (int i = 0; i < 300; ++i) {
    Bytes b = good;
    size_t flips = 1 + rng() % 8;
    for (size_t k = 0; k < flips; ++k) b[rng() % b.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    if (rng() % 2) fix_checksums(b);
    Outcome o = load(b, rng() % 2);
    (void)o;
  }
}

TEST(ModelFileIo, MissingDirectoryAndNonRegularFiles) {
  LoadOptions lo;
  try {
    ModelFile::open_file("/nonexistent/model.parley", lo);
    FAIL() << "no error";
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_IO);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.parley"), std::string::npos);
  }
  try {
    ModelFile::open_file("/tmp", lo);
    FAIL() << "no error";
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), PARLEY_ERROR_IO);
  }
}

}  // namespace
