// The loader against hostile files: every defect must give its documented
// status and a message naming what is wrong — never a crash or a hang.
// Base files come from the Python reference writer (tests/data).
#include <gtest/gtest.h>

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
  EXPECT_LOAD_ERROR(b, PARLEY_ERROR_INVALID_MODEL, "name is empty");
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
