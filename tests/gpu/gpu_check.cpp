// On a machine with an NVIDIA GPU: runs CUDA kernels of libparley_cuda on
// fresh random inputs and compares them with the cpu plugin (fp32; max
// relative error, ‖got − want‖ / ‖want‖), then times attention (decode and
// prefill shapes) and GEMM and prints the fraction of H100 peak reached.
// Without a GPU it says so and exits 77 (skipped). Driven by run.sh.
//
//   gpu_check /path/to/libparley_cuda.so
#include <dlfcn.h>
#include <parley/plugin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../common/test_seed.h"
#include "../kernels/test_host.h"
#include "../simt/rel_error.hpp"

namespace {

using parley::test::TestHost;

struct Gpu {
  const parley_plugin_desc *plugin = nullptr;
  const parley_device_desc *dev = nullptr;
  void *state = nullptr;
  parley_kernel_context ctx{};
  parley_kernel_fn find(parley_op op) const {
    for (size_t i = 0; i < plugin->num_kernels; ++i)
      if (plugin->kernels[i].op == op && plugin->kernels[i].dtype == PARLEY_DTYPE_F32) return plugin->kernels[i].run;
    return nullptr;
  }
};

// A host vector mirrored on the device.
struct Buf {
  Gpu *gpu;
  std::vector<float> host;
  void *dev = nullptr;
  Buf(Gpu *g, size_t n, std::mt19937 &rng, float scale = 1.f) : gpu(g), host(n) {
    std::normal_distribution<float> nd(0.f, scale);
    for (float &x : host) x = nd(rng);
    if (gpu->dev->allocate(gpu->state, n * sizeof(float) + 64, 256, &dev) != PARLEY_KERNEL_OK) throw std::bad_alloc();
    gpu->dev->copy(gpu->state, dev, host.data(), n * sizeof(float), PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  }
  ~Buf() { gpu->dev->release(gpu->state, dev); }
  std::vector<float> read() {
    std::vector<float> out(host.size());
    gpu->dev->copy(gpu->state, out.data(), dev, out.size() * sizeof(float), PARLEY_COPY_DEVICE_TO_HOST, nullptr);
    gpu->dev->synchronize(gpu->state, nullptr);
    return out;
  }
};

using parley::test::rel_error;

int g_failures = 0;
void report(const char *what, double err, double tol) {
  const bool ok = err <= tol;
  g_failures += !ok;
  std::printf("  %-58s rel err %.2e  %s\n", what, err, ok ? "ok" : "FAIL");
}

// Runs the same args struct on the cpu (host pointers) and cuda (device
// pointers): `fill` sets the pointers for one side.
template <class Args>
void compare(Gpu &gpu, parley_op op, const char *what, Args args, std::vector<Buf *> ins, Buf *out,
             const std::function<void(Args &, bool device)> &fill, double tol) {
  TestHost host(2);
  Args cpu = args, dev = args;
  fill(cpu, false);
  fill(dev, true);
  const parley_kernel_fn cpu_fn = parley::test::find_kernel(op), gpu_fn = gpu.find(op);
  if (!gpu_fn) {
    std::printf("  %-58s not registered by the cuda plugin\n", what);
    ++g_failures;
    return;
  }
  gpu.ctx.host = host.services();
  if (cpu_fn(host.context(), &cpu) != PARLEY_KERNEL_OK || gpu_fn(&gpu.ctx, &dev) != PARLEY_KERNEL_OK) {
    std::printf("  %-58s kernel error: %s\n", what, host.last_error().c_str());
    ++g_failures;
    return;
  }
  (void)ins;
  report(what, rel_error(out->read(), out->host), tol);
}

double time_ms(Gpu &gpu, const std::function<void()> &launch, int reps = 20) {
  launch();
  gpu.dev->synchronize(gpu.state, nullptr);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) launch();
  gpu.dev->synchronize(gpu.state, nullptr);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
}

constexpr double kPeakFp16Tflops = 989.0, kPeakBandwidthTBs = 3.35;  // H100 SXM, dense

void check_attention(Gpu &gpu, std::mt19937 &rng, int batch, int heads, int kv_heads, int q_len, int kv_len, int D,
                     uint32_t mask, bool timing, int window = 0) {
  const int64_t nq = int64_t{batch} * q_len * heads * D, nk = int64_t{batch} * kv_len * kv_heads * D;
  Buf q(&gpu, nq, rng), k(&gpu, nk, rng), v(&gpu, nk, rng), out(&gpu, nq, rng),
      lse(&gpu, int64_t{batch} * heads * q_len, rng);
  std::vector<int32_t> lens(batch);
  for (int b = 0; b < batch; ++b) lens[b] = (mask & PARLEY_MASK_KEY_PADDING) ? kv_len - (b * 7) % kv_len : kv_len;
  void *dlens = nullptr;
  gpu.dev->allocate(gpu.state, lens.size() * 4, 256, &dlens);
  gpu.dev->copy(gpu.state, dlens, lens.data(), lens.size() * 4, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = batch, a.num_heads = heads, a.num_kv_heads = kv_heads, a.q_len = q_len, a.kv_len = kv_len, a.head_dim = D;
  a.q_stride_batch = int64_t{q_len} * heads * D, a.q_stride_head = D, a.q_stride_seq = int64_t{heads} * D;
  a.k_stride_batch = a.v_stride_batch = int64_t{kv_len} * kv_heads * D, a.k_stride_head = a.v_stride_head = D;
  a.k_stride_seq = a.v_stride_seq = int64_t{kv_heads} * D;
  a.out_stride_batch = a.q_stride_batch, a.out_stride_head = D, a.out_stride_seq = a.q_stride_seq;
  a.scale = 1.f / std::sqrt(float(D));
  a.mask = mask;
  a.window = window;
  char what[160];
  std::snprintf(what, sizeof what, "attention b%d h%d/%d q%d kv%d D%d mask%u window%d", batch, heads, kv_heads, q_len,
                kv_len, D, mask, window);
  compare<parley_attention_args>(
      gpu, PARLEY_OP_ATTENTION, what, a, {&q, &k, &v}, &out,
      [&](parley_attention_args &x, bool d) {
        x.q = d ? q.dev : q.host.data();
        x.k = d ? k.dev : k.host.data();
        x.v = d ? v.dev : v.host.data();
        x.out = d ? out.dev : out.host.data();
        x.lse = static_cast<float *>(d ? lse.dev : lse.host.data());
        x.key_lengths = static_cast<const int32_t *>(d ? dlens : lens.data());
      },
      1e-5);
  if (timing) {
    a.q = q.dev, a.k = k.dev, a.v = v.dev, a.out = out.dev, a.lse = static_cast<float *>(lse.dev);
    a.key_lengths = static_cast<const int32_t *>(dlens);
    const parley_kernel_fn fn = gpu.find(PARLEY_OP_ATTENTION);
    const double ms = time_ms(gpu, [&] { fn(&gpu.ctx, &a); });
    const double bytes = 2.0 * nk * 4 + 2.0 * nq * 4;
    const double flops = 4.0 * batch * heads * double(q_len) * kv_len * D * ((mask & 1u) ? 0.5 : 1.0);
    std::printf("    %.3f ms  %.1f GB/s (%.1f%% of %.2f TB/s)  %.2f TFLOP/s (%.2f%% of %.0f fp16 TFLOP/s)\n", ms,
                bytes / ms / 1e6, 100 * bytes / ms / 1e9 / kPeakBandwidthTBs, kPeakBandwidthTBs, flops / ms / 1e9,
                100 * flops / ms / 1e9 / kPeakFp16Tflops, kPeakFp16Tflops);
  }
  gpu.dev->release(gpu.state, dlens);
}

// F32 attention on a paged KV cache (plugin ABI 1.3) vs the cpu plugin on the
// same keys stored contiguously: the cuda side reads K/V from a pool of
// blocks through a shuffled block table (in device memory, like the lengths).
void check_attention_paged(Gpu &gpu, std::mt19937 &rng, int batch, int heads, int kv_heads, int q_len, int max_len,
                           int D, int block_size, int window = 0) {
  const int64_t nq = int64_t{batch} * q_len * heads * D, row = int64_t{kv_heads} * D, nk = batch * max_len * row;
  Buf q(&gpu, nq, rng), k(&gpu, nk, rng), v(&gpu, nk, rng), out(&gpu, nq, rng);
  std::vector<int32_t> lens(batch);
  int64_t stride = 0, blocks = 1;  // one spare block
  for (int b = 0; b < batch; ++b) {
    lens[b] = max_len - (b * 13) % max_len;
    stride = std::max<int64_t>(stride, (lens[b] + block_size - 1) / block_size);
    blocks += (lens[b] + block_size - 1) / block_size;
  }
  std::vector<int32_t> perm(blocks), table(batch * stride, 0);
  for (int64_t i = 0; i < blocks; ++i) perm[i] = static_cast<int32_t>(i);
  std::shuffle(perm.begin(), perm.end(), rng);
  Buf kpool(&gpu, blocks * block_size * row, rng), vpool(&gpu, blocks * block_size * row, rng);
  size_t next = 0;
  for (int b = 0; b < batch; ++b)
    for (int j = 0; j < lens[b]; ++j) {
      if (j % block_size == 0) table[b * stride + j / block_size] = perm[next++];
      const int64_t dst = (int64_t{table[b * stride + j / block_size]} * block_size + j % block_size) * row;
      std::copy_n(&k.host[(int64_t{b} * max_len + j) * row], row, &kpool.host[dst]);
      std::copy_n(&v.host[(int64_t{b} * max_len + j) * row], row, &vpool.host[dst]);
    }
  for (Buf *pool : {&kpool, &vpool})
    gpu.dev->copy(gpu.state, pool->dev, pool->host.data(), pool->host.size() * 4, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  void *dlens = nullptr, *dtable = nullptr;
  gpu.dev->allocate(gpu.state, lens.size() * 4, 256, &dlens);
  gpu.dev->allocate(gpu.state, table.size() * 4, 256, &dtable);
  gpu.dev->copy(gpu.state, dlens, lens.data(), lens.size() * 4, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  gpu.dev->copy(gpu.state, dtable, table.data(), table.size() * 4, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = batch, a.num_heads = heads, a.num_kv_heads = kv_heads, a.q_len = q_len, a.kv_len = max_len;
  a.head_dim = D;
  a.q_stride_batch = int64_t{q_len} * heads * D, a.q_stride_head = D, a.q_stride_seq = int64_t{heads} * D;
  a.k_stride_head = a.v_stride_head = D, a.k_stride_seq = a.v_stride_seq = row;
  a.out_stride_batch = a.q_stride_batch, a.out_stride_head = D, a.out_stride_seq = a.q_stride_seq;
  a.scale = 1.f / std::sqrt(float(D));
  a.mask = PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING;
  a.window = window;
  char what[160];
  std::snprintf(what, sizeof what, "attention paged b%d h%d/%d q%d kv<=%d D%d block%d window%d", batch, heads, kv_heads,
                q_len, max_len, D, block_size, window);
  compare<parley_attention_args>(
      gpu, PARLEY_OP_ATTENTION, what, a, {&q, &k, &v}, &out,
      [&](parley_attention_args &x, bool d) {
        x.q = d ? q.dev : q.host.data();
        x.k = d ? kpool.dev : k.host.data();
        x.v = d ? vpool.dev : v.host.data();
        x.out = d ? out.dev : out.host.data();
        x.k_stride_batch = x.v_stride_batch = d ? int64_t{block_size} * row : max_len * row;
        x.key_lengths = static_cast<const int32_t *>(d ? dlens : lens.data());
        if (d) x.block_table = static_cast<const int32_t *>(dtable), x.block_table_stride = stride;
        if (d) x.block_size = block_size;
      },
      1e-5);
  gpu.dev->release(gpu.state, dlens);
  gpu.dev->release(gpu.state, dtable);
}

// F16 attention (the tensor-core kernel) vs the cpu plugin on the same
// fp16-rounded values; tolerance 1e-2 (16-bit data).
uint16_t to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int exp = static_cast<int>((x >> 23) & 0xFF) - 127 + 15;
  const uint32_t mant = x & 0x7FFFFFu;
  if (exp <= 0) return static_cast<uint16_t>(sign);
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7C00u);
  uint32_t h = (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}
float from_half(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  uint32_t bits = exp == 0    ? sign
                  : exp == 31 ? (sign | 0x7F800000u | (mant << 13))
                              : (sign | ((exp + 112u) << 23) | (mant << 13));
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// 16-bit activations (plugin.h): the cuda row kernels at F16 / BF16 against
// the cpu plugin's F32 kernels on the same 16-bit values. Each output is the
// F32 result rounded once, so the norm-wise relative error is at most u
// (2^-11 F16, 2^-8 BF16) plus the F32 kernels' own difference (1e-5).
struct Buf16 {
  Gpu *gpu;
  bool bf16;
  std::vector<float> host;  // the 16-bit values, as floats (the cpu side)
  void *dev = nullptr;
  Buf16(Gpu *g, bool b, size_t n, std::mt19937 &rng) : gpu(g), bf16(b), host(n) {
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<uint16_t> bits(n);
    for (size_t i = 0; i < n; ++i) {
      bits[i] = bf16 ? to_bf16(nd(rng)) : to_half(nd(rng));
      host[i] = bf16 ? from_bf16(bits[i]) : from_half(bits[i]);
    }
    if (gpu->dev->allocate(gpu->state, n * 2 + 64, 256, &dev) != PARLEY_KERNEL_OK) throw std::bad_alloc();
    gpu->dev->copy(gpu->state, dev, bits.data(), n * 2, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  }
  ~Buf16() { gpu->dev->release(gpu->state, dev); }
  std::vector<float> read() {
    std::vector<uint16_t> bits(host.size());
    gpu->dev->copy(gpu->state, bits.data(), dev, bits.size() * 2, PARLEY_COPY_DEVICE_TO_HOST, nullptr);
    gpu->dev->synchronize(gpu->state, nullptr);
    std::vector<float> out(bits.size());
    for (size_t i = 0; i < bits.size(); ++i) out[i] = bf16 ? from_bf16(bits[i]) : from_half(bits[i]);
    return out;
  }
};

// Runs `args` on the cpu at F32 (host pointers) and on cuda at `dtype`
// (device pointers) and compares `out` with the cpu's result.
template <class Args>
void compare16(Gpu &gpu, parley_op op, int32_t dtype, const std::string &what, Args args, Buf16 &out,
               const std::function<void(Args &, bool device)> &fill) {
  TestHost host(2);
  Args cpu = args, dev = args;
  cpu.dtype = PARLEY_DTYPE_F32;
  dev.dtype = dtype;
  std::vector<float> want(out.host.size(), std::nanf(""));
  fill(cpu, false);
  fill(dev, true);
  parley_kernel_fn gpu_fn = nullptr;
  for (size_t i = 0; i < gpu.plugin->num_kernels; ++i)
    if (gpu.plugin->kernels[i].op == op && gpu.plugin->kernels[i].dtype == dtype) gpu_fn = gpu.plugin->kernels[i].run;
  if (!gpu_fn) {
    std::printf("  %-58s not registered by the cuda plugin\n", what.c_str());
    ++g_failures;
    return;
  }
  gpu.ctx.host = host.services();
  if (parley::test::find_kernel(op)(host.context(), &cpu) != PARLEY_KERNEL_OK ||
      gpu_fn(&gpu.ctx, &dev) != PARLEY_KERNEL_OK) {
    std::printf("  %-58s kernel error: %s\n", what.c_str(), host.last_error().c_str());
    ++g_failures;
    return;
  }
  report(what.c_str(), rel_error(out.read(), out.host), std::ldexp(1.0, dtype == PARLEY_DTYPE_BF16 ? -8 : -11) + 1e-5);
}

void check_rows16(Gpu &gpu, std::mt19937 &rng, int32_t dtype) {
  const bool bf16 = dtype == PARLEY_DTYPE_BF16;
  const std::string tag = bf16 ? " (bf16)" : " (f16)";
  const int64_t rows = 48, cols = 768;
  Buf16 x(&gpu, bf16, rows * cols, rng), y(&gpu, bf16, rows * cols, rng), out(&gpu, bf16, rows * cols, rng);
  Buf gamma(&gpu, cols, rng), beta(&gpu, cols, rng);  // parameters stay float
  for (parley_op op : {PARLEY_OP_LAYER_NORM, PARLEY_OP_RMS_NORM}) {
    parley_norm_args n{};
    n.struct_size = sizeof n, n.rows = rows, n.cols = cols, n.ld_x = n.ld_out = cols, n.eps = 1e-5f;
    compare16<parley_norm_args>(gpu, op, dtype,
                                std::string(op == PARLEY_OP_LAYER_NORM ? "layer_norm" : "rms_norm") + " 48x768" + tag,
                                n, out, [&](parley_norm_args &a, bool d) {
                                  a.x = d ? x.dev : x.host.data();
                                  a.gamma = d ? gamma.dev : gamma.host.data();
                                  a.beta = d ? beta.dev : beta.host.data();
                                  a.out = d ? out.dev : out.host.data();
                                });
  }
  parley_gated_activation_args ga{};
  ga.struct_size = sizeof ga, ga.activation = PARLEY_ACT_SILU, ga.rows = rows, ga.cols = cols;
  ga.ld_gate = ga.ld_up = ga.ld_out = cols;
  compare16<parley_gated_activation_args>(gpu, PARLEY_OP_GATED_ACTIVATION, dtype, "gated_activation silu 48x768" + tag,
                                          ga, out, [&](parley_gated_activation_args &a, bool d) {
                                            a.gate = d ? x.dev : x.host.data();
                                            a.up = d ? y.dev : y.host.data();
                                            a.out = d ? out.dev : out.host.data();
                                          });
  parley_add_args ad{};
  ad.struct_size = sizeof ad, ad.n = rows * cols, ad.alpha = 1.f;
  compare16<parley_add_args>(gpu, PARLEY_OP_ADD, dtype, "add 48x768" + tag, ad, out, [&](parley_add_args &a, bool d) {
    a.a = d ? x.dev : x.host.data();
    a.b = d ? y.dev : y.host.data();
    a.out = d ? out.dev : out.host.data();
  });
}

// f32_queries: the F32 kernel entry with kv_dtype F16 (fp32 queries and
// output over the fp16 cache: the tensor-core kernel serving a model that
// computes in F32 with an F16 KV cache); the cpu plugin gets the unrounded
// queries.
void check_attention_f16(Gpu &gpu, std::mt19937 &rng, int batch, int heads, int kv_heads, int q_len, int kv_len, int D,
                         uint32_t mask, bool timing, int window = 0, bool f32_queries = false) {
  const int32_t entry = f32_queries ? PARLEY_DTYPE_F32 : PARLEY_DTYPE_F16;
  parley_kernel_fn fn = nullptr;
  for (size_t i = 0; i < gpu.plugin->num_kernels; ++i)
    if (gpu.plugin->kernels[i].op == PARLEY_OP_ATTENTION && gpu.plugin->kernels[i].dtype == entry)
      fn = gpu.plugin->kernels[i].run;
  char what[160];
  std::snprintf(what, sizeof what, "attention %s b%d h%d/%d q%d kv%d D%d mask%u window%d",
                f32_queries ? "f32 q, f16 cache" : "f16", batch, heads, kv_heads, q_len, kv_len, D, mask, window);
  if (!fn) {
    std::printf("  %-58s not registered\n", what);
    ++g_failures;
    return;
  }
  const int64_t nq = int64_t{batch} * q_len * heads * D, nk = int64_t{batch} * kv_len * kv_heads * D;
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> hq(nq), hk(nk), hv(nk), hout(nq);
  Buf q(&gpu, nq, rng), k(&gpu, nk, rng), v(&gpu, nk, rng), out(&gpu, nq, rng);  // f32 copies for the cpu
  Buf out32(&gpu, nq, rng);                                                      // the device output with f32_queries
  if (!f32_queries)
    for (int64_t i = 0; i < nq; ++i) hq[i] = to_half(q.host[i]), q.host[i] = from_half(hq[i]);
  for (int64_t i = 0; i < nk; ++i) hk[i] = to_half(k.host[i]), k.host[i] = from_half(hk[i]);
  for (int64_t i = 0; i < nk; ++i) hv[i] = to_half(v.host[i]), v.host[i] = from_half(hv[i]);
  void *dq = nullptr, *dk = nullptr, *dv = nullptr, *dout = nullptr;
  gpu.dev->allocate(gpu.state, nq * 2, 256, &dq), gpu.dev->allocate(gpu.state, nk * 2, 256, &dk);
  gpu.dev->allocate(gpu.state, nk * 2, 256, &dv), gpu.dev->allocate(gpu.state, nq * 2, 256, &dout);
  gpu.dev->copy(gpu.state, dq, hq.data(), nq * 2, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  gpu.dev->copy(gpu.state, dk, hk.data(), nk * 2, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  gpu.dev->copy(gpu.state, dv, hv.data(), nk * 2, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  std::vector<int32_t> lens(batch);
  for (int b = 0; b < batch; ++b) lens[b] = (mask & PARLEY_MASK_KEY_PADDING) ? kv_len - (b * 7) % kv_len : kv_len;
  void *dlens = nullptr;
  gpu.dev->allocate(gpu.state, lens.size() * 4, 256, &dlens);
  gpu.dev->copy(gpu.state, dlens, lens.data(), lens.size() * 4, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.batch = batch, a.num_heads = heads, a.num_kv_heads = kv_heads, a.q_len = q_len, a.kv_len = kv_len, a.head_dim = D;
  a.q_stride_batch = int64_t{q_len} * heads * D, a.q_stride_head = D, a.q_stride_seq = int64_t{heads} * D;
  a.k_stride_batch = a.v_stride_batch = int64_t{kv_len} * kv_heads * D, a.k_stride_head = a.v_stride_head = D;
  a.k_stride_seq = a.v_stride_seq = int64_t{kv_heads} * D;
  a.out_stride_batch = a.q_stride_batch, a.out_stride_head = D, a.out_stride_seq = a.q_stride_seq;
  a.scale = 1.f / std::sqrt(float(D));
  a.mask = mask;
  a.window = window;
  parley_attention_args cpu = a, dev = a;
  cpu.dtype = PARLEY_DTYPE_F32, cpu.q = q.host.data(), cpu.k = k.host.data(), cpu.v = v.host.data();
  cpu.out = out.host.data(), cpu.key_lengths = lens.data();
  dev.dtype = PARLEY_DTYPE_F16, dev.q = dq, dev.k = dk, dev.v = dv, dev.out = dout;
  if (f32_queries) dev.dtype = PARLEY_DTYPE_F32, dev.kv_dtype = PARLEY_DTYPE_F16, dev.q = q.dev, dev.out = out32.dev;
  dev.key_lengths = static_cast<const int32_t *>(dlens);
  TestHost host(2);
  gpu.ctx.host = host.services();
  if (parley::test::find_kernel(PARLEY_OP_ATTENTION)(host.context(), &cpu) != PARLEY_KERNEL_OK ||
      fn(&gpu.ctx, &dev) != PARLEY_KERNEL_OK) {
    std::printf("  %-58s kernel error: %s\n", what, host.last_error().c_str());
    ++g_failures;
  } else {
    gpu.dev->copy(gpu.state, hout.data(), dout, nq * 2, PARLEY_COPY_DEVICE_TO_HOST, nullptr);
    gpu.dev->synchronize(gpu.state, nullptr);
    std::vector<float> got(nq);
    for (int64_t i = 0; i < nq; ++i) got[i] = from_half(hout[i]);
    if (f32_queries) got = out32.read();
    report(what, rel_error(got, out.host), 1e-2);
    if (timing) {
      const double ms = time_ms(gpu, [&] { fn(&gpu.ctx, &dev); });
      const double flops = 4.0 * batch * heads * double(q_len) * kv_len * D * ((mask & 1u) ? 0.5 : 1.0);
      std::printf("    %.3f ms  %.2f TFLOP/s (%.2f%% of %.0f fp16 tensor TFLOP/s)\n", ms, flops / ms / 1e9,
                  100 * flops / ms / 1e9 / kPeakFp16Tflops, kPeakFp16Tflops);
    }
  }
  for (void *p : {dq, dk, dv, dout, dlens}) gpu.dev->release(gpu.state, p);
}

// F32 attention over an I8 KV cache (kv_dtype I8, a scale per row) with the
// fused append: the cpu and cuda plugins get the same quantised cache and the
// same q_len new rows; the outputs must agree to 1e-5 and the appended rows
// (int8 values and scales) bit for bit, as both quantise with parley_attention_args'
// formula.
void check_attention_i8(Gpu &gpu, std::mt19937 &rng, int batch, int heads, int kv_heads, int q_len, int kv_len, int D,
                        bool timing) {
  char what[160];
  std::snprintf(what, sizeof what, "attention f32 q, i8 cache, append b%d h%d/%d q%d kv%d D%d", batch, heads, kv_heads,
                q_len, kv_len, D);
  const int64_t nq = int64_t{batch} * q_len * heads * D, rows = int64_t{batch} * kv_len * kv_heads;
  const int64_t nk = rows * D, nnew = int64_t{batch} * q_len * kv_heads * D;
  Buf q(&gpu, nq, rng), out(&gpu, nq, rng), kn(&gpu, nnew, rng), vn(&gpu, nnew, rng), ks(&gpu, rows, rng),
      vs(&gpu, rows, rng);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<int8_t> hk(nk), hv(nk);
  for (int64_t r = 0; r < rows; ++r)  // a quantised cache: random int8 rows, positive scales
    for (auto [data, scales] : {std::pair{&hk, &ks}, std::pair{&hv, &vs}}) {
      for (int d = 0; d < D; ++d)
        (*data)[r * D + d] = static_cast<int8_t>(std::lround(std::clamp(nd(rng) * 40.f, -127.f, 127.f)));
      scales->host[r] = 0.01f + std::fabs(nd(rng)) * 0.02f;
    }
  for (Buf *b : {&ks, &vs})
    gpu.dev->copy(gpu.state, b->dev, b->host.data(), b->host.size() * 4, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  void *dk = nullptr, *dv = nullptr, *dlens = nullptr;
  gpu.dev->allocate(gpu.state, nk, 256, &dk), gpu.dev->allocate(gpu.state, nk, 256, &dv);
  gpu.dev->copy(gpu.state, dk, hk.data(), nk, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  gpu.dev->copy(gpu.state, dv, hv.data(), nk, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  std::vector<int32_t> lens(batch);
  for (int b = 0; b < batch; ++b) lens[b] = std::max(q_len, kv_len - (b * 7) % kv_len);
  gpu.dev->allocate(gpu.state, lens.size() * 4, 256, &dlens);
  gpu.dev->copy(gpu.state, dlens, lens.data(), lens.size() * 4, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32, a.kv_dtype = PARLEY_DTYPE_I8;
  a.batch = batch, a.num_heads = heads, a.num_kv_heads = kv_heads, a.q_len = q_len, a.kv_len = kv_len, a.head_dim = D;
  a.q_stride_batch = int64_t{q_len} * heads * D, a.q_stride_head = D, a.q_stride_seq = int64_t{heads} * D;
  a.k_stride_batch = a.v_stride_batch = int64_t{kv_len} * kv_heads * D, a.k_stride_head = a.v_stride_head = D;
  a.k_stride_seq = a.v_stride_seq = int64_t{kv_heads} * D;
  a.scale_stride_batch = int64_t{kv_len} * kv_heads, a.scale_stride_head = 1, a.scale_stride_seq = kv_heads;
  a.out_stride_batch = a.q_stride_batch, a.out_stride_head = D, a.out_stride_seq = a.q_stride_seq;
  a.k_new_stride_batch = a.v_new_stride_batch = int64_t{q_len} * kv_heads * D;
  a.k_new_stride_head = a.v_new_stride_head = D, a.k_new_stride_seq = a.v_new_stride_seq = int64_t{kv_heads} * D;
  a.scale = 1.f / std::sqrt(float(D));
  a.mask = PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING;
  parley_attention_args cpu = a, dev = a;
  std::vector<int8_t> ck = hk, cv = hv;  // the cpu plugin appends into these
  cpu.q = q.host.data(), cpu.k = ck.data(), cpu.v = cv.data(), cpu.out = out.host.data(), cpu.key_lengths = lens.data();
  cpu.k_scales = ks.host.data(), cpu.v_scales = vs.host.data(), cpu.k_new = kn.host.data(), cpu.v_new = vn.host.data();
  dev.q = q.dev, dev.k = dk, dev.v = dv, dev.out = out.dev, dev.key_lengths = static_cast<const int32_t *>(dlens);
  dev.k_scales = static_cast<float *>(ks.dev), dev.v_scales = static_cast<float *>(vs.dev);
  dev.k_new = kn.dev, dev.v_new = vn.dev;
  const parley_kernel_desc *gpu_k = nullptr;
  for (size_t i = 0; i < gpu.plugin->num_kernels; ++i)
    if (gpu.plugin->kernels[i].op == PARLEY_OP_ATTENTION && gpu.plugin->kernels[i].dtype == PARLEY_DTYPE_F32)
      gpu_k = &gpu.plugin->kernels[i];
  TestHost host(2);
  gpu.ctx.host = host.services();
  if (!gpu_k || parley::test::find_kernel(PARLEY_OP_ATTENTION)(host.context(), &cpu) != PARLEY_KERNEL_OK ||
      gpu_k->run(&gpu.ctx, &dev) != PARLEY_KERNEL_OK) {
    std::printf("  %-58s kernel error: %s\n", what, host.last_error().c_str());
    ++g_failures;
  } else {
    const std::vector<float> got = out.read(), gks = ks.read(), gvs = vs.read();
    std::vector<int8_t> gk(nk), gv(nk);
    gpu.dev->copy(gpu.state, gk.data(), dk, nk, PARLEY_COPY_DEVICE_TO_HOST, nullptr);
    gpu.dev->copy(gpu.state, gv.data(), dv, nk, PARLEY_COPY_DEVICE_TO_HOST, nullptr);
    gpu.dev->synchronize(gpu.state, nullptr);
    const bool same_cache = gk == ck && gv == cv && std::memcmp(gks.data(), ks.host.data(), rows * 4) == 0 &&
                            std::memcmp(gvs.data(), vs.host.data(), rows * 4) == 0;
    if (!same_cache) {
      std::printf("  %-58s the appended int8 rows or scales differ from the cpu plugin's  FAIL\n", what);
      ++g_failures;
    }
    report(what, rel_error(got, out.host), 1e-5);
    if (timing) {
      const double ms = time_ms(gpu, [&] { gpu_k->run(&gpu.ctx, &dev); });
      std::printf("    %.3f ms  %.1f GB/s of int8 cache\n", ms, 2.0 * nk / ms / 1e6);
    }
  }
  for (void *p : {dk, dv, dlens}) gpu.dev->release(gpu.state, p);
}
}  // namespace

// LINEAR (plugin ABI 1.2): the same weight prepared by the cpu plugin and by
// the cuda plugin (each its own prepare_weight), the same product on both.
const parley_kernel_desc *find_linear(const parley_plugin_desc *p, int32_t weight_dtype) {
  for (size_t i = 0; p && i < p->num_kernels; ++i)
    if (p->kernels[i].op == PARLEY_OP_LINEAR && p->kernels[i].dtype == PARLEY_DTYPE_F32 &&
        p->kernels[i].weight_dtype == weight_dtype)
      return &p->kernels[i];
  return nullptr;
}

void check_linear(Gpu &gpu, std::mt19937 &rng, int32_t wdt, int32_t quant, int64_t group, int64_t m, int64_t n,
                  int64_t k, int act, bool timing) {
  TestHost host(2);
  const parley_kernel_desc *cpu_k =
      find_linear(parley_cpu_plugin_entry(PARLEY_PLUGIN_ABI_VERSION, host.services()), wdt);
  const parley_kernel_desc *gpu_k = find_linear(gpu.plugin, wdt);
  char what[160];
  std::snprintf(what, sizeof what, "linear w%s%s%lld m=%lld n=%lld k=%lld act %d",
                wdt == PARLEY_DTYPE_F32    ? "F32"
                : wdt == PARLEY_DTYPE_F16  ? "F16"
                : wdt == PARLEY_DTYPE_BF16 ? "BF16"
                : wdt == PARLEY_DTYPE_I8   ? "I8"
                                           : "I4",
                quant == PARLEY_QUANT_GROUPWISE ? " g" : " ", static_cast<long long>(group), static_cast<long long>(m),
                static_cast<long long>(n), static_cast<long long>(k), act);
  if (!cpu_k || !gpu_k) {
    std::printf("  %-58s not registered (cpu %d, cuda %d)\n", what, cpu_k != nullptr, gpu_k != nullptr);
    ++g_failures;
    return;
  }
  const int64_t row_bytes = wdt == PARLEY_DTYPE_I4 ? k / 2
                                                   : k * (wdt == PARLEY_DTYPE_F32  ? 4
                                                          : wdt == PARLEY_DTYPE_I8 ? 1
                                                                                   : 2);
  std::vector<uint8_t> data(static_cast<size_t>(n * row_bytes));
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t i = 0; i < n * k; ++i) {
    const float f = nd(rng);
    if (wdt == PARLEY_DTYPE_F32) {
      std::memcpy(&data[static_cast<size_t>(4 * i)], &f, 4);
    } else if (wdt == PARLEY_DTYPE_F16 || wdt == PARLEY_DTYPE_BF16) {
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      const uint16_t h = wdt == PARLEY_DTYPE_F16 ? to_half(f) : static_cast<uint16_t>(bits >> 16);
      std::memcpy(&data[static_cast<size_t>(2 * i)], &h, 2);
    }
  }
  if (wdt == PARLEY_DTYPE_I8 || wdt == PARLEY_DTYPE_I4)
    for (uint8_t &b : data) b = static_cast<uint8_t>(byte(rng));
  std::vector<float> scales;
  if (quant == PARLEY_QUANT_PER_ROW) scales.resize(static_cast<size_t>(n));
  if (quant == PARLEY_QUANT_GROUPWISE) scales.resize(static_cast<size_t>(n * (k / group)));
  std::uniform_real_distribution<float> sd(0.005f, 0.05f);
  for (float &v : scales) v = sd(rng);
  parley_weight_desc d{};
  d.struct_size = sizeof d, d.name = "gpu_check.weight", d.dtype = wdt, d.quant = quant, d.n = n, d.k = k;
  d.data = data.data(), d.ld_bytes = row_bytes, d.scales = scales.empty() ? nullptr : scales.data();
  d.group_size = quant == PARLEY_QUANT_GROUPWISE ? group : 0;
  gpu.ctx.host = host.services();
  parley_prepared_weight pc{}, pg{};
  pc.struct_size = pg.struct_size = sizeof pc;
  if (cpu_k->prepare_weight(host.context(), &d, &pc) != PARLEY_KERNEL_OK ||
      gpu_k->prepare_weight(&gpu.ctx, &d, &pg) != PARLEY_KERNEL_OK) {
    std::printf("  %-58s prepare_weight failed: %s\n", what, host.last_error().c_str());
    ++g_failures;
    return;
  }
  Buf x(&gpu, static_cast<size_t>(m * k), rng), bias(&gpu, static_cast<size_t>(n), rng),
      res(&gpu, static_cast<size_t>(m * n), rng), out(&gpu, static_cast<size_t>(m * n), rng);
  parley_linear_args a{};
  a.struct_size = sizeof a, a.dtype = PARLEY_DTYPE_F32, a.activation = act, a.m = m, a.n = n, a.k = k;
  a.ld_x = k, a.ld_residual = n, a.ld_out = n;
  parley_linear_args c = a, g = a;
  c.x = x.host.data(), c.bias = bias.host.data(), c.residual = res.host.data(), c.out = out.host.data();
  c.weight = pc.handle;
  g.x = x.dev, g.bias = static_cast<const float *>(bias.dev), g.residual = res.dev, g.out = out.dev;
  g.weight = pg.handle;
  if (cpu_k->run(host.context(), &c) != PARLEY_KERNEL_OK || gpu_k->run(&gpu.ctx, &g) != PARLEY_KERNEL_OK) {
    std::printf("  %-58s kernel error: %s\n", what, host.last_error().c_str());
    ++g_failures;
  } else {
    // Above 8 rows the tensor-core kernel (linear_mma.cuh) rounds x to 16 bits
    // (and I8 / I4 weights times their scales to F16): 8 x those roundings'
    // relative error. F32 weights go to cuBLASLt in fp32.
    const double tol = m <= 8 || wdt == PARLEY_DTYPE_F32 ? 1e-5
                       : wdt == PARLEY_DTYPE_BF16        ? 8 * 0x1p-8
                       : wdt == PARLEY_DTYPE_F16         ? 8 * 0x1p-11
                                                         : 16 * 0x1p-11;
    report(what, rel_error(out.read(), out.host), tol);
    if (timing) {
      const double ms = time_ms(gpu, [&] { gpu_k->run(&gpu.ctx, &g); });
      const double bytes = static_cast<double>(pg.bytes) + 4.0 * (m * k + 2 * m * n + n);
      std::printf("    %.3f ms, %.1f GB/s (%.0f%% of H100 SXM bandwidth; device bytes of the weight %llu)\n", ms,
                  bytes / ms / 1e6, 100.0 * bytes / ms / 1e6 / (kPeakBandwidthTBs * 1e3),
                  static_cast<unsigned long long>(pg.bytes));
    }
  }
  cpu_k->release_weight(host.context(), pc.handle);
  gpu_k->release_weight(&gpu.ctx, pg.handle);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s /path/to/libparley_cuda.so\n", argv[0]);
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    std::fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
    return 1;
  }
  auto entry = reinterpret_cast<parley_plugin_entry_fn>(dlsym(lib, "parley_plugin_entry"));
  TestHost host(2);
  Gpu gpu;
  gpu.plugin = entry ? entry(PARLEY_PLUGIN_ABI_VERSION, host.services()) : nullptr;
  if (!gpu.plugin || gpu.plugin->num_devices < 1) {
    std::fprintf(stderr, "%s is not a usable parley plugin\n", argv[1]);
    return 1;
  }
  gpu.dev = &gpu.plugin->devices[0];
  char error[512] = {0};
  if (gpu.dev->init(host.services(), &gpu.state, error, sizeof error) != PARLEY_KERNEL_OK) {
    std::printf("no usable CUDA device: %s\nskipped\n", error);
    return 77;
  }
  gpu.ctx.struct_size = sizeof gpu.ctx;
  gpu.ctx.device_state = gpu.state;
  std::mt19937 rng(parley::test::base_seed());  // fixed default, printed; PARLEY_TEST_SEED overrides

  std::printf("== attention (cuda vs cpu plugin, fp32)\n");
  for (int D : {64, 128})
    for (uint32_t mask : {0u, 1u, 2u, 3u}) {
      check_attention(gpu, rng, 2, 8, 2, 1, 300, D, mask, false);  // decode, GQA
      check_attention(gpu, rng, 2, 8, 8, 37, 37, D, mask, false);  // prefill
      check_attention(gpu, rng, 1, 4, 1, 20, 7, D, mask, false);   // q_len > kv_len, MQA
    }
  std::printf("== attention on a paged KV cache (cuda, block table vs cpu plugin, contiguous)\n");
  for (int block : {1, 16, 32}) {
    check_attention_paged(gpu, rng, 4, 8, 2, 1, 300, 64, block);  // decode, GQA
    check_attention_paged(gpu, rng, 2, 8, 2, 7, 90, 128, block);  // a chunk of several tokens
  }
  check_attention_paged(gpu, rng, 1, 14, 2, 1, 4096, 64, 16);  // long decode: several splits
  std::printf("== attention, f32 queries over an i8 cache (SIMT split-KV, fused append vs cpu plugin)\n");
  for (int D : {64, 128}) {
    check_attention_i8(gpu, rng, 2, 14, 2, 1, 300, D, false);  // decode, GQA 7
    check_attention_i8(gpu, rng, 2, 8, 2, 37, 90, D, false);   // a chunk over past keys
  }
  check_attention_i8(gpu, rng, 8, 14, 2, 1, 4096, 64, true);  // long decode: splits (timing)
  std::printf("== attention f16, tensor cores (cuda vs cpu plugin on the rounded values)\n");
  for (int D : {64, 128})
    for (uint32_t mask : {0u, 1u, 2u, 3u}) {
      check_attention_f16(gpu, rng, 2, 8, 2, 100, 100, D, mask, false);
      check_attention_f16(gpu, rng, 1, 4, 1, 70, 33, D, mask, false);
    }
  check_attention_f16(gpu, rng, 1, 14, 2, 2048, 2048, 64, 1u, true);
  std::printf("== attention, f32 queries over an f16 cache (tensor cores: GQA packing, split-KV decode)\n");
  for (int D : {64, 128})
    for (uint32_t mask : {1u, 3u}) {
      check_attention_f16(gpu, rng, 2, 14, 2, 1, 300, D, mask, false, 0, true);   // decode, GQA 7
      check_attention_f16(gpu, rng, 2, 8, 2, 37, 90, D, mask, false, 0, true);    // a chunk over past keys
      check_attention_f16(gpu, rng, 1, 14, 2, 1, 4096, D, mask, false, 0, true);  // long decode: splits
    }
  check_attention_f16(gpu, rng, 1, 14, 2, 1, 4096, 64, 1u, true, 0, true);  // decode timing (splits)
  check_attention_f16(gpu, rng, 8, 14, 2, 1, 4096, 64, 1u, true, 0, true);
  // Sliding windows (plugin ABI 1.4) on every kernel: smaller than, equal to
  // and larger than the sequence, decode and chunks over past keys, paged.
  std::printf("== attention with a sliding window (cuda vs cpu plugin)\n");
  for (int window : {1, 40, 300, 1000}) {
    check_attention(gpu, rng, 2, 8, 2, 1, 300, 64, 3u, false, window);   // decode, GQA, ragged lengths
    check_attention(gpu, rng, 2, 8, 8, 37, 37, 128, 1u, false, window);  // prefill
    check_attention(gpu, rng, 2, 4, 1, 5, 90, 64, 3u, false, window);    // a chunk over past keys
    check_attention_paged(gpu, rng, 4, 8, 2, 1, 300, 64, 16, window);
    check_attention_paged(gpu, rng, 2, 8, 2, 7, 90, 128, 1, window);
    check_attention_f16(gpu, rng, 2, 8, 2, 100, 100, 64, 3u, false, window);
    check_attention_f16(gpu, rng, 1, 4, 1, 70, 300, 128, 1u, false, window);
  }
  check_attention_paged(gpu, rng, 1, 14, 2, 1, 4096, 64, 16, 512);  // long decode, window of 512: splits over it
  std::printf("== attention timing (roofline fractions are of H100 SXM peaks)\n");
  check_attention(gpu, rng, 1, 14, 2, 1, 4096, 64, 1u, true);     // decode, Qwen2.5-0.5B-like
  check_attention(gpu, rng, 8, 14, 2, 1, 4096, 64, 1u, true);     // decode, batch 8
  check_attention(gpu, rng, 1, 14, 2, 2048, 2048, 64, 1u, true);  // prefill
  // A sliding window of 512 over the same shapes: the time should follow the
  // window (the roofline figures above count the whole cache, so read these
  // as the ms only).
  check_attention(gpu, rng, 1, 14, 2, 1, 4096, 64, 1u, true, 512);     // decode
  check_attention(gpu, rng, 1, 14, 2, 2048, 2048, 64, 1u, true, 512);  // prefill
  check_attention_f16(gpu, rng, 1, 14, 2, 2048, 2048, 64, 1u, true, 512);

  std::printf("== linear (plugin ABI 1.2): cuda vs cpu plugin, each preparing the weight itself\n");
  {
    struct W {
      int32_t dtype, quant;
      int64_t group;
    };
    const W weights[] = {{PARLEY_DTYPE_F32, PARLEY_QUANT_NONE, 0},      {PARLEY_DTYPE_F16, PARLEY_QUANT_NONE, 0},
                         {PARLEY_DTYPE_BF16, PARLEY_QUANT_NONE, 0},     {PARLEY_DTYPE_I8, PARLEY_QUANT_PER_ROW, 0},
                         {PARLEY_DTYPE_I8, PARLEY_QUANT_GROUPWISE, 64}, {PARLEY_DTYPE_I4, PARLEY_QUANT_GROUPWISE, 32},
                         {PARLEY_DTYPE_I4, PARLEY_QUANT_GROUPWISE, 128}};
    int act = 0;
    for (const W &w : weights)
      for (int64_t m : {1, 3, 8, 100}) {
        const int64_t k = w.quant == PARLEY_QUANT_GROUPWISE ? 1280 : 1283;  // odd where allowed
        check_linear(gpu, rng, w.dtype, w.quant, w.group, m, 777, k, (act++) % PARLEY_ACT_COUNT_, false);
      }
    std::printf("== linear timing, decode m=1 at Qwen2.5-0.5B's lm_head 896 -> 151936\n");
    for (const W &w : weights) check_linear(gpu, rng, w.dtype, w.quant, w.group, 1, 151936, 896, 0, true);
    std::printf("== linear timing, prefill m=2048 at Qwen2.5-0.5B's FFN up 896 -> 4864 (tensor cores)\n");
    for (const W &w : weights) check_linear(gpu, rng, w.dtype, w.quant, w.group, 2048, 4864, 896, 0, true);
  }
  std::printf("== other ops\n");
  {
    const int64_t rows = 64, cols = 1000;
    Buf x(&gpu, rows * cols, rng, 3.f), out(&gpu, rows * cols, rng);
    parley_softmax_args s{};
    s.struct_size = sizeof s, s.dtype = PARLEY_DTYPE_F32, s.rows = rows, s.cols = cols, s.ld_x = cols, s.ld_out = cols;
    for (parley_op op : {PARLEY_OP_SOFTMAX, PARLEY_OP_LOG_SOFTMAX})
      compare<parley_softmax_args>(
          gpu, op, op == PARLEY_OP_SOFTMAX ? "softmax 64x1000" : "log_softmax 64x1000", s, {&x}, &out,
          [&](parley_softmax_args &a, bool d) {
            a.x = d ? x.dev : x.host.data();
            a.out = d ? out.dev : out.host.data();
          },
          1e-5);
    parley_add_args ad{};
    Buf y(&gpu, rows * cols, rng);
    ad.struct_size = sizeof ad, ad.dtype = PARLEY_DTYPE_F32, ad.n = rows * cols, ad.alpha = 0.5f;
    compare<parley_add_args>(
        gpu, PARLEY_OP_ADD, "add 64000", ad, {&x, &y}, &out,
        [&](parley_add_args &a, bool d) {
          a.a = d ? x.dev : x.host.data();
          a.b = d ? y.dev : y.host.data();
          a.out = d ? out.dev : out.host.data();
        },
        1e-6);
    for (int act : {PARLEY_ACT_RELU, PARLEY_ACT_GELU_ERF, PARLEY_ACT_GELU_TANH, PARLEY_ACT_SILU}) {
      parley_activation_args ac{};
      ac.struct_size = sizeof ac, ac.dtype = PARLEY_DTYPE_F32, ac.activation = act, ac.rows = rows, ac.cols = cols;
      ac.ld_x = ac.ld_out = cols;
      char what[64];
      std::snprintf(what, sizeof what, "activation %d 64x1000", act);
      compare<parley_activation_args>(
          gpu, PARLEY_OP_ACTIVATION, what, ac, {&x}, &out,
          [&](parley_activation_args &a, bool d) {
            a.x = d ? x.dev : x.host.data();
            a.out = d ? out.dev : out.host.data();
          },
          1e-5);
    }
  }
  {
    const int64_t m = 96, n = 512, k = 384;
    Buf A(&gpu, m * k, rng), B(&gpu, n * k, rng), C(&gpu, m * n, rng), bias(&gpu, n, rng);
    parley_gemm_args g{};
    g.struct_size = sizeof g, g.dtype = PARLEY_DTYPE_F32, g.trans_b = 1, g.m = m, g.n = n, g.k = k, g.batch = 1;
    g.lda = k, g.ldb = k, g.ldc = n, g.alpha = 1.f, g.beta = 0.f, g.epilogue = PARLEY_ACT_GELU_TANH;
    compare<parley_gemm_args>(
        gpu, PARLEY_OP_GEMM, "gemm 96x512x384 A.B^T + bias, gelu-tanh", g, {&A, &B}, &C,
        [&](parley_gemm_args &a, bool d) {
          a.a = d ? A.dev : A.host.data();
          a.b = d ? B.dev : B.host.data();
          a.c = d ? C.dev : C.host.data();
          a.bias = d ? bias.dev : bias.host.data();
        },
        1e-5);
  }
  {
    const int64_t rows = 48, cols = 768;
    Buf x(&gpu, rows * cols, rng), res(&gpu, rows * cols, rng), gamma(&gpu, cols, rng), beta(&gpu, cols, rng),
        out(&gpu, rows * cols, rng);
    for (parley_op op : {PARLEY_OP_LAYER_NORM, PARLEY_OP_RMS_NORM}) {
      parley_norm_args n{};
      n.struct_size = sizeof n, n.dtype = PARLEY_DTYPE_F32, n.rows = rows, n.cols = cols, n.ld_x = n.ld_out = cols;
      n.ld_residual = cols, n.eps = 1e-5f;
      compare<parley_norm_args>(
          gpu, op, op == PARLEY_OP_LAYER_NORM ? "layer_norm 48x768 + residual" : "rms_norm 48x768 + residual", n, {&x},
          &out,
          [&](parley_norm_args &a, bool d) {
            a.x = d ? x.dev : x.host.data();
            a.residual = d ? res.dev : res.host.data();
            a.gamma = d ? gamma.dev : gamma.host.data();
            a.beta = d ? beta.dev : beta.host.data();
            a.out = d ? out.dev : out.host.data();
          },
          1e-5);
    }
    Buf gate(&gpu, rows * cols, rng), up(&gpu, rows * cols, rng);
    parley_gated_activation_args ga{};
    ga.struct_size = sizeof ga, ga.dtype = PARLEY_DTYPE_F32, ga.activation = PARLEY_ACT_SILU, ga.rows = rows;
    ga.cols = cols, ga.ld_gate = ga.ld_up = ga.ld_out = cols;
    compare<parley_gated_activation_args>(
        gpu, PARLEY_OP_GATED_ACTIVATION, "gated_activation silu 48x768", ga, {}, &out,
        [&](parley_gated_activation_args &a, bool d) {
          a.gate = d ? gate.dev : gate.host.data();
          a.up = d ? up.dev : up.host.data();
          a.out = d ? out.dev : out.host.data();
        },
        1e-5);
  }
  {
    // Rotary, in place on [batch, seq, heads, head_dim], both layouts.
    const int64_t B = 2, S = 17, H = 4, Dh = 64;
    std::vector<int32_t> pos(B * S);
    for (int64_t i = 0; i < B * S; ++i) pos[i] = static_cast<int32_t>(i % S + 100 * (i / S));
    void *dpos = nullptr;
    gpu.dev->allocate(gpu.state, pos.size() * 4, 256, &dpos);
    gpu.dev->copy(gpu.state, dpos, pos.data(), pos.size() * 4, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
    Buf inv(&gpu, Dh / 2, rng);
    for (int64_t i = 0; i < Dh / 2; ++i) inv.host[i] = std::pow(10000.f, -2.f * i / Dh);
    gpu.dev->copy(gpu.state, inv.dev, inv.host.data(), inv.host.size() * 4, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
    for (int inter : {0, 1}) {
      Buf x(&gpu, B * S * H * Dh, rng);
      parley_rotary_args r{};
      r.struct_size = sizeof r, r.dtype = PARLEY_DTYPE_F32, r.batch = B, r.seq = S, r.heads = H, r.head_dim = Dh;
      r.rotary_dim = Dh, r.stride_batch = S * H * Dh, r.stride_seq = H * Dh, r.stride_head = Dh;
      r.interleaved = inter, r.attention_factor = 1.f;
      compare<parley_rotary_args>(
          gpu, PARLEY_OP_ROTARY, inter ? "rotary interleaved" : "rotary half-split", r, {}, &x,
          [&](parley_rotary_args &a, bool d) {
            a.x = d ? x.dev : x.host.data();
            a.positions = static_cast<const int32_t *>(d ? dpos : pos.data());
            a.inv_freq = static_cast<const float *>(d ? inv.dev : inv.host.data());
          },
          1e-5);
    }
    gpu.dev->release(gpu.state, dpos);
  }
  {
    // Embedding gather (f32 table) and top-k values.
    const int64_t vocab = 1000, dim = 256, count = 37;
    Buf table(&gpu, vocab * dim, rng), out(&gpu, count * dim, rng);
    std::vector<int32_t> ids(count);
    for (int64_t i = 0; i < count; ++i) ids[i] = static_cast<int32_t>((i * 7919) % vocab);
    void *dids = nullptr;
    gpu.dev->allocate(gpu.state, ids.size() * 4, 256, &dids);
    gpu.dev->copy(gpu.state, dids, ids.data(), ids.size() * 4, PARLEY_COPY_HOST_TO_DEVICE, nullptr);
    parley_embedding_args e{};
    e.struct_size = sizeof e, e.dtype = PARLEY_DTYPE_F32, e.table_dtype = PARLEY_DTYPE_F32, e.count = count;
    e.vocab = vocab, e.dim = dim, e.scale = 2.f, e.ld_out = dim;
    compare<parley_embedding_args>(
        gpu, PARLEY_OP_EMBEDDING, "embedding 37 ids of 1000x256, scale 2", e, {}, &out,
        [&](parley_embedding_args &a, bool d) {
          a.ids = static_cast<const int32_t *>(d ? dids : ids.data());
          a.table = d ? table.dev : table.host.data();
          a.out = d ? out.dev : out.host.data();
        },
        0.0);
    gpu.dev->release(gpu.state, dids);
    const int64_t rows = 8, cols = 5000, k = 40;
    Buf x(&gpu, rows * cols, rng), values(&gpu, rows * k, rng);
    void *didx = nullptr;
    gpu.dev->allocate(gpu.state, rows * k * 4, 256, &didx);
    std::vector<int32_t> hidx(rows * k);
    parley_topk_args t{};
    t.struct_size = sizeof t, t.dtype = PARLEY_DTYPE_F32, t.rows = rows, t.cols = cols, t.k = k, t.ld_x = cols;
    compare<parley_topk_args>(
        gpu, PARLEY_OP_TOPK, "topk k=40 of 8x5000 (values)", t, {}, &values,
        [&](parley_topk_args &a, bool d) {
          a.x = d ? x.dev : x.host.data();
          a.values = d ? values.dev : values.host.data();
          a.indices = static_cast<int32_t *>(d ? didx : hidx.data());
        },
        0.0);
    gpu.dev->release(gpu.state, didx);
  }
  std::printf("== row ops with 16-bit activations (cuda at F16 / BF16 vs the cpu plugin at F32, rounded once)\n");
  check_rows16(gpu, rng, PARLEY_DTYPE_F16);
  check_rows16(gpu, rng, PARLEY_DTYPE_BF16);
  std::printf("%d failure(s)\n", g_failures);
  gpu.dev->shutdown(gpu.state);
  return g_failures ? 1 : 0;
}
