#include "model/transformer.hpp"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/error.hpp"
#include "core/escape.hpp"
#include "core/memory_scope.hpp"
#include "core/runtime.hpp"
#include "model/attention_args.hpp"

namespace parley {

namespace {

int64_t cfg_i(const ModelFile &f, const std::string &key) {
  const ConfigEntry *e = f.find_config(key);
  if (!e) fail(PARLEY_ERROR_INVALID_MODEL, f.label() + ": config key '" + key + "' missing");
  return e->int_value;
}

double cfg_f(const ModelFile &f, const std::string &key) {
  const ConfigEntry *e = f.find_config(key);
  if (!e) fail(PARLEY_ERROR_INVALID_MODEL, f.label() + ": config key '" + key + "' missing");
  return e->float_value;
}

// Rotary inverse frequencies as transformers' modeling_rope_utils computes
// them (float32 arithmetic), with linear or Llama-3 scaling.
std::vector<float> rope_inv_freq(const ModelFile &f, const std::string &p, int64_t rope_dim) {
  float theta = static_cast<float>(cfg_f(f, p + "rope_theta"));
  std::vector<float> inv(static_cast<size_t>(rope_dim / 2));
  for (int64_t i = 0; i < rope_dim / 2; ++i)
    inv[static_cast<size_t>(i)] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(rope_dim));
  int64_t scaling = cfg_i(f, p + "rope_scaling");
  float factor = static_cast<float>(cfg_f(f, p + "rope_scaling_factor"));
  if (scaling == 1) {
    for (float &x : inv) x /= factor;
  } else if (scaling == 2) {
    float low = static_cast<float>(cfg_f(f, p + "rope_low_freq_factor"));
    float high = static_cast<float>(cfg_f(f, p + "rope_high_freq_factor"));
    float old_ctx = static_cast<float>(cfg_i(f, p + "rope_original_max_positions"));
    float low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
    for (float &x : inv) {
      float wavelen = 2.f * static_cast<float>(M_PI) / x;
      float scaled = wavelen > low_wavelen ? x / factor : x;
      if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
        float smooth = (old_ctx / wavelen - low) / (high - low);
        scaled = (1.f - smooth) * scaled / factor + smooth * scaled;
      }
      x = scaled;
    }
  }
  return inv;
}

StackParams read_stack(const ModelFile &f, const std::string &p) {
  StackParams s{};
  s.layers = cfg_i(f, p + "num_layers");
  s.hidden = cfg_i(f, p + "hidden_size");
  s.heads = cfg_i(f, p + "num_heads");
  s.kv_heads = cfg_i(f, p + "num_kv_heads");
  s.head_dim = cfg_i(f, p + "head_dim");
  s.ffn = cfg_i(f, p + "ffn_size");
  s.activation = static_cast<parley_activation>(cfg_i(f, p + "activation"));
  s.gated = cfg_i(f, p + "gated_ffn") != 0;
  s.rms_norm = cfg_i(f, p + "norm") == 1;
  s.post_norm = cfg_i(f, p + "norm_placement") == 1;
  s.eps = static_cast<float>(cfg_f(f, p + "norm_epsilon"));
  s.qkv_bias = cfg_i(f, p + "qkv_bias") != 0;
  s.out_bias = cfg_i(f, p + "out_bias") != 0;
  s.ffn_bias = cfg_i(f, p + "ffn_bias") != 0;
  s.qk_norm = cfg_i(f, p + "qk_norm") != 0;
  s.embedding_norm = cfg_i(f, p + "embedding_norm") != 0;
  s.final_norm = cfg_i(f, p + "final_norm") != 0;
  s.position = static_cast<int>(cfg_i(f, p + "position"));
  s.max_positions = cfg_i(f, p + "max_positions");
  s.position_offset = cfg_i(f, p + "position_offset");
  s.embedding_scale = static_cast<float>(cfg_f(f, p + "embedding_scale"));
  s.rope_dim = cfg_i(f, p + "rope_dim");
  s.rope_interleaved = cfg_i(f, p + "rope_interleaved") != 0;
  if (s.ffn < 1) fail(PARLEY_ERROR_INVALID_MODEL, f.label() + ": config " + p + "ffn_size must be >= 1");
  if (s.position == 3) s.inv_freq = rope_inv_freq(f, p, s.rope_dim);
  for (int64_t i = 0; i < s.layers; ++i)
    if (const ConfigEntry *w = f.find_config(p + "layer_window." + std::to_string(i))) {
      s.windows.resize(static_cast<size_t>(s.layers), 0);
      s.windows[static_cast<size_t>(i)] = w->int_value;
    }
  return s;
}

}  // namespace

ThreadPool &Transformer::pool() const {
  return runtime_->host.pool();
}

Transformer::Transformer(std::shared_ptr<Runtime> runtime, const ModelFile &file, const std::string &device,
                         parley_dtype kv_dtype, parley_dtype act_dtype)
    : runtime_(runtime),
      kv_dtype_(kv_dtype),
      ops_(runtime, device, act_dtype),
      mem_(std::make_shared<DeviceMemory>(runtime, runtime->registry.device(device))),
      weights_(file, mem_),
      label_(file.label()) {
  if (kv_dtype != PARLEY_DTYPE_F32 && kv_dtype != PARLEY_DTYPE_F16 && kv_dtype != PARLEY_DTYPE_BF16 &&
      kv_dtype != PARLEY_DTYPE_I8)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "kv_cache_dtype " + std::to_string(static_cast<int>(kv_dtype)) +
             " is not PARLEY_DTYPE_F32, PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16 or PARLEY_DTYPE_I8");
  if (act_dtype != PARLEY_DTYPE_F32 && kv_dtype == PARLEY_DTYPE_F32)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, std::string("activation_dtype ") + dtype_name(act_dtype) +
                                            " needs a 16-bit or I8 KV cache (kv_cache_dtype), not F32");
  if (kv_dtype != PARLEY_DTYPE_F32) {  // never widened silently: the kernel must read it
    const Kernel &k = ops_.kernel(PARLEY_OP_ATTENTION);
    const uint32_t need = PARLEY_KERNEL_FLAG_KV_APPEND | kv_flag(kv_dtype);
    if ((k.flags & need) != need)
      fail(PARLEY_ERROR_UNSUPPORTED, "device '" + device + "': its attention kernel '" + k.name + "' (plugin '" +
                                         k.plugin + "') cannot read and append a " + dtype_name(kv_dtype) +
                                         " KV cache (kv_cache_dtype); use PARLEY_DTYPE_F32 on this device");
  }
  vocab_ = file.target_vocab_size();
  src_vocab_ = file.vocab_size();
  has_encoder_ = file.kind() == PARLEY_MODEL_ENCODER_DECODER;
  dec_stack_.p = read_stack(file, "decoder.");
  if (has_encoder_) {
    enc_.p = read_stack(file, "encoder.");
    // The encoder path implements what the supported families use.
    if (enc_.p.position == 3 || enc_.p.qk_norm)
      fail(PARLEY_ERROR_UNSUPPORTED, label_ + ": rotary positions or q/k norm in the encoder are not supported");
    if (enc_.p.hidden != dec_.hidden)
      fail(PARLEY_ERROR_UNSUPPORTED, label_ + ": encoder and decoder hidden sizes differ");
    if (!enc_.p.windows.empty())  // the loader refuses them; never attend fully instead
      fail(PARLEY_ERROR_UNSUPPORTED, label_ + ": sliding windows in the encoder are not supported");
  }
  if (!dec_.windows.empty()) {  // sliding-window layers: the kernel must honour the window
    const Kernel &k = ops_.kernel(PARLEY_OP_ATTENTION);
    if (!(k.flags & PARLEY_KERNEL_FLAG_SLIDING_WINDOW))
      fail(PARLEY_ERROR_UNSUPPORTED, label_ + ": the model uses sliding-window attention, and device '" + device +
                                         "': its attention kernel '" + k.name + "' (plugin '" + k.plugin +
                                         "') does not support a sliding window");
  }
  // Every pointer bound below is on the model's device; linear weights are
  // prepared by the kernel that will run them.
  if (has_encoder_) bind_stack(enc_, "encoder", false);
  bind_stack(dec_stack_, "decoder", has_encoder_);
  bool tied = cfg_i(file, "tie_word_embeddings") != 0;
  // Tied: the output projection reads the embedding table itself (per-row
  // scales of an I8 table are per output feature), never a second copy.
  lm_head_ = bind_linear(tied ? dec_stack_.embed.name : std::string("lm_head.weight"), vocab_, dec_.hidden);
  if (cfg_i(file, "final_logits_bias")) logits_bias_ = weights_.f32("final_logits_bias", {vocab_});
  size_t widened = 0;
  for (const LinearPlan &e : plan_)
    if (e.widened) ++widened;
  if (widened)
    runtime_->host.log(
        PARLEY_SEVERITY_WARNING, label_ + ": device '" + device + "' has no linear kernel for the stored dtype of " +
                                     std::to_string(widened) + " weight(s) (first: " +
                                     [&] {
                                       for (const LinearPlan &e : plan_)
                                         if (e.widened)
                                           return quote_untrusted(e.tensor) + ", " + dtype_name(e.weight_dtype);
                                       return std::string();
                                     }() +
                                     "); they run as float32 GEMMs on a widened copy");
}

uint64_t Transformer::prepared_bytes() const {
  uint64_t total = weights_.expanded_bytes();
  for (const LinearPlan &e : plan_) total += e.bytes;
  return total;
}

LinearWeight Transformer::bind_linear(const std::string &name, int64_t n, int64_t k) {
  LinearPlan entry;
  LinearWeight w = ops_.prepare_linear(weights_, name, n, k, &entry);
  plan_.push_back(std::move(entry));
  return w;
}

Transformer::EmbeddingTable Transformer::bind_embedding(const std::string &name, int64_t vocab) {
  const TensorRef &t = weights_.ref(name, {vocab, dec_.hidden});
  EmbeddingTable e;
  e.name = name;
  const bool native_type =
      (t.quant == PARLEY_QUANT_NONE &&
       (t.dtype == PARLEY_DTYPE_F32 || t.dtype == PARLEY_DTYPE_F16 || t.dtype == PARLEY_DTYPE_BF16)) ||
      (t.dtype == PARLEY_DTYPE_I8 && t.quant == PARLEY_QUANT_PER_ROW && t.scale_axis == 0);
  if (mem_->host_addressable() && native_type) {
    e.data = t.data;
    e.dtype = t.dtype;
    e.row_scales = t.scales;
  } else {
    e.data = weights_.f32(name, {vocab, dec_.hidden});
  }
  return e;
}

void Transformer::bind_stack(Stack &s, const std::string &prefix, bool cross) {
  const StackParams &p = s.p;
  const int64_t H = p.hidden, qd = p.heads * p.head_dim, kvd = p.kv_heads * p.head_dim;
  auto name = [&](const std::string &rest) { return prefix + "." + rest; };
  std::string table = name("embed_tokens.weight");
  s.vocab = prefix == "encoder" ? src_vocab_ : vocab_;
  // The encoder shares the decoder's table when it has none of its own
  // (never with separate vocabularies: the shapes differ).
  if (!weights_.find(table, {s.vocab, H}) && prefix == "encoder" && s.vocab == vocab_ &&
      weights_.find("decoder.embed_tokens.weight", {vocab_, H}))
    table = "decoder.embed_tokens.weight";
  s.embed = bind_embedding(table, s.vocab);  // throws naming it when missing
  if (p.position == 3) s.inv_freq = DeviceArray<float>(mem_, p.inv_freq);
  if (p.position == 1 || p.position == 2)
    s.positions = weights_.f32(name("embed_positions.weight"), {p.max_positions + p.position_offset, H});
  auto bind_norm = [&](const std::string &n, int64_t dim) {
    Norm out;
    out.gamma = weights_.f32(name(n + ".weight"), {dim});
    if (!p.rms_norm) out.beta = weights_.f32_optional(name(n + ".bias"), {dim});
    return out;
  };
  if (p.embedding_norm) s.embedding_norm = bind_norm("embedding_norm", H);
  if (p.final_norm) s.final_norm = bind_norm("final_norm", H);
  auto bind_attention = [&](const std::string &a, int64_t kv_in) {
    Attention at;
    at.wq = bind_linear(name(a + ".q_proj.weight"), qd, H);
    at.wk = bind_linear(name(a + ".k_proj.weight"), kvd, kv_in);
    at.wv = bind_linear(name(a + ".v_proj.weight"), kvd, kv_in);
    at.wo = bind_linear(name(a + ".o_proj.weight"), H, qd);
    if (p.qkv_bias) {
      at.bq = weights_.f32(name(a + ".q_proj.bias"), {qd});
      at.bk = weights_.f32(name(a + ".k_proj.bias"), {kvd});
      at.bv = weights_.f32(name(a + ".v_proj.bias"), {kvd});
    }
    if (p.out_bias) at.bo = weights_.f32(name(a + ".o_proj.bias"), {H});
    if (p.qk_norm && a.find("self_attn") != std::string::npos) {
      at.q_norm = weights_.f32(name(a + ".q_norm.weight"), {p.head_dim});
      at.k_norm = weights_.f32(name(a + ".k_norm.weight"), {p.head_dim});
    }
    return at;
  };
  for (int64_t i = 0; i < p.layers; ++i) {
    std::string l = "layers." + std::to_string(i) + ".";
    Layer layer;
    layer.self_norm = bind_norm(l + "self_attn_norm", H);
    layer.self_attn = bind_attention(l + "self_attn", H);
    if (cross) {
      layer.cross_norm = bind_norm(l + "cross_attn_norm", H);
      layer.cross_attn = bind_attention(l + "cross_attn", enc_.p.hidden);
    }
    layer.ffn_norm = bind_norm(l + "ffn_norm", H);
    if (p.gated) layer.gate = bind_linear(name(l + "ffn.gate_proj.weight"), p.ffn, H);
    layer.up = bind_linear(name(l + "ffn.up_proj.weight"), p.ffn, H);
    layer.down = bind_linear(name(l + "ffn.down_proj.weight"), H, p.ffn);
    if (p.ffn_bias) {
      layer.b_up = weights_.f32(name(l + "ffn.up_proj.bias"), {p.ffn});
      layer.b_down = weights_.f32(name(l + "ffn.down_proj.bias"), {H});
      if (p.gated) layer.b_gate = weights_.f32(name(l + "ffn.gate_proj.bias"), {p.ffn});
    }
    s.layers.push_back(std::move(layer));
  }
}

void Transformer::norm(const StackParams &p, const Norm &n, Act x, Act out, int64_t rows) const {
  parley_norm_args a{};
  a.struct_size = sizeof a;
  a.dtype = act_dtype();
  a.rows = rows;
  a.cols = p.hidden;
  a.x = x.get();
  a.ld_x = p.hidden;
  a.gamma = n.gamma;
  a.beta = n.beta;
  a.eps = p.eps;
  a.out = out.get();
  a.ld_out = p.hidden;
  ops_.run(p.rms_norm ? PARLEY_OP_RMS_NORM : PARLEY_OP_LAYER_NORM, &a);
}

Act Transformer::sublayer_input(const StackParams &p, const Norm &n, Act x, Act scratch, int64_t rows) const {
  if (p.post_norm) return x;
  norm(p, n, x, scratch, rows);
  return scratch;
}

void Transformer::sublayer_output(const StackParams &p, const Norm &n, Act x, Act y, int64_t rows) const {
  residual_add(x, y, rows * p.hidden);
  if (p.post_norm) norm(p, n, x, x, rows);  // BART/Marian: norm after the residual
}

void Transformer::residual_add(Act x, Act y, int64_t n) const {
  parley_add_args a{};
  a.struct_size = sizeof a;
  a.dtype = act_dtype();
  a.n = n;
  a.a = x.get();
  a.b = y.get();
  a.out = x.get();
  a.alpha = 1.f;
  ops_.run(PARLEY_OP_ADD, &a);
}

ActArray Transformer::buffer(int64_t count) const {
  return ActArray(mem_, static_cast<size_t>(count), activation_size(act_dtype()));
}

DeviceArray<int32_t> Transformer::upload(const std::vector<int32_t> &host) const {
  return DeviceArray<int32_t>(mem_, host);
}

void Transformer::embed(const Stack &s, const int32_t *ids_dev, const std::vector<int32_t> &positions, int64_t rows,
                        Act out) const {
  const StackParams &p = s.p;
  parley_embedding_args e{};
  e.struct_size = sizeof e;
  e.dtype = act_dtype();
  e.table_dtype = s.embed.dtype;
  e.row_scales = s.embed.row_scales;
  e.count = rows;
  e.vocab = s.vocab;
  e.dim = p.hidden;
  e.ids = ids_dev;
  e.table = s.embed.data;
  e.scale = p.embedding_scale;
  e.out = out.get();
  e.ld_out = p.hidden;
  ops_.run(PARLEY_OP_EMBEDDING, &e);
  if (s.positions) {
    std::vector<int32_t> pos(static_cast<size_t>(rows));
    for (int64_t i = 0; i < rows; ++i)
      pos[static_cast<size_t>(i)] = positions[static_cast<size_t>(i)] + static_cast<int32_t>(p.position_offset);
    DeviceArray<int32_t> pos_dev = upload(pos);
    ActArray pe = buffer(rows * p.hidden);
    e.vocab = p.max_positions + p.position_offset;
    e.ids = pos_dev.data();
    e.table = s.positions;
    e.table_dtype = PARLEY_DTYPE_F32;
    e.row_scales = nullptr;
    e.scale = 1.f;
    e.out = pe.data().get();
    ops_.run(PARLEY_OP_EMBEDDING, &e);
    residual_add(out, pe.data(), rows * p.hidden);
  }
  if (p.embedding_norm) norm(p, s.embedding_norm, out, out, rows);
}

void Transformer::ffn(const Stack &s, const Layer &l, Act x, Act out, int64_t rows) const {
  const StackParams &p = s.p;
  ActArray up = buffer(rows * p.ffn);
  if (p.gated) {
    ActArray gate = buffer(rows * p.ffn);
    ops_.linear(l.gate, x, rows, l.b_gate, gate.data());
    ops_.linear(l.up, x, rows, l.b_up, up.data());
    parley_gated_activation_args g{};
    g.struct_size = sizeof g;
    g.dtype = act_dtype();
    g.activation = p.activation;
    g.rows = rows;
    g.cols = p.ffn;
    g.gate = gate.data().get();
    g.ld_gate = p.ffn;
    g.up = up.data().get();
    g.ld_up = p.ffn;
    g.out = up.data().get();
    g.ld_out = p.ffn;
    ops_.run(PARLEY_OP_GATED_ACTIVATION, &g);
  } else {
    ops_.linear(l.up, x, rows, l.b_up, up.data(), p.activation);
  }
  ops_.linear(l.down, up.data(), rows, l.b_down, out);
}

ActArray Transformer::encode(const std::vector<std::vector<int32_t>> &sources, int64_t *max_len) const {
  MemoryScope memory_scope("the encoder's activations");
  const StackParams &p = enc_.p;
  const int64_t B = static_cast<int64_t>(sources.size());
  int64_t S = 0;
  for (const auto &s : sources) S = std::max<int64_t>(S, static_cast<int64_t>(s.size()));
  if (S == 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, "every source sequence is empty");
  if ((p.position == 1 || p.position == 2) && S > p.max_positions)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "source of " + std::to_string(S) + " tokens exceeds the encoder's " +
                                            std::to_string(p.max_positions) + " positions");
  const int64_t rows = B * S, H = p.hidden, hd = p.head_dim, qd = p.heads * hd, kvd = p.kv_heads * hd;
  std::vector<int32_t> ids(static_cast<size_t>(rows), 0), pos(static_cast<size_t>(rows)),
      lengths(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    lengths[static_cast<size_t>(b)] = static_cast<int32_t>(sources[static_cast<size_t>(b)].size());
    for (int64_t i = 0; i < S; ++i) {
      pos[static_cast<size_t>(b * S + i)] = static_cast<int32_t>(i);
      if (i < lengths[static_cast<size_t>(b)]) {
        int32_t id = sources[static_cast<size_t>(b)][static_cast<size_t>(i)];
        if (id < 0 || id >= src_vocab_)
          fail(PARLEY_ERROR_INVALID_ARGUMENT,
               "source token id " + std::to_string(id) + " (sequence " + std::to_string(b) + ", position " +
                   std::to_string(i) + ") is outside the source vocabulary of " + std::to_string(src_vocab_));
        ids[static_cast<size_t>(b * S + i)] = id;
      }
    }
  }
  ActArray x = buffer(rows * H), h = buffer(rows * H), o = buffer(rows * H);
  ActArray q = buffer(rows * qd), k = buffer(rows * kvd), v = buffer(rows * kvd), a = buffer(rows * qd);
  DeviceArray<int32_t> ids_dev = upload(ids), lengths_dev = upload(lengths);
  embed(enc_, ids_dev.data(), pos, rows, x.data());
  for (const Layer &l : enc_.layers) {
    Act in = sublayer_input(p, l.self_norm, x.data(), h.data(), rows);
    ops_.linear(l.self_attn.wq, in, rows, l.self_attn.bq, q.data());
    ops_.linear(l.self_attn.wk, in, rows, l.self_attn.bk, k.data());
    ops_.linear(l.self_attn.wv, in, rows, l.self_attn.bv, v.data());
    auto args = attention_args(act_dtype(), B, p.heads, p.kv_heads, hd, S, S, q.data().get(), k.data().get(),
                               v.data().get(), a.data().get(), lengths_dev.data(), PARLEY_MASK_KEY_PADDING);
    ops_.run(PARLEY_OP_ATTENTION, &args);
    ops_.linear(l.self_attn.wo, a.data(), rows, l.self_attn.bo, o.data());
    sublayer_output(p, l.self_norm, x.data(), o.data(), rows);
    in = sublayer_input(p, l.ffn_norm, x.data(), h.data(), rows);
    ffn(enc_, l, in, o.data(), rows);
    sublayer_output(p, l.ffn_norm, x.data(), o.data(), rows);
  }
  if (p.final_norm) norm(p, enc_.final_norm, x.data(), x.data(), rows);
  *max_len = S;
  return x;
}

uint64_t Transformer::kv_bytes_per_token(parley_dtype dtype) const {
  const uint64_t layers = static_cast<uint64_t>(dec_.layers), heads = static_cast<uint64_t>(dec_.kv_heads);
  const uint64_t elems = layers * 2 * heads * static_cast<uint64_t>(dec_.head_dim);
  switch (dtype) {
    case PARLEY_DTYPE_F16:
    case PARLEY_DTYPE_BF16:
      return elems * 2;
    case PARLEY_DTYPE_I8:
      return elems + layers * 2 * heads * sizeof(float);  // one f32 scale per head row
    default:
      return elems * sizeof(float);
  }
}

uint64_t Transformer::check_kv_bytes(int64_t rows, int64_t capacity, int64_t src_len) const {
  auto mul = [](uint64_t a, uint64_t b, uint64_t *out) { return __builtin_mul_overflow(a, b, out); };
  uint64_t tokens = 0, self = 0, cross = 0, total = 0;
  // The cross-attention K/V is in the activation dtype whatever the self-attention cache's.
  const uint64_t per_token = kv_bytes_per_token(kv_dtype_), per_source_token = kv_bytes_per_token(act_dtype());
  bool overflow = mul(static_cast<uint64_t>(rows), static_cast<uint64_t>(capacity), &tokens) ||
                  mul(tokens, per_token, &self) ||
                  mul(static_cast<uint64_t>(rows) * static_cast<uint64_t>(src_len), per_source_token, &cross) ||
                  __builtin_add_overflow(self, cross, &total);
  uint64_t phys = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE));
  if (overflow || total > phys)
    fail(PARLEY_ERROR_OUT_OF_MEMORY,
         "the KV cache for " + std::to_string(rows) + " sequences of " + std::to_string(capacity) + " tokens needs " +
             (overflow ? std::string("more than 2^64 bytes") : std::to_string(total >> 20) + " MiB") +
             ", more than this machine's " + std::to_string(phys >> 20) + " MiB of memory");
  return total;
}

DecoderState Transformer::start(int64_t batch, int64_t capacity,
                                const std::vector<std::vector<int32_t>> &sources) const {
  MemoryScope memory_scope("the KV cache");
  if (batch < 1) fail(PARLEY_ERROR_INVALID_ARGUMENT, "the batch is empty");
  if (capacity < 1) fail(PARLEY_ERROR_INVALID_ARGUMENT, "capacity must be >= 1");
  // Every position scheme has a limit when the file states one (RoPE models
  // could run past it, but their quality is undefined there).
  if (dec_.max_positions > 0 && capacity > dec_.max_positions)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "requested length " + std::to_string(capacity) + " exceeds the model's " +
                                            std::to_string(dec_.max_positions) + " positions");
  int64_t longest_source = 0;
  for (const auto &src : sources) longest_source = std::max<int64_t>(longest_source, static_cast<int64_t>(src.size()));
  check_kv_bytes(batch, capacity, longest_source);
  DecoderState st;
  st.batch = batch;
  st.capacity = capacity;
  st.lengths.assign(static_cast<size_t>(batch), 0);
  st.kv_dtype = kv_dtype_;
  // Uninitialised: attention never reads a key past a sequence's length.
  const size_t cache =
      static_cast<size_t>(batch * capacity * dec_.kv_heads * dec_.head_dim) * kv_element_size(kv_dtype_);
  const size_t scales = static_cast<size_t>(batch * capacity * dec_.kv_heads);
  for (int64_t l = 0; l < dec_.layers; ++l) {
    st.k.emplace_back(mem_, cache);
    st.v.emplace_back(mem_, cache);
    if (kv_dtype_ == PARLEY_DTYPE_I8) {
      st.k_scales.emplace_back(mem_, scales);
      st.v_scales.emplace_back(mem_, scales);
    }
  }
  if (has_encoder_) {
    if (static_cast<int64_t>(sources.size()) != batch)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "an encoder-decoder model needs one source per sequence");
    int64_t S = 0;
    ActArray enc = encode(sources, &S);
    st.src_len = S;
    for (const auto &s : sources) st.src_lengths.push_back(static_cast<int32_t>(s.size()));
    st.src_lengths_device = upload(st.src_lengths);
    const int64_t kvd = dec_.kv_heads * dec_.head_dim;
    for (const Layer &l : dec_stack_.layers) {
      ActArray k = buffer(batch * S * kvd), v = buffer(batch * S * kvd);
      // Cross-attention K/V: computed once per request from the encoder output.
      ops_.linear(l.cross_attn.wk, enc.data(), batch * S, l.cross_attn.bk, k.data());
      ops_.linear(l.cross_attn.wv, enc.data(), batch * S, l.cross_attn.bv, v.data());
      st.cross_k.push_back(std::move(k));
      st.cross_v.push_back(std::move(v));
    }
  }
  return st;
}

void Transformer::project_qkv(const Attention &a, Act in, int64_t rows, const int32_t *positions_dev, Act q, Act k,
                              Act v) const {
  const StackParams &p = dec_;
  const int64_t hd = p.head_dim, qd = p.heads * hd, kvd = p.kv_heads * hd;
  ops_.linear(a.wq, in, rows, a.bq, q);
  ops_.linear(a.wk, in, rows, a.bk, k);
  ops_.linear(a.wv, in, rows, a.bv, v);
  if (a.q_norm) {  // Qwen3: RMSNorm over each head, before RoPE
    parley_norm_args na{};
    na.struct_size = sizeof na;
    na.dtype = act_dtype();
    na.cols = hd;
    na.eps = p.eps;
    na.rows = rows * p.heads;
    na.x = na.out = q.get();
    na.ld_x = na.ld_out = hd;
    na.gamma = a.q_norm;
    ops_.run(PARLEY_OP_RMS_NORM, &na);
    na.rows = rows * p.kv_heads;
    na.x = na.out = k.get();
    na.gamma = a.k_norm;
    ops_.run(PARLEY_OP_RMS_NORM, &na);
  }
  if (p.position == 3) {
    parley_rotary_args r{};
    r.struct_size = sizeof r;
    r.dtype = act_dtype();
    r.batch = 1;
    r.seq = rows;
    r.head_dim = hd;
    r.rotary_dim = p.rope_dim;
    r.positions = positions_dev;
    r.inv_freq = dec_stack_.inv_freq.data();
    r.interleaved = p.rope_interleaved;
    r.attention_factor = 1.f;
    r.heads = p.heads;
    r.x = q.get();
    r.stride_batch = rows * qd;
    r.stride_seq = qd;
    r.stride_head = hd;
    ops_.run(PARLEY_OP_ROTARY, &r);
    r.heads = p.kv_heads;
    r.x = k.get();
    r.stride_batch = rows * kvd;
    r.stride_seq = kvd;
    ops_.run(PARLEY_OP_ROTARY, &r);
  }
}

std::vector<float> Transformer::step(DecoderState &st, const std::vector<int32_t> &tokens, int64_t n, bool last_only,
                                     const std::vector<int32_t> &counts) const {
  std::vector<float> logits;
  step_into(st, tokens, n, last_only, logits, counts);
  return logits;
}

void Transformer::step_into(DecoderState &st, const std::vector<int32_t> &tokens, int64_t n, bool last_only,
                            std::vector<float> &logits, const std::vector<int32_t> &counts, LogitStats *stats) const {
  MemoryScope memory_scope("a decoder step's activations and logits");
  if (stats) stats->valid = false;
  const StackParams &p = dec_;
  const int64_t B = st.batch, rows = B * n, H = p.hidden, hd = p.head_dim, qd = p.heads * hd, kvd = p.kv_heads * hd;
  if (n < 1 || static_cast<int64_t>(tokens.size()) != rows)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "step needs batch x n tokens with n >= 1");
  if (!counts.empty() && static_cast<int64_t>(counts.size()) != B)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "step: one count per sequence is needed");
  auto count = [&](int64_t b) { return counts.empty() ? n : static_cast<int64_t>(counts[static_cast<size_t>(b)]); };
  // Padding rows write throwaway K/V just past the real tokens; key_lengths
  // cover them so the causal bottom-right rule stays exact for the real
  // queries (a real query i never sees keys past len + i), and the cache
  // length only advances by the real count, so they are overwritten later.
  std::vector<int32_t> pos(static_cast<size_t>(rows)), key_lengths(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    if (count(b) < 1 || count(b) > n)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "step: count of sequence " + std::to_string(b) + " is outside [1, n]");
    int32_t len = st.lengths[static_cast<size_t>(b)];
    if (len + n > st.capacity)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "sequence " + std::to_string(b) + " would grow to " +
                                              std::to_string(len + n) + " tokens, past its capacity of " +
                                              std::to_string(st.capacity));
    key_lengths[static_cast<size_t>(b)] = static_cast<int32_t>(len + n);
    if ((p.position == 1 || p.position == 2) && len + count(b) > p.max_positions)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "sequence " + std::to_string(b) + " would reach position " +
                                              std::to_string(len + count(b)) + ", past the model's " +
                                              std::to_string(p.max_positions) + " positions");
    for (int64_t i = 0; i < n; ++i) {
      int32_t id = tokens[static_cast<size_t>(b * n + i)];
      if (i >= count(b)) {
        pos[static_cast<size_t>(b * n + i)] = 0;  // padding: any valid position
        continue;
      }
      if (id < 0 || id >= vocab_)
        fail(PARLEY_ERROR_INVALID_ARGUMENT, "token id " + std::to_string(id) + " (sequence " + std::to_string(b) +
                                                ") is outside the vocabulary of " + std::to_string(vocab_));
      pos[static_cast<size_t>(b * n + i)] = static_cast<int32_t>(len + i);
    }
  }
  ActArray x = buffer(rows * H), h = buffer(rows * H), o = buffer(rows * H);
  ActArray q = buffer(rows * qd), k = buffer(rows * kvd), v = buffer(rows * kvd), a = buffer(rows * qd);
  std::vector<int32_t> ids(tokens);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = count(b); i < n; ++i) ids[static_cast<size_t>(b * n + i)] = 0;
  DeviceArray<int32_t> ids_dev = upload(ids), pos_dev = upload(pos), key_lengths_dev = upload(key_lengths);
  embed(dec_stack_, ids_dev.data(), pos, rows, x.data());
  // New K/V rows go to the cache inside the attention launch when the kernel
  // can do it (PARLEY_KERNEL_FLAG_KV_APPEND), else by one copy per sequence.
  const bool fused_append = (ops_.kernel(PARLEY_OP_ATTENTION).flags & PARLEY_KERNEL_FLAG_KV_APPEND) != 0;

  for (size_t li = 0; li < dec_stack_.layers.size(); ++li) {
    const Layer &l = dec_stack_.layers[li];
    // Self-attention with the KV cache.
    Act in = sublayer_input(p, l.self_norm, x.data(), h.data(), rows);
    project_qkv(l.self_attn, in, rows, pos_dev.data(), q.data(), k.data(), v.data());
    uint8_t *ck = st.k[li].data(), *cv = st.v[li].data();
    auto sa = attention_args(act_dtype(), B, p.heads, p.kv_heads, hd, n, st.capacity, q.data().get(), ck, cv,
                             a.data().get(), key_lengths_dev.data(), PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING);
    sa.window = p.window(li);
    sa.kv_dtype = st.kv_dtype;
    if (st.kv_dtype == PARLEY_DTYPE_I8) {  // [batch, capacity, kv_heads]
      sa.k_scales = st.k_scales[li].data();
      sa.v_scales = st.v_scales[li].data();
      sa.scale_stride_batch = st.capacity * p.kv_heads;
      sa.scale_stride_head = 1;
      sa.scale_stride_seq = p.kv_heads;
    }
    if (fused_append) {  // the kernel writes the new K/V rows into the cache itself
      sa.k_new = k.data().get();
      sa.v_new = v.data().get();
      sa.k_new_stride_batch = sa.v_new_stride_batch = n * kvd;
      sa.k_new_stride_head = sa.v_new_stride_head = hd;
      sa.k_new_stride_seq = sa.v_new_stride_seq = kvd;
    } else {  // F32 only: the constructor requires KV_APPEND for F16 / I8 caches
      if (st.kv_dtype != PARLEY_DTYPE_F32)
        fail(PARLEY_ERROR_INTERNAL, "a " + std::string(dtype_name(st.kv_dtype)) + " KV cache needs the fused append");
      for (int64_t b = 0; b < B; ++b) {
        size_t dst = static_cast<size_t>((b * st.capacity + st.lengths[static_cast<size_t>(b)]) * kvd) * sizeof(float);
        const int64_t src = b * n * kvd;
        mem_->on_device(ck + dst, (k.data() + src).get(), static_cast<size_t>(n * kvd) * sizeof(float));
        mem_->on_device(cv + dst, (v.data() + src).get(), static_cast<size_t>(n * kvd) * sizeof(float));
      }
    }
    ops_.run(PARLEY_OP_ATTENTION, &sa);
    ops_.linear(l.self_attn.wo, a.data(), rows, l.self_attn.bo, o.data());
    sublayer_output(p, l.self_norm, x.data(), o.data(), rows);

    if (has_encoder_) {  // cross-attention over the encoder output
      in = sublayer_input(p, l.cross_norm, x.data(), h.data(), rows);
      ops_.linear(l.cross_attn.wq, in, rows, l.cross_attn.bq, q.data());
      // One attention "sequence" per source: its R rows' n queries each.
      const int64_t R = st.rows_per_source, sources = B / R;
      auto ca = attention_args(act_dtype(), sources, p.heads, p.kv_heads, hd, R * n, st.src_len, q.data().get(),
                               st.cross_k[li].data().get(), st.cross_v[li].data().get(), a.data().get(),
                               st.src_lengths_device.data(), PARLEY_MASK_KEY_PADDING);
      DeviceArray<float> probs;  // probabilities are float whatever the activations
      if (st.record_cross_layer == static_cast<int64_t>(li)) {
        probs = DeviceArray<float>(mem_, static_cast<size_t>(B * p.heads * n * st.src_len));
        ca.probs = probs.data();
      }
      ops_.run(PARLEY_OP_ATTENTION, &ca);
      if (!probs.empty()) {  // [sources, heads, R * n, S] -> [batch, heads, n, S]
        std::vector<float> grouped = probs.to_vector();
        const size_t S = static_cast<size_t>(st.src_len), N = static_cast<size_t>(n);
        const size_t NH = static_cast<size_t>(p.heads), RR = static_cast<size_t>(R);
        st.cross_probs.resize(grouped.size());
        for (size_t r = 0; r < static_cast<size_t>(B); ++r)
          for (size_t head = 0; head < NH; ++head)
            std::copy_n(grouped.begin() + static_cast<std::ptrdiff_t>((((r / RR) * NH + head) * RR + r % RR) * N * S),
                        N * S, st.cross_probs.begin() + static_cast<std::ptrdiff_t>((r * NH + head) * N * S));
      }
      ops_.linear(l.cross_attn.wo, a.data(), rows, l.cross_attn.bo, o.data());
      sublayer_output(p, l.cross_norm, x.data(), o.data(), rows);
    }

    in = sublayer_input(p, l.ffn_norm, x.data(), h.data(), rows);
    ffn(dec_stack_, l, in, o.data(), rows);
    sublayer_output(p, l.ffn_norm, x.data(), o.data(), rows);
  }
  for (int64_t b = 0; b < B; ++b) st.lengths[static_cast<size_t>(b)] += static_cast<int32_t>(count(b));

  Act final_rows = x.data();
  int64_t out_rows = rows;
  ActArray last;
  if (last_only) {
    last = buffer(B * H);
    for (int64_t b = 0; b < B; ++b)
      mem_->on_device((last.data() + b * H).get(), (x.data() + ((b * n) + count(b) - 1) * H).get(), x.data().bytes(H));
    final_rows = last.data();
    out_rows = B;
  }
  ActArray normed;
  if (p.final_norm) {
    normed = buffer(out_rows * H);
    norm(p, dec_stack_.final_norm, final_rows, normed.data(), out_rows);
    final_rows = normed.data();
  }
  logits.resize(static_cast<size_t>(out_rows * vocab_));
  LinearStats into;
  if (stats) into = linear_stats_for(*stats, out_rows, vocab_);
  const bool wrote = project_logits(final_rows, out_rows, logits.data(), stats ? &into : nullptr);
  if (stats) stats->valid = wrote;
}

bool Transformer::project_logits(Act final_rows, int64_t rows, float *out, LinearStats *stats) const {
  if (mem_->host_addressable() && act_dtype() == PARLEY_DTYPE_F32) {  // host memory: write the caller's vector
    return ops_.linear(lm_head_, final_rows, rows, logits_bias_, Act(out, sizeof(float)), PARLEY_ACT_NONE, {}, stats);
  }
  // Device memory, or logits in the activation dtype: through a buffer.
  ActArray dev = buffer(rows * vocab_);
  ops_.linear(lm_head_, final_rows, rows, logits_bias_, dev.data());
  download_as_float(*mem_, act_dtype(), dev.data().get(), static_cast<size_t>(rows * vocab_), out);
  return false;
}

void Transformer::reorder(DecoderState &s, const std::vector<int32_t> &parents) const {
  MemoryScope memory_scope("beam search's reordered KV cache");
  if (parents.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "reorder: no rows left");
  for (int32_t p : parents)
    if (p < 0 || p >= s.batch) fail(PARLEY_ERROR_INTERNAL, "reorder: parent row out of range");
  const size_t rows = parents.size();
  // Bytes of one position (all kv heads) in the cache, and in the I8 scales.
  const size_t kvd = static_cast<size_t>(dec_.kv_heads * dec_.head_dim) * kv_element_size(s.kv_dtype);
  const size_t row = static_cast<size_t>(s.capacity) * kvd;
  const size_t skvd = static_cast<size_t>(dec_.kv_heads) * sizeof(float), srow = static_cast<size_t>(s.capacity) * skvd;
  int32_t longest = 0;
  for (int32_t p : parents) longest = std::max(longest, s.lengths[static_cast<size_t>(p)]);
  // Only the filled part of a row moves. Growing: rows go straight into a
  // new cache. Otherwise in place: a row that keeps its own contents is not
  // touched, a parent whose slot gets overwritten is staged first (only
  // those), every other parent is read where it is.
  const bool grows = rows > static_cast<size_t>(s.batch);
  std::vector<int32_t> stage_slot(static_cast<size_t>(s.batch), -1);  // parent -> staging index
  std::vector<int32_t> staged;
  if (!grows)
    for (size_t r = 0; r < rows; ++r) {
      const int32_t p = parents[r];
      const bool overwritten = static_cast<size_t>(p) < rows && parents[static_cast<size_t>(p)] != p;
      if (p != static_cast<int32_t>(r) && overwritten && stage_slot[static_cast<size_t>(p)] < 0) {
        stage_slot[static_cast<size_t>(p)] = static_cast<int32_t>(staged.size());
        staged.push_back(p);
      }
    }
  // row_bytes: one sequence's row of `buf`; used: its bytes that move.
  auto gather = [&](auto &buf, size_t row_bytes, size_t used) {
    using T = std::remove_reference_t<decltype(*buf.data())>;
    const size_t row_elems = row_bytes / sizeof(T), used_elems = used / sizeof(T);
    if (grows) {
      std::remove_reference_t<decltype(buf)> out(mem_, rows * row_elems);
      for (size_t r = 0; r < rows && used; ++r)
        mem_->on_device(out.data() + r * row_elems, buf.data() + static_cast<size_t>(parents[r]) * row_elems, used);
      buf = std::move(out);
      return;
    }
    if (used == 0) return;
    std::remove_reference_t<decltype(buf)> staging;
    if (!staged.empty()) staging = std::remove_reference_t<decltype(buf)>(mem_, staged.size() * used_elems);
    for (size_t i = 0; i < staged.size(); ++i)
      mem_->on_device(staging.data() + i * used_elems, buf.data() + static_cast<size_t>(staged[i]) * row_elems, used);
    for (size_t r = 0; r < rows; ++r) {
      const size_t p = static_cast<size_t>(parents[r]);
      if (p == r) continue;
      const T *src = stage_slot[p] >= 0 ? staging.data() + static_cast<size_t>(stage_slot[p]) * used_elems
                                        : buf.data() + p * row_elems;
      mem_->on_device(buf.data() + r * row_elems, src, used);
    }
  };
  for (auto &k : s.k) gather(k, row, static_cast<size_t>(longest) * kvd);
  for (auto &v : s.v) gather(v, row, static_cast<size_t>(longest) * kvd);
  for (auto &k : s.k_scales) gather(k, srow, static_cast<size_t>(longest) * skvd);
  for (auto &v : s.v_scales) gather(v, srow, static_cast<size_t>(longest) * skvd);
  std::vector<int32_t> lengths;
  for (int32_t p : parents) lengths.push_back(s.lengths[static_cast<size_t>(p)]);
  s.lengths = std::move(lengths);
  if (!s.cross_k.empty()) reorder_sources(s, parents);
  s.batch = static_cast<int64_t>(rows);
}

void Transformer::reorder_sources(DecoderState &s, const std::vector<int32_t> &parents) const {
  // The source of each new row, then its grouping: when the rows form runs
  // of one common length R with one source each, the shared layout stays
  // (and nothing moves if the runs are the sources in order); otherwise each
  // row gets its own copy of its source.
  const size_t rows = parents.size();
  std::vector<int32_t> source(rows);
  for (size_t r = 0; r < rows; ++r) source[r] = static_cast<int32_t>(parents[r] / s.rows_per_source);
  size_t R = 1;
  while (R < rows && source[R] == source[0]) ++R;
  bool grouped = rows % R == 0;
  std::vector<int32_t> kept;  // the sources of the groups, in order
  for (size_t g = 0; grouped && g < rows / R; ++g) {
    for (size_t r = g * R; r < (g + 1) * R; ++r) grouped = grouped && source[r] == source[g * R];
    kept.push_back(source[g * R]);
  }
  if (!grouped) {  // no common grouping: one copy of the source per row
    R = 1;
    kept = source;
  }
  std::vector<int32_t> identity(static_cast<size_t>(s.batch / s.rows_per_source));
  for (size_t i = 0; i < identity.size(); ++i) identity[i] = static_cast<int32_t>(i);
  s.rows_per_source = static_cast<int64_t>(R);
  if (kept == identity) return;  // beams reordered within their items: nothing moves
  const size_t crow = static_cast<size_t>(s.src_len * dec_.kv_heads * dec_.head_dim);
  auto gather = [&](ActArray &buf) {
    const int64_t row = static_cast<int64_t>(crow);
    ActArray out = buffer(static_cast<int64_t>(kept.size()) * row);
    for (size_t i = 0; i < kept.size(); ++i)
      mem_->on_device((out.data() + static_cast<int64_t>(i) * row).get(), (buf.data() + kept[i] * row).get(),
                      buf.data().bytes(row));
    buf = std::move(out);
  };
  for (auto &k : s.cross_k) gather(k);
  for (auto &v : s.cross_v) gather(v);
  std::vector<int32_t> src_lengths;
  for (int32_t k : kept) src_lengths.push_back(s.src_lengths[static_cast<size_t>(k)]);
  s.src_lengths = std::move(src_lengths);
  s.src_lengths_device = upload(s.src_lengths);
}

void Transformer::grow(DecoderState &s, int64_t capacity) const {
  MemoryScope memory_scope("the conversation's larger KV cache");
  if (s.batch != 1 || has_encoder_) fail(PARLEY_ERROR_INTERNAL, "grow: only one-sequence decoder-only states grow");
  if (capacity <= s.capacity) return;
  DecoderState grown = start(1, capacity);
  const size_t used = static_cast<size_t>(s.lengths[0] * dec_.kv_heads * dec_.head_dim) * kv_element_size(s.kv_dtype);
  const size_t used_scales = static_cast<size_t>(s.lengths[0] * dec_.kv_heads) * sizeof(float);
  for (size_t l = 0; l < grown.k.size(); ++l) {
    mem_->on_device(grown.k[l].data(), s.k[l].data(), used);
    mem_->on_device(grown.v[l].data(), s.v[l].data(), used);
  }
  for (size_t l = 0; l < grown.k_scales.size(); ++l) {
    mem_->on_device(grown.k_scales[l].data(), s.k_scales[l].data(), used_scales);
    mem_->on_device(grown.v_scales[l].data(), s.v_scales[l].data(), used_scales);
  }
  grown.lengths[0] = s.lengths[0];
  s = std::move(grown);
}

}  // namespace parley
