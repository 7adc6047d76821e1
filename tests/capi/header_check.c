/* Compiled (never run) to prove the public headers are clean C99 under
 * -std=c99 -pedantic -Wall -Wextra -Werror, alone and together, in both orders. */
#include <parley/parley.h>
#include <parley/parley.h> /* include guards */
#include <parley/plugin.h>

int parley_header_check_c(void);
int parley_header_check_c(void) {
  parley_runtime_options o;
  parley_tensor_info t;
  parley_dtype d = PARLEY_DTYPE_F32;
  o.struct_size = sizeof o;
  t.struct_size = sizeof t;
  return (int)o.struct_size + (int)t.struct_size + (int)d + PARLEY_VERSION_NUMBER + PARLEY_PLUGIN_ABI_MAJOR;
}
