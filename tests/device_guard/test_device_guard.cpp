// The guarded device (guard_plugin.cpp) must catch what it exists to catch —
// a host touch of device memory, a host pointer handed to a kernel, a copy in
// the wrong direction, a read of memory nobody wrote — and a model run on it
// must give the cpu device's results bit for bit (same kernels).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "../common/gtest_seed.h"
#include "../model/parity_util.hpp"
#include "core/error.hpp"
#include "core/runtime.hpp"
#include "model/device_memory.hpp"
#include "model/ops.hpp"
#include "model/transformer.hpp"

namespace {

using parity::env;

struct Guarded : ::testing::Test {
  parley_runtime *rt = nullptr;
  std::shared_ptr<parley::DeviceMemory> mem;
  void SetUp() override {
    rt = parity::build_runtime();  // this build's plugins only
    ASSERT_EQ(parley_runtime_load_plugin(rt, env("PARLEY_TEST_DEVICE_PLUGIN").c_str()), PARLEY_OK)
        << parley_last_error();
    mem = std::make_shared<parley::DeviceMemory>(rt->impl, rt->impl->registry.device("guarded"));
  }
  void TearDown() override {
    mem.reset();
    parley_runtime_free(rt);
  }
};

TEST_F(Guarded, RoundTripThroughCopies) {
  std::vector<float> host = {1.5f, -2.f, 3.25f, 1e-30f, 7.f};
  parley::DeviceArray<float> d(mem, host);
  parley::DeviceArray<float> e(mem, host.size());
  mem->on_device(e.data(), d.data(), host.size() * sizeof(float));
  EXPECT_EQ(e.to_vector(), host);
}

TEST_F(Guarded, FreshMemoryIsPoisoned) {
  parley::DeviceArray<float> f(mem, 33);
  for (float x : f.to_vector()) EXPECT_TRUE(std::isnan(x));
  parley::DeviceArray<int32_t> i(mem, 5);
  for (int32_t x : i.to_vector()) EXPECT_EQ(x, -1);
}

TEST_F(Guarded, HostTouchOfDeviceMemoryFaults) {
  parley::DeviceArray<float> d(mem, std::vector<float>{1.f, 2.f});
  volatile const float *p = d.data();
  EXPECT_DEATH({ std::printf("%f\n", static_cast<double>(p[0])); }, "");
  float *w = d.data();
  EXPECT_DEATH({ w[1] = 3.f; }, "");
  EXPECT_EQ(d.to_vector(), (std::vector<float>{1.f, 2.f}));  // the parent's copy is untouched
}

TEST_F(Guarded, KernelGivenAHostPointerIsRefusedNamingIt) {
  parley::Ops ops(rt->impl, "guarded");
  parley::DeviceArray<float> w(mem, std::vector<float>(6, 0.5f)), c(mem, 2);
  std::vector<float> host_a = {1.f, 2.f, 3.f};
  try {
    ops.linear(host_a.data(), 1, 3, w.data(), 2, nullptr, c.data());
    FAIL() << "a host pointer reached a kernel";
  } catch (const parley::Error &e) {
    EXPECT_NE(std::string(e.what()).find("argument 'a'"), std::string::npos) << e.what();
  }
  parley::DeviceArray<float> a(mem, host_a);
  ops.linear(a.data(), 1, 3, w.data(), 2, nullptr, c.data());
  EXPECT_EQ(c.to_vector(), (std::vector<float>{3.f, 3.f}));
}

TEST_F(Guarded, CopiesInTheWrongDirectionAreRefused) {
  parley::DeviceArray<float> d(mem, 4);
  std::vector<float> host(4, 1.f);
  EXPECT_THROW(mem->to_device(host.data(), d.data(), 16), parley::Error);    // host destination
  EXPECT_THROW(mem->to_host(d.data(), host.data(), 16), parley::Error);      // device destination
  EXPECT_THROW(mem->on_device(d.data(), host.data(), 16), parley::Error);    // host source
  EXPECT_THROW(mem->to_device(d.data(), host.data(), 4096), parley::Error);  // past the block
}

// Same kernels, same inputs: identical logits, prefill and step by step.
void expect_identical(parley_runtime *rt, const std::string &file, bool encoder_decoder) {
  parley_model *model = nullptr;
  std::string path = env("PARLEY_PARITY_DIR") + "/models/" + file;
  ASSERT_EQ(parley_model_load_file(rt, path.c_str(), nullptr, &model), PARLEY_OK) << parley_last_error();
  parley::Transformer cpu(rt->impl, *model->impl.file, "cpu"), dev(rt->impl, *model->impl.file, "guarded");
  std::vector<std::vector<int32_t>> sources;
  if (encoder_decoder) sources = {{5, 9, 13, 2}, {7, 2}};
  std::vector<int32_t> tokens = {1, 4, 8, 3, 2, 6};
  auto run = [&](const parley::Transformer &t) {
    auto st = t.start(2, 8, sources);
    auto out = t.step(st, tokens, 3, false, {3, 2});
    auto next = t.step(st, {11, 12}, 1, true);
    t.reorder(st, {1, 1, 0});
    auto after = t.step(st, {3, 4, 5}, 1, true);
    out.insert(out.end(), next.begin(), next.end());
    out.insert(out.end(), after.begin(), after.end());
    return out;
  };
  std::vector<float> a = run(cpu), b = run(dev);
  ASSERT_EQ(a.size(), b.size());
  size_t differ = 0, nan = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    differ += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
    nan += std::isnan(b[i]);
  }
  EXPECT_EQ(differ, 0u) << file;
  EXPECT_EQ(nan, 0u) << file;
  parley_model_free(model);
}

// Beams of an item share one copy of the source's cross-attention K/V
// (DecoderState::rows_per_source). Against a state holding one copy per row:
// the same logits and cross-attention probabilities (to fp32 rounding: the
// GEMMs run with other row counts), through a regrouping, a reorder within
// items and one that breaks the grouping.
double rel_diff(const std::vector<float> &a, const std::vector<float> &b) {
  if (a.size() != b.size() || a.empty()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::isfinite(num) ? std::sqrt(num / den) : INFINITY;
}
void expect_shared_sources_exact(parley_runtime *rt, const std::string &device) {
  parley_model *model = nullptr;
  std::string path = env("PARLEY_PARITY_DIR") + "/models/marian.parley";
  ASSERT_EQ(parley_model_load_file(rt, path.c_str(), nullptr, &model), PARLEY_OK) << parley_last_error();
  parley::Transformer t(rt->impl, *model->impl.file, device);
  const std::vector<int32_t> s0 = {5, 9, 13, 2}, s1 = {7, 2};
  auto shared = t.start(2, 8, {s0, s1});
  auto per_row = t.start(6, 8, {s0, s0, s0, s1, s1, s1});
  t.step(shared, {3, 4}, 1);
  t.step(per_row, {3, 3, 3, 4, 4, 4}, 1);
  t.reorder(shared, {0, 0, 0, 1, 1, 1});  // the beams of each item: one copy per source
  EXPECT_EQ(shared.rows_per_source, 3);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  shared.record_cross_layer = per_row.record_cross_layer = 0;
  EXPECT_LE(rel_diff(t.step(shared, tokens, 2), t.step(per_row, tokens, 2)), 1e-5);
  EXPECT_LE(rel_diff(shared.cross_probs, per_row.cross_probs), 1e-5);
  for (const std::vector<int32_t> &parents : {std::vector<int32_t>{2, 1, 0, 5, 3, 4}, std::vector<int32_t>{0, 3, 3}}) {
    t.reorder(shared, parents);
    t.reorder(per_row, parents);
    std::vector<int32_t> next(parents.size(), 6);
    EXPECT_LE(rel_diff(t.step(shared, next, 1), t.step(per_row, next, 1)), 1e-5);
    EXPECT_LE(rel_diff(shared.cross_probs, per_row.cross_probs), 1e-5);
  }
  EXPECT_EQ(shared.rows_per_source, 1);  // {0, 3, 3} broke the grouping
  parley_model_free(model);
}

TEST_F(Guarded, BeamsShareTheirSourceExactly) {
  expect_shared_sources_exact(rt, "cpu");
  expect_shared_sources_exact(rt, "guarded");
}

// reorder() against recomputation: after a reorder, each row must continue
// exactly as a fresh state fed its parent's tokens would. Patterns: swaps
// with rows kept in place, duplicates, a shrink and a growth.
void expect_reorder_like_recomputation(parley_runtime *rt, const std::string &device) {
  parley_model *model = nullptr;
  std::string path = env("PARLEY_PARITY_DIR") + "/models/llama.parley";
  ASSERT_EQ(parley_model_load_file(rt, path.c_str(), nullptr, &model), PARLEY_OK) << parley_last_error();
  parley::Transformer t(rt->impl, *model->impl.file, device);
  const std::vector<std::vector<int32_t>> prompts = {{5, 9, 13}, {7, 2, 4}, {3, 3, 8}, {11, 6, 1}};
  const std::vector<std::vector<int32_t>> patterns = {
      {0, 1, 2, 3}, {1, 0, 2, 3}, {2, 2, 0, 3}, {3, 1, 1, 0}, {0, 3}, {0, 0, 1, 1, 2, 2, 3, 3}, {2, 1}};
  for (const auto &parents : patterns) {
    auto st = t.start(4, 8);
    std::vector<int32_t> flat;
    for (const auto &p : prompts) flat.insert(flat.end(), p.begin(), p.end());
    t.step(st, flat, 3);
    t.reorder(st, parents);
    std::vector<int32_t> next(parents.size());
    for (size_t r = 0; r < parents.size(); ++r) next[r] = static_cast<int32_t>(20 + r);
    const std::vector<float> got = t.step(st, next, 1, true);
    std::vector<int32_t> again;
    for (size_t r = 0; r < parents.size(); ++r) {
      const auto &p = prompts[static_cast<size_t>(parents[r])];
      again.insert(again.end(), p.begin(), p.end());
      again.push_back(next[r]);
    }
    auto fresh = t.start(static_cast<int64_t>(parents.size()), 8);
    const std::vector<float> want = t.step(fresh, again, 4, true);
    EXPECT_LE(rel_diff(got, want), 1e-5) << device << ": parents " << ::testing::PrintToString(parents);
  }
  parley_model_free(model);
}

TEST_F(Guarded, ReorderContinuesLikeRecomputation) {
  expect_reorder_like_recomputation(rt, "cpu");
  expect_reorder_like_recomputation(rt, "guarded");
}

TEST_F(Guarded, DecoderOnlyModelMatchesCpuBitForBit) {
  expect_identical(rt, "llama.parley", false);
  expect_identical(rt, "qwen3.parley", false);
  expect_identical(rt, "gpt2.parley", false);
}

TEST_F(Guarded, EncoderDecoderModelMatchesCpuBitForBit) {
  expect_identical(rt, "marian.parley", true);
  expect_identical(rt, "bart.parley", true);
}

// A paged attention call (plugin ABI 1.3) on the guarded device: the KV pool,
// block table, key_lengths and k_new / v_new in device memory; shuffled
// blocks, two sequences sharing a prefix block, a fused append into blocks,
// probs and lse; F32 and I8 caches. The same call on the cpu device with
// host copies must leave the same output and pool bit for bit. A host block
// table, and a table entry past the pool, are refused naming the table.
// window > 0: the same with a sliding window (plugin ABI 1.4), which the
// guarded attention must declare and pass through.
void expect_paged_attention_identical(parley_runtime *rt, const std::shared_ptr<parley::DeviceMemory> &mem,
                                      int32_t kv_dtype, int64_t window = 0) {
  SCOPED_TRACE(std::string(kv_dtype == PARLEY_DTYPE_I8 ? "I8 cache" : "F32 cache") + ", window " +
               std::to_string(window));
  PARLEY_CASE_SEED(seed);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  const parley::Ops cpu(rt->impl, "cpu"), dev(rt->impl, "guarded");
  ASSERT_NE(dev.kernel(PARLEY_OP_ATTENTION).flags & PARLEY_KERNEL_FLAG_KV_PAGED, 0u);
  if (window > 0) {
    ASSERT_NE(dev.kernel(PARLEY_OP_ATTENTION).flags & PARLEY_KERNEL_FLAG_SLIDING_WINDOW, 0u);
  }
  const int64_t B = 3, H = 4, G = 2, D = 16, Q = 2, bs = 4, P = 9, stride = 3, kv_len = 10;
  const std::vector<int32_t> lengths = {10, 7, 3};
  // Sequence 1 reads sequence 0's first block; the appended rows (the last
  // Q of each sequence) fall in blocks 8, 0 and 5.
  const std::vector<int32_t> table = {6, 2, 8, 6, 0, -1, 5, -1, -1};
  const size_t es = kv_dtype == PARLEY_DTYPE_I8 ? 1 : 4;
  const size_t pool_elems = size_t(P * bs * G * D);
  std::vector<uint8_t> k_pool(pool_elems * es), v_pool(k_pool.size());
  for (size_t i = 0; i < pool_elems; ++i) {
    const float x = u(rng), y = u(rng);
    if (es == 4) {
      std::memcpy(&k_pool[4 * i], &x, 4);
      std::memcpy(&v_pool[4 * i], &y, 4);
    } else {
      k_pool[i] = uint8_t(int8_t(x * 127.f));
      v_pool[i] = uint8_t(int8_t(y * 127.f));
    }
  }
  std::vector<float> k_scales(size_t(P * bs * G)), v_scales(k_scales.size());
  for (auto *sc : {&k_scales, &v_scales})
    for (float &x : *sc) x = 0.01f + 0.02f * std::fabs(u(rng));
  auto random = [&](size_t n) {
    std::vector<float> v(n);
    for (float &x : v) x = u(rng);
    return v;
  };
  const std::vector<float> q = random(size_t(B * Q * H * D)), k_new = random(size_t(B * Q * G * D)),
                           v_new = random(k_new.size());

  // Fills the arguments; pointers come from `ptr` (host vectors or device copies).
  struct Ptrs {
    const float *q, *k_new, *v_new;
    void *k, *v, *out;
    float *k_scales, *v_scales, *probs, *lse;
    const int32_t *lengths, *table;
  };
  auto args = [&](const Ptrs &p) {
    parley_attention_args a{};
    a.struct_size = sizeof a;
    a.dtype = PARLEY_DTYPE_F32;
    a.batch = B, a.num_heads = H, a.num_kv_heads = G, a.q_len = Q, a.kv_len = kv_len, a.head_dim = D;
    a.q = p.q, a.q_stride_batch = Q * H * D, a.q_stride_head = D, a.q_stride_seq = H * D;
    a.out = p.out, a.out_stride_batch = Q * H * D, a.out_stride_head = D, a.out_stride_seq = H * D;
    a.k = p.k, a.v = p.v;
    a.k_stride_batch = a.v_stride_batch = bs * G * D, a.k_stride_head = a.v_stride_head = D;
    a.k_stride_seq = a.v_stride_seq = G * D;
    a.kv_dtype = kv_dtype;
    if (kv_dtype == PARLEY_DTYPE_I8) {
      a.k_scales = p.k_scales, a.v_scales = p.v_scales;
      a.scale_stride_batch = bs * G, a.scale_stride_head = 1, a.scale_stride_seq = G;
    }
    a.k_new = p.k_new, a.v_new = p.v_new;
    a.k_new_stride_batch = a.v_new_stride_batch = Q * G * D, a.k_new_stride_head = a.v_new_stride_head = D;
    a.k_new_stride_seq = a.v_new_stride_seq = G * D;
    a.scale = 0.25f;
    a.mask = PARLEY_MASK_CAUSAL | PARLEY_MASK_KEY_PADDING;
    a.key_lengths = p.lengths;
    a.probs = p.probs, a.lse = p.lse;
    a.block_table = p.table, a.block_table_stride = stride, a.block_size = bs;
    a.window = window;
    return a;
  };

  // The cpu device, on host memory.
  std::vector<uint8_t> hk = k_pool, hv = v_pool;
  std::vector<float> hks = k_scales, hvs = v_scales, h_out(q.size(), NAN), h_probs(size_t(B * H * Q * kv_len), NAN),
                     h_lse(size_t(B * H * Q), NAN);
  const parley_attention_args ha =
      args({q.data(), k_new.data(), v_new.data(), hk.data(), hv.data(), h_out.data(), hks.data(), hvs.data(),
            h_probs.data(), h_lse.data(), lengths.data(), table.data()});
  cpu.run(PARLEY_OP_ATTENTION, &ha);

  // The guarded device.
  parley::DeviceArray<float> dq(mem, q), dkn(mem, k_new), dvn(mem, v_new), dks(mem, k_scales), dvs(mem, v_scales);
  parley::DeviceArray<float> d_out(mem, q.size()), d_probs(mem, h_probs.size()), d_lse(mem, h_lse.size());
  parley::DeviceArray<uint8_t> dk(mem, k_pool), dv(mem, v_pool);
  parley::DeviceArray<int32_t> d_lengths(mem, lengths), d_table(mem, table);
  const Ptrs dp{dq.data(),  dkn.data(), dvn.data(),     dk.data(),    dv.data(),        d_out.data(),
                dks.data(), dvs.data(), d_probs.data(), d_lse.data(), d_lengths.data(), d_table.data()};
  const parley_attention_args da = args(dp);
  dev.run(PARLEY_OP_ATTENTION, &da);

  auto bits = [](const auto &x, const auto &y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(x[0])) == 0;
  };
  EXPECT_TRUE(bits(d_out.to_vector(), h_out)) << "out";
  EXPECT_TRUE(bits(d_probs.to_vector(), h_probs)) << "probs";
  EXPECT_TRUE(bits(d_lse.to_vector(), h_lse)) << "lse";
  EXPECT_TRUE(bits(dk.to_vector(), hk)) << "the K pool after the append";
  EXPECT_TRUE(bits(dv.to_vector(), hv)) << "the V pool after the append";
  if (kv_dtype == PARLEY_DTYPE_I8) {
    EXPECT_TRUE(bits(dks.to_vector(), hks)) << "the K scales after the append";
    EXPECT_TRUE(bits(dvs.to_vector(), hvs)) << "the V scales after the append";
  }
  EXPECT_FALSE(bits(hk, k_pool)) << "the append wrote nothing";
  for (float x : h_out) ASSERT_TRUE(std::isfinite(x));

  auto refused = [&](const parley_attention_args &a, const std::string &what) {
    try {
      dev.run(PARLEY_OP_ATTENTION, &a);
      ADD_FAILURE() << "not refused: " << what;
    } catch (const parley::Error &e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  Ptrs host_table = dp;
  host_table.table = table.data();
  refused(args(host_table), "argument 'block_table'");
  std::vector<int32_t> past = table;
  past[4] = int32_t(4 * P);  // past the pool (and past the slack of the guard's allocation granularity)
  parley::DeviceArray<int32_t> d_past(mem, past);
  Ptrs past_pool = dp;
  past_pool.table = d_past.data();
  refused(args(past_pool), "block_table[4] = 36 (sequence 1) names a block outside the 'k' allocation");
}

TEST_F(Guarded, PagedAttentionMatchesCpuBitForBit) {
  expect_paged_attention_identical(rt, mem, PARLEY_DTYPE_F32);
  expect_paged_attention_identical(rt, mem, PARLEY_DTYPE_I8);
}

// Window 3 over lengths 10 / 7 / 3 with 2 queries: sequence 0's first block
// lies before every window (the guard's device is the cpu kernels behind
// guarded memory; on a GPU, tests/gpu/gpu_check runs windows on the cuda
// kernels).
TEST_F(Guarded, PagedAttentionWithASlidingWindowMatchesCpuBitForBit) {
  expect_paged_attention_identical(rt, mem, PARLEY_DTYPE_F32, 3);
  expect_paged_attention_identical(rt, mem, PARLEY_DTYPE_I8, 3);
}

}  // namespace
