// CUDA twins against the CPU reference (and float64 for Linear). Skips the
// numeric tests when no GPU is usable; the availability contract (count 0, no
// crash, clear non-OK statuses, *IsSupported false) is tested everywhere.
// Tolerances: RmsNorm |y - ref| <= 1e-5 * (|ref| + 1e-3 max|ref|); Linear
// |y - y64| <= 1e-5 * sum_k |x_k w_k| (fp32 accumulation in another order).
#include "lcd/kernels/cuda_ops.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernel_test_util.h"
#include "lcd/kernels/ops.h"
#include "lcd_skip.h"

namespace lcd::kernels {
namespace {

using testing::FreshSeed;
using testing::MakeMatrix;
using testing::RandomVector;
using testing::ScopedIsa;
using testing::SeedMessage;

TEST(CudaOpsTest, AvailabilityIsReportedWithoutCrashing) {
  const int count = CudaDeviceCount();
  EXPECT_GE(count, 0);
  EXPECT_EQ(CudaDeviceCount(), count) << "the count is stable";
  const float x[4] = {1, 2, 3, 4};
  const float w[4] = {1, 1, 1, 1};
  float y[4];
  const MatrixView view{w, DType::kF32, 1, 4};
  // Unsupported shapes are rejected up front, with or without a GPU.
  EXPECT_FALSE(CudaLinearIsSupported(2, view));
  EXPECT_FALSE(CudaLinear(x, 2, view, nullptr, y).ok());
  EXPECT_FALSE(CudaRmsNormIsSupported(0, 4));
  if (count == 0) {
    EXPECT_FALSE(CudaLinearIsSupported(1, view));
    EXPECT_FALSE(CudaRmsNormIsSupported(1, 4));
    const absl::Status s = CudaLinear(x, 1, view, nullptr, y);
    EXPECT_TRUE(absl::IsUnimplemented(s) || absl::IsFailedPrecondition(s)) << s;
    const absl::Status r = CudaRmsNorm(x, 1, 4, w, 1e-5f, y);
    EXPECT_TRUE(absl::IsUnimplemented(r) || absl::IsFailedPrecondition(r)) << r;
  } else {
    EXPECT_TRUE(CudaLinearIsSupported(1, view));
  }
}

class CudaNumericTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) LCD_SKIP(kNoGpu) << "no CUDA device";
  }
};

TEST_F(CudaNumericTest, RmsNormMatchesReference) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  ScopedIsa reference(Isa::kReference);
  for (int64_t dim : {1, 7, 64, 255, 4096, 5003}) {
    const int64_t rows = 5;
    const std::vector<float> x = RandomVector(rng, rows * dim, -3.0f, 3.0f);
    const std::vector<float> w = RandomVector(rng, dim, 0.5f, 1.5f);
    std::vector<float> want(rows * dim), got(rows * dim);
    RmsNorm(x.data(), rows, dim, w.data(), 1e-6f, want.data());
    ASSERT_TRUE(CudaRmsNormIsSupported(rows, dim));
    ASSERT_TRUE(CudaRmsNorm(x.data(), rows, dim, w.data(), 1e-6f, got.data()).ok());
    float max_abs = 0;
    for (float v : want) max_abs = std::max(max_abs, std::fabs(v));
    for (int64_t i = 0; i < rows * dim; ++i) {
      ASSERT_NEAR(got[i], want[i], 1e-5 * (std::fabs(want[i]) + 1e-3 * max_abs)) << "dim=" << dim;
    }
  }
}

TEST_F(CudaNumericTest, GemvMatchesReferenceForEveryWeightType) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  ScopedIsa reference(Isa::kReference);
  struct Shape {
    int64_t n, k;
  };
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (Shape s :
         {Shape{1, 1}, Shape{3, 33}, Shape{17, 100}, Shape{257, 1029}, Shape{1000, 4096}}) {
      SCOPED_TRACE(::testing::Message() << DTypeName(dtype) << " n=" << s.n << " k=" << s.k);
      const auto w = MakeMatrix(rng, dtype, s.n, s.k);
      const std::vector<float> x = RandomVector(rng, s.k);
      const std::vector<float> bias = RandomVector(rng, s.n);
      std::vector<float> ref(s.n), got(s.n);
      Linear(x.data(), 1, w.view, bias.data(), ref.data(), nullptr);
      ASSERT_TRUE(CudaLinearIsSupported(1, w.view));
      const absl::Status st = CudaLinear(x.data(), 1, w.view, bias.data(), got.data());
      ASSERT_TRUE(st.ok()) << st;
      for (int64_t j = 0; j < s.n; ++j) {
        double want = bias[j], scale = std::fabs(bias[j]);
        for (int64_t i = 0; i < s.k; ++i) {
          const double p = static_cast<double>(x[i]) * w.values[j * s.k + i];
          want += p;
          scale += std::fabs(p);
        }
        ASSERT_NEAR(got[j], want, 1e-5 * scale) << "row " << j;
        ASSERT_NEAR(got[j], ref[j], 2e-5 * scale) << "row " << j << " vs CPU reference";
      }
    }
  }
}

}  // namespace
}  // namespace lcd::kernels
