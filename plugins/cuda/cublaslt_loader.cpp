// Loads cuBLASLt on the first GEMM: dlopen("libcublasLt.so.13"), then the
// unversioned name, then dlsym of every function used. A missing library or
// symbol is a clear DEVICE_ERROR of the GEMM, never a failure to load the
// plugin.
#include <dlfcn.h>

#include "cublaslt.h"
#include "cuda_common.h"

namespace parley::cuda {

namespace {

template <typename Fn>
bool bind(void *lib, const char *name, Fn *fn, std::string *missing) {
  *fn = reinterpret_cast<Fn>(dlsym(lib, name));
  if (*fn == nullptr) {
    if (!missing->empty()) *missing += ", ";
    *missing += name;
    return false;
  }
  return true;
}

void load(DeviceState *state) {
  const char *names[] = {"libcublasLt.so.13", "libcublasLt.so"};
  void *lib = nullptr;
  std::string tried;
  for (const char *name : names) {
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib) break;
    const char *why = dlerror();
    if (!tried.empty()) tried += "; ";
    tried += why ? why : name;
  }
  if (lib == nullptr) {
    state->lt_error = "cuBLASLt not found (dlopen libcublasLt.so.13, libcublasLt.so): " + tried;
    return;
  }
  auto *lt = new CublasLt();
  lt->library = lib;
  std::string missing;
  bind(lib, "cublasLtCreate", &lt->Create, &missing);
  bind(lib, "cublasLtDestroy", &lt->Destroy, &missing);
  bind(lib, "cublasLtGetVersion", &lt->GetVersion, &missing);
  bind(lib, "cublasLtMatmulDescCreate", &lt->MatmulDescCreate, &missing);
  bind(lib, "cublasLtMatmulDescDestroy", &lt->MatmulDescDestroy, &missing);
  bind(lib, "cublasLtMatmulDescSetAttribute", &lt->MatmulDescSetAttribute, &missing);
  bind(lib, "cublasLtMatrixLayoutCreate", &lt->MatrixLayoutCreate, &missing);
  bind(lib, "cublasLtMatrixLayoutDestroy", &lt->MatrixLayoutDestroy, &missing);
  bind(lib, "cublasLtMatrixLayoutSetAttribute", &lt->MatrixLayoutSetAttribute, &missing);
  bind(lib, "cublasLtMatmulPreferenceCreate", &lt->MatmulPreferenceCreate, &missing);
  bind(lib, "cublasLtMatmulPreferenceDestroy", &lt->MatmulPreferenceDestroy, &missing);
  bind(lib, "cublasLtMatmulPreferenceSetAttribute", &lt->MatmulPreferenceSetAttribute, &missing);
  bind(lib, "cublasLtMatmulAlgoGetHeuristic", &lt->MatmulAlgoGetHeuristic, &missing);
  bind(lib, "cublasLtMatmul", &lt->Matmul, &missing);
  if (!missing.empty()) {
    state->lt_error = "cuBLASLt library lacks: " + missing;
    dlclose(lib);
    delete lt;
    return;
  }
  (void)cudaSetDevice(state->device);
  const cublasStatus_t st = lt->Create(&lt->handle);
  if (st != CUBLAS_STATUS_SUCCESS) {
    state->lt_error = "cublasLtCreate failed with status " + std::to_string(static_cast<int>(st));
    dlclose(lib);
    delete lt;
    return;
  }
  Host(state->host).log(PARLEY_LOG_INFO, "cuda: cuBLASLt %zu loaded", lt->GetVersion());
  state->lt = lt;
}

}  // namespace

const CublasLt *cublaslt_get(DeviceState *state, std::string *error) {
  std::call_once(state->lt_once, [state] { load(state); });
  if (state->lt == nullptr) *error = state->lt_error;
  return state->lt;
}

void cublaslt_destroy(DeviceState *state) {
  {
    std::lock_guard<std::mutex> lock(state->workspace_mutex);
    for (auto &w : state->workspaces) state->allocator.release(w.second);
    state->workspaces.clear();
  }
  if (state->lt) {
    state->lt->Destroy(state->lt->handle);
    dlclose(state->lt->library);
    delete state->lt;
    state->lt = nullptr;
  }
  gemm_cache_destroy(state);
}

}  // namespace parley::cuda
