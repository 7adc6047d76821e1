// The Transformer's paged-KV step, used by the serving engine
// (runtime/serve): many sequences of different lengths, each with its own
// block table into one KvPool, in one pass through the decoder.
//
// Rows are packed without padding: one-token sequences (decode) first, then
// the longer ones (prefill chunks). The linear layers, norms and FFN see all
// rows as one matrix; attention runs once over all one-token sequences and
// once per longer sequence (its queries are contiguous), so no row pays for
// another's length.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "core/memory_scope.hpp"
#include "core/runtime.hpp"
#include "model/attention_args.hpp"
#include "model/transformer.hpp"

namespace parley {

bool Transformer::supports_paged() const {
  const uint32_t need = PARLEY_KERNEL_FLAG_KV_PAGED | PARLEY_KERNEL_FLAG_KV_APPEND;
  return (ops_.kernel(PARLEY_OP_ATTENTION).flags & need) == need;
}

KvPool Transformer::make_cross_pool(int64_t num_blocks, int64_t block_size) const {
  MemoryScope memory_scope("the paged cross-attention cache");
  if (!has_encoder_) fail(PARLEY_ERROR_INTERNAL, "a cross-attention pool for a decoder-only model");
  if (num_blocks < 1 || block_size < 1)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "a KV pool needs at least one block of at least one position");
  KvPool pool;
  pool.num_blocks = num_blocks;
  pool.block_size = block_size;
  pool.kv_dtype = act_dtype();  // the cross-attention K/V as the linear layers write it
  const size_t bytes =
      static_cast<size_t>(num_blocks * block_size * dec_.kv_heads * dec_.head_dim) * activation_size(act_dtype());
  for (int64_t l = 0; l < dec_.layers; ++l) {
    pool.k.emplace_back(mem_, bytes);
    pool.v.emplace_back(mem_, bytes);
  }
  return pool;
}

uint64_t Transformer::cross_block_bytes(int64_t block_size) const {
  return has_encoder_ ? static_cast<uint64_t>(dec_.layers * 2 * dec_.kv_heads * dec_.head_dim * block_size) *
                            activation_size(act_dtype())
                      : 0;
}

void Transformer::encode_paged(KvPool &cross, const std::vector<std::vector<int32_t>> &sources,
                               const std::vector<const int32_t *> &tables) const {
  MemoryScope memory_scope("the encoder's activations");
  if (!has_encoder_ || static_cast<int64_t>(cross.k.size()) != dec_.layers || cross.kv_dtype != act_dtype())
    fail(PARLEY_ERROR_INTERNAL, "the cross-attention pool was made for another model");
  if (sources.empty() || tables.size() != sources.size())
    fail(PARLEY_ERROR_INTERNAL, "encode_paged needs one block table per source");
  const int64_t kvd = dec_.kv_heads * dec_.head_dim, bs = cross.block_size;
  for (size_t i = 0; i < sources.size(); ++i) {
    const int64_t blocks = (static_cast<int64_t>(sources[i].size()) + bs - 1) / bs;
    for (int64_t b = 0; b < blocks; ++b)
      if (!tables[i] || tables[i][b] < 0 || tables[i][b] >= cross.num_blocks)
        fail(PARLEY_ERROR_INTERNAL, "a block table of encode_paged is outside the cross-attention pool");
  }
  // One padded batch (key-padding masked, as a batched translate): each
  // source's rows are those it gets alone.
  int64_t S = 0;
  ActArray enc = encode(sources, &S);
  const int64_t rows = static_cast<int64_t>(sources.size()) * S;
  ActArray k = buffer(rows * kvd), v = buffer(rows * kvd);
  for (size_t li = 0; li < dec_stack_.layers.size(); ++li) {
    const Layer &l = dec_stack_.layers[li];
    ops_.linear(l.cross_attn.wk, enc.data(), rows, l.cross_attn.bk, k.data());
    ops_.linear(l.cross_attn.wv, enc.data(), rows, l.cross_attn.bv, v.data());
    for (size_t i = 0; i < sources.size(); ++i) {
      const int64_t len = static_cast<int64_t>(sources[i].size()), base = static_cast<int64_t>(i) * S * kvd;
      for (int64_t b = 0; b * bs < len; ++b) {  // [block, block_size, kv_heads, head_dim]
        const int64_t n_rows = std::min(bs, len - b * bs);
        const size_t dst = k.data().bytes(tables[i][b] * bs * kvd), n = k.data().bytes(n_rows * kvd);
        mem_->on_device(cross.k[li].data() + dst, (k.data() + base + b * bs * kvd).get(), n);
        mem_->on_device(cross.v[li].data() + dst, (v.data() + base + b * bs * kvd).get(), n);
      }
    }
  }
}

KvPool Transformer::make_kv_pool(int64_t num_blocks, int64_t block_size) const {
  MemoryScope memory_scope("the paged KV cache");
  if (num_blocks < 1 || block_size < 1)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "a KV pool needs at least one block of at least one position");
  KvPool pool;
  pool.num_blocks = num_blocks;
  pool.block_size = block_size;
  pool.kv_dtype = kv_dtype_;
  const size_t rows = static_cast<size_t>(num_blocks * block_size * dec_.kv_heads);
  const size_t bytes = rows * static_cast<size_t>(dec_.head_dim) * kv_element_size(kv_dtype_);
  for (int64_t l = 0; l < dec_.layers; ++l) {
    pool.k.emplace_back(mem_, bytes);
    pool.v.emplace_back(mem_, bytes);
    if (kv_dtype_ == PARLEY_DTYPE_I8) {
      pool.k_scales.emplace_back(mem_, rows);
      pool.v_scales.emplace_back(mem_, rows);
    }
  }
  return pool;
}

void Transformer::copy_kv_block(KvPool &pool, int32_t dst, int32_t src, int64_t rows) const {
  if (dst < 0 || src < 0 || dst >= pool.num_blocks || src >= pool.num_blocks || rows < 0 || rows > pool.block_size)
    fail(PARLEY_ERROR_INTERNAL, "copy_kv_block: block " + std::to_string(src) + " -> " + std::to_string(dst) +
                                    " outside the pool of " + std::to_string(pool.num_blocks));
  if (rows == 0 || dst == src) return;
  const size_t row_elems = static_cast<size_t>(dec_.kv_heads * dec_.head_dim);
  const size_t row_bytes = row_elems * kv_element_size(pool.kv_dtype);
  const size_t block_bytes = row_bytes * static_cast<size_t>(pool.block_size);
  const size_t scale_block = static_cast<size_t>(pool.block_size * dec_.kv_heads);
  for (size_t l = 0; l < pool.k.size(); ++l) {
    mem_->on_device(pool.k[l].data() + dst * block_bytes, pool.k[l].data() + src * block_bytes,
                    row_bytes * static_cast<size_t>(rows));
    mem_->on_device(pool.v[l].data() + dst * block_bytes, pool.v[l].data() + src * block_bytes,
                    row_bytes * static_cast<size_t>(rows));
    if (pool.kv_dtype == PARLEY_DTYPE_I8) {
      const size_t n = static_cast<size_t>(rows * dec_.kv_heads) * sizeof(float);
      mem_->on_device(pool.k_scales[l].data() + dst * scale_block, pool.k_scales[l].data() + src * scale_block, n);
      mem_->on_device(pool.v_scales[l].data() + dst * scale_block, pool.v_scales[l].data() + src * scale_block, n);
    }
  }
}

namespace {

// The byte ranges of one block in each of a pool's arrays, in the order of
// Transformer::kv_block_bytes: per layer K, V (and I8 scales).
template <typename Pool, typename Fn>
void for_each_block_range(Pool &pool, int64_t kv_heads, int64_t head_dim, int32_t block, Fn &&fn) {
  const size_t block_bytes =
      static_cast<size_t>(pool.block_size * kv_heads * head_dim) * kv_element_size(pool.kv_dtype);
  const size_t scale_bytes = static_cast<size_t>(pool.block_size * kv_heads) * sizeof(float);
  const size_t at = static_cast<size_t>(block) * block_bytes, scale_at = static_cast<size_t>(block) * scale_bytes;
  for (size_t l = 0; l < pool.k.size(); ++l) {
    fn(pool.k[l].data() + at, block_bytes);
    fn(pool.v[l].data() + at, block_bytes);
    if (pool.kv_dtype == PARLEY_DTYPE_I8) {
      fn(reinterpret_cast<decltype(pool.k[l].data())>(pool.k_scales[l].data()) + scale_at, scale_bytes);
      fn(reinterpret_cast<decltype(pool.k[l].data())>(pool.v_scales[l].data()) + scale_at, scale_bytes);
    }
  }
}

}  // namespace

size_t Transformer::kv_block_bytes(const KvPool &pool) const {
  size_t total = 0;
  if (pool.num_blocks > 0)
    for_each_block_range(pool, dec_.kv_heads, dec_.head_dim, 0, [&](auto, size_t n) { total += n; });
  return total;
}

void Transformer::read_kv_block(const KvPool &pool, int32_t block, void *out) const {
  if (block < 0 || block >= pool.num_blocks)
    fail(PARLEY_ERROR_INTERNAL, "read_kv_block: block " + std::to_string(block) + " outside the pool");
  auto *dst = static_cast<uint8_t *>(out);
  for_each_block_range(pool, dec_.kv_heads, dec_.head_dim, block, [&](const uint8_t *src, size_t n) {
    mem_->to_host(dst, src, n);
    dst += n;
  });
}

namespace {

// Whether n bytes of K/V elements of `dtype` (or of I8 scales, floats) hold
// an infinity or a NaN, which no computed K/V holds: NaN in one key poisons
// every later token's attention.
bool has_non_finite(const uint8_t *p, size_t n, parley_dtype dtype, bool scales) {
  if (scales || dtype == PARLEY_DTYPE_F32) {
    for (size_t i = 0; i + 4 <= n; i += 4) {
      float x;
      std::memcpy(&x, p + i, 4);
      if (!std::isfinite(x)) return true;
    }
    return false;
  }
  if (dtype == PARLEY_DTYPE_F16 || dtype == PARLEY_DTYPE_BF16) {
    const uint16_t exponent = dtype == PARLEY_DTYPE_F16 ? 0x7C00 : 0x7F80;
    for (size_t i = 0; i + 2 <= n; i += 2) {
      uint16_t h;
      std::memcpy(&h, p + i, 2);
      if ((h & exponent) == exponent) return true;
    }
  }
  return false;  // I8 values: every byte is a number
}

}  // namespace

void Transformer::write_kv_block(KvPool &pool, int32_t block, const void *in) const {
  if (block < 0 || block >= pool.num_blocks)
    fail(PARLEY_ERROR_INTERNAL, "write_kv_block: block " + std::to_string(block) + " outside the pool");
  // K/V from outside (a saved chat): refused whole before any of it is written.
  {
    const auto *p = static_cast<const uint8_t *>(in);
    size_t range = 0;
    for_each_block_range(pool, dec_.kv_heads, dec_.head_dim, block, [&](const uint8_t *, size_t n) {
      const bool scales = pool.kv_dtype == PARLEY_DTYPE_I8 && range % 4 >= 2;  // per layer: K, V, K scales, V scales
      if (has_non_finite(p, n, pool.kv_dtype, scales))
        fail(PARLEY_ERROR_INVALID_ARGUMENT,
             "saved K/V holds an infinity or NaN (layer " +
                 std::to_string(pool.kv_dtype == PARLEY_DTYPE_I8 ? range / 4 : range / 2) + ")");
      p += n;
      ++range;
    });
  }
  const auto *src = static_cast<const uint8_t *>(in);
  for_each_block_range(pool, dec_.kv_heads, dec_.head_dim, block, [&](uint8_t *dst, size_t n) {
    mem_->to_device(dst, src, n);
    src += n;
  });
}

std::vector<float> Transformer::step_paged(KvPool &pool, const std::vector<PagedSequence> &seqs, KvPool *cross,
                                           LogitStats *stats) const {
  std::vector<float> logits;  // fresh: rows nobody wants stay zero
  step_paged_into(pool, seqs, logits, cross, stats);
  return logits;
}

void Transformer::step_paged_into(KvPool &pool, const std::vector<PagedSequence> &seqs, std::vector<float> &logits,
                                  KvPool *cross, LogitStats *stats) const {
  if (stats) stats->valid = false;
  MemoryScope memory_scope("a batched decoder step's activations and logits");
  if (!supports_paged())
    fail(PARLEY_ERROR_UNSUPPORTED, label_ + ": the attention kernel '" + ops_.kernel(PARLEY_OP_ATTENTION).name +
                                       "' cannot read a paged KV cache");
  if (has_encoder_ && (!cross || static_cast<int64_t>(cross->k.size()) != dec_.layers))
    fail(PARLEY_ERROR_INTERNAL, "an encoder-decoder step needs its cross-attention pool");
  if (seqs.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "a paged step needs at least one sequence");
  if (pool.kv_dtype != kv_dtype_ || static_cast<int64_t>(pool.k.size()) != dec_.layers)
    fail(PARLEY_ERROR_INTERNAL, "the KV pool was made for another model");
  const StackParams &p = dec_;
  const int64_t H = p.hidden, hd = p.head_dim, qd = p.heads * hd, kvd = p.kv_heads * hd, bs = pool.block_size;
  const int64_t S = static_cast<int64_t>(seqs.size());

  // Packing order: one-token sequences first (one attention call for all).
  std::vector<int64_t> order;
  for (int64_t s = 0; s < S; ++s)
    if (seqs[static_cast<size_t>(s)].n == 1) order.push_back(s);
  const int64_t decoders = static_cast<int64_t>(order.size());
  for (int64_t s = 0; s < S; ++s)
    if (seqs[static_cast<size_t>(s)].n != 1) order.push_back(s);

  int64_t rows = 0, widest = 0, cross_widest = 0;
  for (const PagedSequence &q : seqs) {
    if (q.n < 1 || !q.tokens || q.cached < 0)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "a paged sequence needs n >= 1 new tokens");
    const int64_t total = q.cached + q.n;
    if (p.max_positions > 0 && total > p.max_positions)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "a sequence would reach position " + std::to_string(total) +
                                              ", past the model's " + std::to_string(p.max_positions) + " positions");
    const int64_t blocks = (total + bs - 1) / bs;
    if (!q.table || q.table_len < blocks)
      fail(PARLEY_ERROR_INTERNAL, "a block table of " + std::to_string(q.table_len) + " blocks cannot hold " +
                                      std::to_string(total) + " tokens");
    for (int64_t b = 0; b < blocks; ++b)
      if (q.table[b] < 0 || q.table[b] >= pool.num_blocks)
        fail(PARLEY_ERROR_INTERNAL, "block " + std::to_string(q.table[b]) + " is outside the KV pool");
    rows += q.n;
    widest = std::max(widest, blocks);
    if (has_encoder_) {
      const int64_t cb = (q.cross_len + cross->block_size - 1) / cross->block_size;
      if (q.cross_len < 1 || !q.cross_table)
        fail(PARLEY_ERROR_INTERNAL, "an encoder-decoder sequence without its encoded source");
      for (int64_t b = 0; b < cb; ++b)
        if (q.cross_table[b] < 0 || q.cross_table[b] >= cross->num_blocks)
          fail(PARLEY_ERROR_INTERNAL, "block " + std::to_string(q.cross_table[b]) + " is outside the cross pool");
      cross_widest = std::max(cross_widest, cb);
    }
  }

  // Host-side inputs in packing order: ids, positions, key lengths, tables.
  std::vector<int32_t> ids(static_cast<size_t>(rows)), pos(static_cast<size_t>(rows));
  std::vector<int32_t> key_lengths(static_cast<size_t>(S));
  std::vector<int32_t> tables(static_cast<size_t>(S * widest), 0);
  std::vector<int64_t> first_row(static_cast<size_t>(S));
  std::vector<int32_t> cross_lengths, cross_tables;
  if (has_encoder_) {
    cross_lengths.resize(static_cast<size_t>(S));
    cross_tables.assign(static_cast<size_t>(S * cross_widest), 0);
  }
  int64_t r = 0;
  for (int64_t i = 0; i < S; ++i) {
    const PagedSequence &q = seqs[static_cast<size_t>(order[static_cast<size_t>(i)])];
    first_row[static_cast<size_t>(i)] = r;
    if (has_encoder_) {
      cross_lengths[static_cast<size_t>(i)] = static_cast<int32_t>(q.cross_len);
      std::copy(q.cross_table, q.cross_table + (q.cross_len + cross->block_size - 1) / cross->block_size,
                cross_tables.begin() + i * cross_widest);
    }
    key_lengths[static_cast<size_t>(i)] = static_cast<int32_t>(q.cached + q.n);
    const int64_t blocks = (q.cached + q.n + bs - 1) / bs;
    std::copy(q.table, q.table + blocks, tables.begin() + i * widest);
    for (int64_t t = 0; t < q.n; ++t, ++r) {
      const int32_t id = q.tokens[t];
      if (id < 0 || id >= vocab_)
        fail(PARLEY_ERROR_INVALID_ARGUMENT,
             "token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(vocab_));
      ids[static_cast<size_t>(r)] = id;
      pos[static_cast<size_t>(r)] = static_cast<int32_t>(q.cached + t);
    }
  }

  ActArray x = buffer(rows * H), h = buffer(rows * H), o = buffer(rows * H);
  ActArray q = buffer(rows * qd), k = buffer(rows * kvd), v = buffer(rows * kvd), a = buffer(rows * qd);
  DeviceArray<int32_t> ids_dev = upload(ids), pos_dev = upload(pos), lengths_dev = upload(key_lengths);
  DeviceArray<int32_t> tables_dev = upload(tables);
  DeviceArray<int32_t> cross_lengths_dev, cross_tables_dev;
  if (has_encoder_) {
    cross_lengths_dev = upload(cross_lengths);
    cross_tables_dev = upload(cross_tables);
  }
  embed(dec_stack_, ids_dev.data(), pos, rows, x.data());

  // One attention call over sequences [first, first + count) of the packing
  // order, whose queries are q_len rows each, contiguous from first_row.
  auto attend = [&](size_t li, int64_t first, int64_t count, int64_t q_len) {
    const int64_t row0 = first_row[static_cast<size_t>(first)];
    auto sa = attention_args(act_dtype(), count, p.heads, p.kv_heads, hd, q_len, 0, (q.data() + row0 * qd).get(),
                             pool.k[li].data(), pool.v[li].data(), (a.data() + row0 * qd).get(),
                             lengths_dev.data() + first, PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING);
    sa.k_stride_batch = sa.v_stride_batch = bs * kvd;  // between blocks
    sa.window = p.window(li);
    sa.kv_dtype = pool.kv_dtype;
    if (pool.kv_dtype == PARLEY_DTYPE_I8) {  // [block, block_size, kv_heads]
      sa.k_scales = pool.k_scales[li].data();
      sa.v_scales = pool.v_scales[li].data();
      sa.scale_stride_batch = bs * p.kv_heads;
      sa.scale_stride_head = 1;
      sa.scale_stride_seq = p.kv_heads;
    }
    sa.k_new = (k.data() + row0 * kvd).get();
    sa.v_new = (v.data() + row0 * kvd).get();
    sa.k_new_stride_batch = sa.v_new_stride_batch = q_len * kvd;
    sa.k_new_stride_head = sa.v_new_stride_head = hd;
    sa.k_new_stride_seq = sa.v_new_stride_seq = kvd;
    sa.block_table = tables_dev.data() + first * widest;
    sa.block_table_stride = widest;
    sa.block_size = bs;
    ops_.run(PARLEY_OP_ATTENTION, &sa);
  };

  // Cross-attention over the sequences' encoded sources (no causal mask,
  // nothing appended), grouped as the self-attention calls are.
  auto attend_source = [&](size_t li, int64_t first, int64_t count, int64_t q_len) {
    const int64_t row0 = first_row[static_cast<size_t>(first)];
    auto ca = attention_args(act_dtype(), count, p.heads, p.kv_heads, hd, q_len, 0, (q.data() + row0 * qd).get(),
                             cross->k[li].data(), cross->v[li].data(), (a.data() + row0 * qd).get(),
                             cross_lengths_dev.data() + first, PARLEY_MASK_KEY_PADDING);
    ca.k_stride_batch = ca.v_stride_batch = cross->block_size * kvd;
    ca.kv_dtype = cross->kv_dtype;
    ca.block_table = cross_tables_dev.data() + first * cross_widest;
    ca.block_table_stride = cross_widest;
    ca.block_size = cross->block_size;
    ops_.run(PARLEY_OP_ATTENTION, &ca);
  };

  for (size_t li = 0; li < dec_stack_.layers.size(); ++li) {
    const Layer &l = dec_stack_.layers[li];
    Act in = sublayer_input(p, l.self_norm, x.data(), h.data(), rows);
    project_qkv(l.self_attn, in, rows, pos_dev.data(), q.data(), k.data(), v.data());
    if (decoders > 0) attend(li, 0, decoders, 1);
    for (int64_t i = decoders; i < S; ++i) attend(li, i, 1, seqs[static_cast<size_t>(order[static_cast<size_t>(i)])].n);
    ops_.linear(l.self_attn.wo, a.data(), rows, l.self_attn.bo, o.data());
    sublayer_output(p, l.self_norm, x.data(), o.data(), rows);
    if (has_encoder_) {
      in = sublayer_input(p, l.cross_norm, x.data(), h.data(), rows);
      ops_.linear(l.cross_attn.wq, in, rows, l.cross_attn.bq, q.data());
      if (decoders > 0) attend_source(li, 0, decoders, 1);
      for (int64_t i = decoders; i < S; ++i)
        attend_source(li, i, 1, seqs[static_cast<size_t>(order[static_cast<size_t>(i)])].n);
      ops_.linear(l.cross_attn.wo, a.data(), rows, l.cross_attn.bo, o.data());
      sublayer_output(p, l.cross_norm, x.data(), o.data(), rows);
    }
    in = sublayer_input(p, l.ffn_norm, x.data(), h.data(), rows);
    ffn(dec_stack_, l, in, o.data(), rows);
    sublayer_output(p, l.ffn_norm, x.data(), o.data(), rows);
  }

  // Last row of every sequence that wants logits, in the caller's order.
  std::vector<int64_t> wanted;  // caller indices
  for (int64_t s = 0; s < S; ++s)
    if (seqs[static_cast<size_t>(s)].want_logits) wanted.push_back(s);
  logits.resize(static_cast<size_t>(S * vocab_));
  if (wanted.empty()) return;
  std::vector<int64_t> packed_of(static_cast<size_t>(S));
  for (int64_t i = 0; i < S; ++i) packed_of[static_cast<size_t>(order[static_cast<size_t>(i)])] = i;
  const int64_t W = static_cast<int64_t>(wanted.size());
  ActArray last = buffer(W * H);
  for (int64_t w = 0; w < W; ++w) {
    const int64_t s = wanted[static_cast<size_t>(w)], i = packed_of[static_cast<size_t>(s)];
    const int64_t row = first_row[static_cast<size_t>(i)] + seqs[static_cast<size_t>(s)].n - 1;
    mem_->on_device((last.data() + w * H).get(), (x.data() + row * H).get(), x.data().bytes(H));
  }
  Act final_rows = last.data();
  ActArray normed;
  if (p.final_norm) {
    normed = buffer(W * H);
    norm(p, dec_stack_.final_norm, final_rows, normed.data(), W);
    final_rows = normed.data();
  }
  // Every row wanted (the common decode step): written in place. Otherwise
  // the W rows first, then each to its sequence's row.
  std::vector<float> packed;
  if (W < S) packed.resize(static_cast<size_t>(W * vocab_));
  float *out = W == S ? logits.data() : packed.data();
  {
    // With statistics: written for the W rows, then placed at their
    // sequences' rows (as the logits below).
    LinearStats into;
    if (stats) into = linear_stats_for(*stats, S, vocab_);
    const bool wrote = project_logits(final_rows, W, out, stats ? &into : nullptr);
    if (stats && wrote) {
      const int64_t nb = stats->blocks;
      for (int64_t w = W - 1; w >= 0; --w) {  // backwards: row w moves to wanted[w] >= w
        const int64_t to = wanted[static_cast<size_t>(w)];
        if (to == w) continue;
        std::copy_n(stats->block_max.begin() + w * nb, nb, stats->block_max.begin() + to * nb);
        std::copy_n(stats->block_sum.begin() + w * nb, nb, stats->block_sum.begin() + to * nb);
      }
      stats->valid = true;
    }
  }
  if (W == S) return;
  for (int64_t w = 0; w < W; ++w)
    std::copy_n(packed.begin() + w * vocab_, vocab_, logits.begin() + wanted[static_cast<size_t>(w)] * vocab_);
}

}  // namespace parley
