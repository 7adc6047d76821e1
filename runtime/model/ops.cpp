#include "model/ops.hpp"

#include "core/error.hpp"
#include "core/runtime.hpp"

namespace parley {

Ops::Ops(std::shared_ptr<Runtime> runtime, const std::string &device) : runtime_(std::move(runtime)) {
  Device d = runtime_->registry.device(device);
  for (int op = 0; op < PARLEY_OP_COUNT_; ++op)
    kernels_[op] = runtime_->registry.find(static_cast<parley_op>(op), device, PARLEY_DTYPE_F32);
  ctx_.struct_size = sizeof ctx_;
  ctx_.host = runtime_->host.table();
  ctx_.device_state = d.state;
  ctx_.stream = nullptr;
}

void Ops::run(parley_op op, const void *args) const {
  const Kernel &k = kernels_[op];
  parley_kernel_status st = k.run(&ctx_, args);
  if (st == PARLEY_KERNEL_OK) return;
  std::string detail = HostServices::take_kernel_error();
  parley_status status = st == PARLEY_KERNEL_OUT_OF_MEMORY  ? PARLEY_ERROR_OUT_OF_MEMORY
                         : st == PARLEY_KERNEL_DEVICE_ERROR ? PARLEY_ERROR_DEVICE
                         : st == PARLEY_KERNEL_UNSUPPORTED  ? PARLEY_ERROR_UNSUPPORTED
                                                            : PARLEY_ERROR_INVALID_ARGUMENT;
  fail(status, std::string("kernel ") + k.plugin + "/" + k.name + " (" + op_name(op) +
                   ") failed: " + (detail.empty() ? "status " + std::to_string(st) : detail));
}

void Ops::linear(const float *a, int64_t m, int64_t k, const float *w, int64_t n, const float *bias, float *c,
                 parley_activation act) const {
  parley_gemm_args g{};
  g.struct_size = sizeof g;
  g.dtype = PARLEY_DTYPE_F32;
  g.trans_a = 0;
  g.trans_b = 1;
  g.m = m;
  g.n = n;
  g.k = k;
  g.batch = 1;
  g.a = a;
  g.lda = k;
  g.b = w;
  g.ldb = k;
  g.c = c;
  g.ldc = n;
  g.alpha = 1.f;
  g.beta = 0.f;
  g.bias = bias;
  g.epilogue = act;
  run(PARLEY_OP_GEMM, &g);
}

}  // namespace parley
