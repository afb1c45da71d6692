// BitDistiller's matrix quantizers (lcd/quantizer/bitdistiller.h): bad input
// gives a clear InvalidArgument, the output layout is the documented one, and
// the clipping search never does worse than no clipping. Their math is
// checked against numpy in tests/python/test_bitdistiller.py.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lcd/quantizer/bitdistiller.h"
#include "quantizer_test_util.h"

namespace lcd::quantizer {
namespace {

using ::testing::HasSubstr;

void ExpectInvalid(const absl::Status& s, const std::string& needle) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(needle));
}

TEST(BitDistillerTest, RejectsBadInput) {
  std::vector<float> w(4 * 16, 0.1f);
  ExpectInvalid(QuantizeBitDistiller(nullptr, 4, 16, 2, 8).status(), "null");
  ExpectInvalid(QuantizeBitDistiller(w.data(), 4, 16, 1, 8).status(), "bits must be in [2, 8]");
  ExpectInvalid(QuantizeBitDistiller(w.data(), 4, 16, 2, 0).status(), "group_size");
  ExpectInvalid(QuantizeBitDistiller(w.data(), 0, 16, 2, 8).status(), "at least 1x1");
  w[5] = std::numeric_limits<float>::quiet_NaN();
  ExpectInvalid(QuantizeBitDistiller(w.data(), 4, 16, 3, 8).status(), "non-finite weight at row 0, column 5");
  w[5] = 0.1f;
  InputGram gram;
  gram.cols = 8;
  gram.xtx.assign(64, 0.0);
  ExpectInvalid(BitDistillerClipSearch(w.data(), 4, 16, 2, 8, &gram).status(), "8 wide, the weight has 16 columns");
  w[3] = 3e5f;  // A group range whose INT2 scale (1e5) overflows fp16.
  ExpectInvalid(QuantizeBitDistiller(w.data(), 4, 16, 2, 8).status(), "row 0 has a group whose range");
  w[3] = -7e4f;  // NF3: |min| is a stored level, beyond fp16.
  ExpectInvalid(QuantizeBitDistiller(w.data(), 4, 16, 3, 8).status(), "row 0 has a group whose range");
}

TEST(BitDistillerTest, LayoutAndClippingNeverHurts) {
  const uint64_t seed = test_util::FreshSeed();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const int64_t rows = 5, cols = 44, g = 16;  // Last group short (12 columns).
  std::vector<float> w(rows * cols), x(200 * cols);
  for (float& v : w) v = normal(rng);
  for (float& v : x) v = normal(rng) * 20.0f;
  InputGram gram;
  gram.cols = cols;
  gram.xtx.assign(cols * cols, 0.0);
  for (int64_t t = 0; t < 200; ++t) {
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) gram.xtx[i * cols + j] += x[t * cols + i] * x[t * cols + j] / 200.0;
    }
  }
  for (int bits : {2, 3, 4}) {
    SCOPED_TRACE(testing::Message() << "seed " << seed << " bits " << bits);
    absl::StatusOr<BitDistillerClip> clip = BitDistillerClipSearch(w.data(), rows, cols, bits, g, &gram);
    ASSERT_TRUE(clip.ok()) << clip.status();
    ASSERT_EQ(clip->groups, 3);
    for (size_t i = 0; i < clip->err.size(); ++i) {
      EXPECT_LE(clip->err[i], clip->err_noclip[i]);
      EXPECT_LE(clip->a_step[i], 9);
      EXPECT_LE(clip->b_step[i], 9);
      EXPECT_LE(clip->lo[i], clip->hi[i]);
    }
    std::vector<float> clipped = w;
    ApplyBitDistillerClip(*clip, clipped.data(), cols, g);
    absl::StatusOr<QuantizedMatrix> q = QuantizeBitDistiller(clipped.data(), rows, cols, bits, g);
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_EQ(q->layout.format, bits == 3 ? kernels::QuantFormat::kCodebook : kernels::QuantFormat::kAffine);
    EXPECT_EQ(q->layout.bits, bits);
    EXPECT_EQ(q->params.size(), static_cast<size_t>(rows * 3 * (bits == 3 ? 8 : 2)));
    EXPECT_EQ(q->codes.size(), static_cast<size_t>(rows * ((cols * bits + 7) / 8)));
  }
}

}  // namespace
}  // namespace lcd::quantizer
