// parley_runtime_*: creation, plugin discovery and the registry queries.
#include <dlfcn.h>
#include <sched.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "capi/api_guard.hpp"
#include "core/runtime.hpp"

#if defined(PARLEY_STATIC_PLUGINS)
extern "C" const parley_plugin_desc *parley_cpu_plugin_entry(uint32_t, const parley_host_services *);
#endif

using namespace parley;
using parley::capi::check_struct_size;
using parley::capi::copy_out;
using parley::capi::guarded;
using parley::capi::require;

namespace {

constexpr size_t kRuntimeOptionsV1 = PARLEY_SIZE_THROUGH(parley_runtime_options, min_severity);
constexpr size_t kPluginInfoV1 = PARLEY_SIZE_THROUGH(parley_plugin_info, num_kernels);
constexpr size_t kDeviceInfoV1 = PARLEY_SIZE_THROUGH(parley_device_info, status);
constexpr size_t kKernelInfoV1 = PARLEY_SIZE_THROUGH(parley_kernel_info, selected);

int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// <dir of libparley.so>/parley/plugins — the same relative place in build and install trees.
std::string plugins_beside_library() {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void *>(&parley_version), &info) || !info.dli_fname) return {};
  std::string lib = info.dli_fname;
  size_t slash = lib.rfind('/');
  std::string dir = slash == std::string::npos ? "." : lib.substr(0, slash);
  return dir + "/parley/plugins";
}

const Runtime &rt(const parley_runtime *r) {
  require(r, "runtime");
  return *r->impl;
}

template <typename T>
size_t checked_index(size_t index, const std::vector<T> &v, const char *what) {
  if (index >= v.size())
    fail(PARLEY_ERROR_NOT_FOUND, std::string(what) + " index " + std::to_string(index) + " out of range (count " +
                                     std::to_string(v.size()) + ")");
  return index;
}

}  // namespace

extern "C" {

PARLEY_API parley_status parley_runtime_options_defaults(parley_runtime_options *options) {
  return guarded(__func__, [&] {
    parley::capi::write_defaults(options, kRuntimeOptionsV1, [] {
      parley_runtime_options o{};
      o.struct_size = sizeof o;
      o.num_threads = 0;
      o.plugin_sources = PARLEY_PLUGINS_DEFAULT;
      o.min_severity = PARLEY_SEVERITY_WARNING;
      return o;
    });
  });
}

PARLEY_API parley_status parley_runtime_create(const parley_runtime_options *options, parley_runtime **out_runtime) {
  return guarded(__func__, [&] {
    require(out_runtime, "out_runtime");
    parley_runtime_options o;
    parley_runtime_options_init(&o);
    if (options) {
      check_struct_size(options->struct_size, kRuntimeOptionsV1, sizeof o, "options");
      std::memcpy(&o, options, options->struct_size);
    }
    if (o.num_threads < 0 || o.num_threads > 1024)
      fail(PARLEY_ERROR_INVALID_ARGUMENT,
           "options->num_threads = " + std::to_string(o.num_threads) + " is outside [0, 1024] (0 = all CPUs)");
    if (o.plugin_sources & ~uint32_t{PARLEY_PLUGINS_DEFAULT})
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->plugin_sources has unknown flags");
    if (o.min_severity < PARLEY_SEVERITY_DEBUG || o.min_severity > PARLEY_SEVERITY_ERROR)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->min_severity has unknown value " + std::to_string(o.min_severity));
    if (o.num_plugin_dirs > 1024) fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->num_plugin_dirs exceeds 1024");
    if (o.num_plugin_dirs && !o.plugin_dirs)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->plugin_dirs is NULL but num_plugin_dirs > 0");
    for (size_t i = 0; i < o.num_plugin_dirs; ++i)
      if (!o.plugin_dirs[i])
        fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->plugin_dirs[" + std::to_string(i) + "] is NULL");

    int threads = o.num_threads ? o.num_threads : available_cpus();
    auto impl =
        std::make_shared<Runtime>(threads, o.log_fn, o.log_user_data, static_cast<parley_log_severity>(o.min_severity));
    Registry &reg = impl->registry;
#if defined(PARLEY_STATIC_PLUGINS)
    if (o.plugin_sources & PARLEY_PLUGINS_BUILTIN) reg.load_builtin(parley_cpu_plugin_entry, "cpu");
#endif
    for (size_t i = 0; i < o.num_plugin_dirs; ++i) reg.load_directory(o.plugin_dirs[i]);
    if (o.plugin_sources & PARLEY_PLUGINS_ENV_PATH) {
      if (const char *env = std::getenv("PARLEY_PLUGIN_PATH")) {
        std::string paths = env;
        size_t start = 0;
        while (start <= paths.size()) {
          size_t end = paths.find(':', start);
          if (end == std::string::npos) end = paths.size();
          if (end > start) reg.load_directory(paths.substr(start, end - start));
          start = end + 1;
        }
      }
    }
    if (o.plugin_sources & PARLEY_PLUGINS_BESIDE_LIBRARY) {
      std::string dir = plugins_beside_library();
      if (!dir.empty()) reg.load_directory(dir);
    }
    *out_runtime = new parley_runtime{std::move(impl)};
  });
}

PARLEY_API void parley_runtime_free(parley_runtime *runtime) {
  delete runtime;
}

PARLEY_API parley_status parley_runtime_load_plugin(parley_runtime *runtime, const char *path) {
  return guarded(__func__, [&] {
    require(runtime, "runtime");
    require(path, "path");
    if (!*path) fail(PARLEY_ERROR_INVALID_ARGUMENT, "path is empty");
    runtime->impl->registry.load_library(path);
  });
}

PARLEY_API parley_status parley_runtime_plugin_count(const parley_runtime *runtime, size_t *out_count) {
  return guarded(__func__, [&] {
    const Runtime &r = rt(runtime);
    require(out_count, "out_count");
    *out_count = r.registry.plugins().size();
  });
}

PARLEY_API parley_status parley_runtime_plugin_info(const parley_runtime *runtime, size_t index,
                                                    parley_plugin_info *info) {
  return guarded(__func__, [&] {
    const Runtime &r = rt(runtime);
    require(info, "info");
    check_struct_size(info->struct_size, kPluginInfoV1, sizeof *info, "info");
    auto plugins = r.registry.plugins();
    const LoadedPlugin &p = plugins[checked_index(index, plugins, "plugin")];
    parley_plugin_info out{};
    out.struct_size = sizeof out;
    out.name = r.registry.intern(p.name);
    out.version = r.registry.intern(p.version);
    out.path = r.registry.intern(p.path);
    out.abi_version = p.abi_version;
    out.num_devices = p.num_devices;
    out.num_kernels = p.num_kernels;
    copy_out(info, out);
  });
}

PARLEY_API parley_status parley_runtime_device_count(const parley_runtime *runtime, size_t *out_count) {
  return guarded(__func__, [&] {
    const Runtime &r = rt(runtime);
    require(out_count, "out_count");
    *out_count = r.registry.devices().size();
  });
}

PARLEY_API parley_status parley_runtime_device_info(const parley_runtime *runtime, size_t index,
                                                    parley_device_info *info) {
  return guarded(__func__, [&] {
    const Runtime &r = rt(runtime);
    require(info, "info");
    check_struct_size(info->struct_size, kDeviceInfoV1, sizeof *info, "info");
    auto devices = r.registry.devices();
    const Device &d = devices[checked_index(index, devices, "device")];
    parley_device_info out{};
    out.struct_size = sizeof out;
    out.name = r.registry.intern(d.name);
    out.plugin = r.registry.intern(d.plugin);
    out.kind = d.kind;
    out.available = d.available ? 1 : 0;
    out.status = r.registry.intern(d.status);
    copy_out(info, out);
  });
}

PARLEY_API parley_status parley_runtime_kernel_count(const parley_runtime *runtime, size_t *out_count) {
  return guarded(__func__, [&] {
    const Runtime &r = rt(runtime);
    require(out_count, "out_count");
    *out_count = r.registry.kernels().size();
  });
}

PARLEY_API parley_status parley_runtime_kernel_info(const parley_runtime *runtime, size_t index,
                                                    parley_kernel_info *info) {
  return guarded(__func__, [&] {
    const Runtime &r = rt(runtime);
    require(info, "info");
    check_struct_size(info->struct_size, kKernelInfoV1, sizeof *info, "info");
    auto kernels = r.registry.kernels();
    parley_kernel_info out = r.registry.describe(kernels[checked_index(index, kernels, "kernel")]);
    copy_out(info, out);
  });
}

PARLEY_API parley_status parley_runtime_find_kernel(const parley_runtime *runtime, const char *op, const char *device,
                                                    int32_t dtype, parley_kernel_info *info) {
  return guarded(__func__, [&] {
    const Runtime &r = rt(runtime);
    require(op, "op");
    require(device, "device");
    require(info, "info");
    check_struct_size(info->struct_size, kKernelInfoV1, sizeof *info, "info");
    parley_op o = op_from_name(op);
    if (o == PARLEY_OP_COUNT_) fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string("unknown op name '") + op + "'");
    if (dtype < 0 || dtype >= PARLEY_DTYPE_COUNT_)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "unknown dtype value " + std::to_string(static_cast<int>(dtype)));
    parley_kernel_info out = r.registry.describe(r.registry.find(o, device, static_cast<parley_dtype>(dtype)));
    copy_out(info, out);
  });
}

}  // extern "C"
