// PARLEY_OP_ATTENTION on the cuda device: argument checks (as the cpu
// plugin's, except key_lengths and the block table, which live in device
// memory: the kernels clamp the lengths), the split-KV decision (tile_math's
// heuristic with this GPU's SM count), scratch for split partials from the
// caching allocator, and the launches of attention_kernels.cu. Every check
// comes before the first CUDA call (tests/cuda/test_cuda_attention_args.c
// runs them without a GPU).
#include <algorithm>
#include <cstddef>

#include "attention/mma_attention.cuh"
#include "attention/simt_attention.cuh"
#include "cuda_common.h"

namespace parley::cuda {

void launch_attention(const attn::SimtParams &p, int head_dim, float *probs, bool i8_cache, cudaStream_t s);
void launch_attention_mma(const attn::MmaParams &p, int head_dim, bool bf16, bool async, bool f32_queries,
                          cudaStream_t s);

namespace {

// struct_size of a parley_attention_args from ABI 1.3 (the block table).
constexpr size_t kArgsSizeV1_3 = PARLEY_ATTENTION_ARGS_SIZE_V1_3;

struct Scratch {  // device buffers released (stream-ordered) when the call ends
  DeviceState *state;
  std::vector<void *> blocks;
  ~Scratch() {
    for (void *b : blocks) state->allocator.release(b);
  }
};

int sm_count(const DeviceState *state) {
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, state->device) != cudaSuccess || sms <= 0) {
    (void)cudaGetLastError();
    return 108;  // A100's count: only shapes the split heuristic
  }
  return sms;
}

}  // namespace

parley_kernel_status attention_run(const parley_kernel_context *ctx, const void *args) {
  const char *op = "attention";
  return guarded(op, ctx, [&]() -> parley_kernel_status {
    Host host(nullptr);
    DeviceState *state = nullptr;
    cudaStream_t stream = nullptr;
    const parley_attention_args *a = nullptr;
    const uint32_t dtypes = (1u << PARLEY_DTYPE_F32) | (1u << PARLEY_DTYPE_F16) | (1u << PARLEY_DTYPE_BF16);
    if (auto st = begin_call(op, ctx, args, &host, &state, &stream, &a, dtypes, PARLEY_ATTENTION_ARGS_SIZE_V1_0))
      return st;
    // Fields are read only when struct_size covers them (ABI 1.1: k_new; 1.3: the block table).
    const bool append = a->struct_size >= PARLEY_ATTENTION_ARGS_SIZE_V1_1 && a->k_new != nullptr;
    const bool paged = a->struct_size >= kArgsSizeV1_3 && a->block_table != nullptr;
    // ABI 1.2: the cache's element type. F32 activations read an F32 cache
    // or an I8 one (the SIMT kernel) or an F16 one (the tensor-core kernel,
    // queries rounded to F16); 16-bit activations read a cache of their own type.
    const int32_t kv_dtype = a->struct_size >= PARLEY_ATTENTION_ARGS_SIZE_V1_2 ? a->kv_dtype : PARLEY_DTYPE_F32;
    PARLEY_CHECK(host,
                 kv_dtype == PARLEY_DTYPE_F32 || kv_dtype == PARLEY_DTYPE_F16 || kv_dtype == PARLEY_DTYPE_BF16 ||
                     kv_dtype == PARLEY_DTYPE_I8,
                 "attention: kv_dtype %d is not F32, F16, BF16 or I8", kv_dtype);
    if (kv_dtype == PARLEY_DTYPE_BF16 && a->dtype != PARLEY_DTYPE_BF16)
      return host.fail(PARLEY_KERNEL_UNSUPPORTED,
                       "attention: a BF16 cache is read with BF16 activations only on cuda (ABI 1.6)");
    auto type_name = [](int32_t t) { return t == PARLEY_DTYPE_F16 ? "F16" : t == PARLEY_DTYPE_I8 ? "I8" : "BF16"; };
    if (a->dtype != PARLEY_DTYPE_F32 && kv_dtype != PARLEY_DTYPE_F32 && kv_dtype != a->dtype)
      return host.fail(PARLEY_KERNEL_UNSUPPORTED,
                       "attention: %s activations over a %s cache (the cuda kernels read 16-bit activations over a "
                       "cache of their own type)",
                       type_name(a->dtype), type_name(kv_dtype));
    const bool i8_cache = kv_dtype == PARLEY_DTYPE_I8;  // F32 activations (checked above)
    if (i8_cache) {
      PARLEY_CHECK(host, a->k_scales && a->v_scales, "attention: an I8 cache without k_scales / v_scales");
      PARLEY_CHECK(host, a->scale_stride_batch >= 0 && a->scale_stride_head >= 0 && a->scale_stride_seq >= 0,
                   "attention: negative scale stride");
      if (a->probs)
        return host.fail(PARLEY_KERNEL_UNSUPPORTED,
                         "attention: probabilities are not returned over an I8 cache on cuda (F32 cache)");
    }
    // The tensor-core kernel: 16-bit activations, or F32 ones over an F16 cache.
    const bool f32_queries = a->dtype == PARLEY_DTYPE_F32 && kv_dtype == PARLEY_DTYPE_F16;
    const bool tensor_cores = a->dtype != PARLEY_DTYPE_F32 || f32_queries;
    if (tensor_cores && a->probs)
      return host.fail(PARLEY_KERNEL_UNSUPPORTED,
                       "attention: probabilities are only returned with F32 activations over an F32 cache on cuda");
    // ABI 1.4 sliding window (every kernel below honours it: the split-KV
    // and tensor-core kernels skip the keys before a CTA's window and mask
    // the rest per row); an older struct has none.
    const int64_t window = a->struct_size >= sizeof(parley_attention_args) ? a->window : 0;
    PARLEY_CHECK(host, window >= 0, "attention: negative window %lld", ll(window));
    PARLEY_CHECK(host, window == 0 || (a->mask & PARLEY_MASK_CAUSAL),
                 "attention: a sliding window (%lld) needs PARLEY_MASK_CAUSAL", ll(window));
    // A window of at least the longest sequence is no window; the kernels
    // index keys with int, so larger ones are capped (< 2^30 keys).
    const int kernel_window = static_cast<int>(std::min<int64_t>(window, int64_t{1} << 30));
    PARLEY_CHECK(host, a->batch >= 0 && a->q_len >= 0 && a->kv_len >= 0,
                 "attention: negative shape batch=%lld q_len=%lld kv_len=%lld", ll(a->batch), ll(a->q_len),
                 ll(a->kv_len));
    PARLEY_CHECK(host, a->num_heads >= 1 && a->num_kv_heads >= 1 && a->head_dim >= 1,
                 "attention: num_heads (%lld), num_kv_heads (%lld) and head_dim (%lld) must be >= 1", ll(a->num_heads),
                 ll(a->num_kv_heads), ll(a->head_dim));
    PARLEY_CHECK(host, a->num_heads % a->num_kv_heads == 0,
                 "attention: num_heads (%lld) is not a multiple of num_kv_heads (%lld)", ll(a->num_heads),
                 ll(a->num_kv_heads));
    PARLEY_CHECK(host, (a->mask & ~(PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING)) == 0,
                 "attention: unknown mask bits 0x%x", a->mask);
    if (a->head_dim != 64 && a->head_dim != 128)
      return host.fail(PARLEY_KERNEL_UNSUPPORTED, "attention: head_dim %lld (the cuda plugin has 64 and 128)",
                       ll(a->head_dim));
    if (paged) {
      // Key j of sequence b: row j % block_size of block block_table[b * block_table_stride + j / block_size].
      PARLEY_CHECK(host, a->mask & PARLEY_MASK_KEY_PADDING,
                   "attention: a paged cache (block_table) needs the KEY_PADDING mask and key_lengths");
      PARLEY_CHECK(host, a->block_size >= 1, "attention: block_size (%lld) must be >= 1 with a block_table",
                   ll(a->block_size));
      PARLEY_CHECK(host, a->block_table_stride >= 1, "attention: block_table_stride (%lld) must be >= 1",
                   ll(a->block_table_stride));
      PARLEY_CHECK(host, a->block_table_stride < (int64_t{1} << 30) / a->block_size,
                   "attention: block_table_stride (%lld) x block_size (%lld) addresses too many keys for the cuda "
                   "kernels (< 2^30)",
                   ll(a->block_table_stride), ll(a->block_size));
      if (a->probs)
        return host.fail(PARLEY_KERNEL_UNSUPPORTED,
                         "attention: probs with a paged cache (block_table) are not returned by the cuda kernels");
    }
    if (a->batch == 0 || a->q_len == 0) return PARLEY_KERNEL_OK;
    PARLEY_CHECK(host, a->q && a->out, "attention: q or out is NULL");
    if (a->kv_len > 0 || paged) PARLEY_CHECK(host, a->k && a->v, "attention: k or v is NULL");
    if (a->mask & PARLEY_MASK_KEY_PADDING)
      PARLEY_CHECK(host, a->key_lengths != nullptr, "attention: KEY_PADDING mask without key_lengths");
    if (append) {
      PARLEY_CHECK(host, a->v_new != nullptr, "attention: k_new without v_new");
      // kv_len is unused with a block table (the lengths are key_lengths).
      if (!paged) PARLEY_CHECK(host, a->kv_len >= a->q_len, "attention: k_new with q_len > kv_len");
      const int64_t news[] = {a->k_new_stride_batch, a->k_new_stride_head, a->k_new_stride_seq,
                              a->v_new_stride_batch, a->v_new_stride_head, a->v_new_stride_seq};
      for (int64_t st : news) PARLEY_CHECK(host, st >= 0, "attention: negative k_new/v_new stride %lld", ll(st));
    }
    const int64_t D = a->head_dim;
    const int64_t strides[] = {a->q_stride_batch, a->q_stride_head,    a->q_stride_seq,    a->k_stride_batch,
                               a->k_stride_head,  a->k_stride_seq,     a->v_stride_batch,  a->v_stride_head,
                               a->v_stride_seq,   a->out_stride_batch, a->out_stride_head, a->out_stride_seq};
    for (int64_t st : strides) PARLEY_CHECK(host, st >= 0, "attention: negative stride %lld", ll(st));
    // The kernels index with int: shapes must fit.
    const int64_t rows = a->num_heads / a->num_kv_heads * a->q_len;
    PARLEY_CHECK(host,
                 a->batch * a->num_heads * a->q_len < (int64_t{1} << 30) && (paged || a->kv_len < (int64_t{1} << 30)),
                 "attention: shape too large for the cuda kernels (batch*heads*q_len=%lld, kv_len=%lld)",
                 ll(a->batch * a->num_heads * a->q_len), ll(a->kv_len));
    // The kernels clamp each key length (read on the device) to key_cap: kv_len,
    // or with a block table the keys one row of the table addresses.
    attn::KvBlocks kv;
    int key_cap = static_cast<int>(a->kv_len);
    if (paged) {
      kv.table = a->block_table;
      kv.table_stride = a->block_table_stride;
      kv.block_size = static_cast<int>(a->block_size);
      key_cap = static_cast<int>(a->block_table_stride * a->block_size);
    }
    if (auto st = use_device(op, host, state)) return st;

    attn::SplitConfig cfg;
    cfg.num_sms = sm_count(state);
    cfg.align = 64;
    // Splits for the longest sequence: kv_len, or with a block table (where
    // kv_len is only a hint) the smaller of kv_len and key_cap when kv_len > 0.
    // Each CTA splits its own sequence's length (split_range), so a wrong
    // hint costs speed, never correctness. With a sliding window a CTA's
    // splits share out only the keys its rows' windows span: at most
    // window + (its queries - 1) (+ 15 for the tensor-core kernel, whose
    // splits start on the 16-key tile of the first key).
    auto splits_for = [&](int64_t base_ctas, int rows_per_cta, int tile_slack) {
      int split_len = paged && (a->kv_len <= 0 || a->kv_len > key_cap) ? key_cap : static_cast<int>(a->kv_len);
      if (kernel_window > 0) {
        const int64_t spanned = kernel_window + std::min<int64_t>(a->q_len, rows_per_cta) - 1 + tile_slack;
        if (spanned < split_len) split_len = static_cast<int>(spanned);
      }
      return attn::num_splits(base_ctas, split_len, cfg);
    };
    Scratch scratch{state, {}};
    auto alloc = [&](size_t bytes, void **ptr) -> parley_kernel_status {
      std::string error;
      if (auto st = state->allocator.allocate(stream, bytes, ptr, &error))
        return host.fail(st, "attention: %s", error.c_str());
      scratch.blocks.push_back(*ptr);
      return PARLEY_KERNEL_OK;
    };
    // Per packed row and split: m, l and the unnormalised accumulator [D].
    auto alloc_partials = [&](int splits, float **m, float **l, float **accs) -> parley_kernel_status {
      const size_t slots = static_cast<size_t>(a->batch) * a->num_kv_heads * rows * splits;
      void *pm = nullptr, *pl = nullptr, *pa = nullptr;
      if (auto st = alloc(slots * sizeof(float), &pm)) return st;
      if (auto st = alloc(slots * sizeof(float), &pl)) return st;
      if (auto st = alloc(slots * D * sizeof(float), &pa)) return st;
      *m = static_cast<float *>(pm), *l = static_cast<float *>(pl), *accs = static_cast<float *>(pa);
      return PARLEY_KERNEL_OK;
    };

    if (tensor_cores) {
      // The tensor-core kernel: a CTA per 64 packed rows (G query heads x
      // queries) of one (sequence, KV head), split over the keys when that
      // fills idle SMs (long decode).
      attn::MmaParams m{};
      m.q = a->q, m.k = static_cast<const uint16_t *>(a->k);
      m.v = static_cast<const uint16_t *>(a->v), m.out = a->out, m.lse = a->lse;
      m.q_sb = a->q_stride_batch, m.q_sh = a->q_stride_head, m.q_ss = a->q_stride_seq;
      m.k_sb = a->k_stride_batch, m.k_sh = a->k_stride_head, m.k_ss = a->k_stride_seq;
      m.v_sb = a->v_stride_batch, m.v_sh = a->v_stride_head, m.v_ss = a->v_stride_seq;
      m.o_sb = a->out_stride_batch, m.o_sh = a->out_stride_head, m.o_ss = a->out_stride_seq;
      m.batch = static_cast<int>(a->batch), m.heads = static_cast<int>(a->num_heads);
      m.kv_heads = static_cast<int>(a->num_kv_heads), m.q_len = static_cast<int>(a->q_len);
      m.kv_len = key_cap, m.scale = a->scale, m.mask = a->mask, m.key_lengths = a->key_lengths, m.kv = kv;
      m.window = kernel_window;
      m.row_tiles = attn::mma_row_tiles(m.heads, m.kv_heads, m.q_len);
      if (append) {
        m.k_new = a->k_new, m.v_new = a->v_new;
        m.kn_sb = a->k_new_stride_batch, m.kn_sh = a->k_new_stride_head, m.kn_ss = a->k_new_stride_seq;
        m.vn_sb = a->v_new_stride_batch, m.vn_sh = a->v_new_stride_head, m.vn_ss = a->v_new_stride_seq;
      }
      m.align = cfg.align;  // a multiple of the 16-key tile
      m.splits = splits_for(int64_t{m.batch} * m.kv_heads * m.row_tiles, attn::kMmaRows, attn::kMmaKeys - 1);
      if (m.splits > 1)
        if (auto st = alloc_partials(m.splits, &m.part_m, &m.part_l, &m.part_acc)) return st;
      // cp.async needs every K/V row (and 16-bit q row) on a 16-byte
      // boundary: base pointers and strides (in 2-byte elements) multiples of 8.
      bool aligned = true;
      for (const void *ptr : {a->k, a->v}) aligned = aligned && reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
      for (int64_t st :
           {a->k_stride_batch, a->k_stride_head, a->k_stride_seq, a->v_stride_batch, a->v_stride_head, a->v_stride_seq})
        aligned = aligned && st % 8 == 0;
      if (!f32_queries) {
        aligned = aligned && reinterpret_cast<uintptr_t>(a->q) % 16 == 0;
        for (int64_t st : {a->q_stride_batch, a->q_stride_head, a->q_stride_seq}) aligned = aligned && st % 8 == 0;
      }
      launch_attention_mma(m, static_cast<int>(D), a->dtype == PARLEY_DTYPE_BF16, aligned, f32_queries, stream);
      return check_launch(host, op);
    }
    attn::SimtParams p{};
    p.q = a->q, p.k = a->k, p.v = a->v;
    p.out = static_cast<float *>(a->out);
    p.lse = a->lse;
    p.q_sb = a->q_stride_batch, p.q_sh = a->q_stride_head, p.q_ss = a->q_stride_seq;
    p.k_sb = a->k_stride_batch, p.k_sh = a->k_stride_head, p.k_ss = a->k_stride_seq;
    p.v_sb = a->v_stride_batch, p.v_sh = a->v_stride_head, p.v_ss = a->v_stride_seq;
    p.o_sb = a->out_stride_batch, p.o_sh = a->out_stride_head, p.o_ss = a->out_stride_seq;
    p.batch = static_cast<int>(a->batch), p.heads = static_cast<int>(a->num_heads);
    p.kv_heads = static_cast<int>(a->num_kv_heads), p.q_len = static_cast<int>(a->q_len);
    p.kv_len = key_cap;
    p.kv = kv;
    p.scale = a->scale;
    p.mask = a->mask;
    p.key_lengths = a->key_lengths;
    p.window = kernel_window;
    if (i8_cache) {
      p.k_scales = a->k_scales, p.v_scales = a->v_scales;
      p.s_sb = a->scale_stride_batch, p.s_sh = a->scale_stride_head, p.s_ss = a->scale_stride_seq;
    }
    if (append) {
      p.k_new = a->k_new, p.v_new = a->v_new;
      p.kn_sb = a->k_new_stride_batch, p.kn_sh = a->k_new_stride_head, p.kn_ss = a->k_new_stride_seq;
      p.vn_sb = a->v_new_stride_batch, p.vn_sh = a->v_new_stride_head, p.vn_ss = a->v_new_stride_seq;
    }
    p.row_tiles = static_cast<int>((rows + attn::kSimtRows - 1) / attn::kSimtRows);
    p.align = cfg.align;
    p.splits = splits_for(int64_t{p.batch} * p.kv_heads * p.row_tiles, attn::kSimtRows, 0);
    if (p.splits > 1)
      if (auto st = alloc_partials(p.splits, &p.part_m, &p.part_l, &p.part_acc)) return st;
    if (a->probs && !p.lse) {  // the probabilities pass needs each row's lse
      void *lse = nullptr;
      if (auto st = alloc(static_cast<size_t>(p.batch) * p.heads * p.q_len * sizeof(float), &lse)) return st;
      p.lse = static_cast<float *>(lse);
    }
    launch_attention(p, static_cast<int>(D), a->probs, i8_cache, stream);
    return check_launch(host, op);
  });
}

}  // namespace parley::cuda
