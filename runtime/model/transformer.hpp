// The one config-driven Transformer. It reads its shape from the model
// file's config (parley.fbs StackConfig), binds the canonical tensors of
// formats/TENSORS.md, and runs every piece of arithmetic through kernels
// resolved in the plugin registry (Ops). Numerics follow the Hugging Face
// implementations the converters come from (modeling_llama.py,
// modeling_bart.py, modeling_marian.py, modeling_m2m_100.py, modeling_gpt2.py,
// modeling_qwen3.py).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "format/model_file.hpp"
#include "model/activations.hpp"
#include "model/device_memory.hpp"
#include "model/logit_stats.hpp"
#include "model/ops.hpp"
#include "model/weights.hpp"

namespace parley {

class ThreadPool;

struct StackParams {
  int64_t layers, hidden, heads, kv_heads, head_dim, ffn;
  parley_activation activation;
  bool gated, rms_norm, post_norm;
  float eps;
  bool qkv_bias, out_bias, ffn_bias, qk_norm, embedding_norm, final_norm;
  int position;  // 0 none, 1 learned, 2 sinusoidal (table stored), 3 rotary
  int64_t max_positions, position_offset;
  float embedding_scale;
  int64_t rope_dim;
  bool rope_interleaved;
  std::vector<float> inv_freq;  // rope_dim / 2, scaling applied
  // Per layer: the sliding window of its self-attention (0: full); empty
  // when no layer has one (format 1.3 layer_windows).
  std::vector<int64_t> windows;
  int64_t window(size_t layer) const { return layer < windows.size() ? windows[layer] : 0; }
};

// Per-request decoder state: self-attention KV cache per layer, and for
// encoder-decoder models the cross-attention K/V computed once from the
// encoder output. Sequences are stored from position 0 without padding.
// The caches live on the model's device; lengths are kept on the host (the
// decoding loop needs them) and uploaded with each step. Move-only.
// The self-attention cache is stored in the model's kv_dtype (F32, F16, BF16, or
// I8 with one f32 scale per (sequence, position, kv head) row); the
// cross-attention K/V is kept in the activation dtype (computed once per
// request, read by the attention kernel with kv_dtype = that dtype).
struct DecoderState {
  int64_t batch = 0, capacity = 0;
  std::vector<int32_t> lengths;  // tokens already in the cache, per sequence
  parley_dtype kv_dtype = PARLEY_DTYPE_F32;
  // [layer] -> [batch, capacity, kv_heads, head_dim] elements of kv_dtype (as bytes)
  std::vector<DeviceArray<uint8_t>> k, v;
  // I8 only: [layer] -> [batch, capacity, kv_heads]
  std::vector<DeviceArray<float>> k_scales, v_scales;
  int64_t src_len = 0;
  // Sequences come in groups of rows_per_source consecutive rows that share
  // one source (the beams of an item), and the cross-attention K/V is stored
  // once per source: beam search never copies it, and it is read once for
  // the whole group (the group's queries attend as one sequence of
  // rows_per_source * n queries: cross-attention has no causal mask).
  int64_t rows_per_source = 1;
  std::vector<int32_t> src_lengths;         // per source; host copy of src_lengths_device
  DeviceArray<int32_t> src_lengths_device;  // [batch / rows_per_source]
  std::vector<ActArray> cross_k, cross_v;   // [layer] -> [sources, src_len, kv_heads, head_dim]
  // When >= 0, step() leaves that decoder layer's cross-attention
  // probabilities of the tokens it ran in cross_probs (host memory):
  // [batch, heads, n, src_len].
  int64_t record_cross_layer = -1;
  std::vector<float> cross_probs;
};

// A paged self-attention KV cache shared by many sequences (the serving
// engine's): per layer, K and V pools of num_blocks blocks of block_size
// positions, [block, block_size, kv_heads, head_dim] elements of kv_dtype,
// plus for I8 one f32 scale per (block, position, kv head). Which sequence
// owns which block is the engine's business (serve/block_manager.hpp);
// attention reaches a sequence's keys through its block table
// (parley_attention_args.block_table, plugin ABI 1.3). Move-only.
struct KvPool {
  int64_t num_blocks = 0, block_size = 0;
  parley_dtype kv_dtype = PARLEY_DTYPE_F32;
  std::vector<DeviceArray<uint8_t>> k, v;
  std::vector<DeviceArray<float>> k_scales, v_scales;
};

// One sequence of a paged step: its block table (at least
// ceil((cached + n) / block_size) blocks; the blocks that receive the new
// rows must belong to this sequence alone), the tokens already in the cache,
// and n >= 1 new tokens.
struct PagedSequence {
  const int32_t *table = nullptr;
  int64_t table_len = 0;
  int64_t cached = 0;
  const int32_t *tokens = nullptr;
  int64_t n = 0;
  bool want_logits = true;  // false: a prefill chunk whose logits nobody reads
  // Encoder-decoder models: the sequence's cross-attention K/V, cross_len
  // source positions in the blocks of cross_table (a pool made by
  // make_cross_pool and filled by encode_paged).
  const int32_t *cross_table = nullptr;
  int64_t cross_len = 0;
};

class Transformer {
 public:
  // kv_dtype: element type of the self-attention KV cache (F32, F16, BF16 or
  // I8). F16 / BF16 / I8 need an attention kernel on `device` declaring
  // PARLEY_KERNEL_FLAG_KV_APPEND and KV_F16 / KV_BF16 / KV_I8 (else UNSUPPORTED,
  // naming the device and the kernel); other dtypes are INVALID_ARGUMENT.
  // act_dtype: element type of the activations (F32, or F16 / BF16 where
  // the device has kernels for them, else UNSUPPORTED naming the op); with
  // F16 / BF16 the cache must be 16-bit or I8. Logits come back as float.
  Transformer(std::shared_ptr<Runtime> runtime, const ModelFile &file, const std::string &device,
              parley_dtype kv_dtype = PARLEY_DTYPE_F32, parley_dtype act_dtype = PARLEY_DTYPE_F32);

  bool encoder_decoder() const { return has_encoder_; }
  int64_t vocab() const { return vocab_; }
  const StackParams &decoder_params() const { return dec_; }
  // The runtime's thread pool (for the decoding loop's per-row work).
  ThreadPool &pool() const;
  const StackParams &encoder_params() const { return enc_.p; }  // encoder-decoder models only

  // Bytes of KV cache (self-attention, plus cross-attention for `src_len`
  // source tokens) for `rows` sequences of `capacity` tokens. Throws
  // OUT_OF_MEMORY when the product overflows or exceeds the machine's
  // physical memory, naming both sizes.
  uint64_t check_kv_bytes(int64_t rows, int64_t capacity, int64_t src_len = 0) const;
  // Bytes of self-attention cache per cached token (all layers, K and V,
  // I8 scales included) for a cache of `dtype` (F32, F16 or I8).
  uint64_t kv_bytes_per_token(parley_dtype dtype) const;
  parley_dtype kv_dtype() const { return kv_dtype_; }
  parley_dtype act_dtype() const { return ops_.act_dtype(); }

  // A fresh state for `batch` sequences of up to `capacity` tokens each. For
  // encoder-decoder models `sources` (token ids per sequence) are encoded now.
  DecoderState start(int64_t batch, int64_t capacity, const std::vector<std::vector<int32_t>> &sources = {}) const;

  // Append new tokens to every sequence (tokens: batch x n, row-major; when
  // `counts` is given, sequence b uses only its first counts[b] >= 1 tokens,
  // the rest is padding) and return logits [batch, n, vocab] (rows past a
  // sequence's count are meaningless), or [batch, vocab] of each sequence's
  // last real token when last_only. Throws INVALID_ARGUMENT for ids outside
  // the vocabulary or sequences growing past capacity / max positions.
  std::vector<float> step(DecoderState &state, const std::vector<int32_t> &tokens, int64_t n, bool last_only = false,
                          const std::vector<int32_t> &counts = {}) const;
  // step() into `logits`, resized: its storage is reused when the size stays
  // (a beam-4 batch-32 translation step returns 30 MB, which a new vector
  // zeroes and faults in every step).
  // With `stats`, also the logits rows' block statistics where the output
  // projection's kernel writes them (stats->valid says whether it did).
  void step_into(DecoderState &state, const std::vector<int32_t> &tokens, int64_t n, bool last_only,
                 std::vector<float> &logits, const std::vector<int32_t> &counts = {},
                 LogitStats *stats = nullptr) const;

  // Keep only the sequences `parents` names, in that order (a sequence may be
  // repeated or dropped): beam search's reorder. Moves only the filled part
  // of each cache row.
  void reorder(DecoderState &state, const std::vector<int32_t> &parents) const;

  // Give a one-sequence state room for `capacity` tokens, keeping its cache.
  void grow(DecoderState &state, int64_t capacity) const;

  // Paged KV (the serving engine). supports_paged(): the attention kernel
  // reads block tables and appends in place (PARLEY_KERNEL_FLAG_KV_PAGED and
  // _KV_APPEND); the engine needs both.
  bool supports_paged() const;
  // Encoder-decoder models: a pool for the cross-attention K/V of many
  // sources (in the activation dtype whatever the self-attention cache's,
  // as in start()), and the bytes it needs per block.
  KvPool make_cross_pool(int64_t num_blocks, int64_t block_size) const;
  uint64_t cross_block_bytes(int64_t block_size) const;
  // Encodes the sources as one padded batch and writes each one's
  // cross-attention K/V for every decoder layer into the blocks of its
  // table (ceil(len / block_size) of them).
  void encode_paged(KvPool &cross, const std::vector<std::vector<int32_t>> &sources,
                    const std::vector<const int32_t *> &tables) const;
  // A pool of `num_blocks` blocks of `block_size` positions in the model's
  // kv_dtype, uninitialised. Throws OUT_OF_MEMORY naming the bytes.
  KvPool make_kv_pool(int64_t num_blocks, int64_t block_size) const;
  // Bytes make_kv_pool needs per block.
  uint64_t kv_block_bytes(int64_t block_size) const { return kv_bytes_per_token(kv_dtype_) * block_size; }
  // Copy the first `rows` positions of block src into block dst (copy on write).
  void copy_kv_block(KvPool &pool, int32_t dst, int32_t src, int64_t rows) const;
  // One block's K/V of every layer as bytes (session save with K/V): per
  // layer K, V, then for an I8 cache the K and V scales.
  size_t kv_block_bytes(const KvPool &pool) const;
  void read_kv_block(const KvPool &pool, int32_t block, void *out) const;
  void write_kv_block(KvPool &pool, int32_t block, const void *in) const;
  // Runs every sequence's new tokens through the decoder in one pass (the
  // linear layers see all rows at once; attention runs once for all
  // one-token sequences and once per longer sequence) and appends their K/V
  // to the pool. Returns [seqs.size(), vocab]: each sequence's logits after
  // its last new token (rows of sequences with want_logits false are left
  // zero). Throws INVALID_ARGUMENT for ids outside the vocabulary, positions
  // past the model's and tables too short; UNSUPPORTED when !supports_paged().
  // Encoder-decoder models also need `cross` (the pool every sequence's
  // cross_table points into). *stats (optional) receives the logits rows'
  // block statistics where the output projection's kernel writes them
  // (stats->valid; rows of sequences without want_logits are unspecified).
  std::vector<float> step_paged(KvPool &pool, const std::vector<PagedSequence> &seqs, KvPool *cross = nullptr,
                                LogitStats *stats = nullptr) const;
  // The same into `logits`, whose storage is reused (resized to [seqs.size(),
  // vocab] without clearing: rows of sequences without want_logits are then
  // unspecified, not zero).
  void step_paged_into(KvPool &pool, const std::vector<PagedSequence> &seqs, std::vector<float> &logits,
                       KvPool *cross = nullptr, LogitStats *stats = nullptr) const;

  // The kernel serving `op` for this model (to name it in errors).
  const Kernel &kernel(parley_op op) const { return ops_.kernel(op); }

  // The device memory the model's tensors live in.
  const DeviceMemory &memory() const { return *mem_; }

  // Which kernel serves each linear weight, in binding order.
  const std::vector<LinearPlan> &linear_plan() const { return plan_; }
  // The output projection's entry (bound last).
  const LinearPlan &output_projection() const { return plan_.back(); }
  // Bytes the model holds beyond the mapped file: packed weights owned by
  // kernels, and f32 conversions / device copies of tensors.
  uint64_t prepared_bytes() const;

 private:
  // Encoder output for padded sources, on the device: [batch, max_len, hidden].
  ActArray encode(const std::vector<std::vector<int32_t>> &sources, int64_t *max_len) const;

  struct Norm {
    const float *gamma = nullptr, *beta = nullptr;
  };
  struct Attention {
    LinearWeight wq, wk, wv, wo;
    const float *bq = nullptr, *bk = nullptr, *bv = nullptr, *bo = nullptr;
    const float *q_norm = nullptr, *k_norm = nullptr;
  };
  struct Layer {
    Norm self_norm, cross_norm, ffn_norm;
    Attention self_attn, cross_attn;
    LinearWeight up, gate, down;
    const float *b_up = nullptr, *b_gate = nullptr, *b_down = nullptr;
  };
  // A token embedding table as the embedding kernel reads it: the stored
  // F32/F16/BF16 or per-row I8 table on a host device, an f32 copy otherwise.
  struct EmbeddingTable {
    const void *data = nullptr;
    parley_dtype dtype = PARLEY_DTYPE_F32;
    const float *row_scales = nullptr;
    std::string name;
  };
  struct Stack {
    StackParams p;
    int64_t vocab = 0;  // rows of embed: the source vocabulary for the encoder, the target one for the decoder
    EmbeddingTable embed;
    const float *positions = nullptr;
    DeviceArray<float> inv_freq;  // p.inv_freq on the device (rotary only)
    Norm embedding_norm, final_norm;
    std::vector<Layer> layers;
  };

  EmbeddingTable bind_embedding(const std::string &name, int64_t vocab);
  LinearWeight bind_linear(const std::string &name, int64_t n, int64_t k);
  void bind_stack(Stack &s, const std::string &prefix, bool cross);
  void norm(const StackParams &p, const Norm &n, Act x, Act out, int64_t rows) const;
  // ids and positions: host copies (the position table needs offset ids),
  // ids_dev / positions_dev: the same on the device.
  void embed(const Stack &s, const int32_t *ids_dev, const std::vector<int32_t> &positions, int64_t rows,
             Act out) const;
  // reorder()'s part for the cross-attention K/V of encoder-decoder states.
  void reorder_sources(DecoderState &s, const std::vector<int32_t> &parents) const;
  ActArray buffer(int64_t count) const;
  DeviceArray<int32_t> upload(const std::vector<int32_t> &host) const;
  void ffn(const Stack &s, const Layer &l, Act x, Act out, int64_t rows) const;
  // Self-attention projections of `rows` token rows (row-major, any
  // sequence layout): q [rows, heads * hd], k and v [rows, kv_heads * hd],
  // with the q/k norms and rotary positions (positions_dev: one per row).
  void project_qkv(const Attention &a, Act in, int64_t rows, const int32_t *positions_dev, Act q, Act k, Act v) const;
  void residual_add(Act x, Act y, int64_t n) const;
  // Pre-norm: the normalised copy of x in scratch; post-norm: x itself.
  Act sublayer_input(const StackParams &p, const Norm &n, Act x, Act scratch, int64_t rows) const;
  // x += y, then the post-norm if the stack uses one.
  void sublayer_output(const StackParams &p, const Norm &n, Act x, Act y, int64_t rows) const;
  // The output projection of `rows` final hidden rows into host floats.
  // With `stats` (F32 activations only) also their block statistics;
  // returns whether the kernel wrote them.
  bool project_logits(Act final_rows, int64_t rows, float *out, LinearStats *stats) const;

  std::shared_ptr<Runtime> runtime_;
  parley_dtype kv_dtype_;
  Ops ops_;
  std::shared_ptr<const DeviceMemory> mem_;
  Weights weights_;
  std::string label_;
  int64_t vocab_;      // the decoder's (target) vocabulary: logits, lm_head, decoder tokens
  int64_t src_vocab_;  // the encoder's (source) vocabulary; == vocab_ unless the file separates them
  bool has_encoder_;
  Stack enc_, dec_stack_;
  StackParams &dec_ = dec_stack_.p;
  LinearWeight lm_head_;
  const float *logits_bias_ = nullptr;
  std::vector<LinearPlan> plan_;
};

}  // namespace parley
