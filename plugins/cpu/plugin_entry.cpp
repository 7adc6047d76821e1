// The exported entry point of libparley_cpu.so (the only exported symbol; see
// exports.map). Static builds call parley_cpu_plugin_entry directly.
#include <parley/plugin.h>

extern "C" const parley_plugin_desc *parley_cpu_plugin_entry(uint32_t host_abi_version,
                                                             const parley_host_services *host);

extern "C" PARLEY_PLUGIN_EXPORT const parley_plugin_desc *parley_plugin_entry(uint32_t host_abi_version,
                                                                              const parley_host_services *host) {
  return parley_cpu_plugin_entry(host_abi_version, host);
}
