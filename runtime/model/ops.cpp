#include "model/ops.hpp"

#include "core/error.hpp"
#include "core/escape.hpp"
#include "core/exit_gate.hpp"
#include "core/runtime.hpp"
#include "format/model_file.hpp"
#include "model/weights.hpp"

namespace parley {

LinearWeight &LinearWeight::operator=(LinearWeight &&o) noexcept {
  if (this != &o) {
    reset();
    n = o.n;
    k = o.k;
    kernel_ = o.kernel_;
    ctx_ = o.ctx_;
    handle_ = o.handle_;
    f32_ = o.f32_;
    o.handle_ = nullptr;
    o.f32_ = nullptr;
  }
  return *this;
}

void LinearWeight::reset() noexcept {
  if (handle_ && kernel_.release_weight) kernel_.release_weight(&ctx_, handle_);
  handle_ = nullptr;
  f32_ = nullptr;
}

Ops::Ops(std::shared_ptr<Runtime> runtime, const std::string &device, parley_dtype act)
    : runtime_(std::move(runtime)), device_(device), act_(act) {
  Device d = runtime_->registry.device(device);
  if (act != PARLEY_DTYPE_F32 && act != PARLEY_DTYPE_F16 && act != PARLEY_DTYPE_BF16)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "activation dtype " + std::to_string(static_cast<int>(act)) +
                                            " is not PARLEY_DTYPE_F32, PARLEY_DTYPE_F16 or PARLEY_DTYPE_BF16");
  for (int op = 0; op < PARLEY_OP_COUNT_; ++op) {
    if (op == PARLEY_OP_LINEAR) continue;  // per weight dtype, in prepare_linear; optional (GEMM serves otherwise)
    const bool model_op = op == PARLEY_OP_EMBEDDING || op == PARLEY_OP_LAYER_NORM || op == PARLEY_OP_RMS_NORM ||
                          op == PARLEY_OP_ROTARY || op == PARLEY_OP_ATTENTION || op == PARLEY_OP_GATED_ACTIVATION ||
                          op == PARLEY_OP_ADD;
    if (act == PARLEY_DTYPE_F32) {
      kernels_[op] = runtime_->registry.find(static_cast<parley_op>(op), device, PARLEY_DTYPE_F32);
    } else if (model_op) {
      try {
        kernels_[op] = runtime_->registry.find(static_cast<parley_op>(op), device, act);
      } catch (const Error &e) {
        if (e.status() != PARLEY_ERROR_NOT_FOUND) throw;
        fail(PARLEY_ERROR_UNSUPPORTED, std::string("activation_dtype ") + dtype_name(act) + ": device '" + device +
                                           "' has no " + dtype_name(act) + " kernel for op " +
                                           op_name(static_cast<parley_op>(op)) + "; use PARLEY_DTYPE_F32 there");
      }
    }
  }
  for (const Kernel &k : runtime_->registry.kernels())
    if (k.op == PARLEY_OP_LINEAR && k.device == device) linear_any_ = true;
  ctx_.struct_size = sizeof ctx_;
  ctx_.host = runtime_->host.table();
  ctx_.device_state = d.state;
  ctx_.stream = nullptr;
}

void Ops::run(parley_op op, const void *args) const {
  const Kernel &k = kernels_[op];
  if (!k.run) fail(PARLEY_ERROR_INTERNAL, std::string("op ") + op_name(op) + " is not resolved for these activations");
  exit_gate::Call call;
  if (!call.open()) fail(PARLEY_ERROR_CANCELLED, exit_gate::refusal_message());
  check(k, k.run(&ctx_, args));
  if (!ran_[op].load(std::memory_order_relaxed)) {
    ran_[op].store(true, std::memory_order_relaxed);
    exit_gate::completed_first_call(reinterpret_cast<const void *>(k.run));
  }
}

void Ops::check(const Kernel &k, parley_kernel_status st) const {
  const parley_op op = k.op;
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

LinearWeight Ops::prepare_linear(Weights &weights, const std::string &name, int64_t n, int64_t k,
                                 LinearPlan *plan) const {
  const TensorRef &t = weights.ref(name, {n, k});
  LinearWeight w;
  w.n = n;
  w.k = k;
  LinearPlan info;
  info.tensor = name;
  info.weight_dtype = t.dtype;
  // Per-row scales serve a linear weight only along its output features.
  const bool describable = t.quant != PARLEY_QUANT_PER_ROW || t.scale_axis == 0;
  if (linear_any_ && describable) {
    parley_weight_desc d{};
    d.struct_size = sizeof d;
    d.name = t.name.c_str();
    d.dtype = t.dtype;
    d.quant = t.quant;
    d.n = n;
    d.k = k;
    d.data = t.data;
    d.ld_bytes = static_cast<int64_t>(t.length / static_cast<uint64_t>(n));
    d.scales = t.scales;
    d.group_size = t.quant == PARLEY_QUANT_GROUPWISE ? t.group_size : 0;
    for (const Kernel &kern : runtime_->registry.linear_candidates(device_, act_, t.dtype)) {
      parley_prepared_weight out{};
      out.struct_size = sizeof out;
      parley_kernel_status st;
      {
        exit_gate::Call call;
        if (!call.open()) fail(PARLEY_ERROR_CANCELLED, exit_gate::refusal_message());
        st = kern.prepare_weight(&ctx_, &d, &out);
      }
      // The cpu plugin builds oneDNN's JIT kernels (and their statics) here.
      if (st == PARLEY_KERNEL_OK) exit_gate::completed_first_call(reinterpret_cast<const void *>(kern.prepare_weight));
      if (st == PARLEY_KERNEL_UNSUPPORTED) {
        HostServices::take_kernel_error();  // the next kernel may serve it
        continue;
      }
      if (st != PARLEY_KERNEL_OK) {
        std::string detail = HostServices::take_kernel_error();
        parley_status status = st == PARLEY_KERNEL_OUT_OF_MEMORY  ? PARLEY_ERROR_OUT_OF_MEMORY
                               : st == PARLEY_KERNEL_DEVICE_ERROR ? PARLEY_ERROR_DEVICE
                                                                  : PARLEY_ERROR_INVALID_MODEL;
        fail(status, "kernel " + kern.plugin + "/" + kern.name + " could not prepare tensor " + quote_untrusted(name) +
                         ": " + (detail.empty() ? "status " + std::to_string(st) : detail));
      }
      if (!out.handle)
        fail(PARLEY_ERROR_PLUGIN, "kernel " + kern.plugin + "/" + kern.name + " prepared tensor " +
                                      quote_untrusted(name) + " without returning a handle");
      w.kernel_ = kern;
      w.ctx_ = ctx_;
      w.handle_ = out.handle;
      info.kernel = kern.name;
      info.plugin = kern.plugin;
      info.op = PARLEY_OP_LINEAR;
      info.bytes = out.bytes;
      info.uses_source = (out.flags & PARLEY_PREPARED_USES_SOURCE) != 0;
      info.source_released = kern.reports_released_source && (out.flags & PARLEY_PREPARED_SOURCE_RELEASED) != 0;
      info.source_bytes = t.length;
      if (plan) *plan = info;
      return w;
    }
  }
  if (act_ != PARLEY_DTYPE_F32)  // GEMM over an f32 copy computes in F32 only
    fail(PARLEY_ERROR_UNSUPPORTED, std::string("activation_dtype ") + dtype_name(act_) + ": device '" + device_ +
                                       "' has no " + dtype_name(act_) + " linear kernel for tensor " +
                                       quote_untrusted(name) + " (" + dtype_name(t.dtype) + " weights)");
  // No LINEAR kernel serves this weight here: GEMM over a float32 copy.
  w.f32_ = weights.f32(name, {n, k});
  info.kernel = kernels_[PARLEY_OP_GEMM].name;
  info.plugin = kernels_[PARLEY_OP_GEMM].plugin;
  info.op = PARLEY_OP_GEMM;
  info.widened = !(t.dtype == PARLEY_DTYPE_F32 && t.quant == PARLEY_QUANT_NONE);
  if (plan) *plan = info;
  return w;
}

bool Ops::linear(const LinearWeight &w, Act x_act, int64_t m, const float *bias, Act out_act, parley_activation act,
                 Act residual_act, const LinearStats *stats) const {
  if (w.handle_) {
    const bool with_stats = stats && (w.kernel_.flags & PARLEY_KERNEL_FLAG_LINEAR_STATS);
    parley_linear_args a{};
    a.struct_size = sizeof a;
    a.dtype = act_;
    a.activation = act;
    a.m = m;
    a.n = w.n;
    a.k = w.k;
    a.x = x_act.get();
    a.ld_x = w.k;
    a.weight = w.handle_;
    a.bias = bias;
    a.residual = residual_act.get();
    a.ld_residual = w.n;
    a.out = out_act.get();
    a.ld_out = w.n;
    if (with_stats) {
      a.block_max = stats->block_max;
      a.block_sum = stats->block_sum;
      a.ld_stats = stats->ld;
    }
    {
      exit_gate::Call call;
      if (!call.open()) fail(PARLEY_ERROR_CANCELLED, exit_gate::refusal_message());
      check(w.kernel_, w.kernel_.run(&ctx_, &a));
    }
    const uint32_t bit = 1u << (static_cast<uint32_t>(w.kernel_.weight_dtype) & 31u);
    if (!(linear_ran_.load(std::memory_order_relaxed) & bit)) {
      linear_ran_.fetch_or(bit, std::memory_order_relaxed);
      exit_gate::completed_first_call(reinterpret_cast<const void *>(w.kernel_.run));
    }
    return with_stats;
  }
  if (!w.f32_) fail(PARLEY_ERROR_INTERNAL, "linear weight used before it was prepared");
  // The GEMM fallback exists for F32 activations only (prepare_linear).
  const float *x = static_cast<const float *>(x_act.get()), *residual = static_cast<const float *>(residual_act.get());
  float *out = static_cast<float *>(out_act.get());
  if (residual && residual == out && act == PARLEY_ACT_NONE) {
    // C = x W^T + C, then bias: the GEMM contract adds beta * C before the bias.
    parley_gemm_args g{};
    g.struct_size = sizeof g;
    g.dtype = PARLEY_DTYPE_F32;
    g.trans_b = 1;
    g.m = m;
    g.n = w.n;
    g.k = w.k;
    g.batch = 1;
    g.a = x;
    g.lda = w.k;
    g.b = w.f32_;
    g.ldb = w.k;
    g.c = out;
    g.ldc = w.n;
    g.alpha = 1.f;
    g.beta = 1.f;
    g.bias = bias;
    g.epilogue = PARLEY_ACT_NONE;
    run(PARLEY_OP_GEMM, &g);
    return false;
  }
  if (residual && residual == out) fail(PARLEY_ERROR_INTERNAL, "linear: in-place residual with an activation");
  linear(x, m, w.k, w.f32_, w.n, bias, out, act);
  if (residual) {
    parley_add_args a{};
    a.struct_size = sizeof a;
    a.dtype = PARLEY_DTYPE_F32;
    a.n = m * w.n;
    a.a = out;
    a.b = residual;
    a.out = out;
    a.alpha = 1.f;
    run(PARLEY_OP_ADD, &a);
  }
  return false;
}

}  // namespace parley
