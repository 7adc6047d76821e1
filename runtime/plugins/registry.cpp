#include "plugins/registry.hpp"

#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "core/error.hpp"
#include "core/exit_gate.hpp"
#include "plugins/host_services.hpp"

namespace parley {

namespace {

constexpr const char *kOpNames[PARLEY_OP_COUNT_] = {
    "gemm",      "attention", "layer_norm", "rms_norm",    "rotary", "activation", "gated_activation",
    "embedding", "add",       "softmax",    "log_softmax", "topk",   "linear"};

constexpr size_t kMaxDevices = 64;
constexpr size_t kMaxKernels = 65536;
constexpr size_t kMaxNameLength = 64;
// The largest struct_size a descriptor may declare. Fields are only appended
// (plugin.h), so a plugin built against a newer minor ABI has somewhat longer
// descriptors, never kilobytes of them; a larger value is garbage, and the
// registry walks the kernel and device arrays with the plugin's element size,
// so it must be bounded before it is used as a stride (1 << 30 used to send
// the walk a gigabyte past the array).
constexpr size_t kMaxStructSize = 4096;

// A descriptor string must be a short printable name: we print it in errors.
bool valid_name(const char *s, bool allow_empty = false) {
  if (!s) return false;
  size_t n = strnlen(s, kMaxNameLength + 1);
  if (n > kMaxNameLength || (n == 0 && !allow_empty)) return false;
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f) return false;
  }
  return true;
}

// "a FIFO", "a directory", ... for a file type that is not a regular file.
const char *file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "a special file";
}

// A descriptor element size the registry can walk an array with: at least
// the ABI 1.0 layout, at most kMaxStructSize, and a multiple of the struct's
// alignment (the next element must be aligned).
template <typename T>
std::string bad_element_size(size_t size, size_t minimum) {
  if (size < minimum)
    return "struct_size " + std::to_string(size) + " is smaller than ABI 1.0's (" + std::to_string(minimum) + ")";
  if (size > kMaxStructSize)
    return "struct_size " + std::to_string(size) + " is implausibly large (at most " + std::to_string(kMaxStructSize) +
           ")";
  if (size % alignof(T) != 0)
    return "struct_size " + std::to_string(size) + " is not a multiple of the struct's alignment (" +
           std::to_string(alignof(T)) + ")";
  return "";
}

std::string real_path(const std::string &p) {
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf)) return buf;
  return p;
}

}  // namespace

const char *op_name(parley_op op) {
  int i = static_cast<int>(op);
  return (i >= 0 && i < PARLEY_OP_COUNT_) ? kOpNames[i] : "?";
}

parley_op op_from_name(const std::string &name) {
  for (int i = 0; i < PARLEY_OP_COUNT_; ++i)
    if (name == kOpNames[i]) return static_cast<parley_op>(i);
  return PARLEY_OP_COUNT_;
}

Registry::Registry(HostServices &host) : host_(host) {}

Registry::~Registry() {
  for (auto &d : devices_)
    if (d.available && d.desc.shutdown) d.desc.shutdown(d.state);
  bool unloaded = false;
  for (auto it = plugins_.rbegin(); it != plugins_.rend(); ++it)
    if (it->library) unloaded |= dlclose(it->library) == 0;
  // A library loaded again builds its statics again: the exit handler must
  // be registered after them again.
  if (unloaded) exit_gate::forget_first_calls();
}

void Registry::load_library(const std::string &path) {
  std::string resolved = real_path(path);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto &p : plugins_)
      if (!p.path.empty() && p.path == resolved)
        fail(PARLEY_ERROR_PLUGIN, "plugin '" + path + "': already loaded as plugin '" + p.name + "'");
  }
  // dlopen() opens the file with a blocking open(): a FIFO in a plugin folder
  // would hang runtime creation until some process writes to it, and a
  // device file would be read from. Only regular files (or symlinks to them)
  // are libraries. A path stat() cannot see is left to dlopen(), which
  // reports it (or searches the library path for a bare name). A file
  // swapped in between the stat() and the dlopen() needs write access to
  // the plugin folder, which already means running arbitrary code.
  struct stat st {};
  if (::stat(resolved.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    fail(PARLEY_ERROR_IO, "plugin '" + path + "': cannot load: " + file_kind(st.st_mode) +
                              ", not a regular file (a plugin is a shared library)");
  dlerror();
  void *lib = dlopen(resolved.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    fail(PARLEY_ERROR_IO, "plugin '" + path + "': cannot load: " + (why ? why : "unknown dlopen error"));
  }
  auto entry = reinterpret_cast<parley_plugin_entry_fn>(dlsym(lib, PARLEY_PLUGIN_ENTRY_SYMBOL));
  if (!entry) {
    dlclose(lib);
    fail(PARLEY_ERROR_PLUGIN,
         "plugin '" + path + "': no entry point '" PARLEY_PLUGIN_ENTRY_SYMBOL "' (not a Parley plugin?)");
  }
  try {
    const parley_plugin_desc *desc = entry(PARLEY_PLUGIN_ABI_VERSION, host_.table());
    if (!desc)
      fail(PARLEY_ERROR_PLUGIN, "plugin '" + path + "': refused to load with host plugin ABI " +
                                    std::to_string(PARLEY_PLUGIN_ABI_MAJOR) + "." +
                                    std::to_string(PARLEY_PLUGIN_ABI_MINOR) + " (it returned no descriptor)");
    register_descriptor(desc, resolved, lib);
  } catch (...) {
    dlclose(lib);
    throw;
  }
}

void Registry::load_builtin(parley_plugin_entry_fn entry, const std::string &label) {
  const parley_plugin_desc *desc = entry(PARLEY_PLUGIN_ABI_VERSION, host_.table());
  if (!desc) fail(PARLEY_ERROR_PLUGIN, "built-in plugin '" + label + "' returned no descriptor");
  register_descriptor(desc, "", nullptr);
}

void Registry::load_directory(const std::string &dir) {
  DIR *d = opendir(dir.c_str());
  if (!d) return;  // a missing search directory is normal
  std::vector<std::string> files;
  while (dirent *e = readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind("libparley_", 0) == 0 && n.size() > 3 && n.compare(n.size() - 3, 3, ".so") == 0)
      files.push_back(dir + "/" + n);
  }
  closedir(d);
  std::sort(files.begin(), files.end());
  for (const auto &f : files) {
    std::string resolved = real_path(f);
    bool known = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const auto &p : plugins_) known = known || p.path == resolved;
    }
    if (known) continue;  // the same library reached through two search paths
    try {
      load_library(f);
      host_.log(PARLEY_SEVERITY_DEBUG, "loaded plugin " + f);
    } catch (const Error &e) {
      host_.log(PARLEY_SEVERITY_WARNING, std::string("skipping plugin: ") + e.what());
    } catch (const std::exception &e) {  // a plugin that threw through its C entry point
      host_.log(PARLEY_SEVERITY_WARNING, "skipping plugin '" + f + "': it threw: " + e.what());
    } catch (...) {
      host_.log(PARLEY_SEVERITY_WARNING, "skipping plugin '" + f + "': it threw an unknown exception");
    }
  }
}

void Registry::register_descriptor(const parley_plugin_desc *desc, const std::string &path, void *library) {
  const std::string where = path.empty() ? std::string("built-in plugin") : "plugin '" + path + "'";
  auto bad = [&](const std::string &what) { fail(PARLEY_ERROR_PLUGIN, where + ": " + what); };

  if (desc->struct_size < offsetof(parley_plugin_desc, num_kernels) + sizeof(size_t))
    bad("descriptor struct_size " + std::to_string(desc->struct_size) + " is smaller than ABI 1.0's");
  if (desc->struct_size > kMaxStructSize)
    bad("descriptor struct_size " + std::to_string(desc->struct_size) + " is implausibly large (at most " +
        std::to_string(kMaxStructSize) + ")");
  uint32_t major = desc->abi_version >> 16, minor = desc->abi_version & 0xffff;
  if (major != PARLEY_PLUGIN_ABI_MAJOR)
    bad("built for plugin ABI " + std::to_string(major) + "." + std::to_string(minor) + ", this runtime speaks " +
        std::to_string(PARLEY_PLUGIN_ABI_MAJOR) + "." + std::to_string(PARLEY_PLUGIN_ABI_MINOR));
  if (!valid_name(desc->name)) bad("plugin name missing or not a short printable string");
  if (!valid_name(desc->version, true)) bad("plugin version missing or not a short printable string");
  if (desc->num_devices > kMaxDevices) bad("too many devices (" + std::to_string(desc->num_devices) + ")");
  if (desc->num_kernels > kMaxKernels) bad("too many kernels (" + std::to_string(desc->num_kernels) + ")");
  if (desc->num_devices && !desc->devices) bad("num_devices > 0 but devices is NULL");
  if (desc->num_kernels && !desc->kernels) bad("num_kernels > 0 but kernels is NULL");

  std::unique_lock<std::mutex> lock(mutex_);
  for (const auto &p : plugins_)
    if (p.name == desc->name) bad(std::string("a plugin named '") + desc->name + "' is already loaded");

  std::vector<Device> new_devices;
  std::set<std::string> device_names;
  for (const auto &d : devices_) device_names.insert(d.name);
  // Arrays are walked with the plugin's element size, not ours: a plugin
  // built against a newer minor ABI has longer elements (fields appended).
  // Element 0's size is checked before it becomes the stride.
  const size_t dev_stride = desc->num_devices ? desc->devices[0].struct_size : 0;
  const size_t ker_stride = desc->num_kernels ? desc->kernels[0].struct_size : 0;
  if (desc->num_devices) {
    std::string why = bad_element_size<parley_device_desc>(
        dev_stride, offsetof(parley_device_desc, synchronize) + sizeof(desc->devices[0].synchronize));
    if (!why.empty()) bad("device 0: " + why);
  }
  if (desc->num_kernels) {
    std::string why =
        bad_element_size<parley_kernel_desc>(ker_stride, offsetof(parley_kernel_desc, run) + sizeof(parley_kernel_fn));
    if (!why.empty()) bad("kernel 0: " + why);
  }
  auto device_at = [&](size_t i) -> const parley_device_desc & {
    return *reinterpret_cast<const parley_device_desc *>(reinterpret_cast<const char *>(desc->devices) +
                                                         i * dev_stride);
  };
  auto kernel_at = [&](size_t i) -> const parley_kernel_desc & {
    return *reinterpret_cast<const parley_kernel_desc *>(reinterpret_cast<const char *>(desc->kernels) +
                                                         i * ker_stride);
  };
  const bool newer_minor = major == PARLEY_PLUGIN_ABI_MAJOR && minor > PARLEY_PLUGIN_ABI_MINOR;
  for (size_t i = 0; i < desc->num_devices; ++i) {
    const parley_device_desc &dd = device_at(i);
    if (dd.struct_size != dev_stride) bad("device " + std::to_string(i) + ": struct_size differs from device 0's");
    std::string tag = "device " + std::to_string(i);
    if (dd.struct_size < offsetof(parley_device_desc, synchronize) + sizeof(dd.synchronize))
      bad(tag + ": struct_size too small");
    if (!valid_name(dd.name)) bad(tag + ": name missing or invalid");
    if (!device_names.insert(dd.name).second) bad(std::string("device '") + dd.name + "' is already provided");
    if (dd.kind < PARLEY_DEVICE_CPU || dd.kind > PARLEY_DEVICE_OTHER)
      bad(std::string("device '") + dd.name + "': unknown kind");
    if (!dd.allocate || !dd.release || !dd.copy || !dd.synchronize)
      bad(std::string("device '") + dd.name + "': allocate/release/copy/synchronize must all be set");
    Device d;
    d.name = dd.name;
    d.plugin = desc->name;
    d.kind = static_cast<parley_device_kind>(dd.kind);
    d.desc = dd;
    new_devices.push_back(std::move(d));
  }

  std::vector<Kernel> new_kernels;
  std::set<std::string> kernel_names;
  for (size_t i = 0; i < desc->num_kernels; ++i) {
    const parley_kernel_desc &kd = kernel_at(i);
    std::string tag = "kernel " + std::to_string(i);
    if (kd.struct_size < offsetof(parley_kernel_desc, run) + sizeof(kd.run)) bad(tag + ": struct_size too small");
    if (kd.struct_size != ker_stride) bad(tag + ": struct_size differs from kernel 0's");
    if (!valid_name(kd.name)) bad(tag + ": name missing or invalid");
    tag = std::string("kernel '") + kd.name + "'";
    if (!kernel_names.insert(kd.name).second) bad(tag + ": name used twice");
    bool unknown = kd.op < 0 || kd.op >= PARLEY_OP_COUNT_ || kd.dtype < 0 || kd.dtype >= PARLEY_DTYPE_COUNT_;
    if (unknown && newer_minor) {  // an op or dtype from a newer minor ABI: not ours to serve
      host_.log(PARLEY_SEVERITY_INFO, where + ": " + tag + " uses an op or dtype this runtime does not know; skipped");
      continue;
    }
    if (kd.op < 0 || kd.op >= PARLEY_OP_COUNT_) bad(tag + ": unknown op " + std::to_string(kd.op));
    if (kd.dtype < 0 || kd.dtype >= PARLEY_DTYPE_COUNT_) bad(tag + ": unknown dtype " + std::to_string(kd.dtype));
    if (!valid_name(kd.device) || !device_names.count(kd.device)) bad(tag + ": device missing or unknown");
    if (!kd.run) bad(tag + ": run is NULL");
    uint32_t flags = 0;
    if (kd.struct_size >= offsetof(parley_kernel_desc, flags) + sizeof(kd.flags))
      flags = kd.flags & (kd.op == PARLEY_OP_ATTENTION ? PARLEY_KERNEL_FLAG_KV_APPEND | PARLEY_KERNEL_FLAG_KV_F16 |
                                                             PARLEY_KERNEL_FLAG_KV_I8 | PARLEY_KERNEL_FLAG_KV_PAGED
                                                       : 0u);
    // A sliding window is a field of ABI 1.4's attention arguments: only a
    // plugin built against 1.4 or later can have meant that bit.
    if (kd.op == PARLEY_OP_ATTENTION && major == PARLEY_PLUGIN_ABI_MAJOR && minor >= 4)
      flags |= kd.flags & PARLEY_KERNEL_FLAG_SLIDING_WINDOW;
    // Likewise a LINEAR kernel's block statistics (ABI 1.5 fields).
    if (kd.op == PARLEY_OP_LINEAR && major == PARLEY_PLUGIN_ABI_MAJOR && minor >= 5)
      flags |= kd.flags & PARLEY_KERNEL_FLAG_LINEAR_STATS;
    // And a BF16 cache (a kv_dtype value ABI 1.6 allows).
    if (kd.op == PARLEY_OP_ATTENTION && major == PARLEY_PLUGIN_ABI_MAJOR && minor >= 6)
      flags |= kd.flags & PARLEY_KERNEL_FLAG_KV_BF16;
    Kernel k{static_cast<parley_op>(kd.op),
             kd.device,
             kd.name,
             desc->name,
             static_cast<parley_dtype>(kd.dtype),
             kd.priority,
             0,
             kd.run,
             flags};
    if (kd.op == PARLEY_OP_LINEAR) {
      // A LINEAR kernel is unusable without its weight hooks (ABI 1.2 fields).
      if (kd.struct_size < offsetof(parley_kernel_desc, release_weight) + sizeof(kd.release_weight))
        bad(tag + ": a linear kernel needs the ABI 1.2 fields (weight_dtype, prepare_weight, release_weight)");
      if (kd.weight_dtype < 0 || kd.weight_dtype >= PARLEY_DTYPE_COUNT_) {
        if (newer_minor) {
          host_.log(PARLEY_SEVERITY_INFO,
                    where + ": " + tag + " uses a weight dtype this runtime does not know; skipped");
          continue;
        }
        bad(tag + ": unknown weight dtype " + std::to_string(kd.weight_dtype));
      }
      if (!kd.prepare_weight || !kd.release_weight) bad(tag + ": prepare_weight and release_weight must both be set");
      k.weight_dtype = kd.weight_dtype;
      k.prepare_weight = kd.prepare_weight;
      k.release_weight = kd.release_weight;
      k.reports_released_source = major == PARLEY_PLUGIN_ABI_MAJOR && minor >= 7;
    }
    new_kernels.push_back(std::move(k));
  }
  lock.unlock();

  // Devices come up outside the lock: init may be slow (driver probing).
  for (auto &d : new_devices) {
    if (!d.desc.init) {
      d.available = true;
      continue;
    }
    char msg[512] = {0};
    void *state = nullptr;
    parley_kernel_status st = d.desc.init(host_.table(), &state, msg, sizeof msg);
    msg[sizeof msg - 1] = 0;
    if (st == PARLEY_KERNEL_OK) {
      d.available = true;
      d.state = state;
    } else {
      d.status = msg[0] ? msg : "device init failed (status " + std::to_string(st) + ")";
      host_.log(PARLEY_SEVERITY_INFO, "device '" + d.name + "' unavailable: " + d.status);
    }
  }

  lock.lock();
  // Re-check names: another thread may have registered a plugin or device
  // with the same name while the devices were initialising.
  std::string clash;
  for (const auto &p : plugins_)
    if (p.name == desc->name) clash = std::string("a plugin named '") + desc->name + "' is already loaded";
  for (const auto &d : devices_)
    for (const auto &nd : new_devices)
      if (d.name == nd.name) clash = "device '" + nd.name + "' is already provided";
  if (!clash.empty()) {
    lock.unlock();
    for (auto &d : new_devices)
      if (d.available && d.desc.shutdown) d.desc.shutdown(d.state);
    bad(clash);
  }
  LoadedPlugin p;
  p.name = desc->name;
  p.version = desc->version;
  p.path = path;
  p.abi_version = desc->abi_version;
  p.num_devices = desc->num_devices;
  p.num_kernels = desc->num_kernels;
  p.library = library;
  plugins_.push_back(std::move(p));
  for (auto &d : new_devices) devices_.push_back(std::move(d));
  for (auto &k : new_kernels) {
    k.load_order = kernels_.size();
    kernels_.push_back(std::move(k));
  }
  reselect();
}

void Registry::reselect() {
  selected_.clear();
  std::set<std::string> available;
  for (const auto &d : devices_)
    if (d.available) available.insert(d.name);
  for (size_t i = 0; i < kernels_.size(); ++i) {
    const Kernel &k = kernels_[i];
    if (!available.count(k.device)) continue;
    auto key = std::make_tuple(static_cast<int>(k.op), k.device, static_cast<int>(k.dtype), k.weight_dtype);
    auto it = selected_.find(key);
    // Higher priority wins; on a tie the kernel loaded first keeps its place.
    if (it == selected_.end() || kernels_[it->second].priority < k.priority) selected_[key] = i;
  }
}

std::vector<LoadedPlugin> Registry::plugins() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return plugins_;
}

std::vector<Device> Registry::devices() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return devices_;
}

std::vector<Kernel> Registry::kernels() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return kernels_;
}

bool Registry::is_selected(const Kernel &k) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it =
      selected_.find(std::make_tuple(static_cast<int>(k.op), k.device, static_cast<int>(k.dtype), k.weight_dtype));
  return it != selected_.end() && it->second == k.load_order;
}

Device Registry::device(const std::string &name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto &d : devices_) {
    if (d.name != name) continue;
    if (!d.available)
      fail(PARLEY_ERROR_DEVICE, "device '" + name + "' (plugin '" + d.plugin + "') is unavailable: " + d.status);
    return d;
  }
  std::string known;
  for (const auto &d : devices_) known += (known.empty() ? "" : ", ") + d.name;
  fail(PARLEY_ERROR_NOT_FOUND, "no device named '" + name + "' (loaded devices: " +
                                   (known.empty() ? std::string("none — no plugin is loaded") : known) + ")");
}

Kernel Registry::find(parley_op op, const std::string &device_name, parley_dtype dtype) const {
  device(device_name);  // throws a precise error for a missing or unavailable device
  std::lock_guard<std::mutex> lock(mutex_);
  // For LINEAR, the kernel for weights of the activation dtype.
  const int wdt = op == PARLEY_OP_LINEAR ? static_cast<int>(dtype) : -1;
  auto it = selected_.find(std::make_tuple(static_cast<int>(op), device_name, static_cast<int>(dtype), wdt));
  if (it == selected_.end())
    fail(PARLEY_ERROR_NOT_FOUND, std::string("no kernel for op '") + op_name(op) + "' on device '" + device_name +
                                     "' with dtype " + std::to_string(dtype));
  return kernels_[it->second];
}

std::vector<Kernel> Registry::linear_candidates(const std::string &device_name, parley_dtype dtype,
                                                parley_dtype weight_dtype) const {
  device(device_name);
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Kernel> out;
  for (const Kernel &k : kernels_)
    if (k.op == PARLEY_OP_LINEAR && k.device == device_name && k.dtype == dtype && k.weight_dtype == weight_dtype)
      out.push_back(k);
  // Highest priority first; ties keep load order (the selected one first).
  std::stable_sort(out.begin(), out.end(), [](const Kernel &a, const Kernel &b) { return a.priority > b.priority; });
  return out;
}

const char *Registry::intern(const std::string &s) const {
  std::lock_guard<std::mutex> lock(intern_mutex_);
  return interned_.insert(s).first->c_str();
}

parley_kernel_info Registry::describe(const Kernel &k) const {
  parley_kernel_info out{};
  out.struct_size = sizeof out;
  out.op = op_name(k.op);
  out.device = intern(k.device);
  out.dtype = k.dtype;
  out.priority = k.priority;
  out.name = intern(k.name);
  out.plugin = intern(k.plugin);
  out.selected = is_selected(k) ? 1 : 0;
  out.weight_dtype = k.op == PARLEY_OP_LINEAR ? k.weight_dtype : -1;
  return out;
}

}  // namespace parley
