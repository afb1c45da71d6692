// RTN and weighted k-means against references computed here from the
// documented formulas (quant_linear.h, quantize_matrix.h): the canonical
// codes and fp16 params are decoded by this file's own reader, never by the
// code under test. Inputs are fresh random matrices (seed printed; replay
// with LCD_TEST_SEED=<seed>).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "lcd/kernels/dtype.h"
#include "lcd/kernels/thread_pool.h"
#include "lcd/quantizer/quantize_matrix.h"
#include "quantizer_test_util.h"

namespace lcd::quantizer {
namespace {

using kernels::Fp16ToFloat;
using kernels::FloatToFp16;
using test_util::FreshSeed;

struct Shape {
  int64_t rows, cols, group;
};
// Odd shapes: both leave a short last group (172 = 64+64+44, 576 = 4*128+64).
const Shape kShapes[] = {{7, 172, 64}, {5, 576, 128}};

// Gaussian weights with a few 8x outliers, like trained linear layers.
std::vector<float> RandomWeights(std::mt19937_64& rng, int64_t n) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(n));
  for (float& x : w) x = normal(rng) * (u(rng) < 0.01f ? 8.0f : 1.0f);
  return w;
}

// --- The test's own reader of the canonical layout -------------------------
int Code(const QuantizedMatrix& q, int64_t r, int64_t c) {
  const int b = q.layout.bits;
  int code = 0;
  for (int i = 0; i < b; ++i) {
    const int64_t k = c * b + i;  // Stream bit k = bit (k % 8) of byte k / 8.
    code |= ((q.codes[r * q.layout.CodeRowBytes() + k / 8] >> (k % 8)) & 1) << i;
  }
  return code;
}
int64_t P(const QuantizedMatrix& q) {
  return q.layout.format == kernels::QuantFormat::kAffine ? 2 : (int64_t{1} << q.layout.bits);
}
float Param(const QuantizedMatrix& q, int64_t r, int64_t g, int64_t k) {
  return Fp16ToFloat(q.params[(r * q.layout.groups() + g) * P(q) + k]);
}
float Decode(const QuantizedMatrix& q, int64_t r, int64_t c) {
  const int64_t g = c / q.layout.group_size;
  const int code = Code(q, r, c);
  if (q.layout.format == kernels::QuantFormat::kAffine) {
    return Param(q, r, g, 0) * (static_cast<float>(code) - Param(q, r, g, 1));
  }
  return Param(q, r, g, code);
}
// Weighted squared error of one (row, group), or of the whole matrix (g < 0).
double GroupError(const QuantizedMatrix& q, const std::vector<float>& w, int64_t r, int64_t g,
                  const float* imp = nullptr) {
  const int64_t cols = q.layout.cols, gs = q.layout.group_size;
  double e = 0.0;
  for (int64_t c = g * gs; c < std::min(cols, (g + 1) * gs); ++c) {
    const double d = static_cast<double>(w[r * cols + c]) - Decode(q, r, c);
    e += (imp ? imp[c] : 1.0) * d * d;
  }
  return e;
}
double TotalError(const QuantizedMatrix& q, const std::vector<float>& w, const float* imp = nullptr) {
  double e = 0.0;
  for (int64_t r = 0; r < q.layout.rows; ++r)
    for (int64_t g = 0; g < q.layout.groups(); ++g) e += GroupError(q, w, r, g, imp);
  return e;
}

void ExpectWellFormed(const QuantizedMatrix& q, kernels::QuantFormat format, int bits, const Shape& s) {
  ASSERT_EQ(q.layout.format, format);
  ASSERT_EQ(q.layout.bits, bits);
  ASSERT_EQ(q.layout.rows, s.rows);
  ASSERT_EQ(q.layout.cols, s.cols);
  ASSERT_EQ(q.layout.group_size, s.group);
  const int64_t row_bytes = (s.cols * bits + 7) / 8;
  ASSERT_EQ(q.codes.size(), static_cast<size_t>(s.rows * row_bytes));
  ASSERT_EQ(q.params.size(), static_cast<size_t>(s.rows * ((s.cols + s.group - 1) / s.group) * P(q)));
  for (int64_t r = 0; r < s.rows; ++r) {
    for (int64_t k = s.cols * bits; k < row_bytes * 8; ++k) {
      ASSERT_EQ((q.codes[r * row_bytes + k / 8] >> (k % 8)) & 1, 0) << "padding bit " << k << " row " << r;
    }
  }
  for (uint16_t p : q.params) ASSERT_TRUE(std::isfinite(Fp16ToFloat(p)));
}

// --- RTN --------------------------------------------------------------------

TEST(QuantizeRtn, ReconstructsTheClosedForm) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const Shape& s : kShapes) {
    const std::vector<float> w = RandomWeights(rng, s.rows * s.cols);
    for (int bits : {2, 3, 4}) {
      SCOPED_TRACE("cols " + std::to_string(s.cols) + " bits " + std::to_string(bits));
      absl::StatusOr<QuantizedMatrix> q = QuantizeRtn(w.data(), s.rows, s.cols, bits, s.group);
      ASSERT_TRUE(q.ok()) << q.status();
      ExpectWellFormed(*q, kernels::QuantFormat::kAffine, bits, s);
      const float maxq = static_cast<float>((1 << bits) - 1);
      for (int64_t r = 0; r < s.rows; ++r) {
        for (int64_t g = 0; g < q->layout.groups(); ++g) {
          const int64_t c0 = g * s.group, c1 = std::min(s.cols, c0 + s.group);
          float lo = 0.0f, hi = 0.0f;
          for (int64_t c = c0; c < c1; ++c) {
            lo = std::min(lo, w[r * s.cols + c]);
            hi = std::max(hi, w[r * s.cols + c]);
          }
          const float scale = Fp16ToFloat(FloatToFp16((hi - lo) / maxq));
          const float zero = std::clamp(std::round(-lo / scale), 0.0f, maxq);
          ASSERT_EQ(Param(*q, r, g, 0), scale);
          ASSERT_EQ(Param(*q, r, g, 1), zero);
          for (int64_t c = c0; c < c1; ++c) {
            const float x = w[r * s.cols + c];
            const int want = static_cast<int>(std::clamp(std::round(x / scale) + zero, 0.0f, maxq));
            ASSERT_EQ(Code(*q, r, c), want) << "row " << r << " col " << c;
            // The grid covers [lo, hi] up to the fp16 rounding of the scale.
            ASSERT_LE(std::fabs(x - Decode(*q, r, c)), scale * (0.5f + maxq * 0x1p-11f) + 1e-7f);
          }
        }
      }
    }
  }
}

TEST(QuantizeRtn, ConstantAndZeroGroups) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Shape s{3, 172, 64};
  std::vector<float> w = RandomWeights(rng, s.rows * s.cols);
  std::uniform_real_distribution<float> mag(0.01f, 2.0f);
  const float pos = mag(rng), neg = -mag(rng);
  for (int64_t c = 0; c < 64; ++c) {
    w[0 * s.cols + c] = pos;
    w[1 * s.cols + c] = neg;
    w[2 * s.cols + 64 + c] = 0.0f;
  }
  for (int bits : {2, 3, 4}) {
    for (bool kmeans : {false, true}) {
      SCOPED_TRACE(std::string(kmeans ? "kmeans" : "rtn") + " bits " + std::to_string(bits));
      absl::StatusOr<QuantizedMatrix> q = kmeans ? QuantizeKmeans(w.data(), s.rows, s.cols, bits, s.group, nullptr)
                                                 : QuantizeRtn(w.data(), s.rows, s.cols, bits, s.group);
      ASSERT_TRUE(q.ok()) << q.status();
      for (uint16_t p : q->params) ASSERT_TRUE(std::isfinite(Fp16ToFloat(p)));
      for (int64_t c = 0; c < 64; ++c) {
        // A constant is one fp16 rounding away (relative 2^-11), zero is exact.
        EXPECT_NEAR(Decode(*q, 0, c), pos, pos * 0x1p-10f);
        EXPECT_NEAR(Decode(*q, 1, c), neg, -neg * 0x1p-10f);
        EXPECT_EQ(Decode(*q, 2, 64 + c), 0.0f);
      }
    }
  }
}

// --- k-means ----------------------------------------------------------------

// The quantile seed of LCD.md step 3 for uniform importance, computed here:
// sorted element i goes to bin floor((i + 0.5) K / n); centroid = bin mean.
std::vector<float> SeedCentroids(const std::vector<float>& w, int64_t off, int64_t n, int k_count) {
  std::vector<float> v(w.begin() + off, w.begin() + off + n);
  std::sort(v.begin(), v.end());
  std::vector<double> sum(k_count, 0.0), cnt(k_count, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const int bin = std::min<int>(k_count - 1, static_cast<int>(std::floor((i + 0.5) * k_count / n)));
    sum[bin] += v[i];
    cnt[bin] += 1.0;
  }
  std::vector<float> c;
  for (int k = 0; k < k_count; ++k) {
    if (cnt[k] > 0) c.push_back(Fp16ToFloat(FloatToFp16(static_cast<float>(sum[k] / cnt[k]))));
  }
  return c;
}
double NearestError(const std::vector<float>& w, int64_t off, int64_t n, const std::vector<float>& c) {
  double e = 0.0;
  for (int64_t i = off; i < off + n; ++i) {
    float best = INFINITY;
    for (float x : c) best = std::min(best, std::fabs(w[i] - x));
    e += static_cast<double>(best) * best;
  }
  return e;
}

TEST(QuantizeKmeans, NearestCodesBeatsSeedAndRtn) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const Shape& s : kShapes) {
    const std::vector<float> w = RandomWeights(rng, s.rows * s.cols);
    for (int bits : {2, 3, 4}) {
      SCOPED_TRACE("cols " + std::to_string(s.cols) + " bits " + std::to_string(bits));
      const int k_count = 1 << bits;
      absl::StatusOr<QuantizedMatrix> q = QuantizeKmeans(w.data(), s.rows, s.cols, bits, s.group, nullptr);
      ASSERT_TRUE(q.ok()) << q.status();
      ExpectWellFormed(*q, kernels::QuantFormat::kCodebook, bits, s);
      absl::StatusOr<QuantizedMatrix> seed_only =
          QuantizeKmeans(w.data(), s.rows, s.cols, bits, s.group, nullptr, /*max_iters=*/0);
      ASSERT_TRUE(seed_only.ok()) << seed_only.status();
      absl::StatusOr<QuantizedMatrix> rtn = QuantizeRtn(w.data(), s.rows, s.cols, bits, s.group);
      ASSERT_TRUE(rtn.ok()) << rtn.status();
      double km_total = 0.0, seed_total = 0.0, rtn_total = 0.0;
      for (int64_t r = 0; r < s.rows; ++r) {
        for (int64_t g = 0; g < q->layout.groups(); ++g) {
          const int64_t c0 = g * s.group, n = std::min(s.group, s.cols - c0);
          std::vector<float> cent(k_count);
          for (int k = 0; k < k_count; ++k) cent[k] = Param(*q, r, g, k);
          ASSERT_TRUE(std::is_sorted(cent.begin(), cent.end()));
          for (int64_t c = c0; c < c0 + n; ++c) {  // Every code names a nearest stored centroid.
            const float x = w[r * s.cols + c];
            float best = INFINITY;
            for (float y : cent) best = std::min(best, std::fabs(x - y));
            ASSERT_EQ(std::fabs(x - Decode(*q, r, c)), best) << "row " << r << " col " << c;
          }
          // max_iters = 0 is exactly the seed (all bins non-empty here: n >= 44 > K).
          const std::vector<float> ref_seed = SeedCentroids(w, r * s.cols + c0, n, k_count);
          ASSERT_EQ(ref_seed.size(), static_cast<size_t>(k_count));
          for (int k = 0; k < k_count; ++k) ASSERT_EQ(Param(*seed_only, r, g, k), ref_seed[k]) << "k " << k;
          const double km = GroupError(*q, w, r, g);
          const double sd = NearestError(w, r * s.cols + c0, n, ref_seed);
          // Lloyd never raises the objective; the only slack is the final fp16
          // rounding of the centroids (second order at a weighted mean).
          EXPECT_LE(km, sd * (1 + 1e-3) + 1e-12) << "row " << r << " group " << g;
          km_total += km;
          seed_total += sd;
          rtn_total += GroupError(*rtn, w, r, g);
        }
      }
      EXPECT_LT(km_total, seed_total);
      // k-means is free to place its 2^b levels, RTN spreads them uniformly
      // over [min, max]: the aggregate must be clearly lower (measured
      // ratios 0.10-0.37 on these shapes; 0.6 leaves room for seeds).
      EXPECT_LT(km_total, 0.6 * rtn_total) << "kmeans " << km_total << " rtn " << rtn_total;
    }
  }
}

TEST(QuantizeKmeans, ImportanceLowersErrorOnHeavyColumns) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> light(0.5f, 1.5f), heavy(50.0f, 150.0f), u(0.0f, 1.0f);
  for (const Shape& s : kShapes) {
    const std::vector<float> w = RandomWeights(rng, s.rows * s.cols);
    std::vector<float> imp(s.cols), heavy_only(s.cols, 0.0f);
    for (int64_t c = 0; c < s.cols; ++c) {
      const bool is_heavy = u(rng) < 0.1f;
      imp[c] = is_heavy ? heavy(rng) : light(rng);
      heavy_only[c] = is_heavy ? 1.0f : 0.0f;
    }
    for (int bits : {2, 3, 4}) {
      SCOPED_TRACE("cols " + std::to_string(s.cols) + " bits " + std::to_string(bits));
      absl::StatusOr<QuantizedMatrix> weighted =
          QuantizeKmeans(w.data(), s.rows, s.cols, bits, s.group, imp.data());
      absl::StatusOr<QuantizedMatrix> uniform = QuantizeKmeans(w.data(), s.rows, s.cols, bits, s.group, nullptr);
      ASSERT_TRUE(weighted.ok() && uniform.ok());
      ExpectWellFormed(*weighted, kernels::QuantFormat::kCodebook, bits, s);
      const double heavy_w = TotalError(*weighted, w, heavy_only.data());
      const double heavy_u = TotalError(*uniform, w, heavy_only.data());
      // Measured ratios 0.01-0.42; 0.7 leaves room for seeds.
      EXPECT_LT(heavy_w, 0.7 * heavy_u) << "heavy-column error, weighted " << heavy_w << " uniform " << heavy_u;
      EXPECT_LT(TotalError(*weighted, w, imp.data()), TotalError(*uniform, w, imp.data()));
    }
  }
}

TEST(QuantizeKmeans, GroupsSmallerThanTheCodebookAreExact) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Shape s{4, 11, 5};  // Groups of 5, 5, 1 against K = 16: empty clusters.
  const std::vector<float> w = RandomWeights(rng, s.rows * s.cols);
  absl::StatusOr<QuantizedMatrix> q = QuantizeKmeans(w.data(), s.rows, s.cols, 4, s.group, nullptr);
  ASSERT_TRUE(q.ok()) << q.status();
  ExpectWellFormed(*q, kernels::QuantFormat::kCodebook, 4, s);
  for (int64_t i = 0; i < s.rows * s.cols; ++i) {
    EXPECT_NEAR(Decode(*q, i / s.cols, i % s.cols), w[i], std::fabs(w[i]) * 0x1p-11f + 1e-7f);
  }
}

TEST(QuantizeMatrix, DeterministicAcrossRunsAndThreads) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Shape s{33, 576, 128};
  const std::vector<float> w = RandomWeights(rng, s.rows * s.cols);
  std::vector<float> imp(s.cols);
  std::uniform_real_distribution<float> u(0.1f, 10.0f);
  for (float& x : imp) x = u(rng);
  kernels::ThreadPool pool(2);
  for (int bits : {2, 3, 4}) {
    absl::StatusOr<QuantizedMatrix> a = QuantizeKmeans(w.data(), s.rows, s.cols, bits, s.group, imp.data());
    absl::StatusOr<QuantizedMatrix> b =
        QuantizeKmeans(w.data(), s.rows, s.cols, bits, s.group, imp.data(), 20, &pool);
    absl::StatusOr<QuantizedMatrix> c = QuantizeKmeans(w.data(), s.rows, s.cols, bits, s.group, imp.data());
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    EXPECT_EQ(a->codes, b->codes);
    EXPECT_EQ(a->params, b->params);
    EXPECT_EQ(a->codes, c->codes);
    EXPECT_EQ(a->params, c->params);
    absl::StatusOr<QuantizedMatrix> r1 = QuantizeRtn(w.data(), s.rows, s.cols, bits, s.group);
    absl::StatusOr<QuantizedMatrix> r2 = QuantizeRtn(w.data(), s.rows, s.cols, bits, s.group, &pool);
    ASSERT_TRUE(r1.ok() && r2.ok());
    EXPECT_EQ(r1->codes, r2->codes);
    EXPECT_EQ(r1->params, r2->params);
  }
}

TEST(QuantizeMatrix, WeightedSquaredErrorMatchesOwnDecode) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Shape s{7, 172, 64};
  const std::vector<float> w = RandomWeights(rng, s.rows * s.cols);
  std::vector<float> imp(s.cols);
  std::uniform_real_distribution<float> u(0.1f, 10.0f);
  for (float& x : imp) x = u(rng);
  for (bool kmeans : {false, true}) {
    absl::StatusOr<QuantizedMatrix> q = kmeans ? QuantizeKmeans(w.data(), s.rows, s.cols, 3, s.group, nullptr)
                                               : QuantizeRtn(w.data(), s.rows, s.cols, 3, s.group);
    ASSERT_TRUE(q.ok());
    absl::StatusOr<double> e = WeightedSquaredError(w.data(), s.rows, s.cols, *q, imp.data());
    ASSERT_TRUE(e.ok()) << e.status();
    const double want = TotalError(*q, w, imp.data());
    EXPECT_NEAR(*e, want, want * 1e-12);
    EXPECT_FALSE(WeightedSquaredError(w.data(), s.rows, s.cols + 1, *q).ok());
  }
}

TEST(QuantizeMatrix, RejectsBadArguments) {
  std::mt19937_64 rng(FreshSeed());
  std::vector<float> w = RandomWeights(rng, 4 * 64);
  auto expect_invalid = [](const absl::StatusOr<QuantizedMatrix>& q, const std::string& needle) {
    ASSERT_FALSE(q.ok());
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(q.status().message().find(needle), std::string::npos) << q.status();
  };
  expect_invalid(QuantizeRtn(w.data(), 4, 64, 0, 32), "bits");
  expect_invalid(QuantizeRtn(w.data(), 4, 64, 9, 32), "bits");
  expect_invalid(QuantizeKmeans(w.data(), 4, 64, 5, 32, nullptr), "bits");
  expect_invalid(QuantizeRtn(w.data(), 4, 64, 2, 0), "group_size");
  expect_invalid(QuantizeKmeans(w.data(), 4, 64, 2, -3, nullptr), "group_size");
  expect_invalid(QuantizeRtn(nullptr, 4, 64, 2, 32), "null");
  expect_invalid(QuantizeRtn(w.data(), 0, 64, 2, 32), "1x1");
  expect_invalid(QuantizeKmeans(w.data(), 4, 64, 2, 32, nullptr, -1), "max_iters");
  std::vector<float> imp(64, 1.0f);
  imp[17] = -0.5f;
  expect_invalid(QuantizeKmeans(w.data(), 4, 64, 2, 32, imp.data()), "column 17");
  w[70] = NAN;
  expect_invalid(QuantizeKmeans(w.data(), 4, 64, 2, 32, nullptr), "row 1, column 6");
  w[70] = 1e6f;  // Finite, but its scale and centroid overflow fp16.
  expect_invalid(QuantizeRtn(w.data(), 4, 64, 2, 32), "fp16");
  expect_invalid(QuantizeKmeans(w.data(), 4, 64, 2, 32, nullptr), "fp16");
}

}  // namespace
}  // namespace lcd::quantizer
