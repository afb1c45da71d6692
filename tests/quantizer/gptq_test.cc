// GPTQ (lcd/quantizer/gptq.h): properties on fresh random layers (seed
// printed; replay with LCD_TEST_SEED=<seed>). The float64 numpy reference of
// the whole algorithm is tests/python/test_gptq.py; here:
//  * the prepared factor U is upper triangular and U^T U (H + damp I) = I in
//    the processing order, checked with this file's own products;
//  * with H = I there is no error feedback, so GPTQ must be QuantizeRtn
//    byte for byte (with and without act-order);
//  * on a correlated H the layer output error tr(E H E^T) is below RTN's;
//  * the result does not depend on the thread count, and the lazy batch
//    size only changes the summation order (codes equal but for near-ties);
//  * dead input columns decode to 0; LayerOutputError matches a direct sum;
//  * bad input is refused with InvalidArgument.
#include "lcd/quantizer/gptq.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "lcd/kernels/dtype.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/quantize_matrix.h"
#include "quantizer_test_util.h"

namespace lcd::quantizer {
namespace {

using kernels::testing::SeedMessage;
using test_util::FreshSeed;

std::vector<float> RandomWeights(std::mt19937_64& rng, int64_t n) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(n));
  for (float& x : w) x = normal(rng) * (u(rng) < 0.01f ? 8.0f : 1.0f);
  return w;
}

// E[x x^T] of x = z A (z standard normal, A a random mixing with a few loud
// columns): correlated, full rank, unequal diagonal.
std::vector<double> CorrelatedHessian(std::mt19937_64& rng, int64_t cols, int64_t samples, double loud = 10.0) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> a(static_cast<size_t>(cols * cols));
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t j = 0; j < cols; ++j) a[i * cols + j] = (i == j ? 1.0 : 0.3) * normal(rng);
  }
  std::vector<double> scale(static_cast<size_t>(cols));
  for (double& s : scale) s = u(rng) < 0.05 ? loud : 1.0;
  std::vector<double> h(static_cast<size_t>(cols * cols), 0.0), x(static_cast<size_t>(cols));
  std::vector<double> z(static_cast<size_t>(cols));
  for (int64_t s = 0; s < samples; ++s) {
    for (double& v : z) v = normal(rng);
    for (int64_t j = 0; j < cols; ++j) {
      double acc = 0.0;
      for (int64_t k = 0; k < cols; ++k) acc += z[k] * a[k * cols + j];
      x[j] = acc * scale[j];
    }
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) h[i * cols + j] += x[i] * x[j];
    }
  }
  for (double& v : h) v /= static_cast<double>(samples);
  return h;
}

std::vector<double> Identity(int64_t n) {
  std::vector<double> h(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) h[i * n + i] = 1.0;
  return h;
}

double MeanDiag(const std::vector<double>& h, int64_t n) {
  double m = 0.0;
  for (int64_t i = 0; i < n; ++i) m += h[i * n + i];
  return m / static_cast<double>(n);
}

TEST(GptqHessianTest, FactorIsUpperAndInvertsTheDampedPermutedHessian) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  const int64_t n = 150;  // Spans blocks of the Cholesky (64) unevenly.
  const std::vector<double> h = CorrelatedHessian(rng, n, 300);
  for (const bool act_order : {false, true}) {
    GptqOptions opts;
    opts.act_order = act_order;
    absl::StatusOr<GptqHessian> hs = PrepareGptqHessian(h.data(), n, opts);
    ASSERT_TRUE(hs.ok()) << hs.status();
    EXPECT_DOUBLE_EQ(hs->damp, 0.01 * MeanDiag(h, n));
    for (int64_t p = 1; p < n; ++p) {
      if (act_order) {
        EXPECT_GE(h[hs->perm[p - 1] * (n + 1)], h[hs->perm[p] * (n + 1)]);
      } else {
        EXPECT_EQ(hs->perm[p], p);
      }
    }
    double worst = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < i; ++j) ASSERT_EQ(hs->u[i * n + j], 0.0);
      EXPECT_GT(hs->u[i * n + i], 0.0);
    }
    // (U^T U) Hp = I with Hp[a][b] = H[perm a][perm b] + damp [a == b].
    std::vector<double> utu(static_cast<size_t>(n * n), 0.0);
    for (int64_t k = 0; k < n; ++k) {
      for (int64_t i = k; i < n; ++i) {
        for (int64_t j = k; j < n; ++j) utu[i * n + j] += hs->u[k * n + i] * hs->u[k * n + j];
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t k = 0; k < n; ++k) {
          const double hp = h[hs->perm[k] * n + hs->perm[j]] + (k == j ? hs->damp : 0.0);
          s += utu[i * n + k] * hp;
        }
        worst = std::max(worst, std::abs(s - (i == j ? 1.0 : 0.0)));
      }
    }
    EXPECT_LT(worst, 1e-9) << "act_order " << act_order;
  }
}

TEST(GptqTest, IdentityHessianIsRoundToNearest) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 37, cols = 172;  // Short last groups at g = 64 and 128.
  const std::vector<float> w = RandomWeights(rng, rows * cols);
  const std::vector<double> h = Identity(cols);
  for (const int bits : {2, 3, 4, 8}) {
    for (const int64_t g : {int64_t{64}, int64_t{128}, int64_t{7}}) {
      for (const bool act_order : {false, true}) {
        GptqOptions opts;
        opts.act_order = act_order;
        absl::StatusOr<GptqHessian> hs = PrepareGptqHessian(h.data(), cols, opts);
        ASSERT_TRUE(hs.ok()) << hs.status();
        absl::StatusOr<QuantizedMatrix> q = QuantizeGptq(w.data(), rows, cols, bits, g, *hs);
        absl::StatusOr<QuantizedMatrix> r = QuantizeRtn(w.data(), rows, cols, bits, g);
        ASSERT_TRUE(q.ok() && r.ok()) << q.status() << r.status();
        EXPECT_EQ(q->layout.format, kernels::QuantFormat::kAffine);
        EXPECT_EQ(q->codes, r->codes) << "bits " << bits << " g " << g << " act_order " << act_order;
        EXPECT_EQ(q->params, r->params) << "bits " << bits << " g " << g << " act_order " << act_order;
      }
    }
  }
}

TEST(GptqTest, OutputErrorBelowRtnOnCorrelatedInputs) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 128, cols = 160;
  const std::vector<float> w = RandomWeights(rng, rows * cols);
  const std::vector<double> h = CorrelatedHessian(rng, cols, 400, 3.0);
  for (const int bits : {2, 3, 4}) {
    for (const bool act_order : {false, true}) {
      GptqOptions opts;
      opts.act_order = act_order;
      absl::StatusOr<QuantizedMatrix> r = QuantizeRtn(w.data(), rows, cols, bits, 64);
      ASSERT_TRUE(r.ok());
      absl::StatusOr<GptqHessian> hs = PrepareGptqHessian(h.data(), cols, opts);
      ASSERT_TRUE(hs.ok()) << hs.status();
      absl::StatusOr<QuantizedMatrix> q = QuantizeGptq(w.data(), rows, cols, bits, 64, *hs);
      ASSERT_TRUE(q.ok()) << q.status();
      const double eg = *LayerOutputError(w.data(), rows, cols, *q, h.data());
      const double er = *LayerOutputError(w.data(), rows, cols, *r, h.data());
      // GPTQ is greedy, not optimal. With columns 3x louder than the rest
      // the ratio measured 0.32-0.70 over 12 seeds; with 10x louder ones,
      // 2 bits without act-order reached 1.08 in 1 of 20 seeds (act-order:
      // <= 0.42), so the loud columns stay moderate here.
      std::printf("bits %d act_order %d: gptq/rtn %.3f\n", bits, int(act_order), eg / er);
      EXPECT_LT(eg, 0.85 * er) << "bits " << bits << " act_order " << act_order << ": gptq " << eg << " rtn " << er;
    }
  }
}

TEST(GptqTest, IndependentOfThreadsAndBlockSize) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 70, cols = 300;
  const std::vector<float> w = RandomWeights(rng, rows * cols);
  const std::vector<double> h = CorrelatedHessian(rng, cols, 400);
  kernels::ThreadPool pool(3);
  for (const bool act_order : {false, true}) {
    GptqOptions opts;
    opts.act_order = act_order;
    absl::StatusOr<GptqHessian> hs = PrepareGptqHessian(h.data(), cols, opts);
    ASSERT_TRUE(hs.ok());
    absl::StatusOr<QuantizedMatrix> serial = QuantizeGptq(w.data(), rows, cols, 3, 128, *hs, nullptr);
    absl::StatusOr<QuantizedMatrix> parallel = QuantizeGptq(w.data(), rows, cols, 3, 128, *hs, &pool);
    ASSERT_TRUE(serial.ok() && parallel.ok());
    EXPECT_EQ(serial->codes, parallel->codes);
    EXPECT_EQ(serial->params, parallel->params);
    // Block size 1 (no lazy batching) and 37 (blocks unaligned with groups):
    // the same arithmetic in another order, so codes agree but for near-ties.
    for (const int64_t block : {int64_t{1}, int64_t{37}}) {
      opts.block_size = block;
      absl::StatusOr<GptqHessian> hb = PrepareGptqHessian(h.data(), cols, opts);
      ASSERT_TRUE(hb.ok());
      absl::StatusOr<QuantizedMatrix> b = QuantizeGptq(w.data(), rows, cols, 3, 128, *hb, &pool);
      ASSERT_TRUE(b.ok());
      int64_t differ = 0;
      for (size_t i = 0; i < b->codes.size(); ++i) differ += b->codes[i] != serial->codes[i];
      EXPECT_LE(differ, static_cast<int64_t>(b->codes.size() / 1000)) << "block " << block;
      const double e0 = *LayerOutputError(w.data(), rows, cols, *serial, h.data());
      const double e1 = *LayerOutputError(w.data(), rows, cols, *b, h.data());
      EXPECT_NEAR(e1, e0, 1e-3 * e0) << "block " << block;
    }
  }
}

TEST(GptqTest, DeadColumnsDecodeToZero) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 9, cols = 40;
  const std::vector<float> w = RandomWeights(rng, rows * cols);
  std::vector<double> h = CorrelatedHessian(rng, cols, 100);
  for (const int64_t dead : {int64_t{0}, int64_t{17}, cols - 1}) {
    for (int64_t k = 0; k < cols; ++k) h[dead * cols + k] = h[k * cols + dead] = 0.0;
  }
  for (const bool act_order : {false, true}) {
    GptqOptions opts;
    opts.act_order = act_order;
    absl::StatusOr<GptqHessian> hs = PrepareGptqHessian(h.data(), cols, opts);
    ASSERT_TRUE(hs.ok()) << hs.status();
    EXPECT_EQ(hs->dead[17], 1);
    EXPECT_EQ(hs->dead[16], 0);
    absl::StatusOr<QuantizedMatrix> q = QuantizeGptq(w.data(), rows, cols, 2, 16, *hs);
    ASSERT_TRUE(q.ok()) << q.status();
    // Decoded through WeightedSquaredError: importance 1 only on dead
    // columns gives sum of their decoded squares against w = 0.
    std::vector<float> zero(static_cast<size_t>(rows * cols), 0.0f), only_dead(static_cast<size_t>(cols), 0.0f);
    only_dead[0] = only_dead[17] = only_dead[cols - 1] = 1.0f;
    EXPECT_EQ(*WeightedSquaredError(zero.data(), rows, cols, *q, only_dead.data()), 0.0);
  }
}

TEST(GptqTest, LayerOutputErrorMatchesDirectSum) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 6, cols = 50;
  const std::vector<float> w = RandomWeights(rng, rows * cols);
  const std::vector<double> h = CorrelatedHessian(rng, cols, 80);
  absl::StatusOr<QuantizedMatrix> q = QuantizeRtn(w.data(), rows, cols, 2, 16);
  ASSERT_TRUE(q.ok());
  // Decoded weights: importance picks one column at a time.
  std::vector<double> e(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = c / 16;
      const uint16_t* p = q->params.data() + (r * q->layout.groups() + g) * 2;
      const int64_t bit = c * 2;
      const uint32_t code = (q->codes[r * q->layout.CodeRowBytes() + bit / 8] >> (bit % 8)) & 3u;
      const float dec = kernels::Fp16ToFloat(p[0]) * (static_cast<float>(code) - kernels::Fp16ToFloat(p[1]));
      e[r * cols + c] = static_cast<double>(w[r * cols + c]) - dec;
    }
  }
  double want = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) want += e[r * cols + i] * h[i * cols + j] * e[r * cols + j];
    }
  }
  absl::StatusOr<double> got = LayerOutputError(w.data(), rows, cols, *q, h.data());
  ASSERT_TRUE(got.ok());
  EXPECT_NEAR(*got, want, 1e-10 * std::abs(want));
}

TEST(GptqTest, BadInputIsRefused) {
  const int64_t rows = 4, cols = 8;
  std::vector<float> w(static_cast<size_t>(rows * cols), 0.5f);
  std::vector<double> h = Identity(cols);
  GptqOptions opts;
  absl::StatusOr<GptqHessian> hs = PrepareGptqHessian(h.data(), cols, opts);
  ASSERT_TRUE(hs.ok());
  auto invalid = [](const absl::Status& s) { return absl::IsInvalidArgument(s); };
  EXPECT_TRUE(invalid(QuantizeGptq(w.data(), rows, cols, 0, 4, *hs).status()));
  EXPECT_TRUE(invalid(QuantizeGptq(w.data(), rows, cols, 9, 4, *hs).status()));
  EXPECT_TRUE(invalid(QuantizeGptq(w.data(), rows, cols, 2, 0, *hs).status()));
  EXPECT_TRUE(invalid(QuantizeGptq(nullptr, rows, cols, 2, 4, *hs).status()));
  EXPECT_TRUE(invalid(QuantizeGptq(w.data(), rows, cols - 1, 2, 4, *hs).status()));  // Hessian width.
  w[5] = std::nanf("");
  EXPECT_TRUE(invalid(QuantizeGptq(w.data(), rows, cols, 2, 4, *hs).status()));
  w[5] = 1e9f;  // Scale beyond fp16.
  absl::Status overflow = QuantizeGptq(w.data(), rows, cols, 2, 4, *hs).status();
  EXPECT_TRUE(invalid(overflow));
  EXPECT_NE(overflow.message().find("fp16"), std::string_view::npos) << overflow;

  EXPECT_TRUE(invalid(PrepareGptqHessian(nullptr, cols, opts).status()));
  EXPECT_TRUE(invalid(PrepareGptqHessian(h.data(), 0, opts).status()));
  GptqOptions neg = opts;
  neg.percdamp = -0.1;
  EXPECT_TRUE(invalid(PrepareGptqHessian(h.data(), cols, neg).status()));
  neg = opts;
  neg.block_size = 0;
  EXPECT_TRUE(invalid(PrepareGptqHessian(h.data(), cols, neg).status()));
  std::vector<double> bad = h;
  bad[3 * cols + 3] = -1.0;
  EXPECT_TRUE(invalid(PrepareGptqHessian(bad.data(), cols, opts).status()));
  bad = h;
  bad[1] = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(invalid(PrepareGptqHessian(bad.data(), cols, opts).status()));
  // Rank one (all-ones) without dampening: not positive definite.
  std::vector<double> ones(static_cast<size_t>(cols * cols), 1.0);
  GptqOptions nodamp = opts;
  nodamp.percdamp = 0.0;
  absl::Status s = PrepareGptqHessian(ones.data(), cols, nodamp).status();
  EXPECT_TRUE(invalid(s));
  EXPECT_NE(s.message().find("raise the dampening"), std::string_view::npos) << s;
  EXPECT_TRUE(PrepareGptqHessian(ones.data(), cols, opts).ok());  // 1% dampening suffices.
  InputGram gram;
  gram.cols = cols + 1;
  gram.xtx.assign(static_cast<size_t>((cols + 1) * (cols + 1)), 0.0);
  EXPECT_TRUE(invalid(QuantizeGptq(w.data(), rows, cols, 2, 4, gram, opts).status()));
}

}  // namespace
}  // namespace lcd::quantizer
