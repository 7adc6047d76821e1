// parley_bench: times one workload on a .parley model and prints one JSON
// object on stdout. Driven by tests/bench/bench_vs_ctranslate2.py; not a test,
// never fails on timing.
//
//   parley_bench SPEC.json
//
// SPEC (JSON):
//   model        path of the .parley file
//   plugin_dir   directory holding the plugins (default: the build tree's
//                lib/parley/plugins, compiled in)
//   threads      runtime num_threads (0 = all CPUs)
//   device       device that runs the model (default "cpu"; tests/gpu/run.sh uses "cuda")
//   kv_cache     self-attention KV cache type: "f32" (default), "f16", "int8"
//   repeats      timed repeats after one warm-up run (medians are reported)
//   workload     "translate" or "llm"
//   translate:   sources [[ids...], ...], decoder_start_token_id, eos_token_id,
//                beam (default 4), max_new_tokens
//   llm:         prompt [ids...], eos_token_id, decode_tokens, generate_warmup
//                (default true: one untimed generate before the timed ones;
//                the prefill warm-up has touched every weight already),
//                prefill_repeats (default repeats; 0: the prefill samples are
//                the prefill phases of the timed generate runs)
//
// Random-weight models generate arbitrary tokens, so every run forces a fixed
// number of decoding steps (min_new_tokens = max_new_tokens: EOS suppressed
// until the limit), making tokens/s comparable with the anchor.
//
// Output: load_s (runtime create + model load + Transformer construction),
// per-phase medians and all samples, tokens counted, peak RSS (VmHWM, and
// ru_maxrss).
#include <parley/parley.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/runtime.hpp"
#include "engine/decoding.hpp"
#include "engine/transformer_step_model.hpp"
#include "model/transformer.hpp"

#ifndef PARLEY_BENCH_PLUGIN_DIR
#define PARLEY_BENCH_PLUGIN_DIR ""
#endif

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// ru_maxrss (KiB on Linux). Caveat: Linux carries the pre-exec address
// space's high-water mark into ru_maxrss, so a process forked from a big
// parent (the Python driver) reports at least the parent's RSS.
double ru_maxrss_mib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

// VmHWM from /proc/self/status: this address space's peak RSS, reset at
// exec (what the table reports); falls back to ru_maxrss.
double peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return ru_maxrss_mib();
}

struct Loaded {
  parley_runtime *rt = nullptr;
  parley_model *model = nullptr;
  std::unique_ptr<parley::Transformer> transformer;
  ~Loaded() {
    transformer.reset();
    parley_model_free(model);
    parley_runtime_free(rt);
  }
};

void load(Loaded &l, const std::string &path, const std::string &plugin_dir, int threads, const std::string &device,
          parley_dtype kv_dtype) {
  const char *dirs[] = {plugin_dir.c_str()};
  parley_runtime_options o;
  parley_runtime_options_init(&o);
  o.num_threads = threads;
  o.plugin_sources = PARLEY_PLUGINS_NONE;
  o.plugin_dirs = dirs;
  o.num_plugin_dirs = 1;
  if (parley_runtime_create(&o, &l.rt) != PARLEY_OK) throw std::runtime_error(parley_last_error());
  if (parley_model_load_file(l.rt, path.c_str(), nullptr, &l.model) != PARLEY_OK)
    throw std::runtime_error(parley_last_error());
  l.transformer = std::make_unique<parley::Transformer>(l.model->impl.runtime, *l.model->impl.file, device, kv_dtype);
}

// Beam search over a batch of sources, as translate would run it: encode,
// feed the decoder start token, decode. Returns generated target tokens
// (best hypothesis per item).
int64_t translate_once(const parley::Transformer &t, const std::vector<std::vector<int32_t>> &sources, int32_t start,
                       const parley::DecodingOptions &o) {
  const int64_t B = static_cast<int64_t>(sources.size());
  auto st = t.start(B, 1 + o.max_new_tokens, sources);
  auto last = t.step(st, std::vector<int32_t>(static_cast<size_t>(B), start), 1, true);
  parley::TransformerStepModel model(t, std::move(st));
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(B), {start});
  auto hyps = parley::decode(model, last, prompts, o);
  int64_t n = 0;
  for (const auto &h : hyps) n += static_cast<int64_t>(h.at(0).tokens.size());
  return n;
}

json run_translate(const parley::Transformer &t, const json &spec, int repeats) {
  std::vector<std::vector<int32_t>> sources = spec.at("sources").get<std::vector<std::vector<int32_t>>>();
  int32_t start = spec.at("decoder_start_token_id").get<int32_t>();
  parley::DecodingOptions o;
  o.num_beams = spec.value("beam", 4);
  o.max_new_tokens = spec.at("max_new_tokens").get<int64_t>();
  o.min_new_tokens = o.max_new_tokens;
  o.eos_token_ids = {spec.at("eos_token_id").get<int32_t>()};
  o.early_stopping = parley::EarlyStopping::kFalse;
  o.length_penalty = 1.0;

  auto w0 = Clock::now();
  translate_once(t, sources, start, o);  // warm-up (first touch of mmapped weights)
  double warmup = seconds_since(w0);
  std::vector<double> times;
  int64_t tokens = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = Clock::now();
    tokens = translate_once(t, sources, start, o);
    times.push_back(seconds_since(t0));
  }
  double med = median(times);
  return {{"batch", sources.size()},
          {"beam", o.num_beams},
          {"max_new_tokens", o.max_new_tokens},
          {"target_tokens", tokens},
          {"warmup_s", warmup},
          {"seconds", times},
          {"median_s", med},
          {"target_tokens_per_s", static_cast<double>(tokens) / med}};
}

// Prefill alone: the prompt in one step, logits of the last position only.
double prefill_once(const parley::Transformer &t, const std::vector<int32_t> &prompt) {
  const int64_t P = static_cast<int64_t>(prompt.size());
  auto st = t.start(1, P);
  auto t0 = Clock::now();
  auto last = t.step(st, prompt, P, true);
  double s = seconds_since(t0);
  if (last.empty()) throw std::runtime_error("no logits");
  return s;
}

// Prefill + greedy decode of exactly D tokens (the first comes from the
// prefill logits, then D - 1 decoder steps). Returns {total seconds,
// decode-only seconds (after prefill), tokens}.
struct GenTiming {
  double total, decode;
  int64_t tokens;
};
GenTiming generate_once(const parley::Transformer &t, const std::vector<int32_t> &prompt,
                        const parley::DecodingOptions &o) {
  const int64_t P = static_cast<int64_t>(prompt.size());
  auto t0 = Clock::now();
  auto st = t.start(1, P + o.max_new_tokens);
  auto last = t.step(st, prompt, P, true);
  auto t1 = Clock::now();
  parley::TransformerStepModel model(t, std::move(st));
  auto hyps = parley::decode(model, last, {prompt}, o);
  auto t2 = Clock::now();
  return {std::chrono::duration<double>(t2 - t0).count(), std::chrono::duration<double>(t2 - t1).count(),
          static_cast<int64_t>(hyps.at(0).at(0).tokens.size())};
}

json run_llm(const parley::Transformer &t, const json &spec, int repeats) {
  std::vector<int32_t> prompt = spec.at("prompt").get<std::vector<int32_t>>();
  parley::DecodingOptions o;
  o.max_new_tokens = spec.at("decode_tokens").get<int64_t>();
  o.min_new_tokens = o.max_new_tokens;
  o.eos_token_ids = {spec.at("eos_token_id").get<int32_t>()};

  auto w0 = Clock::now();
  prefill_once(t, prompt);  // warm-up (first touch of mmapped weights)
  double warmup = seconds_since(w0);
  std::vector<double> prefill;
  const int prefill_repeats = spec.value("prefill_repeats", repeats);
  for (int r = 0; r < prefill_repeats; ++r) prefill.push_back(prefill_once(t, prompt));

  if (spec.value("generate_warmup", true)) generate_once(t, prompt, o);  // warm-up
  std::vector<double> total, decode;
  int64_t tokens = 0;
  for (int r = 0; r < repeats; ++r) {
    auto g = generate_once(t, prompt, o);
    total.push_back(g.total);
    decode.push_back(g.decode);
    tokens = g.tokens;
  }
  double P = static_cast<double>(prompt.size());
  double mt = median(total), md = median(decode);
  // With prefill_repeats 0 the prefill samples are the generate runs' own
  // prefill phases (start + prompt step).
  if (prefill.empty())
    for (size_t i = 0; i < total.size(); ++i) prefill.push_back(total[i] - decode[i]);
  double mp = median(prefill);
  return {{"warmup_s", warmup},
          {"prompt_tokens", prompt.size()},
          {"prefill_seconds", prefill},
          {"prefill_median_s", mp},
          {"prefill_tokens_per_s", P / mp},
          {"generated_tokens", tokens},
          {"generate_seconds", total},
          {"generate_median_s", mt},
          {"decode_seconds", decode},
          {"decode_median_s", md},
          // D tokens after the prompt = prefill + (D - 1) decoder steps; the
          // anchor is measured the same way (generate(D) - prefill).
          {"decode_tokens_per_s", static_cast<double>(tokens - 1) / md},
          {"decode_tokens_per_s_from_total", static_cast<double>(tokens - 1) / (mt - mp)}};
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SPEC.json\n", argv[0]);
    return 2;
  }
  try {
    std::ifstream f(argv[1]);
    if (!f) throw std::runtime_error(std::string("cannot open ") + argv[1]);
    json spec = json::parse(f);
    std::string plugin_dir = spec.value("plugin_dir", std::string(PARLEY_BENCH_PLUGIN_DIR));
    int threads = spec.value("threads", 0);
    int repeats = std::max(1, spec.value("repeats", 3));
    std::string workload = spec.at("workload").get<std::string>();

    double rss_before = peak_rss_mib();
    auto t0 = Clock::now();
    Loaded l;
    const std::string kv = spec.value("kv_cache", std::string("f32"));
    const parley_dtype kv_dtype = kv == "f32"   ? PARLEY_DTYPE_F32
                                  : kv == "f16" ? PARLEY_DTYPE_F16
                                  : kv == "int8"
                                      ? PARLEY_DTYPE_I8
                                      : throw std::runtime_error("kv_cache must be f32, f16 or int8, not " + kv);
    load(l, spec.at("model").get<std::string>(), plugin_dir, threads, spec.value("device", std::string("cpu")),
         kv_dtype);
    double load_s = seconds_since(t0);
    double rss_after_load = peak_rss_mib();

    json result;
    if (workload == "translate") {
      if (!l.transformer->encoder_decoder()) throw std::runtime_error("translate needs an encoder-decoder model");
      result = run_translate(*l.transformer, spec, repeats);
    } else if (workload == "llm") {
      if (l.transformer->encoder_decoder()) throw std::runtime_error("llm needs a decoder-only model");
      result = run_llm(*l.transformer, spec, repeats);
    } else {
      throw std::runtime_error("unknown workload " + workload);
    }
    json out = {{"engine", "parley"},
                {"workload", workload},
                {"threads", threads},
                {"repeats", repeats},
                {"load_s", load_s},
                {"peak_rss_mib_before_load", rss_before},
                {"peak_rss_mib_after_load", rss_after_load},
                {"peak_rss_mib", peak_rss_mib()},
                {"ru_maxrss_mib", ru_maxrss_mib()},
                {"result", result}};
    std::cout << out.dump() << std::endl;
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "parley_bench: %s\n", e.what());
    return 1;
  }
}
