// libparley_nonfinite: a test plugin whose LINEAR (F32 weights) writes NaN, +inf or a row of
// -inf into the logits (issue 10 item 10), to prove that decoding reports a
// failing kernel as PARLEY_ERROR_DEVICE naming its plugin instead of
// returning garbage with PARLEY_OK.
//
// It serves LINEAR on the cpu plugin's "cpu" device with a higher priority and
// runs the cpu plugin's own LINEAR (linked in statically, as the guarded test
// device does, with its weight hooks), so every result is exact. Only a product whose n equals the
// target set by the test (the model's vocabulary: the output projection) is
// poisoned, and only after `skip` such calls, so a test can choose the
// decoding step at which the logits go bad.
//
// Only include/parley/plugin.h is included from Parley, as for any plugin.
#include <parley/plugin.h>

#include <atomic>
#include <cstdint>
#include <limits>

extern "C" const parley_plugin_desc *parley_cpu_plugin_entry(uint32_t host_abi_version,
                                                             const parley_host_services *host);

namespace {

// The cpu plugin's LINEAR kernel per weight dtype (the demo models may store
// any of them), wrapped one to one.
const parley_kernel_desc *g_cpu_linear[PARLEY_DTYPE_COUNT_] = {};
std::atomic<int> g_mode{0};           // 0 off, 1 NaN, 2 +inf, 3 every logit -inf
std::atomic<int64_t> g_target_n{-1};  // the product n to poison
std::atomic<int64_t> g_skip{0};       // logits products left clean before poisoning starts

template <int W>
parley_kernel_status linear(const parley_kernel_context *ctx, const void *args) {
  parley_kernel_status st = g_cpu_linear[W]->run(ctx, args);
  const auto *g = static_cast<const parley_linear_args *>(args);
  const int mode = g_mode.load();
  if (st != PARLEY_KERNEL_OK || mode == 0 || g->n != g_target_n.load() || g->dtype != PARLEY_DTYPE_F32) return st;
  if (g_skip.fetch_sub(1) > 0) return st;
  for (int64_t i = 0; i < g->m; ++i) {
    float *row = static_cast<float *>(g->out) + i * g->ld_out;
    if (mode == 1) row[(i * 7 + 3) % g->n] = std::numeric_limits<float>::quiet_NaN();
    if (mode == 2) row[(i * 11 + 5) % g->n] = std::numeric_limits<float>::infinity();
    if (mode == 3)
      for (int64_t j = 0; j < g->n; ++j) row[j] = -std::numeric_limits<float>::infinity();
  }
  return st;
}

template <int W>
parley_kernel_status prepare(const parley_kernel_context *ctx, const parley_weight_desc *d,
                             parley_prepared_weight *out) {
  return g_cpu_linear[W]->prepare_weight(ctx, d, out);
}

template <int W>
void release(const parley_kernel_context *ctx, void *handle) {
  g_cpu_linear[W]->release_weight(ctx, handle);
}

#define NONFINITE_LINEAR(W, name)                                                                                      \
  parley_kernel_desc {                                                                                                 \
    sizeof(parley_kernel_desc), PARLEY_OP_LINEAR, "cpu", PARLEY_DTYPE_F32, 1000, name, linear<W>, 0, 0, W, prepare<W>, \
        release<W>                                                                                                     \
  }

parley_kernel_desc kKernels[] = {NONFINITE_LINEAR(PARLEY_DTYPE_F32, "linear_nonfinite_f32"),
                                 NONFINITE_LINEAR(PARLEY_DTYPE_F16, "linear_nonfinite_f16"),
                                 NONFINITE_LINEAR(PARLEY_DTYPE_BF16, "linear_nonfinite_bf16"),
                                 NONFINITE_LINEAR(PARLEY_DTYPE_I8, "linear_nonfinite_i8"),
                                 NONFINITE_LINEAR(PARLEY_DTYPE_I4, "linear_nonfinite_i4")};

const parley_plugin_desc kPlugin = {sizeof(parley_plugin_desc),
                                    PARLEY_PLUGIN_ABI_VERSION,
                                    "nonfinite",
                                    "1.0.0",
                                    nullptr,
                                    0,
                                    kKernels,
                                    sizeof(kKernels) / sizeof(kKernels[0])};

}  // namespace

// The test's switch (found with dlsym): poison products with n == target_n in
// `mode` after `skip` of them; mode 0 turns it off.
extern "C" PARLEY_PLUGIN_EXPORT void parley_nonfinite_set(int mode, int64_t target_n, int64_t skip) {
  g_mode.store(0);
  g_target_n.store(target_n);
  g_skip.store(skip);
  g_mode.store(mode);
}

extern "C" PARLEY_PLUGIN_EXPORT const parley_plugin_desc *parley_plugin_entry(uint32_t host_abi_version,
                                                                              const parley_host_services *host) {
  const parley_plugin_desc *cpu = parley_cpu_plugin_entry(host_abi_version, host);
  if (!cpu) return nullptr;
  for (size_t i = 0; i < cpu->num_kernels; ++i)
    if (cpu->kernels[i].op == PARLEY_OP_LINEAR && cpu->kernels[i].dtype == PARLEY_DTYPE_F32 &&
        cpu->kernels[i].weight_dtype >= 0 && cpu->kernels[i].weight_dtype < PARLEY_DTYPE_COUNT_)
      g_cpu_linear[cpu->kernels[i].weight_dtype] = &cpu->kernels[i];
  for (const parley_kernel_desc &k : kKernels)
    if (!g_cpu_linear[k.weight_dtype]) {
      if (host && host->log) host->log(host->host, PARLEY_LOG_ERROR, "nonfinite: the cpu plugin lacks a LINEAR kernel");
      return nullptr;
    }
  return &kPlugin;
}
