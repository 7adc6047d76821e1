// What the CPU offers the LINEAR kernels, read once with cpuid
// (__builtin_cpu_supports, which also checks that the OS saves the AVX-512
// state), and which instruction-set level the plugin uses.
//
// Levels: GENERIC (the portable tile + oneDNN path only), AVX2 (AVX2 + FMA +
// F16C), AVX512 (F, BW, VL, DQ; with VNNI and BF16 as optional extras). The
// environment variable PARLEY_CPU_ISA=avx2|avx512|native (read once, at the
// first use) caps the level so that every compiled path can be tested on a
// machine that has the highest one; a level the CPU lacks is never chosen.
// PARLEY_CPU_EXACT=1 turns off the kernels that round activations (int8
// activations on VNNI or AVX2, bf16 activations), leaving float32 arithmetic
// on the weights' exact values.
#ifndef PARLEY_PLUGINS_CPU_CPU_FEATURES_H
#define PARLEY_PLUGINS_CPU_CPU_FEATURES_H

#include <parley/plugin.h>

#include <string>

namespace parley::cpu {

enum class Isa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

struct CpuFeatures {
  bool avx2 = false;    // AVX2 + FMA + F16C
  bool avx512 = false;  // AVX-512 F + BW + VL + DQ
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool avx_vnni = false;  // the VEX-encoded VNNI of AVX2-only cores (detected, not used yet)
};

// The CPU's features (cached).
const CpuFeatures &cpu_features();
// The highest level the CPU supports.
Isa native_isa();

// The cap PARLEY_CPU_ISA asks for (kAvx512, i.e. no cap, when it is unset or
// not a level; the latter is reported on stderr). Read once by active_isa().
Isa isa_cap_from_environment();

// Whether PARLEY_CPU_EXACT asks for float32 activations only (1; 0 or unset:
// no; anything else is reported on stderr and taken as 1).
bool exact_from_environment();

// Parses "avx2", "avx512", "native" or "generic"; false for anything else.
bool parse_isa(const char *text, Isa *out);
const char *isa_name(Isa isa);

// The level the kernels use now: min(native, cap), where the cap comes from
// PARLEY_CPU_ISA (or set_isa_cap). Thread-safe.
Isa active_isa();
// Whether the int8 VNNI / BF16 dot-product kernels may run now.
bool use_avx512_vnni();
bool use_avx512_bf16();
// Whether the AVX2 int8-activation kernel may run now (AVX2 level or above,
// int8 activations allowed, and no VNNI to do it better).
bool use_avx2_int8();
// Overrides the cap (tests). `int8` / `bf16` false also turn those kernels off.
void set_isa_cap(Isa cap, bool int8 = true, bool bf16 = true);
// The whole cap (level, int8, bf16) as an opaque value, and putting one back:
// a test that changes the cap restores what it found (PARLEY_CPU_ISA /
// PARLEY_CPU_EXACT included).
int isa_cap_state();
void restore_isa_cap_state(int state);
// The most activation rows the AVX2 int8 kernel takes for per-row or
// group-wise weights (kAvx2IntMaxMPerRow / kAvx2IntMaxMGrouped, unless
// set_avx2_int8_max_m set one limit for both: bench_linear measures the
// crossover with it; a negative m restores the defaults). Thread-safe.
int64_t avx2_int8_max_m(bool grouped);
void set_avx2_int8_max_m(int64_t m);
// The fewest activation rows for which I8 per-row weights on VNNI take
// oneDNN's int8 GEMM instead of the dot-product micro-kernel (kOnednnI8MinM
// unless set; negative restores it). For bench_linear and the tests that
// compare the two. Thread-safe.
int64_t onednn_i8_min_m();
void set_onednn_i8_min_m(int64_t m);
// The same for group-wise I8 / I4 weights and the packed-block VNNI kernel
// (kVnniPackedMinM).
int64_t vnni_packed_min_m();
void set_vnni_packed_min_m(int64_t m);

// Whether prepare_weight lays I8 per-row weights out in VNNI panels when
// AVX512-VNNI is in use (default true; false keeps the file's layout and the
// older micro-kernel + oneDNN paths, which the tests compare with the
// panels). Read at prepare time. Thread-safe.
bool i8_panels_enabled();
void set_i8_panels(bool on);

// A line describing the active level (and what the CPU has), e.g. for the log.
std::string isa_description();

// Logs isa_description() at INFO through host->log the first time a level is
// used, and again whenever the level changes (set_isa_cap). Thread-safe.
void log_isa_once(const parley_host_services *host);

}  // namespace parley::cpu

#endif
