// GEMM vs a float64 reference: every transpose combination, batches with
// strides (incl. stride 0 broadcast), padded leading dimensions, alpha/beta,
// bias and every epilogue.
#include "test_host.h"
#include "test_util.h"

namespace parley::test {
namespace {

struct GemmCase {
  int64_t m, n, k;
  bool ta = false, tb = false;
  int64_t batch = 1;
  bool broadcast_a = false, broadcast_b = false;
  int64_t pad = 0;  // extra elements on every leading dimension
  float alpha = 1.f, beta = 0.f;
  bool bias = false;
  parley_activation epi = PARLEY_ACT_NONE;
  int threads = 3;
};

double act_ref(parley_activation a, double x) {
  switch (a) {
    case PARLEY_ACT_RELU:
      return x > 0 ? x : 0;
    case PARLEY_ACT_GELU_ERF:
      return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case PARLEY_ACT_GELU_TANH:
      return 0.5 * x * (1 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case PARLEY_ACT_SILU:
      return x / (1 + std::exp(-x));
    default:
      return x;
  }
}

void run_gemm(const GemmCase &c) {
  PARLEY_CASE_SEED(seed);
  SCOPED_TRACE(testing::Message() << "m=" << c.m << " n=" << c.n << " k=" << c.k << " ta=" << c.ta << " tb=" << c.tb
                                  << " batch=" << c.batch << " epi=" << c.epi << " beta=" << c.beta);
  Rng rng(seed);
  const int64_t ar = c.ta ? c.k : c.m, ac = c.ta ? c.m : c.k;
  const int64_t br = c.tb ? c.n : c.k, bc = c.tb ? c.k : c.n;
  const int64_t lda = ac + c.pad, ldb = bc + c.pad, ldc = c.n + c.pad;
  const int64_t sa = c.broadcast_a ? 0 : ar * lda + 3, sb = c.broadcast_b ? 0 : br * ldb + 5, sc = c.m * ldc + 2;
  const int64_t na = c.broadcast_a ? ar * lda : sa * c.batch, nb = c.broadcast_b ? br * ldb : sb * c.batch;
  std::vector<float> A = rng.uniform(size_t(na)), B = rng.uniform(size_t(nb)), bias = rng.uniform(size_t(c.n));
  std::vector<float> C = poisoned(size_t(sc * c.batch));
  std::vector<float> C0 = rng.uniform(C.size());
  if (c.beta != 0.f)
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t i = 0; i < c.m; ++i)
        for (int64_t j = 0; j < c.n; ++j) C[b * sc + i * ldc + j] = C0[b * sc + i * ldc + j];

  std::vector<double> ref;
  std::vector<float> got;
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < c.k; ++p) {
          double av = A[b * sa + (c.ta ? p * lda + i : i * lda + p)];
          double bv = B[b * sb + (c.tb ? j * ldb + p : p * ldb + j)];
          s += av * bv;
        }
        double v = c.alpha * s;
        if (c.beta != 0.f) v += double(c.beta) * C0[b * sc + i * ldc + j];
        if (c.bias) v += bias[j];
        ref.push_back(act_ref(c.epi, v));
      }

  TestHost host(c.threads);
  parley_gemm_args g{};
  g.struct_size = sizeof g;
  g.dtype = PARLEY_DTYPE_F32;
  g.trans_a = c.ta;
  g.trans_b = c.tb;
  g.m = c.m, g.n = c.n, g.k = c.k, g.batch = c.batch;
  g.a = A.data(), g.lda = lda, g.stride_a = sa;
  g.b = B.data(), g.ldb = ldb, g.stride_b = sb;
  g.c = C.data(), g.ldc = ldc, g.stride_c = sc;
  g.alpha = c.alpha, g.beta = c.beta;
  g.bias = c.bias ? bias.data() : nullptr;
  g.epilogue = c.epi;
  ASSERT_EQ(find_kernel(PARLEY_OP_GEMM)(host.context(), &g), PARLEY_KERNEL_OK) << host.last_error();
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) got.push_back(C[b * sc + i * ldc + j]);
  EXPECT_LE(rel_error(got, ref), kF32Tol);
  // Padding between rows / matrices is never written.
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = c.n; j < ldc; ++j) ASSERT_TRUE(std::isnan(C[b * sc + i * ldc + j])) << "wrote padding";
}

const int64_t kShapes[][3] = {{1, 1, 1},     {1, 7, 33},    {7, 33, 65},    {33, 65, 7},
                              {65, 128, 64}, {1, 512, 256}, {130, 96, 200}, {5, 1, 9}};

TEST(Gemm, TransposeCombinations) {
  for (auto &s : kShapes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        GemmCase c{s[0], s[1], s[2]};
        c.ta = ta, c.tb = tb;
        run_gemm(c);
      }
}

TEST(Gemm, PaddedLeadingDims) {
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      GemmCase c{33, 65, 17};
      c.ta = ta, c.tb = tb, c.pad = 3;
      run_gemm(c);
    }
}

TEST(Gemm, SerialHostAndOneThread) {
  for (int threads : {0, 1}) {
    GemmCase c{65, 200, 64};
    c.threads = threads, c.tb = true;
    run_gemm(c);
  }
}

TEST(Gemm, BatchedWithStrides) {
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      GemmCase c{7, 33, 65};
      c.ta = ta, c.tb = tb, c.batch = 3, c.pad = 1;
      run_gemm(c);
    }
  GemmCase big{64, 128, 96};
  big.batch = 5;
  run_gemm(big);
}

TEST(Gemm, BroadcastStrideZero) {
  GemmCase c{9, 33, 17};
  c.batch = 4, c.broadcast_b = true, c.tb = true;
  run_gemm(c);
  GemmCase d{9, 33, 17};
  d.batch = 3, d.broadcast_a = true;
  run_gemm(d);
}

TEST(Gemm, AlphaBeta) {
  for (float beta : {0.f, 1.f, -0.5f}) {
    GemmCase c{33, 65, 31};
    c.alpha = 0.75f, c.beta = beta, c.tb = true;
    run_gemm(c);
    GemmCase d{1, 300, 70};
    d.alpha = -2.f, d.beta = beta;
    run_gemm(d);
  }
}

TEST(Gemm, BiasAndEpilogues) {
  for (int e = PARLEY_ACT_NONE; e < PARLEY_ACT_COUNT_; ++e)
    for (bool bias : {false, true}) {
      GemmCase c{17, 129, 40};
      c.tb = true, c.bias = bias, c.epi = static_cast<parley_activation>(e), c.alpha = 1.5f;
      run_gemm(c);
      GemmCase d{1, 65, 33};
      d.bias = bias, d.epi = static_cast<parley_activation>(e), d.beta = 0.5f;
      run_gemm(d);
    }
}

TEST(Gemm, KZeroGivesBetaCPlusBias) {
  GemmCase c{5, 9, 0};
  c.pad = 1, c.bias = true, c.beta = 0.5f, c.epi = PARLEY_ACT_SILU;
  run_gemm(c);
  GemmCase d{5, 9, 0};
  d.pad = 1, d.ta = true;
  run_gemm(d);
}

}  // namespace
}  // namespace parley::test
