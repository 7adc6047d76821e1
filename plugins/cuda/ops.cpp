// Entry points of the non-GEMM kernels: argument validation (the same checks
// as the cpu plugin), then an asynchronous launch on the call's stream (the
// device's own stream when the context has none). Only embedding synchronises:
// the ids live on the device and an out-of-range id must be reported.
#include <algorithm>
#include <climits>

#include "cuda_common.h"

namespace parley::cuda {

#define BEGIN_DTYPES(op_name, Args, mask)                                                      \
  Host host(nullptr);                                                                          \
  DeviceState *state = nullptr;                                                                \
  cudaStream_t stream = nullptr;                                                               \
  const Args *a = nullptr;                                                                     \
  if (auto st_ = begin_call(op_name, ctx, args, &host, &state, &stream, &a, mask)) return st_; \
  if (auto st_ = use_device(op_name, host, state)) return st_
#define BEGIN(op_name, Args) BEGIN_DTYPES(op_name, Args, 1u << PARLEY_DTYPE_F32)
// The model's ops between products also take 16-bit activations (plugin.h).
constexpr uint32_t kActDtypes = (1u << PARLEY_DTYPE_F32) | (1u << PARLEY_DTYPE_F16) | (1u << PARLEY_DTYPE_BF16);

namespace {

parley_kernel_status norm(const char *op, bool rms, const parley_kernel_context *ctx, const void *args) {
  return guarded(op, ctx, [&]() -> parley_kernel_status {
    BEGIN_DTYPES(op, parley_norm_args, kActDtypes);
    PARLEY_CHECK(host, a->rows >= 0, "%s: rows (%lld) < 0", op, ll(a->rows));
    PARLEY_CHECK(host, a->cols >= 1, "%s: cols (%lld) < 1", op, ll(a->cols));
    if (a->rows == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->x && a->out && a->gamma, "%s: x, out or gamma is NULL", op);
    PARLEY_CHECK(host, a->ld_x >= a->cols, "%s: ld_x (%lld) < cols (%lld)", op, ll(a->ld_x), ll(a->cols));
    PARLEY_CHECK(host, a->ld_out >= a->cols, "%s: ld_out (%lld) < cols (%lld)", op, ll(a->ld_out), ll(a->cols));
    PARLEY_CHECK(host, a->eps >= 0.f, "%s: eps (%g) is negative or NaN", op, static_cast<double>(a->eps));
    if (a->residual) {
      PARLEY_CHECK(host, a->ld_residual >= a->cols, "%s: ld_residual (%lld) < cols (%lld)", op, ll(a->ld_residual),
                   ll(a->cols));
      if (a->residual_out)
        PARLEY_CHECK(host, a->ld_residual_out >= a->cols, "%s: ld_residual_out (%lld) < cols (%lld)", op,
                     ll(a->ld_residual_out), ll(a->cols));
    }
    row::NormParams p{};
    p.x = a->x;
    p.res = a->residual;
    p.res_out = a->residual ? a->residual_out : nullptr;
    p.out = a->out;
    p.gamma = static_cast<const float *>(a->gamma);  // parameters stay float at F16 (plugin.h)
    p.beta = rms ? nullptr : static_cast<const float *>(a->beta);
    p.rows = a->rows, p.cols = a->cols, p.ld_x = a->ld_x, p.ld_res = a->ld_residual;
    p.ld_res_out = a->ld_residual_out, p.ld_out = a->ld_out;
    p.eps = a->eps;
    p.rms = rms;
    launch_norm(a->dtype, p, stream);
    return check_launch(host, op);
  });
}

parley_kernel_status softmax_impl(const char *op, bool log, const parley_kernel_context *ctx, const void *args) {
  return guarded(op, ctx, [&]() -> parley_kernel_status {
    BEGIN(op, parley_softmax_args);
    PARLEY_CHECK(host, a->rows >= 0, "%s: rows (%lld) < 0", op, ll(a->rows));
    PARLEY_CHECK(host, a->cols >= 1, "%s: cols (%lld) < 1", op, ll(a->cols));
    if (a->rows == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->x && a->out, "%s: x or out is NULL", op);
    PARLEY_CHECK(host, a->ld_x >= a->cols, "%s: ld_x (%lld) < cols (%lld)", op, ll(a->ld_x), ll(a->cols));
    PARLEY_CHECK(host, a->ld_out >= a->cols, "%s: ld_out (%lld) < cols (%lld)", op, ll(a->ld_out), ll(a->cols));
    launch_softmax(log, a->rows, a->cols, static_cast<const float *>(a->x), a->ld_x, static_cast<float *>(a->out),
                   a->ld_out, stream);
    return check_launch(host, op);
  });
}

}  // namespace

parley_kernel_status layer_norm_run(const parley_kernel_context *ctx, const void *args) {
  return norm("layer_norm", false, ctx, args);
}

parley_kernel_status rms_norm_run(const parley_kernel_context *ctx, const void *args) {
  return norm("rms_norm", true, ctx, args);
}

parley_kernel_status softmax_f32(const parley_kernel_context *ctx, const void *args) {
  return softmax_impl("softmax", false, ctx, args);
}

parley_kernel_status log_softmax_f32(const parley_kernel_context *ctx, const void *args) {
  return softmax_impl("log_softmax", true, ctx, args);
}

parley_kernel_status rotary_run(const parley_kernel_context *ctx, const void *args) {
  return guarded("rotary", ctx, [&]() -> parley_kernel_status {
    BEGIN_DTYPES("rotary", parley_rotary_args, kActDtypes);
    PARLEY_CHECK(host, a->batch >= 0 && a->seq >= 0 && a->heads >= 0,
                 "rotary: negative shape batch=%lld seq=%lld heads=%lld", ll(a->batch), ll(a->seq), ll(a->heads));
    PARLEY_CHECK(host, a->head_dim >= 1, "rotary: head_dim (%lld) < 1", ll(a->head_dim));
    PARLEY_CHECK(host, a->rotary_dim >= 0 && a->rotary_dim <= a->head_dim && a->rotary_dim % 2 == 0,
                 "rotary: rotary_dim (%lld) must be even and in [0, head_dim=%lld]", ll(a->rotary_dim),
                 ll(a->head_dim));
    PARLEY_CHECK(host, a->stride_batch >= 0 && a->stride_seq >= 0 && a->stride_head >= 0, "rotary: negative stride");
    PARLEY_CHECK(host, a->heads <= 1 || a->stride_head >= a->head_dim, "rotary: stride_head (%lld) < head_dim (%lld)",
                 ll(a->stride_head), ll(a->head_dim));
    PARLEY_CHECK(host, a->seq <= 1 || a->stride_seq >= a->head_dim, "rotary: stride_seq (%lld) < head_dim (%lld)",
                 ll(a->stride_seq), ll(a->head_dim));
    if (a->batch * a->seq == 0 || a->heads == 0 || a->rotary_dim == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->x && a->positions && a->inv_freq, "rotary: x, positions or inv_freq is NULL");
    row::RotaryParams p{};
    p.x = a->x;
    p.positions = a->positions;
    p.inv_freq = a->inv_freq;
    p.batch = a->batch, p.seq = a->seq, p.heads = a->heads, p.half = a->rotary_dim / 2;
    p.stride_batch = a->stride_batch, p.stride_seq = a->stride_seq, p.stride_head = a->stride_head;
    p.interleaved = a->interleaved != 0;
    p.attention_factor = a->attention_factor;
    launch_rotary(a->dtype, p, stream);
    return check_launch(host, "rotary");
  });
}

parley_kernel_status activation_f32(const parley_kernel_context *ctx, const void *args) {
  return guarded("activation", ctx, [&]() -> parley_kernel_status {
    BEGIN("activation", parley_activation_args);
    const int64_t act = enum_value(a->activation);
    PARLEY_CHECK(host, valid_activation(act), "activation: unknown activation %lld", ll(act));
    PARLEY_CHECK(host, a->rows >= 0 && a->cols >= 0, "activation: negative shape rows=%lld cols=%lld", ll(a->rows),
                 ll(a->cols));
    if (a->rows == 0 || a->cols == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->x && a->out, "activation: x or out is NULL");
    PARLEY_CHECK(host, a->ld_x >= a->cols, "activation: ld_x (%lld) < cols (%lld)", ll(a->ld_x), ll(a->cols));
    PARLEY_CHECK(host, a->ld_out >= a->cols, "activation: ld_out (%lld) < cols (%lld)", ll(a->ld_out), ll(a->cols));
    launch_activation(static_cast<int>(act), PARLEY_DTYPE_F32, a->rows, a->cols, a->x, a->ld_x, a->out, a->ld_out,
                      stream);
    return check_launch(host, "activation");
  });
}

parley_kernel_status gated_activation_run(const parley_kernel_context *ctx, const void *args) {
  return guarded("gated_activation", ctx, [&]() -> parley_kernel_status {
    BEGIN_DTYPES("gated_activation", parley_gated_activation_args, kActDtypes);
    const int64_t act = enum_value(a->activation);
    PARLEY_CHECK(host, valid_activation(act), "gated_activation: unknown activation %lld", ll(act));
    PARLEY_CHECK(host, a->rows >= 0 && a->cols >= 0, "gated_activation: negative shape rows=%lld cols=%lld",
                 ll(a->rows), ll(a->cols));
    if (a->rows == 0 || a->cols == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->gate && a->up && a->out, "gated_activation: gate, up or out is NULL");
    PARLEY_CHECK(host, a->ld_gate >= a->cols, "gated_activation: ld_gate (%lld) < cols (%lld)", ll(a->ld_gate),
                 ll(a->cols));
    PARLEY_CHECK(host, a->ld_up >= a->cols, "gated_activation: ld_up (%lld) < cols (%lld)", ll(a->ld_up), ll(a->cols));
    PARLEY_CHECK(host, a->ld_out >= a->cols, "gated_activation: ld_out (%lld) < cols (%lld)", ll(a->ld_out),
                 ll(a->cols));
    row::GatedParams p{};
    p.gate = a->gate, p.up = a->up, p.out = a->out;
    p.rows = a->rows, p.cols = a->cols, p.ld_gate = a->ld_gate, p.ld_up = a->ld_up, p.ld_out = a->ld_out;
    p.act = static_cast<int>(act);
    launch_gated_activation(a->dtype, p, stream);
    return check_launch(host, "gated_activation");
  });
}

parley_kernel_status add_run(const parley_kernel_context *ctx, const void *args) {
  return guarded("add", ctx, [&]() -> parley_kernel_status {
    BEGIN_DTYPES("add", parley_add_args, kActDtypes);
    PARLEY_CHECK(host, a->n >= 0, "add: n (%lld) < 0", ll(a->n));
    if (a->n == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->a && a->b && a->out, "add: a, b or out is NULL");
    row::AddParams p{};
    p.a = a->a, p.b = a->b, p.out = a->out, p.n = a->n, p.alpha = a->alpha;
    launch_add(a->dtype, p, stream);
    return check_launch(host, "add");
  });
}

parley_kernel_status embedding_run(const parley_kernel_context *ctx, const void *args) {
  return guarded("embedding", ctx, [&]() -> parley_kernel_status {
    BEGIN_DTYPES("embedding", parley_embedding_args, kActDtypes);
    const int64_t tdt = enum_value(a->table_dtype);
    PARLEY_CHECK(host, tdt >= 0 && tdt < PARLEY_DTYPE_COUNT_, "embedding: unknown table_dtype %lld", ll(tdt));
    if (tdt != PARLEY_DTYPE_F32 && tdt != PARLEY_DTYPE_I8)
      return host.fail(PARLEY_KERNEL_UNSUPPORTED, "embedding: table_dtype %s is not supported (F32 or I8)",
                       dtype_name(tdt));
    PARLEY_CHECK(host, a->count >= 0 && a->vocab >= 0, "embedding: negative count (%lld) or vocab (%lld)", ll(a->count),
                 ll(a->vocab));
    PARLEY_CHECK(host, a->dim >= 1, "embedding: dim (%lld) < 1", ll(a->dim));
    PARLEY_CHECK(host, a->ld_out >= a->dim, "embedding: ld_out (%lld) < dim (%lld)", ll(a->ld_out), ll(a->dim));
    if (a->count == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->ids && a->table && a->out, "embedding: ids, table or out is NULL");
    const bool i8 = tdt == PARLEY_DTYPE_I8;
    PARLEY_CHECK(host, !i8 || a->row_scales, "embedding: I8 table without row_scales");
    // The ids are on the device: the kernel raises a flag for an id out of
    // range, read back after the launch (one stream synchronisation).
    void *flag = nullptr;
    std::string error;
    if (auto st = state->allocator.allocate(stream, sizeof(int), &flag, &error))
      return host.fail(st, "embedding: %s", error.c_str());
    struct Release {
      DeviceState *s;
      void *p;
      ~Release() { s->allocator.release(p); }
    } release{state, flag};
    cudaError_t err = cudaMemsetAsync(flag, 0, sizeof(int), stream);
    if (err != cudaSuccess) return cuda_fail(host, "embedding", "cudaMemsetAsync", err);
    row::EmbeddingParams p{};
    p.ids = a->ids, p.table = a->table, p.row_scales = a->row_scales, p.out = a->out;
    p.bad_id = static_cast<int *>(flag);
    p.count = a->count, p.vocab = a->vocab, p.dim = a->dim, p.ld_out = a->ld_out;
    p.scale = a->scale;
    p.i8 = i8;
    launch_embedding(a->dtype, p, stream);
    if (auto st = check_launch(host, "embedding")) return st;
    int bad = 0;
    if ((err = cudaMemcpyAsync(&bad, flag, sizeof bad, cudaMemcpyDeviceToHost, stream)) != cudaSuccess)
      return cuda_fail(host, "embedding", "cudaMemcpyAsync", err);
    if ((err = cudaStreamSynchronize(stream)) != cudaSuccess)
      return cuda_fail(host, "embedding", "cudaStreamSynchronize", err);
    PARLEY_CHECK(host, bad == 0, "embedding: an id is outside [0, %lld) (its output row was zeroed)", ll(a->vocab));
    return PARLEY_KERNEL_OK;
  });
}

parley_kernel_status topk_f32(const parley_kernel_context *ctx, const void *args) {
  return guarded("topk", ctx, [&]() -> parley_kernel_status {
    BEGIN("topk", parley_topk_args);
    PARLEY_CHECK(host, a->rows >= 0, "topk: rows (%lld) < 0", ll(a->rows));
    PARLEY_CHECK(host, a->cols >= 1 && a->cols <= INT32_MAX, "topk: cols (%lld) outside [1, INT32_MAX]", ll(a->cols));
    PARLEY_CHECK(host, a->k >= 1 && a->k <= a->cols, "topk: k (%lld) outside [1, cols=%lld]", ll(a->k), ll(a->cols));
    if (a->rows == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->x && a->values && a->indices, "topk: x, values or indices is NULL");
    PARLEY_CHECK(host, a->ld_x >= a->cols, "topk: ld_x (%lld) < cols (%lld)", ll(a->ld_x), ll(a->cols));
    if (a->k > kTopkMaxK)
      return host.fail(PARLEY_KERNEL_UNSUPPORTED, "topk: k (%lld) > %lld is not supported by the cuda plugin", ll(a->k),
                       ll(kTopkMaxK));
    launch_topk(a->rows, a->cols, a->k, static_cast<const float *>(a->x), a->ld_x, static_cast<float *>(a->values),
                a->indices, stream);
    return check_launch(host, "topk");
  });
}

}  // namespace parley::cuda
