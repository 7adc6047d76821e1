// Compiled (never run) to prove the public headers are clean C++11 under
// -std=c++11 -pedantic -Wall -Wextra -Werror and get C linkage.
#include <parley/parley.h>
#include <parley/plugin.h>

#include <type_traits>

static_assert(std::is_standard_layout<parley_runtime_options>::value, "options must be plain C structs");
static_assert(std::is_standard_layout<parley_tensor_info>::value, "info structs must be plain C structs");
static_assert(std::is_same<parley_status, int32_t>::value, "parley_status is int32_t across the ABI");
static_assert(sizeof(parley_status_code) == sizeof(int), "the codes enum is int-sized");

int parley_header_check_cpp();
int parley_header_check_cpp() {
  parley_status (*fn)(const parley_runtime_options *, parley_runtime **) = &parley_runtime_create;
  return fn != nullptr ? static_cast<int>(PARLEY_OK) : 1;
}
