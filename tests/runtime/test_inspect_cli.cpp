// `parley inspect` verifies every checksum the loader verifies (issue 10
// item 6: it used to skip the tokenizer blobs) and prints file content
// escaped (item 7). Runs the built CLI on files planted with one defect.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "format/model_file.hpp"
#include "model_bytes.hpp"

using namespace parley;
using namespace parley::test;

namespace {

struct CliRun {
  int rc = -1;
  std::string output;  // stdout and stderr
};

CliRun inspect(const std::string &path, const std::string &extra = "") {
  std::string cmd =
      std::string("'") + PARLEY_CLI + "' inspect '" + path + "' --plugin-dir '" + plugin_dir() + "' " + extra + " 2>&1";
  CliRun r;
  FILE *p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class InspectCli : public ::testing::Test {
 protected:
  void SetUp() override { good = read_file(data_dir() + "/tiny_decoder.parley"); }
  std::string write(const Bytes &b, const char *name) {
    std::string path = ::testing::TempDir() + "/" + name;
    write_file(path, b);
    return path;
  }
  Bytes good;
};

TEST_F(InspectCli, CleanFilePasses) {
  CliRun r = inspect(write(good, "inspect_clean.parley"));
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("Tokenizer 0: byte-level-bpe"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("special token(s), checksum ok"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("MISMATCH"), std::string::npos) << r.output;
}

// Issue 11: inspect names each tensor's dtype (i4 included) and its quantization.
TEST_F(InspectCli, PrintsI4AndTheQuantizationPerTensor) {
  CliRun r = inspect(write(good, "inspect_per_row.parley"));
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("per-row (axis 0), scales: decoder.layers.1.mlp.down_proj.weight_scale"), std::string::npos)
      << r.output;
  Bytes b = rewrite(good, [](Parts &p) { make_groupwise(p, format::DType::I4, 32); });
  r = inspect(write(b, "inspect_i4.parley"));
  EXPECT_EQ(r.rc, 0) << r.output;
  std::string line;
  size_t at = r.output.find("  decoder.layers.1.mlp.down_proj.weight ");
  ASSERT_NE(at, std::string::npos) << r.output;
  line = r.output.substr(at, r.output.find('\n', at) - at);
  EXPECT_NE(line.find(" i4 "), std::string::npos) << line;
  EXPECT_NE(line.find("[32, 64]"), std::string::npos) << line;
  EXPECT_NE(line.find("checksum ok  group-wise g32, scales: decoder.layers.1.mlp.down_proj.weight_scale"),
            std::string::npos)
      << line;
}

// Issue 11 part 3: bytes per cached token for each KV cache type, and the
// --kv-cache option (llama parity model: 2 layers, 2 kv heads, head_dim 8).
TEST_F(InspectCli, PrintsKvCacheBytesPerToken) {
  const std::string llama = std::string(PARLEY_PARITY_MODELS_DIR) + "/llama.parley";
  CliRun r = inspect(llama, "--kv-cache int8");
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("KV cache per cached token (2 layers x 2 x 2 kv heads x 8 head dim): f32 256 B, f16 / bf16 "
                          "128 B, int8 96 B (scales included); selected: int8"),
            std::string::npos)
      << r.output;
  r = inspect(llama, "--kv-cache bf16");
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("selected: bf16"), std::string::npos) << r.output;
  r = inspect(llama, "--kv-cache fp8");
  EXPECT_NE(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("--kv-cache"), std::string::npos) << r.output;
}

TEST_F(InspectCli, FlippedBitInTokenizerBlobFails) {
  LoadOptions lo;
  auto m = ModelFile::open_memory(good.data(), good.size(), false, lo);
  ASSERT_FALSE(m->tokenizers().empty());
  const TokenizerView &t = m->tokenizers()[0];
  ASSERT_GT(t.length, 0u);
  Bytes b = good;  // the blob's checksum is NOT repaired
  b[m->preamble().data_offset + t.table->model()->offset() + t.length / 3] ^= 0x01;
  CliRun r = inspect(write(b, "inspect_blob_flip.parley"));
  EXPECT_EQ(r.rc, 1) << r.output;  // a failure; 2 is for usage errors
  EXPECT_NE(r.output.find("Runnable: NO"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tokenizer #0: model blob checksum mismatch"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Tokenizer 0: byte-level-bpe"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("CHECKSUM MISMATCH"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 tokenizer blob(s) failed checksum verification"), std::string::npos) << r.output;
}

TEST_F(InspectCli, FileContentIsPrintedEscaped) {
  Bytes b = rewrite(good, [](Parts &p) {
    auto kv = std::make_unique<format::KeyValueT>();
    kv->key = "zz_note";
    kv->value =
        "\x1b]0;owned\x07\x1b[2Jcleared\x9b"
        "31mred";
    p.model.metadata.push_back(std::move(kv));
  });
  CliRun r = inspect(write(b, "inspect_escape.parley"));
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("\\x1b]0;owned\\x07\\x1b[2Jcleared\\x9b31mred"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << "a raw ESC reached the terminal";
  EXPECT_EQ(r.output.find('\x07'), std::string::npos);
  EXPECT_EQ(r.output.find('\x9b'), std::string::npos);
}

}  // namespace
