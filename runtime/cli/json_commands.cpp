// `parley plugins --json` and `parley inspect --json`: the same facts as the
// text commands (main.cpp), as one JSON document on stdout. Strings from the
// model file are JSON-escaped (control characters included), invalid UTF-8 is
// replaced, so a hostile file cannot drive a terminal through this output either.
#include <parley/parley.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "config_names.hpp"
#include "text_commands.hpp"

namespace parley_cli {

namespace {

using nlohmann::json;

template <typename T>
T sized() {
  T t{};
  t.struct_size = sizeof t;
  return t;
}

const char *str(const char *s) {
  return s ? s : "";
}

void print(const json &doc) {
  std::string text = doc.dump(2, ' ', false, json::error_handler_t::replace);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

json kernel(const parley_kernel_info &k) {
  json j = {{"op", str(k.op)},
            {"device", str(k.device)},
            {"dtype", parley_dtype_name(k.dtype)},
            {"name", str(k.name)},
            {"plugin", str(k.plugin)},
            {"priority", k.priority},
            {"selected", k.selected != 0}};
  if (k.weight_dtype >= 0) j["weight_dtype"] = parley_dtype_name(k.weight_dtype);
  if (k.tensor) j["tensor"] = k.tensor;
  return j;
}

}  // namespace

int plugins_json(parley_runtime *rt) {
  const char *kinds[] = {"cpu", "cuda", "other"};
  json doc = {{"version", parley_version_string()},
              {"plugins", json::array()},
              {"devices", json::array()},
              {"kernels", json::array()}};
  size_t n = 0;
  parley_runtime_plugin_count(rt, &n);
  for (size_t i = 0; i < n; ++i) {
    auto p = sized<parley_plugin_info>();
    parley_runtime_plugin_info(rt, i, &p);
    doc["plugins"].push_back(
        {{"name", str(p.name)},
         {"version", str(p.version)},
         {"abi", std::to_string(p.abi_version >> 16) + "." + std::to_string(p.abi_version & 0xffff)},
         {"devices", p.num_devices},
         {"kernels", p.num_kernels},
         {"path", *str(p.path) ? json(p.path) : json(nullptr)},
         {"built_in", !*str(p.path)}});
  }
  parley_runtime_device_count(rt, &n);
  for (size_t i = 0; i < n; ++i) {
    auto d = sized<parley_device_info>();
    parley_runtime_device_info(rt, i, &d);
    doc["devices"].push_back({{"name", str(d.name)},
                              {"kind", kinds[d.kind >= 0 && d.kind < 3 ? d.kind : 2]},
                              {"plugin", str(d.plugin)},
                              {"available", d.available != 0},
                              {"status", str(d.status)}});
  }
  parley_runtime_kernel_count(rt, &n);
  for (size_t i = 0; i < n; ++i) {
    auto k = sized<parley_kernel_info>();
    parley_runtime_kernel_info(rt, i, &k);
    doc["kernels"].push_back(kernel(k));
  }
  print(doc);
  return 0;
}

int inspect_json(parley_runtime *rt, const std::string &path, bool verify, const std::string &device, int32_t kv_cache,
                 int32_t activations) {
  parley_model_options mo;
  parley_model_options_init(&mo);
  mo.verify_checksums = 0;  // verified one by one below, as the text output does
  mo.device = device.c_str();
  mo.kv_cache_dtype = kv_cache;
  mo.activation_dtype = activations;
  parley_model *m = nullptr;
  parley_status st = parley_model_load_file(rt, path.c_str(), &mo, &m);
  if (st != PARLEY_OK) {
    std::fprintf(stderr, "parley: load failed: %s (%s)\n", parley_last_error(), parley_status_name(st));
    return 1;
  }
  auto info = sized<parley_model_info>();
  parley_model_get_info(m, &info);
  json doc = {{"path", path},
              {"format", std::to_string(info.format_major) + "." + std::to_string(info.format_minor)},
              {"file_size", info.file_size},
              {"architecture", str(info.architecture)},
              {"kind", info.kind == PARLEY_MODEL_ENCODER_DECODER ? "encoder-decoder" : "decoder-only"},
              {"weights_size", info.weights_size},
              {"chat_template", info.has_chat_template != 0},
              {"device", str(info.device)},
              {"config", json::object()},
              {"tokenizers", json::array()},
              {"metadata", json::object()},
              {"tensors", json::array()},
              {"kernel_plan", json::array()}};
  for_each_config(m, [&](const ConfigEntry &e) {
    if (e.is_float)
      doc["config"][e.key] = e.real;
    else if (e.enum_name)
      doc["config"][e.key] = e.enum_name;
    else
      doc["config"][e.key] = e.integer;
  });
  const char *checked = verify ? "ok" : "not checked";
  size_t bad = 0, bad_blobs = 0;
  const char *kinds[] = {"sentencepiece", "byte-level-bpe"}, *roles[] = {"shared", "source", "target"};
  for (size_t i = 0; i < info.num_tokenizers; ++i) {
    auto t = sized<parley_tokenizer_info>();
    parley_model_tokenizer_info(m, i, &t);
    json j = {{"kind", kinds[t.kind == 1]},
              {"role", roles[t.role >= 0 && t.role < 3 ? t.role : 0]},
              {"model_size", t.model_size},
              {"special_tokens", t.num_special_tokens},
              {"checksum", checked}};
    if (verify && parley_model_verify_tokenizer(m, i) != PARLEY_OK) {
      j["checksum"] = "mismatch";
      j["error"] = parley_last_error();
      ++bad_blobs;
    }
    doc["tokenizers"].push_back(j);
  }
  for (size_t i = 0; i < info.num_metadata; ++i) {
    const char *k = nullptr, *v = nullptr;
    parley_model_metadata_at(m, i, &k, &v);
    doc["metadata"][str(k)] = str(v);
  }
  for (size_t i = 0; i < info.num_tensors; ++i) {
    auto t = sized<parley_tensor_info>();
    parley_model_tensor_info(m, i, &t);
    json shape = json::array();
    for (size_t d = 0; d < t.rank; ++d) shape.push_back(t.shape[d]);
    json j = {{"name", str(t.name)},
              {"dtype", parley_dtype_name(t.dtype)},
              {"shape", shape},
              {"length", t.length},
              {"checksum", checked}};
    if (t.scale_tensor) {
      j["scales"] = t.scale_tensor;
      if (t.quant == 2)
        j["group_size"] = t.group_size;
      else
        j["scale_axis"] = t.scale_axis;
    }
    if (verify && parley_model_verify_tensor(m, t.name) != PARLEY_OK) {
      j["checksum"] = "mismatch";
      j["error"] = parley_last_error();
      ++bad;
    }
    doc["tensors"].push_back(j);
  }
  if (bad || bad_blobs) {
    doc["runnable"] = false;
    doc["not_runnable_because"] = std::to_string(bad) + " tensor(s) and " + std::to_string(bad_blobs) +
                                  " tokenizer blob(s) failed checksum verification";
  } else if (parley_model_prepare(m) == PARLEY_OK) {
    doc["runnable"] = true;
    auto mem = sized<parley_model_memory>();
    if (parley_model_memory_usage(m, &mem) == PARLEY_OK)
      doc["memory"] = {{"file_bytes", mem.file_bytes},           {"packed_bytes", mem.packed_bytes},
                       {"converted_bytes", mem.converted_bytes}, {"linear_weights", mem.linear_weights},
                       {"widened_weights", mem.widened_weights}, {"kv_bytes_per_token", mem.kv_bytes_per_token},
                       {"kv_cache", type_label(kv_cache)},       {"activations", type_label(activations)},
                       {"released_bytes", mem.released_bytes}};
  } else {
    doc["runnable"] = false;
    doc["not_runnable_because"] = parley_last_error();
  }
  // Whether the text API works (it builds the tokenizers at its first call).
  if (info.num_tokenizers) {
    size_t count = 0;
    doc["text"] = parley_tokenize(m, "", 0, nullptr, nullptr, 0, &count) == PARLEY_OK;
    if (!doc["text"].get<bool>()) doc["text_error"] = parley_last_error();
  } else {
    doc["text"] = false;
    doc["text_error"] = "the file has no tokenizer (token-level API only)";
  }
  size_t n = 0;
  parley_model_kernel_plan_count(m, &n);
  for (size_t i = 0; i < n; ++i) {
    auto k = sized<parley_kernel_info>();
    parley_model_kernel_plan_at(m, i, &k);
    json j = kernel(k);
    if (!*str(k.name)) j["name"] = nullptr;  // no kernel serves this op
    doc["kernel_plan"].push_back(j);
  }
  parley_model_free(m);
  print(doc);
  if (bad || bad_blobs) {
    std::fprintf(stderr, "parley: %zu tensor(s) and %zu tokenizer blob(s) failed checksum verification\n", bad,
                 bad_blobs);
    return 1;
  }
  return 0;
}

}  // namespace parley_cli
