// Shared declarations of the cuda plugin: the device state, argument checking
// and error reporting through the host (as in the cpu plugin), and the launch
// functions of kernels.cu. Host code only (no __global__ here).
#ifndef PARLEY_PLUGINS_CUDA_COMMON_H
#define PARLEY_PLUGINS_CUDA_COMMON_H

#include <cuda_runtime_api.h>
#include <parley/plugin.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "rowwise/rowwise_params.h"

namespace parley::cuda {

template <typename E>
inline int64_t enum_value(const E &e) {
  static_assert(sizeof(E) == 4);
  int32_t v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

inline long long ll(int64_t v) {
  return static_cast<long long>(v);
}

const char *dtype_name(int64_t dtype);

// ---- the stream-ordered caching allocator (device.cpp) ----
struct AllocatorStats {
  size_t bytes_in_use = 0;          // handed out and not released (size-class rounded)
  size_t bytes_cached = 0;          // released, kept in free lists for reuse
  size_t peak_in_use = 0;           // max of bytes_in_use
  size_t peak_reserved = 0;         // max of in_use + cached (what the GPU holds)
  uint64_t device_allocations = 0;  // cudaMalloc(Async) calls that succeeded
  uint64_t cache_hits = 0;          // allocations served from a free list
  uint64_t releases = 0;
};

class Allocator {
 public:
  // A block is reused only on the stream it was allocated for, so that reuse
  // is ordered after every earlier use of the block on that stream without a
  // host synchronisation.
  // long_lived (prepared weights): above 2 MiB the block is rounded to a
  // multiple of 2 MiB instead of a power of two (a 40 MiB weight holds 40,
  // not 64 MiB); such blocks are rarely freed, so reuse matters less.
  parley_kernel_status allocate(cudaStream_t stream, size_t bytes, void **ptr, std::string *error,
                                bool long_lived = false);
  bool release(void *ptr);  // false: not a pointer of this allocator
  void trim();              // frees every cached block (device synchronised)
  AllocatorStats stats() const;
  void set_pools(bool pools) { pools_ = pools; }
  void free_all();  // at shutdown

  static size_t size_class(size_t bytes, bool long_lived = false);

 private:
  struct Block {
    size_t size;
    cudaStream_t stream;
  };
  void *device_malloc(size_t bytes, cudaStream_t stream);
  void device_free(void *ptr, cudaStream_t stream);
  mutable std::mutex mutex_;
  bool pools_ = false;
  std::map<std::pair<cudaStream_t, size_t>, std::vector<void *>> free_;
  std::unordered_map<void *, Block> blocks_;  // every live or cached block
  AllocatorStats stats_;
};

// ---- cuBLASLt, loaded with dlopen (cublaslt_loader.cpp) ----
struct CublasLt;
// Loads the library and creates a handle once per device; returns NULL and
// sets *error when the library or a symbol is missing.
const CublasLt *cublaslt_get(struct DeviceState *state, std::string *error);
void cublaslt_destroy(struct DeviceState *state);
void gemm_cache_destroy(struct DeviceState *state);

struct GemmAlgoCache;  // gemm.cpp

struct DeviceState {
  const parley_host_services *host = nullptr;
  int device = 0;
  cudaStream_t stream = nullptr;  // the device's own stream (non-blocking)
  Allocator allocator;

  // Pinned staging for host->device copies (weights come from mmap'ed,
  // pageable memory): two buffers used alternately, each guarded by an event.
  std::mutex staging_mutex;
  void *staging[2] = {nullptr, nullptr};
  cudaEvent_t staging_done[2] = {nullptr, nullptr};
  size_t staging_bytes = 0;

  // cuBLASLt (loaded on the first GEMM), its workspace per stream and the
  // per-shape algorithm cache.
  std::once_flag lt_once;
  CublasLt *lt = nullptr;
  std::string lt_error;
  std::mutex workspace_mutex;
  std::map<cudaStream_t, void *> workspaces;
  GemmAlgoCache *algo_cache = nullptr;
};

constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;
constexpr size_t kStagingChunkBytes = size_t{8} << 20;

// ---- kernel call helpers ----
class Host {
 public:
  explicit Host(const parley_host_services *h) : h_(h) {}
  parley_kernel_status fail(parley_kernel_status status, const char *fmt, ...) const
      __attribute__((format(printf, 3, 4)));
  void log(int level, const char *fmt, ...) const __attribute__((format(printf, 3, 4)));

 private:
  const parley_host_services *h_;
};

// Validates the context (with a device state) and the argument header (NULL,
// struct_size, dtype among `dtypes`). Sets *state, *stream, *args_out.
template <typename Args>
parley_kernel_status begin_call(const char *op, const parley_kernel_context *ctx, const void *args, Host *host,
                                DeviceState **state, cudaStream_t *stream, const Args **args_out,
                                uint32_t dtype_mask = 1u << PARLEY_DTYPE_F32, size_t min_size = sizeof(Args)) {
  if (ctx == nullptr) return PARLEY_KERNEL_INVALID_ARGUMENT;
  if (ctx->struct_size < sizeof(parley_kernel_context)) return PARLEY_KERNEL_INVALID_ARGUMENT;
  *host = Host(ctx->host);
  if (ctx->device_state == nullptr)
    return host->fail(PARLEY_KERNEL_DEVICE_ERROR, "%s: no cuda device state (the device was not initialised)", op);
  if (args == nullptr) return host->fail(PARLEY_KERNEL_INVALID_ARGUMENT, "%s: args is NULL", op);
  const Args *a = static_cast<const Args *>(args);
  if (a->struct_size < min_size)  // fields appended after min_size are read only when present
    return host->fail(PARLEY_KERNEL_INVALID_ARGUMENT, "%s: struct_size (%zu) < %zu", op, a->struct_size, min_size);
  const int64_t dt = enum_value(a->dtype);
  if (dt < 0 || dt >= PARLEY_DTYPE_COUNT_)
    return host->fail(PARLEY_KERNEL_INVALID_ARGUMENT, "%s: unknown dtype %lld", op, ll(dt));
  if (((dtype_mask >> dt) & 1u) == 0)
    return host->fail(PARLEY_KERNEL_UNSUPPORTED, "%s: dtype %s is not supported by the cuda plugin", op,
                      dtype_name(dt));
  *state = static_cast<DeviceState *>(ctx->device_state);
  *stream = ctx->stream ? static_cast<cudaStream_t>(ctx->stream) : (*state)->stream;
  *args_out = a;
  return PARLEY_KERNEL_OK;
}

// Makes the state's device current on the calling thread.
parley_kernel_status use_device(const char *op, const Host &host, const DeviceState *state);
// Reports a failed CUDA call (or a failed launch: cudaGetLastError).
parley_kernel_status cuda_fail(const Host &host, const char *op, const char *what, cudaError_t err);
parley_kernel_status check_launch(const Host &host, const char *op);

template <typename Fn>
parley_kernel_status guarded(const char *op, const parley_kernel_context *ctx, Fn &&fn) {
  try {
    return fn();
  } catch (const std::bad_alloc &) {
    if (ctx && ctx->host) Host(ctx->host).fail(PARLEY_KERNEL_OUT_OF_MEMORY, "%s: out of host memory", op);
    return PARLEY_KERNEL_OUT_OF_MEMORY;
  } catch (...) {
    if (ctx && ctx->host) Host(ctx->host).fail(PARLEY_KERNEL_DEVICE_ERROR, "%s: internal error", op);
    return PARLEY_KERNEL_DEVICE_ERROR;
  }
}

#define PARLEY_CHECK(host, cond, ...)                                             \
  do {                                                                            \
    if (!(cond)) return (host).fail(PARLEY_KERNEL_INVALID_ARGUMENT, __VA_ARGS__); \
  } while (0)

inline bool valid_activation(int64_t act) {
  return act >= 0 && act < PARLEY_ACT_COUNT_;
}

// ---- launchers (kernels.cu); they only enqueue, errors via cudaGetLastError ----
void launch_activation(int act, int dtype, int64_t rows, int64_t cols, const void *x, int64_t ld_x, void *out,
                       int64_t ld_out, cudaStream_t s);
// The model's row- and element-wise ops for `dtype` F32 or F16 activations
// (rowwise/rowwise_body.cuh); p.grid is set by the launcher.
void launch_gated_activation(int dtype, row::GatedParams p, cudaStream_t s);
void launch_norm(int dtype, row::NormParams p, cudaStream_t s);
void launch_rotary(int dtype, row::RotaryParams p, cudaStream_t s);
// Writes 1 to *p.bad_id (device memory) if an id is out of range.
void launch_embedding(int dtype, row::EmbeddingParams p, cudaStream_t s);
void launch_add(int dtype, row::AddParams p, cudaStream_t s);
void launch_softmax(bool log, int64_t rows, int64_t cols, const float *x, int64_t ld_x, float *out, int64_t ld_out,
                    cudaStream_t s);
void launch_topk(int64_t rows, int64_t cols, int64_t k, const float *x, int64_t ld_x, float *values, int32_t *indices,
                 cudaStream_t s);
constexpr int64_t kTopkMaxK = 256;

// ---- kernel entry points ----
parley_kernel_status gemm_run(const parley_kernel_context *ctx, const void *args);
// Norms, rotary, gated activation, embedding and add serve F32 and F16
// activations (registered once per dtype; args->dtype says which).
parley_kernel_status layer_norm_run(const parley_kernel_context *ctx, const void *args);
parley_kernel_status rms_norm_run(const parley_kernel_context *ctx, const void *args);
parley_kernel_status rotary_run(const parley_kernel_context *ctx, const void *args);
parley_kernel_status activation_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status gated_activation_run(const parley_kernel_context *ctx, const void *args);
parley_kernel_status embedding_run(const parley_kernel_context *ctx, const void *args);
parley_kernel_status add_run(const parley_kernel_context *ctx, const void *args);
parley_kernel_status softmax_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status log_softmax_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status topk_f32(const parley_kernel_context *ctx, const void *args);
parley_kernel_status attention_run(const parley_kernel_context *ctx, const void *args);  // attention_op.cpp
// LINEAR (plugin ABI 1.2, linear_op.cpp): one prepare_weight per weight dtype, one run for all.
parley_kernel_status linear_run(const parley_kernel_context *ctx, const void *args);
parley_kernel_status linear_prepare_f32(const parley_kernel_context *ctx, const parley_weight_desc *d,
                                        parley_prepared_weight *out);
parley_kernel_status linear_prepare_f16(const parley_kernel_context *ctx, const parley_weight_desc *d,
                                        parley_prepared_weight *out);
parley_kernel_status linear_prepare_bf16(const parley_kernel_context *ctx, const parley_weight_desc *d,
                                         parley_prepared_weight *out);
parley_kernel_status linear_prepare_i8(const parley_kernel_context *ctx, const parley_weight_desc *d,
                                       parley_prepared_weight *out);
parley_kernel_status linear_prepare_i4(const parley_kernel_context *ctx, const parley_weight_desc *d,
                                       parley_prepared_weight *out);
void linear_release(const parley_kernel_context *ctx, void *handle);

// Device functions of the descriptor (device.cpp).
parley_kernel_status device_init(const parley_host_services *host, void **state, char *error, size_t error_size);
void device_shutdown(void *state);
parley_kernel_status device_allocate(void *state, size_t bytes, size_t alignment, void **ptr);
void device_release(void *state, void *ptr);
parley_kernel_status device_copy(void *state, void *dst, const void *src, size_t bytes, int32_t kind, void *stream);
parley_kernel_status device_synchronize(void *state, void *stream);

}  // namespace parley::cuda

#endif
