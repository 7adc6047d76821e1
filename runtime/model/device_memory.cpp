#include "model/device_memory.hpp"

#include "core/error.hpp"
#include "core/memory_scope.hpp"
#include "core/runtime.hpp"

namespace parley {

namespace {

parley_status status_of(parley_kernel_status st) {
  return st == PARLEY_KERNEL_OUT_OF_MEMORY      ? PARLEY_ERROR_OUT_OF_MEMORY
         : st == PARLEY_KERNEL_DEVICE_ERROR     ? PARLEY_ERROR_DEVICE
         : st == PARLEY_KERNEL_UNSUPPORTED      ? PARLEY_ERROR_UNSUPPORTED
         : st == PARLEY_KERNEL_INVALID_ARGUMENT ? PARLEY_ERROR_INVALID_ARGUMENT
                                                : PARLEY_ERROR_DEVICE;
}

std::string detail(parley_kernel_status st) {
  std::string d = HostServices::take_kernel_error();
  if (!d.empty()) return d;
  return st == PARLEY_KERNEL_OUT_OF_MEMORY ? "the device is out of memory" : "status " + std::to_string(st);
}

}  // namespace

DeviceMemory::DeviceMemory(std::shared_ptr<Runtime> runtime, const Device &device)
    : runtime_(std::move(runtime)), device_(device) {
  if (!device_.available) fail(PARLEY_ERROR_DEVICE, "device '" + device_.name + "' is unavailable: " + device_.status);
  if (!device_.desc.allocate || !device_.desc.release || !device_.desc.copy)
    fail(PARLEY_ERROR_UNSUPPORTED, "device '" + device_.name + "' (plugin " + device_.plugin +
                                       ") has no allocate/release/copy functions: it cannot hold a model");
}

void *DeviceMemory::allocate(size_t bytes) const {
  void *p = nullptr;
  parley_kernel_status st = device_.desc.allocate(device_.state, bytes ? bytes : 1, 64, &p);
  if (st != PARLEY_KERNEL_OK || !p) {
    const parley_status status = st == PARLEY_KERNEL_OK ? PARLEY_ERROR_OUT_OF_MEMORY : status_of(st);
    const char *what = MemoryScope::current();
    fail(status, std::string(status == PARLEY_ERROR_OUT_OF_MEMORY ? "out of memory: " : "") + "cannot allocate " +
                     std::to_string(bytes) + " bytes on device '" + device_.name + "'" +
                     (what ? std::string(" for ") + what : std::string()) + ": " + detail(st));
  }
  return p;
}

void DeviceMemory::release(void *ptr) const noexcept {
  if (ptr) device_.desc.release(device_.state, ptr);
}

void DeviceMemory::copy(void *dst, const void *src, size_t bytes, parley_copy_kind kind, const char *what) const {
  if (!bytes) return;
  parley_kernel_status st = device_.desc.copy(device_.state, dst, src, bytes, kind, nullptr);
  if (st != PARLEY_KERNEL_OK)
    fail(status_of(st), std::string("copy ") + what + " of " + std::to_string(bytes) + " bytes on device '" +
                            device_.name + "' failed: " + detail(st));
}

void DeviceMemory::to_device(void *dst, const void *src, size_t bytes) const {
  copy(dst, src, bytes, PARLEY_COPY_HOST_TO_DEVICE, "host to device");
}

void DeviceMemory::to_host(void *dst, const void *src, size_t bytes) const {
  copy(dst, src, bytes, PARLEY_COPY_DEVICE_TO_HOST, "device to host");
}

void DeviceMemory::on_device(void *dst, const void *src, size_t bytes) const {
  copy(dst, src, bytes, PARLEY_COPY_DEVICE_TO_DEVICE, "device to device");
}

}  // namespace parley
