// Reading a .parley model file (formats/FORMAT.md): map it, verify every
// structural and semantic rule before anything else touches it, and expose
// typed views. A ModelFile is immutable once constructed.
#pragma once

#include <parley/parley.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace parley::format {
struct Model;
struct Tokenizer;
}  // namespace parley::format

namespace parley {

class ThreadPool;

constexpr uint16_t kFormatMajor = 1;
constexpr uint16_t kFormatMinor = 0;
constexpr size_t kPreambleSize = 64;
constexpr uint64_t kMaxHeaderLength = uint64_t{256} << 20;
constexpr uint64_t kDataAlignment = 64;
constexpr size_t kMaxTensorNameLength = 512;

struct Preamble {
  uint16_t major = 0, minor = 0;
  uint32_t preamble_size = 0;
  uint64_t header_offset = 0, header_length = 0, header_checksum = 0;
  uint64_t data_offset = 0, data_length = 0, preamble_checksum = 0;
};

struct TensorView {
  std::string name;
  parley_dtype dtype;
  std::vector<int64_t> shape;
  uint64_t offset, length, checksum;
  std::string scale_tensor;  // empty when not quantized
  int32_t scale_axis = 0;
  // parley_quant of the tensor: NONE, PER_ROW (I8, scales along scale_axis
  // 0 of a 2-D weight, or any axis for other tensors) or GROUPWISE (I8/I4,
  // scales [rows, cols / group_size] of a 2-D weight).
  int32_t quant = 0;
  int64_t group_size = 0;
  const uint8_t *data;  // into the mapped data section
};

struct ConfigEntry {
  std::string key;
  bool is_float;
  int64_t int_value;
  double float_value;
};

struct TokenizerView {
  parley_tokenizer_kind kind;
  parley_tokenizer_role role;
  const uint8_t *data;
  uint64_t length;
  size_t num_special_tokens;
  const format::Tokenizer *table;  // verified; lives as long as the ModelFile
};

struct LoadOptions {
  bool verify_checksums = true;
  // open_file: read the whole file into private memory instead of mapping
  // it, so that truncating the file while the model is in use cannot raise
  // SIGBUS (parley_model_options.read_into_memory).
  bool read_into_memory = false;
  ThreadPool *pool = nullptr;  // parallel checksum verification when set
};

class ModelFile {
 public:
  // Map and verify a file. Throws Error.
  static std::unique_ptr<ModelFile> open_file(const std::string &path, const LoadOptions &options);
  // Verify a buffer: copied into 64-byte-aligned memory unless `borrow`. Throws Error.
  static std::unique_ptr<ModelFile> open_memory(const void *data, size_t size, bool borrow, const LoadOptions &options);
  ~ModelFile();
  ModelFile(const ModelFile &) = delete;
  ModelFile &operator=(const ModelFile &) = delete;

  const Preamble &preamble() const { return preamble_; }
  const format::Model &header() const { return *header_; }
  uint64_t file_size() const { return size_; }
  const std::string &label() const { return label_; }

  const std::string &architecture() const { return architecture_; }
  parley_model_kind kind() const { return kind_; }
  // The encoder's (source) vocabulary, and the decoder's (target): they
  // differ only for an encoder-decoder model with separate vocabularies
  // (format 1.3 decoder_vocab_size, e.g. some Marian OPUS-MT pairs).
  uint32_t vocab_size() const { return vocab_size_; }
  uint32_t target_vocab_size() const { return target_vocab_size_; }
  const std::vector<TensorView> &tensors() const { return tensors_; }
  const TensorView *find_tensor(const std::string &name) const;
  const std::vector<ConfigEntry> &config() const { return config_; }
  const ConfigEntry *find_config(const std::string &key) const;
  // The first decoder token of an encoder-decoder model:
  // generation.decoder_start_token_id, else generation.bos_token_id (the
  // fallback of transformers' GenerationMixin._prepare_special_tokens);
  // fails with PARLEY_ERROR_INVALID_MODEL when neither is set.
  int32_t decoder_start_token_id() const;
  const std::vector<TokenizerView> &tokenizers() const { return tokenizers_; }
  const std::vector<std::pair<std::string, std::string>> &metadata() const { return metadata_; }
  const std::string *chat_template() const { return has_chat_template_ ? &chat_template_ : nullptr; }
  uint64_t weights_size() const;

  // Recompute one tensor's checksum; throws CHECKSUM naming it.
  void verify_tensor(const TensorView &t) const;
  // Recompute tokenizer `index`'s model blob checksum; throws CHECKSUM naming it.
  // The loader and `parley inspect` (through parley_model_verify_tokenizer) share it.
  void verify_tokenizer(size_t index) const;

 private:
  ModelFile() = default;
  void parse(const LoadOptions &options);
  void read_whole_file(int fd);
  void check_preamble();
  void check_header();
  void collect_config();
  void verify_checksums(ThreadPool *pool) const;
  [[noreturn]] void bad(parley_status status, const std::string &what) const;

  std::string label_;
  const uint8_t *base_ = nullptr;
  uint64_t size_ = 0;
  void *mapping_ = nullptr;  // munmap on destruction
  void *owned_ = nullptr;    // free on destruction
  Preamble preamble_;
  const format::Model *header_ = nullptr;
  const uint8_t *data_ = nullptr;

  std::string architecture_;
  parley_model_kind kind_ = PARLEY_MODEL_DECODER_ONLY;
  uint32_t vocab_size_ = 0, target_vocab_size_ = 0;
  std::vector<TensorView> tensors_;
  std::vector<ConfigEntry> config_;
  std::vector<TokenizerView> tokenizers_;
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::string chat_template_;
  bool has_chat_template_ = false;
};

// Element size in bytes of a whole-byte dtype; 0 for an unknown dtype.
// PARLEY_DTYPE_I4 has no whole-byte element size (two elements per byte):
// asking for it throws PARLEY_ERROR_INTERNAL rather than answering 0, so code
// that sizes buffers must use dtype_bits() or tensor_bytes().
size_t dtype_size(int32_t dtype);
// Bits per element: 4 for I4, 8 * dtype_size otherwise; 0 for an unknown dtype.
size_t dtype_bits(int32_t dtype);
// Bytes of a tensor of `elements` elements of `dtype` (I4: elements / 2).
// False for an unknown dtype, an odd I4 element count, or an overflow.
bool tensor_bytes(int32_t dtype, uint64_t elements, uint64_t *out_bytes);
const char *dtype_name(int32_t dtype);

}  // namespace parley
