// Shared helpers of the cpu plugin: argument checking, error reporting through
// the host, a parallel_for wrapper that never lets an exception cross the C
// boundary, and the element-wise activation functions.
#ifndef PARLEY_PLUGINS_CPU_COMMON_H
#define PARLEY_PLUGINS_CPU_COMMON_H

#include <parley/plugin.h>

#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>

// Hot loops are compiled for the baseline and for AVX2+FMA / AVX-512 and
// chosen at load time (GCC function multi-versioning through ifunc).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define PARLEY_CPU_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PARLEY_CPU_MULTIVERSION
#endif

namespace parley::cpu {

// Reads an enum field as its integer value without loading an out-of-range
// enum (which UBSan reports): callers may pass any bit pattern.
template <typename E>
inline int64_t enum_value(const E &e) {
  static_assert(sizeof(E) <= sizeof(int64_t));
  if constexpr (sizeof(E) == 4) {
    int32_t v;
    std::memcpy(&v, &e, sizeof v);
    return v;
  } else {
    int64_t v = 0;
    std::memcpy(&v, &e, sizeof(E));
    return v;
  }
}

const char *dtype_name(int64_t dtype);

// The host services of one kernel call; every service is optional.
class Host {
 public:
  explicit Host(const parley_host_services *h) : h_(h) {}

  parley_kernel_status fail(parley_kernel_status status, const char *fmt, ...) const
      __attribute__((format(printf, 3, 4)));
  void *scratch(size_t bytes) const { return h_ && h_->scratch ? h_->scratch(h_->host, bytes) : nullptr; }
  const parley_host_services *services() const { return h_; }
  int num_threads() const {
    int n = h_ && h_->num_threads ? h_->num_threads(h_->host) : 1;
    return n < 1 ? 1 : n;
  }

  // Runs body(begin, end) over [0, n) on the host's pool (serially without
  // one). Exceptions are caught inside every chunk; the first failure is
  // returned as a status.
  template <typename Body>
  parley_kernel_status parallel_for(int64_t n, int64_t grain, Body &&body) const {
    if (n <= 0) return PARLEY_KERNEL_OK;
    struct Job {
      Body *body;
      std::atomic<int> status{PARLEY_KERNEL_OK};
    } job{&body};
    parley_range_fn fn = [](void *user, int64_t begin, int64_t end) {
      Job *j = static_cast<Job *>(user);
      try {
        parley_kernel_status st = (*j->body)(begin, end);
        if (st != PARLEY_KERNEL_OK) {
          int expected = PARLEY_KERNEL_OK;
          j->status.compare_exchange_strong(expected, st);
        }
      } catch (const std::bad_alloc &) {
        int expected = PARLEY_KERNEL_OK;
        j->status.compare_exchange_strong(expected, PARLEY_KERNEL_OUT_OF_MEMORY);
      } catch (...) {
        int expected = PARLEY_KERNEL_OK;
        j->status.compare_exchange_strong(expected, PARLEY_KERNEL_DEVICE_ERROR);
      }
    };
    if (grain < 1) grain = 1;
    if (h_ && h_->parallel_for && n > grain) {
      h_->parallel_for(h_->host, n, grain, fn, &job);
    } else {
      fn(&job, 0, n);
    }
    return static_cast<parley_kernel_status>(job.status.load());
  }

 private:
  const parley_host_services *h_;
};

// Validates the kernel context and the argument struct's header (NULL,
// struct_size, dtype F32). On success sets *args_out and returns OK.
// min_size: the struct's size in the oldest ABI that must be accepted
// (fields appended later are read only when struct_size covers them).
template <typename Args>
parley_kernel_status begin_call(const char *op, const parley_kernel_context *ctx, const void *args, Host *host,
                                const Args **args_out, size_t min_size = sizeof(Args)) {
  if (ctx == nullptr) return PARLEY_KERNEL_INVALID_ARGUMENT;
  if (ctx->struct_size < sizeof(parley_kernel_context)) return PARLEY_KERNEL_INVALID_ARGUMENT;
  *host = Host(ctx->host);
  if (args == nullptr) return host->fail(PARLEY_KERNEL_INVALID_ARGUMENT, "%s: args is NULL", op);
  const Args *a = static_cast<const Args *>(args);
  if (a->struct_size < min_size)
    return host->fail(PARLEY_KERNEL_INVALID_ARGUMENT, "%s: struct_size (%zu) < %zu", op, a->struct_size, min_size);
  int64_t dt = enum_value(a->dtype);
  if (dt < 0 || dt >= PARLEY_DTYPE_COUNT_)
    return host->fail(PARLEY_KERNEL_INVALID_ARGUMENT, "%s: unknown dtype %lld", op, static_cast<long long>(dt));
  if (dt != PARLEY_DTYPE_F32)
    return host->fail(PARLEY_KERNEL_UNSUPPORTED, "%s: dtype %s is not supported by the cpu plugin (F32 only)", op,
                      dtype_name(dt));
  *args_out = a;
  return PARLEY_KERNEL_OK;
}

// Wraps a kernel body so that no exception leaves it.
template <typename Fn>
parley_kernel_status guarded(const char *op, const parley_kernel_context *ctx, Fn &&fn) {
  try {
    return fn();
  } catch (const std::bad_alloc &) {
    if (ctx && ctx->host) Host(ctx->host).fail(PARLEY_KERNEL_OUT_OF_MEMORY, "%s: out of memory", op);
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

inline long long ll(int64_t v) {
  return static_cast<long long>(v);
}

// ---- activations (reference formulas in plugin.h, HF activations.py) ----
inline float act_relu(float x) {
  return x > 0.f ? x : 0.f;
}
// Both GELUs are rewritten without the cancellation of 1 + erf/tanh(u) for
// negative inputs (which costs ~1e-4 relative error at x = -5):
//   0.5 (1 + erf(z))  = 0.5 erfc(-z)
//   0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + exp(-2u))
inline float act_gelu_erf(float x) {
  return 0.5f * x * std::erfc(-x * 0.70710678118654752f);
}
// exp(x) in straight-line float code the compiler vectorises (std::exp is a
// library call per element): Cody-Waite reduction by ln 2, Cephes' expf
// polynomial (about 1 ulp), 2^n from the exponent bits. Above ~88.72 it is
// +inf and below -87.3 it is 0 (std::exp would give a denormal there, which
// changes neither activation below); NaN stays NaN.
inline float exp_vectorizable(float x) {
  const float xc = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
  const float shifter = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = xc * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  int32_t bits;
  std::memcpy(&bits, &t, sizeof bits);  // t's low mantissa bits hold n
  const int32_t e = ((bits - 0x4B400000) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, sizeof scale);
  const float y = p * scale;
  return x > 88.72f ? INFINITY : (x < -87.3f ? 0.f : y);
}
inline float act_gelu_tanh(float x) {
  const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
  return x / (1.f + exp_vectorizable(-2.f * u));
}
inline float act_silu(float x) {
  return x / (1.f + exp_vectorizable(-x));
}

// y[i] = act(x[i]) for n elements; x may equal y. act must be valid (0..4).
void apply_activation(int act, const float *x, float *y, int64_t n);
// y[i] = act(g[i]) * u[i]
void apply_gated_activation(int act, const float *g, const float *u, float *y, int64_t n);

inline bool valid_activation(int64_t act) {
  return act >= 0 && act < PARLEY_ACT_COUNT_;
}

}  // namespace parley::cpu

#endif
