// Plugin loading and kernel selection: built-in discovery, broken plugins
// refused with clear errors while the runtime keeps working, and an
// out-of-tree plugin that overrides one kernel by priority.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <parley/parley.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "../common/gtest_seed.h"
#include "core/runtime.hpp"
#include "model_bytes.hpp"

namespace {

using parley::test::plugin_dir;

struct RuntimeHandle {
  parley_runtime *rt = nullptr;
  std::vector<std::string> log;
  explicit RuntimeHandle(bool with_cpu = true) {
    std::string dir = plugin_dir();
    const char *dirs[] = {dir.c_str()};
    parley_runtime_options o;
    parley_runtime_options_init(&o);
    o.plugin_sources = PARLEY_PLUGINS_NONE;
    o.plugin_dirs = dirs;
    o.num_plugin_dirs = with_cpu ? 1 : 0;
    o.num_threads = 2;
    o.min_severity = PARLEY_SEVERITY_DEBUG;
    o.log_user_data = &log;
    o.log_fn = [](void *user, parley_log_severity, const char *msg) {
      static_cast<std::vector<std::string> *>(user)->push_back(msg);
    };
    EXPECT_EQ(parley_runtime_create(&o, &rt), PARLEY_OK) << parley_last_error();
  }
  ~RuntimeHandle() { parley_runtime_free(rt); }
};

// The plugins the build produced (cpu always; cuda when nvcc was found).
size_t built_plugins() {
  size_t n = 0;
  for (const auto &e : std::filesystem::directory_iterator(plugin_dir())) {
    std::string f = e.path().filename().string();
    n += f.rfind("libparley_", 0) == 0 && f.size() > 3 && f.compare(f.size() - 3, 3, ".so") == 0;
  }
  return n;
}

bool has_plugin(parley_runtime *rt, const char *name) {
  size_t n = 0;
  parley_runtime_plugin_count(rt, &n);
  for (size_t i = 0; i < n; ++i) {
    parley_plugin_info p{};
    p.struct_size = sizeof p;
    if (parley_runtime_plugin_info(rt, i, &p) == PARLEY_OK && std::string(p.name) == name) return true;
  }
  return false;
}

std::string bad_plugin(int kind) {
  return std::string(std::getenv("PARLEY_BAD_PLUGIN_DIR")) + "/libbad_" + std::to_string(kind) + ".so";
}

parley_kernel_info kernel_for(parley_runtime *rt, const char *op, const char *device, parley_status *st) {
  parley_kernel_info k{};
  k.struct_size = sizeof k;
  *st = parley_runtime_find_kernel(rt, op, device, PARLEY_DTYPE_F32, &k);
  return k;
}

TEST(Registry, CpuPluginDiscoveredWithEveryOp) {
  RuntimeHandle h;
  size_t n = 0;
  ASSERT_EQ(parley_runtime_plugin_count(h.rt, &n), PARLEY_OK);
  ASSERT_EQ(n, built_plugins());
  ASSERT_TRUE(has_plugin(h.rt, "cpu"));
  const char *ops[] = {"gemm",   "attention",  "layer_norm",       "rms_norm",
                       "rotary", "activation", "gated_activation", "embedding",
                       "add",    "softmax",    "log_softmax",      "topk"};
  for (const char *op : ops) {
    parley_status st;
    parley_kernel_info k = kernel_for(h.rt, op, "cpu", &st);
    EXPECT_EQ(st, PARLEY_OK) << op << ": " << parley_last_error();
    if (st == PARLEY_OK) {
      EXPECT_STREQ(k.plugin, "cpu");
      EXPECT_EQ(k.selected, 1);
    }
  }
}

TEST(Registry, NoPluginsMeansClearDeviceError) {
  RuntimeHandle h(/*with_cpu=*/false);
  parley_status st;
  kernel_for(h.rt, "gemm", "cpu", &st);
  EXPECT_EQ(st, PARLEY_ERROR_NOT_FOUND);
  EXPECT_NE(std::string(parley_last_error()).find("no plugin is loaded"), std::string::npos) << parley_last_error();
}

TEST(Registry, BrokenPluginsAreRefusedAndRuntimeKeepsWorking) {
  struct Case {
    int kind;
    parley_status status;
    const char *fragment;
  };
  const Case cases[] = {
      {1, PARLEY_ERROR_PLUGIN, "no entry point"},
      {2, PARLEY_ERROR_PLUGIN, "built for plugin ABI 99.0"},
      {3, PARLEY_ERROR_PLUGIN, "refused to load"},
      {4, PARLEY_ERROR_PLUGIN, "run is NULL"},
      {5, PARLEY_ERROR_PLUGIN, "unknown op 999"},
      {6, PARLEY_ERROR_PLUGIN, "a plugin named 'cpu' is already loaded"},
      {7, PARLEY_ERROR_PLUGIN, "device 'cpu' is already provided"},
      {9, PARLEY_ERROR_PLUGIN, "device missing or unknown"},
      {10, PARLEY_ERROR_PLUGIN, "struct_size"},
      {11, PARLEY_ERROR_PLUGIN, "kernels is NULL"},
      // Issue 10 item 9: every size, count, pointer and enum the registry
      // reads is checked before use; kinds 12 and 13 crashed the host.
      {12, PARLEY_ERROR_PLUGIN, "kernel 0: struct_size 1073741824 is implausibly large"},
      {13, PARLEY_ERROR_PLUGIN, "device 0: struct_size 1073741824 is implausibly large"},
      {14, PARLEY_ERROR_PLUGIN, "kernel 0: struct_size 8 is smaller than ABI 1.0's"},
      {15, PARLEY_ERROR_PLUGIN, "is not a multiple of the struct's alignment"},

      {16, PARLEY_ERROR_PLUGIN, "descriptor struct_size 1073741824 is implausibly large"},
      {17, PARLEY_ERROR_PLUGIN, "kernel 'k': unknown dtype 77"},
      {18, PARLEY_ERROR_PLUGIN, "device 'fake0': unknown kind"},
      {19, PARLEY_ERROR_PLUGIN, "plugin name missing or not a short printable string"},
      {20, PARLEY_ERROR_PLUGIN, "plugin name missing or not a short printable string"},
      {21, PARLEY_ERROR_PLUGIN, "kernel 0: name missing or invalid"},
      {22, PARLEY_ERROR_PLUGIN, "device 'fake0': allocate/release/copy/synchronize must all be set"},
      {23, PARLEY_ERROR_PLUGIN, "too many kernels (1099511627776)"},
      {24, PARLEY_ERROR_PLUGIN, "too many devices (1099511627776)"},
      {25, PARLEY_ERROR_PLUGIN, "kernel 1: struct_size differs from kernel 0's"},
      {26, PARLEY_ERROR_PLUGIN, "kernel 'k': device missing or unknown"},
      {27, PARLEY_ERROR_PLUGIN, "kernel 'k': unknown op -1"},
      // Plugin ABI 1.2: LINEAR kernels need their weight hooks and a known weight dtype.
      {28, PARLEY_ERROR_PLUGIN, "kernel 'k': prepare_weight and release_weight must both be set"},
      {29, PARLEY_ERROR_PLUGIN, "kernel 'k': unknown weight dtype 55"},
      {30, PARLEY_ERROR_PLUGIN, "a linear kernel needs the ABI 1.2 fields"},
  };
  RuntimeHandle h;
  size_t before = 0;
  parley_runtime_plugin_count(h.rt, &before);
  for (const Case &c : cases) {
    EXPECT_EQ(parley_runtime_load_plugin(h.rt, bad_plugin(c.kind).c_str()), c.status) << "kind " << c.kind;
    std::string msg = parley_last_error();
    EXPECT_NE(msg.find(c.fragment), std::string::npos) << "kind " << c.kind << ": " << msg;
    EXPECT_NE(msg.find(bad_plugin(c.kind)), std::string::npos) << "the message names the file: " << msg;
    size_t n = 0;
    parley_runtime_plugin_count(h.rt, &n);
    EXPECT_EQ(n, before) << "kind " << c.kind << " left something registered";
  }
  EXPECT_EQ(parley_runtime_load_plugin(h.rt, "/nonexistent/libparley_x.so"), PARLEY_ERROR_IO);
  parley_status st;
  kernel_for(h.rt, "gemm", "cpu", &st);
  EXPECT_EQ(st, PARLEY_OK) << "the runtime still serves kernels";
  // Loading the same library twice is refused without side effects.
  std::string cpu = plugin_dir() + "/libparley_cpu.so";
  EXPECT_EQ(parley_runtime_load_plugin(h.rt, cpu.c_str()), PARLEY_ERROR_PLUGIN);
  EXPECT_NE(std::string(parley_last_error()).find("already loaded"), std::string::npos);
}

TEST(Registry, DeviceWhoseDriverIsMissingIsListedUnavailable) {
  RuntimeHandle h;
  ASSERT_EQ(parley_runtime_load_plugin(h.rt, bad_plugin(8).c_str()), PARLEY_OK) << parley_last_error();
  size_t n = 0;
  parley_runtime_device_count(h.rt, &n);
  bool seen = false;
  for (size_t i = 0; i < n; ++i) {
    parley_device_info d{};
    d.struct_size = sizeof d;
    ASSERT_EQ(parley_runtime_device_info(h.rt, i, &d), PARLEY_OK);
    if (std::string(d.name) != "fakegpu") continue;
    seen = true;
    EXPECT_EQ(d.available, 0);
    EXPECT_NE(std::string(d.status).find("no FakeGPU driver"), std::string::npos) << d.status;
  }
  EXPECT_TRUE(seen);
  parley_status st;
  kernel_for(h.rt, "gemm", "fakegpu", &st);
  EXPECT_EQ(st, PARLEY_ERROR_DEVICE);
  EXPECT_NE(std::string(parley_last_error()).find("no FakeGPU driver"), std::string::npos) << parley_last_error();
  // And a model asking for that device is refused, never run on the CPU instead.
  parley_model_options mo;
  parley_model_options_init(&mo);
  mo.device = "fakegpu";
  parley_model *m = nullptr;
  std::string path = parley::test::data_dir() + "/tiny_decoder.parley";
  EXPECT_EQ(parley_model_load_file(h.rt, path.c_str(), &mo, &m), PARLEY_ERROR_DEVICE);
  EXPECT_EQ(m, nullptr);
}

TEST(Registry, ThirdPartyPluginOverridesSoftmaxByPriorityAndIsUsed) {
  RuntimeHandle h;
  parley_status st;
  parley_kernel_info before = kernel_for(h.rt, "softmax", "cpu", &st);
  ASSERT_EQ(st, PARLEY_OK);
  EXPECT_STREQ(before.plugin, "cpu");

  const char *path = std::getenv("PARLEY_THIRD_PARTY_PLUGIN");
  ASSERT_NE(path, nullptr);
  ASSERT_EQ(parley_runtime_load_plugin(h.rt, path), PARLEY_OK) << parley_last_error();
  parley_kernel_info after = kernel_for(h.rt, "softmax", "cpu", &st);
  ASSERT_EQ(st, PARLEY_OK);
  EXPECT_STREQ(after.plugin, "thirdparty");
  EXPECT_STREQ(after.name, "fast_softmax");
  EXPECT_EQ(after.priority, 500);
  parley_kernel_info gemm = kernel_for(h.rt, "gemm", "cpu", &st);
  EXPECT_STREQ(gemm.plugin, "cpu") << "other ops stay with the CPU plugin";

  // Run softmax through the registry, as the model code does, and see the
  // third-party kernel do the work (its call counter moves, result is right).
  void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(lib, nullptr);
  auto calls = reinterpret_cast<long (*)()>(dlsym(lib, "thirdparty_softmax_calls"));
  ASSERT_NE(calls, nullptr);
  long calls_before = calls();
  const parley::Registry &reg = h.rt->impl->registry;
  parley::Kernel k = reg.find(PARLEY_OP_SOFTMAX, "cpu", PARLEY_DTYPE_F32);
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 3.f);
  std::vector<float> x(3 * 17), y(x.size(), std::nanf(""));
  for (float &v : x) v = dist(rng);
  parley_softmax_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.rows = 3;
  a.cols = 17;
  a.x = x.data();
  a.ld_x = 17;
  a.out = y.data();
  a.ld_out = 17;
  parley_kernel_context ctx{sizeof ctx, h.rt->impl->host.table(), nullptr, nullptr};
  ASSERT_EQ(k.run(&ctx, &a), PARLEY_KERNEL_OK);
  EXPECT_EQ(calls(), calls_before + 1);
  for (int r = 0; r < 3; ++r) {
    double m = -INFINITY, s = 0;
    for (int c = 0; c < 17; ++c) m = std::max<double>(m, x[r * 17 + c]);
    for (int c = 0; c < 17; ++c) s += std::exp(x[r * 17 + c] - m);
    for (int c = 0; c < 17; ++c) EXPECT_NEAR(y[r * 17 + c], std::exp(x[r * 17 + c] - m) / s, 1e-6);
  }
  dlclose(lib);
}

TEST(Registry, EnvironmentPathDiscovery) {
  std::string dir = plugin_dir();
  setenv("PARLEY_PLUGIN_PATH", ("/nonexistent:" + dir + ":").c_str(), 1);
  parley_runtime_options o;
  parley_runtime_options_init(&o);
  o.plugin_sources = PARLEY_PLUGINS_ENV_PATH;
  parley_runtime *rt = nullptr;
  ASSERT_EQ(parley_runtime_create(&o, &rt), PARLEY_OK);
  size_t n = 0;
  parley_runtime_plugin_count(rt, &n);
  EXPECT_EQ(n, built_plugins());
  EXPECT_TRUE(has_plugin(rt, "cpu"));
  parley_runtime_free(rt);
  setenv("PARLEY_PLUGIN_PATH", "", 1);
}

TEST(Registry, ModelOutlivesRuntime) {
  RuntimeHandle h;
  parley_model *m = nullptr;
  std::string path = parley::test::data_dir() + "/tiny_decoder.parley";
  ASSERT_EQ(parley_model_load_file(h.rt, path.c_str(), nullptr, &m), PARLEY_OK) << parley_last_error();
  parley_runtime_free(h.rt);
  h.rt = nullptr;
  size_t n = 0;
  ASSERT_EQ(parley_model_kernel_plan_count(m, &n), PARLEY_OK);
  for (size_t i = 0; i < n; ++i) {
    parley_kernel_info k{};
    k.struct_size = sizeof k;
    ASSERT_EQ(parley_model_kernel_plan_at(m, i, &k), PARLEY_OK);
    EXPECT_STRNE(k.name, "") << k.op;
  }
  parley_model_free(m);
}

}  // namespace
