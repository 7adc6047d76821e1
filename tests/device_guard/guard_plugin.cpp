// libparley_devguard: a test device, "guarded", whose memory the host cannot
// touch. It proves without a GPU that the runtime treats device memory as a
// GPU runtime must: every access goes through the device's copy functions or
// a kernel, and kernels only ever get device pointers.
//
//  - Device memory is a memfd mapped twice: the addresses handed to the
//    runtime ("device addresses") are a PROT_NONE view, so any host read or
//    write of device memory is a SIGSEGV; the plugin reaches the bytes through
//    a second, private read-write view of the same pages.
//  - Kernels are the cpu plugin's (linked in statically), so results must be
//    bit-identical to the cpu device's. Before running one, every pointer
//    argument of the op must lie inside a live allocation (a host pointer,
//    the bug that crashes a CUDA host, is refused naming the field); the
//    pointers are then translated to the private view for the cpu kernel.
//  - Copies check their direction: the device side inside a live block with
//    the whole byte range, the host side outside the device range.
//  - A paged KV cache (ABI 1.3): the block table is device memory like
//    key_lengths, and every block it names for a key must lie inside the
//    k / v (and I8 scale) allocations, or the call is refused naming the
//    table entry (a GPU would read another tensor or fault).
//  - Fresh and released blocks are filled with 0xFF bytes (NaN as float, -1
//    as int32), so reading memory nobody wrote shows up in the results.
//  - 16-bit activations (parley_model_options.activation_dtype): the ops a
//    model runs are also registered for F16 and BF16. Each widens its 16-bit
//    activation arguments into F32 scratch, runs the cpu plugin's F32 kernel
//    and rounds its outputs to nearest even back into the 16-bit type: what
//    a GPU kernel that computes in F32 and stores F16 / BF16 does. Parameters (norm weights, biases,
//    rotary frequencies, embedding tables) and the KV cache (kv_dtype, read
//    natively by the cpu kernel) keep their own types.
//
// Only include/parley/plugin.h is included from Parley, as for any plugin.
#include <parley/plugin.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <vector>

extern "C" const parley_plugin_desc *parley_cpu_plugin_entry(uint32_t host_abi_version,
                                                             const parley_host_services *host);

namespace {

constexpr size_t kGrain = 256;  // allocation granularity (and alignment)

struct Guard {
  const parley_host_services *host = nullptr;
  std::mutex mu;
  char *base = nullptr;   // device addresses: PROT_NONE
  char *alias = nullptr;  // the same pages, read-write, for this plugin only
  size_t reserved = 0;
  size_t top = 0;                       // bytes handed out so far (high-water mark)
  std::map<size_t, size_t> live;        // offset -> size
  std::multimap<size_t, size_t> free_;  // size -> offset
  uint64_t kernel_calls = 0, copies = 0;

  // [p, p + bytes) inside one live block.
  bool in_block(const void *p, size_t bytes) {
    const char *c = static_cast<const char *>(p);
    if (c < base || c >= base + top) return false;
    size_t off = static_cast<size_t>(c - base);
    auto it = live.upper_bound(off);
    if (it == live.begin()) return false;
    --it;
    return off - it->first < it->second && off - it->first + bytes <= it->second;
  }
  bool in_range(const void *p, size_t bytes) {
    const char *c = static_cast<const char *>(p);
    return c + bytes > base && c < base + reserved;
  }
  template <class T>
  T *view(T *device_address) const {
    if (!device_address) return nullptr;
    return reinterpret_cast<T *>(alias + (reinterpret_cast<const char *>(device_address) - base));
  }
  void poison(size_t off, size_t size) { std::memset(alias + off, 0xFF, size); }
};

parley_kernel_status refuse(const parley_host_services *host, const std::string &msg) {
  if (host && host->set_error) host->set_error(host->host, ("guarded device: " + msg).c_str());
  return PARLEY_KERNEL_INVALID_ARGUMENT;
}

parley_kernel_status guard_init(const parley_host_services *host, void **state, char *error, size_t error_size) {
  size_t bytes = size_t(4) << 30;
  if (const char *env = std::getenv("PARLEY_DEVGUARD_BYTES")) bytes = std::strtoull(env, nullptr, 10);
  int fd = memfd_create("parley-devguard", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    std::snprintf(error, error_size, "cannot create a %zu-byte memfd", bytes);
    if (fd >= 0) close(fd);
    return PARLEY_KERNEL_OUT_OF_MEMORY;
  }
  void *p = mmap(nullptr, bytes, PROT_NONE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  void *a = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  close(fd);  // the mappings keep the pages
  auto *g = p == MAP_FAILED || a == MAP_FAILED ? nullptr : new (std::nothrow) Guard;
  if (!g) {
    if (p != MAP_FAILED) munmap(p, bytes);
    if (a != MAP_FAILED) munmap(a, bytes);
    std::snprintf(error, error_size, "cannot map %zu bytes twice", bytes);
    return PARLEY_KERNEL_OUT_OF_MEMORY;
  }
  g->host = host;
  g->alias = static_cast<char *>(a);
  g->base = static_cast<char *>(p);
  g->reserved = bytes;
  *state = g;
  return PARLEY_KERNEL_OK;
}

void guard_shutdown(void *state) {
  auto *g = static_cast<Guard *>(state);
  if (!g) return;
  // One line per runtime so a test log shows the device really ran the work.
  std::fprintf(stderr, "guarded device: %llu kernel calls, %llu copies, %zu bytes at most in use\n",
               static_cast<unsigned long long>(g->kernel_calls), static_cast<unsigned long long>(g->copies), g->top);
  munmap(g->base, g->reserved);
  munmap(g->alias, g->reserved);
  delete g;
}

parley_kernel_status guard_allocate(void *state, size_t bytes, size_t alignment, void **ptr) {
  auto *g = static_cast<Guard *>(state);
  if (!g || !ptr || alignment > kGrain || (alignment & (alignment - 1)) != 0) return PARLEY_KERNEL_INVALID_ARGUMENT;
  *ptr = nullptr;
  if (bytes > g->reserved) return PARLEY_KERNEL_OUT_OF_MEMORY;
  const size_t size = (bytes + kGrain - 1) / kGrain * kGrain + (bytes == 0 ? kGrain : 0);
  std::lock_guard<std::mutex> lock(g->mu);
  size_t off;
  auto it = g->free_.lower_bound(size);
  if (it != g->free_.end() && it->first <= 2 * size) {  // best fit, no splitting
    off = it->second;
    g->live[off] = it->first;
    g->free_.erase(it);
  } else {
    if (g->reserved - g->top < size) return PARLEY_KERNEL_OUT_OF_MEMORY;
    off = g->top;
    g->top += size;
    g->live[off] = size;
  }
  g->poison(off, g->live[off]);
  *ptr = g->base + off;
  return PARLEY_KERNEL_OK;
}

void guard_release(void *state, void *ptr) {
  auto *g = static_cast<Guard *>(state);
  if (!g || !ptr) return;
  std::lock_guard<std::mutex> lock(g->mu);
  const char *c = static_cast<const char *>(ptr);
  auto it = c >= g->base ? g->live.find(static_cast<size_t>(c - g->base)) : g->live.end();
  if (it == g->live.end()) {
    // Releasing a pointer this device never gave out: a runtime bug. There is
    // no status to return, so make it impossible to miss.
    std::fprintf(stderr, "guarded device: release of %p, which is not a live allocation\n", ptr);
    std::abort();
  }
  g->poison(it->first, it->second);
  g->free_.emplace(it->second, it->first);
  g->live.erase(it);
}

parley_kernel_status guard_copy(void *state, void *dst, const void *src, size_t bytes, int32_t kind, void *) {
  auto *g = static_cast<Guard *>(state);
  if (!g) return PARLEY_KERNEL_INVALID_ARGUMENT;
  if (bytes == 0) return PARLEY_KERNEL_OK;
  if (!dst || !src) return refuse(g->host, "copy with a NULL pointer");
  {
    std::lock_guard<std::mutex> lock(g->mu);
    const bool dst_dev = g->in_block(dst, bytes), src_dev = g->in_block(src, bytes);
    const bool dst_host = !g->in_range(dst, bytes), src_host = !g->in_range(src, bytes);
    bool ok = kind == PARLEY_COPY_HOST_TO_DEVICE     ? dst_dev && src_host
              : kind == PARLEY_COPY_DEVICE_TO_HOST   ? src_dev && dst_host
              : kind == PARLEY_COPY_DEVICE_TO_DEVICE ? dst_dev && src_dev
                                                     : false;
    if (!ok) {
      char msg[200];
      std::snprintf(msg, sizeof msg, "copy of kind %d with dst %s and src %s (%zu bytes)", kind,
                    dst_dev    ? "in device memory"
                    : dst_host ? "in host memory"
                               : "straddling a device block",
                    src_dev    ? "in device memory"
                    : src_host ? "in host memory"
                               : "straddling a device block",
                    bytes);
      return refuse(g->host, msg);
    }
    ++g->copies;
  }
  void *d = kind == PARLEY_COPY_DEVICE_TO_HOST ? dst : g->view(dst);
  const void *s = kind == PARLEY_COPY_HOST_TO_DEVICE ? src : g->view(src);
  std::memmove(d, s, bytes);
  return PARLEY_KERNEL_OK;
}

parley_kernel_status guard_synchronize(void *, void *) {
  return PARLEY_KERNEL_OK;
}

// ------------------------------------------------------------------ kernels

parley_kernel_fn g_cpu[PARLEY_OP_COUNT_] = {};

struct PtrField {
  const char *name;
  size_t offset;
};

#define PF(type, field)           \
  PtrField {                      \
#field, offsetof(type, field) \
  }

// The pointer fields of each op's argument struct (NULL is left to the kernel
// to judge: optional fields may be NULL, required ones are refused there).
template <int Op>
struct Fields;
template <>
struct Fields<PARLEY_OP_GEMM> {
  using T = parley_gemm_args;
  static constexpr PtrField list[] = {PF(T, a), PF(T, b), PF(T, c), PF(T, bias)};
};
template <>
struct Fields<PARLEY_OP_ATTENTION> {
  using T = parley_attention_args;
  static constexpr PtrField list[] = {PF(T, q), PF(T, k), PF(T, v), PF(T, out), PF(T, key_lengths), PF(T, probs),
                                      PF(T, lse), PF(T, k_new), PF(T, v_new),
                                      // ABI 1.2: the I8 cache's scales (the runtime passes the full struct)
                                      PF(T, k_scales), PF(T, v_scales),
                                      // ABI 1.3: a paged cache's block table (int32, uploaded like key_lengths)
                                      PF(T, block_table)};
};
struct NormFields {
  using T = parley_norm_args;
  static constexpr PtrField list[] = {PF(T, x),     PF(T, residual), PF(T, residual_out),
                                      PF(T, gamma), PF(T, beta),     PF(T, out)};
};
template <>
struct Fields<PARLEY_OP_LAYER_NORM> : NormFields {};
template <>
struct Fields<PARLEY_OP_RMS_NORM> : NormFields {};
template <>
struct Fields<PARLEY_OP_ROTARY> {
  using T = parley_rotary_args;
  static constexpr PtrField list[] = {PF(T, x), PF(T, positions), PF(T, inv_freq)};
};
template <>
struct Fields<PARLEY_OP_ACTIVATION> {
  using T = parley_activation_args;
  static constexpr PtrField list[] = {PF(T, x), PF(T, out)};
};
template <>
struct Fields<PARLEY_OP_GATED_ACTIVATION> {
  using T = parley_gated_activation_args;
  static constexpr PtrField list[] = {PF(T, gate), PF(T, up), PF(T, out)};
};
template <>
struct Fields<PARLEY_OP_EMBEDDING> {
  using T = parley_embedding_args;
  static constexpr PtrField list[] = {PF(T, ids), PF(T, table), PF(T, row_scales), PF(T, out)};
};
template <>
struct Fields<PARLEY_OP_ADD> {
  using T = parley_add_args;
  static constexpr PtrField list[] = {PF(T, a), PF(T, b), PF(T, out)};
};
struct SoftmaxFields {
  using T = parley_softmax_args;
  static constexpr PtrField list[] = {PF(T, x), PF(T, out)};
};
template <>
struct Fields<PARLEY_OP_SOFTMAX> : SoftmaxFields {};
template <>
struct Fields<PARLEY_OP_LOG_SOFTMAX> : SoftmaxFields {};
template <>
struct Fields<PARLEY_OP_TOPK> {
  using T = parley_topk_args;
  static constexpr PtrField list[] = {PF(T, x), PF(T, values), PF(T, indices)};
};

// Checks of an op's arguments beyond "every pointer is device memory", on
// the translated struct (device data read through the private view); an
// empty string passes.
template <int Op>
std::string deep_check(Guard *, const void *, const typename Fields<Op>::T &) {
  return {};
}

// A paged KV cache (ABI 1.3): the table's entries and every block it names
// for a key must lie inside their allocations (k, v and the I8 scales each
// one pool), as a GPU kernel would otherwise read another tensor or fault.
// Values the kernel refuses itself (a negative length or block index, a
// missing KEY_PADDING, block_size < 1) are left to it.
template <>
std::string deep_check<PARLEY_OP_ATTENTION>(Guard *g, const void *args, const parley_attention_args &a) {
  const auto &orig = *static_cast<const parley_attention_args *>(args);
  if (!a.block_table || !a.key_lengths || a.block_size < 1 || a.batch < 1 || a.block_table_stride < 0 ||
      a.num_kv_heads < 1 || a.head_dim < 1 || !(a.mask & PARLEY_MASK_KEY_PADDING))
    return {};
  if (!g->in_block(orig.key_lengths, size_t(a.batch) * sizeof(int32_t)))
    return "key_lengths (batch entries) runs past its allocation";
  const size_t es = a.kv_dtype == PARLEY_DTYPE_F16 || a.kv_dtype == PARLEY_DTYPE_BF16 ? 2
                    : a.kv_dtype == PARLEY_DTYPE_I8                                   ? 1
                                                                                      : 4;
  // Bytes from a block's first element to the end of its last row.
  auto span = [&](int64_t stride_head, int64_t stride_seq, int64_t width) {
    return (__int128(a.block_size - 1) * stride_seq + __int128(a.num_kv_heads - 1) * stride_head + width);
  };
  const bool i8 = a.kv_dtype == PARLEY_DTYPE_I8;
  struct Pool {
    const char *name;
    const void *base;  // NULL: not used by this call
    int64_t stride_block;
    __int128 span;  // elements
    size_t es;
  } pools[] = {{"k", orig.k, a.k_stride_batch, span(a.k_stride_head, a.k_stride_seq, a.head_dim), es},
               {"v", orig.v, a.v_stride_batch, span(a.v_stride_head, a.v_stride_seq, a.head_dim), es},
               {"k_scales", i8 ? orig.k_scales : nullptr, a.scale_stride_batch,
                span(a.scale_stride_head, a.scale_stride_seq, 1), 4},
               {"v_scales", i8 ? orig.v_scales : nullptr, a.scale_stride_batch,
                span(a.scale_stride_head, a.scale_stride_seq, 1), 4}};
  for (int64_t b = 0; b < a.batch; ++b) {
    const int64_t L = a.key_lengths[b];
    if (L <= 0) continue;
    const int64_t n = (L + a.block_size - 1) / a.block_size;
    if (!g->in_block(orig.block_table + b * a.block_table_stride, size_t(n) * sizeof(int32_t)))
      return "block_table: the " + std::to_string(n) + " entries of sequence " + std::to_string(b) +
             " run past its allocation";
    for (int64_t i = 0; i < n; ++i) {
      const int32_t blk = a.block_table[b * a.block_table_stride + i];
      if (blk < 0) continue;
      for (const Pool &p : pools) {
        if (!p.base) continue;
        const __int128 first = __int128(blk) * p.stride_block * __int128(p.es);
        const __int128 bytes = p.span * __int128(p.es);
        if (first > __int128(g->reserved) || bytes > __int128(g->reserved) ||
            !g->in_block(static_cast<const char *>(p.base) + size_t(first), size_t(bytes)))
          return "block_table[" + std::to_string(b * a.block_table_stride + i) + "] = " + std::to_string(blk) +
                 " (sequence " + std::to_string(b) + ") names a block outside the '" + p.name + "' allocation";
      }
    }
  }
  return {};
}

// ------------------------------------------------------- 16-bit activations

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (!mant) {
    bits = sign;
  } else {
    exp = 113;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Round to nearest even, overflow to infinity, NaN kept quiet.
uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504
  if (ax < 0x38800000u) {                                               // below 2^-14: a subnormal (or zero) half
    if (ax < 0x33000000u) return sign;                                  // below half of the smallest subnormal
    const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);  // nearest even at bit 13
  return static_cast<uint16_t>(sign | ((r - 0x38000000u) >> 13));
}

float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// F32 copies of an op's 16-bit activation arguments (private-view
// addresses; `bf16` picks the type). The same address always gets the same
// copy, so in-place ops (x == out) stay in place; outputs are rounded back by
// finish().
class Widened {
 public:
  explicit Widened(bool bf16) : bf16_(bf16) {}
  float *in(const void *p, int64_t count) { return get(p, count, false); }
  float *out(void *p, int64_t count) { return get(p, count, true); }
  void finish() {
    for (Entry &e : entries_)
      if (e.written)
        for (size_t i = 0; i < e.values.size(); ++i)
          e.at[i] = bf16_ ? f32_to_bf16(e.values[i]) : f32_to_f16(e.values[i]);
  }

 private:
  struct Entry {
    uint16_t *at;
    std::vector<float> values;
    bool written;
  };
  float *get(const void *p, int64_t count, bool written) {
    if (!p || count <= 0) return nullptr;
    auto *at = static_cast<uint16_t *>(const_cast<void *>(p));
    for (Entry &e : entries_)
      if (e.at == at) {
        e.written = e.written || written;
        widen(e, static_cast<size_t>(count));
        return e.values.data();
      }
    entries_.push_back({at, {}, written});
    widen(entries_.back(), static_cast<size_t>(count));
    return entries_.back().values.data();
  }
  void widen(Entry &e, size_t count) const {
    for (size_t i = e.values.size(); i < count; ++i)
      e.values.push_back(bf16_ ? bf16_to_f32(e.at[i]) : f16_to_f32(e.at[i]));
  }
  bool bf16_;
  std::deque<Entry> entries_;  // a deque keeps earlier copies where they are
};

// Elements a strided 4-D view spans: the last element's offset + 1.
int64_t span(int64_t n0, int64_t s0, int64_t n1, int64_t s1, int64_t n2, int64_t s2, int64_t inner) {
  if (n0 < 1 || n1 < 1 || n2 < 1 || inner < 1) return 0;
  return (n0 - 1) * s0 + (n1 - 1) * s1 + (n2 - 1) * s2 + inner;
}
int64_t rows_span(int64_t rows, int64_t ld, int64_t cols) {
  return span(1, 0, 1, 0, rows, ld, cols);
}

// Points an op's F16 activation fields (already in the private view) at F32
// copies in `w` and sets dtype F32; returns false for an op without an F16 form.
template <int Op>
bool widen_args(typename Fields<Op>::T &, Widened &) {
  return false;
}
template <>
bool widen_args<PARLEY_OP_LAYER_NORM>(parley_norm_args &a, Widened &w) {
  a.x = w.in(a.x, rows_span(a.rows, a.ld_x, a.cols));
  a.residual = w.in(a.residual, rows_span(a.rows, a.ld_residual, a.cols));
  a.residual_out = w.out(a.residual_out, rows_span(a.rows, a.ld_residual_out, a.cols));
  a.out = w.out(a.out, rows_span(a.rows, a.ld_out, a.cols));
  return true;
}
template <>
bool widen_args<PARLEY_OP_RMS_NORM>(parley_norm_args &a, Widened &w) {
  return widen_args<PARLEY_OP_LAYER_NORM>(a, w);
}
template <>
bool widen_args<PARLEY_OP_ROTARY>(parley_rotary_args &a, Widened &w) {
  a.x = w.out(a.x, span(a.batch, a.stride_batch, a.seq, a.stride_seq, a.heads, a.stride_head, a.head_dim));
  return true;
}
template <>
bool widen_args<PARLEY_OP_GATED_ACTIVATION>(parley_gated_activation_args &a, Widened &w) {
  a.gate = w.in(a.gate, rows_span(a.rows, a.ld_gate, a.cols));
  a.up = w.in(a.up, rows_span(a.rows, a.ld_up, a.cols));
  a.out = w.out(a.out, rows_span(a.rows, a.ld_out, a.cols));
  return true;
}
template <>
bool widen_args<PARLEY_OP_EMBEDDING>(parley_embedding_args &a, Widened &w) {
  a.out = w.out(a.out, rows_span(a.count, a.ld_out, a.dim));
  return true;
}
template <>
bool widen_args<PARLEY_OP_ADD>(parley_add_args &a, Widened &w) {
  a.a = w.in(a.a, a.n);
  a.b = w.in(a.b, a.n);
  a.out = w.out(a.out, a.n);
  return true;
}
// q, out, k_new and v_new are activations; k / v are read as kv_dtype.
template <>
bool widen_args<PARLEY_OP_ATTENTION>(parley_attention_args &a, Widened &w) {
  const int64_t hd = a.head_dim;
  a.q = w.in(a.q, span(a.batch, a.q_stride_batch, a.q_len, a.q_stride_seq, a.num_heads, a.q_stride_head, hd));
  a.k_new = w.in(a.k_new, span(a.batch, a.k_new_stride_batch, a.q_len, a.k_new_stride_seq, a.num_kv_heads,
                               a.k_new_stride_head, hd));
  a.v_new = w.in(a.v_new, span(a.batch, a.v_new_stride_batch, a.q_len, a.v_new_stride_seq, a.num_kv_heads,
                               a.v_new_stride_head, hd));
  a.out =
      w.out(a.out, span(a.batch, a.out_stride_batch, a.q_len, a.out_stride_seq, a.num_heads, a.out_stride_head, hd));
  return true;
}

template <int Op, int Act = PARLEY_DTYPE_F32>
parley_kernel_status guarded_kernel(const parley_kernel_context *ctx, const void *args) {
  using F = Fields<Op>;
  if (!ctx || !args) return PARLEY_KERNEL_INVALID_ARGUMENT;
  auto *g = static_cast<Guard *>(ctx->device_state);
  if (!g) return PARLEY_KERNEL_INVALID_ARGUMENT;
  if (*static_cast<const size_t *>(args) < sizeof(typename F::T)) return refuse(g->host, "argument struct too small");
  typename F::T a;  // the caller's arguments with device addresses turned into the private view
  std::memcpy(&a, args, sizeof a);
  a.struct_size = sizeof a;
  {
    std::lock_guard<std::mutex> lock(g->mu);
    for (const PtrField &f : F::list) {
      const void *p;
      std::memcpy(&p, static_cast<const char *>(args) + f.offset, sizeof p);
      if (p && !g->in_block(p, 1))
        return refuse(g->host, std::string("op ") + std::to_string(Op) + " argument '" + f.name +
                                   "' is not device memory of this device (a host pointer?)");
      p = g->view(p);
      std::memcpy(reinterpret_cast<char *>(&a) + f.offset, &p, sizeof p);
    }
    const std::string bad = deep_check<Op>(g, args, a);
    if (!bad.empty()) return refuse(g->host, "op " + std::to_string(Op) + ": " + bad);
    ++g->kernel_calls;
  }
  parley_kernel_context inner = *ctx;
  inner.device_state = nullptr;  // the cpu kernels' own device has no state
  if (Act == PARLEY_DTYPE_F32) return g_cpu[Op](&inner, &a);
  if (a.dtype != Act) return refuse(g->host, "op " + std::to_string(Op) + ": dtype is not the kernel's");
  Widened w(Act == PARLEY_DTYPE_BF16);
  if (!widen_args<Op>(a, w)) return PARLEY_KERNEL_UNSUPPORTED;
  a.dtype = PARLEY_DTYPE_F32;
  const parley_kernel_status st = g_cpu[Op](&inner, &a);
  if (st == PARLEY_KERNEL_OK) w.finish();
  return st;
}

// LINEAR (plugin ABI 1.2): prepare_weight copies the weight (and its scales)
// into device memory, as a GPU plugin must, and prepares the cpu kernel on
// the private view of that copy; calls check and translate x, bias,
// residual and out like every other op. One wrapper per weight dtype.
const parley_kernel_desc *g_cpu_linear[PARLEY_DTYPE_COUNT_] = {};

struct GuardedWeight {
  void *cpu_handle = nullptr;
  void *block = nullptr;  // device address of the weight's copy
};

template <int W>
parley_kernel_status guarded_prepare(const parley_kernel_context *ctx, const parley_weight_desc *d,
                                     parley_prepared_weight *out) {
  if (!ctx || !d || !out || d->struct_size < sizeof *d || d->n < 1 || d->k < 1 || d->ld_bytes < 1 || !d->data)
    return PARLEY_KERNEL_INVALID_ARGUMENT;
  auto *g = static_cast<Guard *>(ctx->device_state);
  if (!g) return PARLEY_KERNEL_INVALID_ARGUMENT;
  size_t scales = 0;
  if (d->quant == PARLEY_QUANT_PER_ROW) scales = size_t(d->n);
  if (d->quant == PARLEY_QUANT_GROUPWISE && d->group_size > 0) scales = size_t(d->n) * size_t(d->k / d->group_size);
  if (scales && !d->scales) return PARLEY_KERNEL_INVALID_ARGUMENT;
  const size_t data_bytes = size_t(d->n) * size_t(d->ld_bytes);
  const size_t scale_off = (data_bytes + kGrain - 1) / kGrain * kGrain;
  void *block = nullptr;
  if (parley_kernel_status st = guard_allocate(g, scale_off + scales * sizeof(float), kGrain, &block)) return st;
  if (guard_copy(g, block, d->data, data_bytes, PARLEY_COPY_HOST_TO_DEVICE, nullptr) != PARLEY_KERNEL_OK ||
      (scales && guard_copy(g, static_cast<char *>(block) + scale_off, d->scales, scales * sizeof(float),
                            PARLEY_COPY_HOST_TO_DEVICE, nullptr) != PARLEY_KERNEL_OK)) {
    guard_release(g, block);
    return PARLEY_KERNEL_DEVICE_ERROR;
  }
  parley_weight_desc inner_desc = *d;
  inner_desc.data = g->view(block);
  inner_desc.scales =
      scales ? reinterpret_cast<const float *>(g->view(static_cast<char *>(block) + scale_off)) : nullptr;
  parley_kernel_context inner = *ctx;
  inner.device_state = nullptr;
  parley_prepared_weight cpu_out{};
  cpu_out.struct_size = sizeof cpu_out;
  parley_kernel_status st = g_cpu_linear[W]->prepare_weight(&inner, &inner_desc, &cpu_out);
  auto *w = st == PARLEY_KERNEL_OK ? new (std::nothrow) GuardedWeight : nullptr;
  if (!w) {
    if (st == PARLEY_KERNEL_OK) g_cpu_linear[W]->release_weight(&inner, cpu_out.handle);
    guard_release(g, block);
    return st == PARLEY_KERNEL_OK ? PARLEY_KERNEL_OUT_OF_MEMORY : st;
  }
  w->cpu_handle = cpu_out.handle;
  w->block = block;
  out->handle = w;
  out->bytes = scale_off + scales * sizeof(float) + cpu_out.bytes;
  out->flags = 0;  // the host's copy is not used after this
  return PARLEY_KERNEL_OK;
}

template <int W>
void guarded_release_weight(const parley_kernel_context *ctx, void *handle) {
  auto *w = static_cast<GuardedWeight *>(handle);
  if (!w || !ctx) return;
  parley_kernel_context inner = *ctx;
  inner.device_state = nullptr;
  g_cpu_linear[W]->release_weight(&inner, w->cpu_handle);
  guard_release(ctx->device_state, w->block);
  delete w;
}

template <int W, int Act = PARLEY_DTYPE_F32>
parley_kernel_status guarded_linear(const parley_kernel_context *ctx, const void *args) {
  if (!ctx || !args) return PARLEY_KERNEL_INVALID_ARGUMENT;
  auto *g = static_cast<Guard *>(ctx->device_state);
  if (!g) return PARLEY_KERNEL_INVALID_ARGUMENT;
  const size_t given = *static_cast<const size_t *>(args);
  if (given < PARLEY_LINEAR_ARGS_SIZE_V1_2) return refuse(g->host, "argument struct too small");
  // Not registered with PARLEY_KERNEL_FLAG_LINEAR_STATS: the statistics stay NULL.
  parley_linear_args a{};
  std::memcpy(&a, args, std::min(given, PARLEY_LINEAR_ARGS_SIZE_V1_2));
  a.struct_size = sizeof a;
  const auto *w = static_cast<const GuardedWeight *>(a.weight);
  if (!w) return refuse(g->host, "linear without a prepared weight");
  {
    std::lock_guard<std::mutex> lock(g->mu);
    const PtrField fields[] = {PF(parley_linear_args, x), PF(parley_linear_args, bias),
                               PF(parley_linear_args, residual), PF(parley_linear_args, out)};
    for (const PtrField &f : fields) {
      const void *p;
      std::memcpy(&p, static_cast<const char *>(args) + f.offset, sizeof p);
      if (p && !g->in_block(p, 1))
        return refuse(g->host, std::string("linear argument '") + f.name +
                                   "' is not device memory of this device (a host pointer?)");
      p = g->view(p);
      std::memcpy(reinterpret_cast<char *>(&a) + f.offset, &p, sizeof p);
    }
    ++g->kernel_calls;
  }
  a.weight = w->cpu_handle;
  parley_kernel_context inner = *ctx;
  inner.device_state = nullptr;
  if (Act == PARLEY_DTYPE_F32) return g_cpu_linear[W]->run(&inner, &a);
  if (a.dtype != Act) return refuse(g->host, "linear: dtype is not the kernel's");
  Widened wide(Act == PARLEY_DTYPE_BF16);
  a.x = wide.in(a.x, rows_span(a.m, a.ld_x, a.k));
  a.residual = wide.in(a.residual, rows_span(a.m, a.ld_residual, a.n));
  a.out = wide.out(a.out, rows_span(a.m, a.ld_out, a.n));
  a.dtype = PARLEY_DTYPE_F32;
  const parley_kernel_status st = g_cpu_linear[W]->run(&inner, &a);
  if (st == PARLEY_KERNEL_OK) wide.finish();
  return st;
}

const parley_device_desc kDevices[] = {{sizeof(parley_device_desc), "guarded", PARLEY_DEVICE_OTHER, guard_init,
                                        guard_shutdown, guard_allocate, guard_release, guard_copy, guard_synchronize}};

#define GUARDED(op, name)                                                                                        \
  {                                                                                                              \
    sizeof(parley_kernel_desc), op, "guarded", PARLEY_DTYPE_F32, 0, name, guarded_kernel<op>, 0, 0, -1, nullptr, \
        nullptr                                                                                                  \
  }

#define GUARDED_LINEAR(w, name)                                                                                     \
  {                                                                                                                 \
    sizeof(parley_kernel_desc), PARLEY_OP_LINEAR, "guarded", PARLEY_DTYPE_F32, 0, name, guarded_linear<w>, 0, 0, w, \
        guarded_prepare<w>, guarded_release_weight<w>                                                               \
  }

#define GUARDED_16(op, act, name) \
  { sizeof(parley_kernel_desc), op, "guarded", act, 0, name, guarded_kernel<op, act>, 0, 0, -1, nullptr, nullptr }

#define GUARDED_LINEAR_16(w, act, name)                                                                     \
  {                                                                                                         \
    sizeof(parley_kernel_desc), PARLEY_OP_LINEAR, "guarded", act, 0, name, guarded_linear<w, act>, 0, 0, w, \
        guarded_prepare<w>, guarded_release_weight<w>                                                       \
  }

parley_kernel_desc kKernels[] = {
    // flags: the cpu kernel's, set at entry
    GUARDED(PARLEY_OP_GEMM, "guarded_gemm"),
    GUARDED(PARLEY_OP_ATTENTION, "guarded_attention"),
    GUARDED(PARLEY_OP_LAYER_NORM, "guarded_layer_norm"),
    GUARDED(PARLEY_OP_RMS_NORM, "guarded_rms_norm"),
    GUARDED(PARLEY_OP_ROTARY, "guarded_rotary"),
    GUARDED(PARLEY_OP_ACTIVATION, "guarded_activation"),
    GUARDED(PARLEY_OP_GATED_ACTIVATION, "guarded_gated_activation"),
    GUARDED(PARLEY_OP_EMBEDDING, "guarded_embedding"),
    GUARDED(PARLEY_OP_ADD, "guarded_add"),
    GUARDED(PARLEY_OP_SOFTMAX, "guarded_softmax"),
    GUARDED(PARLEY_OP_LOG_SOFTMAX, "guarded_log_softmax"),
    GUARDED(PARLEY_OP_TOPK, "guarded_topk"),
    GUARDED_LINEAR(PARLEY_DTYPE_F32, "guarded_linear_f32w"),
    GUARDED_LINEAR(PARLEY_DTYPE_F16, "guarded_linear_f16w"),
    GUARDED_LINEAR(PARLEY_DTYPE_BF16, "guarded_linear_bf16w"),
    GUARDED_LINEAR(PARLEY_DTYPE_I8, "guarded_linear_i8w"),
    GUARDED_LINEAR(PARLEY_DTYPE_I4, "guarded_linear_i4w"),
    // 16-bit activations: the ops a model runs (no GEMM fallback, softmax or top-k).
    GUARDED_16(PARLEY_OP_ATTENTION, PARLEY_DTYPE_F16, "guarded_attention_f16"),
    GUARDED_16(PARLEY_OP_LAYER_NORM, PARLEY_DTYPE_F16, "guarded_layer_norm_f16"),
    GUARDED_16(PARLEY_OP_RMS_NORM, PARLEY_DTYPE_F16, "guarded_rms_norm_f16"),
    GUARDED_16(PARLEY_OP_ROTARY, PARLEY_DTYPE_F16, "guarded_rotary_f16"),
    GUARDED_16(PARLEY_OP_GATED_ACTIVATION, PARLEY_DTYPE_F16, "guarded_gated_activation_f16"),
    GUARDED_16(PARLEY_OP_EMBEDDING, PARLEY_DTYPE_F16, "guarded_embedding_f16"),
    GUARDED_16(PARLEY_OP_ADD, PARLEY_DTYPE_F16, "guarded_add_f16"),
    GUARDED_LINEAR_16(PARLEY_DTYPE_F32, PARLEY_DTYPE_F16, "guarded_linear_f32w_f16"),
    GUARDED_LINEAR_16(PARLEY_DTYPE_F16, PARLEY_DTYPE_F16, "guarded_linear_f16w_f16"),
    GUARDED_LINEAR_16(PARLEY_DTYPE_BF16, PARLEY_DTYPE_F16, "guarded_linear_bf16w_f16"),
    GUARDED_LINEAR_16(PARLEY_DTYPE_I8, PARLEY_DTYPE_F16, "guarded_linear_i8w_f16"),
    GUARDED_LINEAR_16(PARLEY_DTYPE_I4, PARLEY_DTYPE_F16, "guarded_linear_i4w_f16"),
    GUARDED_16(PARLEY_OP_ATTENTION, PARLEY_DTYPE_BF16, "guarded_attention_bf16"),
    GUARDED_16(PARLEY_OP_LAYER_NORM, PARLEY_DTYPE_BF16, "guarded_layer_norm_bf16"),
    GUARDED_16(PARLEY_OP_RMS_NORM, PARLEY_DTYPE_BF16, "guarded_rms_norm_bf16"),
    GUARDED_16(PARLEY_OP_ROTARY, PARLEY_DTYPE_BF16, "guarded_rotary_bf16"),
    GUARDED_16(PARLEY_OP_GATED_ACTIVATION, PARLEY_DTYPE_BF16, "guarded_gated_activation_bf16"),
    GUARDED_16(PARLEY_OP_EMBEDDING, PARLEY_DTYPE_BF16, "guarded_embedding_bf16"),
    GUARDED_16(PARLEY_OP_ADD, PARLEY_DTYPE_BF16, "guarded_add_bf16"),
    GUARDED_LINEAR_16(PARLEY_DTYPE_F32, PARLEY_DTYPE_BF16, "guarded_linear_f32w_bf16"),
    GUARDED_LINEAR_16(PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16, "guarded_linear_f16w_bf16"),
    GUARDED_LINEAR_16(PARLEY_DTYPE_BF16, PARLEY_DTYPE_BF16, "guarded_linear_bf16w_bf16"),
    GUARDED_LINEAR_16(PARLEY_DTYPE_I8, PARLEY_DTYPE_BF16, "guarded_linear_i8w_bf16"),
    GUARDED_LINEAR_16(PARLEY_DTYPE_I4, PARLEY_DTYPE_BF16, "guarded_linear_i4w_bf16"),
};

const parley_plugin_desc kPlugin = {sizeof(parley_plugin_desc),
                                    PARLEY_PLUGIN_ABI_VERSION,
                                    "devguard",
                                    "1.0.0",
                                    kDevices,
                                    1,
                                    kKernels,
                                    sizeof(kKernels) / sizeof(kKernels[0])};

}  // namespace

extern "C" PARLEY_PLUGIN_EXPORT const parley_plugin_desc *parley_plugin_entry(uint32_t host_abi_version,
                                                                              const parley_host_services *host) {
  const parley_plugin_desc *cpu = parley_cpu_plugin_entry(host_abi_version, host);
  if (!cpu) return nullptr;
  for (size_t i = 0; i < cpu->num_kernels; ++i) {
    const parley_kernel_desc &k = cpu->kernels[i];
    if (k.op == PARLEY_OP_LINEAR) {
      if (k.dtype == PARLEY_DTYPE_F32 && k.weight_dtype >= 0 && k.weight_dtype < PARLEY_DTYPE_COUNT_)
        g_cpu_linear[k.weight_dtype] = &k;
    } else if (k.dtype == PARLEY_DTYPE_F32 && k.op >= 0 && k.op < PARLEY_OP_COUNT_) {
      g_cpu[k.op] = k.run;
      for (parley_kernel_desc &mine : kKernels)
        if (mine.op == k.op) mine.flags = k.flags;
    }
  }
  for (const parley_kernel_desc &k : kKernels)
    if (k.op == PARLEY_OP_LINEAR ? !g_cpu_linear[k.weight_dtype] : !g_cpu[k.op]) {
      if (host && host->log) host->log(host->host, PARLEY_LOG_ERROR, "devguard: the cpu plugin lacks an F32 kernel");
      return nullptr;
    }
  return &kPlugin;
}
