// The kernel registry: loads plugin libraries, validates their descriptors,
// brings their devices up and answers "which kernel serves (op, device,
// dtype)". Loading is transactional: a plugin is either fully registered or
// leaves the registry exactly as it was.
#pragma once

#include <parley/parley.h>
#include <parley/plugin.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace parley {

class HostServices;

struct LoadedPlugin {
  std::string name, version, path;  // path "" for built-in plugins
  uint32_t abi_version = 0;
  size_t num_devices = 0, num_kernels = 0;
  void *library = nullptr;  // dlopen handle, nullptr for built-in
};

struct Device {
  std::string name, plugin, status;
  parley_device_kind kind = PARLEY_DEVICE_OTHER;
  bool available = false;
  parley_device_desc desc{};
  void *state = nullptr;
};

struct Kernel {
  parley_op op;
  std::string device, name, plugin;
  parley_dtype dtype;
  int32_t priority;
  size_t load_order;
  parley_kernel_fn run;
  uint32_t flags = 0;  // PARLEY_KERNEL_FLAG_* the kernel declared (known bits only)
  // LINEAR kernels only (ABI 1.2); -1 for every other op.
  int32_t weight_dtype = -1;  // parley_dtype; an int: -1 is not a value of the enum
  decltype(parley_kernel_desc::prepare_weight) prepare_weight = nullptr;
  decltype(parley_kernel_desc::release_weight) release_weight = nullptr;
  // PARLEY_PREPARED_SOURCE_RELEASED is a bit its plugin can have meant (ABI 1.7).
  bool reports_released_source = false;
};

const char *op_name(parley_op op);
// Returns PARLEY_OP_COUNT_ for an unknown name.
parley_op op_from_name(const std::string &name);

class Registry {
 public:
  explicit Registry(HostServices &host);
  ~Registry();
  Registry(const Registry &) = delete;
  Registry &operator=(const Registry &) = delete;

  // Load a shared library plugin; throws Error (IO / PLUGIN) and leaves the registry unchanged.
  void load_library(const std::string &path);
  // Register a plugin linked into the binary.
  void load_builtin(parley_plugin_entry_fn entry, const std::string &label);
  // Load every libparley_*.so in `dir` (sorted); failures are logged, not thrown.
  void load_directory(const std::string &dir);

  // Snapshots (copies) so callers need no lock while reading them.
  std::vector<LoadedPlugin> plugins() const;
  std::vector<Device> devices() const;
  std::vector<Kernel> kernels() const;
  bool is_selected(const Kernel &k) const;

  // The kernel serving (op, device, dtype). Throws NOT_FOUND / DEVICE.
  Kernel find(parley_op op, const std::string &device, parley_dtype dtype) const;
  // The LINEAR kernels for (device, activation dtype, weight dtype), best
  // first: prepare_weight may refuse a weight (UNSUPPORTED), and then the
  // next one is asked. Empty when none; throws NOT_FOUND / DEVICE for the device.
  std::vector<Kernel> linear_candidates(const std::string &device, parley_dtype dtype, parley_dtype weight_dtype) const;
  // A device by name; throws NOT_FOUND, or DEVICE if unavailable.
  Device device(const std::string &name) const;

  // A C string equal to `s` that lives as long as the registry (for the C API).
  const char *intern(const std::string &s) const;
  // The public description of a kernel, strings interned.
  parley_kernel_info describe(const Kernel &k) const;

 private:
  void register_descriptor(const parley_plugin_desc *desc, const std::string &path, void *library);
  void reselect();

  HostServices &host_;
  mutable std::mutex mutex_;
  std::vector<LoadedPlugin> plugins_;
  std::vector<Device> devices_;
  std::vector<Kernel> kernels_;
  std::map<std::tuple<int, std::string, int, int>, size_t>
      selected_;  // (op, device, dtype, weight dtype) -> kernels_ index
  mutable std::mutex intern_mutex_;
  mutable std::set<std::string> interned_;  // node-based: c_str() stays valid
};

}  // namespace parley
