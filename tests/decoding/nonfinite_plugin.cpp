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

const parley_kernel_desc *g_cpu_linear = nullptr;
std::atomic<int> g_mode{0};           // 0 off, 1 NaN, 2 +inf, 3 every logit -inf
std::atomic<int64_t> g_target_n{-1};  // the product n to poison
std::atomic<int64_t> g_skip{0};       // logits products left clean before poisoning starts

parley_kernel_status linear(const parley_kernel_context *ctx, const void *args) {
  parley_kernel_status st = g_cpu_linear->run(ctx, args);
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

parley_kernel_status prepare(const parley_kernel_context *ctx, const parley_weight_desc *d,
                             parley_prepared_weight *out) {
  return g_cpu_linear->prepare_weight(ctx, d, out);
}

void release(const parley_kernel_context *ctx, void *handle) {
  g_cpu_linear->release_weight(ctx, handle);
}

parley_kernel_desc kKernels[] = {{sizeof(parley_kernel_desc), PARLEY_OP_LINEAR, "cpu", PARLEY_DTYPE_F32, 1000,
                                  "linear_nonfinite", linear, 0, PARLEY_DTYPE_F32, prepare, release}};

const parley_plugin_desc kPlugin = {
    sizeof(parley_plugin_desc), PARLEY_PLUGIN_ABI_VERSION, "nonfinite", "1.0.0", nullptr, 0, kKernels, 1};

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
        cpu->kernels[i].weight_dtype == PARLEY_DTYPE_F32)
      g_cpu_linear = &cpu->kernels[i];
  if (!g_cpu_linear) {
    if (host && host->log) host->log(host->host, PARLEY_LOG_ERROR, "nonfinite: the cpu plugin lacks an F32 LINEAR");
    return nullptr;
  }
  return &kPlugin;
}
