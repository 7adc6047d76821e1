/* plugin.h first, then parley.h: both define parley_dtype behind one guard. */
#include <parley/parley.h>
#include <parley/plugin.h>

int parley_header_check_plugin_first(void);
int parley_header_check_plugin_first(void) {
  return (int)PARLEY_DTYPE_COUNT_ + (int)PARLEY_OK;
}
