// Row-wise and element-wise kernels vs float64 references: LayerNorm/RMSNorm
// (with fused residual), rotary, activation, gated activation, add, softmax,
// log-softmax, embedding.
#include "test_host.h"
#include "test_util.h"

namespace parley::test {
namespace {

const int64_t kCols[] = {1, 7, 33, 65, 512, 1000};

double act_ref(int a, double x) {
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

void run_norm(bool rms, int64_t rows, int64_t cols, bool residual, bool residual_out, bool beta, bool in_place) {
  PARLEY_CASE_SEED(seed);
  SCOPED_TRACE(testing::Message() << (rms ? "rms" : "layer") << " rows=" << rows << " cols=" << cols << " residual="
                                  << residual << " residual_out=" << residual_out << " in_place=" << in_place);
  Rng rng(seed);
  const int64_t ld = cols + 2;
  std::vector<float> x = rng.uniform(size_t(rows * ld), -3.f, 5.f), r = rng.uniform(size_t(rows * ld)),
                     gamma = rng.uniform(size_t(cols), 0.5f, 1.5f), bta = rng.uniform(size_t(cols));
  std::vector<float> out = poisoned(size_t(rows * ld)), rout = poisoned(size_t(rows * ld));
  const float eps = 1e-5f;
  std::vector<double> ref, ref_sum;
  for (int64_t i = 0; i < rows; ++i) {
    std::vector<double> s(static_cast<size_t>(cols));
    for (int64_t j = 0; j < cols; ++j) s[j] = double(x[i * ld + j]) + (residual ? r[i * ld + j] : 0.0);
    double mean = 0, var = 0;
    if (!rms) {
      for (double e : s) mean += e;
      mean /= double(cols);
    }
    for (double e : s) var += (e - mean) * (e - mean);
    var /= double(cols);
    for (int64_t j = 0; j < cols; ++j) {
      ref.push_back((s[j] - mean) / std::sqrt(var + eps) * gamma[j] + (!rms && beta ? bta[j] : 0.0));
      ref_sum.push_back(s[j]);
    }
  }
  if (in_place) out = x;
  TestHost host;
  parley_norm_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.rows = rows, a.cols = cols;
  a.x = in_place ? out.data() : x.data();
  a.ld_x = ld;
  a.residual = residual ? r.data() : nullptr;
  a.ld_residual = ld;
  a.residual_out = residual_out ? rout.data() : nullptr;
  a.ld_residual_out = ld;
  a.gamma = gamma.data();
  a.beta = beta ? bta.data() : nullptr;
  a.eps = eps;
  a.out = out.data();
  a.ld_out = ld;
  ASSERT_EQ(find_kernel(rms ? PARLEY_OP_RMS_NORM : PARLEY_OP_LAYER_NORM)(host.context(), &a), PARLEY_KERNEL_OK)
      << host.last_error();
  std::vector<float> got, got_sum;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      got.push_back(out[i * ld + j]);
      got_sum.push_back(rout[i * ld + j]);
    }
  EXPECT_LE(rel_error(got, ref), kF32Tol);
  if (residual && residual_out) {
    EXPECT_LE(rel_error(got_sum, ref_sum), kF32Tol);
  }
}

TEST(Norm, LayerNorm) {
  for (int64_t cols : kCols) {
    run_norm(false, 5, cols, false, false, true, false);
    run_norm(false, 3, cols, false, false, false, true);
    run_norm(false, 4, cols, true, true, true, false);
    run_norm(false, 4, cols, true, false, true, true);
  }
  run_norm(false, 300, 64, true, true, true, false);
}

TEST(Norm, RmsNorm) {
  for (int64_t cols : kCols) {
    run_norm(true, 5, cols, false, false, false, false);
    run_norm(true, 3, cols, false, false, false, true);
    run_norm(true, 4, cols, true, true, false, false);
    run_norm(true, 4, cols, true, false, false, true);
  }
  run_norm(true, 300, 64, true, true, false, false);
}

void run_rotary(int64_t batch, int64_t seq, int64_t heads, int64_t head_dim, int64_t rotary_dim, bool interleaved,
                float factor, bool bshd) {
  PARLEY_CASE_SEED(seed);
  SCOPED_TRACE(testing::Message() << "rotary b=" << batch << " s=" << seq << " h=" << heads << " d=" << head_dim
                                  << " rd=" << rotary_dim << " interleaved=" << interleaved << " bshd=" << bshd);
  Rng rng(seed);
  // [b,s,h,d] dense, or [b,h,s,d] viewed through strides.
  const int64_t sb = seq * heads * head_dim + 3;
  const int64_t sh = bshd ? head_dim : seq * head_dim;
  const int64_t ss = bshd ? heads * head_dim : head_dim;
  std::vector<float> x = rng.uniform(size_t(batch * sb), -2.f, 2.f);
  std::vector<int32_t> pos;
  for (int64_t t = 0; t < batch * seq; ++t) pos.push_back(int32_t(rng.integer(0, 5000)));
  std::vector<float> inv_freq;
  for (int64_t i = 0; i < rotary_dim / 2; ++i)
    inv_freq.push_back(float(1.0 / std::pow(10000.0, double(2 * i) / double(rotary_dim))));
  std::vector<double> ref(x.begin(), x.end());
  const int64_t half = rotary_dim / 2;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s < seq; ++s)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t base = b * sb + s * ss + h * sh;
        for (int64_t i = 0; i < half; ++i) {
          // HF computes the angle as a float32 product (documented in rotary.cpp).
          const double ang = double(float(pos[b * seq + s]) * inv_freq[i]);
          const double cs = std::cos(ang) * factor, sn = std::sin(ang) * factor;
          const int64_t p0 = base + (interleaved ? 2 * i : i), p1 = p0 + (interleaved ? 1 : half);
          const double a0 = x[p0], a1 = x[p1];
          ref[p0] = a0 * cs - a1 * sn;
          ref[p1] = a1 * cs + a0 * sn;
        }
      }
  TestHost host;
  parley_rotary_args a{};
  a.struct_size = sizeof a;
  a.dtype = PARLEY_DTYPE_F32;
  a.batch = batch, a.seq = seq, a.heads = heads, a.head_dim = head_dim, a.rotary_dim = rotary_dim;
  a.x = x.data(), a.stride_batch = sb, a.stride_seq = ss, a.stride_head = sh;
  a.positions = pos.data(), a.inv_freq = inv_freq.data(), a.interleaved = interleaved;
  a.attention_factor = factor;
  ASSERT_EQ(find_kernel(PARLEY_OP_ROTARY)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
  EXPECT_LE(rel_error(x, ref), kF32Tol);
}

TEST(Rotary, Styles) {
  for (bool inter : {false, true})
    for (bool bshd : {true, false}) {
      run_rotary(2, 7, 3, 64, 64, inter, 1.f, bshd);
      run_rotary(1, 33, 2, 128, 128, inter, 1.f, bshd);
      run_rotary(2, 5, 4, 64, 32, inter, 1.f, bshd);  // partial rotary (GPT-NeoX / Phi)
      run_rotary(1, 1, 1, 10, 6, inter, 1.3f, bshd);  // attention_factor (YaRN/LongRoPE)
    }
}

using ActFn = parley_kernel_fn;

TEST(Activation, AllKinds) {
  for (int act = 0; act < PARLEY_ACT_COUNT_; ++act)
    for (int64_t cols : kCols)
      for (bool in_place : {false, true}) {
        PARLEY_CASE_SEED(seed);
        SCOPED_TRACE(testing::Message() << "act=" << act << " cols=" << cols << " in_place=" << in_place);
        Rng rng(seed);
        const int64_t rows = 3, ld = cols + 1;
        std::vector<float> x = rng.uniform(size_t(rows * ld), -6.f, 6.f), out = poisoned(x.size());
        if (in_place) out = x;
        std::vector<double> ref;
        std::vector<float> got;
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) ref.push_back(act_ref(act, x[i * ld + j]));
        TestHost host;
        parley_activation_args a{};
        a.struct_size = sizeof a;
        a.dtype = PARLEY_DTYPE_F32;
        a.activation = static_cast<parley_activation>(act);
        a.rows = rows, a.cols = cols;
        a.x = in_place ? out.data() : x.data(), a.ld_x = ld, a.out = out.data(), a.ld_out = ld;
        ASSERT_EQ(find_kernel(PARLEY_OP_ACTIVATION)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) got.push_back(out[i * ld + j]);
        EXPECT_LE(rel_error(got, ref), kF32Tol);
      }
}

TEST(GatedActivation, AllKinds) {
  for (int act = 0; act < PARLEY_ACT_COUNT_; ++act)
    for (int64_t cols : kCols)
      for (int alias = 0; alias < 3; ++alias) {  // none, out=gate, out=up
        PARLEY_CASE_SEED(seed);
        SCOPED_TRACE(testing::Message() << "act=" << act << " cols=" << cols << " alias=" << alias);
        Rng rng(seed);
        const int64_t rows = 4, ld = cols + 3;
        std::vector<float> g = rng.uniform(size_t(rows * ld), -6.f, 6.f), u = rng.uniform(size_t(rows * ld), -2.f, 2.f);
        std::vector<double> ref;
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) ref.push_back(act_ref(act, g[i * ld + j]) * u[i * ld + j]);
        std::vector<float> out = poisoned(g.size());
        float *o = alias == 1 ? g.data() : alias == 2 ? u.data() : out.data();
        TestHost host;
        parley_gated_activation_args a{};
        a.struct_size = sizeof a;
        a.dtype = PARLEY_DTYPE_F32;
        a.activation = static_cast<parley_activation>(act);
        a.rows = rows, a.cols = cols;
        a.gate = g.data(), a.ld_gate = ld, a.up = u.data(), a.ld_up = ld, a.out = o, a.ld_out = ld;
        ASSERT_EQ(find_kernel(PARLEY_OP_GATED_ACTIVATION)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
        std::vector<float> got;
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) got.push_back(o[i * ld + j]);
        EXPECT_LE(rel_error(got, ref), kF32Tol);
      }
}

TEST(Add, Sizes) {
  for (int64_t n : {1, 7, 33, 65, 100000})
    for (float alpha : {1.f, -0.5f}) {
      PARLEY_CASE_SEED(seed);
      Rng rng(seed);
      std::vector<float> x = rng.uniform(size_t(n)), y = rng.uniform(size_t(n)), out = poisoned(size_t(n));
      std::vector<double> ref;
      for (int64_t i = 0; i < n; ++i) ref.push_back(double(alpha) * x[i] + y[i]);
      TestHost host;
      parley_add_args a{sizeof(parley_add_args), PARLEY_DTYPE_F32, n, x.data(), y.data(), out.data(), alpha};
      ASSERT_EQ(find_kernel(PARLEY_OP_ADD)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
      EXPECT_LE(rel_error(out, ref), kF32Tol);
      a.out = x.data();  // out aliases a
      ASSERT_EQ(find_kernel(PARLEY_OP_ADD)(host.context(), &a), PARLEY_KERNEL_OK);
      EXPECT_LE(rel_error(x, ref), kF32Tol);
    }
}

void run_softmax(bool log, int64_t rows, int64_t cols, float spread, bool in_place) {
  PARLEY_CASE_SEED(seed);
  SCOPED_TRACE(testing::Message() << (log ? "log_softmax" : "softmax") << " rows=" << rows << " cols=" << cols
                                  << " spread=" << spread);
  Rng rng(seed);
  const int64_t ld = cols + 1;
  std::vector<float> x = rng.uniform(size_t(rows * ld), -spread, spread), out = poisoned(x.size());
  if (in_place) out = x;
  std::vector<double> ref;
  for (int64_t i = 0; i < rows; ++i) {
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < cols; ++j) mx = std::max(mx, double(x[i * ld + j]));
    for (int64_t j = 0; j < cols; ++j) sum += std::exp(x[i * ld + j] - mx);
    for (int64_t j = 0; j < cols; ++j)
      ref.push_back(log ? x[i * ld + j] - mx - std::log(sum) : std::exp(x[i * ld + j] - mx) / sum);
  }
  TestHost host;
  parley_softmax_args a{
      sizeof(parley_softmax_args), PARLEY_DTYPE_F32, rows, cols, in_place ? out.data() : x.data(), ld, out.data(), ld};
  ASSERT_EQ(find_kernel(log ? PARLEY_OP_LOG_SOFTMAX : PARLEY_OP_SOFTMAX)(host.context(), &a), PARLEY_KERNEL_OK)
      << host.last_error();
  std::vector<float> got;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) got.push_back(out[i * ld + j]);
  EXPECT_LE(rel_error(got, ref), kF32Tol);
}

TEST(Softmax, Stable) {
  for (bool log : {false, true})
    for (int64_t cols : kCols) {
      run_softmax(log, 5, cols, 4.f, false);
      run_softmax(log, 3, cols, 4.f, true);
      run_softmax(log, 2, cols, 200.f, false);  // exp overflows without max subtraction
    }
  run_softmax(false, 2, 32000, 10.f, false);
  run_softmax(true, 2, 32000, 10.f, false);
}

TEST(Embedding, F32AndI8) {
  for (bool i8 : {false, true})
    for (int64_t dim : {1, 7, 64, 65}) {
      PARLEY_CASE_SEED(seed);
      SCOPED_TRACE(testing::Message() << "i8=" << i8 << " dim=" << dim);
      Rng rng(seed);
      const int64_t vocab = 50, count = 13, ld = dim + 2;
      std::vector<float> table = rng.uniform(size_t(vocab * dim)), scales = rng.uniform(size_t(vocab), 0.01f, 0.1f);
      std::vector<int8_t> qtable;
      for (int64_t i = 0; i < vocab * dim; ++i) qtable.push_back(int8_t(rng.integer(-127, 127)));
      std::vector<int32_t> ids;
      for (int64_t i = 0; i < count; ++i) ids.push_back(int32_t(rng.integer(0, vocab - 1)));
      ids[0] = 0, ids[1] = int32_t(vocab - 1);
      const float scale = 1.7f;
      std::vector<double> ref;
      for (int64_t i = 0; i < count; ++i)
        for (int64_t j = 0; j < dim; ++j)
          ref.push_back(i8 ? double(qtable[ids[i] * dim + j]) * scales[ids[i]] * scale
                           : double(table[ids[i] * dim + j]) * scale);
      std::vector<float> out = poisoned(size_t(count * ld));
      TestHost host;
      parley_embedding_args a{};
      a.struct_size = sizeof a;
      a.dtype = PARLEY_DTYPE_F32;
      a.table_dtype = i8 ? PARLEY_DTYPE_I8 : PARLEY_DTYPE_F32;
      a.count = count, a.vocab = vocab, a.dim = dim, a.ids = ids.data();
      a.table = i8 ? static_cast<const void *>(qtable.data()) : table.data();
      a.row_scales = i8 ? scales.data() : nullptr;
      a.scale = scale, a.out = out.data(), a.ld_out = ld;
      ASSERT_EQ(find_kernel(PARLEY_OP_EMBEDDING)(host.context(), &a), PARLEY_KERNEL_OK) << host.last_error();
      std::vector<float> got;
      for (int64_t i = 0; i < count; ++i)
        for (int64_t j = 0; j < dim; ++j) got.push_back(out[i * ld + j]);
      EXPECT_LE(rel_error(got, ref), kF32Tol);
    }
}

TEST(Embedding, OutOfRangeIdIsInvalidAndWritesNothing) {
  std::vector<float> table(40, 0.25f), out = poisoned(8);
  for (int32_t bad : {10, -1, 1 << 30}) {
    std::vector<int32_t> ids = {1, 2, bad, 3};
    TestHost host;
    parley_embedding_args a{};
    a.struct_size = sizeof a;
    a.dtype = PARLEY_DTYPE_F32;
    a.table_dtype = PARLEY_DTYPE_F32;
    a.count = 2 + 2, a.vocab = 10, a.dim = 2, a.ids = ids.data(), a.table = table.data(), a.scale = 1.f;
    a.out = out.data(), a.ld_out = 2;
    EXPECT_EQ(find_kernel(PARLEY_OP_EMBEDDING)(host.context(), &a), PARLEY_KERNEL_INVALID_ARGUMENT);
    EXPECT_NE(host.last_error().find(std::to_string(bad)), std::string::npos) << host.last_error();
    EXPECT_NE(host.last_error().find("ids[2]"), std::string::npos) << host.last_error();
    for (float v : out) EXPECT_TRUE(std::isnan(v));
  }
}

}  // namespace
}  // namespace parley::test
