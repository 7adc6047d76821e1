// ATTENTION micro-benchmark of the cpu plugin in the serving engine's decode
// shape: one query row per sequence (q_len 1), a paged KV cache of 16-row
// blocks (the engine's default) scattered over a pool, causal + key-padding
// masks, for the grouped-query head layouts of SmolLM2-135M (9 query heads
// per 3 kv heads), Qwen2.5-0.5B (14 / 2) and Llama-3-8B (32 / 8), F32, F16
// and I8 caches, batch 1 and 32, at 1 and 2 threads.
//
// Printed: microseconds per call (median) and GB/s of cache bytes (K, V and
// I8 scales of the visible keys, each counted once) per call: what decode of
// many conversations at once is bound by; and the calling thread's CPU time
// per call (at 1 thread the call's work, a fairer figure than wall time on a
// host that lends the process part of a core). Not a test; never fails on
// timing. The machine is shared: trust ratios most.
//
// --shared N: the first N keys (whole blocks) of every sequence are the same
// pool blocks, as a system prompt in the engine's prefix cache is; the GB/s
// column still counts them once per sequence (the bytes a call without
// sharing would read).
//
// --q-len N: N query rows per sequence (a prefill chunk: the last N of its
// keys are its own, causal), instead of one.
//
// Usage: bench_attention [--quick] [--threads 1,2] [--context 400] [--shared 0] [--q-len 1]
//                        [--batches 1,32] [--model SUBSTRING] [--kv f32|f16|i8] [--reps N]
// (--model, --kv, --batches and --reps narrow a run down for a profiler.)
#include <parley/plugin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "bench_pool.h"

extern "C" const parley_plugin_desc *parley_cpu_plugin_entry(uint32_t host_abi_version,
                                                             const parley_host_services *host);

namespace {

using parley::bench::median;
using parley::bench::Pool;
using Clock = std::chrono::steady_clock;

struct Shape {
  const char *model;
  int64_t heads, kv_heads, head_dim;
};

parley_kernel_fn attention_kernel() {
  const parley_plugin_desc *d = parley_cpu_plugin_entry(PARLEY_PLUGIN_ABI_VERSION, nullptr);
  for (uint32_t i = 0; d && i < d->num_kernels; ++i)
    if (d->kernels[i].op == PARLEY_OP_ATTENTION) return d->kernels[i].run;
  return nullptr;
}

const char *dtype_name(int32_t dt) {
  return dt == PARLEY_DTYPE_F16 ? "f16" : dt == PARLEY_DTYPE_I8 ? "i8" : "f32";
}

// Median microseconds per call and the cache bytes one call reads.
struct Timing {
  double us, cpu_us, bytes;
};

// The calling thread's CPU time: at 1 thread, the work of a call even when
// a busy host gives the process a fraction of a core.
double thread_cpu_us() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

Timing time_decode(Pool &pool, parley_kernel_fn fn, const Shape &s, int64_t batch, int64_t context, int64_t shared,
                   int64_t q_len, int32_t dtype, int reps) {
  constexpr int64_t kBlock = 16;
  const int64_t D = s.head_dim, kvd = s.kv_heads * D;
  const int64_t per_seq = (context + kBlock - 1) / kBlock, blocks = batch * per_seq;
  const size_t es = dtype == PARLEY_DTYPE_F16 ? 2 : dtype == PARLEY_DTYPE_I8 ? 1 : 4;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> byte(0, 255);
  // Random bytes: a finite f16 needs exponent < 31, so clear its top bit.
  std::vector<unsigned char> k(static_cast<size_t>(blocks * kBlock * kvd) * es), v(k.size());
  for (auto *buf : {&k, &v})
    for (size_t i = 0; i < buf->size(); ++i)
      (*buf)[i] = static_cast<unsigned char>(dtype == PARLEY_DTYPE_F16 && i % 2 ? byte(rng) & 0x3b : byte(rng));
  if (dtype == PARLEY_DTYPE_F32)  // finite floats in [-1, 1)
    for (auto *buf : {&k, &v}) {
      float *f = reinterpret_cast<float *>(buf->data());
      for (size_t i = 0; i < buf->size() / 4; ++i) f[i] = static_cast<float>(byte(rng)) / 128.f - 1.f;
    }
  std::vector<float> ks(static_cast<size_t>(blocks * kBlock * s.kv_heads), 0.01f), vs(ks);
  std::vector<float> q(static_cast<size_t>(batch * q_len * s.heads * D), 0.1f), out(q.size());
  std::vector<int32_t> lengths(static_cast<size_t>(batch), static_cast<int32_t>(context));
  // Blocks scattered over the pool, as after many sequences came and went.
  std::vector<int32_t> table(static_cast<size_t>(blocks));
  for (int64_t i = 0; i < blocks; ++i) table[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  std::shuffle(table.begin(), table.end(), rng);
  // A shared prefix (a system prompt in the prefix cache): every sequence's
  // first full blocks are sequence 0's.
  for (int64_t b = 1; b < batch; ++b)
    for (int64_t i = 0; i < std::min(shared, context) / kBlock; ++i)
      table[static_cast<size_t>(b * per_seq + i)] = table[static_cast<size_t>(i)];

  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = batch;
  a.num_heads = s.heads;
  a.num_kv_heads = s.kv_heads;
  a.q_len = q_len;
  a.kv_len = context;
  a.head_dim = D;
  a.q = q.data();
  a.q_stride_batch = q_len * s.heads * D, a.q_stride_head = D, a.q_stride_seq = s.heads * D;
  a.k = k.data(), a.v = v.data();
  a.k_stride_batch = a.v_stride_batch = kBlock * kvd;  // between blocks
  a.k_stride_head = a.v_stride_head = D;
  a.k_stride_seq = a.v_stride_seq = kvd;
  a.out = out.data();
  a.out_stride_batch = q_len * s.heads * D, a.out_stride_head = D, a.out_stride_seq = s.heads * D;
  a.scale = 1.f / std::sqrt(static_cast<float>(D));
  a.mask = PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING;
  a.key_lengths = lengths.data();
  a.kv_dtype = dtype;
  if (dtype == PARLEY_DTYPE_I8) {
    a.k_scales = ks.data(), a.v_scales = vs.data();
    a.scale_stride_batch = kBlock * s.kv_heads, a.scale_stride_head = 1, a.scale_stride_seq = s.kv_heads;
  }
  a.block_table = table.data();
  a.block_table_stride = per_seq;
  a.block_size = kBlock;

  std::vector<double> us, cpu;
  for (int r = 0; r < reps + 2; ++r) {
    const auto t0 = Clock::now();
    const double c0 = thread_cpu_us();
    if (fn(pool.context(), &a) != PARLEY_KERNEL_OK) {
      std::fprintf(stderr, "attention failed\n");
      std::exit(1);
    }
    const double dt = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (r >= 2) us.push_back(dt), cpu.push_back(thread_cpu_us() - c0);  // two warm-up calls
  }
  const double row = static_cast<double>(D * es + (dtype == PARLEY_DTYPE_I8 ? 4 : 0));
  return {median(us), median(cpu), 2.0 * static_cast<double>(batch * context * s.kv_heads) * row};
}

std::vector<int> parse_list(const char *s) {
  std::vector<int> v;
  for (const char *p = s; *p;) {
    v.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return v;
}

}  // namespace

int main(int argc, char **argv) {
  bool quick = false;
  std::vector<int> threads = {1, 2};
  int64_t context = 400, shared = 0, q_len = 1;
  std::vector<int> batches = {1, 32};
  std::string model_filter, kv_filter;
  int reps_arg = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
    } else if (arg == "--threads" && i + 1 < argc) {
      threads = parse_list(argv[++i]);
    } else if (arg == "--context" && i + 1 < argc) {
      context = std::atoll(argv[++i]);
    } else if (arg == "--q-len" && i + 1 < argc) {
      q_len = std::max<long long>(1, std::atoll(argv[++i]));
    } else if (arg == "--shared" && i + 1 < argc) {
      shared = std::atoll(argv[++i]);
    } else if (arg == "--batches" && i + 1 < argc) {
      batches = parse_list(argv[++i]);
    } else if (arg == "--model" && i + 1 < argc) {
      model_filter = argv[++i];
    } else if (arg == "--kv" && i + 1 < argc) {
      kv_filter = argv[++i];
    } else if (arg == "--reps" && i + 1 < argc) {
      reps_arg = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: bench_attention [--quick] [--threads 1,2] [--context N] [--shared N] [--q-len N] "
                   "[--batches 1,32] [--model S] [--kv f32|f16|i8] [--reps N]\n");
      return 2;
    }
  }
  const parley_kernel_fn fn = attention_kernel();
  if (!fn || context < 1) {
    std::fprintf(stderr, fn ? "--context must be >= 1\n" : "the cpu plugin has no attention kernel\n");
    return 1;
  }
  const Shape shapes[] = {{"SmolLM2-135M", 9, 3, 64}, {"Qwen2.5-0.5B", 14, 2, 64}, {"Llama-3-8B", 32, 8, 128}};
  const int reps = reps_arg > 0 ? reps_arg : quick ? 5 : 21;
  std::printf(
      "decode attention, paged KV (16-row blocks), %lld keys per sequence (the first %lld in blocks shared by all "
      "sequences), median of %d calls\n\n",
      static_cast<long long>(context), static_cast<long long>(std::min(shared, context) / 16 * 16), reps);
  std::printf(
      "| model | heads/kv | KV | batch | threads | us/call | cache GB/s | caller's CPU us/call "
      "|\n|---|---|---|---|---|---|---|---|\n");
  for (const Shape &s : shapes)
    for (int32_t dt : {PARLEY_DTYPE_F32, PARLEY_DTYPE_F16, PARLEY_DTYPE_I8})
      for (int64_t batch : batches)
        for (int t : threads) {
          if (!model_filter.empty() && std::string(s.model).find(model_filter) == std::string::npos) continue;
          if (!kv_filter.empty() && kv_filter != dtype_name(dt)) continue;
          Pool pool(t);
          const Timing tm = time_decode(pool, fn, s, batch, context, shared, q_len, dt, reps);
          std::printf("| %s | %lld/%lld | %s | %lld | %d | %.1f | %.2f | %.1f |\n", s.model,
                      static_cast<long long>(s.heads), static_cast<long long>(s.kv_heads), dtype_name(dt),
                      static_cast<long long>(batch), t, tm.us, tm.bytes / tm.us / 1e3, tm.cpu_us);
        }
  return 0;
}
