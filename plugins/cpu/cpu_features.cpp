#include "cpu_features.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "linear_kernels.h"

namespace parley::cpu {

namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  f.avx512_vnni = f.avx512 && __builtin_cpu_supports("avx512vnni");
  f.avx512_bf16 = f.avx512 && __builtin_cpu_supports("avx512bf16");
  f.avx_vnni = f.avx2 && __builtin_cpu_supports("avxvnni");
#endif
  return f;
}

// Packed state: bits 0-1 the cap, bit 2 "int8-activation kernels allowed"
// (VNNI or AVX2), bit 3 "bf16 allowed";
// -1 until the environment has been read.
std::atomic<int> g_cap{-1};
std::atomic<int> g_logged{-1};

int encode(Isa cap, bool vnni, bool bf16) {
  return int(cap) | (vnni ? 4 : 0) | (bf16 ? 8 : 0);
}

int state() {
  int s = g_cap.load(std::memory_order_acquire);
  if (s >= 0) return s;
  const Isa cap = isa_cap_from_environment();
  const bool exact = exact_from_environment();
  int expected = -1;
  g_cap.compare_exchange_strong(expected, encode(cap, !exact, !exact));
  return g_cap.load(std::memory_order_acquire);
}

}  // namespace

Isa isa_cap_from_environment() {
  Isa cap = Isa::kAvx512;
  if (const char *env = std::getenv("PARLEY_CPU_ISA"); env && *env) {
    if (!parse_isa(env, &cap)) {
      std::fprintf(
          stderr, "parley cpu plugin: PARLEY_CPU_ISA='%s' is not avx2, avx512, native or generic; using native\n", env);
      cap = Isa::kAvx512;
    }
  }
  return cap;
}

bool exact_from_environment() {
  const char *env = std::getenv("PARLEY_CPU_EXACT");
  if (!env || !*env || std::strcmp(env, "0") == 0) return false;
  if (std::strcmp(env, "1") != 0)
    std::fprintf(stderr, "parley cpu plugin: PARLEY_CPU_EXACT='%s' is not 0 or 1; taking it as 1\n", env);
  return true;
}

const CpuFeatures &cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

Isa native_isa() {
  const CpuFeatures &f = cpu_features();
  return f.avx512 ? Isa::kAvx512 : f.avx2 ? Isa::kAvx2 : Isa::kGeneric;
}

bool parse_isa(const char *text, Isa *out) {
  if (!text) return false;
  if (std::strcmp(text, "avx2") == 0) {
    *out = Isa::kAvx2;
  } else if (std::strcmp(text, "avx512") == 0 || std::strcmp(text, "native") == 0) {
    *out = Isa::kAvx512;
  } else if (std::strcmp(text, "generic") == 0) {
    *out = Isa::kGeneric;
  } else {
    return false;
  }
  return true;
}

const char *isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "generic";
  }
}

Isa active_isa() {
  const Isa cap = Isa(state() & 3);
  const Isa native = native_isa();
  return int(cap) < int(native) ? cap : native;
}

bool use_avx512_vnni() {
  return active_isa() == Isa::kAvx512 && cpu_features().avx512_vnni && (state() & 4);
}

bool use_avx2_int8() {
  return active_isa() >= Isa::kAvx2 && (state() & 4) && !use_avx512_vnni();
}

bool use_avx512_bf16() {
  return active_isa() == Isa::kAvx512 && cpu_features().avx512_bf16 && (state() & 8);
}

void set_isa_cap(Isa cap, bool int8, bool bf16) {
  g_cap.store(encode(cap, int8, bf16), std::memory_order_release);
}

int isa_cap_state() {
  return state();
}

void restore_isa_cap_state(int saved) {
  g_cap.store(saved, std::memory_order_release);
}

namespace {
std::atomic<int64_t> g_avx2_int8_max_m{-1};  // < 0: the defaults
std::atomic<int64_t> g_onednn_i8_min_m{-1};
std::atomic<int64_t> g_vnni_packed_min_m{-1};
}  // namespace

int64_t avx2_int8_max_m(bool grouped) {
  const int64_t m = g_avx2_int8_max_m.load(std::memory_order_relaxed);
  return m >= 0 ? m : grouped ? kAvx2IntMaxMGrouped : kAvx2IntMaxMPerRow;
}

void set_avx2_int8_max_m(int64_t m) {
  g_avx2_int8_max_m.store(m, std::memory_order_relaxed);
}

int64_t onednn_i8_min_m() {
  const int64_t m = g_onednn_i8_min_m.load(std::memory_order_relaxed);
  return m >= 0 ? m : kOnednnI8MinM;
}

void set_onednn_i8_min_m(int64_t m) {
  g_onednn_i8_min_m.store(m, std::memory_order_relaxed);
}

namespace {
std::atomic<bool> g_i8_panels{true};
}  // namespace

bool i8_panels_enabled() {
  return g_i8_panels.load(std::memory_order_relaxed);
}

void set_i8_panels(bool on) {
  g_i8_panels.store(on, std::memory_order_relaxed);
}

int64_t vnni_packed_min_m() {
  const int64_t m = g_vnni_packed_min_m.load(std::memory_order_relaxed);
  return m >= 0 ? m : kVnniPackedMinM;
}

void set_vnni_packed_min_m(int64_t m) {
  g_vnni_packed_min_m.store(m, std::memory_order_relaxed);
}

std::string isa_description() {
  const CpuFeatures &f = cpu_features();
  std::string s = std::string("cpu linear kernels: ") + isa_name(active_isa());
  if (use_avx512_vnni()) s += " + avx512-vnni";
  if (use_avx2_int8()) s += " + avx2-int8";
  if (use_avx512_bf16()) s += " + avx512-bf16";
  s += " (cpu has:";
  if (f.avx2) s += " avx2+fma+f16c";
  if (f.avx512) s += " avx512f/bw/vl/dq";
  if (f.avx512_vnni) s += " avx512-vnni";
  if (f.avx512_bf16) s += " avx512-bf16";
  if (f.avx_vnni) s += " avx-vnni";
  if (!f.avx2) s += " none of avx2/avx512";
  s += "; PARLEY_CPU_ISA caps the level, PARLEY_CPU_EXACT=1 keeps activations in float32)";
  return s;
}

void log_isa_once(const parley_host_services *host) {
  const int s = state() | (int(active_isa()) << 4);
  if (g_logged.exchange(s) == s) return;
  if (host && host->log) host->log(host->host, PARLEY_LOG_INFO, isa_description().c_str());
}

}  // namespace parley::cpu
