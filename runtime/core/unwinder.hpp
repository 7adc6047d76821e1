// glibc finds libgcc_s's unwinder lazily: the first time a C++ exception
// unwinds through one of glibc's own frames that has a cleanup (pthread_once,
// which std::call_once uses, as oneDNN does around its JIT kernels), glibc
// dlopens libgcc_s. When memory is short that dlopen fails and glibc aborts
// the process ("libgcc_s.so.1 must be installed for unwinding to work") instead
// of letting the std::bad_alloc reach a handler. preload_unwinder() sends one
// exception through pthread_once while memory is available, so glibc makes and
// keeps the link; it is called when a runtime is created. Cheap after the
// first call; thread-safe.
#pragma once

namespace parley {

void preload_unwinder() noexcept;

}  // namespace parley
