// QuantLinear and the quantized formats of quant_linear.h, against a float64
// oracle on fresh random inputs (printed seed; LCD_TEST_SEED replays).
//
// Tolerances, per output y[t][r] with mag = sum_c |x_c w_c| + |bias_r|:
// - exact designs (reference, centroid_table): |y - y64| <= 2e-5 * mag, fp32
//   accumulation of up to ~600 products (as linear_test.cc, with margin for
//   the different summation orders of the kernels);
// - activation_lut: that plus the bound quant_linear.h states for its int8
//   activation tables, computed here from x independently of the kernel
//   (s_B / 2 per 4-column block times the sum of |Moebius coefficients|).
#include "lcd/kernels/quant_linear.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernel_test_util.h"
#include "lcd_skip.h"

namespace lcd::kernels {
namespace {

using testing::AvailableIsas;
using testing::FreshSeed;
using testing::RandomVector;
using testing::ScopedIsa;
using testing::SeedMessage;

constexpr double kRelTol = 2e-5;

// A matrix in the canonical layout, written bit by bit from the contract's
// words (independently of the library's reader).
struct QuantMatrix {
  QuantLayout layout;
  std::vector<int> code;  // [rows][cols]
  std::vector<uint8_t> codes;
  std::vector<uint16_t> params;
  QuantMatrixView view() const { return {layout, codes.data(), params.data()}; }
};

std::vector<uint8_t> EncodeCanonical(const QuantLayout& l, const std::vector<int>& code) {
  std::vector<uint8_t> out(static_cast<size_t>(l.CodeBytes()), 0);
  for (int64_t r = 0; r < l.rows; ++r) {
    for (int64_t c = 0; c < l.cols; ++c) {
      for (int i = 0; i < l.bits; ++i) {
        const int64_t k = c * l.bits + i;  // stream bit k: bit k%8 of byte k/8
        if ((code[r * l.cols + c] >> i) & 1) out[r * l.CodeRowBytes() + k / 8] |= 1 << (k % 8);
      }
    }
  }
  return out;
}

float RandomParam(std::mt19937_64& rng, const QuantLayout& l, int i) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  switch (l.format) {
    case QuantFormat::kCodebook:
      return 2.0f * u(rng) - 1.0f;
    case QuantFormat::kAffine:  // scale, then zero point in [0, 2^b)
      return i == 0 ? 0.01f + 0.2f * u(rng) : u(rng) * static_cast<float>((1 << l.bits) - 1);
    case QuantFormat::kBinaryCoded:  // plane scales, then the offset
      return i < l.bits ? 0.02f + 0.5f * u(rng) : 0.2f * u(rng) - 0.1f;
    case QuantFormat::kLattice:  // quant_lattice_test.cc
      break;
  }
  return 0.0f;
}

QuantMatrix MakeQuantMatrix(std::mt19937_64& rng, const QuantLayout& l) {
  QuantMatrix q;
  q.layout = l;
  std::uniform_int_distribution<int> code(0, (1 << l.bits) - 1);
  q.code.resize(static_cast<size_t>(l.rows * l.cols));
  for (int& c : q.code) c = code(rng);
  q.codes = EncodeCanonical(l, q.code);
  q.params.resize(static_cast<size_t>(l.ParamCount()));
  const int64_t P = l.ParamsPerGroup();
  for (size_t i = 0; i < q.params.size(); ++i) {
    q.params[i] = FloatToFp16(RandomParam(rng, l, static_cast<int>(i % P)));
  }
  return q;
}

// fp32 params of (row, group), as DecodeCode wants them.
std::vector<float> GroupParams(const QuantMatrix& q, int64_t r, int64_t g) {
  const int64_t P = q.layout.ParamsPerGroup();
  std::vector<float> p(static_cast<size_t>(P));
  for (int64_t i = 0; i < P; ++i) p[i] = Fp16ToFloat(q.params[(r * q.layout.groups() + g) * P + i]);
  return p;
}

// Sum over nonempty bit subsets S of |c_S|, c the Moebius transform of the
// group's decoded values (value(q) = sum_{S subset of bits(q)} c_S).
double MoebiusAbsSum(const QuantLayout& l, const std::vector<float>& p) {
  const int n = 1 << l.bits;
  double total = 0.0;
  for (int s = 1; s < n; ++s) {
    double c = 0.0;
    for (int u = s;; u = (u - 1) & s) {
      const int sign = (__builtin_popcount(s) - __builtin_popcount(u)) % 2 ? -1 : 1;
      c += sign * static_cast<double>(DecodeCode(l.format, l.bits, p.data(), u));
      if (u == 0) break;
    }
    total += std::fabs(c);
  }
  return total;
}

// s_B of quant_linear.h for input row xt (x = 0 past cols).
std::vector<double> LutScales(const float* xt, int64_t cols) {
  const int64_t blocks = (cols + 31) / 32;
  std::vector<double> s(static_cast<size_t>(blocks), 0.0);
  for (int64_t j = 0; j * 4 < cols; ++j) {
    double abs_sum = 0.0;
    for (int64_t c = 4 * j; c < std::min(cols, 4 * j + 4); ++c) abs_sum += std::fabs(xt[c]);
    s[j / 8] = std::max(s[j / 8], abs_sum / 2 / 127.0);
  }
  return s;
}

struct Oracle {
  std::vector<double> y, mag, lut_bound;  // [m][rows]
};

Oracle Compute(const QuantMatrix& q, const std::vector<float>& x, int64_t m, const float* bias) {
  const QuantLayout& l = q.layout;
  Oracle o;
  o.y.assign(m * l.rows, 0.0);
  o.mag.assign(m * l.rows, 0.0);
  o.lut_bound.assign(m * l.rows, 0.0);
  std::vector<double> w(static_cast<size_t>(l.cols));
  std::vector<double> coef(static_cast<size_t>(l.groups()));
  for (int64_t r = 0; r < l.rows; ++r) {
    for (int64_t g = 0; g < l.groups(); ++g) {
      const std::vector<float> p = GroupParams(q, r, g);
      coef[g] = MoebiusAbsSum(l, p);
      for (int64_t c = g * l.group_size; c < std::min(l.cols, (g + 1) * l.group_size); ++c) {
        w[c] = DecodeCode(l.format, l.bits, p.data(), q.code[r * l.cols + c]);
      }
    }
    for (int64_t t = 0; t < m; ++t) {
      const float* xt = x.data() + t * l.cols;
      double acc = bias ? bias[r] : 0.0, mag = bias ? std::fabs(bias[r]) : 0.0;
      for (int64_t c = 0; c < l.cols; ++c) {
        acc += xt[c] * w[c];
        mag += std::fabs(xt[c] * w[c]);
      }
      const std::vector<double> s = LutScales(xt, l.cols);
      double bound = 0.0;
      for (int64_t j = 0; j * 4 < l.cols; ++j) bound += s[j / 8] / 2 * coef[4 * j / l.group_size];
      o.y[t * l.rows + r] = acc;
      o.mag[t * l.rows + r] = mag;
      o.lut_bound[t * l.rows + r] = bound;
    }
  }
  return o;
}

std::string Name(const QuantLayout& l) {
  return std::string(QuantFormatName(l.format)) + " b=" + std::to_string(l.bits) +
         " rows=" + std::to_string(l.rows) + " cols=" + std::to_string(l.cols) +
         " g=" + std::to_string(l.group_size);
}

// Runs QuantLinear for `packed` and checks it against the oracle.
void Expect(const PackedQuantMatrix& packed, const QuantActivations& act, const Oracle& o,
            const float* bias, ThreadPool* pool) {
  const int64_t n = o.y.size();
  std::vector<float> y(n, std::nanf(""));
  QuantLinear(act, packed, bias, y.data(), pool);
  const bool lut = packed.kernel() == QuantKernel::kActivationLut;
  for (int64_t i = 0; i < n; ++i) {
    const double tol = kRelTol * o.mag[i] + (lut ? o.lut_bound[i] : 0.0) + 1e-30;
    ASSERT_NEAR(y[i], o.y[i], tol) << "at " << i << " kernel " << QuantKernelName(packed.kernel())
                                   << " (" << packed.Describe() << ")";
  }
}

// The designs quant_linear.h promises for a layout under an ISA.
bool LutPromised(const QuantLayout& l, Isa isa) {
  if (isa == Isa::kReference || l.group_size % 32 != 0) return false;
  switch (l.format) {
    case QuantFormat::kCodebook:
      return l.bits == 2;
    case QuantFormat::kAffine:
      return l.bits >= 2 && l.bits <= 4;
    case QuantFormat::kBinaryCoded:
      return l.bits <= 2;
    case QuantFormat::kLattice:
      return false;
  }
  return false;
}
bool CentroidPromised(const QuantLayout& l, Isa isa) {
  const bool bits = l.bits <= 4 || (l.format == QuantFormat::kAffine && l.bits == 8);
  return isa != Isa::kReference && bits && l.group_size % 8 == 0;
}

constexpr QuantKernel kDesigns[] = {QuantKernel::kAuto, QuantKernel::kReference,
                                    QuantKernel::kCentroidTable, QuantKernel::kActivationLut};

// Every design available at every ISA level, for one matrix and several m.
void CheckMatrix(std::mt19937_64& rng, const QuantLayout& l, ThreadPool* pool) {
  SCOPED_TRACE(Name(l));
  const QuantMatrix q = MakeQuantMatrix(rng, l);
  const std::vector<float> bias = RandomVector(rng, l.rows);
  for (int64_t m : {1, 2, 7, 8, 64}) {
    const std::vector<float> x = RandomVector(rng, m * l.cols);
    for (bool with_bias : {false, true}) {
      const float* b = with_bias ? bias.data() : nullptr;
      const Oracle o = Compute(q, x, m, b);
      for (Isa isa : AvailableIsas()) {
        ScopedIsa forced(isa);
        QuantActivations act;
        act.Prepare(x.data(), m, l.cols, pool);
        for (QuantKernel k : kDesigns) {
          SCOPED_TRACE(::testing::Message()
                       << "isa=" << IsaName(isa) << " design=" << QuantKernelName(k) << " m=" << m
                       << " bias=" << with_bias << " pool=" << (pool != nullptr));
          auto packed = PackedQuantMatrix::Pack(q.view(), k);
          const bool promised = k == QuantKernel::kActivationLut   ? LutPromised(l, isa)
                                : k == QuantKernel::kCentroidTable ? CentroidPromised(l, isa)
                                                                   : true;
          ASSERT_EQ(packed.ok(), promised) << packed.status();
          if (!packed.ok()) {
            ASSERT_EQ(packed.status().code(), absl::StatusCode::kUnimplemented);
            continue;
          }
          if (k == QuantKernel::kAuto) {
            const QuantKernel want = LutPromised(l, isa)        ? QuantKernel::kActivationLut
                                     : CentroidPromised(l, isa) ? QuantKernel::kCentroidTable
                                                                : QuantKernel::kReference;
            ASSERT_EQ((*packed)->kernel(), want);
          } else {
            ASSERT_EQ((*packed)->kernel(), k);
          }
          ASSERT_LE(static_cast<int>((*packed)->isa()), static_cast<int>(isa));
          Expect(**packed, act, o, b, pool);
        }
      }
    }
  }
}

std::vector<QuantLayout> AllFormats(int64_t rows, int64_t cols, int64_t g) {
  std::vector<QuantLayout> out;
  for (int b : {1, 2, 3, 4}) out.push_back({QuantFormat::kCodebook, b, rows, cols, g});
  for (int b : {1, 2, 3, 4, 8}) out.push_back({QuantFormat::kAffine, b, rows, cols, g});
  for (int b : {1, 2, 3, 4}) out.push_back({QuantFormat::kBinaryCoded, b, rows, cols, g});
  return out;
}

TEST(QuantLinearTest, MatchesFloat64ForEveryFormatShapeAndDesign) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  ThreadPool pool(2);
  // Short last groups (172 = 2*64 + 44, 576 = 4*128 + 64, 100 = 2*48 + 4),
  // row counts off every tile size, and a group size no LUT block divides.
  const int64_t shapes[][3] = {{37, 172, 64}, {45, 576, 128}, {16, 256, 32}, {3, 64, 64},
                               {129, 96, 32}, {21, 100, 48},  {5, 7, 3}};
  for (const auto& s : shapes) {
    for (const QuantLayout& l : AllFormats(s[0], s[1], s[2])) {
      CheckMatrix(rng, l, (s[0] & 1) ? &pool : nullptr);
    }
  }
}

TEST(QuantLinearTest, CanonicalBitOrderHandExample) {
  // b = 3, two rows of three codes. Row 0 = {5, 3, 6}: stream bits 0..8 are
  // 1,0,1 | 1,1,0 | 0,1,1, so byte 0 = 0b10011101, byte 1 = 0b00000001.
  // Row 1 = {1, 7, 0}: bits 1,0,0 | 1,1,1 | 0,0,0 -> 0b00111001, 0. Each row
  // starts on its own byte.
  const QuantLayout l{QuantFormat::kCodebook, 3, 2, 3, 3};
  ASSERT_EQ(l.CodeRowBytes(), 2);
  const std::vector<uint8_t> codes = {0x9D, 0x01, 0x39, 0x00};
  EXPECT_EQ(EncodeCanonical(l, {5, 3, 6, 1, 7, 0}), codes);
  const std::vector<uint16_t> params(l.ParamCount(), 0);
  const QuantMatrixView v{l, codes.data(), params.data()};
  const int want[2][3] = {{5, 3, 6}, {1, 7, 0}};
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(CanonicalCode(v, r, c), want[r][c]) << r << "," << c;
  }
}

TEST(QuantLinearTest, CheckCodePaddingRefusesSetPaddingBits) {
  // b = 3, cols = 3: 9 bits per row, so bits 1..7 of each row's byte 1 pad.
  const QuantLayout l{QuantFormat::kCodebook, 3, 2, 3, 3};
  std::vector<uint8_t> codes = {0x9D, 0x01, 0x39, 0x00};
  const std::vector<uint16_t> params(l.ParamCount(), 0);
  EXPECT_TRUE(CheckCodePadding({l, codes.data(), params.data()}).ok());
  codes[3] = 0x80;
  const absl::Status s = CheckCodePadding({l, codes.data(), params.data()});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("row 1"), std::string::npos) << s;
  // A row of whole bytes has no padding to check.
  const QuantLayout full{QuantFormat::kAffine, 2, 1, 8, 8};
  const std::vector<uint8_t> byte_codes = {0xFF, 0xFF};
  const std::vector<uint16_t> p2(full.ParamCount(), 0);
  EXPECT_TRUE(CheckCodePadding({full, byte_codes.data(), p2.data()}).ok());
}

TEST(QuantLinearTest, CanonicalCodeRoundTripsRandomCodes) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  for (const QuantLayout& l : AllFormats(5, 37, 8)) {
    const QuantMatrix q = MakeQuantMatrix(rng, l);
    for (int64_t r = 0; r < l.rows; ++r) {
      for (int64_t c = 0; c < l.cols; ++c) {
        ASSERT_EQ(CanonicalCode(q.view(), r, c), q.code[r * l.cols + c]) << Name(l);
      }
    }
  }
}

TEST(QuantLinearTest, DecodeCodeHandValues) {
  const float cb[4] = {-1.0f, -0.25f, 0.5f, 2.0f};
  EXPECT_EQ(DecodeCode(QuantFormat::kCodebook, 2, cb, 2), 0.5f);
  EXPECT_EQ(DecodeCode(QuantFormat::kCodebook, 2, cb, 3), 2.0f);
  const float affine[2] = {0.5f, 3.0f};  // w = 0.5 * (q - 3)
  EXPECT_EQ(DecodeCode(QuantFormat::kAffine, 4, affine, 7), 2.0f);
  EXPECT_EQ(DecodeCode(QuantFormat::kAffine, 4, affine, 0), -1.5f);
  EXPECT_EQ(DecodeCode(QuantFormat::kAffine, 8, affine, 255), 126.0f);
  // w = 0.5*(2*bit0 - 1) + 0.25*(2*bit1 - 1) + 0.1
  const float bcq[3] = {0.5f, 0.25f, 0.1f};
  EXPECT_NEAR(DecodeCode(QuantFormat::kBinaryCoded, 2, bcq, 0), -0.65f, 1e-7);
  EXPECT_NEAR(DecodeCode(QuantFormat::kBinaryCoded, 2, bcq, 1), 0.35f, 1e-7);
  EXPECT_NEAR(DecodeCode(QuantFormat::kBinaryCoded, 2, bcq, 2), -0.15f, 1e-7);
  EXPECT_NEAR(DecodeCode(QuantFormat::kBinaryCoded, 2, bcq, 3), 0.85f, 1e-7);
  const float bcq1[2] = {0.75f, -0.5f};  // b = 1: w = +-0.75 - 0.5
  EXPECT_EQ(DecodeCode(QuantFormat::kBinaryCoded, 1, bcq1, 0), -1.25f);
  EXPECT_EQ(DecodeCode(QuantFormat::kBinaryCoded, 1, bcq1, 1), 0.25f);
}

TEST(QuantLinearTest, DequantizeRowsHandExampleWithShortLastGroup) {
  // Affine b = 2, five columns in groups of 2 (the last group has one).
  // Codes {0, 1, 2, 3, 1} -> stream bits 2, 5, 6, 7, 8 set: 0xE4, 0x01.
  const QuantLayout l{QuantFormat::kAffine, 2, 1, 5, 2};
  ASSERT_EQ(l.groups(), 3);
  ASSERT_EQ(l.ParamCount(), 6);
  const std::vector<uint8_t> codes = {0xE4, 0x01};
  EXPECT_EQ(EncodeCanonical(l, {0, 1, 2, 3, 1}), codes);
  std::vector<uint16_t> params;
  for (float p : {1.0f, 1.0f, 2.0f, 0.0f, 0.5f, 2.0f}) params.push_back(FloatToFp16(p));
  std::vector<float> out(5);
  DequantizeRows({l, codes.data(), params.data()}, 0, 1, out.data());
  EXPECT_EQ(out, (std::vector<float>{-1.0f, 0.0f, 4.0f, 6.0f, -0.5f}));
}

TEST(QuantLinearTest, LayoutSizesAndValidation) {
  const QuantLayout cb3{QuantFormat::kCodebook, 3, 10, 172, 64};
  EXPECT_EQ(cb3.groups(), 3);
  EXPECT_EQ(cb3.ParamsPerGroup(), 8);
  EXPECT_EQ(cb3.CodeRowBytes(), 65);  // 516 bits
  EXPECT_EQ(cb3.CodeBytes(), 650);
  EXPECT_EQ(cb3.ParamCount(), 240);
  EXPECT_EQ((QuantLayout{QuantFormat::kAffine, 8, 1, 1, 1}).ParamsPerGroup(), 2);
  EXPECT_EQ((QuantLayout{QuantFormat::kBinaryCoded, 2, 1, 1, 1}).ParamsPerGroup(), 3);
  EXPECT_EQ(QuantFormatName(QuantFormat::kBinaryCoded), "binary_coded");
  EXPECT_TRUE(ValidateQuantLayout(cb3).ok());
  EXPECT_TRUE(ValidateQuantLayout({QuantFormat::kAffine, 8, 1, 1, 1}).ok());
  for (const QuantLayout& bad :
       std::vector<QuantLayout>{{QuantFormat::kCodebook, 0, 1, 1, 1},
                                {QuantFormat::kCodebook, 5, 1, 1, 1},
                                {QuantFormat::kBinaryCoded, 5, 1, 1, 1},
                                {QuantFormat::kAffine, 9, 1, 1, 1},
                                {QuantFormat::kAffine, 2, 0, 1, 1},
                                {QuantFormat::kAffine, 2, 1, -1, 1},
                                {QuantFormat::kAffine, 2, 1, 1, 0},
                                {static_cast<QuantFormat>(7), 2, 1, 1, 1}}) {
    const absl::Status s = ValidateQuantLayout(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << Name(bad);
    std::vector<uint8_t> codes(16);
    std::vector<uint16_t> params(64);
    EXPECT_FALSE(PackedQuantMatrix::Pack({bad, codes.data(), params.data()}).ok());
  }
}

TEST(QuantLinearTest, PackStackedEqualsSeparateCalls) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  ThreadPool pool(2);
  for (const QuantLayout& base : AllFormats(0, 192, 64)) {
    std::vector<QuantMatrix> parts;
    std::vector<QuantMatrixView> views;
    for (int64_t rows : {21, 8, 35}) {
      QuantLayout l = base;
      l.rows = rows;
      parts.push_back(MakeQuantMatrix(rng, l));
    }
    for (const QuantMatrix& p : parts) views.push_back(p.view());
    for (int64_t m : {1, 5}) {
      const std::vector<float> x = RandomVector(rng, m * base.cols);
      for (Isa isa : AvailableIsas()) {
        ScopedIsa forced(isa);
        QuantActivations act;
        act.Prepare(x.data(), m, base.cols, &pool);
        auto stacked = PackedQuantMatrix::PackStacked(views);
        ASSERT_TRUE(stacked.ok()) << stacked.status();
        ASSERT_EQ((*stacked)->layout().rows, 64);
        std::vector<float> ys(m * 64);
        QuantLinear(act, **stacked, nullptr, ys.data(), &pool);
        int64_t row0 = 0;
        for (const QuantMatrix& p : parts) {
          auto one = PackedQuantMatrix::Pack(p.view());
          ASSERT_TRUE(one.ok());
          EXPECT_EQ((*one)->kernel(), (*stacked)->kernel());
          const int64_t rows = p.layout.rows;
          std::vector<float> y(m * rows);
          QuantLinear(act, **one, nullptr, y.data(), nullptr);
          for (int64_t t = 0; t < m; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
              // Same kernel, same tables, same per-row summation order.
              ASSERT_EQ(ys[t * 64 + row0 + r], y[t * rows + r])
                  << Name(base) << " " << IsaName(isa) << " t=" << t << " r=" << r;
            }
          }
          row0 += rows;
        }
      }
    }
  }
  QuantMatrix a = MakeQuantMatrix(rng, {QuantFormat::kAffine, 2, 4, 64, 32});
  QuantMatrix b = MakeQuantMatrix(rng, {QuantFormat::kAffine, 2, 4, 64, 64});
  EXPECT_EQ(PackedQuantMatrix::PackStacked({a.view(), b.view()}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PackedQuantMatrix::PackStacked({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuantLinearTest, PackedMatrixKeepsItsDesignAcrossIsaChanges) {
  // Pack under the best ISA, then force the reference before running: the
  // call must still run (and agree with) the design that packed the matrix,
  // with activations prepared under either ISA.
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  const QuantLayout l{QuantFormat::kAffine, 2, 40, 256, 64};
  const QuantMatrix q = MakeQuantMatrix(rng, l);
  const std::vector<float> x = RandomVector(rng, 3 * l.cols);
  const Oracle o = Compute(q, x, 3, nullptr);
  for (QuantKernel k : kDesigns) {
    auto packed = PackedQuantMatrix::Pack(q.view(), k);
    if (!packed.ok()) continue;
    const QuantKernel kernel = (*packed)->kernel();
    const Isa isa = (*packed)->isa();
    QuantActivations prepared_best;
    prepared_best.Prepare(x.data(), 3, l.cols, nullptr);
    ScopedIsa forced(Isa::kReference);
    QuantActivations prepared_ref;
    prepared_ref.Prepare(x.data(), 3, l.cols, nullptr);
    EXPECT_EQ((*packed)->kernel(), kernel);
    EXPECT_EQ((*packed)->isa(), isa);
    Expect(**packed, prepared_best, o, nullptr, nullptr);
    Expect(**packed, prepared_ref, o, nullptr, nullptr);
  }
}

TEST(QuantLinearTest, ActivationLutRelativeErrorAtLlamaWidth) {
  // The accuracy cost of the int8 activation tables at a realistic width:
  // relative RMS error over all outputs, x uniform in [-1, 1] with 1% of it
  // 20x outliers (as LLM activations have). Measured 0.5-0.9% (per lookup the
  // rounding error is s_B/sqrt(12), s_B ~ max_j sum_t |x_4j+t| / 254),
  // far below the error of 2-bit weights themselves; fails if the tables
  // lose their per-block scales or the kernel drops terms.
  if (DetectIsa() == Isa::kReference) LCD_SKIP(kMissing) << "no AVX2";
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  for (QuantFormat f : {QuantFormat::kAffine, QuantFormat::kCodebook, QuantFormat::kBinaryCoded}) {
    const QuantLayout l{f, 2, 64, 4096, 128};
    const QuantMatrix q = MakeQuantMatrix(rng, l);
    std::vector<float> x = RandomVector(rng, 2 * l.cols);
    for (size_t i = 0; i < x.size(); i += 100) x[i] *= 20.0f;
    const Oracle o = Compute(q, x, 2, nullptr);
    auto packed = PackedQuantMatrix::Pack(q.view(), QuantKernel::kActivationLut);
    ASSERT_TRUE(packed.ok()) << packed.status();
    QuantActivations act;
    act.Prepare(x.data(), 2, l.cols, nullptr);
    std::vector<float> y(2 * l.rows);
    QuantLinear(act, **packed, nullptr, y.data(), nullptr);
    double err = 0.0, ref = 0.0;
    for (size_t i = 0; i < y.size(); ++i) {
      err += (y[i] - o.y[i]) * (y[i] - o.y[i]);
      ref += o.y[i] * o.y[i];
    }
    const double rel = std::sqrt(err / ref);
    std::printf("activation_lut %s b=2: relative RMS error %.2e\n",
                std::string(QuantFormatName(f)).c_str(), rel);
    EXPECT_LT(rel, 1.5e-2) << QuantFormatName(f);
    EXPECT_GT(rel, 0.0) << "int8 tables cannot be exact on random x";
  }
}

}  // namespace
}  // namespace lcd::kernels
