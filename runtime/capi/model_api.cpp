// parley_model_*: loading and introspection.
#include <algorithm>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "capi/api_guard.hpp"
#include "capi/request_control.hpp"
#include "core/escape.hpp"
#include "core/runtime.hpp"
#include "model/attention_args.hpp"
#include "serve/engine.hpp"

using namespace parley;
using parley::capi::check_struct_size;
using parley::capi::copy_out;
using parley::capi::guarded;
using parley::capi::require;

namespace {

constexpr size_t kModelOptionsV1 = PARLEY_SIZE_THROUGH(parley_model_options, borrow_memory);
constexpr size_t kModelInfoV1 = PARLEY_SIZE_THROUGH(parley_model_info, device);
constexpr size_t kTensorInfoV1 = PARLEY_SIZE_THROUGH(parley_tensor_info, scale_axis);
constexpr size_t kTokenizerInfoV1 = PARLEY_SIZE_THROUGH(parley_tokenizer_info, num_special_tokens);
constexpr size_t kKernelInfoV1 = PARLEY_SIZE_THROUGH(parley_kernel_info, selected);

parley_model_options resolve_options(const parley_model_options *options) {
  parley_model_options o;
  parley_model_options_init(&o);
  if (options) {
    check_struct_size(options->struct_size, kModelOptionsV1, sizeof o, "options");
    std::memcpy(&o, options, options->struct_size);
  }
  if (o.verify_checksums != 0 && o.verify_checksums != 1)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->verify_checksums must be 0 or 1");
  if (o.borrow_memory != 0 && o.borrow_memory != 1)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->borrow_memory must be 0 or 1");
  if (!o.device || !*o.device) fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->device is NULL or empty");
  if (o.read_into_memory != 0 && o.read_into_memory != 1)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->read_into_memory must be 0 or 1");
  if (o.read_into_memory && o.borrow_memory)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->read_into_memory and options->borrow_memory exclude each other");
  if (o.kv_cache_dtype != PARLEY_DTYPE_F32 && o.kv_cache_dtype != PARLEY_DTYPE_F16 &&
      o.kv_cache_dtype != PARLEY_DTYPE_BF16 && o.kv_cache_dtype != PARLEY_DTYPE_I8)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "options->kv_cache_dtype (" + std::to_string(o.kv_cache_dtype) +
             ") must be PARLEY_DTYPE_F32, PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16 or PARLEY_DTYPE_I8");
  if (o.serving_engine != 0 && o.serving_engine != 1)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->serving_engine must be 0 or 1");
  if (o.kv_block_size < 1 || o.kv_block_size > 4096)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "options->kv_block_size (" + std::to_string(o.kv_block_size) + ") must be in [1, 4096]");
  if (o.max_batch_sequences < 1) fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->max_batch_sequences must be >= 1");
  if (o.max_batch_tokens < 1) fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->max_batch_tokens must be >= 1");
  if (o.prefill_chunk_tokens < 1) fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->prefill_chunk_tokens must be >= 1");
  if (o.admission_timeout_ms < 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->admission_timeout_ms must be >= 0");
  if (o.activation_dtype != PARLEY_DTYPE_F32 && o.activation_dtype != PARLEY_DTYPE_F16 &&
      o.activation_dtype != PARLEY_DTYPE_BF16)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "options->activation_dtype (" + std::to_string(o.activation_dtype) +
                                            ") must be PARLEY_DTYPE_F32, PARLEY_DTYPE_F16 or PARLEY_DTYPE_BF16");
  if (o.activation_dtype != PARLEY_DTYPE_F32 && o.kv_cache_dtype == PARLEY_DTYPE_F32)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         std::string("options->activation_dtype ") + dtype_name(o.activation_dtype) +
             " needs a 16-bit or I8 KV cache (options->kv_cache_dtype PARLEY_DTYPE_F16, PARLEY_DTYPE_BF16 or "
             "PARLEY_DTYPE_I8), not F32");
  return o;
}

template <typename Open>
void load(parley_runtime *runtime, const parley_model_options &o, parley_model **out_model, Open &&open) {
  // Never fall back silently: the device must exist and be up before we read a byte.
  runtime->impl->registry.device(o.device);
  if (o.activation_dtype != PARLEY_DTYPE_F32) {  // checked again when the Transformer binds (ops.cpp)
    const parley_dtype act = static_cast<parley_dtype>(o.activation_dtype);
    const std::vector<Kernel> kernels = runtime->impl->registry.kernels();
    for (parley_op op : {PARLEY_OP_EMBEDDING, PARLEY_OP_LAYER_NORM, PARLEY_OP_RMS_NORM, PARLEY_OP_ROTARY,
                         PARLEY_OP_ATTENTION, PARLEY_OP_GATED_ACTIVATION, PARLEY_OP_ADD, PARLEY_OP_LINEAR}) {
      const bool found = std::any_of(kernels.begin(), kernels.end(), [&](const Kernel &k) {
        return k.op == op && k.device == o.device && k.dtype == act;
      });
      if (!found)
        fail(PARLEY_ERROR_UNSUPPORTED, std::string("options->activation_dtype ") + dtype_name(act) + ": device '" +
                                           o.device + "' has no " + dtype_name(act) + " kernel for op " + op_name(op) +
                                           "; use PARLEY_DTYPE_F32 there");
    }
  }
  if (o.kv_cache_dtype != PARLEY_DTYPE_F32) {  // checked again when the Transformer binds
    const Kernel k =
        runtime->impl->registry.find(PARLEY_OP_ATTENTION, o.device, static_cast<parley_dtype>(o.activation_dtype));
    const uint32_t need = PARLEY_KERNEL_FLAG_KV_APPEND | kv_flag(static_cast<parley_dtype>(o.kv_cache_dtype));
    if ((k.flags & need) != need)
      fail(PARLEY_ERROR_UNSUPPORTED, std::string("options->kv_cache_dtype: device '") + o.device + "' cannot hold a " +
                                         dtype_name(o.kv_cache_dtype) + " KV cache (its attention kernel '" + k.name +
                                         "' of plugin '" + k.plugin + "' does not read and append it); use " +
                                         "PARLEY_DTYPE_F32 there");
  }
  LoadOptions lo;
  lo.verify_checksums = o.verify_checksums != 0;
  lo.read_into_memory = o.read_into_memory != 0;
  lo.pool = &runtime->impl->host.pool();
  auto file = open(lo);
  auto m = std::make_unique<parley_model>();
  m->impl.runtime = runtime->impl;
  m->impl.file = std::move(file);
  m->impl.device = o.device;
  m->impl.kv_dtype = static_cast<parley_dtype>(o.kv_cache_dtype);
  m->impl.act_dtype = static_cast<parley_dtype>(o.activation_dtype);
  m->impl.use_engine = o.serving_engine == 1;
  m->impl.engine_options.block_size = o.kv_block_size;
  m->impl.engine_options.kv_budget_bytes = o.kv_cache_budget_bytes;
  m->impl.engine_options.max_sequences = o.max_batch_sequences;
  m->impl.engine_options.max_batch_tokens = o.max_batch_tokens;
  m->impl.engine_options.prefill_chunk = o.prefill_chunk_tokens;
  m->impl.engine_options.admission_timeout_ms = o.admission_timeout_ms;
  *out_model = m.release();
}

const ModelFile &file_of(const parley_model *model) {
  require(model, "model");
  return *model->impl.file;
}

void fill_tensor(const TensorView &t, parley_tensor_info *info) {
  parley_tensor_info out{};
  out.struct_size = sizeof out;
  out.name = t.name.c_str();
  out.dtype = t.dtype;
  out.rank = t.shape.size();
  for (size_t i = 0; i < t.shape.size(); ++i) out.shape[i] = t.shape[i];
  out.offset = t.offset;
  out.length = t.length;
  out.checksum = t.checksum;
  out.scale_tensor = t.scale_tensor.empty() ? nullptr : t.scale_tensor.c_str();
  out.scale_axis = t.scale_axis;
  out.quant = t.quant;
  out.group_size = t.group_size;
  copy_out(info, out);
}

// The ops a Transformer of this configuration runs (compute dtype f32 for now).
// The ops a model's kernel plan lists. With F16 activations the GEMM fallback
// and the unfused activation are never run (Ops in model/ops.cpp).
std::vector<parley_op> ops_needed(const ModelFile &f, parley_dtype act) {
  auto get = [&](const char *k) {
    const ConfigEntry *e = f.find_config(k);
    return e ? e->int_value : int64_t{-1};
  };
  const bool f32 = act == PARLEY_DTYPE_F32;
  std::vector<parley_op> ops = {PARLEY_OP_EMBEDDING};
  if (f32) ops.push_back(PARLEY_OP_GEMM);
  ops.push_back(PARLEY_OP_ATTENTION);
  bool layer_norm = false, rms_norm = false, rotary = false, gated = false, plain = false;
  for (const char *stack : {"encoder.", "decoder."}) {
    std::string p = stack;
    if (get((p + "num_layers").c_str()) < 0) continue;
    (get((p + "norm").c_str()) == 1 ? rms_norm : layer_norm) = true;
    if (get((p + "embedding_norm").c_str()) == 1) layer_norm = true;
    if (get((p + "position").c_str()) == 3) rotary = true;
    (get((p + "gated_ffn").c_str()) == 1 ? gated : plain) = true;
  }
  if (layer_norm) ops.push_back(PARLEY_OP_LAYER_NORM);
  if (rms_norm) ops.push_back(PARLEY_OP_RMS_NORM);
  if (rotary) ops.push_back(PARLEY_OP_ROTARY);
  if (plain && f32) ops.push_back(PARLEY_OP_ACTIVATION);
  if (gated) ops.push_back(PARLEY_OP_GATED_ACTIVATION);
  for (parley_op op : {PARLEY_OP_ADD, PARLEY_OP_SOFTMAX, PARLEY_OP_LOG_SOFTMAX, PARLEY_OP_TOPK}) ops.push_back(op);
  return ops;
}

}  // namespace

namespace parley::capi {

void retain(const parley_model *model) noexcept {
  if (model) model->refs.fetch_add(1, std::memory_order_relaxed);
}

void release(const parley_model *model) noexcept {
  if (!model || model->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  parley_model *m = const_cast<parley_model *>(model);
  if (Engine::on_engine_thread()) {
    try {
      std::thread([m] { delete m; }).detach();
      return;
    } catch (...) {
      // No thread to be had: keep the model rather than join the engine
      // from its own thread.
      return;
    }
  }
  delete m;
}

}  // namespace parley::capi

extern "C" {

PARLEY_API parley_status parley_model_options_defaults(parley_model_options *options) {
  return guarded(__func__, [&] {
    parley::capi::write_defaults(options, kModelOptionsV1, [] {
      parley_model_options o{};
      o.struct_size = sizeof o;
      o.verify_checksums = 1;
      o.device = "cpu";
      o.borrow_memory = 0;
      o.read_into_memory = 0;
      o.kv_cache_dtype = PARLEY_DTYPE_F32;
      o.serving_engine = 1;
      o.kv_block_size = 16;
      o.kv_cache_budget_bytes = 0;
      o.max_batch_sequences = 256;
      o.max_batch_tokens = 512;
      o.prefill_chunk_tokens = 256;
      o.admission_timeout_ms = 60000;
      o.activation_dtype = PARLEY_DTYPE_F32;
      return o;
    });
  });
}

PARLEY_API parley_status parley_model_load_file(parley_runtime *runtime, const char *path,
                                                const parley_model_options *options, parley_model **out_model) {
  return guarded(__func__, [&] {
    require(runtime, "runtime");
    require(path, "path");
    require(out_model, "out_model");
    parley_model_options o = resolve_options(options);
    load(runtime, o, out_model, [&](const LoadOptions &lo) { return ModelFile::open_file(path, lo); });
  });
}

PARLEY_API parley_status parley_model_load_memory(parley_runtime *runtime, const void *data, size_t size,
                                                  const parley_model_options *options, parley_model **out_model) {
  return guarded(__func__, [&] {
    require(runtime, "runtime");
    require(data, "data");
    require(out_model, "out_model");
    parley_model_options o = resolve_options(options);
    load(runtime, o, out_model,
         [&](const LoadOptions &lo) { return ModelFile::open_memory(data, size, o.borrow_memory != 0, lo); });
  });
}

PARLEY_API void parley_model_free(parley_model *model) {
  parley::capi::release(model);
}

PARLEY_API parley_status parley_model_get_info(const parley_model *model, parley_model_info *info) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(info, "info");
    check_struct_size(info->struct_size, kModelInfoV1, sizeof *info, "info");
    parley_model_info out{};
    out.struct_size = sizeof out;
    out.format_major = f.preamble().major;
    out.format_minor = f.preamble().minor;
    out.architecture = f.architecture().c_str();
    out.kind = f.kind();
    out.vocab_size = f.vocab_size();
    out.num_tensors = f.tensors().size();
    out.num_tokenizers = f.tokenizers().size();
    out.num_metadata = f.metadata().size();
    out.has_chat_template = f.chat_template() ? 1 : 0;
    out.file_size = f.file_size();
    out.weights_size = f.weights_size();
    out.device = model->impl.device.c_str();
    copy_out(info, out);
  });
}

PARLEY_API parley_status parley_model_config_int(const parley_model *model, const char *key, int64_t *out_value) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(key, "key");
    require(out_value, "out_value");
    const ConfigEntry *e = f.find_config(key);
    if (!e) fail(PARLEY_ERROR_NOT_FOUND, "no config key " + quote_untrusted(key));
    if (e->is_float) fail(PARLEY_ERROR_INVALID_ARGUMENT, "config key " + quote_untrusted(key) + " is a real number");
    *out_value = e->int_value;
  });
}

PARLEY_API parley_status parley_model_config_float(const parley_model *model, const char *key, double *out_value) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(key, "key");
    require(out_value, "out_value");
    const ConfigEntry *e = f.find_config(key);
    if (!e) fail(PARLEY_ERROR_NOT_FOUND, "no config key " + quote_untrusted(key));
    *out_value = e->float_value;
  });
}

PARLEY_API parley_status parley_model_config_count(const parley_model *model, size_t *out_count) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(out_count, "out_count");
    *out_count = f.config().size();
  });
}

PARLEY_API parley_status parley_model_config_key(const parley_model *model, size_t index, const char **out_key,
                                                 int32_t *out_is_float) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(out_key, "out_key");
    if (index >= f.config().size())
      fail(PARLEY_ERROR_NOT_FOUND, "config index " + std::to_string(index) + " out of range");
    *out_key = f.config()[index].key.c_str();
    if (out_is_float) *out_is_float = f.config()[index].is_float ? 1 : 0;
  });
}

PARLEY_API parley_status parley_model_tensor_info(const parley_model *model, size_t index, parley_tensor_info *info) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(info, "info");
    check_struct_size(info->struct_size, kTensorInfoV1, sizeof *info, "info");
    if (index >= f.tensors().size())
      fail(PARLEY_ERROR_NOT_FOUND, "tensor index " + std::to_string(index) + " out of range (count " +
                                       std::to_string(f.tensors().size()) + ")");
    fill_tensor(f.tensors()[index], info);
  });
}

PARLEY_API parley_status parley_model_find_tensor(const parley_model *model, const char *name,
                                                  parley_tensor_info *info) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(name, "name");
    require(info, "info");
    check_struct_size(info->struct_size, kTensorInfoV1, sizeof *info, "info");
    const TensorView *t = f.find_tensor(name);
    if (!t) fail(PARLEY_ERROR_NOT_FOUND, "no tensor named " + quote_untrusted(name));
    fill_tensor(*t, info);
  });
}

PARLEY_API parley_status parley_model_verify_tensor(const parley_model *model, const char *name) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(name, "name");
    const TensorView *t = f.find_tensor(name);
    if (!t) fail(PARLEY_ERROR_NOT_FOUND, "no tensor named " + quote_untrusted(name));
    f.verify_tensor(*t);
  });
}

PARLEY_API parley_status parley_model_verify_tokenizer(const parley_model *model, size_t index) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    if (index >= f.tokenizers().size())
      fail(PARLEY_ERROR_NOT_FOUND, "tokenizer index " + std::to_string(index) + " out of range (count " +
                                       std::to_string(f.tokenizers().size()) + ")");
    f.verify_tokenizer(index);
  });
}

PARLEY_API parley_status parley_model_tokenizer_info(const parley_model *model, size_t index,
                                                     parley_tokenizer_info *info) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(info, "info");
    check_struct_size(info->struct_size, kTokenizerInfoV1, sizeof *info, "info");
    if (index >= f.tokenizers().size())
      fail(PARLEY_ERROR_NOT_FOUND, "tokenizer index " + std::to_string(index) + " out of range (count " +
                                       std::to_string(f.tokenizers().size()) + ")");
    const TokenizerView &t = f.tokenizers()[index];
    parley_tokenizer_info out{};
    out.struct_size = sizeof out;
    out.kind = t.kind;
    out.role = t.role;
    out.model_size = t.length;
    out.num_special_tokens = t.num_special_tokens;
    copy_out(info, out);
  });
}

PARLEY_API parley_status parley_model_metadata_at(const parley_model *model, size_t index, const char **out_key,
                                                  const char **out_value) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(out_key, "out_key");
    require(out_value, "out_value");
    if (index >= f.metadata().size())
      fail(PARLEY_ERROR_NOT_FOUND, "metadata index " + std::to_string(index) + " out of range");
    *out_key = f.metadata()[index].first.c_str();
    *out_value = f.metadata()[index].second.c_str();
  });
}

PARLEY_API parley_status parley_model_metadata_get(const parley_model *model, const char *key, const char **out_value) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(key, "key");
    require(out_value, "out_value");
    for (const auto &kv : f.metadata())
      if (kv.first == key) {
        *out_value = kv.second.c_str();
        return;
      }
    fail(PARLEY_ERROR_NOT_FOUND, "no metadata key " + quote_untrusted(key));
  });
}

PARLEY_API parley_status parley_model_chat_template(const parley_model *model, const char **out_source) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(out_source, "out_source");
    if (!f.chat_template()) fail(PARLEY_ERROR_NOT_FOUND, "the model has no chat template");
    *out_source = f.chat_template()->c_str();
  });
}

PARLEY_API parley_status parley_model_kernel_plan_count(const parley_model *model, size_t *out_count) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(out_count, "out_count");
    const Transformer *t = model->impl.bound();
    *out_count = ops_needed(f, model->impl.act_dtype).size() + (t ? t->linear_plan().size() : 0);
  });
}

PARLEY_API parley_status parley_model_kernel_plan_at(const parley_model *model, size_t index,
                                                     parley_kernel_info *info) {
  return guarded(__func__, [&] {
    const ModelFile &f = file_of(model);
    require(info, "info");
    check_struct_size(info->struct_size, kKernelInfoV1, sizeof *info, "info");
    const parley_dtype act = model->impl.act_dtype;
    auto ops = ops_needed(f, act);
    const Transformer *t = model->impl.bound();
    const size_t linear = t ? t->linear_plan().size() : 0;
    if (index >= ops.size() + linear)
      fail(PARLEY_ERROR_NOT_FOUND, "kernel plan index " + std::to_string(index) + " out of range");
    const Registry &reg = model->impl.runtime->registry;
    parley_kernel_info out{};
    if (index >= ops.size()) {
      const LinearPlan &e = t->linear_plan()[index - ops.size()];
      out.struct_size = sizeof out;
      out.op = op_name(e.op);
      out.device = reg.intern(model->impl.device);
      out.dtype = act;
      out.name = reg.intern(e.kernel);
      out.plugin = reg.intern(e.plugin);
      out.selected = 1;
      out.weight_dtype = e.weight_dtype;
      out.tensor = reg.intern(e.tensor);
      copy_out(info, out);
      return;
    }
    // Softmax, log-softmax and top-k are F32 whatever the activations.
    const parley_op op = ops[index];
    const parley_dtype dtype =
        op == PARLEY_OP_SOFTMAX || op == PARLEY_OP_LOG_SOFTMAX || op == PARLEY_OP_TOPK ? PARLEY_DTYPE_F32 : act;
    try {
      out = reg.describe(reg.find(op, model->impl.device, dtype));
    } catch (const Error &e) {
      if (e.status() != PARLEY_ERROR_NOT_FOUND) throw;
      out.struct_size = sizeof out;
      out.op = op_name(op);
      out.device = reg.intern(model->impl.device);
      out.dtype = dtype;
      out.name = "";
      out.plugin = "";
    }
    copy_out(info, out);
  });
}

}  // extern "C"
