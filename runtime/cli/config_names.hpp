// Names of the enum-valued model config entries (formats/parley.fbs), so
// `parley inspect` prints "silu" instead of 4.
#pragma once

#include <parley/parley.h>

#include <cstdint>
#include <cstring>
#include <string_view>

namespace parley_cli {

// The name of value `v` of config entry `key`, or nullptr when the entry is no
// enum (or the value is one this tool does not know: then the number is printed).
inline const char *config_enum_name(std::string_view key, int64_t v) {
  auto field = key.substr(key.rfind('.') == std::string_view::npos ? 0 : key.rfind('.') + 1);
  auto pick = [v](std::initializer_list<const char *> names) -> const char * {
    return v >= 0 && static_cast<size_t>(v) < names.size() ? names.begin()[v] : nullptr;
  };
  if (key == "kind") return pick({"decoder-only", "encoder-decoder"});
  if (key == "generation.early_stopping") return pick({"false", "true", "never"});
  if (key.rfind("encoder.", 0) != 0 && key.rfind("decoder.", 0) != 0) return nullptr;
  if (field == "activation") return v == 0 ? nullptr : pick({"none", "relu", "gelu", "gelu_tanh", "silu"});
  if (field == "norm") return pick({"layer_norm", "rms_norm"});
  if (field == "norm_placement") return pick({"pre", "post"});
  if (field == "position") return pick({"none", "learned", "sinusoidal", "rotary"});
  if (field == "rope_scaling") return pick({"none", "linear", "llama3"});
  return nullptr;
}

// One entry of a model's config as `parley inspect` shows it (text and JSON).
struct ConfigEntry {
  const char *key = nullptr;
  bool is_float = false;
  double real = 0;                  // is_float
  int64_t integer = 0;              // otherwise
  const char *enum_name = nullptr;  // the integer's name (config_enum_name), or nullptr
};

// Calls fn(const ConfigEntry &) for every config entry of `m`, in order.
template <typename Fn>
void for_each_config(const parley_model *m, Fn &&fn) {
  size_t n = 0;
  parley_model_config_count(m, &n);
  for (size_t i = 0; i < n; ++i) {
    ConfigEntry e;
    int32_t is_float = 0;
    parley_model_config_key(m, i, &e.key, &is_float);
    e.is_float = is_float != 0;
    if (e.is_float)
      parley_model_config_float(m, e.key, &e.real);
    else
      parley_model_config_int(m, e.key, &e.integer);
    e.enum_name = e.is_float ? nullptr : config_enum_name(e.key, e.integer);
    fn(e);
  }
}

}  // namespace parley_cli
