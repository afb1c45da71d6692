// QuantizeGlvq's contract beyond its math (tests/python/test_glvq_math.py
// checks the math against numpy / torch): bad inputs are refused with
// InvalidArgument naming the fault, the result is a valid lattice matrix
// that the artifact writer accepts, and it does not depend on the pool.
#include "lcd/quantizer/glvq.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "lcd/kernels/quant_linear.h"

namespace lcd::quantizer {
namespace {

std::vector<float> RandomWeights(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(n));
  for (float& v : w) v = d(rng);
  return w;
}

TEST(GlvqTest, RefusesBadInput) {
  std::vector<float> w = RandomWeights(8 * 48, 1);
  GlvqOptions o;
  o.group_size = 16;
  o.steps = 2;
  o.dim = 12;  // does not divide 16
  EXPECT_NE(QuantizeGlvq(w.data(), 8, 48, nullptr, o).status().message().find("divide"), std::string::npos);
  o.dim = 8;
  o.bits = 9;
  EXPECT_EQ(QuantizeGlvq(w.data(), 8, 48, nullptr, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.bits = 2;
  w[5] = std::nanf("");
  EXPECT_NE(QuantizeGlvq(w.data(), 8, 48, nullptr, o).status().message().find("weight 5"), std::string::npos);
  w[5] = 0.0f;
  std::vector<double> h(48 * 48, 0.0);
  h[7] = INFINITY;
  EXPECT_NE(QuantizeGlvq(w.data(), 8, 48, h.data(), o).status().message().find("H element 7"), std::string::npos);
  EXPECT_EQ(QuantizeGlvq(nullptr, 8, 48, nullptr, o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GlvqTest, ValidLatticeMatrixIndependentOfThePool) {
  const int64_t rows = 19, cols = 100;  // groups 32, 32, 32, 4 (short, shorter than d)
  const std::vector<float> w = RandomWeights(rows * cols, 2);
  std::vector<double> h(cols * cols, 0.0);
  for (int64_t i = 0; i < cols; ++i) h[i * cols + i] = 1.0 + 0.01 * static_cast<double>(i);
  GlvqOptions o;
  o.bits = 3;
  o.group_size = 32;
  o.steps = 5;
  o.reround_every = 2;
  GlvqReport rep;
  auto a = QuantizeGlvq(w.data(), rows, cols, h.data(), o, &rep);
  ASSERT_TRUE(a.ok()) << a.status();
  kernels::ThreadPool pool(2);
  auto b = QuantizeGlvq(w.data(), rows, cols, h.data(), o, nullptr, &pool);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->codes, b->codes);
  EXPECT_EQ(a->params, b->params);
  EXPECT_EQ(a->lattice, b->lattice);
  EXPECT_TRUE(kernels::ValidateQuantLayout(a->layout).ok());
  EXPECT_TRUE(kernels::CheckLatticeParams(a->view()).ok());
  EXPECT_TRUE(kernels::CheckCodePadding(a->view()).ok());
  // 3 full groups: one up (4 bits), one down (2 bits), the short one at 3.
  int up = 0, down = 0;
  for (int64_t k = 0; k < 3; ++k) {
    up += a->layout.group_bits[k] == 4;
    down += a->layout.group_bits[k] == 2;
  }
  EXPECT_EQ(up, 1);
  EXPECT_EQ(down, 1);
  EXPECT_EQ(a->layout.group_bits[3], 3);
  EXPECT_EQ(rep.groups_up, 1);
  EXPECT_LE(rep.loss_final, rep.loss_init);
  // The decoded matrix is close to the weights. Gaussian weights at widths
  // 4/2/3 (one group each): a uniform scalar quantizer would reach ~5%
  // relative error; mu-law companding with mu >= 10 (the method's range) puts
  // levels too densely near 0 for Gaussian data and 19 rows give G few
  // samples, so ~11% is measured; 15% is the bound.
  std::vector<float> dq(static_cast<size_t>(rows * cols));
  kernels::DequantizeRows(a->view(), 0, rows, dq.data());
  double num = 0, den = 0;
  for (size_t i = 0; i < dq.size(); ++i) {
    num += (dq[i] - w[i]) * (dq[i] - w[i]);
    den += w[i] * w[i];
  }
  EXPECT_LT(num / den, 0.15) << num / den;
}

}  // namespace
}  // namespace lcd::quantizer
