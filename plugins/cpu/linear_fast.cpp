// Specialised LINEAR paths (see linear.h). None yet: every product takes the
// general tile path of linear.cpp.
#include "linear.h"

namespace parley::cpu {

bool linear_fast(const Host &, const parley_linear_args &, const PackedWeight &, parley_kernel_status *) {
  return false;
}

}  // namespace parley::cpu
