#include "format/model_file.hpp"

#include <fcntl.h>
#include <parley/plugin.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <set>

#include "core/error.hpp"
#include "core/escape.hpp"
#include "core/thread_pool.hpp"
#include "parley_generated.h"

namespace parley {

namespace fb = parley::format;

namespace {

constexpr uint8_t kMagic[8] = {0x89, 'P', 'R', 'L', 'Y', '\r', '\n', 0x1a};

uint16_t le16(const uint8_t *p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
uint32_t le32(const uint8_t *p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
uint64_t le64(const uint8_t *p) {
  return uint64_t{le32(p)} | uint64_t{le32(p + 4)} << 32;
}

std::string hex64(uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Names are printed in errors and used as keys: no control characters.
bool printable(const flatbuffers::String *s, size_t max_len) {
  if (!s || s->size() == 0 || s->size() > max_len) return false;
  for (uint8_t c : *s)
    if (c < 0x20 || c == 0x7f) return false;
  return true;
}

// File content quoted in a message: control bytes and invalid UTF-8 escaped, length capped.
std::string quoted(const flatbuffers::String *s) {
  return s ? quote_untrusted(s->string_view()) : "''";
}

bool finite(float f) {
  return std::isfinite(f);
}

}  // namespace

size_t dtype_size(int32_t dtype) {
  switch (dtype) {
    case PARLEY_DTYPE_F32:
      return 4;
    case PARLEY_DTYPE_F16:
      return 2;
    case PARLEY_DTYPE_BF16:
      return 2;
    case PARLEY_DTYPE_I8:
      return 1;
    case PARLEY_DTYPE_I32:
      return 4;
    case PARLEY_DTYPE_U8:
      return 1;
    case PARLEY_DTYPE_I64:
      return 8;
    case PARLEY_DTYPE_I4:
      fail(PARLEY_ERROR_INTERNAL, "dtype_size(i4): i4 packs two elements per byte; use dtype_bits or tensor_bytes");
    default:
      return 0;
  }
}

size_t dtype_bits(int32_t dtype) {
  return dtype == PARLEY_DTYPE_I4 ? 4 : 8 * dtype_size(dtype);
}

bool tensor_bytes(int32_t dtype, uint64_t elements, uint64_t *out_bytes) {
  if (dtype == PARLEY_DTYPE_I4) {
    if (elements % 2) return false;
    *out_bytes = elements / 2;
    return true;
  }
  size_t size = dtype_size(dtype);
  return size != 0 && !__builtin_mul_overflow(elements, uint64_t{size}, out_bytes);
}

const char *dtype_name(int32_t dtype) {
  switch (dtype) {
    case PARLEY_DTYPE_F32:
      return "f32";
    case PARLEY_DTYPE_F16:
      return "f16";
    case PARLEY_DTYPE_BF16:
      return "bf16";
    case PARLEY_DTYPE_I8:
      return "i8";
    case PARLEY_DTYPE_I32:
      return "i32";
    case PARLEY_DTYPE_U8:
      return "u8";
    case PARLEY_DTYPE_I64:
      return "i64";
    case PARLEY_DTYPE_I4:
      return "i4";
    default:
      return "?";
  }
}

void ModelFile::bad(parley_status status, const std::string &what) const {
  fail(status, label_ + ": " + what);
}

std::unique_ptr<ModelFile> ModelFile::open_file(const std::string &path, const LoadOptions &options) {
  std::unique_ptr<ModelFile> m(new ModelFile());
  m->label_ = "model file " + quote_untrusted(path, 1024);
  // O_NONBLOCK: a blocking open() of a FIFO waits for a writer forever (and
  // O_NOCTTY: a terminal must not become our controlling one); the type is
  // checked on the descriptor (no race with a rename) before anything is
  // read. O_NONBLOCK has no effect on a regular file's reads or mmap.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) m->bad(PARLEY_ERROR_IO, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    m->bad(PARLEY_ERROR_IO, std::string("cannot stat: ") + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    const mode_t t = st.st_mode;
    const char *kind = S_ISDIR(t)    ? "a directory"
                       : S_ISFIFO(t) ? "a FIFO"
                       : S_ISCHR(t)  ? "a character device"
                       : S_ISBLK(t)  ? "a block device"
                       : S_ISSOCK(t) ? "a socket"
                                     : "a special file";
    m->bad(PARLEY_ERROR_IO, std::string("is ") + kind + ", not a regular file");
  }
  m->size_ = static_cast<uint64_t>(st.st_size);
  if (m->size_ < kPreambleSize) {
    ::close(fd);
    m->bad(PARLEY_ERROR_INVALID_MODEL, "file is " + std::to_string(m->size_) +
                                           " bytes, smaller than the 64-byte preamble (truncated or not a model)");
  }
  if (options.read_into_memory) {
    m->read_whole_file(fd);
    ::close(fd);
    m->parse(options);
    return m;
  }
  void *p = mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);
  if (p == MAP_FAILED)  // ENOMEM: no address space for the mapping (ulimit -v), an allocation failure
    m->bad(e == ENOMEM ? PARLEY_ERROR_OUT_OF_MEMORY : PARLEY_ERROR_IO,
           std::string(e == ENOMEM ? "out of memory: " : "") + "cannot map " + std::to_string(m->size_) +
               " bytes: " + std::strerror(e));
  m->mapping_ = p;
  m->base_ = static_cast<const uint8_t *>(p);
  m->parse(options);
  return m;
}

// Private, 64-byte-aligned copy of the file (LoadOptions::read_into_memory):
// afterwards nothing refers to the file, so truncating or rewriting it cannot
// fault the process (a mapping would raise SIGBUS on the lost pages).
// Closes `fd` on failure.
void ModelFile::read_whole_file(int fd) {
  if (size_ > SIZE_MAX - kDataAlignment) {
    ::close(fd);
    bad(PARLEY_ERROR_OUT_OF_MEMORY, "file of " + std::to_string(size_) + " bytes does not fit in memory");
  }
  size_t size = static_cast<size_t>(size_);
  size_t rounded = (size + kDataAlignment - 1) / kDataAlignment * kDataAlignment;
  void *copy = std::aligned_alloc(kDataAlignment, rounded);
  if (!copy) {
    ::close(fd);
    bad(PARLEY_ERROR_OUT_OF_MEMORY, "cannot allocate " + std::to_string(size_) + " bytes to read the file into");
  }
  owned_ = copy;  // freed by the destructor, also when a check below throws
  base_ = static_cast<const uint8_t *>(copy);
  auto *dst = static_cast<uint8_t *>(copy);
  size_t done = 0;
  while (done < size) {
    ssize_t got = ::pread(fd, dst + done, std::min<size_t>(size - done, size_t{1} << 30), static_cast<off_t>(done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      int e = errno;
      ::close(fd);
      if (got == 0)
        bad(PARLEY_ERROR_IO,
            "file shrank to " + std::to_string(done) + " bytes while being read (was " + std::to_string(size_) + ")");
      bad(PARLEY_ERROR_IO, std::string("cannot read: ") + std::strerror(e));
    }
    done += static_cast<size_t>(got);
  }
}

std::unique_ptr<ModelFile> ModelFile::open_memory(const void *data, size_t size, bool borrow,
                                                  const LoadOptions &options) {
  std::unique_ptr<ModelFile> m(new ModelFile());
  m->label_ = "model buffer";
  if (!data) m->bad(PARLEY_ERROR_INVALID_ARGUMENT, "data is NULL");
  m->size_ = size;
  if (size < kPreambleSize)
    m->bad(PARLEY_ERROR_INVALID_MODEL, "buffer is " + std::to_string(size) +
                                           " bytes, smaller than the 64-byte preamble (truncated or not a model)");
  if (borrow) {
    if (reinterpret_cast<uintptr_t>(data) % kDataAlignment != 0)
      m->bad(PARLEY_ERROR_INVALID_ARGUMENT, "a borrowed buffer must be 64-byte aligned");
    m->base_ = static_cast<const uint8_t *>(data);
  } else {
    size_t rounded = (size + kDataAlignment - 1) / kDataAlignment * kDataAlignment;
    if (rounded < size) m->bad(PARLEY_ERROR_OUT_OF_MEMORY, "buffer size overflows");
    void *copy = std::aligned_alloc(kDataAlignment, rounded);
    if (!copy) m->bad(PARLEY_ERROR_OUT_OF_MEMORY, "cannot allocate " + std::to_string(size) + " bytes for a copy");
    std::memcpy(copy, data, size);
    m->owned_ = copy;
    m->base_ = static_cast<const uint8_t *>(copy);
  }
  m->parse(options);
  return m;
}

ModelFile::~ModelFile() {
  if (mapping_) munmap(mapping_, size_);
  std::free(owned_);
}

void ModelFile::parse(const LoadOptions &options) {
  check_preamble();
  check_header();
  collect_config();
  if (options.verify_checksums) verify_checksums(options.pool);
}

void ModelFile::check_preamble() {
  const uint8_t *p = base_;
  if (std::memcmp(p, kMagic, sizeof kMagic) != 0) bad(PARLEY_ERROR_INVALID_MODEL, "bad magic: not a Parley model file");
  Preamble &pr = preamble_;
  pr.major = le16(p + 8);
  pr.minor = le16(p + 10);
  // The version comes before the checksum: another major may lay the preamble out differently.
  if (pr.major != kFormatMajor)
    bad(PARLEY_ERROR_UNSUPPORTED_VERSION, "model file format " + std::to_string(pr.major) + "." +
                                              std::to_string(pr.minor) + " is not supported by this Parley " +
                                              parley_version_string() + " (reads format " +
                                              std::to_string(kFormatMajor) + ".x)");
  pr.preamble_size = le32(p + 12);
  pr.header_offset = le64(p + 16);
  pr.header_length = le64(p + 24);
  pr.header_checksum = le64(p + 32);
  pr.data_offset = le64(p + 40);
  pr.data_length = le64(p + 48);
  pr.preamble_checksum = le64(p + 56);
  uint64_t actual = XXH3_64bits(p, 56);
  if (actual != pr.preamble_checksum)
    bad(PARLEY_ERROR_CHECKSUM, "preamble checksum mismatch (stored " + hex64(pr.preamble_checksum) + ", computed " +
                                   hex64(actual) + "): the first 64 bytes are damaged");
  if (pr.preamble_size != kPreambleSize)
    bad(PARLEY_ERROR_INVALID_MODEL, "preamble_size is " + std::to_string(pr.preamble_size) + ", expected 64");
  if (pr.header_offset != kPreambleSize)
    bad(PARLEY_ERROR_INVALID_MODEL, "header_offset is " + std::to_string(pr.header_offset) + ", expected 64");
  if (pr.header_length < 8 || pr.header_length > kMaxHeaderLength)
    bad(PARLEY_ERROR_INVALID_MODEL, "header_length " + std::to_string(pr.header_length) + " is outside [8, 256 MiB]");
  uint64_t header_end = pr.header_offset + pr.header_length;  // cannot overflow: both bounded above
  if (pr.data_offset % kDataAlignment != 0)
    bad(PARLEY_ERROR_INVALID_MODEL, "data_offset " + std::to_string(pr.data_offset) + " is not a multiple of 64");
  if (pr.data_offset < header_end)
    bad(PARLEY_ERROR_INVALID_MODEL, "data_offset " + std::to_string(pr.data_offset) + " overlaps the header (ends at " +
                                        std::to_string(header_end) + ")");
  uint64_t data_end;
  if (__builtin_add_overflow(pr.data_offset, pr.data_length, &data_end))
    bad(PARLEY_ERROR_INVALID_MODEL, "data_offset + data_length overflows");
  if (data_end != size_) {
    if (data_end > size_)
      bad(PARLEY_ERROR_INVALID_MODEL, "file is " + std::to_string(size_) + " bytes but the data section ends at " +
                                          std::to_string(data_end) + " (truncated)");
    bad(PARLEY_ERROR_INVALID_MODEL, "file is " + std::to_string(size_) + " bytes but the data section ends at " +
                                        std::to_string(data_end) + " (trailing bytes)");
  }
  uint64_t header_sum = XXH3_64bits(base_ + pr.header_offset, pr.header_length);
  if (header_sum != pr.header_checksum)
    bad(PARLEY_ERROR_CHECKSUM,
        "header checksum mismatch (stored " + hex64(pr.header_checksum) + ", computed " + hex64(header_sum) + ")");
  data_ = base_ + pr.data_offset;
}

namespace {

struct StackCheck {
  const ModelFile *file;
  std::function<void(const std::string &)> bad;

  void run(const fb::StackConfig *s, const std::string &name, bool required_layers, bool causal) const {
    auto in = [&](const char *field, uint64_t v, uint64_t lo, uint64_t hi) {
      if (v < lo || v > hi)
        bad("config " + name + "." + field + " = " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
            std::to_string(hi) + "]");
    };
    in("num_layers", s->num_layers(), required_layers ? 1 : 0, 1024);
    in("hidden_size", s->hidden_size(), 1, 65536);
    in("num_heads", s->num_heads(), 1, 1024);
    in("num_kv_heads", s->num_kv_heads(), 0, 1024);
    uint32_t kv = s->num_kv_heads() ? s->num_kv_heads() : s->num_heads();
    if (s->num_heads() % kv != 0)
      bad("config " + name + ".num_kv_heads (" + std::to_string(kv) + ") does not divide num_heads (" +
          std::to_string(s->num_heads()) + ")");
    in("head_dim", s->head_dim(), 0, 1024);
    if (s->head_dim() == 0 && s->hidden_size() % s->num_heads() != 0)
      bad("config " + name + ".hidden_size (" + std::to_string(s->hidden_size()) +
          ") is not divisible by num_heads and head_dim is not given");
    uint32_t head_dim = s->head_dim() ? s->head_dim() : s->hidden_size() / s->num_heads();
    if (head_dim == 0 || head_dim > 1024)
      bad("config " + name + ".head_dim (derived: hidden_size / num_heads = " + std::to_string(head_dim) +
          ") is outside [1, 1024]");
    in("ffn_size", s->ffn_size(), s->num_layers() ? 1 : 0, 1048576);
    in("max_positions", s->max_positions(), 0, 16777216);
    in("position_offset", s->position_offset(), 0, 1 << 20);
    in("rope_dim", s->rope_dim(), 0, head_dim);
    uint32_t rope_dim = s->rope_dim() ? s->rope_dim() : head_dim;  // 0 means head_dim
    if (s->position() == fb::PositionKind::Rotary && rope_dim % 2)
      bad("config " + name + ".rope_dim: the rotary dimension (" + std::to_string(rope_dim) + ") must be even");
    in("rope_original_max_positions", s->rope_original_max_positions(), 0, 16777216);
    auto act = static_cast<int>(s->activation());
    if (act < 1 || act > 4) bad("config " + name + ".activation has unknown value " + std::to_string(act));
    auto known = [&](const char *field, int v, int max) {
      if (v > max) bad("config " + name + "." + field + " has unknown value " + std::to_string(v));
    };
    known("norm", static_cast<int>(s->norm()), 1);
    known("norm_placement", static_cast<int>(s->norm_placement()), 1);
    known("position", static_cast<int>(s->position()), 3);
    known("rope_scaling", static_cast<int>(s->rope_scaling()), 2);
    // Learned and sinusoidal positions are a table of max_positions rows;
    // rotary and none treat 0 as "no limit".
    if ((s->position() == fb::PositionKind::Learned || s->position() == fb::PositionKind::Sinusoidal) &&
        s->max_positions() == 0)
      bad("config " + name + ".max_positions = 0, but learned and sinusoidal positions need at least 1");
    float eps = s->norm_epsilon();
    if (!finite(eps) || eps <= 0.f || eps >= 1.f) bad("config " + name + ".norm_epsilon must be in (0, 1)");
    if (!finite(s->rope_theta()) || s->rope_theta() <= 0.f) bad("config " + name + ".rope_theta must be > 0");
    if (!finite(s->embedding_scale())) bad("config " + name + ".embedding_scale must be finite");
    const std::pair<const char *, float> factors[] = {{"rope_scaling_factor", s->rope_scaling_factor()},
                                                      {"rope_low_freq_factor", s->rope_low_freq_factor()},
                                                      {"rope_high_freq_factor", s->rope_high_freq_factor()}};
    for (const auto &[field, f] : factors)
      if (!finite(f) || f <= 0.f) bad("config " + name + "." + field + " must be finite and > 0");
    // Format 1.3 sliding windows: one per layer (0: full attention), only
    // where attention is causal (a window is counted back from the query's
    // position; the encoder attends in both directions).
    if (const auto *w = s->layer_windows()) {
      if (w->size() != 0 && w->size() != s->num_layers())
        bad("config " + name + ".layer_windows has " + std::to_string(w->size()) + " entries for " +
            std::to_string(s->num_layers()) + " layers");
      for (flatbuffers::uoffset_t i = 0; i < w->size(); ++i) {
        if (w->Get(i) > 0 && !causal)
          bad("config " + name + ".layer_windows[" + std::to_string(i) + "] = " + std::to_string(w->Get(i)) +
              ": sliding windows are only supported in the decoder (causal attention)");
        if (w->Get(i) > (1u << 24))
          bad("config " + name + ".layer_windows[" + std::to_string(i) + "] = " + std::to_string(w->Get(i)) +
              " is outside [0, 16777216]");
      }
    }
    if (s->rope_scaling() == fb::RopeScaling::Llama3) {
      // transformers' _compute_llama3_parameters divides by (high - low) and by the original context.
      if (s->rope_original_max_positions() == 0)
        bad("config " + name + ".rope_original_max_positions must be >= 1 for llama3 rope scaling");
      if (!(s->rope_high_freq_factor() > s->rope_low_freq_factor()))
        bad("config " + name +
            ".rope_high_freq_factor must be greater than rope_low_freq_factor for llama3 rope "
            "scaling");
    }
  }
};

}  // namespace

void ModelFile::check_header() {
  const uint8_t *h = base_ + preamble_.header_offset;
  size_t n = static_cast<size_t>(preamble_.header_length);
  flatbuffers::Verifier verifier(h, n, /*max_depth=*/64, /*max_tables=*/1000000);
  if (!fb::ModelBufferHasIdentifier(h))
    bad(PARLEY_ERROR_INVALID_MODEL, "header does not carry the file identifier 'PRLY'");
  if (!fb::VerifyModelBuffer(verifier))
    bad(PARLEY_ERROR_INVALID_MODEL, "header fails FlatBuffers verification (corrupt or not a parley.fbs Model)");
  header_ = fb::GetModel(h);
  auto invalid = [&](const std::string &what) { bad(PARLEY_ERROR_INVALID_MODEL, what); };

  // ---- config
  const fb::ModelConfig *cfg = header_->config();
  if (!printable(cfg->architecture(), 128))
    invalid("config.architecture " + quoted(cfg->architecture()) + " is empty, longer than 128 bytes or not printable");
  architecture_ = cfg->architecture()->str();
  int kind = static_cast<int>(cfg->kind());
  if (kind > 1) invalid("config.kind has unknown value " + std::to_string(kind));
  kind_ = static_cast<parley_model_kind>(kind);
  vocab_size_ = cfg->vocab_size();
  if (vocab_size_ < 1 || vocab_size_ > 16777216)
    invalid("config.vocab_size = " + std::to_string(vocab_size_) + " is outside [1, 16777216]");
  // Format 1.3: a separate target (decoder) vocabulary of an encoder-decoder model.
  target_vocab_size_ = cfg->decoder_vocab_size() ? cfg->decoder_vocab_size() : vocab_size_;
  if (target_vocab_size_ > 16777216)
    invalid("config.decoder_vocab_size = " + std::to_string(target_vocab_size_) + " is outside [0, 16777216]");
  if (cfg->decoder_vocab_size() && kind_ != PARLEY_MODEL_ENCODER_DECODER)
    invalid("config.decoder_vocab_size is given for a decoder-only model");
  StackCheck sc{this, invalid};
  sc.run(cfg->decoder(), "decoder", true, true);
  if (kind_ == PARLEY_MODEL_ENCODER_DECODER) {
    if (!cfg->encoder()) invalid("config.encoder is required for an encoder-decoder model");
    sc.run(cfg->encoder(), "encoder", true, false);
  } else if (cfg->encoder()) {
    invalid("config.encoder is given for a decoder-only model");
  }

  // ---- regions (tensors and blobs) must be aligned, in bounds, disjoint
  struct Region {
    uint64_t offset, length;
    std::string what;
  };
  std::vector<Region> regions;
  auto check_region = [&](const std::string &what, uint64_t offset, uint64_t length) {
    if (offset % kDataAlignment != 0) invalid(what + ": offset " + std::to_string(offset) + " is not a multiple of 64");
    uint64_t end;
    if (__builtin_add_overflow(offset, length, &end)) invalid(what + ": offset + length overflows");
    if (end > preamble_.data_length)
      invalid(what + ": bytes [" + std::to_string(offset) + ", " + std::to_string(end) +
              ") lie past the end of the data section (" + std::to_string(preamble_.data_length) + " bytes)");
    if (length) regions.push_back({offset, length, what});
  };

  // ---- tensors
  const auto *tensors = header_->tensors();
  if (tensors->size() > 1000000) invalid("more than 1,000,000 tensors");
  tensors_.reserve(tensors->size());
  const flatbuffers::String *prev = nullptr;
  for (flatbuffers::uoffset_t i = 0; i < tensors->size(); ++i) {
    const fb::Tensor *t = tensors->Get(i);
    if (!printable(t->name(), kMaxTensorNameLength))
      invalid("tensor #" + std::to_string(i) + ": name " + quoted(t->name()) +
              " is empty, longer than 512 bytes or not printable");
    std::string what = "tensor " + quoted(t->name());
    if (prev) {
      int c = std::memcmp(prev->data(), t->name()->data(), std::min(prev->size(), t->name()->size()));
      if (c == 0 && prev->size() == t->name()->size()) invalid("duplicate " + what);
      if (c > 0 || (c == 0 && prev->size() > t->name()->size()))
        invalid(what + " is out of order: the tensor table must be sorted by name");
    }
    prev = t->name();
    int dt = static_cast<int>(t->dtype());
    if (dt >= PARLEY_DTYPE_COUNT_) invalid(what + ": unknown dtype " + std::to_string(dt));
    const auto *shape = t->shape();
    if (shape->size() > PARLEY_MAX_RANK) invalid(what + ": rank " + std::to_string(shape->size()) + " exceeds 8");
    uint64_t elements = 1;
    for (int64_t d : *shape) {
      if (d < 0) invalid(what + ": negative dimension " + std::to_string(d));
      if (__builtin_mul_overflow(elements, static_cast<uint64_t>(d), &elements))
        invalid(what + ": element count overflows");
    }
    // I4 packs two elements per byte along the last dimension: every row
    // starts on a byte boundary only when that dimension is even.
    if (dt == PARLEY_DTYPE_I4 && (shape->size() == 0 || shape->Get(shape->size() - 1) % 2 != 0))
      invalid(what + ": dtype i4 needs rank >= 1 and an even last dimension (two elements per byte), shape has " +
              (shape->size() ? "last dimension " + std::to_string(shape->Get(shape->size() - 1)) : "rank 0"));
    uint64_t bytes;
    if (!tensor_bytes(dt, elements, &bytes)) invalid(what + ": byte size overflows");
    if (bytes != t->length())
      invalid(what + ": length " + std::to_string(t->length()) + " does not match dtype " +
              dtype_name(static_cast<parley_dtype>(dt)) + " x shape (" + std::to_string(bytes) + " bytes)");
    check_region(what, t->offset(), t->length());
    TensorView v;
    v.name = t->name()->str();
    v.dtype = static_cast<parley_dtype>(dt);
    v.shape.assign(shape->begin(), shape->end());
    v.offset = t->offset();
    v.length = t->length();
    v.checksum = t->checksum();
    v.data = data_ + t->offset();
    if (const fb::Quantization *q = t->quantization()) {
      int scheme = static_cast<int>(q->scheme());
      if (scheme > 2) invalid(what + ": quantization.scheme has unknown value " + std::to_string(scheme));
      if (scheme != 2 && q->group_size() != 0)
        invalid(what + ": quantization.group_size = " + std::to_string(q->group_size()) +
                " is only valid with scheme SymmetricGroupwise");
      if (scheme == 1) {
        if (v.dtype != PARLEY_DTYPE_I8) invalid(what + ": per-channel quantization needs dtype i8");
        if (q->axis() < 0 || static_cast<size_t>(q->axis()) >= v.shape.size())
          invalid(what + ": quantization axis " + std::to_string(q->axis()) + " out of range");
        v.scale_axis = q->axis();
        v.quant = PARLEY_QUANT_PER_ROW;
      } else if (scheme == 2) {
        // Group-wise (format 1.2): a 2-D [n, k] weight, scales [n, k / group_size].
        if (v.dtype != PARLEY_DTYPE_I8 && v.dtype != PARLEY_DTYPE_I4)
          invalid(what + ": group-wise quantization needs dtype i8 or i4, not " + dtype_name(v.dtype));
        if (v.shape.size() != 2)
          invalid(what + ": group-wise quantization needs a 2-D tensor, not rank " + std::to_string(v.shape.size()));
        if (q->axis() != 0)
          invalid(what + ": quantization.axis = " + std::to_string(q->axis()) +
                  " must be 0 for group-wise quantization (groups run along each row)");
        uint32_t g = q->group_size();
        if (g != 32 && g != 64 && g != 128)
          invalid(what + ": quantization.group_size = " + std::to_string(g) + " is not 32, 64 or 128");
        if (v.shape[1] % g != 0)
          invalid(what + ": quantization.group_size = " + std::to_string(g) + " does not divide the row length " +
                  std::to_string(v.shape[1]));
        v.scale_axis = 0;
        v.quant = PARLEY_QUANT_GROUPWISE;
        v.group_size = g;
      }
      if (scheme != 0) {
        if (!printable(q->scale_tensor(), kMaxTensorNameLength))
          invalid(what + ": quantization scale tensor name " + quoted(q->scale_tensor()) +
                  " is empty, longer than 512 bytes or not printable");
        v.scale_tensor = q->scale_tensor()->str();
      }
    }
    tensors_.push_back(std::move(v));
  }
  for (const TensorView &v : tensors_) {
    if (v.scale_tensor.empty()) continue;
    const TensorView *s = find_tensor(v.scale_tensor);
    std::string what = "tensor " + quote_untrusted(v.name);
    if (!s) invalid(what + ": quantization scale tensor " + quote_untrusted(v.scale_tensor) + " is missing");
    std::vector<int64_t> want{v.shape[static_cast<size_t>(v.scale_axis)]};
    if (v.quant == PARLEY_QUANT_GROUPWISE) want = {v.shape[0], v.shape[1] / v.group_size};
    if (s->dtype != PARLEY_DTYPE_F32 || s->shape != want) {
      std::string dims;
      for (int64_t d : want) dims += (dims.empty() ? "" : ", ") + std::to_string(d);
      invalid(what + ": scale tensor " + quote_untrusted(v.scale_tensor) + " must be f32 of shape [" + dims + "]");
    }
    // A NaN or infinite scale would turn every weight of its row or group
    // into NaN/inf in the kernels, silently: refuse the file instead.
    // (The bytes are in bounds: the region was checked above.)
    const uint64_t count = s->length / sizeof(float);
    for (uint64_t i = 0; i < count; ++i) {
      float f;
      std::memcpy(&f, s->data + i * sizeof(float), sizeof f);
      if (!finite(f))
        invalid(what + ": quantization scale tensor " + quote_untrusted(v.scale_tensor) + " element " +
                std::to_string(i) + " is not finite (" + std::to_string(f) + ")");
    }
  }

  // ---- tokenizers
  if (const auto *toks = header_->tokenizers()) {
    if (toks->size() > 16) invalid("more than 16 tokenizers");
    unsigned roles_seen = 0;
    for (flatbuffers::uoffset_t i = 0; i < toks->size(); ++i) {
      const fb::Tokenizer *t = toks->Get(i);
      std::string what = "tokenizer #" + std::to_string(i);
      auto known = [&](const char *field, int v, int max) {
        if (v > max) invalid(what + "." + field + " has unknown value " + std::to_string(v));
      };
      known("kind", static_cast<int>(t->kind()), 1);
      known("role", static_cast<int>(t->role()), 2);
      known("normalization", static_cast<int>(t->normalization()), 1);
      known("decode_style", static_cast<int>(t->decode_style()), 2);
      if (roles_seen & (1u << static_cast<int>(t->role())))
        invalid(what + ".role repeats the role of an earlier tokenizer");
      roles_seen |= 1u << static_cast<int>(t->role());
      check_region(what + " model", t->model()->offset(), t->model()->length());
      size_t specials = 0;
      // A Target tokenizer makes decoder ids, a Source one encoder ids, a
      // Shared one both (so it must fit the smaller vocabulary).
      const uint32_t tok_vocab = t->role() == fb::TokenizerRole::Target   ? target_vocab_size_
                                 : t->role() == fb::TokenizerRole::Source ? vocab_size_
                                                                          : std::min(vocab_size_, target_vocab_size_);
      auto in_vocab = [&](int32_t id) { return id >= 0 && static_cast<uint32_t>(id) < tok_vocab; };
      if (const auto *sp = t->special_tokens()) {
        specials = sp->size();
        for (const fb::SpecialToken *s : *sp) {
          if (!in_vocab(s->id()))
            invalid(what + ": special token id " + std::to_string(s->id()) + " is outside the vocabulary");
          if (s->content()->size() == 0) invalid(what + ": special token " + std::to_string(s->id()) + " is empty");
        }
      }
      if (t->vocab() && t->vocab()->size() > tok_vocab)
        invalid(what + ": vocabulary of " + std::to_string(t->vocab()->size()) + " tokens is larger than the model's " +
                std::to_string(tok_vocab));
      if (t->unk_id() != -1 && !in_vocab(t->unk_id()))
        invalid(what + ": unk_id " + std::to_string(t->unk_id()) + " is outside the vocabulary");
      if (const auto *langs = t->languages()) {
        std::set<std::string_view> codes;
        for (const fb::Language *l : *langs) {
          if (!printable(l->code(), 64))
            invalid(what + ": language code " + quoted(l->code()) + " is empty, longer than 64 bytes or not printable");
          if (!codes.insert(l->code()->string_view()).second)
            invalid(what + ": language code " + quoted(l->code()) + " is listed twice");
          if (!in_vocab(l->token_id()))
            invalid(what + ": language " + quoted(l->code()) + " token " + std::to_string(l->token_id()) +
                    " is outside the vocabulary");
        }
      }
      tokenizers_.push_back(TokenizerView{static_cast<parley_tokenizer_kind>(t->kind()),
                                          static_cast<parley_tokenizer_role>(t->role()), data_ + t->model()->offset(),
                                          t->model()->length(), specials, t});
    }
  }

  std::sort(regions.begin(), regions.end(), [](const Region &a, const Region &b) { return a.offset < b.offset; });
  for (size_t i = 1; i < regions.size(); ++i)
    if (regions[i - 1].offset + regions[i - 1].length > regions[i].offset)
      invalid(regions[i - 1].what + " overlaps " + regions[i].what);

  // ---- generation defaults
  if (const fb::GenerationConfig *g = header_->generation()) {
    // Generation ids are decoder (target) ids.
    auto token = [&](const char *field, int32_t id) {
      if (id != -1 && (id < 0 || static_cast<uint32_t>(id) >= target_vocab_size_))
        invalid(std::string("generation.") + field + " = " + std::to_string(id) + " is outside the vocabulary");
    };
    auto listed = [&](const char *field, int32_t id) {  // list entries have no "unset" value
      if (id < 0 || static_cast<uint32_t>(id) >= target_vocab_size_)
        invalid(std::string("generation.") + field + " entry " + std::to_string(id) + " is outside the vocabulary");
    };
    token("bos_token_id", g->bos_token_id());
    token("pad_token_id", g->pad_token_id());
    token("decoder_start_token_id", g->decoder_start_token_id());
    token("forced_bos_token_id", g->forced_bos_token_id());
    token("forced_eos_token_id", g->forced_eos_token_id());
    if (const auto *eos = g->eos_token_ids()) {
      if (eos->size() > 64) invalid("generation.eos_token_ids has more than 64 entries");
      for (int32_t id : *eos) listed("eos_token_ids", id);
    }
    if (const auto *sup = g->suppress_tokens())
      for (int32_t id : *sup) listed("suppress_tokens", id);
    if (const auto *sup = g->suppress_tokens())
      if (sup->size() > target_vocab_size_) invalid("generation.suppress_tokens has more entries than the vocabulary");
    if (g->num_beams() < 1 || g->num_beams() > 1024)
      invalid("generation.num_beams = " + std::to_string(g->num_beams()) + " is outside [1, 1024]");
    if (g->max_length() > 16777216)
      invalid("generation.max_length = " + std::to_string(g->max_length()) + " is outside [0, 16777216]");
    if (g->no_repeat_ngram_size() > 16777216)
      invalid("generation.no_repeat_ngram_size = " + std::to_string(g->no_repeat_ngram_size()) +
              " is outside [0, 16777216]");
    if (g->top_k() > 16777216)
      invalid("generation.top_k = " + std::to_string(g->top_k()) + " is outside [0, 16777216]");
    const std::pair<const char *, float> reals[] = {{"length_penalty", g->length_penalty()},
                                                    {"repetition_penalty", g->repetition_penalty()},
                                                    {"temperature", g->temperature()},
                                                    {"top_p", g->top_p()},
                                                    {"min_p", g->min_p()}};
    for (const auto &[field, f] : reals)
      if (!finite(f)) invalid(std::string("generation.") + field + " is not finite");
    if (g->top_p() < 0.f || g->top_p() > 1.f) invalid("generation.top_p must be in [0, 1]");
    if (g->min_p() < 0.f || g->min_p() > 1.f) invalid("generation.min_p must be in [0, 1]");
    if (g->temperature() < 0.f) invalid("generation.temperature must be >= 0");
    if (g->repetition_penalty() <= 0.f) invalid("generation.repetition_penalty must be > 0");
  }

  // ---- chat template and metadata
  // Strings the C API hands out NUL-terminated must not hold a NUL: a caller
  // would silently see only the part before it.
  auto no_nul = [&](const std::string &what, const flatbuffers::String *s) {
    size_t at = s->string_view().find('\0');
    if (at != std::string_view::npos)
      invalid(what + " contains a NUL byte at offset " + std::to_string(at) + ": " + quoted(s));
  };
  if (const fb::ChatTemplate *c = header_->chat_template()) {
    no_nul("chat_template.source", c->source());
    chat_template_ = c->source()->str();
    has_chat_template_ = true;
  }
  if (const fb::ChatFormat *c = header_->chat_format())
    if (static_cast<int>(c->system_placement()) > 2)
      invalid("chat_format.system_placement has unknown value " +
              std::to_string(static_cast<int>(c->system_placement())));
  if (const auto *md = header_->metadata()) {
    if (md->size() > 65536) invalid("more than 65,536 metadata entries");
    std::set<std::string> keys;
    for (const fb::KeyValue *kv : *md) {
      if (!printable(kv->key(), 256))
        invalid("metadata key " + quoted(kv->key()) + " is empty, longer than 256 bytes or not printable");
      if (!keys.insert(kv->key()->str()).second) invalid("duplicate metadata key " + quoted(kv->key()));
      no_nul("metadata " + quoted(kv->key()) + " value", kv->value());
      metadata_.emplace_back(kv->key()->str(), kv->value()->str());
    }
    std::sort(metadata_.begin(), metadata_.end());
  }
}

void ModelFile::collect_config() {
  const fb::ModelConfig *cfg = header_->config();
  auto add_i = [&](const std::string &k, int64_t v) { config_.push_back({k, false, v, static_cast<double>(v)}); };
  auto add_f = [&](const std::string &k, double v) { config_.push_back({k, true, 0, v}); };
  add_i("kind", static_cast<int64_t>(cfg->kind()));
  add_i("vocab_size", cfg->vocab_size());
  add_i("decoder_vocab_size", target_vocab_size_);  // == vocab_size unless format 1.3 separates them
  add_i("tie_word_embeddings", cfg->tie_word_embeddings());
  add_i("final_logits_bias", cfg->final_logits_bias());
  auto stack = [&](const std::string &p, const fb::StackConfig *s) {
    uint32_t head_dim = s->head_dim() ? s->head_dim() : s->hidden_size() / s->num_heads();
    add_i(p + "num_layers", s->num_layers());
    add_i(p + "hidden_size", s->hidden_size());
    add_i(p + "num_heads", s->num_heads());
    add_i(p + "num_kv_heads", s->num_kv_heads() ? s->num_kv_heads() : s->num_heads());
    add_i(p + "head_dim", head_dim);
    add_i(p + "ffn_size", s->ffn_size());
    add_i(p + "activation", static_cast<int64_t>(s->activation()));
    add_i(p + "gated_ffn", s->gated_ffn());
    add_i(p + "norm", static_cast<int64_t>(s->norm()));
    add_i(p + "norm_placement", static_cast<int64_t>(s->norm_placement()));
    add_f(p + "norm_epsilon", s->norm_epsilon());
    add_i(p + "qkv_bias", s->qkv_bias());
    add_i(p + "out_bias", s->out_bias());
    add_i(p + "ffn_bias", s->ffn_bias());
    add_i(p + "qk_norm", s->qk_norm());
    add_i(p + "embedding_norm", s->embedding_norm());
    add_i(p + "final_norm", s->final_norm());
    add_i(p + "position", static_cast<int64_t>(s->position()));
    add_i(p + "max_positions", s->max_positions());
    add_i(p + "position_offset", s->position_offset());
    add_f(p + "embedding_scale", s->embedding_scale());
    add_f(p + "rope_theta", s->rope_theta());
    add_i(p + "rope_dim", s->rope_dim() ? s->rope_dim() : head_dim);
    add_i(p + "rope_interleaved", s->rope_interleaved());
    add_i(p + "rope_scaling", static_cast<int64_t>(s->rope_scaling()));
    add_f(p + "rope_scaling_factor", s->rope_scaling_factor());
    add_f(p + "rope_low_freq_factor", s->rope_low_freq_factor());
    add_f(p + "rope_high_freq_factor", s->rope_high_freq_factor());
    add_i(p + "rope_original_max_positions", s->rope_original_max_positions());
    // format 1.3: layer_window.<i> for each layer with a sliding window
    if (const auto *w = s->layer_windows())
      for (flatbuffers::uoffset_t i = 0; i < w->size(); ++i)
        if (w->Get(i) > 0) add_i(p + "layer_window." + std::to_string(i), w->Get(i));
  };
  if (cfg->encoder()) stack("encoder.", cfg->encoder());
  stack("decoder.", cfg->decoder());
  if (const fb::GenerationConfig *g = header_->generation()) {
    add_i("generation.bos_token_id", g->bos_token_id());
    add_i("generation.pad_token_id", g->pad_token_id());
    add_i("generation.decoder_start_token_id", g->decoder_start_token_id());
    add_i("generation.forced_bos_token_id", g->forced_bos_token_id());
    add_i("generation.forced_eos_token_id", g->forced_eos_token_id());
    add_i("generation.num_eos_token_ids", g->eos_token_ids() ? g->eos_token_ids()->size() : 0);
    if (g->eos_token_ids())
      for (flatbuffers::uoffset_t i = 0; i < g->eos_token_ids()->size(); ++i)
        add_i("generation.eos_token_ids." + std::to_string(i), g->eos_token_ids()->Get(i));
    add_i("generation.max_length", g->max_length());
    add_i("generation.num_beams", g->num_beams());
    add_f("generation.length_penalty", g->length_penalty());
    add_i("generation.early_stopping", g->early_stopping());
    add_i("generation.no_repeat_ngram_size", g->no_repeat_ngram_size());
    add_f("generation.repetition_penalty", g->repetition_penalty());
    add_i("generation.do_sample", g->do_sample());
    add_f("generation.temperature", g->temperature());
    add_i("generation.top_k", g->top_k());
    add_f("generation.top_p", g->top_p());
    add_f("generation.min_p", g->min_p());
  }
}

const TensorView *ModelFile::find_tensor(const std::string &name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorView &t, const std::string &n) { return t.name < n; });
  return (it != tensors_.end() && it->name == name) ? &*it : nullptr;
}

const ConfigEntry *ModelFile::find_config(const std::string &key) const {
  for (const auto &e : config_)
    if (e.key == key) return &e;
  return nullptr;
}

int32_t ModelFile::decoder_start_token_id() const {
  for (const char *key : {"generation.decoder_start_token_id", "generation.bos_token_id"})
    if (const ConfigEntry *e = find_config(key); e && e->int_value >= 0) return static_cast<int32_t>(e->int_value);
  fail(PARLEY_ERROR_INVALID_MODEL,
       label_ +
           ": the model has neither decoder_start_token_id nor bos_token_id in its generation config; it cannot "
           "translate");
}

uint64_t ModelFile::weights_size() const {
  uint64_t total = 0;
  for (const auto &t : tensors_) total += t.length;
  return total;
}

void ModelFile::verify_tensor(const TensorView &t) const {
  uint64_t actual = XXH3_64bits(t.data, t.length);
  if (actual != t.checksum)
    bad(PARLEY_ERROR_CHECKSUM, "tensor " + quote_untrusted(t.name) + ": checksum mismatch (stored " +
                                   hex64(t.checksum) + ", computed " + hex64(actual) + "): the weights are damaged");
}

void ModelFile::verify_tokenizer(size_t index) const {
  const TokenizerView &t = tokenizers_.at(index);
  uint64_t stored = t.table->model()->checksum();
  uint64_t actual = XXH3_64bits(t.data, t.length);
  if (actual != stored)
    bad(PARLEY_ERROR_CHECKSUM, "tokenizer #" + std::to_string(index) + ": model blob checksum mismatch (stored " +
                                   hex64(stored) + ", computed " + hex64(actual) + "): the tokenizer is damaged");
}

void ModelFile::verify_checksums(ThreadPool *pool) const {
  struct Job {
    const ModelFile *self;
    std::atomic<int64_t> first_bad{-1};
  } job{this};
  auto body = [](void *user, int64_t begin, int64_t end) {
    auto *j = static_cast<Job *>(user);
    for (int64_t i = begin; i < end; ++i) {
      const TensorView &t = j->self->tensors_[static_cast<size_t>(i)];
      if (XXH3_64bits(t.data, t.length) != t.checksum) {
        int64_t expected = -1;
        // Keep the lowest index so the error is deterministic.
        while ((expected == -1 || i < expected) && !j->first_bad.compare_exchange_weak(expected, i)) {
        }
      }
    }
  };
  int64_t n = static_cast<int64_t>(tensors_.size());
  if (pool)
    pool->parallel_for(n, 1, body, &job);
  else
    body(&job, 0, n);
  if (job.first_bad.load() >= 0) verify_tensor(tensors_[static_cast<size_t>(job.first_bad.load())]);
  for (size_t i = 0; i < tokenizers_.size(); ++i) verify_tokenizer(i);
}

}  // namespace parley
