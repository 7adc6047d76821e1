/*
 * parley/parley.h — the public C API of Parley.
 *
 * Parley runs Transformer translation (encoder-decoder) and dialogue
 * (decoder-only) models stored in one `.parley` file, dispatching the work to
 * kernel plugins loaded at run time.
 *
 * Conventions (they hold for every function below unless it says otherwise):
 *  - C99; UTF-8 strings; sizes are size_t; token ids are int32_t.
 *  - Every fallible function returns a parley_status. PARLEY_OK is 0. On any
 *    other value the outputs are left untouched, nothing leaks, and
 *    parley_last_error() returns a message describing what was wrong.
 *    No function throws, aborts or exits.
 *  - Handles are opaque. Passing NULL where a handle or an output pointer is
 *    required returns PARLEY_ERROR_INVALID_ARGUMENT.
 *  - Option structs start with `size_t struct_size` and are filled by their
 *    `_init` function, which sets struct_size to the caller's sizeof and
 *    calls the exported `_defaults` function, which writes only that many
 *    bytes (the `_init` functions: end of this header). The library accepts struct_size of any earlier release and
 *    uses defaults for fields an older caller does not know; a struct_size
 *    that is smaller than the first release's or larger than this library's
 *    is refused with PARLEY_ERROR_INVALID_ARGUMENT. Option structs are always
 *    passed by pointer; a NULL options pointer means "all defaults".
 *  - Enumerations travel as int32_t struct fields and parameters (the enum
 *    type is named in a comment): C leaves an enum's size to the compiler.
 *  - Strings returned as `const char *` are owned by the object they came
 *    from and stay valid until that object is freed, unless noted.
 *  - Text enters either NUL-terminated or, through the `_n` variants
 *    (parley_tokenize_n, parley_translate_n, parley_chat_session_create_n,
 *    parley_chat_append_n), as a pointer and a byte length that need not be
 *    followed by a NUL. A NUL byte inside text is refused, never treated as
 *    the end: PARLEY_ERROR_INVALID_ARGUMENT naming the text and the NUL's
 *    byte offset (a host reading untrusted input must not have it cut short
 *    silently, and no UTF-8 text a model is trained on holds U+0000).
 *  - Thread-safety: a parley_runtime may be used from several threads at once
 *    except that parley_runtime_free must not race with anything else using
 *    it. A parley_model is immutable after loading and may be shared by any
 *    number of threads.
 *
 * Versioning: the API evolves by appending functions, enum values and struct
 * fields. PARLEY_VERSION_MAJOR changes only when something is removed or
 * changes meaning; the library's SONAME carries the major version.
 */
#ifndef PARLEY_PARLEY_H
#define PARLEY_PARLEY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#if defined(PARLEY_BUILDING_LIBRARY)
#define PARLEY_API __declspec(dllexport)
#else
#define PARLEY_API __declspec(dllimport)
#endif
#else
#define PARLEY_API __attribute__((visibility("default")))
#endif

/* ------------------------------------------------------------- versions */

#define PARLEY_VERSION_MAJOR 0
#define PARLEY_VERSION_MINOR 1
#define PARLEY_VERSION_PATCH 0
/* (major << 16) | (minor << 8) | patch — compare with parley_version(). */
#define PARLEY_VERSION_NUMBER ((PARLEY_VERSION_MAJOR << 16) | (PARLEY_VERSION_MINOR << 8) | PARLEY_VERSION_PATCH)

/* The version of the library actually loaded, as PARLEY_VERSION_NUMBER. Never fails. */
PARLEY_API uint32_t parley_version(void);
/* The same as a string, e.g. "0.1.0". Static storage. Never fails. */
PARLEY_API const char *parley_version_string(void);

/* -------------------------------------------------------------- status */

/*
 * A status: PARLEY_OK (0) or one of the PARLEY_ERROR_* codes below. It is an
 * int32_t on every platform, in every function's return type and wherever it
 * is stored (C leaves an enum's size to the compiler; the codes are named by
 * the enum parley_status_code, whose values never change). Until 0.1.x the
 * return type was the enum itself: on every platform Parley supports (the
 * System V x86-64 and AArch64 ABIs, Windows x64) an enum of these values is
 * returned as a 32-bit int in the same register, so binaries built then keep
 * working. Codes may be added; treat an unknown one as an error.
 */
typedef int32_t parley_status;

typedef enum parley_status_code {
  PARLEY_OK = 0,
  PARLEY_ERROR_INVALID_ARGUMENT = 1, /* NULL handle/output, bad struct_size, unknown enum, bad value */
  /* An allocation failed (the message says for what); what was loaded stays usable: retry later. */
  PARLEY_ERROR_OUT_OF_MEMORY = 2,
  PARLEY_ERROR_IO = 3,                  /* a file could not be opened, read or mapped */
  PARLEY_ERROR_INVALID_MODEL = 4,       /* the model file is malformed (structure or semantics) */
  PARLEY_ERROR_UNSUPPORTED_VERSION = 5, /* model file format version this library cannot read */
  PARLEY_ERROR_CHECKSUM = 6,            /* a checksum in the model file does not match */
  PARLEY_ERROR_NOT_FOUND = 7,           /* no such tensor, key, plugin, device or kernel */
  PARLEY_ERROR_PLUGIN = 8,              /* a plugin could not be loaded or was refused */
  PARLEY_ERROR_DEVICE = 9,              /* a device is missing or unusable (e.g. no CUDA driver) */
  PARLEY_ERROR_UNSUPPORTED = 10,        /* a valid request this build cannot serve */
  PARLEY_ERROR_INTERNAL = 11,           /* a bug in Parley: please report it */
  PARLEY_ERROR_CANCELLED = 12,          /* the request was cancelled (parley_chat_cancel) */
  PARLEY_ERROR_BUSY = 13,               /* the object is in use by another call (a chat session called from
                                           its own callback or from two threads at once); nothing was done */
  PARLEY_ERROR_TIMEOUT = 14             /* the request's deadline passed before it finished */
} parley_status_code;

/*
 * A static English name for a status, e.g. "PARLEY_ERROR_INVALID_MODEL".
 * Unknown values give "PARLEY_ERROR_UNKNOWN". Never fails.
 */
PARLEY_API const char *parley_status_name(int32_t status);

/*
 * The detailed message of the last failed call on this thread, e.g.
 * "model file 'x.parley': tensor 'decoder.norm.weight': checksum mismatch".
 * Empty string after a successful fallible call on this thread (functions
 * that cannot fail, such as the _free functions, leave it as it was). The pointer is
 * valid until the next Parley call on the same thread. Never fails.
 */
PARLEY_API const char *parley_last_error(void);

/* ------------------------------------------------------------ dtypes */

/* Element types (same values as in parley/plugin.h and the model file). */
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

/* A static name ("f32", "f16", "bf16", "i8", "i32", "u8", "i64", "i4"), or "?" for an unknown value. */
PARLEY_API const char *parley_dtype_name(int32_t dtype);

/* ------------------------------------------------------------- logging */

typedef enum parley_log_severity {
  PARLEY_SEVERITY_DEBUG = 0,
  PARLEY_SEVERITY_INFO = 1,
  PARLEY_SEVERITY_WARNING = 2,
  PARLEY_SEVERITY_ERROR = 3
} parley_log_severity;

/*
 * Receives log lines. May be called from any thread, concurrently; the
 * message is only valid during the call. Must not call back into Parley.
 */
typedef void (*parley_log_fn)(void *user_data, parley_log_severity severity, const char *message);

/* ------------------------------------------------------------- runtime */

typedef struct parley_runtime parley_runtime;

/* Which plugin locations parley_runtime_create searches. */
#define PARLEY_PLUGINS_NONE 0u
/* <directory of libparley>/parley/plugins (the install layout) */
#define PARLEY_PLUGINS_BESIDE_LIBRARY 1u
/* every directory in the PARLEY_PLUGIN_PATH environment variable (':'-separated) */
#define PARLEY_PLUGINS_ENV_PATH 2u
/* plugins linked into libparley (static builds) */
#define PARLEY_PLUGINS_BUILTIN 4u
#define PARLEY_PLUGINS_DEFAULT (PARLEY_PLUGINS_BESIDE_LIBRARY | PARLEY_PLUGINS_ENV_PATH | PARLEY_PLUGINS_BUILTIN)

typedef struct parley_runtime_options {
  size_t struct_size;
  /* Threads for kernels. 0 (default): the number of CPUs available. Max 1024.
   * Between jobs an idle kernel thread polls for the next one for up to
   * PARLEY_SPIN_US microseconds (environment, read once; default 100) before
   * it sleeps: decode issues hundreds of short parallel loops a token. Set
   * PARLEY_SPIN_US=0 where the cores are shared with much other work. */
  int32_t num_threads;
  /* PARLEY_PLUGINS_* flags; default PARLEY_PLUGINS_DEFAULT. */
  uint32_t plugin_sources;
  /* Extra directories to search for plugins (each file matching
   * libparley_*.so is loaded), searched before the default locations.
   * The array and strings are only read during parley_runtime_create. */
  const char *const *plugin_dirs;
  size_t num_plugin_dirs;
  /* Log callback (default NULL: log lines at or above min_severity go to stderr). */
  parley_log_fn log_fn;
  void *log_user_data;
  int32_t min_severity; /* parley_log_severity; default PARLEY_SEVERITY_WARNING */
} parley_runtime_options;

/*
 * Defaults for the first options->struct_size bytes of `options` (set
 * struct_size first; fields past it are not written, so a program built
 * against an older header is safe with a newer library). Most callers use
 * parley_runtime_options_init instead. Errors: PARLEY_ERROR_INVALID_ARGUMENT
 * for NULL or a struct_size outside the known range.
 */
PARLEY_API parley_status parley_runtime_options_defaults(parley_runtime_options *options);

/* parley_runtime_options_init: exported, declared at the end of this header. */

/*
 * Create a runtime: a thread pool, a kernel registry and the plugins found in
 * the configured locations. A plugin that cannot be loaded (missing entry
 * point, ABI mismatch, duplicate name, malformed descriptor, a matching name
 * that is not a regular file, e.g. a FIFO) is skipped and logged as a
 * warning; it does not make creation fail. `options` may be NULL.
 * On success *out_runtime owns a new runtime; free it with parley_runtime_free.
 * PARLEY_ERROR_OUT_OF_MEMORY when a kernel thread cannot be started.
 */
PARLEY_API parley_status parley_runtime_create(const parley_runtime_options *options, parley_runtime **out_runtime);

/*
 * Free a runtime. Models loaded from it keep what they need alive, so they
 * may be freed before or after it. NULL is a no-op.
 */
PARLEY_API void parley_runtime_free(parley_runtime *runtime);

/*
 * Load one plugin library explicitly (a path to a shared library).
 * Errors: PARLEY_ERROR_IO (cannot open; or not a regular file: a FIFO, device
 * or directory is refused without being opened), PARLEY_ERROR_PLUGIN (no
 * entry point, ABI mismatch, duplicate plugin or device name, malformed
 * descriptor: see the struct_size rules in parley/plugin.h).
 * On error the runtime is unchanged and keeps working. Thread-safe.
 */
PARLEY_API parley_status parley_runtime_load_plugin(parley_runtime *runtime, const char *path);

/* Description of a loaded plugin. Strings are owned by the runtime. */
typedef struct parley_plugin_info {
  size_t struct_size;
  const char *name;
  const char *version;
  const char *path;     /* "" for built-in plugins */
  uint32_t abi_version; /* (major << 16) | minor */
  size_t num_devices;
  size_t num_kernels;
} parley_plugin_info;

/* Number of loaded plugins. */
PARLEY_API parley_status parley_runtime_plugin_count(const parley_runtime *runtime, size_t *out_count);
/*
 * Describe plugin `index` (0 <= index < count). `info->struct_size` must be
 * set by the caller (sizeof(parley_plugin_info)); fields beyond it are not
 * written. Errors: PARLEY_ERROR_NOT_FOUND for an index out of range.
 */
PARLEY_API parley_status parley_runtime_plugin_info(const parley_runtime *runtime, size_t index,
                                                    parley_plugin_info *info);

typedef struct parley_device_info {
  size_t struct_size;
  const char *name;   /* "cpu", "cuda", ... */
  const char *plugin; /* the plugin that provides it */
  int32_t kind;       /* PARLEY_DEVICE_CPU = 0, CUDA = 1, OTHER = 2 (see plugin.h) */
  int32_t available;  /* 1 if its init succeeded */
  const char *status; /* "" when available, else why not (e.g. "no CUDA driver") */
} parley_device_info;

PARLEY_API parley_status parley_runtime_device_count(const parley_runtime *runtime, size_t *out_count);
/* Describe device `index`; same rules as parley_runtime_plugin_info. */
PARLEY_API parley_status parley_runtime_device_info(const parley_runtime *runtime, size_t index,
                                                    parley_device_info *info);

typedef struct parley_kernel_info {
  size_t struct_size;
  const char *op; /* "gemm", "attention", "layer_norm", ... */
  const char *device;
  int32_t dtype; /* parley_dtype */
  int32_t priority;
  const char *name; /* the plugin's name for it, e.g. "gemm_openblas" */
  const char *plugin;
  int32_t selected;  /* 1 if it is the one that serves (op, device, dtype) */
  int32_t reserved0; /* the old padding, named: always 0 */
  /* Appended (plugin ABI 1.2): for "linear" kernels the weight dtype they
   * serve (selection is per (op, device, dtype, weight_dtype)); -1 for other ops. */
  int32_t weight_dtype;
  /* Appended: in the model kernel plan, the weight tensor a "linear" (or
   * fallback "gemm") entry serves; NULL for per-op entries. */
  const char *tensor;
} parley_kernel_info;

/* Every registered kernel, selected or not. */
PARLEY_API parley_status parley_runtime_kernel_count(const parley_runtime *runtime, size_t *out_count);
PARLEY_API parley_status parley_runtime_kernel_info(const parley_runtime *runtime, size_t index,
                                                    parley_kernel_info *info);
/*
 * Which kernel serves (op, device, dtype): `op` is an op name as in
 * parley_kernel_info.op. Errors: PARLEY_ERROR_NOT_FOUND if no kernel does,
 * PARLEY_ERROR_DEVICE if the device exists but is unavailable,
 * PARLEY_ERROR_INVALID_ARGUMENT for an unknown op name or dtype.
 */
PARLEY_API parley_status parley_runtime_find_kernel(const parley_runtime *runtime, const char *op, const char *device,
                                                    int32_t dtype, parley_kernel_info *info);

/* --------------------------------------------------------------- model */

typedef struct parley_model parley_model;

typedef struct parley_model_options {
  size_t struct_size;
  /* 1 (default): verify the XXH3-64 checksum of every tensor while loading.
   * 0: skip it (faster; structure and bounds are still checked). */
  int32_t verify_checksums;
  /* Device that will run the model (default "cpu"). Must exist and be available. */
  const char *device;
  /* For parley_model_load_memory: 0 (default) copies the buffer; 1 uses the
   * caller's buffer in place, which must then stay valid and unchanged until
   * the model is freed and must be 64-byte aligned. */
  int32_t borrow_memory;
  /* Ignored. The 4 bytes of padding that followed borrow_memory in the first
   * version of this struct: binaries built then leave garbage there, so no
   * option may live in them. */
  int32_t reserved0;
  /* For parley_model_load_file: 0 (default) maps the file and reads pages on
   * demand; 1 reads the whole file into private memory at load (costs its
   * size in RAM and the read time), so that nothing refers to the file
   * afterwards. Use 1 when the host cannot guarantee that the file stays
   * unchanged while the model is loaded: see parley_model_load_file.
   * Must be 0 when borrow_memory is 1 (PARLEY_ERROR_INVALID_ARGUMENT). */
  int32_t read_into_memory;
  /* Ignored: the tail padding after read_into_memory in the previous version
   * of this struct (binaries built then leave garbage there). */
  int32_t reserved1;
  /* Element type of the decoder's self-attention KV cache (parley_dtype):
   * PARLEY_DTYPE_F32 (default), PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16 or
   * PARLEY_DTYPE_I8. Memory per cached token is layers x 2 (K and V) x
   * kv_heads x head_dim x 4 bytes for F32, x 2 bytes for F16 / BF16, and x 1 byte plus one 4-byte
   * scale per (layer, K/V, kv head) for I8 (about 3.9x less than F32 at
   * head_dim 64); `parley inspect` prints the three figures for a model.
   * Accuracy: F16 rounds each cached value to 11 significant bits (relative
   * error <= 2^-11), BF16 to 8 (2^-8, with F32's range); I8 stores each head's row as q * scale with
   * scale = max|row| / 127 (error <= scale / 2 per value), so logits move
   * slightly and greedy tokens can differ where two candidates are close.
   * The cross-attention K/V of encoder-decoder models is kept in the
   * activation type (activation_dtype below).
   * The device's attention kernel must read the type natively (the cpu
   * plugin reads F16, BF16 and I8; the cuda plugin F16 and, with BF16
   * activations, BF16 on its tensor-core kernel, and I8 on its split-KV
   * kernel): otherwise loading fails with PARLEY_ERROR_UNSUPPORTED naming
   * the device; never widened silently.
   * Any other value: PARLEY_ERROR_INVALID_ARGUMENT. */
  int32_t kv_cache_dtype;
  /* Ignored: the tail padding after kv_cache_dtype in the previous version
   * of this struct (binaries built then leave garbage there). */
  int32_t reserved2;
  /* ---- The serving engine (docs/serving.md). Decoder-only models on a
   * device whose attention kernel reads a paged KV cache (the cpu and cuda
   * plugins' kernels do)
   * run every chat turn and parley_generate call of the model through one
   * engine: concurrent requests from any number of threads are batched
   * into shared decode steps, long prompts are prefilled in chunks, and
   * full KV blocks are shared between requests whose tokens begin alike (a
   * common system prompt is computed once). */
  /* 1 (default): use the engine where the model and device allow it.
   * 0: every call decodes alone with its own contiguous KV cache (the
   * behaviour before the engine). Other values: INVALID_ARGUMENT. */
  int32_t serving_engine;
  /* Positions per KV block, 1..4096 (default 16). */
  int32_t kv_block_size;
  /* Bytes of KV cache for all requests of the model together (default 0: a
   * quarter of physical memory, at most 4 GiB and at most what
   * max_batch_sequences sequences of the model's full length use; halved
   * until the device can allocate it). When it is full, new work
   * waits, younger requests are preempted (their K/V is recomputed later),
   * and a request that waits longer than admission_timeout_ms fails with
   * PARLEY_ERROR_OUT_OF_MEMORY naming the budget. */
  uint64_t kv_cache_budget_bytes;
  /* Sequences in one batched step, >= 1 (default 256). */
  int32_t max_batch_sequences;
  /* Tokens in one batched step (decode rows plus prefill chunks), >= 1 (default 512). */
  int32_t max_batch_tokens;
  /* Tokens of one prompt prefilled per step, >= 1 (default 256): a long
   * prompt is cut into chunks so that other users' replies keep flowing. */
  int32_t prefill_chunk_tokens;
  /* Milliseconds a request may wait for KV memory (default 60000, >= 0). */
  int32_t admission_timeout_ms;
  /* Element type of the activations between kernels (parley_dtype):
   * PARLEY_DTYPE_F32 (default), PARLEY_DTYPE_F16 or PARLEY_DTYPE_BF16.
   * 16 bits halve the activation traffic and let a GPU's tensor cores serve
   * every product; each kernel computes in float32 and rounds its output
   * once (F16: 11 significant bits, range +-65504; BF16: 8 bits, float32's
   * range, for models whose activations overflow F16), so logits move by
   * about 1e-3 (F16) or 1e-2 (BF16) relative and greedy tokens can differ
   * where two candidates are close. Logits reach the host as float. Needs a
   * kv_cache_dtype of F16, BF16 or I8 (INVALID_ARGUMENT for F32; the cuda
   * plugin reads a cache of the activations' own type), and kernels for the
   * type on the device for every op the model runs (the cuda plugin has
   * them; PARLEY_ERROR_UNSUPPORTED naming the op otherwise: the cpu plugin
   * computes in F32, its fastest form on a CPU). Other values:
   * INVALID_ARGUMENT. */
  int32_t activation_dtype;
} parley_model_options;

/* Defaults for the first options->struct_size bytes; see parley_runtime_options_defaults. */
PARLEY_API parley_status parley_model_options_defaults(parley_model_options *options);

/* parley_model_options_init: exported, declared at the end of this header. */

/*
 * Load a model file (memory-mapped; pages are read on demand). The file is
 * treated as untrusted: see formats/FORMAT.md section 4 for every check.
 * A mapped file must stay in place and unchanged until the model is freed:
 * if it is truncated (or rewritten in place) meanwhile, the next access to a
 * lost page raises SIGBUS and kills the process — a property of mmap that
 * no check at load can prevent. Replace model files by renaming a new file
 * over the old path (the mapping keeps the old inode), or set
 * options->read_into_memory = 1.
 * Errors: PARLEY_ERROR_IO (also a path that is not a regular file: a FIFO,
 * device or directory is refused without blocking), PARLEY_ERROR_INVALID_MODEL,
 * PARLEY_ERROR_UNSUPPORTED_VERSION, PARLEY_ERROR_CHECKSUM (names the
 * tensor), PARLEY_ERROR_DEVICE / PARLEY_ERROR_NOT_FOUND (device),
 * PARLEY_ERROR_OUT_OF_MEMORY (no address space to map the file).
 * Thread-safe; the model keeps the runtime's plugins alive.
 */
PARLEY_API parley_status parley_model_load_file(parley_runtime *runtime, const char *path,
                                                const parley_model_options *options, parley_model **out_model);

/* Load a model from `size` bytes at `data`; see borrow_memory. Same errors. */
PARLEY_API parley_status parley_model_load_memory(parley_runtime *runtime, const void *data, size_t size,
                                                  const parley_model_options *options, parley_model **out_model);

/*
 * Free a model. NULL is a no-op. Its chat sessions and unfreed requests keep
 * it alive: it goes when the last of them is freed (they may be freed in any
 * order). Must not race with a blocking call on the model from another
 * thread.
 */
PARLEY_API void parley_model_free(parley_model *model);

typedef enum parley_model_kind { PARLEY_MODEL_DECODER_ONLY = 0, PARLEY_MODEL_ENCODER_DECODER = 1 } parley_model_kind;

typedef struct parley_model_info {
  size_t struct_size;
  uint32_t format_major;
  uint32_t format_minor;
  const char *architecture; /* Hugging Face class name, e.g. "MarianMTModel" */
  int32_t kind;             /* parley_model_kind */
  uint32_t vocab_size;      /* the encoder's (source) vocabulary; an encoder-decoder model with separate
                             * vocabularies has its target one in config key "decoder_vocab_size" */
  size_t num_tensors;
  size_t num_tokenizers;
  size_t num_metadata;
  int32_t has_chat_template;
  uint64_t file_size;    /* bytes */
  uint64_t weights_size; /* sum of tensor lengths */
  const char *device;
} parley_model_info;

/* Describe a model. info->struct_size must be set by the caller. */
PARLEY_API parley_status parley_model_get_info(const parley_model *model, parley_model_info *info);

/*
 * Config values by dotted key, e.g. "decoder.num_layers", "encoder.hidden_size",
 * "vocab_size", "decoder_vocab_size" (the target vocabulary: generated ids,
 * logits; equals vocab_size unless the model separates them), "decoder.norm"
 * (enum value), "decoder.rope_theta", "decoder.layer_window.<i>" (a layer's
 * sliding window, present only for layers that have one). The list of
 * keys: parley_model_config_count / parley_model_config_key.
 * Integers, booleans and enums are read with _int, real numbers with
 * _float (an integer key may also be read as float).
 * Errors: PARLEY_ERROR_NOT_FOUND for an unknown key (or an encoder key of a
 * decoder-only model), PARLEY_ERROR_INVALID_ARGUMENT for a float read as int.
 */
PARLEY_API parley_status parley_model_config_int(const parley_model *model, const char *key, int64_t *out_value);
PARLEY_API parley_status parley_model_config_float(const parley_model *model, const char *key, double *out_value);
PARLEY_API parley_status parley_model_config_count(const parley_model *model, size_t *out_count);
/* Key `index` and whether it is a real number (*out_is_float = 1) or an integer (0). */
PARLEY_API parley_status parley_model_config_key(const parley_model *model, size_t index, const char **out_key,
                                                 int32_t *out_is_float);

#define PARLEY_MAX_RANK 8

typedef struct parley_tensor_info {
  size_t struct_size;
  const char *name;
  int32_t dtype; /* parley_dtype */
  size_t rank;
  int64_t shape[PARLEY_MAX_RANK];
  uint64_t offset;          /* from the start of the data section */
  uint64_t length;          /* bytes */
  uint64_t checksum;        /* XXH3-64 as stored in the file */
  const char *scale_tensor; /* name of its quantization scales, or NULL */
  int32_t scale_axis;
  int32_t reserved0; /* the old padding, named: always 0 */
  /* Appended (model file format 1.2): how the tensor's integers map back to
   * real numbers, as parley_quant in parley/plugin.h: 0 not quantized,
   * 1 per row (I8, one scale per index of scale_axis), 2 group-wise (I8 or
   * I4 [rows, cols], scales [rows, cols / group_size]); group_size is 32,
   * 64 or 128 for group-wise tensors, else 0. A caller whose struct_size
   * ends before `quant` gets the fields above only. */
  int32_t quant;
  int64_t group_size;
} parley_tensor_info;

/* Tensors are in name order. Errors: PARLEY_ERROR_NOT_FOUND for an index out of range. */
PARLEY_API parley_status parley_model_tensor_info(const parley_model *model, size_t index, parley_tensor_info *info);
/* Look a tensor up by name. Errors: PARLEY_ERROR_NOT_FOUND. */
PARLEY_API parley_status parley_model_find_tensor(const parley_model *model, const char *name,
                                                  parley_tensor_info *info);
/*
 * Verify one tensor's checksum now (also works when the model was loaded with
 * verify_checksums = 0). Errors: PARLEY_ERROR_NOT_FOUND, PARLEY_ERROR_CHECKSUM.
 */
PARLEY_API parley_status parley_model_verify_tensor(const parley_model *model, const char *name);

typedef enum parley_tokenizer_kind {
  PARLEY_TOKENIZER_SENTENCEPIECE = 0,
  PARLEY_TOKENIZER_BYTE_LEVEL_BPE = 1
} parley_tokenizer_kind;

typedef enum parley_tokenizer_role {
  PARLEY_TOKENIZER_SHARED = 0,
  PARLEY_TOKENIZER_SOURCE = 1,
  PARLEY_TOKENIZER_TARGET = 2
} parley_tokenizer_role;

typedef struct parley_tokenizer_info {
  size_t struct_size;
  int32_t kind;        /* parley_tokenizer_kind */
  int32_t role;        /* parley_tokenizer_role */
  uint64_t model_size; /* bytes of the tokenizer model blob */
  size_t num_special_tokens;
} parley_tokenizer_info;

PARLEY_API parley_status parley_model_tokenizer_info(const parley_model *model, size_t index,
                                                     parley_tokenizer_info *info);
/*
 * Verify tokenizer `index`'s model blob checksum now (the check the loader
 * makes unless verify_checksums = 0; `parley inspect` uses it).
 * Errors: PARLEY_ERROR_NOT_FOUND for an index out of range,
 * PARLEY_ERROR_CHECKSUM (the message names the tokenizer).
 * Thread-safe: reads the immutable model only.
 */
PARLEY_API parley_status parley_model_verify_tokenizer(const parley_model *model, size_t index);

/* Key/value metadata, in key order. Errors: PARLEY_ERROR_NOT_FOUND. */
PARLEY_API parley_status parley_model_metadata_at(const parley_model *model, size_t index, const char **out_key,
                                                  const char **out_value);
PARLEY_API parley_status parley_model_metadata_get(const parley_model *model, const char *key, const char **out_value);

/* The chat template source. Errors: PARLEY_ERROR_NOT_FOUND if the model has none. */
PARLEY_API parley_status parley_model_chat_template(const parley_model *model, const char **out_source);

/*
 * The kernel plan: for each op the model's architecture needs, which kernel
 * would serve it on the model's device for its compute dtype; then, once the
 * model has been prepared (its first generation, translation or chat
 * session, or parley_model_prepare where available), one entry per linear
 * weight: op "linear" with the kernel that runs the weight in its stored
 * dtype (weight_dtype, tensor set), or op "gemm" when the device has no
 * linear kernel for that dtype and the weight runs widened to f32.
 * parley_model_kernel_plan_count gives the number of entries; entry `index`
 * is described by parley_model_kernel_plan_at. An op that no kernel serves
 * is reported with name "" and plugin "" (loading the model does not fail
 * yet; running it will, in a later release, with PARLEY_ERROR_NOT_FOUND).
 */
PARLEY_API parley_status parley_model_kernel_plan_count(const parley_model *model, size_t *out_count);
PARLEY_API parley_status parley_model_kernel_plan_at(const parley_model *model, size_t index, parley_kernel_info *info);

/* ------------------------------------------------- generation (token level) */

/*
 * Streaming: called for every token a sequence generates, in order, from the
 * thread that called parley_generate / parley_translate_tokens (for a
 * submitted request: the model's serving engine thread, see
 * parley_request). Return 0 to
 * go on, nonzero to finish that sequence after this token. Called for greedy
 * decoding and sampling; beam search (num_beams > 1) does not stream, since
 * its hypotheses are only final at the end.
 */
typedef int32_t (*parley_token_fn)(void *user_data, size_t batch_index, size_t sequence_index, int32_t token);

/*
 * Decoding options, with the semantics of Hugging Face transformers'
 * generate() (version 5.23; see runtime/engine/decoding.hpp).
 * parley_generation_options_init fills them from the model's generation
 * defaults (generation_config.json as converted), or from transformers'
 * defaults when `model` is NULL.
 */
typedef struct parley_generation_options {
  size_t struct_size;
  size_t max_new_tokens;       /* default: the model's max_length (minus the decoder start token), else 256 */
  size_t min_new_tokens;       /* EOS is suppressed until this many tokens exist */
  size_t num_beams;            /* 1 = greedy / sampling */
  size_t num_return_sequences; /* <= num_beams for beam search */
  float length_penalty;        /* beam score = sum log-prob / generated_length ^ length_penalty; beam search
                                * refuses |length_penalty| * ln(max_new_tokens + 1) > 80 (float overflow) */
  int32_t early_stopping;      /* 0 false, 1 true, 2 "never" */
  size_t no_repeat_ngram_size; /* 0 = off */
  float repetition_penalty;    /* 1 = off */
  int32_t do_sample;           /* 0 or 1 */
  float temperature;           /* > 0 when sampling */
  size_t top_k;                /* 0 = off */
  float top_p;                 /* (0, 1]; 1 = off */
  float min_p;                 /* [0, 1]; 0 = off */
  uint64_t seed;               /* sampling is reproducible for a seed (not bit-identical to torch) */
  /* EOS ids; NULL with num_eos_token_ids 0 keeps the model's. Read during the call only. */
  const int32_t *eos_token_ids;
  size_t num_eos_token_ids;
  parley_token_fn on_token; /* optional streaming callback */
  void *user_data;          /* passed to on_token */
  /* Appended in 0.1.x: constrained output (docs/constrained_output.md).
   * At most one of the two may be set (NULL = unconstrained); NUL-terminated
   * UTF-8, at most 1 MiB, read during the call only. `grammar`: a GBNF
   * grammar (llama.cpp's format; the start rule is `root`). `json_schema`:
   * a JSON schema the output must validate against, converted to such a
   * grammar (the keywords supported are listed in the doc; any other is
   * refused, naming it). Each step only tokens the grammar admits next can
   * be chosen, and EOS only once the output is complete, so a hypothesis
   * that ends on EOS parses. One that hit max_new_tokens (or was stopped)
   * before is reported incomplete: see parley_result_hypothesis_constraint
   * and parley_chat_stats.constraint_status. Errors:
   * PARLEY_ERROR_INVALID_ARGUMENT for a malformed grammar or schema (the
   * message gives the line and column, or the schema path), one that admits
   * nothing, or both set; PARLEY_ERROR_UNSUPPORTED for a model without a
   * tokenizer, for translation, and for beam search without EOS ids. */
  const char *grammar;
  const char *json_schema;
  /* Appended in 0.1.x: scores and alternatives (docs/scores.md), for
   * generation and translation, greedy search, sampling and beam search; they
   * change no token and no score. return_logprobs 1: keep every
   * hypothesis' per-token log-probabilities (parley_result_hypothesis_logprobs,
   * parley_translation_result_hypothesis_logprobs); 0 (default): none; other
   * values are refused. num_alternatives k: keep, for every generated step,
   * the k best tokens and their log-probabilities
   * (parley_result_hypothesis_alternatives,
   * parley_translation_result_hypothesis_alternatives); 0 (default): none;
   * over PARLEY_MAX_ALTERNATIVES: PARLEY_ERROR_INVALID_ARGUMENT naming the
   * limit. Chat ignores both (a chat request's log-probabilities:
   * parley_request_options.return_logprobs). */
  int32_t return_logprobs;
  size_t num_alternatives;
  /* Appended in 0.1.x: an additive bias per token (OpenAI's logit_bias),
   * for generation, translation and chat, every search: each step,
   * logit_bias_values[i] is added to the score of token logit_bias_ids[i]
   * before the other logits processors (transformers'
   * SequenceBiasLogitsProcessor with one-token sequences, which
   * _get_logits_processor puts first); -100 in practice bans a token, +100
   * forces it. Per-token log-probabilities and alternatives are those of the
   * biased distribution. Both arrays hold num_logit_bias entries (at most
   * PARLEY_MAX_LOGIT_BIAS; read during the call only); a token listed twice
   * gets the sum, which must lie within [-10000, 10000] (float logits lose
   * the model's own scores beyond). Errors: PARLEY_ERROR_INVALID_ARGUMENT
   * naming the entry for an id outside the vocabulary, a value that is not
   * finite, a token's sum out of range, NULL arrays with num_logit_bias > 0,
   * or too many entries. */
  const int32_t *logit_bias_ids;
  const float *logit_bias_values;
  size_t num_logit_bias;
} parley_generation_options;

/* The most entries parley_generation_options.num_logit_bias may hold. */
#define PARLEY_MAX_LOGIT_BIAS 4096

/*
 * The model's generation defaults (transformers' when model is NULL) for the
 * first options->struct_size bytes; see parley_runtime_options_defaults.
 */
PARLEY_API parley_status parley_generation_options_defaults(const parley_model *model,
                                                            parley_generation_options *options);

/* parley_generation_options_init: exported, declared at the end of this header. */

/*
 * Prepare the model for running now instead of at the first generate /
 * translate call: bind every tensor the config needs (checking presence and
 * shape) and hand each linear weight to the kernel that runs it in its
 * stored dtype (plugin ABI 1.2 prepare_weight; a device without such a
 * kernel gets an f32 copy, logged as a warning). Loading only checks the file;
 * call this to fail early. Errors: PARLEY_ERROR_INVALID_MODEL naming the
 * missing or misshapen tensor (the same error every later run reports),
 * PARLEY_ERROR_NOT_FOUND / PARLEY_ERROR_DEVICE when the model's device lacks
 * a kernel the Transformer needs or is unavailable, PARLEY_ERROR_OUT_OF_MEMORY
 * (a failed binding is remembered: later calls report it again). Thread-safe; cheap after the first call.
 */
PARLEY_API parley_status parley_model_prepare(const parley_model *model);

/* What a prepared model holds in memory, for capacity planning. */
typedef struct parley_model_memory {
  size_t struct_size;
  uint64_t file_bytes;      /* the model file (mapped, or read into memory) */
  uint64_t packed_bytes;    /* copies kernels made of weights at prepare (their own layouts) */
  uint64_t converted_bytes; /* f32 conversions and device copies of tensors (norms, biases, fallbacks) */
  uint64_t linear_weights;  /* linear weights prepared */
  uint64_t widened_weights; /* ... of which run as f32 GEMMs on a widened copy (no native kernel) */
  /* Self-attention KV cache per cached token of one sequence (all layers,
   * keys and values, I8 scales included) in the model's kv_cache_dtype
   * (float32 unless parley_model_options.kv_cache_dtype chose another). */
  uint64_t kv_bytes_per_token;
  /* The serving engine's KV pool (kv_cache_budget_bytes rounded down to
   * whole blocks; 0 until the engine started, or without one). Pages of a
   * host pool cost RAM only once a sequence has written them. */
  uint64_t kv_pool_bytes;
  /* Of file_bytes: weights whose kernels keep their own copy (counted in
   * packed_bytes) and handed the file's pages back to the OS, which holds
   * them only while something reads them again (a rare fallback path, or
   * the same tensor as an embedding table). The cpu plugin does so with I8
   * per-row weights on AVX512-VNNI. Resident weight memory is about
   * file_bytes - released_bytes + packed_bytes + converted_bytes. */
  uint64_t released_bytes;
} parley_model_memory;

/*
 * Fill `out` (struct_size set by the caller; fields past it are not
 * written) with the model's memory use. Prepares the model first (see
 * parley_model_prepare; its errors). KV caches of live sessions are not
 * included: they belong to the sessions. Thread-safe.
 */
PARLEY_API parley_status parley_model_memory_usage(const parley_model *model, parley_model_memory *out);

/* What the serving engine of a model has done (see parley_model_options'
 * serving_engine): counters since the model was loaded, and the KV pool now. */
typedef struct parley_serving_stats {
  size_t struct_size;
  /* 1 when the model's requests run through the engine; 0 when it is off,
   * not started yet (it starts with the first chat turn or generation), or
   * not possible (encoder-decoder model, attention kernel without paged KV):
   * every other field is then 0. */
  int32_t engine_active;
  int32_t reserved0;
  uint64_t steps;          /* batched decoder steps run */
  uint64_t batched_rows;   /* sequence-rows over all steps (rows / steps = mean batch) */
  uint64_t max_batch_rows; /* the largest step */
  uint64_t prefill_tokens; /* prompt tokens computed */
  uint64_t decode_tokens;  /* generated tokens fed back */
  uint64_t reused_tokens;  /* prompt tokens found in the prefix cache instead of computed */
  uint64_t preemptions;    /* sequences whose K/V was dropped for older requests (recomputed later) */
  uint64_t refused;        /* requests failed with OUT_OF_MEMORY after admission_timeout_ms */
  uint64_t cancelled, timed_out;
  uint64_t waiting; /* sequences with tokens queued now */
  uint64_t kv_budget_bytes, kv_block_bytes;
  uint64_t kv_blocks, kv_blocks_free, kv_blocks_cached,
      kv_blocks_in_use; /* cached: unreferenced, kept for prefix hits */
  uint64_t prefix_hits, prefix_misses,
      evictions; /* block lookups in the prefix cache; cached blocks reused for others */
} parley_serving_stats;

/* Fill `out` (struct_size set by the caller) with the model's serving
 * statistics. Never starts the engine. Thread-safe. */
PARLEY_API parley_status parley_model_serving_stats(const parley_model *model, parley_serving_stats *out);

/* Hypotheses of one generate / translate call. Free with parley_result_free. */
typedef struct parley_generation_result parley_generation_result;

/*
 * Generate continuations of a batch of prompts with a decoder-only model.
 * prompts[i] points to prompt_lengths[i] >= 1 token ids; the arrays are only
 * read during the call. On success *out_result holds, per prompt,
 * num_return_sequences hypotheses (best first for beam search): the generated
 * ids only, ending with the EOS id when the sequence finished on one.
 * options NULL: the model's generation defaults, with the file's max_length
 * (if any) counting the prompt as transformers does: max(1, max_length -
 * longest prompt) new tokens. (parley_generation_options_init gives
 * max_new_tokens = max_length, a fixed count that does not know the prompt.)
 * Errors: PARLEY_ERROR_INVALID_ARGUMENT (empty batch, empty prompt, id
 * outside the vocabulary, prompt + max_new_tokens past the model's positions,
 * bad options), PARLEY_ERROR_OUT_OF_MEMORY (the request's KV cache — batch x
 * beams x (prompt + max_new_tokens) — cannot fit in physical memory; checked
 * before anything is allocated), PARLEY_ERROR_UNSUPPORTED (an encoder-decoder model: use
 * parley_translate_tokens), PARLEY_ERROR_INVALID_MODEL (config and tensors
 * disagree; reported by the first call that runs the model),
 * PARLEY_ERROR_DEVICE (a kernel failed, or the model produced non-finite
 * logits: a NaN or +inf, or a row of only -inf; the message names the step
 * and the plugin serving the output projection).
 * Thread-safe: any number of threads may generate with one model at once.
 */
PARLEY_API parley_status parley_generate(const parley_model *model, const int32_t *const *prompts,
                                         const size_t *prompt_lengths, size_t batch_size,
                                         const parley_generation_options *options,
                                         parley_generation_result **out_result);

/*
 * Translate a batch of source id sequences with an encoder-decoder model.
 * target_prefixes may be NULL (no prefix) or hold, per source, a prefix the
 * translation must start with (prefix_lengths[i] may be 0). The decoder
 * starts from the model's decoder_start_token_id. Each hypothesis holds the
 * target ids after the decoder start token: the prefix, then the generated
 * ids (ending with EOS when finished on one). Errors as parley_generate;
 * PARLEY_ERROR_UNSUPPORTED for a decoder-only model. Thread-safe.
 */
PARLEY_API parley_status parley_translate_tokens(const parley_model *model, const int32_t *const *sources,
                                                 const size_t *source_lengths, size_t batch_size,
                                                 const int32_t *const *target_prefixes,
                                                 const size_t *target_prefix_lengths,
                                                 const parley_generation_options *options,
                                                 parley_generation_result **out_result);

/* Number of batch items in a result. */
PARLEY_API parley_status parley_result_batch_size(const parley_generation_result *result, size_t *out_count);
/* Number of hypotheses for batch item `batch_index`. Errors: PARLEY_ERROR_NOT_FOUND. */
PARLEY_API parley_status parley_result_hypothesis_count(const parley_generation_result *result, size_t batch_index,
                                                        size_t *out_count);
/*
 * Hypothesis `index` of batch item `batch_index`: its ids (owned by the
 * result, valid until parley_result_free), their number, and its score (beam
 * search: length-normalised log-probability as transformers'
 * sequences_scores; greedy/sampling: the sum of the chosen tokens'
 * log-probabilities). out_score may be NULL. Errors: PARLEY_ERROR_NOT_FOUND.
 */
PARLEY_API parley_status parley_result_hypothesis(const parley_generation_result *result, size_t batch_index,
                                                  size_t index, const int32_t **out_tokens, size_t *out_length,
                                                  float *out_score);
/* Whether a hypothesis of a constrained generation (grammar / json_schema) is complete. */
typedef enum parley_constraint_status {
  PARLEY_CONSTRAINT_NONE = 0,      /* the request had no grammar or schema */
  PARLEY_CONSTRAINT_COMPLETE = 1,  /* the output is a complete sentence of the grammar (valid JSON for a schema) */
  PARLEY_CONSTRAINT_INCOMPLETE = 2 /* generation stopped before: max_new_tokens, a callback, a stop string, or
                                      no admissible token left; the output does not parse */
} parley_constraint_status;

/*
 * Appended in 0.1.x: the parley_constraint_status of hypothesis `index` of
 * batch item `batch_index` in *out_status. Errors: PARLEY_ERROR_NOT_FOUND
 * (index out of range), PARLEY_ERROR_INVALID_ARGUMENT (NULL argument).
 */
PARLEY_API parley_status parley_result_hypothesis_constraint(const parley_generation_result *result, size_t batch_index,
                                                             size_t index, int32_t *out_status);

/* Free a result. NULL is a no-op. */
PARLEY_API void parley_result_free(parley_generation_result *result);

/*
 * Per-token log-probabilities of a hypothesis, when they were asked for
 * (parley_generation_options.return_logprobs or
 * parley_request_options.return_logprobs): one per generated token; for
 * parley_translate_tokens, of the generated tokens after the target prefix.
 * What they are (see docs/scores.md):
 *  - greedy search and sampling: log_softmax of the processed scores at the
 *    chosen token — the scores after the logits processors (repetition
 *    penalty, no-repeat n-grams, min-new-tokens, suppressed / forced tokens,
 *    a grammar's mask) and, when sampling, the warpers (temperature, top-k,
 *    top-p, min-p): the distribution the token was chosen from. This is
 *    transformers' compute_transition_scores(sequences, output_scores,
 *    normalize_logits=True); they sum to the hypothesis' score.
 *  - beam search: what beam search adds to the running score at each step
 *    along the final hypothesis' path: log_softmax of the raw logits, then
 *    the processors (and warpers for beam sampling), at the chosen token —
 *    transformers' compute_transition_scores(sequences, output_scores,
 *    beam_indices). They sum to the unnormalised score, i.e. score x
 *    (generated length) ^ length_penalty.
 * Raw model log-probabilities (no processor) come from parley_score_tokens.
 * Owned by the result. Errors: PARLEY_ERROR_NOT_FOUND (index out of range,
 * or log-probabilities were not requested), PARLEY_ERROR_INVALID_ARGUMENT
 * (NULL argument). Thread-safe.
 */
PARLEY_API parley_status parley_result_hypothesis_logprobs(const parley_generation_result *result, size_t batch_index,
                                                           size_t index, const float **out_logprobs, size_t *out_count);

/* ------------------------------------------------ scores and alternatives */
/* docs/scores.md. Declarations of this block: alternatives of generation and
 * translation hypotheses, per-token log-probabilities of translations, and
 * scoring of given targets (CTranslate2's score_batch). */

/* The most alternatives per step parley_generation_options.num_alternatives may ask for. */
#define PARLEY_MAX_ALTERNATIVES 32

struct parley_translation_result; /* parley_translation_result, declared below */

/*
 * The top-k alternatives of every generated step of a hypothesis
 * (parley_generation_options.num_alternatives = k): *out_ids and
 * *out_logprobs are [*out_steps x *out_k] row-major, row t holding the
 * *out_k = min(k, vocabulary size) best tokens of step t, best first (equal
 * log-probabilities in id order), with their log-probabilities under the
 * distribution parley_result_hypothesis_logprobs reads from at that step
 * (so for greedy search the chosen token is row t's first entry; a token a
 * processor or warper removed has -INFINITY). *out_steps equals the number
 * of per-token log-probabilities (the generated tokens; after the target
 * prefix for parley_translate_tokens). Owned by the result. Errors:
 * PARLEY_ERROR_NOT_FOUND (index out of range, or alternatives were not
 * requested), PARLEY_ERROR_INVALID_ARGUMENT (NULL argument). Thread-safe.
 */
PARLEY_API parley_status parley_result_hypothesis_alternatives(const parley_generation_result *result,
                                                               size_t batch_index, size_t index,
                                                               const int32_t **out_ids, const float **out_logprobs,
                                                               size_t *out_steps, size_t *out_k);

/*
 * Per-token log-probabilities and alternatives of translation hypothesis
 * `hypothesis` of text `index` (parley_translate with
 * options->generation->return_logprobs / num_alternatives, or a
 * parley_translate_submit request with return_logprobs): one per token of
 * parley_translation_result_target_tokens, with the semantics of
 * parley_result_hypothesis_logprobs / _alternatives. A text translated in
 * pieces (long_text) has its pieces' values in order. Owned by the result.
 * Errors: PARLEY_ERROR_NOT_FOUND (index out of range, a text without
 * hypotheses, or the values were not requested),
 * PARLEY_ERROR_INVALID_ARGUMENT (NULL argument). Thread-safe.
 */
PARLEY_API parley_status parley_translation_result_hypothesis_logprobs(const struct parley_translation_result *result,
                                                                       size_t index, size_t hypothesis,
                                                                       const float **out_logprobs, size_t *out_count);
PARLEY_API parley_status parley_translation_result_hypothesis_alternatives(
    const struct parley_translation_result *result, size_t index, size_t hypothesis, const int32_t **out_ids,
    const float **out_logprobs, size_t *out_steps, size_t *out_k);

/* Options of parley_score_text (parley_score_tokens takes them too; none applies to ids yet). */
typedef struct parley_score_options {
  size_t struct_size;
  const char *source_language; /* multilingual translation models: the source's language code, or NULL */
  const char *target_language; /* multilingual translation models: the target's (required there) */
} parley_score_options;

PARLEY_API parley_status parley_score_options_defaults(parley_score_options *options);
static inline parley_status parley_score_options_init(parley_score_options *options) {
  if (!options) return parley_score_options_defaults(options);
  options->struct_size = sizeof *options;
  return parley_score_options_defaults(options);
}

/* Scores of one parley_score_tokens / parley_score_text call. Free with parley_score_result_free. */
typedef struct parley_score_result parley_score_result;

/*
 * Score given targets, like CTranslate2's Translator.score_batch /
 * Generator.score_batch: the model's raw log-probabilities of each target
 * token given everything before it (teacher forcing), log_softmax(logits) at
 * the target token — no logits processor, temperature or penalty; as
 * transformers' log_softmax(model(..., labels=targets).logits) gathered at
 * the labels. Computed in double from the float32 logits.
 *  - Encoder-decoder models: sources[i] (source_lengths[i] >= 1 ids, as
 *    encoded for parley_translate_tokens) is encoded and the decoder is fed
 *    [decoder_start_token_id] + targets[i] without its last token
 *    (transformers' shift_tokens_right of labels); every target token is
 *    scored. Include EOS at the end of a target to score the end of the
 *    sentence (CTranslate2 appends it; Parley scores the ids as given).
 *  - Decoder-only models: sources may be NULL: then targets[i] is a whole
 *    sequence, its first token is context only and tokens 1.. are scored
 *    (target_lengths[i] >= 2). With sources, sources[i] is a prompt (context
 *    only, >= 1 token) and every token of targets[i] is scored.
 * options may be NULL. The arrays are read during the call only. Errors:
 * PARLEY_ERROR_INVALID_ARGUMENT (empty batch or sequence, NULL arrays or
 * entries, ids outside the vocabulary, a sequence past the model's
 * positions, more than 4096 items, sources NULL for an encoder-decoder
 * model), PARLEY_ERROR_OUT_OF_MEMORY (the KV cache of the longest item),
 * PARLEY_ERROR_DEVICE (non-finite logits), PARLEY_ERROR_INVALID_MODEL.
 * Thread-safe.
 */
PARLEY_API parley_status parley_score_tokens(const parley_model *model, const int32_t *const *sources,
                                             const size_t *source_lengths, const int32_t *const *targets,
                                             const size_t *target_lengths, size_t batch_size,
                                             const parley_score_options *options, parley_score_result **out_result);

/*
 * parley_score_tokens of UTF-8 texts, tokenized first:
 *  - encoder-decoder models: sources[i] as parley_translate tokenizes it
 *    (the source tokenizer with its special tokens and
 *    options->source_language), targets[i] with the target tokenizer with its
 *    special tokens and options->target_language (transformers'
 *    tokenizer(text_target=...): e.g. Marian's "... </s>", NLLB's
 *    "lang ... </s>"), so EOS is scored;
 *  - decoder-only models: sources NULL: targets[i] tokenized with the
 *    tokenizer's special tokens (a BOS when it adds one), scored from its
 *    second token; with sources: sources[i] with special tokens is the
 *    prompt, targets[i] without them is scored whole.
 * Special-token strings in the texts are plain text. parley_score_result_item
 * gives the scored ids. Errors: those of parley_score_tokens,
 * PARLEY_ERROR_INVALID_ARGUMENT (invalid UTF-8, an empty text, a text that
 * tokenizes to nothing to score; naming the text's index),
 * PARLEY_ERROR_NOT_FOUND (unknown language code), PARLEY_ERROR_UNSUPPORTED (a
 * file without tokenizer). Thread-safe.
 */
PARLEY_API parley_status parley_score_text(const parley_model *model, const char *const *sources,
                                           const char *const *targets, size_t count,
                                           const parley_score_options *options, parley_score_result **out_result);

PARLEY_API parley_status parley_score_result_count(const parley_score_result *result, size_t *out_count);
/*
 * Item `index`: the scored target ids (*out_tokens), their log-probabilities
 * (*out_logprobs), their number (*out_count) and the sum of the
 * log-probabilities (*out_sum, accumulated in double; may be NULL). Arrays
 * owned by the result. Errors: PARLEY_ERROR_NOT_FOUND (index out of range),
 * PARLEY_ERROR_INVALID_ARGUMENT (NULL argument). Thread-safe.
 */
PARLEY_API parley_status parley_score_result_item(const parley_score_result *result, size_t index,
                                                  const int32_t **out_tokens, const float **out_logprobs,
                                                  size_t *out_count, double *out_sum);
/* Free a score result. NULL is a no-op. */
PARLEY_API void parley_score_result_free(parley_score_result *result);

/* --------------------------------------------------------- text (UTF-8 in/out) */

/*
 * Flags for parley_tokenize's `add_special_tokens` argument (it was a plain
 * boolean before PARLEY_TOKENIZE_PARSE_SPECIAL was added; 0 and 1 keep their
 * meaning).
 */
typedef enum parley_tokenize_flags {
  /* Add what the model's tokenizer adds around the text (BOS, EOS, the
   * language token). Any nonzero value without other flags means this too. */
  PARLEY_TOKENIZE_ADD_SPECIAL = 1,
  /* Trusted text only: special-token strings written in the text ("</s>",
   * "<|eot_id|>", "<|im_start|>") become their control-token ids, as
   * transformers does by default. Without this flag they are ordinary text,
   * split like any other (transformers' split_special_tokens=True), so
   * untrusted text cannot forge control tokens. */
  PARLEY_TOKENIZE_PARSE_SPECIAL = 1 << 16
} parley_tokenize_flags;

/*
 * Tokenize UTF-8 `text` with the model's tokenizer (for translation models:
 * the source tokenizer). add_special_tokens holds parley_tokenize_flags:
 * nonzero without PARLEY_TOKENIZE_PARSE_SPECIAL adds what the model's
 * tokenizer adds (BOS, EOS, the language token of `language`; NULL for none,
 * "" is refused);
 * PARLEY_TOKENIZE_PARSE_SPECIAL alone parses special-token strings in the
 * text without adding any, combined with PARLEY_TOKENIZE_ADD_SPECIAL it does
 * both. Special-token strings in the text are plain text otherwise (as they
 * are in parley_translate and chat messages). A negative value is refused
 * (PARLEY_ERROR_INVALID_ARGUMENT): it would set the parse flag by accident.
 * Writes up to `capacity` ids to `ids` and the number of ids to *out_count.
 * With ids NULL and capacity 0 only the count is returned (PARLEY_OK); a
 * smaller capacity returns PARLEY_ERROR_INVALID_ARGUMENT with *out_count set
 * and nothing written. Errors: PARLEY_ERROR_INVALID_ARGUMENT (invalid UTF-8,
 * naming the byte offset), PARLEY_ERROR_NOT_FOUND (unknown language code),
 * PARLEY_ERROR_UNSUPPORTED (the file has no tokenizer). Thread-safe.
 */
PARLEY_API parley_status parley_tokenize(const parley_model *model, const char *text, int32_t add_special_tokens,
                                         const char *language, int32_t *ids, size_t capacity, size_t *out_count);

/*
 * parley_tokenize of the `text_length` bytes at `text` (no NUL terminator
 * needed; text may be NULL when text_length is 0). Errors as parley_tokenize,
 * and PARLEY_ERROR_INVALID_ARGUMENT for a NUL byte inside the text (naming
 * its byte offset) or text_length over 64 MiB. Thread-safe.
 */
PARLEY_API parley_status parley_tokenize_n(const parley_model *model, const char *text, size_t text_length,
                                           int32_t add_special_tokens, const char *language, int32_t *ids,
                                           size_t capacity, size_t *out_count);

/*
 * Decode ids to UTF-8 text with the model's tokenizer (for translation
 * models: the target tokenizer). Byte sequences that are not valid UTF-8
 * become U+FFFD. skip_special_tokens != 0 drops special tokens. *out_text is
 * allocated by Parley: free it with parley_string_free. Errors:
 * PARLEY_ERROR_INVALID_ARGUMENT (id outside the vocabulary). Thread-safe.
 */
PARLEY_API parley_status parley_detokenize(const parley_model *model, const int32_t *ids, size_t count,
                                           int32_t skip_special_tokens, char **out_text);

/* Free a string returned by Parley. NULL is a no-op. */
PARLEY_API void parley_string_free(char *text);

/*
 * Streaming of a translation, per hypothesis (parley_translation_options
 * on_text): `text` (`length` bytes, UTF-8, not NUL-terminated, valid only
 * during the call) is hypothesis `hypothesis` of text `text_index` so far —
 * the whole text so far, not a delta. Greedy decoding and sampling call it
 * as tokens are produced (an unfinished UTF-8 sequence is held back; the
 * same text is not sent twice) and then once with is_final = 1 and the
 * hypothesis' final text; beam search calls it only with the final texts,
 * best first. Called on the thread running the translation (the caller's;
 * for a submitted request, the model's serving engine thread, see
 * parley_request). Return 0 to go on; nonzero during a
 * greedy/sampling stream finishes that hypothesis there (not an error).
 * Must not free or reuse the objects the translation uses.
 */
typedef int32_t (*parley_translation_text_fn)(void *user_data, size_t text_index, size_t hypothesis, const char *text,
                                              size_t length, int32_t is_final);

/*
 * Text translation options. parley_translation_options_init zeroes them
 * (every field's default is its zero value).
 */
typedef struct parley_translation_options {
  size_t struct_size;
  const char *source_language; /* language code for multilingual models ("deu_Latn", "de"...), or NULL */
  const char *target_language; /* required by multilingual models; NULL otherwise */
  /* Beam size, n-best (num_return_sequences), length penalty, max length
   * (max_new_tokens)...; NULL: the model's generation defaults. on_token is
   * not used. Read during the call only. */
  const parley_generation_options *generation;
  int32_t return_attention; /* nonzero: keep each hypothesis' source attention */
  int32_t attention_layer;  /* decoder layer for return_attention; -1 = the last */
  /* Appended in 0.1.x. Nonzero: a text that cannot be translated (empty,
   * not valid UTF-8, holding a NUL byte, longer than the model accepts) does
   * not fail the call; it gets no hypotheses, and
   * parley_translation_result_error gives its status and message, while the
   * other texts are translated. 0 (default): such a text fails the whole
   * call with an error naming its index in `texts`. */
  int32_t per_text_errors;
  /* Appended in 0.1.x: optional streaming callback (see
   * parley_translation_text_fn) and its user_data. */
  parley_translation_text_fn on_text;
  void *user_data;
  /* Appended in 0.1.x: protected spans (see parley_protect_flags). Each
   * span the built-in classes in `protect`, the PCRE2 patterns
   * protect_patterns[0 .. num_protect_patterns) (UTF mode; at most 64) or
   * the do-not-translate terms glossary[0 .. num_glossary) (literal,
   * case-sensitive, whole words; at most 10000 of at most 1024 bytes) find
   * in a text is replaced by a placeholder the model passes through and put
   * back verbatim: it appears exactly once in every hypothesis, where the
   * model put its placeholder, else where the cross-attention points, else
   * at its relative position (parley_translation_result_protected_span says
   * which and where). Of overlapping matches the earliest, then the longest
   * wins. Errors: PARLEY_ERROR_INVALID_ARGUMENT naming the pattern and the
   * offset where it does not compile, a pattern that can match an empty string (also only in
   * context: "\\b", "(?<=x)"; a lookahead alone, "(?=x)", where it matches),
   * NULL arrays or entries, too many or oversized entries, a glossary term
   * that is not UTF-8 or only whitespace, unknown flags. With protection, on_text gets only the final texts; source
   * tokens and attention are the masked text's. Read during the call only. */
  uint32_t protect;
  int32_t long_text; /* parley_long_text: what to do with a text over the source limit */
  const char *const *protect_patterns;
  size_t num_protect_patterns;
  const char *const *glossary;
  size_t num_glossary;
  /* Appended in 0.1.x: the source limit in tokens (0: the model's encoder
   * positions; else the smaller of the two), and batching: 0 translates all
   * texts (and sentences of split texts) as one batch, or, through a serving
   * engine, in order in batches of at most half its KV pools (each sentence
   * counted with a target of up to twice its source), so that a document of
   * many short lines is not refused for its size; n > 0 runs batches of
   * at most n padded source tokens (rows x the batch's longest source, as
   * CTranslate2's batch_type="tokens"; a longer single text runs alone). */
  size_t max_source_tokens;
  size_t max_batch_tokens;
} parley_translation_options;

/* Classes of spans to protect (parley_translation_options.protect, OR-ed). */
typedef enum parley_protect_flags {
  /* Numbers: amounts with a currency sign or code ("367,90 €", "$1,299.00"),
   * dates ("2026-12-05", "05.12.2026"), times, grouped and decimal numbers,
   * ids such as "A-12345" or "#4711", order numbers. */
  PARLEY_PROTECT_NUMBERS = 1,
  PARLEY_PROTECT_EMAILS = 2,
  PARLEY_PROTECT_URLS = 4, /* http(s)://, ftp://, www. (without final punctuation) */
  /* {slot}, {{var}}, ${var}, printf conversions (%s, %d, %1$s, %.2f, %%) */
  PARLEY_PROTECT_PLACEHOLDERS = 8,
  PARLEY_PROTECT_MARKUP = 16, /* HTML/XML tags, comments, entities */
  PARLEY_PROTECT_ALL = 31,
  /* Reported kinds only (parley_protected_span.kind): a caller pattern, a glossary term. */
  PARLEY_PROTECT_PATTERN = 1 << 8,
  PARLEY_PROTECT_GLOSSARY = 1 << 9
} parley_protect_flags;

/* Texts over the source limit (parley_translation_options.long_text). */
typedef enum parley_long_text {
  PARLEY_LONG_TEXT_ERROR = 0, /* refuse the text (default; per_text_errors applies) */
  /* Split it into sentences (ICU's sentence BreakIterator; line breaks end
   * a sentence), a sentence still too long at the whitespace nearest its
   * middle; translate the pieces as a batch and join them with the original
   * whitespace and line breaks between them. The hypothesis' score is the
   * sum of the pieces' scores, its tokens their concatenation (also of the
   * source tokens); attention is not kept for a split text. */
  PARLEY_LONG_TEXT_SPLIT = 1,
  PARLEY_LONG_TEXT_SPLIT_ALWAYS = 2 /* translate every text sentence by sentence */
} parley_long_text;

PARLEY_API parley_status parley_translation_options_defaults(parley_translation_options *options);
/* parley_translation_options_init: exported, declared at the end of this header. */

/* Texts, scores and attention of one parley_translate call. */
typedef struct parley_translation_result parley_translation_result;

/*
 * Translate a batch of UTF-8 texts with an encoder-decoder model. Errors:
 * PARLEY_ERROR_INVALID_ARGUMENT (empty batch, empty text, invalid UTF-8 or a
 * text longer than the model accepts — each naming the text's index in
 * `texts` as "text #i: <reason>"; with options->per_text_errors only that
 * text fails —, a multilingual model without target_language, bad options),
 * PARLEY_ERROR_NOT_FOUND (unknown language code), PARLEY_ERROR_UNSUPPORTED
 * (decoder-only model, file without tokenizer), and those of
 * parley_translate_tokens. Thread-safe.
 */
PARLEY_API parley_status parley_translate(const parley_model *model, const char *const *texts, size_t count,
                                          const parley_translation_options *options,
                                          parley_translation_result **out_result);

/*
 * parley_translate of texts with explicit byte lengths: text i is the
 * lengths[i] bytes at texts[i] (no NUL terminator needed). A NUL byte inside
 * a text is refused like invalid UTF-8 ("text #i contains a NUL byte at byte
 * offset k"; with per_text_errors, only that text fails). Errors as
 * parley_translate; PARLEY_ERROR_INVALID_ARGUMENT also for lengths NULL or a
 * text longer than 64 MiB. The arrays are only read during the call.
 * Thread-safe.
 */
PARLEY_API parley_status parley_translate_n(const parley_model *model, const char *const *texts, const size_t *lengths,
                                            size_t count, const parley_translation_options *options,
                                            parley_translation_result **out_result);

PARLEY_API parley_status parley_translation_result_count(const parley_translation_result *result, size_t *out_count);
PARLEY_API parley_status parley_translation_result_hypothesis_count(const parley_translation_result *result,
                                                                    size_t index, size_t *out_count);
/*
 * Hypothesis `hypothesis` (best first) of text `index`: its UTF-8 text (owned
 * by the result) and score (as parley_result_hypothesis). out_score may be
 * NULL. Errors: PARLEY_ERROR_NOT_FOUND.
 */
PARLEY_API parley_status parley_translation_result_text(const parley_translation_result *result, size_t index,
                                                        size_t hypothesis, const char **out_text, float *out_score);
/* Token ids of the source (as encoded) and of a hypothesis (generated ids). Owned by the result. */
PARLEY_API parley_status parley_translation_result_source_tokens(const parley_translation_result *result, size_t index,
                                                                 const int32_t **out_ids, size_t *out_count);
PARLEY_API parley_status parley_translation_result_target_tokens(const parley_translation_result *result, size_t index,
                                                                 size_t hypothesis, const int32_t **out_ids,
                                                                 size_t *out_count);
/*
 * Source attention of a hypothesis (return_attention): row t (one per target
 * token) holds the cross-attention weights over the source tokens of the
 * chosen decoder layer, averaged over heads: *out_weights is
 * [*out_target_len x *out_source_len] row-major, owned by the result. Errors:
 * PARLEY_ERROR_NOT_FOUND (bad index, or attention was not requested).
 */
PARLEY_API parley_status parley_translation_result_attention(const parley_translation_result *result, size_t index,
                                                             size_t hypothesis, const float **out_weights,
                                                             size_t *out_target_len, size_t *out_source_len);
PARLEY_API void parley_translation_result_free(parley_translation_result *result);

/* How a protected span was put into a hypothesis (parley_protected_span.placement). */
typedef enum parley_span_placement {
  PARLEY_SPAN_COPIED = 0,    /* where the model put its placeholder */
  PARLEY_SPAN_ALIGNED = 1,   /* the model lost the placeholder: where the cross-attention points */
  PARLEY_SPAN_POSITIONED = 2 /* ... and no attention: at its relative position in the source */
} parley_span_placement;

/* One protected span of a hypothesis. Offsets are bytes. */
typedef struct parley_protected_span {
  size_t struct_size;
  uint32_t kind;                       /* parley_protect_flags: the class, PARLEY_PROTECT_PATTERN or _GLOSSARY */
  int32_t placement;                   /* parley_span_placement */
  size_t source_offset, source_length; /* in the text given to parley_translate */
  size_t target_offset, target_length; /* in the hypothesis' text: the same bytes, verbatim */
} parley_protected_span;

/*
 * Number of protected spans of hypothesis `hypothesis` of text `index` (0
 * without protection), and span `span` of them (in source order; `out`'s
 * struct_size set by the caller). Errors: PARLEY_ERROR_NOT_FOUND (an index
 * out of range), PARLEY_ERROR_INVALID_ARGUMENT (NULL, bad struct_size).
 * Thread-safe.
 */
PARLEY_API parley_status parley_translation_result_protected_count(const parley_translation_result *result,
                                                                   size_t index, size_t hypothesis, size_t *out_count);
PARLEY_API parley_status parley_translation_result_protected_span(const parley_translation_result *result, size_t index,
                                                                  size_t hypothesis, size_t span,
                                                                  parley_protected_span *out);
/* Number of pieces text `index` was translated in (1 unless it was split; 0
 * for a text of only whitespace under PARLEY_LONG_TEXT_SPLIT_ALWAYS, which
 * is its own translation). Errors: PARLEY_ERROR_NOT_FOUND. Thread-safe. */
PARLEY_API parley_status parley_translation_result_segments(const parley_translation_result *result, size_t index,
                                                            size_t *out_count);
/* *out_cut = 1 when hypothesis `hypothesis` of text `index` (or a piece of
 * a split text) used up max_new_tokens or the decoder's positions, so the
 * translation may be cut short (one that ended on EOS exactly there counts
 * too: with a forced EOS the last allowed token is always EOS); else 0.
 * Errors: PARLEY_ERROR_NOT_FOUND, PARLEY_ERROR_INVALID_ARGUMENT (out_cut
 * NULL). Thread-safe. */
PARLEY_API parley_status parley_translation_result_cut_by_length(const parley_translation_result *result, size_t index,
                                                                 size_t hypothesis, int32_t *out_cut);

/*
 * Why text `index` has no translation (options->per_text_errors): its status
 * (parley_status; PARLEY_OK for a translated text) and a message without the
 * text's index, e.g. "the text is 600 tokens, the model accepts 256" ("" for
 * PARLEY_OK; owned by the result). out_message may be NULL. Errors:
 * PARLEY_ERROR_NOT_FOUND (index out of range). Thread-safe.
 */
PARLEY_API parley_status parley_translation_result_error(const parley_translation_result *result, size_t index,
                                                         int32_t *out_status, const char **out_message);

/* ------------------------------------------------------------------ chat */

typedef enum parley_chat_role {
  PARLEY_ROLE_SYSTEM = 0,
  PARLEY_ROLE_USER = 1,
  PARLEY_ROLE_ASSISTANT = 2,
  /* Appended in 0.1.x: a tool's result (parley_chat_append_message names the
   * call it answers). Needs the model's Jinja chat template. */
  PARLEY_ROLE_TOOL = 3
} parley_chat_role;

/*
 * A conversation with a decoder-only model. It keeps its KV cache between
 * turns: each reply runs the model only on the tokens not already cached
 * (see parley_chat_stats). The session keeps its model alive (see
 * parley_model_free). One thread
 * uses a session at a time, except parley_chat_cancel; many sessions may
 * share one model concurrently. A call on a session while another call on it
 * is running — from the on_text callback of parley_chat_generate, or from a
 * second thread — returns PARLEY_ERROR_BUSY and changes nothing (every
 * session function but parley_chat_cancel; parley_chat_session_free then
 * frees nothing and sets parley_last_error). The messages' text is always
 * encoded as text: "<|eot_id|>" or "</s>" typed by a user cannot close their
 * turn; only the model's chat template produces control tokens.
 */
typedef struct parley_chat_session parley_chat_session;

/*
 * Create a session; system_prompt may be NULL (no system message; the
 * model's template may then add its default one). Errors:
 * PARLEY_ERROR_UNSUPPORTED (encoder-decoder model, or a file without chat
 * format, chat template or tokenizer), PARLEY_ERROR_INVALID_MODEL (the file
 * has only a chat template and it does not parse: the message names its
 * line and column), PARLEY_ERROR_INVALID_ARGUMENT (invalid UTF-8). A
 * template the runtime renders itself may still refuse a conversation when
 * a reply is generated (its raise_exception message, INVALID_ARGUMENT).
 */
PARLEY_API parley_status parley_chat_session_create(const parley_model *model, const char *system_prompt,
                                                    parley_chat_session **out_session);
/*
 * parley_chat_session_create with a system prompt of `system_length` bytes
 * at `system_prompt` (no NUL terminator needed); system_prompt NULL means no
 * system message, as for parley_chat_session_create. Errors as
 * parley_chat_session_create, and PARLEY_ERROR_INVALID_ARGUMENT for a NUL
 * byte inside the prompt (naming its byte offset) or one over 64 MiB.
 */
PARLEY_API parley_status parley_chat_session_create_n(const parley_model *model, const char *system_prompt,
                                                      size_t system_length, parley_chat_session **out_session);
/* Free a session. NULL is a no-op. Refused while a call on the session runs
 * (from its on_text callback or another thread): nothing is freed, and
 * parley_last_error() says so (PARLEY_ERROR_BUSY); free it after that call. */
PARLEY_API void parley_chat_session_free(parley_chat_session *session);

/*
 * Append a message (role: parley_chat_role). Errors:
 * PARLEY_ERROR_INVALID_ARGUMENT (unknown role, invalid UTF-8, a system
 * message after the start, or roles that do not alternate when the model's
 * template requires it; the message is not added).
 */
PARLEY_API parley_status parley_chat_append(parley_chat_session *session, int32_t role, const char *content);

/*
 * parley_chat_append of the `length` bytes at `content` (no NUL terminator
 * needed; NULL allowed when length is 0). Errors as parley_chat_append, and
 * PARLEY_ERROR_INVALID_ARGUMENT for a NUL byte inside the content (naming
 * its byte offset) or a length over 64 MiB; the message is not added.
 * Same thread rules as parley_chat_append.
 */
PARLEY_API parley_status parley_chat_append_n(parley_chat_session *session, int32_t role, const char *content,
                                              size_t length);

/*
 * Streaming: receives each new piece of the reply (UTF-8, never a split code
 * point, never part of a stop string), `length` bytes, not NUL-terminated.
 * Return 0 to go on, nonzero to end the reply here (not an error).
 */
typedef int32_t (*parley_text_fn)(void *user_data, const char *text, size_t length);

typedef struct parley_chat_options {
  size_t struct_size;
  /* Sampling / greedy settings and max_new_tokens (the reply's token limit);
   * NULL: the model's generation defaults. num_beams must be 1; on_token is
   * not used. Read during the call only. */
  const parley_generation_options *generation;
  const char *const *stop_strings; /* the reply ends before the first of these; may be NULL */
  size_t num_stop_strings;
  parley_text_fn on_text; /* optional */
  void *user_data;
  /* Appended in 0.1.x: what a conversation too long for the model does
   * (parley_chat_context_policy). PARLEY_CHAT_CONTEXT_ERROR (default): the
   * turn fails with PARLEY_ERROR_INVALID_ARGUMENT. PARLEY_CHAT_CONTEXT_DROP_OLDEST:
   * the oldest turns after the system prompt leave the conversation (a user
   * message and the replies after it, oldest first) until the rendered
   * prompt leaves room for the reply (max_new_tokens, at most half the
   * model's positions); the session's messages then no longer hold them
   * (parley_chat_stats.dropped_messages counts them). The system prompt and
   * the last message always stay: if they alone are too long, the turn
   * fails. The K/V of what stays before the first dropped message is
   * reused. Other values: INVALID_ARGUMENT. */
  int32_t context_policy;
} parley_chat_options;

typedef enum parley_chat_context_policy {
  PARLEY_CHAT_CONTEXT_ERROR = 0,
  PARLEY_CHAT_CONTEXT_DROP_OLDEST = 1
} parley_chat_context_policy;

PARLEY_API parley_status parley_chat_options_defaults(parley_chat_options *options);
/* parley_chat_options_init: exported, declared at the end of this header. */

/*
 * Generate the assistant's reply to the conversation so far, stream it, and
 * append it to the conversation. options may be NULL. out_reply may be NULL;
 * otherwise it receives the whole reply (free with parley_string_free).
 * Errors: PARLEY_ERROR_CANCELLED (parley_chat_cancel was called; the
 * conversation is unchanged), PARLEY_ERROR_INVALID_ARGUMENT (the conversation
 * is longer than the model accepts, bad options), PARLEY_ERROR_BUSY (called
 * from on_text or while another thread uses the session), and those of
 * parley_generate.
 */
PARLEY_API parley_status parley_chat_generate(parley_chat_session *session, const parley_chat_options *options,
                                              char **out_reply);

/*
 * Ask a running parley_chat_generate to stop soon (any thread; async-safe:
 * it only sets a flag). The flag is cleared when a generate call starts, so
 * a cancel that arrives before the call starts is not applied to it; the
 * host's own "stopped" state should also guard the start of a turn.
 */
PARLEY_API parley_status parley_chat_cancel(parley_chat_session *session);

/* Drop every message after the system prompt (its cached tokens are kept). */
PARLEY_API parley_status parley_chat_reset(parley_chat_session *session);

/* Drop the last message (e.g. a user turn whose reply was cancelled). The
 * system prompt given at creation stays. Errors: PARLEY_ERROR_NOT_FOUND. */
PARLEY_API parley_status parley_chat_remove_last(parley_chat_session *session);

PARLEY_API parley_status parley_chat_message_count(const parley_chat_session *session, size_t *out_count);
/* Message `index`: role and content (owned by the session, valid until it changes). */
PARLEY_API parley_status parley_chat_message(const parley_chat_session *session, size_t index, int32_t *out_role,
                                             const char **out_content);

/* --------------------------------------------------- chat: tool calls
 * (appended in 0.1.x). Tools, tool calls and tool results are rendered by
 * the model's own Jinja chat template (the file's chat_template) exactly as
 * Hugging Face's apply_chat_template renders them: Llama-3.1's, Qwen2.5's
 * and Mistral's tool formats among others. A file without a usable template
 * refuses them with PARLEY_ERROR_UNSUPPORTED. JSON here is UTF-8 text in
 * the form transformers takes: tools as [{"type": "function", "function":
 * {"name", "description", "parameters": {JSON schema}}}], tool calls as
 * [{"id", "type": "function", "function": {"name", "arguments": {...}}}].
 * JSON strings count as the caller's text (never control tokens). */

/* A message with its tool-use fields. Set struct_size = sizeof. */
typedef struct parley_chat_message_ex {
  size_t struct_size;
  int32_t role;        /* parley_chat_role */
  const char *content; /* UTF-8, `content_length` bytes; NULL allowed when 0 */
  size_t content_length;
  const char *tool_calls;   /* assistant: JSON array of tool calls, NUL-terminated; NULL: none */
  const char *tool_call_id; /* tool: the id of the call this result answers; NULL: none */
  const char *name;         /* tool: the function's name; NULL: none */
} parley_chat_message_ex;

/*
 * Append a message with tool-use fields. Errors: PARLEY_ERROR_INVALID_ARGUMENT
 * (NULL message, bad struct_size, unknown role, invalid UTF-8, a NUL byte in
 * the content, tool_calls that are not a JSON array of {"function": {"name":
 * string, ...}} objects or on a non-assistant message, a role order the
 * model's reduced chat format refuses), PARLEY_ERROR_UNSUPPORTED (tool use
 * without a usable Jinja chat template). The message is not added on error.
 */
PARLEY_API parley_status parley_chat_append_message(parley_chat_session *session,
                                                    const parley_chat_message_ex *message);

/*
 * Tool definitions for every following turn (a JSON array, NUL-terminated);
 * NULL or "" removes them. While tools are set, a reply that holds tool
 * calls (Qwen2.5/Hermes "<tool_call>{...}</tool_call>" blocks, or a reply
 * that is a {"name", "arguments"|"parameters"} object or a list of them,
 * after an optional "[TOOL_CALLS]" or "<|python_tag|>": Mistral, Llama-3.1)
 * is stored as an assistant message with those calls (parley_chat_tool_calls)
 * and the text outside them as its content; calls without an id get
 * "call00001", "call00002", ... Errors: PARLEY_ERROR_INVALID_ARGUMENT
 * (not a JSON array of objects), PARLEY_ERROR_UNSUPPORTED (no usable
 * template). Saving a session (parley_chat_session_save) does not store
 * tools, and refuses conversations with tool calls or results.
 */
PARLEY_API parley_status parley_chat_set_tools(parley_chat_session *session, const char *tools_json);

/*
 * Message `index`'s tool calls as a JSON array (NULL when it has none), its
 * tool_call_id and name (NULL when none). Strings are owned by the session,
 * valid until it changes; any output pointer may be NULL. Errors:
 * PARLEY_ERROR_NOT_FOUND (no such message).
 */
PARLEY_API parley_status parley_chat_tool_calls(const parley_chat_session *session, size_t index,
                                                const char **out_tool_calls, const char **out_tool_call_id,
                                                const char **out_name);

typedef struct parley_chat_stats {
  size_t struct_size;
  uint64_t prompt_tokens;          /* tokens of the last turn's rendered prompt */
  uint64_t reused_tokens;          /* ... already in the KV cache */
  uint64_t processed_tokens;       /* ... the model ran on (prompt_tokens - reused_tokens) */
  uint64_t generated_tokens;       /* tokens of the last reply */
  uint64_t total_processed_tokens; /* prompt tokens run over the session's life */
  uint64_t cached_tokens;          /* tokens in the KV cache now */
  /* Appended in 0.1.x: messages the context policy dropped at the last turn
   * and over the session's life. */
  uint64_t dropped_messages;
  uint64_t total_dropped_messages;
  /* Appended in 0.1.x: the last reply's parley_constraint_status (its
   * generation options' grammar / json_schema): INCOMPLETE when the reply
   * ended (max_new_tokens, a stop string, on_text) before the grammar was
   * complete; such a reply does not parse. */
  int32_t constraint_status;
} parley_chat_stats;

/* Counters of the last turn; stats->struct_size must be set by the caller. */
PARLEY_API parley_status parley_chat_stats_get(const parley_chat_session *session, parley_chat_stats *stats);

/* ------------------------------------------------- asynchronous requests */

/*
 * A chat turn, generation or translation running in the background
 * (docs/serving.md, "Asynchronous requests"). A submit function checks and
 * copies its arguments (arrays, strings, option structs: none is read after
 * it returns; callbacks and their user_data are kept), hands the work to
 * the process's Parley request workers and returns at once with a request.
 * Workers are threads reused from request to request, started on demand
 * up to the environment variable PARLEY_REQUEST_WORKERS (1 to 65536, read
 * at the first submit; default 256); past that, requests wait in
 * submission order for a worker (a queued request that is cancelled or
 * freed ends at once, and one whose deadline passes ends then). The work is
 * the blocking call it mirrors, with the same result; concurrent chat
 * turns, generations and translations of one model are batched by its
 * serving engine like concurrent blocking calls (tokens equal, scores up to
 * float32 rounding; without an engine each decodes alone). With an engine,
 * a chat turn or generation holds its worker only until it first waits for
 * the engine: while the engine computes its rows it holds no thread, and
 * between steps a few resume threads run its decoding, so the workers do
 * not bound how many of them run at once. A translation holds its worker
 * until it ends.
 *
 * Callbacks: streaming callbacks (chat on_text, generation on_token,
 * translation on_text) and the completion callback are invoked on the
 * model's serving engine thread, between its batched steps, one at a time
 * and never on the submitting thread: all callbacks of one model's requests
 * are serialised on that one thread. While a callback runs, no request of
 * that model takes a step, so keep callbacks short and never block in them
 * (hand data to another thread). On that thread, a blocking call that
 * decodes through a serving engine (parley_chat_generate, parley_generate,
 * parley_translate..., of any model with an engine) and parley_request_wait
 * on an unfinished request return PARLEY_ERROR_BUSY, since they would wait
 * for a step of that thread: submit the work instead. Everything else may
 * be called (see parley_request_fn). Without an engine (serving_engine = 0,
 * or a device without a paged attention kernel) the callbacks run on the
 * request's worker thread.
 *
 * Lifecycle: running -> finished (status and result set; the completion
 * callback, if any, runs) -> done (poll reports 1, wait returns). Take the
 * result with the parley_request_take_* function of its kind, then free the
 * request with parley_request_free (always; also after a failure).
 *
 * Exit: a process may exit (exit(), a return from main) with requests still
 * running. The first exit handler stops the kernels: it waits (up to 10 s)
 * for the kernel calls already running, and every later one is refused, so
 * each unfinished request ends with PARLEY_ERROR_CANCELLED and no request
 * runs a library's code while exit() destroys it. A model's first request
 * binds its weights on the submitting thread, before the submit returns
 * (that first call builds the kernels' code, which no exit may interrupt).
 * The same holds for a blocking call on a thread of the host's: call
 * parley_model_prepare on the main thread before such a thread makes a
 * model's first call, if the process may exit while that call runs. Freeing
 * (or waiting for) every request before exiting remains the clean way out.
 *
 * Thread-safety: every request function may be called from any thread, also
 * concurrently on one request, except parley_request_free, which must not
 * race with other calls on the same request (after it the handle is gone).
 * At most 65536 requests may be unfinished (queued or running) at once in a
 * process; a submit past that returns PARLEY_ERROR_BUSY.
 */
typedef struct parley_request parley_request;

/*
 * Completion callback: called once per request, on the engine thread (see
 * above), when it has finished (status: its parley_status, as parley_request_status).
 * It may call parley_request_status, the parley_request_take_* functions,
 * parley_request_reply_logprobs, parley_request_poll (which still reports 0)
 * and parley_request_cancel on this request, and any Parley function on
 * other objects (e.g. submit the next turn of the same chat session: the
 * session is free again). parley_request_wait on this request returns
 * PARLEY_ERROR_BUSY there (it would wait for the callback itself).
 * parley_request_free on this request is allowed (fire and forget): the
 * request is freed when the callback returns, so take its result first.
 * parley_request_free on another, unfinished request cancels it and runs
 * that request's own callbacks (its completion with PARLEY_ERROR_CANCELLED)
 * there, nested, before it returns; no other request's callback runs
 * inside this one. The callback runs on the engine
 * thread, never on the caller's; keep it short (a blocked callback holds
 * every request of the model).
 */
typedef void (*parley_request_fn)(void *user_data, parley_request *request, int32_t status);

typedef struct parley_request_options {
  size_t struct_size;
  parley_request_fn on_complete; /* optional */
  void *user_data;               /* passed to on_complete */
  /* Milliseconds from submission after which the request stops with
   * PARLEY_ERROR_TIMEOUT (checked between decoding steps, and by the serving
   * engine while waiting). 0 (default): no deadline. Negative: refused. */
  int64_t deadline_ms;
  /* 1: record per-token log-probabilities (parley_request_reply_logprobs,
   * parley_result_hypothesis_logprobs,
   * parley_translation_result_hypothesis_logprobs), for greedy search,
   * sampling and beam search, as parley_generation_options.return_logprobs
   * (either asks for them). 0 (default): none. Other values: refused.
   * Changes no token or score. */
  int32_t return_logprobs;
  /* Appended in 0.1.x: for a chat request, keep the k best tokens of every
   * generated step of the reply with their log-probabilities
   * (parley_request_reply_alternatives), as
   * parley_generation_options.num_alternatives does for generation (which
   * chat ignores). 0 (default): none; at most PARLEY_MAX_ALTERNATIVES.
   * Other requests: must be 0 (their options carry num_alternatives). */
  size_t num_alternatives;
} parley_request_options;

PARLEY_API parley_status parley_request_options_defaults(parley_request_options *options);
/* parley_request_options_init: exported, declared at the end of this header. */

/*
 * Submit a chat turn: parley_chat_generate(session, options, &reply) on a
 * worker thread. The session is held from submission until the turn
 * finishes: every other call on it meanwhile returns PARLEY_ERROR_BUSY (as
 * for a running parley_chat_generate), so append the user's message before
 * submitting. request_options may be NULL. Take the reply with
 * parley_request_take_reply. Errors at submission:
 * PARLEY_ERROR_INVALID_ARGUMENT (NULL session or out_request, bad
 * struct_size, stop string arrays), PARLEY_ERROR_BUSY (the session is in
 * use, or too many requests), PARLEY_ERROR_OUT_OF_MEMORY (no thread could
 * be started); the turn's own errors become the request's status.
 */
PARLEY_API parley_status parley_chat_submit(parley_chat_session *session, const parley_chat_options *options,
                                            const parley_request_options *request_options,
                                            parley_request **out_request);

/*
 * Submit parley_generate(model, prompts, prompt_lengths, batch_size,
 * options) (arguments copied). Take the result with
 * parley_request_take_generation_result. The request keeps the model alive.
 * Errors at submission as parley_chat_submit; those of parley_generate
 * become the request's status.
 */
PARLEY_API parley_status parley_generate_submit(const parley_model *model, const int32_t *const *prompts,
                                                const size_t *prompt_lengths, size_t batch_size,
                                                const parley_generation_options *options,
                                                const parley_request_options *request_options,
                                                parley_request **out_request);

/*
 * Submit a text translation: parley_translate_n(model, texts, lengths,
 * count, options) when `lengths` is given, parley_translate(model, texts,
 * count, options) when it is NULL (NUL-terminated texts). options->on_text
 * streams per hypothesis on the engine thread. Cancellation and deadlines
 * apply between decoding steps. Take the result with
 * parley_request_take_translation_result.
 */
PARLEY_API parley_status parley_translate_submit(const parley_model *model, const char *const *texts,
                                                 const size_t *lengths, size_t count,
                                                 const parley_translation_options *options,
                                                 const parley_request_options *request_options,
                                                 parley_request **out_request);

/* Submit parley_translate_tokens (arguments copied); result as parley_generate_submit. */
PARLEY_API parley_status parley_translate_tokens_submit(const parley_model *model, const int32_t *const *sources,
                                                        const size_t *source_lengths, size_t batch_size,
                                                        const int32_t *const *target_prefixes,
                                                        const size_t *target_prefix_lengths,
                                                        const parley_generation_options *options,
                                                        const parley_request_options *request_options,
                                                        parley_request **out_request);

/*
 * Wait until the request is done (its completion callback has returned).
 * timeout_ms < 0 waits for ever; 0 only checks. Returns PARLEY_OK when it is
 * done (whatever its own status: see parley_request_status),
 * PARLEY_ERROR_TIMEOUT when the wait timed out (the request goes on),
 * PARLEY_ERROR_BUSY when called from the request's own callback.
 */
PARLEY_API parley_status parley_request_wait(parley_request *request, int64_t timeout_ms);

/* *out_done = 1 when the request is done, else 0. Never blocks. */
PARLEY_API parley_status parley_request_poll(const parley_request *request, int32_t *out_done);

/*
 * Ask the request to stop (any thread, any time, also from callbacks). It
 * ends with PARLEY_ERROR_CANCELLED at its next decoding step (or before it
 * starts); a chat turn then leaves the conversation unchanged, as
 * parley_chat_cancel does. A request that finished first keeps its status
 * and result. Cancelling twice or after the end is harmless (PARLEY_OK).
 */
PARLEY_API parley_status parley_request_cancel(parley_request *request);

/*
 * The request's outcome once finished: *out_status = PARLEY_OK or the error
 * the blocking call would have returned (PARLEY_ERROR_CANCELLED,
 * PARLEY_ERROR_TIMEOUT, ...), and *out_message (may be NULL; owned by the
 * request) its parley_last_error text ("" for PARLEY_OK). While it runs,
 * *out_status = PARLEY_ERROR_BUSY and the message is "".
 */
PARLEY_API parley_status parley_request_status(const parley_request *request, int32_t *out_status,
                                               const char **out_message);

/*
 * Take the result of a finished request; the caller owns it afterwards
 * (free it with parley_string_free, parley_result_free or
 * parley_translation_result_free) and a second take returns
 * PARLEY_ERROR_NOT_FOUND. Errors: PARLEY_ERROR_BUSY (not finished yet), the
 * request's own status and message when it failed,
 * PARLEY_ERROR_INVALID_ARGUMENT (a request of another kind, e.g. take_reply
 * of a generation).
 */
PARLEY_API parley_status parley_request_take_reply(parley_request *request, char **out_reply);
PARLEY_API parley_status parley_request_take_generation_result(parley_request *request,
                                                               parley_generation_result **out_result);
PARLEY_API parley_status parley_request_take_translation_result(parley_request *request,
                                                                parley_translation_result **out_result);

/*
 * A finished chat request's per-token log-probabilities (return_logprobs):
 * one per generated token of the reply (parley_chat_stats generated_tokens:
 * an EOS token or the tokens a stop string cut count too). Owned by the
 * request. Errors: PARLEY_ERROR_BUSY (not finished), PARLEY_ERROR_NOT_FOUND
 * (not requested, or the turn failed), PARLEY_ERROR_INVALID_ARGUMENT (not a
 * chat request; generations carry theirs in the result).
 */
PARLEY_API parley_status parley_request_reply_logprobs(const parley_request *request, const float **out_logprobs,
                                                       size_t *out_count);

/*
 * A finished chat request's generated token ids (return_logprobs or
 * num_alternatives): one per entry of parley_request_reply_logprobs, in
 * order (an EOS token, or tokens a stop string cut from the reply's text,
 * included), so that a host can name each token (parley_detokenize of
 * one id, without skipping special tokens). Owned by the request. Errors as parley_request_reply_logprobs.
 */
PARLEY_API parley_status parley_request_reply_tokens(const parley_request *request, const int32_t **out_tokens,
                                                     size_t *out_count);

/*
 * A finished chat request's top-k alternatives per generated token
 * (parley_request_options.num_alternatives = k): *out_ids and
 * *out_logprobs are [*out_steps x *out_k] row-major with the semantics of
 * parley_result_hypothesis_alternatives (*out_steps equals the count of
 * parley_request_reply_tokens). Owned by the request. Errors:
 * PARLEY_ERROR_BUSY (not finished), PARLEY_ERROR_NOT_FOUND (not requested,
 * or the turn failed), PARLEY_ERROR_INVALID_ARGUMENT (NULL argument, not a
 * chat request).
 */
PARLEY_API parley_status parley_request_reply_alternatives(const parley_request *request, const int32_t **out_ids,
                                                           const float **out_logprobs, size_t *out_steps,
                                                           size_t *out_k);

/*
 * What a chat request's streamed text covers, for log-probabilities that
 * travel with each piece (OpenAI's streamed logprobs). Call it from inside
 * the request's on_text callback (parley_chat_options.on_text of a submitted
 * turn); `request` may be NULL there, meaning the request whose callback is
 * running (a callback can run before the submit call has returned the
 * handle). Filled, struct_size set by the caller:
 *   tokens      the reply tokens whose text the pieces so far hold entirely,
 *               this piece included (never an EOS token);
 *   token_ids   [tokens] (the first entries of parley_request_reply_tokens);
 *   logprobs    [tokens] with request_options->return_logprobs, else NULL;
 *   alternatives, alternative_ids, alternative_logprobs: with
 *               num_alternatives = k, k and [tokens x k] row-major; else 0
 *               and NULL.
 * The arrays stay valid until the callback returns. Errors:
 * PARLEY_ERROR_INVALID_ARGUMENT (NULL out, struct_size too small, not a
 * chat request), PARLEY_ERROR_BUSY (not inside that request's on_text).
 */
typedef struct parley_reply_progress {
  size_t struct_size;
  size_t tokens;
  const int32_t *token_ids;
  const float *logprobs;
  size_t alternatives;
  const int32_t *alternative_ids;
  const float *alternative_logprobs;
} parley_reply_progress;

PARLEY_API parley_status parley_request_reply_progress(const parley_request *request, parley_reply_progress *out);

/*
 * Free a request and what was not taken from it. An unfinished request is
 * cancelled and waited for first (at most one decoding step, or the
 * blocking kernel call in flight). NULL is a no-op. Called from one of the
 * request's own callbacks (completion or streaming) it does not wait: it
 * cancels the request if it still runs, and the worker frees it after the
 * completion callback (if any) has returned; the handle must not be used by
 * anyone after that callback. Freeing twice is undefined (the handle is
 * gone).
 */
PARLEY_API void parley_request_free(parley_request *request);
/*
 * Park a conversation outside Parley: *out_data (free with
 * parley_string_free; binary, not NUL-terminated) receives *out_size bytes
 * holding the session's messages (its system prompt first, if it has one)
 * with a version and a checksum. Only the text is saved: a session restored
 * in the same process finds the K/V of its full blocks in the serving
 * engine's prefix cache while they were not evicted (chat stats show them
 * as reused), and recomputes the rest at its next turn
 * (parley_chat_session_save_kv stores the K/V too).
 */
PARLEY_API parley_status parley_chat_session_save(const parley_chat_session *session, char **out_data,
                                                  size_t *out_size);

/*
 * A new session of `model` holding the conversation `data` (size bytes, from
 * parley_chat_session_save or _save_kv; any decoder-only chat model may take
 * it). K/V saved by parley_chat_session_save_kv go to the serving engine's
 * prefix cache when they were saved under the same model file, KV dtype
 * and block size (otherwise they are skipped and recomputed at the next
 * turn), so the next turn finds them (parley_chat_stats counts them as
 * reused) unless other traffic evicts them first. They serve this session
 * only, never another session's matching prompt: the checksum proves no
 * origin, and forged K/V must not change anyone else's replies (the
 * session's later blocks are its own too). Errors:
 * PARLEY_ERROR_INVALID_ARGUMENT naming what is wrong with the data (short,
 * bad magic, unsupported version, checksum mismatch, unknown role, invalid
 * UTF-8, a role order the model's chat format refuses, K/V sizes that do not
 * add up), PARLEY_ERROR_UNSUPPORTED (encoder-decoder model, no chat format).
 * Free with parley_chat_session_free.
 */
PARLEY_API parley_status parley_chat_session_restore(const parley_model *model, const void *data, size_t size,
                                                     parley_chat_session **out_session);

/*
 * parley_chat_session_save that also stores the conversation's K/V: those of
 * its leading full KV blocks (parley_model_options.kv_block_size positions
 * each) that the serving engine's cache holds now (a partial last block, and
 * anything evicted since the last turn, are not stored). A restore in this
 * process or another one, with the same model file, KV dtype and block size,
 * then continues without recomputing them. Size: about the bytes per cached
 * token of parley inspect times the tokens stored, on top of the text; the
 * data is written as saved-chat version 2 (version 1, text only, without
 * K/V). Errors: those of parley_chat_session_save, and
 * PARLEY_ERROR_UNSUPPORTED when the model runs without the serving engine.
 */
PARLEY_API parley_status parley_chat_session_save_kv(const parley_chat_session *session, char **out_data,
                                                     size_t *out_size);

/* ------------------------------------------- bindings: exported _init functions
 * (appended in 0.1.x; issue 14) */

/*
 * The `_init` functions as exported symbols, for binding generators and FFI
 * layers that cannot call a static inline function (bindgen, JNA, cgo's
 * extern view, ctypes). Each sets options->struct_size to sizeof the struct
 * as this header declares it and fills the defaults (the `_defaults`
 * function of that struct, with its errors: PARLEY_ERROR_INVALID_ARGUMENT
 * for NULL). Thread-safe; the generation one reads `model` (may be NULL).
 *
 * Size rule: an exported `_init` symbol always writes the size its struct had
 * when the symbol was released. When a later release appends fields it adds
 * a new version node for the grown function (runtime/capi/libparley.map)
 * and keeps this one, so a program or a binding linked against this
 * version keeps receiving the size it was built with. An FFI layer that
 * looks symbols up by name at run time (dlsym: ctypes, JNA) gets the newest
 * version instead: it should set struct_size to its own mirror's size and
 * call the `_defaults` function.
 *
 * C and C++ callers compiled with this header call the static inline
 * variants below through macros of the same names (sizeof is then the
 * caller's, as it always was; a binary built with an earlier header
 * inlined them and never calls the exported ones). Define
 * PARLEY_NO_INLINE_INIT to call the exported functions instead; taking the
 * address, or writing the name in parentheses, also reaches them.
 */
PARLEY_API parley_status(parley_runtime_options_init)(parley_runtime_options *options);
PARLEY_API parley_status(parley_model_options_init)(parley_model_options *options);
PARLEY_API parley_status(parley_generation_options_init)(const parley_model *model, parley_generation_options *options);
PARLEY_API parley_status(parley_translation_options_init)(parley_translation_options *options);
PARLEY_API parley_status(parley_chat_options_init)(parley_chat_options *options);
PARLEY_API parley_status(parley_request_options_init)(parley_request_options *options);

#if !defined(PARLEY_BUILDING_LIBRARY) && !defined(PARLEY_NO_INLINE_INIT)
/* Fill `options` with defaults (inline, so sizeof is the caller's). */
static inline parley_status parley_runtime_options_init_inline(parley_runtime_options *options) {
  if (options) options->struct_size = sizeof *options;
  return parley_runtime_options_defaults(options);
}
static inline parley_status parley_model_options_init_inline(parley_model_options *options) {
  if (options) options->struct_size = sizeof *options;
  return parley_model_options_defaults(options);
}
/* From the model's generation defaults (transformers' when model is NULL). */
static inline parley_status parley_generation_options_init_inline(const parley_model *model,
                                                                  parley_generation_options *options) {
  if (options) options->struct_size = sizeof *options;
  return parley_generation_options_defaults(model, options);
}
static inline parley_status parley_translation_options_init_inline(parley_translation_options *options) {
  if (options) options->struct_size = sizeof *options;
  return parley_translation_options_defaults(options);
}
static inline parley_status parley_chat_options_init_inline(parley_chat_options *options) {
  if (options) options->struct_size = sizeof *options;
  return parley_chat_options_defaults(options);
}
static inline parley_status parley_request_options_init_inline(parley_request_options *options) {
  if (options) options->struct_size = sizeof *options;
  return parley_request_options_defaults(options);
}
#define parley_runtime_options_init(options) parley_runtime_options_init_inline(options)
#define parley_model_options_init(options) parley_model_options_init_inline(options)
#define parley_generation_options_init(model, options) parley_generation_options_init_inline(model, options)
#define parley_translation_options_init(options) parley_translation_options_init_inline(options)
#define parley_chat_options_init(options) parley_chat_options_init_inline(options)
#define parley_request_options_init(options) parley_request_options_init_inline(options)
#endif

/* ------------------------------------------- bindings: results in bulk as JSON
 * (appended in 0.1.x; issue 14). The schema: docs/results_json.md. */

/* Flags of the _json functions (OR-ed; 0: everything the result holds). */
typedef enum parley_json_flags {
  PARLEY_JSON_NO_TOKENS = 1,   /* leave out token ids (source and target) */
  PARLEY_JSON_NO_ATTENTION = 2 /* leave out attention matrices (the bulk of a result that has them) */
} parley_json_flags;

/*
 * A whole result as one JSON document, so that a binding reads it with one
 * call instead of one getter call per field: *out_json receives UTF-8 JSON
 * text, NUL-terminated, allocated by Parley (free it with
 * parley_string_free), and *out_length (may be NULL) its length in bytes
 * without the NUL. The result is unchanged. Numbers that are not finite (a
 * score of -inf) are written as null. Errors: PARLEY_ERROR_INVALID_ARGUMENT
 * (NULL result or out_json, flags other than parley_json_flags),
 * PARLEY_ERROR_OUT_OF_MEMORY. Thread-safe (results are read-only).
 *
 * parley_translation_result_json: texts, scores, token ids, attention (when
 * return_attention was set), protected spans, segments and per-text errors.
 * parley_result_json: token ids, scores, log-probabilities (when requested)
 * and constraint status of every hypothesis of a generate /
 * translate_tokens result.
 */
PARLEY_API parley_status parley_translation_result_json(const parley_translation_result *result, uint32_t flags,
                                                        char **out_json, size_t *out_length);
PARLEY_API parley_status parley_result_json(const parley_generation_result *result, uint32_t flags, char **out_json,
                                            size_t *out_length);

/*
 * A finished request (parley_request_status is not BUSY) as one JSON document:
 * its kind, status, message and result without taking it: a chat turn's reply
 * (and its log-probabilities when requested), a generation or translation as
 * the functions above write them; the result is null when the request failed.
 * Output as above. Errors: PARLEY_ERROR_INVALID_ARGUMENT (NULL, bad flags),
 * PARLEY_ERROR_BUSY (not finished), PARLEY_ERROR_NOT_FOUND (the result was
 * already taken). Thread-safe like parley_request_status.
 */
PARLEY_API parley_status parley_request_json(const parley_request *request, uint32_t flags, char **out_json,
                                             size_t *out_length);

#ifdef __cplusplus
}
#endif

#endif /* PARLEY_PARLEY_H */
