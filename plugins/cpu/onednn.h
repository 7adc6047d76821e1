// What the kernels that call oneDNN share: the once-per-process JIT warm-up
// (see gemm.cpp for why it must run before the first product) and the guard
// that keeps oneDNN's OpenMP runtime on the calling thread.
#ifndef PARLEY_PLUGINS_CPU_ONEDNN_H
#define PARLEY_PLUGINS_CPU_ONEDNN_H

#include <oneapi/dnnl/dnnl.h>
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
#include <omp.h>
#endif

#include "cpu_common.h"

namespace parley::cpu {

// Keeps OpenMP (oneDNN's runtime in Debian) to the calling thread for one call.
class SingleThreadedLibrary {
 public:
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
  SingleThreadedLibrary() : saved_(omp_get_max_threads()) {
    if (saved_ != 1) omp_set_num_threads(1);
  }
  ~SingleThreadedLibrary() {
    if (saved_ != 1) omp_set_num_threads(saved_);
  }

 private:
  int saved_;
#endif
};

// Generates oneDNN's GEMM kernels once per process (OUT_OF_MEMORY, with a
// message, when there is no room for them). Thread-safe.
parley_kernel_status onednn_ready(const Host &host);

}  // namespace parley::cpu

#endif
