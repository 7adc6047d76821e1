// The "cuda" device: lazy bring-up (the CUDA runtime is linked statically and
// touches the driver only here), the stream-ordered caching allocator, copies
// with pinned staging, synchronisation.
#include <cstdio>

#include "cuda_common.h"

namespace parley::cuda {

const char *dtype_name(int64_t dtype) {
  switch (dtype) {
    case PARLEY_DTYPE_F32:
      return "F32";
    case PARLEY_DTYPE_F16:
      return "F16";
    case PARLEY_DTYPE_BF16:
      return "BF16";
    case PARLEY_DTYPE_I8:
      return "I8";
    case PARLEY_DTYPE_I32:
      return "I32";
    case PARLEY_DTYPE_U8:
      return "U8";
    case PARLEY_DTYPE_I64:
      return "I64";
    case PARLEY_DTYPE_I4:
      return "I4";
    default:
      return "unknown";
  }
}

parley_kernel_status Host::fail(parley_kernel_status status, const char *fmt, ...) const {
  if (h_ && h_->set_error) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    h_->set_error(h_->host, buf);
  }
  return status;
}

void Host::log(int level, const char *fmt, ...) const {
  if (h_ && h_->log) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    h_->log(h_->host, level, buf);
  }
}

parley_kernel_status cuda_fail(const Host &host, const char *op, const char *what, cudaError_t err) {
  const parley_kernel_status st =
      err == cudaErrorMemoryAllocation ? PARLEY_KERNEL_OUT_OF_MEMORY : PARLEY_KERNEL_DEVICE_ERROR;
  return host.fail(st, "%s: %s failed: %s (%s)", op, what, cudaGetErrorString(err), cudaGetErrorName(err));
}

parley_kernel_status check_launch(const Host &host, const char *op) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return PARLEY_KERNEL_OK;
  return cuda_fail(host, op, "kernel launch", err);
}

parley_kernel_status use_device(const char *op, const Host &host, const DeviceState *state) {
  const cudaError_t err = cudaSetDevice(state->device);
  if (err != cudaSuccess) return cuda_fail(host, op, "cudaSetDevice", err);
  return PARLEY_KERNEL_OK;
}

// ------------------------------------------------------------------ allocator

// Size classes: powers of two from 512 bytes to 64 MiB (at most 2x waste,
// few classes, so freed blocks are found again), then multiples of 2 MiB
// (large weights: little waste, exact-size reuse).
// Long-lived blocks (prepared weights) skip the powers of two above 2 MiB.
size_t Allocator::size_class(size_t bytes, bool long_lived) {
  constexpr size_t kMin = 512, kPow2Max = size_t{64} << 20, kLarge = size_t{2} << 20;
  if (bytes <= kMin) return kMin;
  if (bytes <= kPow2Max && !(long_lived && bytes > kLarge)) {
    size_t c = kMin;
    while (c < bytes) c <<= 1;
    return c;
  }
  if (bytes > SIZE_MAX - kLarge) return 0;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

void *Allocator::device_malloc(size_t bytes, cudaStream_t stream) {
  void *p = nullptr;
  const cudaError_t err = pools_ ? cudaMallocAsync(&p, bytes, stream) : cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error state of this thread
    return nullptr;
  }
  return p;
}

void Allocator::device_free(void *ptr, cudaStream_t stream) {
  if (pools_)
    (void)cudaFreeAsync(ptr, stream);
  else
    (void)cudaFree(ptr);
}

parley_kernel_status Allocator::allocate(cudaStream_t stream, size_t bytes, void **ptr, std::string *error,
                                         bool long_lived) {
  const size_t cls = size_class(bytes, long_lived);
  if (cls == 0) return PARLEY_KERNEL_OUT_OF_MEMORY;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = free_.find({stream, cls});
  if (it != free_.end() && !it->second.empty()) {
    *ptr = it->second.back();
    it->second.pop_back();
    stats_.bytes_cached -= cls;
    stats_.bytes_in_use += cls;
    stats_.cache_hits++;
    if (stats_.bytes_in_use > stats_.peak_in_use) stats_.peak_in_use = stats_.bytes_in_use;
    return PARLEY_KERNEL_OK;
  }
  void *p = device_malloc(cls, stream);
  if (p == nullptr && stats_.bytes_cached > 0) {
    // Out of memory with blocks cached: give them back and try once more.
    (void)cudaDeviceSynchronize();
    for (auto &entry : free_)
      for (void *q : entry.second) {
        device_free(q, entry.first.first);
        blocks_.erase(q);
      }
    free_.clear();
    stats_.bytes_cached = 0;
    if (pools_) (void)cudaStreamSynchronize(stream);
    p = device_malloc(cls, stream);
  }
  if (p == nullptr) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "cuda: out of device memory allocating %zu bytes (%zu in use)", bytes,
                  stats_.bytes_in_use);
    *error = buf;
    return PARLEY_KERNEL_OUT_OF_MEMORY;
  }
  blocks_[p] = Block{cls, stream};
  stats_.device_allocations++;
  stats_.bytes_in_use += cls;
  if (stats_.bytes_in_use > stats_.peak_in_use) stats_.peak_in_use = stats_.bytes_in_use;
  if (stats_.bytes_in_use + stats_.bytes_cached > stats_.peak_reserved)
    stats_.peak_reserved = stats_.bytes_in_use + stats_.bytes_cached;
  *ptr = p;
  return PARLEY_KERNEL_OK;
}

bool Allocator::release(void *ptr) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = blocks_.find(ptr);
  if (it == blocks_.end()) return false;
  free_[{it->second.stream, it->second.size}].push_back(ptr);
  stats_.bytes_in_use -= it->second.size;
  stats_.bytes_cached += it->second.size;
  stats_.releases++;
  return true;
}

void Allocator::trim() {
  std::lock_guard<std::mutex> lock(mutex_);
  (void)cudaDeviceSynchronize();
  for (auto &entry : free_)
    for (void *q : entry.second) {
      device_free(q, entry.first.first);
      blocks_.erase(q);
    }
  free_.clear();
  stats_.bytes_cached = 0;
}

void Allocator::free_all() {
  std::lock_guard<std::mutex> lock(mutex_);
  (void)cudaDeviceSynchronize();
  for (auto &b : blocks_) device_free(b.first, b.second.stream);
  blocks_.clear();
  free_.clear();
  stats_.bytes_cached = 0;
  stats_.bytes_in_use = 0;
  (void)cudaDeviceSynchronize();
}

AllocatorStats Allocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

// ------------------------------------------------------------- device functions

namespace {

void write_error(char *error, size_t error_size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void write_error(char *error, size_t error_size, const char *fmt, ...) {
  if (error == nullptr || error_size == 0) return;
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(error, error_size, fmt, ap);
  va_end(ap);
}

}  // namespace

parley_kernel_status device_init(const parley_host_services *host, void **state_out, char *error, size_t error_size) {
  if (state_out == nullptr) return PARLEY_KERNEL_INVALID_ARGUMENT;
  *state_out = nullptr;
  try {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err == cudaErrorInsufficientDriver) {
      write_error(error, error_size, "CUDA driver not found or too old (cudaErrorInsufficientDriver): %s",
                  cudaGetErrorString(err));
      return PARLEY_KERNEL_DEVICE_ERROR;
    }
    if (err == cudaErrorNoDevice || (err == cudaSuccess && count == 0)) {
      write_error(error, error_size, "no CUDA device (%s)",
                  err == cudaSuccess ? "cudaGetDeviceCount returned 0" : cudaGetErrorName(err));
      return PARLEY_KERNEL_DEVICE_ERROR;
    }
    if (err != cudaSuccess) {
      write_error(error, error_size, "CUDA initialisation failed (%s): %s", cudaGetErrorName(err),
                  cudaGetErrorString(err));
      return PARLEY_KERNEL_DEVICE_ERROR;
    }
    // Device 0 of the visible ones (CUDA_VISIBLE_DEVICES chooses).
    const int dev = 0;
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, dev);
    if (err != cudaSuccess) {
      write_error(error, error_size, "cudaGetDeviceProperties failed (%s): %s", cudaGetErrorName(err),
                  cudaGetErrorString(err));
      return PARLEY_KERNEL_DEVICE_ERROR;
    }
    if (prop.major < 8) {
      write_error(error, error_size,
                  "CUDA device 0 (%s) has compute capability %d.%d; the cuda plugin needs 8.0 or newer", prop.name,
                  prop.major, prop.minor);
      return PARLEY_KERNEL_DEVICE_ERROR;
    }
    if ((err = cudaSetDevice(dev)) != cudaSuccess) {
      write_error(error, error_size, "cudaSetDevice(0) failed (%s): %s", cudaGetErrorName(err),
                  cudaGetErrorString(err));
      return PARLEY_KERNEL_DEVICE_ERROR;
    }
    auto *state = new DeviceState();
    state->host = host;
    state->device = dev;
    int pools = 0;
    (void)cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, dev);
    state->allocator.set_pools(pools != 0);
    if ((err = cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking)) != cudaSuccess) {
      write_error(error, error_size, "cudaStreamCreate failed (%s): %s", cudaGetErrorName(err),
                  cudaGetErrorString(err));
      delete state;
      return PARLEY_KERNEL_DEVICE_ERROR;
    }
    Host(host).log(PARLEY_LOG_INFO, "cuda: device 0: %s, compute capability %d.%d, %zu MiB, %s allocator", prop.name,
                   prop.major, prop.minor, prop.totalGlobalMem >> 20, pools ? "cudaMallocAsync" : "cudaMalloc");
    *state_out = state;
    return PARLEY_KERNEL_OK;
  } catch (const std::bad_alloc &) {
    write_error(error, error_size, "out of host memory");
    return PARLEY_KERNEL_OUT_OF_MEMORY;
  } catch (...) {
    write_error(error, error_size, "internal error");
    return PARLEY_KERNEL_DEVICE_ERROR;
  }
}

void device_shutdown(void *raw) {
  auto *state = static_cast<DeviceState *>(raw);
  if (state == nullptr) return;
  (void)cudaSetDevice(state->device);
  (void)cudaDeviceSynchronize();
  const AllocatorStats s = state->allocator.stats();
  // The statistics reach the host as this log line (the plugin ABI has no
  // statistics query yet).
  Host(state->host)
      .log(PARLEY_LOG_INFO,
           "cuda allocator: %zu bytes in use at shutdown, %zu cached, peak in use %zu, peak reserved %zu, "
           "%llu device allocations, %llu cache hits, %llu releases",
           s.bytes_in_use, s.bytes_cached, s.peak_in_use, s.peak_reserved,
           static_cast<unsigned long long>(s.device_allocations), static_cast<unsigned long long>(s.cache_hits),
           static_cast<unsigned long long>(s.releases));
  cublaslt_destroy(state);
  for (int i = 0; i < 2; ++i) {
    if (state->staging[i]) (void)cudaFreeHost(state->staging[i]);
    if (state->staging_done[i]) (void)cudaEventDestroy(state->staging_done[i]);
  }
  state->allocator.free_all();
  (void)cudaStreamDestroy(state->stream);
  delete state;
}

parley_kernel_status device_allocate(void *raw, size_t bytes, size_t alignment, void **ptr) {
  if (raw == nullptr || ptr == nullptr) return PARLEY_KERNEL_INVALID_ARGUMENT;
  *ptr = nullptr;
  auto *state = static_cast<DeviceState *>(raw);
  Host host(state->host);
  // Device allocations are 256-byte aligned; larger alignments are not offered.
  if (alignment != 0 && ((alignment & (alignment - 1)) != 0 || alignment > 256))
    return host.fail(PARLEY_KERNEL_INVALID_ARGUMENT, "cuda allocate: alignment %zu is not a power of two <= 256",
                     alignment);
  try {
    if (auto st = use_device("cuda allocate", host, state)) return st;
    std::string error;
    // The ABI's allocate has no stream: blocks belong to the device's stream.
    parley_kernel_status st = state->allocator.allocate(state->stream, bytes, ptr, &error);
    if (st != PARLEY_KERNEL_OK) return host.fail(st, "%s", error.c_str());
    return PARLEY_KERNEL_OK;
  } catch (const std::bad_alloc &) {
    return PARLEY_KERNEL_OUT_OF_MEMORY;
  }
}

void device_release(void *raw, void *ptr) {
  if (raw == nullptr || ptr == nullptr) return;
  auto *state = static_cast<DeviceState *>(raw);
  try {
    if (!state->allocator.release(ptr))
      Host(state->host).log(PARLEY_LOG_ERROR, "cuda release: %p was not allocated by the cuda device", ptr);
  } catch (...) {
  }
}

namespace {

parley_kernel_status staged_host_to_device(DeviceState *state, const Host &host, char *dst, const char *src,
                                           size_t bytes, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(state->staging_mutex);
  cudaError_t err;
  if (state->staging[0] == nullptr) {
    for (int i = 0; i < 2; ++i) {
      if ((err = cudaHostAlloc(&state->staging[i], kStagingChunkBytes, cudaHostAllocDefault)) != cudaSuccess)
        return cuda_fail(host, "cuda copy", "cudaHostAlloc (staging)", err);
      if ((err = cudaEventCreateWithFlags(&state->staging_done[i], cudaEventDisableTiming)) != cudaSuccess)
        return cuda_fail(host, "cuda copy", "cudaEventCreate", err);
    }
    state->staging_bytes = kStagingChunkBytes;
  }
  // Chunk i goes through buffer i % 2: fill it on the host once its previous
  // transfer is done (event), then enqueue the transfer. The source is fully
  // read when this returns, so the caller may free it; the transfers complete
  // in stream order.
  size_t done = 0;
  for (int i = 0; done < bytes; i ^= 1) {
    const size_t n = bytes - done < state->staging_bytes ? bytes - done : state->staging_bytes;
    if ((err = cudaEventSynchronize(state->staging_done[i])) != cudaSuccess)
      return cuda_fail(host, "cuda copy", "cudaEventSynchronize", err);
    std::memcpy(state->staging[i], src + done, n);
    if ((err = cudaMemcpyAsync(dst + done, state->staging[i], n, cudaMemcpyHostToDevice, stream)) != cudaSuccess)
      return cuda_fail(host, "cuda copy", "cudaMemcpyAsync", err);
    if ((err = cudaEventRecord(state->staging_done[i], stream)) != cudaSuccess)
      return cuda_fail(host, "cuda copy", "cudaEventRecord", err);
    done += n;
  }
  return PARLEY_KERNEL_OK;
}

}  // namespace

parley_kernel_status device_copy(void *raw, void *dst, const void *src, size_t bytes, int32_t kind, void *stream_raw) {
  if (raw == nullptr) return PARLEY_KERNEL_INVALID_ARGUMENT;
  auto *state = static_cast<DeviceState *>(raw);
  Host host(state->host);
  const int64_t k = enum_value(kind);
  if (k < PARLEY_COPY_HOST_TO_DEVICE || k > PARLEY_COPY_DEVICE_TO_DEVICE)
    return host.fail(PARLEY_KERNEL_INVALID_ARGUMENT, "cuda copy: unknown copy kind %lld", ll(k));
  if (bytes == 0) return PARLEY_KERNEL_OK;
  if (dst == nullptr || src == nullptr) return host.fail(PARLEY_KERNEL_INVALID_ARGUMENT, "cuda copy: NULL pointer");
  try {
    if (auto st = use_device("cuda copy", host, state)) return st;
    cudaStream_t stream = stream_raw ? static_cast<cudaStream_t>(stream_raw) : state->stream;
    cudaError_t err;
    switch (k) {
      case PARLEY_COPY_HOST_TO_DEVICE:
        return staged_host_to_device(state, host, static_cast<char *>(dst), static_cast<const char *>(src), bytes,
                                     stream);
      case PARLEY_COPY_DEVICE_TO_HOST:
        // Synchronous: the host reads dst as soon as this returns.
        if ((err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream)) != cudaSuccess)
          return cuda_fail(host, "cuda copy", "cudaMemcpyAsync (device to host)", err);
        if ((err = cudaStreamSynchronize(stream)) != cudaSuccess)
          return cuda_fail(host, "cuda copy", "cudaStreamSynchronize", err);
        return PARLEY_KERNEL_OK;
      default:
        if ((err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream)) != cudaSuccess)
          return cuda_fail(host, "cuda copy", "cudaMemcpyAsync (device to device)", err);
        return PARLEY_KERNEL_OK;
    }
  } catch (const std::bad_alloc &) {
    return PARLEY_KERNEL_OUT_OF_MEMORY;
  }
}

parley_kernel_status device_synchronize(void *raw, void *stream_raw) {
  if (raw == nullptr) return PARLEY_KERNEL_INVALID_ARGUMENT;
  auto *state = static_cast<DeviceState *>(raw);
  Host host(state->host);
  if (auto st = use_device("cuda synchronize", host, state)) return st;
  cudaStream_t stream = stream_raw ? static_cast<cudaStream_t>(stream_raw) : state->stream;
  const cudaError_t err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return cuda_fail(host, "cuda synchronize", "cudaStreamSynchronize", err);
  return PARLEY_KERNEL_OK;
}

}  // namespace parley::cuda
