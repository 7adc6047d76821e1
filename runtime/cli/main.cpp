// parley — command-line front end over the public C API.
//   parley plugins [--plugin-dir DIR]... [--load LIB]...
//   parley inspect FILE [--no-verify] [--device NAME] [--kv-cache f32|f16|bf16|int8] [--activations f32|f16|bf16]
//                       [--plugin-dir DIR]...
//   parley translate MODEL [--source-language L] [--target-language L] [--beam N] ...  (stdin -> stdout,
//                          line N of the output for line N of the input; bad lines reported as "line N: ...")
//   parley chat MODEL [--system TEXT | --system-file F] [--max-tokens N] [--sample]
//               [--grammar-file F | --json-schema-file F] ...
//   parley score MODEL [--source-language L] [--target-language L] [--per-token] [-i FILE]
//                (lines "source<TAB>target" or "text" -> "sum<TAB>tokens[<TAB>log-probs]")
//   parley convert HF_DIR|MODEL.gguf OUT.parley [converter options]
//   parley --version; --json on plugins, inspect, translate, chat and score
//   (json_commands.cpp, text_commands.cpp, score_command.cpp).
// Exit status: 0 success, 1 failure (a file, a line, a checksum), 2 usage error.
//   parley serve --model NAME=PATH... [--host H] [--port P] [limits]  (HTTP; docs/serve.md)
#include <parley/parley.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cfloat>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "../core/escape.hpp"  // header-only: file content made printable before it reaches a terminal
#include "config_names.hpp"
#include "server.hpp"
#include "text_commands.hpp"

namespace {

const char *kKindNames[] = {"cpu", "cuda", "other"};

// An output struct with struct_size set, as the C API requires.
template <typename T>
T sized() {
  T t{};
  t.struct_size = sizeof t;
  return t;
}

int report(parley_status st, const char *what) {
  std::fprintf(stderr, "parley: %s failed: %s (%s)\n", what, parley_last_error(), parley_status_name(st));
  return 1;
}

struct Common {
  std::vector<std::string> plugin_dirs;
  std::vector<std::string> load;
  int threads = 0;
  bool verbose = false;
  bool json = false;  // --json: one JSON document (plugins, inspect) or JSON lines (translate, chat) on stdout
};

parley_status make_runtime(const Common &c, parley_runtime **rt) {
  std::vector<const char *> dirs;
  for (const auto &d : c.plugin_dirs) {
    struct stat st {};
    // The runtime skips a folder it cannot list (as it does the default
    // ones); one the user named deserves a word.
    if (stat(d.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      std::fprintf(stderr, "parley: --plugin-dir %s: %s; not searched\n", d.c_str(),
                   stat(d.c_str(), &st) != 0 ? std::strerror(errno) : "not a folder");
    dirs.push_back(d.c_str());
  }
  parley_runtime_options o;
  parley_runtime_options_init(&o);
  o.plugin_dirs = dirs.data();
  o.num_plugin_dirs = dirs.size();
  o.num_threads = c.threads;
  o.min_severity = c.verbose ? PARLEY_SEVERITY_DEBUG : PARLEY_SEVERITY_WARNING;
  parley_status st = parley_runtime_create(&o, rt);
  if (st != PARLEY_OK) return st;
  for (const auto &lib : c.load) {
    st = parley_runtime_load_plugin(*rt, lib.c_str());
    if (st != PARLEY_OK) {
      parley_runtime_free(*rt);
      return st;
    }
  }
  return PARLEY_OK;
}

std::string human_bytes(uint64_t b) {
  const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

int cmd_plugins(const Common &c) {
  parley_runtime *rt = nullptr;
  parley_status st = make_runtime(c, &rt);
  if (st != PARLEY_OK) return report(st, "runtime");
  size_t n = 0;
  parley_runtime_plugin_count(rt, &n);
  std::printf("Parley %s — %zu plugin(s)\n", parley_version_string(), n);
  for (size_t i = 0; i < n; ++i) {
    auto p = sized<parley_plugin_info>();
    parley_runtime_plugin_info(rt, i, &p);
    std::printf("  %-12s version %-8s ABI %u.%u  %zu device(s), %zu kernel(s)  %s\n", p.name, p.version,
                p.abi_version >> 16, p.abi_version & 0xffff, p.num_devices, p.num_kernels,
                *p.path ? p.path : "(built in)");
  }
  parley_runtime_device_count(rt, &n);
  std::printf("Devices:\n");
  for (size_t i = 0; i < n; ++i) {
    auto d = sized<parley_device_info>();
    parley_runtime_device_info(rt, i, &d);
    std::printf("  %-12s kind %-5s plugin %-10s %s%s\n", d.name, kKindNames[d.kind < 3 ? d.kind : 2], d.plugin,
                d.available ? "available" : "UNAVAILABLE: ", d.status);
  }
  parley_runtime_kernel_count(rt, &n);
  std::printf("Kernels (* = selected for its op/device/dtype; linear: x weight dtype):\n");
  for (size_t i = 0; i < n; ++i) {
    auto k = sized<parley_kernel_info>();
    parley_runtime_kernel_info(rt, i, &k);
    std::string dt = parley_dtype_name(k.dtype);
    if (k.weight_dtype >= 0) dt += std::string(" x ") + parley_dtype_name(k.weight_dtype);
    std::printf("  %c %-17s %-6s %-11s prio %3d  %s/%s\n", k.selected ? '*' : ' ', k.op, k.device, dt.c_str(),
                k.priority, k.plugin, k.name);
  }
  parley_runtime_free(rt);
  return 0;
}

// --kv-cache f32|f16|bf16|int8 -> parley_model_options.kv_cache_dtype.
const std::map<std::string, int32_t> kKvCacheTypes = {
    {"f32", PARLEY_DTYPE_F32}, {"f16", PARLEY_DTYPE_F16}, {"bf16", PARLEY_DTYPE_BF16}, {"int8", PARLEY_DTYPE_I8}};

// --activations f32|f16|bf16 -> parley_model_options.activation_dtype.
const std::map<std::string, int32_t> kActivationTypes = {
    {"f32", PARLEY_DTYPE_F32}, {"f16", PARLEY_DTYPE_F16}, {"bf16", PARLEY_DTYPE_BF16}};

int cmd_inspect(const Common &c, const std::string &path, bool verify, const std::string &device, int32_t kv_cache,
                int32_t activations) {
  parley_runtime *rt = nullptr;
  parley_status st = make_runtime(c, &rt);
  if (st != PARLEY_OK) return report(st, "runtime");
  parley_model_options mo;
  parley_model_options_init(&mo);
  mo.verify_checksums = 0;  // verified per tensor and tokenizer below, so every verdict is shown
  mo.device = device.c_str();
  mo.kv_cache_dtype = kv_cache;
  mo.activation_dtype = activations;
  parley_model *m = nullptr;
  st = parley_model_load_file(rt, path.c_str(), &mo, &m);
  if (st != PARLEY_OK) {
    int rc = report(st, "load");
    parley_runtime_free(rt);
    return rc;
  }
  auto info = sized<parley_model_info>();
  parley_model_get_info(m, &info);
  // Everything the file supplies is escaped: a hostile file must not drive the terminal.
  auto safe = [](const char *s, size_t max = parley::kMaxQuotedBytes) { return parley::escape_untrusted(s, max); };
  std::printf("%s\n  format %u.%u, %s, architecture %s (%s)\n", safe(path.c_str(), 4096).c_str(), info.format_major,
              info.format_minor, human_bytes(info.file_size).c_str(), safe(info.architecture).c_str(),
              info.kind == PARLEY_MODEL_ENCODER_DECODER ? "encoder-decoder" : "decoder-only");
  std::printf("  %zu tensors, %s of weights; %zu tokenizer(s); chat template: %s\n", info.num_tensors,
              human_bytes(info.weights_size).c_str(), info.num_tokenizers, info.has_chat_template ? "yes" : "no");

  std::printf("Config:\n");
  parley_cli::for_each_config(m, [](const parley_cli::ConfigEntry &e) {
    if (e.is_float)
      std::printf("  %-36s %g\n", e.key, e.real);
    else if (e.enum_name)
      std::printf("  %-36s %s\n", e.key, e.enum_name);
    else
      std::printf("  %-36s %" PRId64 "\n", e.key, e.integer);
  });
  const char *kinds[] = {"sentencepiece", "byte-level-bpe"}, *roles[] = {"shared", "source", "target"};
  size_t bad_blobs = 0;
  for (size_t i = 0; i < info.num_tokenizers; ++i) {
    auto t = sized<parley_tokenizer_info>();
    parley_model_tokenizer_info(m, i, &t);
    // The same check the loader makes (ModelFile::verify_tokenizer).
    const char *verdict = "not checked";
    if (verify) {
      verdict = "checksum ok";
      if (parley_model_verify_tokenizer(m, i) != PARLEY_OK) {
        verdict = "CHECKSUM MISMATCH";
        ++bad_blobs;
        std::fprintf(stderr, "parley: %s\n", parley_last_error());
      }
    }
    std::printf("Tokenizer %zu: %s, %s, %s, %zu special token(s), %s\n", i, kinds[t.kind], roles[t.role],
                human_bytes(t.model_size).c_str(), t.num_special_tokens, verdict);
  }
  if (info.num_metadata) std::printf("Metadata:\n");
  for (size_t i = 0; i < info.num_metadata; ++i) {
    const char *k, *v;
    parley_model_metadata_at(m, i, &k, &v);
    std::printf("  %-20s %s\n", safe(k).c_str(), safe(v, 1024).c_str());
  }

  std::printf("Tensors:\n");
  size_t bad = 0;
  for (size_t i = 0; i < info.num_tensors; ++i) {
    auto t = sized<parley_tensor_info>();
    parley_model_tensor_info(m, i, &t);
    std::string shape = "[";
    for (size_t d = 0; d < t.rank; ++d) shape += (d ? ", " : "") + std::to_string(t.shape[d]);
    shape += "]";
    const char *verdict = "not checked";
    if (verify) {
      verdict = "checksum ok";
      if (parley_model_verify_tensor(m, t.name) != PARLEY_OK) {
        verdict = "CHECKSUM MISMATCH";
        ++bad;
        std::fprintf(stderr, "parley: %s\n", parley_last_error());
      }
    }
    // Quantized tensors: the scheme, then the tensor holding the scales.
    std::string quant;
    if (t.scale_tensor) {
      quant = t.quant == 2 ? "  group-wise g" + std::to_string(t.group_size)
                           : "  per-row (axis " + std::to_string(t.scale_axis) + ")";
      quant += ", scales: " + safe(t.scale_tensor);
    }
    std::printf("  %-48s %-5s %-18s %10s  %s%s\n", safe(t.name).c_str(), parley_dtype_name(t.dtype), shape.c_str(),
                human_bytes(t.length).c_str(), verdict, quant.c_str());
  }
  if (bad || bad_blobs)  // the loader refuses such a file (verify_checksums, the default)
    std::printf("Runnable: NO — %zu tensor(s) and %zu tokenizer blob(s) failed checksum verification\n", bad,
                bad_blobs);
  else if (parley_model_prepare(m) == PARLEY_OK) {
    std::printf("Runnable: yes (every tensor the config needs is present with its shape)\n");
    auto mem = sized<parley_model_memory>();
    if (parley_model_memory_usage(m, &mem) == PARLEY_OK)
      std::printf(
          "Memory: file %s (%s of it released to the OS: kernels' own copies replace it); kernels' packed weights "
          "%s; f32 conversions %s; %llu linear weights, %llu widened to f32; KV cache %llu bytes per token (%s); "
          "activations %s\n",
          human_bytes(mem.file_bytes).c_str(), human_bytes(mem.released_bytes).c_str(),
          human_bytes(mem.packed_bytes).c_str(), human_bytes(mem.converted_bytes).c_str(),
          static_cast<unsigned long long>(mem.linear_weights), static_cast<unsigned long long>(mem.widened_weights),
          static_cast<unsigned long long>(mem.kv_bytes_per_token), parley_cli::type_label(kv_cache),
          parley_cli::type_label(activations));
  } else
    std::printf("Runnable: NO — %s\n", parley_last_error());  // messages escape file content themselves
  {  // self-attention KV cache per cached token: layers x 2 x kv_heads x head_dim x element (+ I8 scales)
    int64_t layers = 0, kv_heads = 0, head_dim = 0;
    if (parley_model_config_int(m, "decoder.num_layers", &layers) == PARLEY_OK &&
        parley_model_config_int(m, "decoder.num_kv_heads", &kv_heads) == PARLEY_OK &&
        parley_model_config_int(m, "decoder.head_dim", &head_dim) == PARLEY_OK && layers > 0 && kv_heads > 0 &&
        head_dim > 0) {
      const uint64_t rows = static_cast<uint64_t>(layers) * 2 * static_cast<uint64_t>(kv_heads);
      const uint64_t f32 = rows * static_cast<uint64_t>(head_dim) * 4, f16 = f32 / 2, i8 = f32 / 4 + rows * 4;
      std::printf("KV cache per cached token (%" PRId64 " layers x 2 x %" PRId64 " kv heads x %" PRId64
                  " head dim): f32 %" PRIu64 " B, f16 / bf16 %" PRIu64 " B, int8 %" PRIu64
                  " B (scales included); selected: %s\n",
                  layers, kv_heads, head_dim, f32, f16, i8, parley_cli::type_label(kv_cache));
    }
  }
  // The text API builds the tokenizers at its first call: build them now, so
  // that a file whose tokens run but whose text would not says so here.
  if (info.num_tokenizers) {
    size_t count = 0;
    if (parley_tokenize(m, "", 0, nullptr, nullptr, 0, &count) == PARLEY_OK)
      std::printf("Text: yes (the tokenizers build)\n");
    else
      std::printf("Text: NO — %s\n", parley_last_error());
  } else {
    std::printf("Text: no tokenizer (token-level API only)\n");
  }
  std::printf("Kernel plan on device '%s':\n", info.device);
  size_t n = 0;
  parley_model_kernel_plan_count(m, &n);
  for (size_t i = 0; i < n; ++i) {
    auto k = sized<parley_kernel_info>();
    parley_model_kernel_plan_at(m, i, &k);
    if (k.tensor)  // one linear weight: which kernel runs it in which stored dtype
      std::printf("  %-17s %-5s x %-4s -> %s/%s  %s\n", k.op, parley_dtype_name(k.dtype),
                  parley_dtype_name(k.weight_dtype), k.plugin, k.name, safe(k.tensor).c_str());
    else if (*k.name)
      std::printf("  %-17s %-5s -> %s/%s (priority %d)\n", k.op, parley_dtype_name(k.dtype), k.plugin, k.name,
                  k.priority);
    else
      std::printf("  %-17s %-5s -> NO KERNEL\n", k.op, parley_dtype_name(k.dtype));
  }
  parley_model_free(m);
  parley_runtime_free(rt);
  if (bad || bad_blobs) {
    std::fprintf(stderr, "parley: %zu tensor(s) and %zu tokenizer blob(s) failed checksum verification\n", bad,
                 bad_blobs);
    return 1;
  }
  return 0;
}

// A whole number in [lo, hi] written in decimal digits alone: CLI11 reads
// "-1" into an unsigned option as 2^64 - 1 and wraps values past 2^64, which
// reached the library as "a count is absurdly large" without the option's name.
CLI::Validator unsigned_in(uint64_t lo, uint64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string &v) {
        errno = 0;
        char *end = nullptr;
        const bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
        const unsigned long long x = digits ? std::strtoull(v.c_str(), &end, 10) : 0;
        if (!digits || errno == ERANGE || x < lo || x > hi)
          return "must be a whole number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + v;
        return std::string();
      },
      "INTEGER in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

constexpr uint64_t kMaxCount = uint64_t{1} << 30;  // the C API's own bound on counts

}  // namespace

static int run(int argc, char **argv) {
  CLI::App app{"parley — Transformer inference runtime tools"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("parley ") + parley_version_string());
  Common common;
  auto add_common = [&](CLI::App *sub) {
    // Repeatable options take one value per use: CLI11 would let one use take
    // every word after it, the model path too ("model is required").
    sub->add_option("--plugin-dir", common.plugin_dirs, "Extra directory to search for plugins (repeatable)")
        ->allow_extra_args(false);
    sub->add_option("--load", common.load, "Load a plugin library explicitly (repeatable)")->allow_extra_args(false);
    sub->add_option("--threads", common.threads, "Kernel threads (0 = all CPUs)")->check(CLI::Range(0, 1024));
    sub->add_flag("-v,--verbose", common.verbose, "Debug logging");
    sub->add_flag("--json", common.json, "Machine-readable output on stdout (JSON; translate and chat: one line each)");
  };
  auto *plugins = app.add_subcommand("plugins", "List plugins, devices and kernels");
  add_common(plugins);
  std::string file, device = "cpu";
  bool no_verify = false;
  int32_t kv_cache = PARLEY_DTYPE_F32, activations = PARLEY_DTYPE_F32;
  auto kv_option = [&](CLI::App *sub, int32_t &target) {
    sub->add_option("--kv-cache", target,
                    "Element type of the decoder's KV cache: f32 (default), f16 or bf16 (half the memory per token) or "
                    "int8 (about 3.9x less); the device must support it")
        ->transform(CLI::CheckedTransformer(kKvCacheTypes));
  };
  // --activations f16 without --kv-cache means an F16 cache (F16 activations need F16 or int8).
  auto activations_option = [&](CLI::App *sub, int32_t &target) {
    sub->add_option("--activations", target,
                    "Element type of the activations between kernels: f32 (default), f16 or bf16 (a device with "
                    "16-bit kernels, e.g. a GPU's; the cpu plugin computes in f32); f16 / bf16 imply the same "
                    "--kv-cache unless given")
        ->transform(CLI::CheckedTransformer(kActivationTypes));
  };
  auto imply_16bit_cache = [](CLI::App *sub, int32_t activations_value, int32_t &kv) {
    if (activations_value != PARLEY_DTYPE_F32 && sub->count("--kv-cache") == 0) kv = activations_value;
  };
  auto *inspect = app.add_subcommand("inspect", "Describe a .parley model file and check it");
  inspect->add_option("file", file, "Model file")->required();
  inspect->add_flag("--no-verify", no_verify, "Skip tensor and tokenizer checksum verification");
  inspect->add_option("--device", device, "Device whose kernels to plan for");
  kv_option(inspect, kv_cache);
  activations_option(inspect, activations);
  add_common(inspect);

  parley_cli::TranslateArgs ta;
  auto *translate = app.add_subcommand(
      "translate",
      "Translate lines from stdin to stdout (batched). Output line N is input line N's translation (--nbest K: "
      "K lines each); an empty or untranslatable line gives empty output, a bad line is reported on stderr as "
      "'line N: reason', and the exit status is 1 when any line failed");
  translate->add_option("model", ta.model, "Translation model file")->required();
  translate->add_option("-s,--source-language", ta.source_language, "Source language code (multilingual models)");
  translate->add_option("-t,--target-language", ta.target_language, "Target language code (multilingual models)");
  translate->add_option("--beam", ta.beam, "Beam size (default: the model's)")->check(CLI::Range(1, 64));
  translate->add_option("--nbest", ta.nbest, "Hypotheses per line (printed as score<TAB>text)")
      ->check(CLI::Range(1, 64));
  translate->add_option("--batch", ta.batch, "Lines per batch")->check(CLI::Range(1, 4096));
  translate->add_option("--max-length", ta.max_length, "Most tokens per translation (0: the model's)")
      ->check(unsigned_in(0, kMaxCount));
  translate->add_option("--length-penalty", ta.length_penalty, "Beam length penalty (default: the model's)")
      ->check(CLI::Validator(
          [](std::string &v) {
            const double x = std::strtod(v.c_str(), nullptr);
            return x >= -100 && x <= 100 ? std::string() : "must be a number in [-100, 100], got " + v;
          },
          "NUMBER in [-100, 100]"));
  translate->add_flag("--scores", ta.scores, "Print score<TAB>text");
  translate->add_option("-i,--input", ta.input, "Read this file instead of stdin");
  translate
      ->add_option("--unit", ta.unit,
                   "What one input text is: line (default; output aligned line by line), paragraph (blocks "
                   "separated by blank lines) or document (the whole input); paragraphs and documents are "
                   "translated sentence by sentence and printed with their original whitespace and line breaks")
      ->check(CLI::IsMember({"line", "paragraph", "document"}));
  translate
      ->add_option("--long-text", ta.long_text,
                   "A text over the model's positions (or --max-source-tokens): split (default: into sentences, "
                   "translated as a batch and joined), sentences (always sentence by sentence) or error")
      ->check(CLI::IsMember({"split", "sentences", "error"}));
  translate->add_option("--max-source-tokens", ta.max_source_tokens, "Source limit in tokens (0: the model's)")
      ->check(unsigned_in(0, kMaxCount));
  translate
      ->add_option("--max-batch-tokens", ta.max_batch_tokens,
                   "Batches of at most this many padded source tokens (0: one batch per --batch texts)")
      ->check(unsigned_in(0, kMaxCount));
  translate->add_option("--protect", ta.protect,
                        "Keep these spans verbatim (comma-separated): numbers, emails, urls, placeholders, markup, "
                        "all");
  translate
      ->add_option("--protect-pattern", ta.protect_patterns,
                   "Keep what this PCRE2 pattern matches verbatim (repeatable)")
      ->allow_extra_args(false);
  translate->add_option("--keep", ta.glossary, "Do-not-translate term (repeatable)")->allow_extra_args(false);
  translate->add_option("--glossary", ta.glossary_file, "File of do-not-translate terms, one per line");
  translate->add_flag("--show-protected", ta.show_protected,
                      "Print each text's protected spans on stderr (source and target byte offsets, and how "
                      "each was placed)");
  kv_option(translate, ta.kv_cache);
  add_common(translate);

  parley_cli::ChatArgs ca;
  auto *chat = app.add_subcommand("chat", "Chat with a dialogue model (interactive, or lines piped on stdin)");
  chat->add_option("model", ca.model, "Dialogue model file")->required();
  chat->add_option("--system", ca.system, "System prompt");
  chat->add_option("--system-file", ca.system_file, "Read the system prompt from a file");
  chat->add_option("--max-tokens", ca.max_tokens, "Most tokens per reply")->check(unsigned_in(0, kMaxCount));
  chat->add_flag("--sample", ca.sample, "Sample instead of greedy decoding");
  // NaN compares false with everything: refused by name instead of silently meaning "the model's default".
  // The values are kept as floats: one that rounds to 0 there (below ~1e-38)
  // would silently mean "the model's default" too.
  const CLI::Validator finite_positive(
      [](std::string &v) {
        const double x = std::strtod(v.c_str(), nullptr);
        return x >= FLT_MIN && x <= 1e6 ? std::string() : "must be a number in [1.2e-38, 1e6], got " + v;
      },
      "NUMBER in [1.2e-38, 1e6]");
  const CLI::Validator unit_interval(
      [](std::string &v) {
        const double x = std::strtod(v.c_str(), nullptr);
        return x >= FLT_MIN && x <= 1 ? std::string() : "must be in (0, 1] (at least 1.2e-38), got " + v;
      },
      "NUMBER in (0, 1]");
  chat->add_option("--temperature", ca.temperature, "Sampling temperature")->check(finite_positive);
  chat->add_option("--top-p", ca.top_p, "Nucleus sampling threshold")->check(unit_interval);
  chat->add_option("--top-k", ca.top_k, "Top-k sampling")->check(unsigned_in(0, kMaxCount));
  chat->add_option("--seed", ca.seed, "Sampling seed")->check(unsigned_in(0, UINT64_MAX));
  chat->add_option("--stop", ca.stop, "Stop string (repeatable)")->allow_extra_args(false);
  chat->add_option("--context", ca.context,
                   "A conversation past the model's positions: error (default), or drop-oldest (the oldest turns "
                   "after the system prompt leave it)")
      ->check(CLI::IsMember({"error", "drop-oldest"}));
  auto *grammar_opt =
      chat->add_option("--grammar-file", ca.grammar_file, "Constrain replies to a GBNF grammar (read from a file)");
  chat->add_option("--json-schema-file", ca.json_schema_file, "Constrain replies to a JSON schema (read from a file)")
      ->excludes(grammar_opt);
  chat->add_flag("--stats", ca.show_stats, "Print the KV-cache counters after each reply (stderr)");
  kv_option(chat, ca.kv_cache);
  add_common(chat);

  parley_http::ServeArgs sa;
  uint64_t kv_budget_mib = 0;
  auto *serve = app.add_subcommand(
      "serve",
      "Serve models over HTTP: OpenAI-compatible /v1/chat/completions, /v1/completions and /v1/models, "
      "/v1/translations, /health and Prometheus /metrics (docs/serve.md). SIGINT/SIGTERM shut down gracefully");
  serve
      ->add_option("-m,--model", sa.models,
                   "NAME=PATH of a model to serve (repeatable; NAME defaults to the file name)")
      ->required();
  serve->add_option("--host", sa.host, "Address to listen on (default 127.0.0.1: this machine only)");
  serve->add_option("--port", sa.port, "TCP port (default 8080; 0: any free port, printed)")
      ->check(CLI::Range(0, 65535));
  serve->add_option("--device", sa.device, "Device that runs the models (default cpu)");
  kv_option(serve, sa.kv_cache);
  activations_option(serve, sa.activations);
  serve->add_option("--kv-budget-mib", kv_budget_mib, "KV cache per model in MiB (0: the runtime's default)");
  serve->add_option("--max-body-bytes", sa.max_body_bytes, "Largest request body (default 1 MiB; larger: 413)")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30));
  serve->add_option("--max-tokens", sa.max_tokens, "Most tokens one request may generate (default 1024; more: 400)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  serve->add_option("--max-concurrent", sa.max_concurrent, "Requests in flight before 503 (default 128)")
      ->check(CLI::Range(size_t{1}, size_t{4000}));
  serve->add_option("--http-threads", sa.http_threads, "Connection threads (default: --max-concurrent + 16)")
      ->check(CLI::Range(size_t{0}, size_t{8192}));
  serve
      ->add_option("--grace-seconds", sa.grace_seconds,
                   "At shutdown, how long in-flight requests may finish before they are cancelled (default 10)")
      ->check(CLI::Range(0.0, 3600.0));
  serve->add_option("--request-timeout-ms", sa.request_timeout_ms, "Deadline of each request (0: none)")
      ->check(CLI::Range(int64_t{0}, int64_t{86400000}));
  serve->add_flag("--log-requests", sa.log_requests, "Log each request on stderr");
  std::string serve_context = "error";
  serve
      ->add_option("--context", serve_context,
                   "A conversation past the model's positions: error (default, a 400), or drop-oldest (its oldest "
                   "turns after the system prompt are left out)")
      ->check(CLI::IsMember({"error", "drop-oldest"}));
  add_common(serve);
  parley_cli::ScoreArgs sc;
  auto *score = app.add_subcommand(
      "score",
      "Log-probability of given targets: lines \"source<TAB>target\" (translation; for dialogue models "
      "the source is an unscored prompt) or \"text\" (dialogue) -> \"sum<TAB>tokens\" (docs/scores.md)");
  score->add_option("model", sc.model, "Model file")->required();
  score->add_option("-s,--source-language", sc.source_language, "Source language code (multilingual models)");
  score->add_option("-t,--target-language", sc.target_language, "Target language code (multilingual models)");
  score->add_flag("--per-token", sc.per_token, "Also print each token's log-probability");
  score->add_option("-i,--input", sc.input, "Read this file instead of stdin");
  add_common(score);

  auto *convert =
      app.add_subcommand("convert", "Convert a Hugging Face model folder or a GGUF file (runs parley-convert)");
  convert->set_help_flag();  // --help goes to parley-convert
  convert->allow_extras();
  convert->prefix_command();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    // CLI11 reports a first word it does not know as "A subcommand is
    // required"; name the word and the commands instead.
    if (e.get_exit_code() != 0 && argc > 1 && app.get_subcommands().empty()) {
      std::string names;
      for (const CLI::App *sub : app.get_subcommands({})) names += (names.empty() ? "" : ", ") + sub->get_name();
      std::fprintf(stderr, "parley: unknown %s '%s' (commands: %s)\nRun with --help for more information.\n",
                   argv[1][0] == '-' ? "option" : "command", argv[1], names.c_str());
      return 2;
    }
    return app.exit(e) == 0 ? 0 : 2;  // --help / --version: 0; every usage error: 2 (not CLI11's 105-115)
  }
  ta.json = ca.json = sc.json = common.json;
  imply_16bit_cache(inspect, activations, kv_cache);
  imply_16bit_cache(serve, sa.activations, sa.kv_cache);
  if (common.json && (plugins->parsed() || inspect->parsed())) {
    parley_runtime *rt = nullptr;
    parley_status st = make_runtime(common, &rt);
    if (st != PARLEY_OK) return report(st, "runtime");
    int rc = plugins->parsed() ? parley_cli::plugins_json(rt)
                               : parley_cli::inspect_json(rt, file, !no_verify, device, kv_cache, activations);
    parley_runtime_free(rt);
    return rc;
  }
  if (plugins->parsed()) return cmd_plugins(common);
  if (convert->parsed()) return parley_cli::convert(convert->remaining());
  if (serve->parsed()) {
    parley_http::block_shutdown_signals();  // before the runtime starts threads: serve() takes them with sigwait
    sa.kv_budget_bytes = kv_budget_mib << 20;
    sa.drop_oldest = serve_context == "drop-oldest";
    parley_runtime *rt = nullptr;
    parley_status st = make_runtime(common, &rt);
    if (st != PARLEY_OK) return report(st, "creating the runtime");
    int rc = parley_http::serve(rt, sa);
    parley_runtime_free(rt);
    return rc;
  }
  if (translate->parsed() || chat->parsed() || score->parsed()) {
    parley_runtime *rt = nullptr;
    parley_status st = make_runtime(common, &rt);
    if (st != PARLEY_OK) return report(st, "creating the runtime");
    int rc = translate->parsed() ? parley_cli::translate(rt, ta)
             : score->parsed()   ? parley_cli::score(rt, sc)
                                 : parley_cli::chat(rt, ca);
    parley_runtime_free(rt);
    return rc;
  }
  return cmd_inspect(common, file, !no_verify, device, kv_cache, activations);
}

// Output that could not be written (a full disk, a closed pipe or /dev/full)
// is an error, not an exit status of 0 over lost results.
int main(int argc, char **argv) {
  int rc = run(argc, argv);
  errno = 0;
  std::cout.flush();
  const bool failed = std::fflush(stdout) != 0 || std::ferror(stdout) || !std::cout;
  if (failed) {
    std::fprintf(
        stderr, "parley: writing the output failed: %s\n",
        errno ? std::strerror(errno) : "the output stream reported an error (a full disk or a closed output?)");
    if (rc == 0) rc = 1;
  }
  return rc;
}
