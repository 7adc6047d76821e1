// Typed op calls for the model code. Each op's kernel is resolved once in the
// registry (for one device and dtype) when the Ops object is built; a call
// fills the plugin argument struct, runs the kernel and turns a kernel error
// into an Error naming the op and the kernel's own message.
#pragma once

#include <parley/plugin.h>

#include <array>
#include <atomic>
#include <memory>
#include <string>

#include "model/activations.hpp"
#include "model/logit_stats.hpp"
#include "plugins/registry.hpp"

namespace parley {

struct Runtime;
class Weights;
class Ops;

// Which kernel serves one linear weight, for the kernel plan (parley inspect).
struct LinearPlan {
  std::string tensor, kernel, plugin;
  parley_dtype weight_dtype = PARLEY_DTYPE_F32;
  parley_op op = PARLEY_OP_LINEAR;  // LINEAR on the stored weight, or GEMM over an f32 view
  bool widened = false;             // a non-f32 weight converted to an f32 copy (the fallback)
  uint64_t bytes = 0;               // memory the kernel's packed copy owns
  bool uses_source = false;
  // The kernel released the source's pages (PARLEY_PREPARED_SOURCE_RELEASED): source_bytes of the file.
  bool source_released = false;
  uint64_t source_bytes = 0;
};

// A weight prepared for one device: a LINEAR kernel's packed handle, or
// (when no LINEAR kernel serves its dtype there) a float32 view for GEMM.
// Move-only; releases the handle through its kernel.
// Where a LINEAR call writes its output rows' block statistics (ABI 1.5).
struct LinearStats {
  float *block_max = nullptr, *block_sum = nullptr;
  int64_t ld = 0;  // >= ceil(n / PARLEY_LINEAR_STATS_BLOCK)
};

// Sizes `stats` for `rows` rows of `cols` logits and returns where a LINEAR
// call writes them (setting stats.valid is the caller's part).
inline LinearStats linear_stats_for(LogitStats &stats, int64_t rows, int64_t cols) {
  static_assert(kLogitStatsBlock == PARLEY_LINEAR_STATS_BLOCK);
  stats.blocks = (cols + kLogitStatsBlock - 1) / kLogitStatsBlock;
  stats.block_max.resize(static_cast<size_t>(rows * stats.blocks));
  stats.block_sum.resize(stats.block_max.size());
  return {stats.block_max.data(), stats.block_sum.data(), stats.blocks};
}

class LinearWeight {
 public:
  LinearWeight() = default;
  LinearWeight(LinearWeight &&o) noexcept { *this = std::move(o); }
  LinearWeight &operator=(LinearWeight &&o) noexcept;
  LinearWeight(const LinearWeight &) = delete;
  LinearWeight &operator=(const LinearWeight &) = delete;
  ~LinearWeight() { reset(); }

  int64_t n = 0, k = 0;
  explicit operator bool() const { return handle_ || f32_; }

 private:
  friend class Ops;
  void reset() noexcept;
  Kernel kernel_{};
  parley_kernel_context ctx_{};
  void *handle_ = nullptr;
  const float *f32_ = nullptr;
};

class Ops {
 public:
  // Resolves every op on `device` for F32 activations; for F16 / BF16
  // activations the ops a model runs (embedding, norms, rotary, attention,
  // gated activation, add and LINEAR; no GEMM fallback). Throws NOT_FOUND /
  // DEVICE, and UNSUPPORTED naming the op the device lacks at that dtype.
  Ops(std::shared_ptr<Runtime> runtime, const std::string &device, parley_dtype act = PARLEY_DTYPE_F32);
  parley_dtype act_dtype() const { return act_; }

  // C[m,n] = A[m,k] @ B^T (B stored [n,k], nn.Linear layout) + bias, then act.
  void linear(const float *a, int64_t m, int64_t k, const float *w, int64_t n, const float *bias, float *c,
              parley_activation act = PARLEY_ACT_NONE) const;
  // out[m,n] = act(x[m,k] @ W^T + bias) + residual (residual may be NULL or equal out).
  // With `stats`, also the rows' block statistics (parley_linear_args.block_max /
  // block_sum, [m, ld] in out's memory) when the kernel writes them
  // (PARLEY_KERNEL_FLAG_LINEAR_STATS): returns whether it did.
  // x, out and residual are activations (act_dtype()); bias stays F32.
  bool linear(const LinearWeight &w, Act x, int64_t m, const float *bias, Act out,
              parley_activation act = PARLEY_ACT_NONE, Act residual = {}, const LinearStats *stats = nullptr) const;
  // Hands tensor `name` ([n, k]) to the best LINEAR kernel for its stored
  // dtype on this device; falls back to GEMM over an f32 copy (recorded in
  // `plan`, warned once per model by the caller) when none serves it, for
  // F32 activations only (else UNSUPPORTED naming the tensor).
  LinearWeight prepare_linear(Weights &weights, const std::string &name, int64_t n, int64_t k, LinearPlan *plan) const;
  void run(parley_op op, const void *args) const;
  bool has_linear() const { return linear_any_; }

  const Kernel &kernel(parley_op op) const { return kernels_[op]; }

 private:
  void check(const Kernel &k, parley_kernel_status st) const;

  std::shared_ptr<Runtime> runtime_;
  std::string device_;
  parley_dtype act_ = PARLEY_DTYPE_F32;
  bool linear_any_ = false;  // the device has at least one LINEAR kernel
  std::array<Kernel, PARLEY_OP_COUNT_> kernels_;
  parley_kernel_context ctx_{};
  // Which kernels have completed a call through this object (exit_gate).
  mutable std::array<std::atomic<bool>, PARLEY_OP_COUNT_> ran_{};
  mutable std::atomic<uint32_t> linear_ran_{0};  // bit: the weight's dtype
};

}  // namespace parley
