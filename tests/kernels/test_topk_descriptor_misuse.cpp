// Top-k (ties, NaN), the plugin descriptor, the cpu device, and misuse of
// every kernel (NULL args, short struct_size, bad enums, bad shapes).
#include <algorithm>
#include <cstring>
#include <numeric>
#include <set>

#include "test_host.h"
#include "test_util.h"

namespace parley::test {
namespace {

bool ranks_before(float va, int32_t ia, float vb, int32_t ib) {
  const bool na = std::isnan(va), nb = std::isnan(vb);
  if (na != nb) return nb;
  if (!na && va != vb) return va > vb;
  return ia < ib;
}

void run_topk(int64_t rows, int64_t cols, int64_t k, bool ties, bool nans) {
  PARLEY_CASE_SEED(seed);
  SCOPED_TRACE(testing::Message() << "rows=" << rows << " cols=" << cols << " k=" << k << " ties=" << ties
                                  << " nans=" << nans);
  Rng rng(seed);
  const int64_t ld = cols + 2;
  std::vector<float> x = rng.uniform(size_t(rows * ld), -5.f, 5.f);
  for (auto &v : x) {
    if (ties) v = std::round(v);  // many equal values
    if (nans && rng.integer(0, 4) == 0) v = NAN;
  }
  std::vector<float> values = poisoned(size_t(rows * k));
  std::vector<int32_t> idx(size_t(rows * k), -7);
  TestHost host;
  parley_topk_args a{
      sizeof(parley_topk_args), PARLEY_DTYPE_F32, rows, cols, k, x.data(), ld, values.data(), idx.data()};
  ASSERT_EQ(find_kernel(PARLEY_OP_TOPK)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int32_t> order(static_cast<size_t>(cols));
    std::iota(order.begin(), order.end(), 0);
    const float *xr = x.data() + r * ld;
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t p, int32_t q) { return ranks_before(xr[p], p, xr[q], q); });
    for (int64_t j = 0; j < k; ++j) {
      ASSERT_EQ(idx[r * k + j], order[j]) << "row " << r << " rank " << j;
      const float want = xr[order[j]], got = values[r * k + j];
      if (std::isnan(want))
        ASSERT_TRUE(std::isnan(got));
      else
        ASSERT_EQ(got, want);
    }
  }
}

TEST(TopK, Basic) {
  for (int64_t cols : {1, 7, 33, 65, 1000})
    for (int64_t k : {int64_t(1), int64_t(5), cols})
      if (k <= cols) run_topk(3, cols, k, false, false);
}

TEST(TopK, TiesKeepIndexOrder) {
  run_topk(4, 100, 10, true, false);
  run_topk(4, 100, 100, true, false);  // large k: partial-sort path
  run_topk(2, 300, 70, true, false);
}

TEST(TopK, NanBelowEveryNumber) {
  run_topk(4, 100, 10, true, true);
  run_topk(4, 100, 100, false, true);
  std::vector<float> x = {NAN, -INFINITY, 1.f, NAN, 1.f};
  std::vector<float> v(5);
  std::vector<int32_t> i(5);
  TestHost host;
  parley_topk_args a{sizeof(parley_topk_args), PARLEY_DTYPE_F32, 1, 5, 5, x.data(), 5, v.data(), i.data()};
  ASSERT_EQ(find_kernel(PARLEY_OP_TOPK)(host.context(), &a), PARLEY_KERNEL_OK);
  EXPECT_EQ(i, (std::vector<int32_t>{2, 4, 1, 0, 3}));
}

TEST(Descriptor, WellFormed) {
  TestHost host;
  const parley_plugin_desc *d = parley_cpu_plugin_entry(PARLEY_PLUGIN_ABI_VERSION, host.services());
  ASSERT_NE(d, nullptr);
  EXPECT_GE(d->struct_size, sizeof(parley_plugin_desc));
  EXPECT_EQ(d->abi_version >> 16, unsigned(PARLEY_PLUGIN_ABI_MAJOR));
  EXPECT_STREQ(d->name, "cpu");
  ASSERT_NE(d->version, nullptr);
  ASSERT_EQ(d->num_devices, 1u);
  EXPECT_STREQ(d->devices[0].name, "cpu");
  EXPECT_EQ(d->devices[0].kind, PARLEY_DEVICE_CPU);
  std::set<std::string> names;
  std::set<int> ops;
  for (size_t i = 0; i < d->num_kernels; ++i) {
    const parley_kernel_desc &k = d->kernels[i];
    EXPECT_GE(k.struct_size, sizeof(parley_kernel_desc));
    ASSERT_NE(k.name, nullptr);
    EXPECT_TRUE(names.insert(k.name).second) << "duplicate kernel name " << k.name;
    EXPECT_NE(k.run, nullptr);
    EXPECT_STREQ(k.device, "cpu");
    EXPECT_EQ(k.priority, 10);
    if (k.dtype == PARLEY_DTYPE_F32) ops.insert(k.op);
  }
  for (int op = 0; op < PARLEY_OP_COUNT_; ++op) EXPECT_TRUE(ops.count(op)) << "no F32 cpu kernel for op " << op;
}

TEST(Descriptor, RefusesOtherMajor) {
  TestHost host;
  EXPECT_EQ(parley_cpu_plugin_entry((PARLEY_PLUGIN_ABI_MAJOR + 1u) << 16, host.services()), nullptr);
  ASSERT_FALSE(host.logs().empty());
  EXPECT_NE(host.logs().back().find("ABI"), std::string::npos);
  EXPECT_NE(parley_cpu_plugin_entry(PARLEY_PLUGIN_ABI_VERSION + 5, host.services()), nullptr);  // newer minor
  EXPECT_EQ(parley_cpu_plugin_entry(0, nullptr), nullptr);                                      // no host: no crash
}

TEST(Device, AllocateCopyRelease) {
  TestHost host;
  const parley_device_desc &dev = parley_cpu_plugin_entry(PARLEY_PLUGIN_ABI_VERSION, host.services())->devices[0];
  void *state = nullptr;
  if (dev.init) {
    char err[128];
    ASSERT_EQ(dev.init(host.services(), &state, err, sizeof err), PARLEY_KERNEL_OK);
  }
  for (size_t bytes : {size_t(0), size_t(1), size_t(100), size_t(1) << 20}) {
    void *p = nullptr;
    ASSERT_EQ(dev.allocate(state, bytes, 64, &p), PARLEY_KERNEL_OK);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
    std::vector<unsigned char> src(bytes, 0x5a), back(bytes, 0);
    EXPECT_EQ(dev.copy(state, p, src.data(), bytes, PARLEY_COPY_HOST_TO_DEVICE, nullptr), PARLEY_KERNEL_OK);
    EXPECT_EQ(dev.copy(state, back.data(), p, bytes, PARLEY_COPY_DEVICE_TO_HOST, nullptr), PARLEY_KERNEL_OK);
    EXPECT_EQ(src, back);
    dev.release(state, p);
  }
  void *p = reinterpret_cast<void *>(1);
  EXPECT_EQ(dev.allocate(state, SIZE_MAX - 3, 64, &p), PARLEY_KERNEL_OUT_OF_MEMORY);
  EXPECT_EQ(p, nullptr);
#if !defined(__SANITIZE_ADDRESS__)  // ASan aborts on huge requests unless allocator_may_return_null=1
  EXPECT_EQ(dev.allocate(state, size_t(1) << 62, 64, &p), PARLEY_KERNEL_OUT_OF_MEMORY);
#endif
  EXPECT_EQ(dev.allocate(state, 16, 48, &p), PARLEY_KERNEL_INVALID_ARGUMENT);
  EXPECT_EQ(dev.allocate(state, 16, 64, nullptr), PARLEY_KERNEL_INVALID_ARGUMENT);
  EXPECT_EQ(dev.copy(state, nullptr, &p, 4, PARLEY_COPY_DEVICE_TO_DEVICE, nullptr), PARLEY_KERNEL_INVALID_ARGUMENT);
  parley_copy_kind bad;
  int32_t v = 3;  // in the enum's value range (no UB), but not a copy kind
  std::memcpy(&bad, &v, sizeof v);
  char a[4], b[4] = {};
  EXPECT_EQ(dev.copy(state, a, b, 4, bad, nullptr), PARLEY_KERNEL_INVALID_ARGUMENT);
  dev.release(state, nullptr);
  EXPECT_EQ(dev.synchronize(state, nullptr), PARLEY_KERNEL_OK);
  if (dev.shutdown) dev.shutdown(state);
}

// ---- misuse ----

template <typename E>
void set_raw(E *field, int32_t v) {
  std::memcpy(field, &v, sizeof v);
}

class Misuse : public testing::Test {
 protected:
  parley_kernel_status call(parley_op op, const void *args) {
    host.clear_error();
    return find_kernel(op)(host.context(), args);
  }
  void expect_invalid(parley_op op, const void *args, const char *needle) {
    EXPECT_EQ(call(op, args), PARLEY_KERNEL_INVALID_ARGUMENT) << "op " << op << " expected: " << needle;
    EXPECT_NE(host.last_error().find(needle), std::string::npos) << "message: '" << host.last_error() << "'";
  }
  TestHost host;
  std::vector<float> buf = std::vector<float>(4096, 1.f);
};

TEST_F(Misuse, NullContextAndArgsAndShortStruct) {
  for (int op = 0; op < PARLEY_OP_COUNT_; ++op) {
    parley_kernel_fn fn = find_kernel(static_cast<parley_op>(op));
    ASSERT_NE(fn, nullptr);
    EXPECT_EQ(fn(nullptr, buf.data()), PARLEY_KERNEL_INVALID_ARGUMENT);
    EXPECT_EQ(fn(host.context(), nullptr), PARLEY_KERNEL_INVALID_ARGUMENT);
    // All-zero args with a tiny struct_size.
    std::vector<unsigned char> raw(512, 0);
    size_t small = 8;
    std::memcpy(raw.data(), &small, sizeof small);
    host.clear_error();
    EXPECT_EQ(fn(host.context(), raw.data()), PARLEY_KERNEL_INVALID_ARGUMENT) << "op " << op;
    EXPECT_NE(host.last_error().find("struct_size"), std::string::npos) << host.last_error();
    // Full struct_size, but garbage-free zero args: either OK (nothing to do) or INVALID, never a crash.
    size_t full = 512;
    std::memcpy(raw.data(), &full, sizeof full);
    parley_kernel_status st = fn(host.context(), raw.data());
    EXPECT_TRUE(st == PARLEY_KERNEL_OK || st == PARLEY_KERNEL_INVALID_ARGUMENT) << "op " << op << " st " << st;
    // Context with a short struct_size.
    parley_kernel_context bad = *host.context();
    bad.struct_size = 4;
    EXPECT_EQ(fn(&bad, raw.data()), PARLEY_KERNEL_INVALID_ARGUMENT);
    // Unknown and unsupported dtypes.
    parley_dtype *dt = reinterpret_cast<parley_dtype *>(raw.data() + sizeof(size_t));
    set_raw(dt, 99);
    EXPECT_EQ(fn(host.context(), raw.data()), PARLEY_KERNEL_INVALID_ARGUMENT);
    set_raw(dt, PARLEY_DTYPE_F16);
    EXPECT_EQ(fn(host.context(), raw.data()), PARLEY_KERNEL_UNSUPPORTED);
  }
}

parley_gemm_args good_gemm(float *p) {
  parley_gemm_args g{};
  g.struct_size = sizeof g;
  g.dtype = PARLEY_DTYPE_F32;
  g.m = 3, g.n = 4, g.k = 4, g.batch = 1;
  g.a = p, g.lda = 4, g.b = p, g.ldb = 4, g.c = p + 1024, g.ldc = 4;
  g.alpha = 1.f;
  return g;
}

TEST_F(Misuse, Gemm) {
  parley_gemm_args g = good_gemm(buf.data());
  EXPECT_EQ(call(PARLEY_OP_GEMM, &g), PARLEY_KERNEL_OK);
  g = good_gemm(buf.data()), g.lda = 3;
  expect_invalid(PARLEY_OP_GEMM, &g, "gemm: lda (3) < k (4)");
  g = good_gemm(buf.data()), g.trans_b = 1, g.ldb = 2;
  expect_invalid(PARLEY_OP_GEMM, &g, "ldb");
  g = good_gemm(buf.data()), g.ldc = 1;
  expect_invalid(PARLEY_OP_GEMM, &g, "ldc");
  g = good_gemm(buf.data()), g.m = -1;
  expect_invalid(PARLEY_OP_GEMM, &g, "negative");
  g = good_gemm(buf.data()), g.batch = 0;
  expect_invalid(PARLEY_OP_GEMM, &g, "batch");
  g = good_gemm(buf.data()), g.a = nullptr;
  expect_invalid(PARLEY_OP_GEMM, &g, "NULL");
  g = good_gemm(buf.data()), set_raw(&g.epilogue, 42);
  expect_invalid(PARLEY_OP_GEMM, &g, "epilogue");
  g = good_gemm(buf.data()), g.batch = 2, g.stride_c = 0;
  expect_invalid(PARLEY_OP_GEMM, &g, "stride_c");
  g = good_gemm(buf.data()), g.stride_a = -4;
  expect_invalid(PARLEY_OP_GEMM, &g, "negative");
}

parley_attention_args good_attention(float *p) {
  parley_attention_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = 1, a.num_heads = 2, a.num_kv_heads = 2, a.q_len = 2, a.kv_len = 2, a.head_dim = 4;
  a.q = a.k = a.v = p;
  a.q_stride_batch = a.k_stride_batch = a.v_stride_batch = a.out_stride_batch = 16;
  a.q_stride_head = a.k_stride_head = a.v_stride_head = a.out_stride_head = 8;
  a.q_stride_seq = a.k_stride_seq = a.v_stride_seq = a.out_stride_seq = 4;
  a.out = p + 1024;
  a.scale = 0.5f;
  return a;
}

TEST_F(Misuse, Attention) {
  parley_attention_args a = good_attention(buf.data());
  EXPECT_EQ(call(PARLEY_OP_ATTENTION, &a), PARLEY_KERNEL_OK);
  a = good_attention(buf.data()), a.num_heads = 3;
  expect_invalid(PARLEY_OP_ATTENTION, &a, "not a multiple");
  a = good_attention(buf.data()), a.mask = 4;
  expect_invalid(PARLEY_OP_ATTENTION, &a, "mask");
  a = good_attention(buf.data()), a.mask = PARLEY_MASK_KEY_PADDING;
  expect_invalid(PARLEY_OP_ATTENTION, &a, "key_lengths");
  int32_t lens[1] = {3};
  a = good_attention(buf.data()), a.mask = PARLEY_MASK_KEY_PADDING, a.key_lengths = lens;
  expect_invalid(PARLEY_OP_ATTENTION, &a, "key_lengths[0] = 3");
  a = good_attention(buf.data()), a.head_dim = 0;
  expect_invalid(PARLEY_OP_ATTENTION, &a, "head_dim");
  a = good_attention(buf.data()), a.q_stride_seq = 3;
  expect_invalid(PARLEY_OP_ATTENTION, &a, "q_stride_seq");
  a = good_attention(buf.data()), a.v = nullptr;
  expect_invalid(PARLEY_OP_ATTENTION, &a, "NULL");
  a = good_attention(buf.data()), a.num_kv_heads = 0;
  expect_invalid(PARLEY_OP_ATTENTION, &a, "num_kv_heads");
}

TEST_F(Misuse, RowKernels) {
  float *p = buf.data();
  parley_norm_args n{};
  n.struct_size = sizeof n, n.dtype = PARLEY_DTYPE_F32, n.rows = 2, n.cols = 4, n.x = p, n.ld_x = 3;
  n.gamma = p, n.out = p + 100, n.ld_out = 4, n.eps = 1e-5f;
  expect_invalid(PARLEY_OP_LAYER_NORM, &n, "ld_x (3) < cols (4)");
  n.ld_x = 4, n.gamma = nullptr;
  expect_invalid(PARLEY_OP_RMS_NORM, &n, "NULL");
  n.gamma = p, n.cols = 0;
  expect_invalid(PARLEY_OP_RMS_NORM, &n, "cols");

  parley_activation_args act{sizeof(parley_activation_args), PARLEY_DTYPE_F32, PARLEY_ACT_RELU, 2, 4, p, 4, p, 4};
  EXPECT_EQ(call(PARLEY_OP_ACTIVATION, &act), PARLEY_KERNEL_OK);
  set_raw(&act.activation, 5);
  expect_invalid(PARLEY_OP_ACTIVATION, &act, "activation");
  set_raw(&act.activation, -1);
  expect_invalid(PARLEY_OP_ACTIVATION, &act, "activation");

  parley_gated_activation_args ga{
      sizeof(parley_gated_activation_args), PARLEY_DTYPE_F32, PARLEY_ACT_SILU, 2, 4, p, 4, nullptr, 4, p, 4};
  expect_invalid(PARLEY_OP_GATED_ACTIVATION, &ga, "NULL");
  ga.up = p;
  set_raw(&ga.activation, 77);
  expect_invalid(PARLEY_OP_GATED_ACTIVATION, &ga, "activation");

  parley_add_args ad{sizeof(parley_add_args), PARLEY_DTYPE_F32, -3, p, p, p, 1.f};
  expect_invalid(PARLEY_OP_ADD, &ad, "n (-3)");

  parley_softmax_args sm{sizeof(parley_softmax_args), PARLEY_DTYPE_F32, 2, 4, p, 4, p, 2};
  expect_invalid(PARLEY_OP_SOFTMAX, &sm, "ld_out");
  expect_invalid(PARLEY_OP_LOG_SOFTMAX, &sm, "ld_out");

  int32_t idx[8];
  parley_topk_args tk{sizeof(parley_topk_args), PARLEY_DTYPE_F32, 2, 4, 5, p, 4, p + 100, idx};
  expect_invalid(PARLEY_OP_TOPK, &tk, "k (5)");
  tk.k = 0;
  expect_invalid(PARLEY_OP_TOPK, &tk, "k (0)");

  int32_t pos[4] = {0, 1, 2, 3};
  parley_rotary_args ro{};
  ro.struct_size = sizeof ro;
  ro.dtype = PARLEY_DTYPE_F32;
  ro.batch = 1, ro.seq = 2, ro.heads = 1, ro.head_dim = 4, ro.rotary_dim = 3;
  ro.x = p, ro.stride_batch = 8, ro.stride_seq = 4, ro.stride_head = 4, ro.positions = pos, ro.inv_freq = p;
  expect_invalid(PARLEY_OP_ROTARY, &ro, "rotary_dim");
  ro.rotary_dim = 6;
  expect_invalid(PARLEY_OP_ROTARY, &ro, "rotary_dim");
  ro.rotary_dim = 4, ro.positions = nullptr;
  expect_invalid(PARLEY_OP_ROTARY, &ro, "NULL");

  int32_t ids[2] = {0, 1};
  parley_embedding_args em{};
  em.struct_size = sizeof em;
  em.dtype = PARLEY_DTYPE_F32;
  em.table_dtype = PARLEY_DTYPE_I8;
  em.count = 2, em.vocab = 4, em.dim = 2, em.ids = ids, em.table = p, em.out = p + 100, em.ld_out = 2;
  expect_invalid(PARLEY_OP_EMBEDDING, &em, "row_scales");
  set_raw(&em.table_dtype, 123);
  expect_invalid(PARLEY_OP_EMBEDDING, &em, "table_dtype");
  em.table_dtype = PARLEY_DTYPE_I32;  // a valid dtype that is not a table type
  EXPECT_EQ(call(PARLEY_OP_EMBEDDING, &em), PARLEY_KERNEL_UNSUPPORTED);
}

}  // namespace
}  // namespace parley::test
