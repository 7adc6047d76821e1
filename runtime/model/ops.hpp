// Typed op calls for the model code. Each op's kernel is resolved once in the
// registry (for one device and dtype) when the Ops object is built; a call
// fills the plugin argument struct, runs the kernel and turns a kernel error
// into an Error naming the op and the kernel's own message.
#pragma once

#include <parley/plugin.h>

#include <array>
#include <memory>
#include <string>

#include "plugins/registry.hpp"

namespace parley {

struct Runtime;

class Ops {
 public:
  // Resolves every op on `device` for F32. Throws NOT_FOUND / DEVICE.
  Ops(std::shared_ptr<Runtime> runtime, const std::string &device);

  // C[m,n] = A[m,k] @ B^T (B stored [n,k], nn.Linear layout) + bias, then act.
  void linear(const float *a, int64_t m, int64_t k, const float *w, int64_t n, const float *bias, float *c,
              parley_activation act = PARLEY_ACT_NONE) const;
  void run(parley_op op, const void *args) const;

  const Kernel &kernel(parley_op op) const { return kernels_[op]; }

 private:
  std::shared_ptr<Runtime> runtime_;
  std::array<Kernel, PARLEY_OP_COUNT_> kernels_;
  parley_kernel_context ctx_{};
};

}  // namespace parley
