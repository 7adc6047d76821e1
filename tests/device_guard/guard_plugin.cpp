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
#include <map>
#include <mutex>
#include <new>
#include <string>

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
  const size_t es = a.kv_dtype == PARLEY_DTYPE_F16 ? 2 : a.kv_dtype == PARLEY_DTYPE_I8 ? 1 : 4;
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

template <int Op>
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
  return g_cpu[Op](&inner, &a);
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

template <int W>
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
  return g_cpu_linear[W]->run(&inner, &a);
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
