/*
 * parley/plugin.h — the kernel plugin ABI of Parley.
 *
 * A plugin is a shared library that exports exactly one C entry point,
 * PARLEY_PLUGIN_ENTRY_SYMBOL ("parley_plugin_entry"), which returns a
 * versioned descriptor: the devices the plugin provides and the kernels it
 * implements. The runtime hands the plugin a table of host services (logging,
 * a parallel-for over the runtime's thread pool, scratch memory).
 *
 * This header is self-contained C99: a plugin includes no other Parley header.
 *
 * Evolution rules (the same as the public API):
 *  - every struct starts with `size_t struct_size`; fields are only appended;
 *    a reader must check struct_size before touching a field added later;
 *    the host refuses a descriptor whose struct_size is below ABI 1.0's,
 *    above 4096 bytes, or (for array elements, which it walks with element
 *    0's struct_size) not a multiple of the struct's alignment;
 *  - PARLEY_PLUGIN_ABI_MAJOR changes only when an existing field or function
 *    changes meaning; the host refuses a plugin of another major version and
 *    a plugin may refuse a host (it receives the host's version in the entry
 *    point and returns NULL);
 *  - PARLEY_PLUGIN_ABI_MINOR grows when ops, fields or services are appended.
 *
 * Enumerations travel as int32_t fields and parameters (the enum type is
 * named in a comment): the size of a C enum is the compiler's choice, and an
 * out-of-range value in an enum-typed variable is undefined in C++. Readers
 * must reject values they do not know.
 *
 * Conventions for every kernel:
 *  - tensors are dense row-major unless strides are given; strides and leading
 *    dimensions are counted in elements, not bytes;
 *  - a kernel never aborts: it returns a parley_kernel_status and, on error,
 *    may describe it through host->set_error();
 *  - a kernel must not keep pointers to its arguments after it returns;
 *  - kernels are called concurrently from several threads with distinct
 *    arguments: a kernel keeps no mutable global state.
 */
#ifndef PARLEY_PLUGIN_H
#define PARLEY_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PARLEY_PLUGIN_ABI_MAJOR 1
#define PARLEY_PLUGIN_ABI_MINOR 7
/* Major in the high 16 bits, minor in the low 16 bits. */
#define PARLEY_PLUGIN_ABI_VERSION ((uint32_t)((PARLEY_PLUGIN_ABI_MAJOR << 16) | PARLEY_PLUGIN_ABI_MINOR))
#define PARLEY_PLUGIN_ENTRY_SYMBOL "parley_plugin_entry"

#if defined(_WIN32)
#define PARLEY_PLUGIN_EXPORT __declspec(dllexport)
#else
#define PARLEY_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

/* ------------------------------------------------------------------ types */

/* Element types. The same values are used by parley.h and the model file. */
#ifndef PARLEY_DTYPE_DEFINED
#define PARLEY_DTYPE_DEFINED
typedef enum parley_dtype {
  PARLEY_DTYPE_F32 = 0,
  PARLEY_DTYPE_F16 = 1,
  PARLEY_DTYPE_BF16 = 2,
  PARLEY_DTYPE_I8 = 3,
  PARLEY_DTYPE_I32 = 4,
  PARLEY_DTYPE_U8 = 5,
  PARLEY_DTYPE_I64 = 6,
  /* Signed 4-bit integers in [-8, 7], two per byte: element 2i in the low
   * nibble, element 2i+1 in the high nibble (two's complement). A row of k
   * elements takes k/2 bytes (k is even). Added with plugin ABI 1.2. */
  PARLEY_DTYPE_I4 = 7,
  PARLEY_DTYPE_COUNT_ = 8 /* not a type: one past the last valid value */
} parley_dtype;
#endif

/* Status a kernel or device function returns. 0 is success. */
typedef enum parley_kernel_status {
  PARLEY_KERNEL_OK = 0,
  PARLEY_KERNEL_INVALID_ARGUMENT = 1, /* shapes, strides, NULL pointers, enum values */
  PARLEY_KERNEL_UNSUPPORTED = 2,      /* valid request this kernel does not implement */
  PARLEY_KERNEL_OUT_OF_MEMORY = 3,
  PARLEY_KERNEL_DEVICE_ERROR = 4 /* driver / device failure */
} parley_kernel_status;

/* Operations. Each has an argument struct below. Values are stable. */
typedef enum parley_op {
  PARLEY_OP_GEMM = 0,
  PARLEY_OP_ATTENTION = 1,
  PARLEY_OP_LAYER_NORM = 2,
  PARLEY_OP_RMS_NORM = 3,
  PARLEY_OP_ROTARY = 4,
  PARLEY_OP_ACTIVATION = 5,
  PARLEY_OP_GATED_ACTIVATION = 6,
  PARLEY_OP_EMBEDDING = 7,
  PARLEY_OP_ADD = 8,
  PARLEY_OP_SOFTMAX = 9,
  PARLEY_OP_LOG_SOFTMAX = 10,
  PARLEY_OP_TOPK = 11,
  PARLEY_OP_LINEAR = 12, /* ABI 1.2: x @ W^T with a prepared (packed) weight */
  PARLEY_OP_COUNT_ = 13  /* not an op: one past the last valid value */
} parley_op;

/* Element-wise activation, also used as a GEMM epilogue. */
typedef enum parley_activation {
  PARLEY_ACT_NONE = 0,
  PARLEY_ACT_RELU = 1,
  PARLEY_ACT_GELU_ERF = 2,  /* x * 0.5 * (1 + erf(x / sqrt(2)))          (HF "gelu") */
  PARLEY_ACT_GELU_TANH = 3, /* 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))) (HF "gelu_new") */
  PARLEY_ACT_SILU = 4,      /* x * sigmoid(x)                               (HF "silu") */
  PARLEY_ACT_COUNT_ = 5
} parley_activation;

typedef enum parley_device_kind {
  PARLEY_DEVICE_CPU = 0,
  PARLEY_DEVICE_CUDA = 1,
  PARLEY_DEVICE_OTHER = 2
} parley_device_kind;

typedef enum parley_copy_kind {
  PARLEY_COPY_HOST_TO_DEVICE = 0,
  PARLEY_COPY_DEVICE_TO_HOST = 1,
  PARLEY_COPY_DEVICE_TO_DEVICE = 2
} parley_copy_kind;

typedef enum parley_log_level {
  PARLEY_LOG_DEBUG = 0,
  PARLEY_LOG_INFO = 1,
  PARLEY_LOG_WARNING = 2,
  PARLEY_LOG_ERROR = 3
} parley_log_level;

/* ---------------------------------------------------------- host services */

/* Body of a parallel loop: processes indices [begin, end). */
typedef void (*parley_range_fn)(void *user_data, int64_t begin, int64_t end);

/*
 * Services the runtime offers to plugins. The table and `host` stay valid for
 * as long as the plugin is loaded. All functions are thread-safe.
 */
typedef struct parley_host_services {
  size_t struct_size;
  uint32_t abi_version; /* PARLEY_PLUGIN_ABI_VERSION of the host */
  void *host;           /* opaque, passed back to every function below */

  /* Emit a log line through the runtime's log callback. */
  void (*log)(void *host, int32_t level /* parley_log_level */, const char *message);

  /*
   * Run fn over [0, n) split into chunks of at least `grain` indices on the
   * runtime's thread pool; returns when every chunk is done. The calling
   * thread takes part. Nested calls run serially on the caller.
   */
  void (*parallel_for)(void *host, int64_t n, int64_t grain, parley_range_fn fn, void *user_data);

  /* Number of threads parallel_for may use (>= 1). */
  int (*num_threads)(void *host);

  /*
   * Scratch memory for the duration of one kernel call on the calling thread,
   * aligned to 64 bytes. Returns NULL when `bytes` cannot be provided. The
   * memory is reused by the next kernel call on this thread: never free it.
   * Only one scratch block is live per call; a second call replaces the first.
   * Take scratch inside a parallel_for chunk and use it only within that
   * chunk: while a thread waits in parallel_for it may run another kernel's
   * chunk, which may reuse the same thread's scratch.
   */
  void *(*scratch)(void *host, size_t bytes);

  /*
   * Attach a detailed message to the error a kernel is about to return. The
   * message is copied; it becomes the runtime's last error text.
   */
  void (*set_error)(void *host, const char *message);
} parley_host_services;

/* Passed to every kernel call. */
typedef struct parley_kernel_context {
  size_t struct_size;
  const parley_host_services *host;
  void *device_state; /* the state returned by the device's init, or NULL */
  void *stream;       /* device stream, NULL on the CPU */
} parley_kernel_context;

/* ----------------------------------------------------------- op arguments */
/* Every argument struct starts with struct_size. dtype fields name the element
 * type of the tensors; a kernel registered for one dtype is only called with
 * that dtype, but must still reject anything it cannot do.
 *
 * 16-bit activations (parley_model_options.activation_dtype F16 or BF16):
 * a model then calls EMBEDDING, LAYER_NORM, RMS_NORM, ROTARY, ATTENTION,
 * GATED_ACTIVATION, ADD and LINEAR with dtype F16 / BF16, which names the
 * activations only: x / out / residual / residual_out, the attention's q,
 * k_new, v_new and out (its cache has kv_dtype; K/V that are activations,
 * as in cross-attention, come with kv_dtype = dtype), the embedding's out. Parameters keep their types:
 * norm gamma / beta and LINEAR's bias are float, rotary inv_freq float, the
 * embedding table its table_dtype, lse and probs float. Such a kernel
 * computes in float and rounds each output once, to nearest even. */

/*
 * C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b]  (+ bias[n]) -> epilogue
 * op(A) is m x k, op(B) is k x n, C is m x n; all row-major.
 * trans_a != 0 means A is stored k x m (lda >= m), otherwise m x k (lda >= k).
 * trans_b != 0 means B is stored n x k (ldb >= k), the layout of nn.Linear
 * weights, otherwise k x n (ldb >= n). ldc >= n.
 * batch >= 1 matrices at element offsets stride_a/b/c apart (stride 0
 * broadcasts one matrix to every batch entry). bias may be NULL.
 */
typedef struct parley_gemm_args {
  size_t struct_size;
  int32_t dtype; /* parley_dtype */
  int32_t trans_a;
  int32_t trans_b;
  int64_t m, n, k;
  int64_t batch;
  const void *a;
  int64_t lda, stride_a;
  const void *b;
  int64_t ldb, stride_b;
  void *c;
  int64_t ldc, stride_c;
  float alpha;
  float beta;
  const void *bias;
  int32_t epilogue; /* parley_activation */
} parley_gemm_args;

/* Attention masks (combinable flags). */
#define PARLEY_MASK_NONE 0u
/* Query i of q_len may see key j iff j <= i + (L - q_len), where L is the
 * sequence's key length: bottom-right aligned, as needed with a KV cache. */
#define PARLEY_MASK_CAUSAL 1u
/* key_lengths[b] valid keys per sequence; keys j >= key_lengths[b] are masked. */
#define PARLEY_MASK_KEY_PADDING 2u

/*
 * Scaled dot-product attention, fused (no materialised score matrix is
 * required). For each batch b, head h, query i:
 *   out[b,h,i,:] = softmax_j(scale * q[b,h,i,:] . k[b,g,j,:] + mask) @ v[b,g,j,:]
 * with g = h / (num_heads / num_kv_heads) (GQA/MQA; num_heads must be a
 * multiple of num_kv_heads). q_len may differ from kv_len (cross-attention).
 * Tensors are addressed through strides in elements so callers can pass
 * [batch, seq, heads, dim] or [batch, heads, seq, dim] views; the last
 * dimension (head_dim) is contiguous.
 * A query row whose keys are all masked produces zeros (and zero probs).
 * probs, if not NULL, receives the attention probabilities as F32
 * [batch, num_heads, q_len, kv_len] dense. lse, if not NULL, receives the
 * natural-log sum-exp of the scaled, masked scores as F32
 * [batch, num_heads, q_len] (-INFINITY for a fully masked row).
 *
 * KV-cache append in the same call (ABI 1.1; only for kernels registered
 * with PARLEY_KERNEL_FLAG_KV_APPEND, which the runtime checks before setting
 * it): when k_new is not NULL, the q_len newest keys and values of each
 * sequence are given in k_new / v_new ([batch, q_len, kv_heads, head_dim]
 * through their strides). The kernel writes them into k / v at positions
 * L - q_len .. L - 1, where L is key_lengths[b] with KEY_PADDING and kv_len
 * without (k and v must then be writable), and attends over the cache with
 * those rows in place. A kernel may read the new rows from k_new instead of
 * the cache; the cache rows are written by the time the call's work is done
 * in stream order. Positions below 0 (L < q_len) are not written.
 */
typedef struct parley_attention_args {
  size_t struct_size;
  int32_t dtype; /* parley_dtype */
  int64_t batch, num_heads, num_kv_heads, q_len, kv_len, head_dim;
  const void *q;
  int64_t q_stride_batch, q_stride_head, q_stride_seq;
  const void *k;
  int64_t k_stride_batch, k_stride_head, k_stride_seq;
  const void *v;
  int64_t v_stride_batch, v_stride_head, v_stride_seq;
  void *out;
  int64_t out_stride_batch, out_stride_head, out_stride_seq;
  float scale;
  uint32_t mask;              /* PARLEY_MASK_* flags */
  const int32_t *key_lengths; /* [batch], required with PARLEY_MASK_KEY_PADDING */
  float *probs;               /* optional */
  float *lse;                 /* optional */
  /* ABI 1.1: fused KV-cache append (see above). Read only when struct_size covers them. */
  const void *k_new;
  int64_t k_new_stride_batch, k_new_stride_head, k_new_stride_seq;
  const void *v_new;
  int64_t v_new_stride_batch, v_new_stride_head, v_new_stride_seq;
  /* ABI 1.2: element type of the cache k / v (read only when struct_size
   * covers it; F32 or `dtype` otherwise). F16, or I8 with one F32 scale per
   * (sequence, kv head, position) row of head_dim: value = q * scale, in
   * k_scales / v_scales at b * scale_stride_batch + g * scale_stride_head +
   * j * scale_stride_seq (strides in floats; k / v strides count elements
   * of kv_dtype). q, out, k_new and v_new keep `dtype`; appended rows are
   * converted by the kernel, which also writes their scales: F16 rounds to
   * nearest even; I8 stores scale = max|row| / 127 (computed in F32) and
   * q = x / scale rounded to nearest even, clamped to [-127, 127] (an
   * all-zero row: scale 0; a row holding a NaN or infinity: scale NaN, so
   * it reads back as NaN). k_scales / v_scales must be non-NULL for I8
   * (PARLEY_KERNEL_INVALID_ARGUMENT otherwise). ABI 1.6: BF16 too (appended
   * rows rounded to nearest even). kv_dtype other than F32 / F16 / BF16 /
   * I8 is invalid. Only kernels registered with PARLEY_KERNEL_FLAG_KV_F16 /
   * _KV_BF16 / _KV_I8 get F16 / BF16 / I8. */
  int32_t kv_dtype; /* parley_dtype */
  float *k_scales;
  float *v_scales;
  int64_t scale_stride_batch, scale_stride_head, scale_stride_seq;
  /* ABI 1.3: paged KV cache (read only when struct_size covers them; only
   * kernels registered with PARLEY_KERNEL_FLAG_KV_PAGED get a non-NULL
   * block_table). When block_table is not NULL, k / v (and, for I8,
   * k_scales / v_scales) are pools of blocks of block_size positions shared
   * by all sequences, and k_stride_batch / v_stride_batch /
   * scale_stride_batch are the strides between blocks: key j of sequence b
   * is row j % block_size of block
   *   blk = block_table[b * block_table_stride + j / block_size]
   * at element offset blk * k_stride_batch + (j % block_size) * k_stride_seq
   * + g * k_stride_head (v and the scales alike). PARLEY_MASK_KEY_PADDING is
   * required (key_lengths[b] = L, the sequence's length after the append),
   * and the table must hold ceil(L / block_size) valid block indices per
   * sequence. The fused append writes each new row into its block the same
   * way; the caller guarantees that a block receiving new rows belongs to
   * one sequence of the call only (blocks that are only read may be shared
   * by several sequences). block_size >= 1; without a table block_size and
   * block_table_stride are 0. kv_len is only the width of the probs rows
   * (key_lengths[b] <= kv_len when probs is set; otherwise it may be 0). */
  const int32_t *block_table;
  int64_t block_table_stride;
  int64_t block_size;
  /* ABI 1.4: sliding-window attention (read only when struct_size covers
   * it; only kernels registered with PARLEY_KERNEL_FLAG_SLIDING_WINDOW get a
   * non-zero window). window > 0 requires PARLEY_MASK_CAUSAL and narrows it:
   * query i sees key j iff d - window < j <= d, where d = i + L - q_len is
   * the query's own position (the causal diagonal), i.e. the window newest
   * keys up to and including its own (transformers' sliding_window_overlay:
   * kv_idx > q_idx - sliding_window). 0: no window; negative is invalid. */
  int64_t window;
} parley_attention_args;

/* struct_size of a parley_attention_args from ABI 1.0 (no k_new fields):
 * kernels must accept it. */
#define PARLEY_ATTENTION_ARGS_SIZE_V1_0 (offsetof(parley_attention_args, lse) + sizeof(float *))
/* ... and from ABI 1.1 (no kv_dtype / scale fields). */
#define PARLEY_ATTENTION_ARGS_SIZE_V1_1 (offsetof(parley_attention_args, v_new_stride_seq) + sizeof(int64_t))
/* ... and from ABI 1.2 (no block table). */
#define PARLEY_ATTENTION_ARGS_SIZE_V1_2 (offsetof(parley_attention_args, scale_stride_seq) + sizeof(int64_t))
/* ... and from ABI 1.3 (no window). */
#define PARLEY_ATTENTION_ARGS_SIZE_V1_3 (offsetof(parley_attention_args, block_size) + sizeof(int64_t))

/*
 * Row normalisation over `cols` for `rows` rows (row i at x + i*ld_x).
 * If residual is not NULL the input is x + residual, and that sum is also
 * written to residual_out when it is not NULL (fused pre-norm residual).
 * LayerNorm: (x - mean) / sqrt(var + eps) * gamma + beta (biased variance,
 *   as torch.nn.LayerNorm); beta may be NULL.
 * RMSNorm:   x / sqrt(mean(x^2) + eps) * gamma   (as LlamaRMSNorm); beta unused.
 * out may alias x.
 */
typedef struct parley_norm_args {
  size_t struct_size;
  int32_t dtype; /* parley_dtype */
  int64_t rows, cols;
  const void *x;
  int64_t ld_x;
  const void *residual;
  int64_t ld_residual;
  void *residual_out;
  int64_t ld_residual_out;
  const void *gamma;
  const void *beta;
  float eps;
  void *out;
  int64_t ld_out;
} parley_norm_args;

/*
 * Rotary position embedding, in place, on x viewed as [batch, seq, heads,
 * head_dim] through strides. Only the first rotary_dim (even) features rotate.
 * positions: [batch * seq] int32, the absolute position of each token.
 * inv_freq: [rotary_dim / 2] F32, the runtime computes it (theta, linear or
 * Llama-3 scaling). angle = position * inv_freq[i] * 1; then the pair is
 *  interleaved != 0: (x[2i], x[2i+1])                 (GPT-J / Marian style)
 *  interleaved == 0: (x[i], x[i + rotary_dim/2])       (HF rotate_half style)
 * rotated by angle; cos/sin are multiplied by attention_factor (1 normally).
 */
typedef struct parley_rotary_args {
  size_t struct_size;
  int32_t dtype; /* parley_dtype */
  int64_t batch, seq, heads, head_dim, rotary_dim;
  void *x;
  int64_t stride_batch, stride_seq, stride_head;
  const int32_t *positions;
  const float *inv_freq;
  int32_t interleaved;
  float attention_factor;
} parley_rotary_args;

/* out[i,j] = act(x[i,j]) over rows x cols; out may alias x. */
typedef struct parley_activation_args {
  size_t struct_size;
  int32_t dtype;      /* parley_dtype */
  int32_t activation; /* parley_activation */
  int64_t rows, cols;
  const void *x;
  int64_t ld_x;
  void *out;
  int64_t ld_out;
} parley_activation_args;

/* out[i,j] = act(gate[i,j]) * up[i,j]  (SwiGLU / GeGLU / ReGLU); out may alias gate or up. */
typedef struct parley_gated_activation_args {
  size_t struct_size;
  int32_t dtype;      /* parley_dtype */
  int32_t activation; /* parley_activation */
  int64_t rows, cols;
  const void *gate;
  int64_t ld_gate;
  const void *up;
  int64_t ld_up;
  void *out;
  int64_t ld_out;
} parley_gated_activation_args;

/*
 * out[i,:] = table[ids[i], :] * scale, table is [vocab, dim] of table_dtype.
 * For PARLEY_DTYPE_I8 tables, row_scales[vocab] (F32) dequantizes each row.
 * out has dtype `dtype`. An id outside [0, vocab) is an INVALID_ARGUMENT.
 */
typedef struct parley_embedding_args {
  size_t struct_size;
  int32_t dtype;       /* parley_dtype */
  int32_t table_dtype; /* parley_dtype */
  int64_t count, vocab, dim;
  const int32_t *ids;
  const void *table;
  const float *row_scales;
  float scale;
  void *out;
  int64_t ld_out;
} parley_embedding_args;

/* out[i] = alpha * a[i] + b[i] for n elements; out may alias a or b. */
typedef struct parley_add_args {
  size_t struct_size;
  int32_t dtype; /* parley_dtype */
  int64_t n;
  const void *a;
  const void *b;
  void *out;
  float alpha;
} parley_add_args;

/* Row-wise softmax or log-softmax of x over cols; out may alias x. */
typedef struct parley_softmax_args {
  size_t struct_size;
  int32_t dtype; /* parley_dtype */
  int64_t rows, cols;
  const void *x;
  int64_t ld_x;
  void *out;
  int64_t ld_out;
} parley_softmax_args;

/*
 * The k largest values of each row, in descending order; equal values keep
 * their index order (lower index first). NaN compares below every number.
 * values: [rows, k] of dtype, indices: [rows, k] int32. 1 <= k <= cols.
 */
typedef struct parley_topk_args {
  size_t struct_size;
  int32_t dtype; /* parley_dtype */
  int64_t rows, cols, k;
  const void *x;
  int64_t ld_x;
  void *values;
  int32_t *indices;
} parley_topk_args;

/* ------------------------------------------------ linear (ABI 1.2) */

/* How a weight's integers map back to real numbers (parley_weight_desc.quant). */
typedef enum parley_quant {
  /* F32 / F16 / BF16: the element is the value. */
  PARLEY_QUANT_NONE = 0,
  /* I8: w[r][c] = q[r][c] * scales[r] (one scale per output feature). */
  PARLEY_QUANT_PER_ROW = 1,
  /* I8 or I4: w[r][c] = q[r][c] * scales[r * (k / group_size) + c / group_size]
   * (symmetric, no zero point; group_size is 32, 64 or 128 and divides k). */
  PARLEY_QUANT_GROUPWISE = 2,
  PARLEY_QUANT_COUNT_ = 3
} parley_quant;

/*
 * A weight as the model file stores it, handed to a LINEAR kernel's
 * prepare_weight once when a model is prepared. Layout is that of
 * nn.Linear: n rows (output features) of k elements (input features),
 * row-major, rows ld_bytes apart. `data` and `scales` are host memory (the
 * mapped model file) that stays valid and unchanged until release_weight of
 * the prepared weight has returned: a plugin may use it in place.
 */
typedef struct parley_weight_desc {
  size_t struct_size;
  const char *name; /* the tensor's name, for messages */
  int32_t dtype;    /* parley_dtype: F32, F16, BF16, I8 or I4 */
  int32_t quant;    /* parley_quant */
  int64_t n, k;
  const void *data;
  int64_t ld_bytes;    /* bytes from one row to the next (>= k * element size; k / 2 for I4) */
  const float *scales; /* PER_ROW: [n]; GROUPWISE: [n, k / group_size]; NULL otherwise */
  int64_t group_size;  /* GROUPWISE only, else 0 */
} parley_weight_desc;

/* The result of prepare_weight. */
#define PARLEY_PREPARED_USES_SOURCE 1u /* the handle reads desc->data / desc->scales during calls */
/* ABI 1.7: the handle holds the whole weight in its own layout (counted in
 * `bytes`), and the plugin asked the OS to reclaim the pages of desc->data
 * (madvise MADV_PAGEOUT: contents unchanged; read again, and so resident
 * again, only where a rare fallback path needs them). The host reports
 * those bytes as released (parley_model_memory.released_bytes). */
#define PARLEY_PREPARED_SOURCE_RELEASED 2u
typedef struct parley_prepared_weight {
  size_t struct_size;
  void *handle;   /* opaque: the plugin's own layout (may live in device memory) */
  uint64_t bytes; /* memory the handle owns (host or device), for accounting */
  uint32_t flags; /* PARLEY_PREPARED_* */
} parley_prepared_weight;

/*
 * out[i, :] = act(x[i, :] @ W^T + bias) + residual[i, :]   for i < m
 * x is [m, k] (row stride ld_x) of `dtype`, W is the prepared weight [n, k],
 * bias [n] is F32 or NULL, residual [m, n] of `dtype` (row stride
 * ld_residual) is added after the activation, or NULL. out is [m, n] of
 * `dtype` (row stride ld_out); out may alias residual (same stride), never x.
 * The kernel is the one whose prepare_weight made `weight`.
 */
typedef struct parley_linear_args {
  size_t struct_size;
  int32_t dtype;      /* parley_dtype of x, residual and out */
  int32_t activation; /* parley_activation epilogue */
  int64_t m, n, k;
  const void *x;
  int64_t ld_x;
  const void *weight; /* parley_prepared_weight.handle */
  const float *bias;
  const void *residual;
  int64_t ld_residual;
  void *out;
  int64_t ld_out;
  /* ABI 1.5: statistics of each output row in blocks of
   * PARLEY_LINEAR_STATS_BLOCK columns, written by the kernel while the row
   * is still in its caches, so that a caller can take the row's
   * log-sum-exp and its largest entries (log_softmax, beam search over a
   * vocabulary) without reading the row again. Read only when struct_size
   * covers them; the host sets them only for kernels registered with
   * PARLEY_KERNEL_FLAG_LINEAR_STATS, else leaves them NULL. Both NULL or
   * both set, ld_stats >= ceil(n / PARLEY_LINEAR_STATS_BLOCK), in the
   * memory `out` is in. For row i and block b (columns [64 b, min(n, 64 b + 64))),
   * over the final out[i, j] (after activation and residual):
   *   block_max[i * ld_stats + b] = their maximum, NaN ignored (-inf when
   *     every one is -inf or NaN);
   *   block_sum[i * ld_stats + b] = the sum of exp(out[i, j] - block_max)
   *     in float precision; NaN when the block holds a NaN or a +inf, 0
   *     when block_max is -inf. */
  float *block_max;
  float *block_sum;
  int64_t ld_stats;
} parley_linear_args;

/* Columns per block of parley_linear_args.block_max / block_sum (ABI 1.5). */
#define PARLEY_LINEAR_STATS_BLOCK 64
/* struct_size of a parley_linear_args from ABI 1.2-1.4 (no statistics):
 * kernels must accept it. */
#define PARLEY_LINEAR_ARGS_SIZE_V1_2 (offsetof(parley_linear_args, ld_out) + sizeof(int64_t))

/* ------------------------------------------------------------ descriptors */

/* A kernel's entry: args points to the op's argument struct. */
typedef parley_kernel_status (*parley_kernel_fn)(const parley_kernel_context *ctx, const void *args);

/* Capabilities a kernel declares in parley_kernel_desc.flags (ABI 1.1). */
/* PARLEY_OP_ATTENTION: honours k_new / v_new (fused KV-cache append). */
#define PARLEY_KERNEL_FLAG_KV_APPEND 1u
/* PARLEY_OP_ATTENTION (ABI 1.2): reads and appends an F16 / I8 cache (kv_dtype). */
#define PARLEY_KERNEL_FLAG_KV_F16 2u
#define PARLEY_KERNEL_FLAG_KV_I8 4u
/* PARLEY_OP_ATTENTION (ABI 1.3): reads and appends a paged cache (block_table). */
#define PARLEY_KERNEL_FLAG_KV_PAGED 8u
/* PARLEY_OP_ATTENTION (ABI 1.4): honours a sliding window (window > 0). */
#define PARLEY_KERNEL_FLAG_SLIDING_WINDOW 16u
/* PARLEY_OP_LINEAR (ABI 1.5): writes block_max / block_sum when they are set. */
#define PARLEY_KERNEL_FLAG_LINEAR_STATS 32u
/* PARLEY_OP_ATTENTION (ABI 1.6): reads and appends a BF16 cache (kv_dtype). */
#define PARLEY_KERNEL_FLAG_KV_BF16 64u

typedef struct parley_kernel_desc {
  size_t struct_size;
  int32_t op;         /* parley_op */
  const char *device; /* name of a device of this or another loaded plugin */
  int32_t dtype;      /* parley_dtype */
  /* Higher wins when several plugins serve (op, device, dtype). Built-in
   * plugins use 0..99; ties go to the plugin loaded first. */
  int32_t priority;
  const char *name; /* short, unique within the plugin, e.g. "gemm_openblas" */
  parley_kernel_fn run;
  /* ABI 1.1: PARLEY_KERNEL_FLAG_* bits; read only when struct_size covers it
   * (an ABI 1.0 plugin declares none). Unknown bits are ignored. */
  uint32_t flags;
  uint32_t reserved0; /* ABI 1.2: padding made explicit; set to 0 */
  /* ABI 1.2, PARLEY_OP_LINEAR kernels only (ignored for other ops): the
   * weight dtype this kernel serves (`dtype` is the activation dtype); the
   * registry selects per (op, device, dtype, weight_dtype). */
  int32_t weight_dtype; /* parley_dtype */
  /*
   * Called once per weight when a model is prepared; fills `out` (whose
   * struct_size the host set) with the packed weight. Errors:
   * UNSUPPORTED for a quantization or shape this kernel does not serve (the
   * host then tries the next kernel), OUT_OF_MEMORY, INVALID_ARGUMENT. May be
   * called concurrently for different weights.
   */
  parley_kernel_status (*prepare_weight)(const parley_kernel_context *ctx, const parley_weight_desc *desc,
                                         parley_prepared_weight *out);
  /* Frees what prepare_weight made; the host calls it once per handle. */
  void (*release_weight)(const parley_kernel_context *ctx, void *handle);
} parley_kernel_desc;

typedef struct parley_device_desc {
  size_t struct_size;
  const char *name; /* "cpu", "cuda", ...: unique across loaded plugins */
  int32_t kind;     /* parley_device_kind */
  /*
   * Bring the device up. Returns PARLEY_KERNEL_OK and a state pointer, or an
   * error with a message in `error` (NUL-terminated, truncated to
   * error_size): e.g. "no CUDA driver found". A device whose init fails is
   * listed as unavailable and the runtime keeps working. May be NULL.
   */
  parley_kernel_status (*init)(const parley_host_services *host, void **state, char *error, size_t error_size);
  void (*shutdown)(void *state); /* may be NULL */
  parley_kernel_status (*allocate)(void *state, size_t bytes, size_t alignment, void **ptr);
  void (*release)(void *state, void *ptr);
  parley_kernel_status (*copy)(void *state, void *dst, const void *src, size_t bytes,
                               int32_t kind /* parley_copy_kind */, void *stream);
  parley_kernel_status (*synchronize)(void *state, void *stream);
} parley_device_desc;

typedef struct parley_plugin_desc {
  size_t struct_size;
  uint32_t abi_version; /* PARLEY_PLUGIN_ABI_VERSION the plugin was built with */
  const char *name;     /* unique among loaded plugins, e.g. "cpu" */
  const char *version;  /* free text, e.g. "1.2.0" */
  const parley_device_desc *devices;
  size_t num_devices;
  const parley_kernel_desc *kernels;
  size_t num_kernels;
} parley_plugin_desc;

/*
 * The entry point every plugin exports. `host_abi_version` is the host's
 * PARLEY_PLUGIN_ABI_VERSION; a plugin that cannot work with it returns NULL
 * (after host->log explaining why). The returned descriptor and everything
 * it points to must stay valid until the library is unloaded.
 */
typedef const parley_plugin_desc *(*parley_plugin_entry_fn)(uint32_t host_abi_version,
                                                            const parley_host_services *host);

#ifdef __cplusplus
}
#endif

#endif /* PARLEY_PLUGIN_H */
