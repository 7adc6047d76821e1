// GEMM through cuBLASLt (loaded with dlopen): F32, F16 and BF16 with FP32
// accumulation, bias and ReLU/GELU(tanh) epilogues fused by cuBLASLt, the
// other activations (GELU erf, SiLU) as a second kernel. The algorithm comes
// from cublasLtMatmulAlgoGetHeuristic once per shape and is cached.
//
// Parley's matrices are row-major; cuBLASLt's are column-major. A row-major
// X (r x c, ld) is the column-major X^T, so C = op(A) op(B) is computed as
// C^T = op(B)^T op(A)^T: cuBLASLt's "A" is our B and its "B" is our A.
#include <algorithm>
#include <climits>
#include <tuple>

#include "cublaslt.h"
#include "cuda_common.h"

namespace parley::cuda {

using AlgoKey = std::tuple<int, int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, int64_t, int, int, int>;

struct GemmAlgoCache {
  std::mutex mutex;
  std::map<AlgoKey, cublasLtMatmulAlgo_t> algos;
};

void gemm_cache_destroy(DeviceState *state) {
  delete state->algo_cache;
  state->algo_cache = nullptr;
}

namespace {

// RAII for the per-call descriptors.
struct Descs {
  const CublasLt *lt;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  explicit Descs(const CublasLt *l) : lt(l) {}
  ~Descs() {
    if (pref) lt->MatmulPreferenceDestroy(pref);
    if (c) lt->MatrixLayoutDestroy(c);
    if (b) lt->MatrixLayoutDestroy(b);
    if (a) lt->MatrixLayoutDestroy(a);
    if (op) lt->MatmulDescDestroy(op);
  }
};

uint32_t pointer_alignment(const void *p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  if (p == nullptr || v % 16 == 0) return 16;
  if (v % 8 == 0) return 8;
  if (v % 4 == 0) return 4;
  if (v % 2 == 0) return 2;
  return 1;
}

parley_kernel_status lt_fail(const Host &host, const char *what, cublasStatus_t st) {
  return host.fail(st == CUBLAS_STATUS_ALLOC_FAILED ? PARLEY_KERNEL_OUT_OF_MEMORY : PARLEY_KERNEL_DEVICE_ERROR,
                   "gemm: %s failed (cublasStatus_t %d)", what, static_cast<int>(st));
}

#define LT_TRY(call, what)                                             \
  do {                                                                 \
    const cublasStatus_t st_ = (call);                                 \
    if (st_ != CUBLAS_STATUS_SUCCESS) return lt_fail(host, what, st_); \
  } while (0)

parley_kernel_status workspace_for(DeviceState *state, const Host &host, cudaStream_t stream, void **ws) {
  std::lock_guard<std::mutex> lock(state->workspace_mutex);
  auto it = state->workspaces.find(stream);
  if (it != state->workspaces.end()) {
    *ws = it->second;
    return PARLEY_KERNEL_OK;
  }
  std::string error;
  if (auto st = state->allocator.allocate(stream, kGemmWorkspaceBytes, ws, &error))
    return host.fail(st, "gemm: workspace: %s", error.c_str());
  state->workspaces[stream] = *ws;
  return PARLEY_KERNEL_OK;
}

}  // namespace

parley_kernel_status gemm_run(const parley_kernel_context *ctx, const void *args) {
  return guarded("gemm", ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    DeviceState *state = nullptr;
    cudaStream_t stream = nullptr;
    const parley_gemm_args *g = nullptr;
    const uint32_t dtypes = (1u << PARLEY_DTYPE_F32) | (1u << PARLEY_DTYPE_F16) | (1u << PARLEY_DTYPE_BF16);
    if (auto st = begin_call("gemm", ctx, args, &host, &state, &stream, &g, dtypes)) return st;
    const int64_t m = g->m, n = g->n, k = g->k, batch = g->batch;
    PARLEY_CHECK(host, m >= 0 && n >= 0 && k >= 0, "gemm: negative shape m=%lld n=%lld k=%lld", ll(m), ll(n), ll(k));
    PARLEY_CHECK(host, batch >= 1 && batch <= INT32_MAX, "gemm: batch (%lld) outside [1, INT32_MAX]", ll(batch));
    const int64_t epi = enum_value(g->epilogue);
    PARLEY_CHECK(host, valid_activation(epi), "gemm: unknown epilogue %lld", ll(epi));
    const bool ta = g->trans_a != 0, tb = g->trans_b != 0;
    const int64_t a_cols = ta ? m : k, b_cols = tb ? k : n;
    PARLEY_CHECK(host, g->lda >= std::max<int64_t>(1, a_cols), "gemm: lda (%lld) < %s (%lld)", ll(g->lda),
                 ta ? "m" : "k", ll(a_cols));
    PARLEY_CHECK(host, g->ldb >= std::max<int64_t>(1, b_cols), "gemm: ldb (%lld) < %s (%lld)", ll(g->ldb),
                 tb ? "k" : "n", ll(b_cols));
    PARLEY_CHECK(host, g->ldc >= std::max<int64_t>(1, n), "gemm: ldc (%lld) < n (%lld)", ll(g->ldc), ll(n));
    PARLEY_CHECK(host, g->stride_a >= 0 && g->stride_b >= 0 && g->stride_c >= 0,
                 "gemm: negative batch stride (a=%lld b=%lld c=%lld)", ll(g->stride_a), ll(g->stride_b),
                 ll(g->stride_c));
    if (m == 0 || n == 0) return PARLEY_KERNEL_OK;
    if (batch > 1)
      PARLEY_CHECK(host, g->stride_c >= (m - 1) * g->ldc + n,
                   "gemm: stride_c (%lld) < (m-1)*ldc+n (%lld): output matrices overlap", ll(g->stride_c),
                   ll((m - 1) * g->ldc + n));
    PARLEY_CHECK(host, g->c != nullptr, "gemm: c is NULL");
    if (k == 0) return host.fail(PARLEY_KERNEL_UNSUPPORTED, "gemm: k == 0 is not supported by the cuda plugin");
    PARLEY_CHECK(host, g->a && g->b, "gemm: a or b is NULL");

    const int64_t dt = enum_value(g->dtype);
    const cudaDataType_t type = dt == PARLEY_DTYPE_F32 ? CUDA_R_32F : dt == PARLEY_DTYPE_F16 ? CUDA_R_16F : CUDA_R_16BF;
    const bool has_bias = g->bias != nullptr;
    cublasLtEpilogue_t lt_epi;
    bool post_activation = false;  // an activation cuBLASLt cannot fuse
    switch (epi) {
      case PARLEY_ACT_RELU:
        lt_epi = has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
        break;
      case PARLEY_ACT_GELU_TANH:  // cuBLASLt's GELU is the tanh approximation
        lt_epi = has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
        break;
      case PARLEY_ACT_NONE:
        lt_epi = has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
        break;
      default:  // GELU erf, SiLU: bias in cuBLASLt, activation afterwards
        lt_epi = has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
        post_activation = true;
        break;
    }

    if (auto st = use_device("gemm", host, state)) return st;
    std::string error;
    const CublasLt *lt = cublaslt_get(state, &error);
    if (lt == nullptr) return host.fail(PARLEY_KERNEL_DEVICE_ERROR, "gemm: %s", error.c_str());
    void *workspace = nullptr;
    if (auto st = workspace_for(state, host, stream, &workspace)) return st;

    Descs d(lt);
    LT_TRY(lt->MatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    // cuBLASLt's A is our B, its B is our A (see the top of the file).
    const cublasOperation_t op_lt_a = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_lt_b = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    LT_TRY(lt->MatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_lt_a, sizeof op_lt_a), "set TRANSA");
    LT_TRY(lt->MatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_lt_b, sizeof op_lt_b), "set TRANSB");
    LT_TRY(lt->MatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &lt_epi, sizeof lt_epi), "set EPILOGUE");
    if (has_bias)
      LT_TRY(lt->MatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias, sizeof g->bias),
             "set BIAS_POINTER");
    // Column-major storage shapes: our B stored k x n row-major is n x k
    // column-major (trans_b: n x k row-major is k x n column-major); likewise A.
    const uint64_t lt_a_rows = static_cast<uint64_t>(tb ? k : n), lt_a_cols = static_cast<uint64_t>(tb ? n : k);
    const uint64_t lt_b_rows = static_cast<uint64_t>(ta ? m : k), lt_b_cols = static_cast<uint64_t>(ta ? k : m);
    LT_TRY(lt->MatrixLayoutCreate(&d.a, type, lt_a_rows, lt_a_cols, g->ldb), "cublasLtMatrixLayoutCreate(B)");
    LT_TRY(lt->MatrixLayoutCreate(&d.b, type, lt_b_rows, lt_b_cols, g->lda), "cublasLtMatrixLayoutCreate(A)");
    LT_TRY(lt->MatrixLayoutCreate(&d.c, type, static_cast<uint64_t>(n), static_cast<uint64_t>(m), g->ldc),
           "cublasLtMatrixLayoutCreate(C)");
    if (batch > 1) {
      const int32_t count = static_cast<int32_t>(batch);
      const int64_t sa = g->stride_b, sb = g->stride_a, sc = g->stride_c;
      LT_TRY(lt->MatrixLayoutSetAttribute(d.a, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count), "batch");
      LT_TRY(lt->MatrixLayoutSetAttribute(d.b, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count), "batch");
      LT_TRY(lt->MatrixLayoutSetAttribute(d.c, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count), "batch");
      LT_TRY(lt->MatrixLayoutSetAttribute(d.a, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sa, sizeof sa), "stride");
      LT_TRY(lt->MatrixLayoutSetAttribute(d.b, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sb, sizeof sb), "stride");
      LT_TRY(lt->MatrixLayoutSetAttribute(d.c, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sc, sizeof sc), "stride");
    }

    // The algorithm depends on the shape, layouts, epilogue and the pointers'
    // alignment: all of it is the cache key.
    const uint32_t al_a = pointer_alignment(g->b), al_b = pointer_alignment(g->a), al_c = pointer_alignment(g->c);
    const uint32_t al_bias = pointer_alignment(g->bias);
    const AlgoKey key{static_cast<int>(dt),
                      tb ? 1 : 0,
                      ta ? 1 : 0,
                      m,
                      n,
                      k,
                      batch,
                      g->lda,
                      g->ldb,
                      g->ldc,
                      batch > 1 ? g->stride_a : 0,
                      batch > 1 ? g->stride_b : 0,
                      batch > 1 ? g->stride_c : 0,
                      static_cast<int>(lt_epi),
                      static_cast<int>(std::min({al_a, al_b, al_c, al_bias})),
                      g->beta != 0.f ? 1 : 0};
    cublasLtMatmulAlgo_t algo;
    bool cached = false;
    {
      std::lock_guard<std::mutex> lock(state->workspace_mutex);
      if (state->algo_cache == nullptr) state->algo_cache = new GemmAlgoCache();
    }
    {
      std::lock_guard<std::mutex> lock(state->algo_cache->mutex);
      auto it = state->algo_cache->algos.find(key);
      if (it != state->algo_cache->algos.end()) {
        algo = it->second;
        cached = true;
      }
    }
    if (!cached) {
      LT_TRY(lt->MatmulPreferenceCreate(&d.pref), "cublasLtMatmulPreferenceCreate");
      const size_t ws_bytes = kGemmWorkspaceBytes;
      LT_TRY(lt->MatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                              sizeof ws_bytes),
             "set MAX_WORKSPACE_BYTES");
      LT_TRY(lt->MatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a),
             "set MIN_ALIGNMENT_A");
      LT_TRY(lt->MatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b),
             "set MIN_ALIGNMENT_B");
      LT_TRY(lt->MatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c),
             "set MIN_ALIGNMENT_C");
      LT_TRY(lt->MatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c),
             "set MIN_ALIGNMENT_D");
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      LT_TRY(lt->MatmulAlgoGetHeuristic(lt->handle, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &result, &found),
             "cublasLtMatmulAlgoGetHeuristic");
      if (found == 0)
        return host.fail(PARLEY_KERNEL_UNSUPPORTED,
                         "gemm: cuBLASLt has no algorithm for %s m=%lld n=%lld k=%lld batch=%lld (epilogue %lld)",
                         dtype_name(dt), ll(m), ll(n), ll(k), ll(batch), ll(epi));
      algo = result.algo;
      std::lock_guard<std::mutex> lock(state->algo_cache->mutex);
      state->algo_cache->algos.emplace(key, algo);
    }
    const float alpha = g->alpha, beta = g->beta;
    LT_TRY(lt->Matmul(lt->handle, d.op, &alpha, g->b, d.a, g->a, d.b, &beta, g->c, d.c, g->c, d.c, &algo, workspace,
                      kGemmWorkspaceBytes, stream),
           "cublasLtMatmul");
    if (post_activation) {
      const size_t elem = dt == PARLEY_DTYPE_F32 ? 4 : 2;
      for (int64_t b = 0; b < batch; ++b) {
        void *c = static_cast<char *>(g->c) + static_cast<size_t>(b * g->stride_c) * elem;
        launch_activation(static_cast<int>(epi), static_cast<int>(dt), m, n, c, g->ldc, c, g->ldc, stream);
      }
      return check_launch(host, "gemm");
    }
    return PARLEY_KERNEL_OK;
  });
}

}  // namespace parley::cuda
