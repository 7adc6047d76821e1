// LINEAR (plugin ABI 1.2) on the cuda device: out = act(x @ W^T + bias) +
// residual with the weight kept on the device in its stored precision.
//
// prepare_weight uploads the weight once, in the layout of
// linear/linear_layout.h (the file's rows padded to 32 elements, plus the F32
// scales), into one block of the device's caching allocator; the host copy is
// not needed afterwards (no PARLEY_PREPARED_USES_SOURCE). An I8 weight takes a
// quarter of the device memory of the float32 expansion the runtime would
// otherwise upload, I4 an eighth.
//
// The product: F32 weights go to cuBLASLt (gemm.cpp: bias and ReLU/GELU-tanh
// fused, residual as beta * C when there is no activation, else a residual
// kernel); F16, BF16, I8 and I4 weights to the kernels of
// linear/linear_body.cuh (converted in registers, epilogue fused): a warp per
// output feature for m <= 8, 64 x 64 tiles above.
// 16-bit activations (plugin.h; registered per weight dtype with dtype F16
// and BF16): the same bodies read x and the residual as F16 / BF16 and round
// the output once; F32 weights then run on those bodies too (CUDA cores, no
// tensor cores).
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_common.h"
#include "linear/linear_layout.h"

namespace parley::cuda {

void launch_linear(int weight_dtype, const lin::LinearParams &p, bool tensor_cores,
                   cudaStream_t s);  // linear_kernels.cu
void launch_linear_residual(const lin::ResidualParams &p, cudaStream_t s);

namespace {

// PARLEY_CUDA_EXACT=1 (read once): products of more than 8 rows keep fp32
// activations and weights (linear_tiled) instead of the tensor-core kernel,
// which rounds x (and I8 / I4 weights times their scales) to 16 bits.
// Any other value than 0 / 1 is reported and taken as 1, as PARLEY_CPU_EXACT.
bool exact_activations() {
  static const bool exact = [] {
    const char *env = std::getenv("PARLEY_CUDA_EXACT");
    if (!env || !*env || std::strcmp(env, "0") == 0) return false;
    if (std::strcmp(env, "1") != 0)
      std::fprintf(stderr, "parley cuda plugin: PARLEY_CUDA_EXACT='%s' is not 0 or 1; taking it as 1\n", env);
    return true;
  }();
  return exact;
}

constexpr size_t kUploadChunkBytes = size_t{8} << 20;  // host packing buffer (one staging chunk)

struct DeviceWeight {
  std::string name;
  lin::Layout layout;
  int32_t quant = PARLEY_QUANT_NONE;
  uint8_t *mem = nullptr;  // device: rows, then scales at layout.scale_offset
  DeviceState *state = nullptr;
};

const char *weight_name(const parley_weight_desc *d) {
  return d->name ? d->name : "(unnamed)";
}

// The checks of the cpu plugin's prepare_weight (plugins/cpu/linear.cpp), so
// that both devices accept and refuse the same weights.
parley_kernel_status check_desc(const Host &host, const parley_weight_desc *d, int32_t dtype) {
  if (!d) return host.fail(PARLEY_KERNEL_INVALID_ARGUMENT, "linear: weight desc is NULL");
  if (d->struct_size < sizeof(parley_weight_desc))
    return host.fail(PARLEY_KERNEL_INVALID_ARGUMENT, "linear: weight desc struct_size (%zu) < %zu", d->struct_size,
                     sizeof(parley_weight_desc));
  const char *name = weight_name(d);
  const int64_t dt = enum_value(d->dtype);
  if (dt != dtype)
    return host.fail(PARLEY_KERNEL_INVALID_ARGUMENT, "linear: weight '%.200s' has dtype %s, this kernel serves %s",
                     name, dtype_name(dt), dtype_name(dtype));
  PARLEY_CHECK(host, d->n >= 1 && d->k >= 1, "linear: weight '%.200s' has shape [%lld, %lld]", name, ll(d->n),
               ll(d->k));
  PARLEY_CHECK(host, d->data != nullptr, "linear: weight '%.200s' has no data", name);
  const int bits = lin::weight_bits(dtype);
  if (dtype == PARLEY_DTYPE_I4)
    PARLEY_CHECK(host, d->k % 2 == 0, "linear: I4 weight '%.200s' has an odd row length %lld", name, ll(d->k));
  if (d->k > INT32_MAX - lin::kKAlign || d->n > INT32_MAX)
    return host.fail(PARLEY_KERNEL_UNSUPPORTED, "linear: weight '%.200s' [%lld, %lld] is too large for the cuda plugin",
                     name, ll(d->n), ll(d->k));
  const int64_t row_bytes = d->k * bits / 8;
  if (dtype != PARLEY_DTYPE_I4)
    PARLEY_CHECK(host, d->ld_bytes % (bits / 8) == 0,
                 "linear: weight '%.200s': ld_bytes (%lld) is not a multiple of the element size", name,
                 ll(d->ld_bytes));
  PARLEY_CHECK(host, d->ld_bytes >= row_bytes, "linear: weight '%.200s': ld_bytes (%lld) < row bytes (%lld)", name,
               ll(d->ld_bytes), ll(row_bytes));
  const bool float_type = dtype == PARLEY_DTYPE_F32 || dtype == PARLEY_DTYPE_F16 || dtype == PARLEY_DTYPE_BF16;
  const int64_t q = enum_value(d->quant);
  if (float_type) {
    if (q != PARLEY_QUANT_NONE)
      return host.fail(PARLEY_KERNEL_UNSUPPORTED, "linear: %s weight '%.200s' with quantization %lld",
                       dtype_name(dtype), name, ll(q));
    return PARLEY_KERNEL_OK;
  }
  if (q == PARLEY_QUANT_PER_ROW && dtype == PARLEY_DTYPE_I8) {
    PARLEY_CHECK(host, d->scales != nullptr, "linear: weight '%.200s' has no scales", name);
    return PARLEY_KERNEL_OK;
  }
  if (q == PARLEY_QUANT_GROUPWISE) {
    PARLEY_CHECK(host, d->scales != nullptr, "linear: weight '%.200s' has no scales", name);
    PARLEY_CHECK(host, d->group_size == 32 || d->group_size == 64 || d->group_size == 128,
                 "linear: weight '%.200s': group size %lld is not 32, 64 or 128", name, ll(d->group_size));
    PARLEY_CHECK(host, d->k % d->group_size == 0, "linear: weight '%.200s': group size %lld does not divide k = %lld",
                 name, ll(d->group_size), ll(d->k));
    return PARLEY_KERNEL_OK;
  }
  return host.fail(PARLEY_KERNEL_UNSUPPORTED, "linear: %s weight '%.200s' with quantization %lld is not supported",
                   dtype_name(dtype), name, ll(q));
}

parley_kernel_status prepare(const parley_kernel_context *ctx, const parley_weight_desc *d, parley_prepared_weight *out,
                             int32_t dtype) {
  return guarded("linear", ctx, [&]() -> parley_kernel_status {
    if (ctx == nullptr || ctx->struct_size < sizeof(parley_kernel_context)) return PARLEY_KERNEL_INVALID_ARGUMENT;
    Host host(ctx->host);
    if (ctx->device_state == nullptr)
      return host.fail(PARLEY_KERNEL_DEVICE_ERROR, "linear: no cuda device state (the device was not initialised)");
    if (auto st = check_desc(host, d, dtype)) return st;
    PARLEY_CHECK(host, out != nullptr && out->struct_size >= sizeof(parley_prepared_weight),
                 "linear: prepared weight output is NULL or too small");
    const char *name = weight_name(d);
    lin::Layout L;
    if (!lin::make_layout(*d, &L))
      return host.fail(PARLEY_KERNEL_UNSUPPORTED,
                       "linear: weight '%.200s' [%lld, %lld] is too large for the cuda plugin", name, ll(d->n),
                       ll(d->k));
    auto *state = static_cast<DeviceState *>(ctx->device_state);
    if (auto st = use_device("linear", host, state)) return st;

    // Weights live on the device's own stream (the ABI's allocate has no
    // stream either); the upload is waited for below, so any stream may use
    // the weight afterwards.
    void *raw = nullptr;
    std::string error;
    if (auto st = state->allocator.allocate(state->stream, static_cast<size_t>(L.total), &raw, &error,
                                            /*long_lived=*/true))
      return host.fail(st, "linear: weight '%.200s' (%s [%lld, %lld], %lld bytes): %s", name, dtype_name(dtype),
                       ll(d->n), ll(d->k), ll(L.total), error.c_str());
    auto *mem = static_cast<uint8_t *>(raw);
    auto fail_release = [&](parley_kernel_status st, const char *what) {
      (void)cudaStreamSynchronize(state->stream);
      state->allocator.release(mem);
      return host.fail(st, "linear: weight '%.200s': %s", name, what);
    };

    // Pack rows into a host chunk and copy it (the copy reads the chunk
    // before it returns, so the chunk is reused at once).
    const int64_t rows_per_chunk = std::max<int64_t>(1, static_cast<int64_t>(kUploadChunkBytes) / L.pitch);
    std::vector<uint8_t> chunk(static_cast<size_t>(std::min(rows_per_chunk, L.n) * L.pitch));
    for (int64_t r0 = 0; r0 < L.n; r0 += rows_per_chunk) {
      const int64_t r1 = std::min(L.n, r0 + rows_per_chunk);
      lin::pack_rows(*d, L, r0, r1, chunk.data());
      if (device_copy(state, mem + r0 * L.pitch, chunk.data(), static_cast<size_t>((r1 - r0) * L.pitch),
                      PARLEY_COPY_HOST_TO_DEVICE, state->stream) != PARLEY_KERNEL_OK)
        return fail_release(PARLEY_KERNEL_DEVICE_ERROR, "copying the weight to the device failed");
    }
    if (L.scale_count > 0 && device_copy(state, mem + L.scale_offset, d->scales, static_cast<size_t>(L.scale_count) * 4,
                                         PARLEY_COPY_HOST_TO_DEVICE, state->stream) != PARLEY_KERNEL_OK)
      return fail_release(PARLEY_KERNEL_DEVICE_ERROR, "copying the scales to the device failed");
    const cudaError_t err = cudaStreamSynchronize(state->stream);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      char what[200];
      std::snprintf(what, sizeof what, "upload failed: %s (%s)", cudaGetErrorString(err), cudaGetErrorName(err));
      return fail_release(err == cudaErrorMemoryAllocation ? PARLEY_KERNEL_OUT_OF_MEMORY : PARLEY_KERNEL_DEVICE_ERROR,
                          what);
    }
    auto *w = new (std::nothrow) DeviceWeight();
    if (w == nullptr) return fail_release(PARLEY_KERNEL_OUT_OF_MEMORY, "out of host memory");
    w->name = name;
    w->layout = L;
    w->quant = d->quant;
    w->mem = mem;
    w->state = state;
    out->handle = w;
    out->bytes =
        Allocator::size_class(static_cast<size_t>(L.total), /*long_lived=*/true);  // what the block holds on the device
    out->flags = 0;
    return PARLEY_KERNEL_OK;
  });
}

}  // namespace

parley_kernel_status linear_prepare_f32(const parley_kernel_context *c, const parley_weight_desc *d,
                                        parley_prepared_weight *o) {
  return prepare(c, d, o, PARLEY_DTYPE_F32);
}
parley_kernel_status linear_prepare_f16(const parley_kernel_context *c, const parley_weight_desc *d,
                                        parley_prepared_weight *o) {
  return prepare(c, d, o, PARLEY_DTYPE_F16);
}
parley_kernel_status linear_prepare_bf16(const parley_kernel_context *c, const parley_weight_desc *d,
                                         parley_prepared_weight *o) {
  return prepare(c, d, o, PARLEY_DTYPE_BF16);
}
parley_kernel_status linear_prepare_i8(const parley_kernel_context *c, const parley_weight_desc *d,
                                       parley_prepared_weight *o) {
  return prepare(c, d, o, PARLEY_DTYPE_I8);
}
parley_kernel_status linear_prepare_i4(const parley_kernel_context *c, const parley_weight_desc *d,
                                       parley_prepared_weight *o) {
  return prepare(c, d, o, PARLEY_DTYPE_I4);
}

void linear_release(const parley_kernel_context *, void *handle) {
  auto *w = static_cast<DeviceWeight *>(handle);
  if (w == nullptr) return;
  try {
    // Kernels on any stream may still read the weight: wait for them before
    // the block can be handed out again.
    (void)cudaSetDevice(w->state->device);
    (void)cudaDeviceSynchronize();
    w->state->allocator.release(w->mem);
  } catch (...) {
  }
  delete w;
}

parley_kernel_status linear_run(const parley_kernel_context *ctx, const void *args) {
  return guarded("linear", ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    DeviceState *state = nullptr;
    cudaStream_t stream = nullptr;
    const parley_linear_args *a = nullptr;
    // A 1.2-1.4 host's struct is accepted; the 1.5 statistics are not
    // declared (no PARLEY_KERNEL_FLAG_LINEAR_STATS), so never read.
    // F32 activations, or 16-bit ones (plugin.h) on the SIMT / tensor-core bodies.
    if (auto st = begin_call("linear", ctx, args, &host, &state, &stream, &a,
                             (1u << PARLEY_DTYPE_F32) | (1u << PARLEY_DTYPE_F16) | (1u << PARLEY_DTYPE_BF16),
                             PARLEY_LINEAR_ARGS_SIZE_V1_2))
      return st;
    PARLEY_CHECK(host, a->weight != nullptr, "linear: weight is NULL (not prepared?)");
    const DeviceWeight &w = *static_cast<const DeviceWeight *>(a->weight);
    const lin::Layout &L = w.layout;
    PARLEY_CHECK(host, w.state == state, "linear: weight '%.200s' was prepared for another cuda device",
                 w.name.c_str());
    const int64_t m = a->m, n = a->n, k = a->k;
    PARLEY_CHECK(host, n == L.n && k == L.k, "linear: n=%lld k=%lld but weight '%.200s' is [%lld, %lld]", ll(n), ll(k),
                 w.name.c_str(), ll(L.n), ll(L.k));
    PARLEY_CHECK(host, m >= 0, "linear: m (%lld) < 0", ll(m));
    const int64_t act = enum_value(a->activation);
    PARLEY_CHECK(host, valid_activation(act), "linear: unknown activation %lld", ll(act));
    PARLEY_CHECK(host, a->ld_x >= k && a->ld_out >= n, "linear: ld_x (%lld) < k or ld_out (%lld) < n", ll(a->ld_x),
                 ll(a->ld_out));
    if (a->residual) PARLEY_CHECK(host, a->ld_residual >= n, "linear: ld_residual (%lld) < n", ll(a->ld_residual));
    if (m == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->x && a->out, "linear: x or out is NULL");
    PARLEY_CHECK(host, a->x != a->out, "linear: out aliases x");
    if (a->residual && a->residual == a->out)
      PARLEY_CHECK(host, a->ld_residual == a->ld_out, "linear: out aliases residual with another row stride");
    const bool act16 = a->dtype != PARLEY_DTYPE_F32;
    if (auto st = use_device("linear", host, state)) return st;
    auto *out = static_cast<float *>(a->out);
    const auto *res = static_cast<const float *>(a->residual);

    // The bodies of linear/: every weight type but F32 with F32 activations
    // (cuBLASLt below); with F16 activations F32 weights too, on CUDA cores.
    if (L.dtype != PARLEY_DTYPE_F32 || act16) {
      lin::LinearParams p;
      p.x = a->x, p.ld_x = a->ld_x;
      p.act_dtype = a->dtype;
      p.w = w.mem, p.pitch = L.pitch;
      p.scales = L.scale_count ? reinterpret_cast<const float *>(w.mem + L.scale_offset) : nullptr;
      p.group = L.group, p.groups_per_row = L.groups_per_row;
      p.bias = a->bias;
      p.residual = a->residual, p.ld_res = a->ld_residual;
      p.out = a->out, p.ld_out = a->ld_out;
      p.m = m, p.n = n, p.k = k, p.kp = L.kp;
      p.act = static_cast<int32_t>(act);
      p.grid_y = static_cast<int32_t>(std::min<int64_t>((m + lin::kTileM - 1) / lin::kTileM, 65535));
      launch_linear(L.dtype, p, !exact_activations(), stream);
      return check_launch(host, "linear");
    }

    // F32 weights: cuBLASLt (gemm.cpp), x [m, k] times the [n, kp] weight transposed.
    parley_gemm_args g{};
    g.struct_size = sizeof g;
    g.dtype = PARLEY_DTYPE_F32;
    g.trans_a = 0, g.trans_b = 1;
    g.m = m, g.n = n, g.k = k, g.batch = 1;
    g.a = a->x, g.lda = a->ld_x;
    g.b = w.mem, g.ldb = L.kp;
    g.c = out, g.ldc = a->ld_out;
    g.alpha = 1.f, g.beta = 0.f;
    g.bias = a->bias;
    g.epilogue = static_cast<int32_t>(act);
    if (res == nullptr) return gemm_run(ctx, &g);
    if (act == PARLEY_ACT_NONE) {  // out = x W^T + bias + 1 * residual, in cuBLASLt
      if (res != out) {
        const cudaError_t err =
            cudaMemcpy2DAsync(out, static_cast<size_t>(a->ld_out) * 4, res, static_cast<size_t>(a->ld_residual) * 4,
                              static_cast<size_t>(n) * 4, static_cast<size_t>(m), cudaMemcpyDeviceToDevice, stream);
        if (err != cudaSuccess) return cuda_fail(host, "linear", "cudaMemcpy2DAsync (residual)", err);
      }
      g.beta = 1.f;
      return gemm_run(ctx, &g);
    }
    // An activation before the residual: the product into a temporary, then
    // out = temporary + residual (out may be the residual).
    void *tmp = nullptr;
    std::string error;
    size_t tmp_bytes = 0;
    if (__builtin_mul_overflow(static_cast<size_t>(m), static_cast<size_t>(n) * 4, &tmp_bytes))
      return host.fail(PARLEY_KERNEL_OUT_OF_MEMORY, "linear: %lld x %lld output is too large", ll(m), ll(n));
    if (auto st = state->allocator.allocate(stream, tmp_bytes, &tmp, &error))
      return host.fail(st, "linear: weight '%.200s': temporary output: %s", w.name.c_str(), error.c_str());
    g.c = tmp, g.ldc = n;
    parley_kernel_status st = gemm_run(ctx, &g);
    if (st == PARLEY_KERNEL_OK) {
      lin::ResidualParams rp;
      rp.src = static_cast<const float *>(tmp), rp.ld_src = n;
      rp.residual = res, rp.ld_res = a->ld_residual;
      rp.out = out, rp.ld_out = a->ld_out;
      rp.rows = m, rp.cols = n;
      rp.grid = static_cast<int32_t>(
          std::min<int64_t>((m * n + lin::kResidualThreads - 1) / lin::kResidualThreads, int64_t{65535} * 16));
      launch_linear_residual(rp, stream);
      st = check_launch(host, "linear");
    }
    state->allocator.release(tmp);  // stream-ordered: reused only by later work on this stream
    return st;
  });
}

}  // namespace parley::cuda
