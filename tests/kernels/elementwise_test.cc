// RmsNorm, SiluMul, Add, Softmax, ApplyRope, EmbeddingLookup and WriteKv at
// every ISA level against float64 references on fresh random inputs. Sizes
// include lengths that are not multiples of the 8/16-float vector widths.
// Tolerances (stated per test) are relative to the magnitude of the result.
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernel_test_util.h"
#include "lcd/kernels/ops.h"

namespace lcd::kernels {
namespace {

using testing::AvailableIsas;
using testing::FreshSeed;
using testing::RandomVector;
using testing::ScopedIsa;
using testing::SeedMessage;

const int64_t kLengths[] = {1, 3, 7, 8, 15, 16, 17, 31, 33, 100, 128, 257, 1000, 4099};

class ElementwiseTest : public ::testing::Test {
 protected:
  ElementwiseTest() : seed_(FreshSeed()), rng_(seed_) {}
  uint64_t seed_;
  std::mt19937_64 rng_;
};

TEST_F(ElementwiseTest, RmsNorm) {
  // |y - y64| <= 2e-6 * (|y64| + max|y64| * 1e-3): fp32 sum of squares and
  // one rsqrt-equivalent; y may alias x.
  SCOPED_TRACE(SeedMessage(seed_));
  for (int64_t dim : kLengths) {
    const int64_t rows = 3;
    const std::vector<float> x = RandomVector(rng_, rows * dim, -3.0f, 3.0f);
    const std::vector<float> w = RandomVector(rng_, dim, 0.5f, 1.5f);
    const float eps = 1e-5f;
    std::vector<double> want(rows * dim);
    double max_abs = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
      const double inv = 1.0 / std::sqrt(ss / dim + eps);
      for (int64_t i = 0; i < dim; ++i) {
        want[r * dim + i] = x[r * dim + i] * inv * w[i];
        max_abs = std::max(max_abs, std::fabs(want[r * dim + i]));
      }
    }
    for (Isa isa : AvailableIsas()) {
      ScopedIsa forced(isa);
      for (bool in_place : {false, true}) {
        SCOPED_TRACE(::testing::Message()
                     << IsaName(isa) << " dim=" << dim << " in_place=" << in_place);
        std::vector<float> y = x;
        RmsNorm(in_place ? y.data() : x.data(), rows, dim, w.data(), eps, y.data());
        for (int64_t i = 0; i < rows * dim; ++i) {
          ASSERT_NEAR(y[i], want[i], 2e-6 * (std::fabs(want[i]) + max_abs * 1e-3)) << i;
        }
      }
    }
  }
}

TEST_F(ElementwiseTest, SiluMul) {
  // |y - y64| <= 2e-6 * |y64| + 1e-30 (vector exp is ~2 ulp); gate covers
  // [-20, 20] plus saturating values; y may alias gate.
  SCOPED_TRACE(SeedMessage(seed_));
  for (int64_t n : kLengths) {
    std::vector<float> gate = RandomVector(rng_, n, -20.0f, 20.0f);
    const std::vector<float> up = RandomVector(rng_, n, -2.0f, 2.0f);
    if (n > 4) {
      gate[0] = -100.0f;
      gate[1] = 100.0f;
      gate[2] = 0.0f;
      gate[3] = -87.5f;
    }
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; ++i) {
      const double g = gate[i];
      want[i] = g / (1.0 + std::exp(-g)) * up[i];
    }
    for (Isa isa : AvailableIsas()) {
      ScopedIsa forced(isa);
      SCOPED_TRACE(::testing::Message() << IsaName(isa) << " n=" << n);
      std::vector<float> y(n);
      SiluMul(gate.data(), up.data(), n, y.data());
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(y[i], want[i], 2e-6 * std::fabs(want[i]) + 1e-30) << i;
      std::vector<float> g = gate;
      SiluMul(g.data(), up.data(), n, g.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(g[i], y[i]) << "aliased y == gate differs at " << i;
    }
  }
}

TEST_F(ElementwiseTest, Add) {
  SCOPED_TRACE(SeedMessage(seed_));
  for (int64_t n : kLengths) {
    const std::vector<float> x = RandomVector(rng_, n);
    const std::vector<float> y0 = RandomVector(rng_, n);
    for (Isa isa : AvailableIsas()) {
      ScopedIsa forced(isa);
      std::vector<float> y = y0;
      Add(x.data(), n, y.data());
      // One fp32 addition: exactly the rounded float64 sum.
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(y[i], static_cast<float>(static_cast<double>(x[i]) + y0[i]))
            << IsaName(isa) << " " << i;
      }
    }
  }
}

TEST_F(ElementwiseTest, Softmax) {
  // |p - p64| <= 1e-5 * p64 + 1e-9: vector exp (~2 ulp) plus an fp32 sum of
  // up to 4099 terms; the largest logit is large to exercise the max shift.
  SCOPED_TRACE(SeedMessage(seed_));
  for (int64_t n : kLengths) {
    std::vector<float> x = RandomVector(rng_, n, -30.0f, 30.0f);
    x[n / 2] = 500.0f;
    std::vector<double> want(n);
    double mx = -INFINITY, sum = 0;
    for (float v : x) mx = std::max(mx, static_cast<double>(v));
    for (int64_t i = 0; i < n; ++i) sum += want[i] = std::exp(x[i] - mx);
    for (double& v : want) v /= sum;
    for (Isa isa : AvailableIsas()) {
      ScopedIsa forced(isa);
      SCOPED_TRACE(::testing::Message() << IsaName(isa) << " n=" << n);
      std::vector<float> p = x;
      Softmax(p.data(), n);
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(p[i], want[i], 1e-5 * want[i] + 1e-9) << i;
        total += p[i];
      }
      EXPECT_NEAR(total, 1.0, 1e-5);
    }
  }
}

TEST_F(ElementwiseTest, ApplyRope) {
  // The contract computes the angle in fp32 (positions[t] * inv_freq[i]), so
  // the float64 reference takes that fp32 angle and applies cos/sin and the
  // rotation in float64. |x - x64| <= 1e-5 * max|x|.
  SCOPED_TRACE(SeedMessage(seed_));
  for (int64_t head_dim : {2, 14, 64, 80, 128}) {
    const int64_t tokens = 5, heads = 3, half = head_dim / 2;
    const std::vector<float> x0 = RandomVector(rng_, tokens * heads * head_dim);
    std::vector<int32_t> pos(tokens);
    std::uniform_int_distribution<int32_t> pos_dist(0, 8191);
    for (auto& p : pos) p = pos_dist(rng_);
    pos[0] = 0;
    std::vector<float> inv_freq(half);
    for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / head_dim);
    std::vector<double> want(x0.begin(), x0.end());
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        double* v = want.data() + (t * heads + h) * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const double angle = static_cast<float>(pos[t]) * inv_freq[i];  // fp32 product
          const double a = v[i], b = v[i + half];
          v[i] = a * std::cos(angle) - b * std::sin(angle);
          v[i + half] = b * std::cos(angle) + a * std::sin(angle);
        }
      }
    }
    for (Isa isa : AvailableIsas()) {
      ScopedIsa forced(isa);
      SCOPED_TRACE(::testing::Message() << IsaName(isa) << " head_dim=" << head_dim);
      std::vector<float> x = x0;
      ApplyRope(x.data(), tokens, heads, head_dim, pos.data(), inv_freq.data());
      for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], want[i], 1e-5) << i;
    }
  }
}

TEST_F(ElementwiseTest, EmbeddingLookupWidensExactly) {
  SCOPED_TRACE(SeedMessage(seed_));
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    const int64_t vocab = 50, dim = 37;
    const auto table = testing::MakeMatrix(rng_, dtype, vocab, dim);
    const std::vector<int32_t> ids = {0, 49, 7, 7, 23};
    for (Isa isa : AvailableIsas()) {
      ScopedIsa forced(isa);
      std::vector<float> out(ids.size() * dim);
      EmbeddingLookup(table.view, ids.data(), static_cast<int64_t>(ids.size()), out.data());
      for (size_t t = 0; t < ids.size(); ++t) {
        for (int64_t i = 0; i < dim; ++i) {
          ASSERT_EQ(out[t * dim + i], table.values[ids[t] * dim + i]) << DTypeName(dtype);
        }
      }
    }
  }
}

TEST_F(ElementwiseTest, WriteKvPlacesRowsAtSlots) {
  SCOPED_TRACE(SeedMessage(seed_));
  const KvLayout layout{16, 2, 8};
  const int64_t num_blocks = 4, row = layout.num_kv_heads * layout.head_dim;
  const int64_t tokens = 5;
  const std::vector<int64_t> slots = {0, 17, 63, 32, 5};
  const std::vector<float> k = RandomVector(rng_, tokens * row);
  const std::vector<float> v = RandomVector(rng_, tokens * row);
  std::vector<float> k_pool(num_blocks * layout.block_size * row, -7.0f);
  std::vector<float> v_pool(k_pool.size(), -7.0f);
  WriteKv(k.data(), v.data(), tokens, slots.data(), layout, k_pool.data(), v_pool.data());
  std::vector<bool> written(num_blocks * layout.block_size, false);
  for (int64_t t = 0; t < tokens; ++t) {
    written[slots[t]] = true;
    for (int64_t i = 0; i < row; ++i) {
      ASSERT_EQ(k_pool[slots[t] * row + i], k[t * row + i]);
      ASSERT_EQ(v_pool[slots[t] * row + i], v[t * row + i]);
    }
  }
  for (size_t s = 0; s < written.size(); ++s) {
    if (!written[s]) {
      ASSERT_EQ(k_pool[s * row], -7.0f) << "slot " << s << " was overwritten";
    }
  }
}

TEST_F(ElementwiseTest, WriteKvRoundsToHalfPrecisionCaches) {
  SCOPED_TRACE(SeedMessage(seed_));
  const int64_t row = 3 * 8, tokens = 4;
  const std::vector<int64_t> slots = {9, 0, 31, 16};
  const std::vector<float> k = RandomVector(rng_, tokens * row);
  const std::vector<float> v = RandomVector(rng_, tokens * row);
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    const KvLayout layout{16, 3, 8, dtype};
    std::vector<uint16_t> k_pool(2 * 16 * row, 0xffff), v_pool(k_pool.size(), 0xffff);
    WriteKv(k.data(), v.data(), tokens, slots.data(), layout, k_pool.data(), v_pool.data());
    auto round = [&](float x) { return dtype == DType::kF16 ? FloatToFp16(x) : FloatToBf16(x); };
    std::vector<bool> written(32, false);
    for (int64_t t = 0; t < tokens; ++t) {
      written[slots[t]] = true;
      for (int64_t i = 0; i < row; ++i) {
        ASSERT_EQ(k_pool[slots[t] * row + i], round(k[t * row + i]));
        ASSERT_EQ(v_pool[slots[t] * row + i], round(v[t * row + i]));
        // Rounding to nearest: within half an ulp of the fp32 value.
        const float back = dtype == DType::kF16 ? Fp16ToFloat(k_pool[slots[t] * row + i])
                                                : Bf16ToFloat(k_pool[slots[t] * row + i]);
        ASSERT_LE(std::fabs(back - k[t * row + i]),
                  std::fabs(k[t * row + i]) * (dtype == DType::kF16 ? 0x1p-11f : 0x1p-8f) + 0x1p-25f);
      }
    }
    for (size_t s = 0; s < written.size(); ++s) {
      if (!written[s]) ASSERT_EQ(k_pool[s * row], 0xffff) << "slot " << s << " was overwritten";
    }
  }
}

}  // namespace
}  // namespace lcd::kernels
