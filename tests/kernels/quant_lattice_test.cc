// The lattice format of quant_linear.h (kLattice) and its kernels: the
// scalar twin (kReference) and the AVX2 decode-then-multiply kernel
// (kLatticeDecode) against a float64 decoder written here from the
// contract's words, on fresh random inputs (printed seed; LCD_TEST_SEED
// replays), odd shapes (short last groups and short last sub-vectors),
// per-group code widths and stacked parts.
//
// Tolerances: decoded weights |w - w64| <= 2e-5 * max|w64| of the matrix
// (fp32 sums of up to 32 products inside a (1+mu)^|y| with ln(1+mu) <= 5.6
// and |y| <= ~2 amplify fp32 rounding to ~1e-5 relative); outputs
// |y - y64| <= 5e-5 * sum_c |x_c w_c| (that, plus fp32 accumulation).
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernel_test_util.h"
#include "lcd/kernels/dtype.h"
#include "lcd/kernels/quant_linear.h"

namespace lcd::kernels {
namespace {

using testing::AvailableIsas;
using testing::FreshSeed;
using testing::RandomVector;
using testing::ScopedIsa;
using testing::SeedMessage;

struct LatticeMatrix {
  QuantLayout layout;
  std::vector<int> code;          // [rows][cols]
  std::vector<uint8_t> codes;     // canonical
  std::vector<uint16_t> params;   // fp16 scales [rows][groups]
  std::vector<uint16_t> lattice;  // fp16 [groups][d*d + 1]
  QuantMatrixView view() const { return {layout, codes.data(), params.data(), lattice.data()}; }
};

// The canonical stream written bit by bit: the groups of a row one after
// another, group k taking b_k bits per column, LSB first.
std::vector<uint8_t> Encode(const QuantLayout& l, const std::vector<int>& code) {
  int64_t row_bits = 0;
  for (int64_t k = 0; k < l.groups(); ++k) {
    row_bits += (std::min(l.cols, (k + 1) * l.group_size) - k * l.group_size) * l.GroupBits(k);
  }
  const int64_t row_bytes = (row_bits + 7) / 8;
  std::vector<uint8_t> out(static_cast<size_t>(l.rows * row_bytes), 0);
  for (int64_t r = 0; r < l.rows; ++r) {
    int64_t bit = 0;
    for (int64_t c = 0; c < l.cols; ++c) {
      const int b = l.GroupBits(c / l.group_size);
      for (int i = 0; i < b; ++i, ++bit) {
        if ((code[r * l.cols + c] >> i) & 1) out[r * row_bytes + bit / 8] |= 1 << (bit % 8);
      }
    }
  }
  return out;
}

LatticeMatrix MakeLattice(std::mt19937_64& rng, QuantLayout l) {
  LatticeMatrix q;
  q.layout = l;
  const int d = l.lattice_dim;
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t k = 0; k < l.groups(); ++k) {
    // Diagonal-dominant G, scaled so |y| stays around 1.
    const float scale = 1.0f / static_cast<float>(1 << (l.GroupBits(k) - 1));
    for (int i = 0; i < d; ++i) {
      for (int j = 0; j < d; ++j) {
        const float v = (i == j ? 1.0f : 0.3f * u(rng) / std::sqrt(static_cast<float>(d))) * scale;
        q.lattice.push_back(FloatToFp16(v));
      }
    }
    q.lattice.push_back(FloatToFp16(std::uniform_real_distribution<float>(0.5f, 255.0f)(rng)));
  }
  for (int64_t i = 0; i < l.rows * l.groups(); ++i) q.params.push_back(FloatToFp16(0.1f + std::fabs(u(rng))));
  q.code.resize(static_cast<size_t>(l.rows * l.cols));
  for (int64_t r = 0; r < l.rows; ++r) {
    for (int64_t c = 0; c < l.cols; ++c) {
      const int b = l.GroupBits(c / l.group_size);
      q.code[r * l.cols + c] = std::uniform_int_distribution<int>(0, (1 << b) - 1)(rng);
    }
  }
  q.codes = Encode(l, q.code);
  return q;
}

// w = s * sign(y) * ((1+mu)^|y| - 1) / mu, y = G_nn (q - 2^(b-1) + 1/2), in float64.
std::vector<double> Decode64(const LatticeMatrix& q) {
  const QuantLayout& l = q.layout;
  const int d = l.lattice_dim;
  std::vector<double> w(static_cast<size_t>(l.rows * l.cols));
  for (int64_t r = 0; r < l.rows; ++r) {
    for (int64_t k = 0; k < l.groups(); ++k) {
      const uint16_t* p = q.lattice.data() + k * (d * d + 1);
      const double mu = Fp16ToFloat(p[d * d]);
      const double s = Fp16ToFloat(q.params[r * l.groups() + k]);
      const int b = l.GroupBits(k);
      const int64_t c0 = k * l.group_size, c1 = std::min(l.cols, c0 + l.group_size);
      for (int64_t t = c0; t < c1; t += d) {
        const int n = static_cast<int>(std::min<int64_t>(d, c1 - t));
        for (int i = 0; i < n; ++i) {
          double y = 0.0;
          for (int j = 0; j < n; ++j) {
            y += Fp16ToFloat(p[i * d + j]) * (q.code[r * l.cols + t + j] - std::ldexp(1.0, b - 1) + 0.5);
          }
          w[r * l.cols + t + i] = s * (y < 0 ? -1.0 : 1.0) * (std::pow(1.0 + mu, std::fabs(y)) - 1.0) / mu;
        }
      }
    }
  }
  return w;
}

QuantLayout Lattice(int bits, int64_t rows, int64_t cols, int64_t g, int d, std::vector<uint8_t> gb = {}) {
  QuantLayout l{QuantFormat::kLattice, bits, rows, cols, g};
  l.lattice_dim = d;
  l.group_bits = std::move(gb);
  return l;
}

std::vector<uint8_t> RandomBits(std::mt19937_64& rng, int64_t groups, int lo, int hi) {
  std::vector<uint8_t> out;
  for (int64_t k = 0; k < groups; ++k) out.push_back(static_cast<uint8_t>(std::uniform_int_distribution<int>(lo, hi)(rng)));
  return out;
}

void CheckKernels(std::mt19937_64& rng, const LatticeMatrix& q, ThreadPool* pool) {
  const QuantLayout& l = q.layout;
  SCOPED_TRACE(::testing::Message() << "rows=" << l.rows << " cols=" << l.cols << " g=" << l.group_size
                                    << " d=" << l.lattice_dim << " bits=" << l.bits
                                    << " widths=" << l.group_bits.size());
  const std::vector<double> w64 = Decode64(q);
  double wmax = 0.0;
  for (double v : w64) wmax = std::max(wmax, std::fabs(v));
  std::vector<float> w(w64.size());
  DequantizeRows(q.view(), 0, l.rows, w.data());
  for (size_t i = 0; i < w.size(); ++i) ASSERT_NEAR(w[i], w64[i], 2e-5 * wmax) << "weight " << i;

  const std::vector<float> bias = RandomVector(rng, l.rows);
  for (int64_t m : {1, 3, 8}) {
    const std::vector<float> x = RandomVector(rng, m * l.cols);
    for (bool with_bias : {false, true}) {
      std::vector<double> y64(m * l.rows), mag(m * l.rows);
      for (int64_t t = 0; t < m; ++t) {
        for (int64_t r = 0; r < l.rows; ++r) {
          double acc = with_bias ? bias[r] : 0.0, a = with_bias ? std::fabs(bias[r]) : 0.0;
          for (int64_t c = 0; c < l.cols; ++c) {
            acc += x[t * l.cols + c] * w64[r * l.cols + c];
            a += std::fabs(x[t * l.cols + c] * w64[r * l.cols + c]);
          }
          y64[t * l.rows + r] = acc;
          mag[t * l.rows + r] = a;
        }
      }
      for (Isa isa : AvailableIsas()) {
        ScopedIsa forced(isa);
        QuantActivations act;
        act.Prepare(x.data(), m, l.cols, pool);
        for (QuantKernel k : {QuantKernel::kAuto, QuantKernel::kReference, QuantKernel::kLatticeDecode,
                              QuantKernel::kCentroidTable}) {
          SCOPED_TRACE(::testing::Message() << "isa=" << IsaName(isa) << " kernel=" << QuantKernelName(k)
                                            << " m=" << m << " bias=" << with_bias);
          auto packed = PackedQuantMatrix::Pack(q.view(), k);
          const bool avx2 = isa != Isa::kReference && l.lattice_dim % 8 == 0;
          const bool promised = k == QuantKernel::kAuto || k == QuantKernel::kReference ||
                                (k == QuantKernel::kLatticeDecode && avx2);
          ASSERT_EQ(packed.ok(), promised) << packed.status();
          if (!packed.ok()) continue;
          const QuantKernel want = k == QuantKernel::kAuto
                                       ? (avx2 ? QuantKernel::kLatticeDecode : QuantKernel::kReference)
                                       : k;
          ASSERT_EQ((*packed)->kernel(), want);
          std::vector<float> y(m * l.rows, std::nanf(""));
          QuantLinear(act, **packed, with_bias ? bias.data() : nullptr, y.data(), pool);
          for (size_t i = 0; i < y.size(); ++i) {
            ASSERT_NEAR(y[i], y64[i], 5e-5 * mag[i] + 1e-30) << "output " << i << " " << (*packed)->Describe();
          }
        }
      }
    }
  }
}

TEST(QuantLatticeTest, KernelsMatchFloat64DecoderOnOddShapes) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::printf("%s\n", SeedMessage(seed).c_str());
  std::mt19937_64 rng(seed);
  ThreadPool pool(2);
  // 172 = 128 + 44 (short group, short last sub-vector of 4 at d = 8 and of
  // 12 at d = 16); 576 = 4*128 + 64; 40 < g; d = 32 with a short group of 16.
  CheckKernels(rng, MakeLattice(rng, Lattice(2, 37, 172, 128, 8)), &pool);
  CheckKernels(rng, MakeLattice(rng, Lattice(2, 37, 172, 128, 8, RandomBits(rng, 2, 1, 3))), nullptr);
  CheckKernels(rng, MakeLattice(rng, Lattice(3, 9, 576, 128, 8, RandomBits(rng, 5, 2, 4))), &pool);
  CheckKernels(rng, MakeLattice(rng, Lattice(3, 6, 172, 64, 16, RandomBits(rng, 3, 2, 4))), &pool);
  CheckKernels(rng, MakeLattice(rng, Lattice(2, 5, 80, 64, 32, RandomBits(rng, 2, 1, 8))), nullptr);
  // d = 16 with full blocks of eight sub-vectors (the lane-per-sub-vector
  // path) next to a short group (44 = 16 + 16 + 12) and widths up to 5 (b > 4
  // takes the per-sub-vector path).
  CheckKernels(rng, MakeLattice(rng, Lattice(2, 7, 300, 128, 16, RandomBits(rng, 3, 1, 5))), &pool);
  CheckKernels(rng, MakeLattice(rng, Lattice(3, 11, 256, 128, 8, RandomBits(rng, 2, 3, 4))), &pool);
  CheckKernels(rng, MakeLattice(rng, Lattice(4, 3, 40, 64, 8)), nullptr);
  CheckKernels(rng, MakeLattice(rng, Lattice(2, 4, 21, 6, 3, RandomBits(rng, 4, 1, 3))), nullptr);
}

TEST(QuantLatticeTest, HandExample) {
  // d = 2, b = 2, one group; G = [[1, 0], [0.5, 1]], mu = 1, s = 2.
  // Codes (3, 0): z = (1, -2), c = z + 1/2 = (1.5, -1.5), y = (1.5, -0.75),
  // w = 2 * sign(y) * (2^|y| - 1) = (3.656854, -1.363586).
  LatticeMatrix q;
  q.layout = Lattice(2, 1, 2, 2, 2);
  q.code = {3, 0};
  q.codes = Encode(q.layout, q.code);
  ASSERT_EQ(q.codes, std::vector<uint8_t>{0x03});
  q.params = {FloatToFp16(2.0f)};
  for (float v : {1.0f, 0.0f, 0.5f, 1.0f, 1.0f}) q.lattice.push_back(FloatToFp16(v));
  float w[2];
  DequantizeRows(q.view(), 0, 1, w);
  EXPECT_NEAR(w[0], 2.0 * (std::pow(2.0, 1.5) - 1.0), 1e-5);
  EXPECT_NEAR(w[1], -2.0 * (std::pow(2.0, 0.75) - 1.0), 1e-5);
}

TEST(QuantLatticeTest, StackedPartsWithDifferentWidthsAndDims) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  const LatticeMatrix a = MakeLattice(rng, Lattice(2, 7, 172, 128, 8, RandomBits(rng, 2, 1, 3)));
  const LatticeMatrix b = MakeLattice(rng, Lattice(2, 5, 172, 128, 16, RandomBits(rng, 2, 1, 3)));
  const std::vector<float> x = RandomVector(rng, 3 * 172);
  QuantActivations act;
  act.Prepare(x.data(), 3, 172, nullptr);
  for (QuantKernel k : {QuantKernel::kAuto, QuantKernel::kReference}) {
    auto stacked = PackedQuantMatrix::PackStacked({a.view(), b.view()}, k);
    ASSERT_TRUE(stacked.ok()) << stacked.status();
    auto pa = PackedQuantMatrix::Pack(a.view(), k);
    auto pb = PackedQuantMatrix::Pack(b.view(), k);
    ASSERT_TRUE(pa.ok() && pb.ok());
    std::vector<float> ys(3 * 12), ya(3 * 7), yb(3 * 5);
    QuantLinear(act, **stacked, nullptr, ys.data(), nullptr);
    QuantLinear(act, **pa, nullptr, ya.data(), nullptr);
    QuantLinear(act, **pb, nullptr, yb.data(), nullptr);
    for (int t = 0; t < 3; ++t) {
      for (int r = 0; r < 7; ++r) EXPECT_FLOAT_EQ(ys[t * 12 + r], ya[t * 7 + r]);
      for (int r = 0; r < 5; ++r) EXPECT_FLOAT_EQ(ys[t * 12 + 7 + r], yb[t * 5 + r]);
    }
  }
}

TEST(QuantLatticeTest, LayoutAndParameterValidation) {
  QuantLayout l = Lattice(2, 4, 172, 128, 8, {3, 1});
  EXPECT_TRUE(ValidateQuantLayout(l).ok());
  EXPECT_EQ(l.CodeRowBits(), 128 * 3 + 44 * 1);
  EXPECT_EQ(l.CodeRowBytes(), (128 * 3 + 44 + 7) / 8);
  EXPECT_EQ(l.CodeBitOffset(130), 128 * 3 + 2);
  EXPECT_EQ(l.ParamsPerGroup(), 1);
  EXPECT_EQ(l.LatticeParamCount(), 2 * 65);
  EXPECT_FALSE(ValidateQuantLayout(Lattice(2, 4, 172, 128, 0)).ok());
  EXPECT_FALSE(ValidateQuantLayout(Lattice(2, 4, 172, 128, 12)).ok());   // 128 % 12 != 0
  EXPECT_FALSE(ValidateQuantLayout(Lattice(2, 4, 172, 128, 64)).ok());   // d > 32
  EXPECT_FALSE(ValidateQuantLayout(Lattice(2, 4, 172, 128, 8, {2})).ok());
  EXPECT_FALSE(ValidateQuantLayout(Lattice(2, 4, 172, 128, 8, {2, 9})).ok());
  EXPECT_FALSE(ValidateQuantLayout(Lattice(2, 4, 172, 128, 8, {0, 2})).ok());
  QuantLayout affine{QuantFormat::kAffine, 2, 4, 172, 128};
  affine.lattice_dim = 8;
  EXPECT_FALSE(ValidateQuantLayout(affine).ok());

  std::mt19937_64 rng(1);
  LatticeMatrix q = MakeLattice(rng, Lattice(2, 2, 16, 16, 8));
  EXPECT_TRUE(CheckLatticeParams(q.view()).ok());
  LatticeMatrix bad = q;
  bad.lattice[64] = FloatToFp16(0.0f);  // mu = 0
  EXPECT_NE(CheckLatticeParams(bad.view()).message().find("mu"), std::string::npos);
  bad = q;
  bad.lattice[5] = 0x7E00;  // NaN
  EXPECT_NE(CheckLatticeParams(bad.view()).message().find("not finite"), std::string::npos);
  bad = q;
  bad.lattice[0] = FloatToFp16(100.0f);  // 100 * 2 * log(1 + mu) > 80
  EXPECT_NE(CheckLatticeParams(bad.view()).message().find("limit"), std::string::npos);
}

}  // namespace
}  // namespace lcd::kernels
