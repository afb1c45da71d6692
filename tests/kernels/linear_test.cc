// Linear at every ISA level against a float64 reference on fresh random
// inputs. Tolerance: |y - y64| <= 1e-5 * (sum_k |x_k w_k| + |bias|), i.e.
// relative to the scale of the dot product (fp32 accumulation of up to ~1000
// terms stays well inside it). Weights stored as fp16/bf16 are widened
// exactly, so the same bound applies to every dtype.
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
using testing::MakeMatrix;
using testing::RandomVector;
using testing::ScopedIsa;
using testing::SeedMessage;

constexpr double kRelTol = 1e-5;

struct LinearCase {
  int64_t m, n, k;
};

// Checks Linear on one problem for every ISA, with and without bias/pool.
void CheckLinear(std::mt19937_64& rng, DType dtype, const LinearCase& c, ThreadPool* pool) {
  const auto w = MakeMatrix(rng, dtype, c.n, c.k);
  const std::vector<float> x = RandomVector(rng, c.m * c.k);
  const std::vector<float> bias = RandomVector(rng, c.n);
  for (bool with_bias : {false, true}) {
    std::vector<double> want(c.m * c.n), scale(c.m * c.n);
    for (int64_t r = 0; r < c.m; ++r) {
      for (int64_t j = 0; j < c.n; ++j) {
        double acc = with_bias ? bias[j] : 0.0;
        double mag = with_bias ? std::fabs(bias[j]) : 0.0;
        for (int64_t i = 0; i < c.k; ++i) {
          const double p = static_cast<double>(x[r * c.k + i]) * w.values[j * c.k + i];
          acc += p;
          mag += std::fabs(p);
        }
        want[r * c.n + j] = acc;
        scale[r * c.n + j] = mag;
      }
    }
    for (Isa isa : AvailableIsas()) {
      ScopedIsa forced(isa);
      SCOPED_TRACE(::testing::Message() << "isa=" << IsaName(isa) << " dtype=" << DTypeName(dtype)
                                        << " m=" << c.m << " n=" << c.n << " k=" << c.k
                                        << " bias=" << with_bias << " pool=" << (pool != nullptr));
      std::vector<float> y(c.m * c.n, std::nanf(""));
      Linear(x.data(), c.m, w.view, with_bias ? bias.data() : nullptr, y.data(), pool);
      for (int64_t i = 0; i < c.m * c.n; ++i) {
        ASSERT_NEAR(y[i], want[i], kRelTol * scale[i] + 1e-30) << "at index " << i;
      }
    }
  }
}

TEST(LinearTest, MatchesFloat64AcrossShapesDtypesAndIsas) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  ThreadPool pool(3);
  const std::vector<LinearCase> shapes = {
      {1, 1, 1},    {1, 1, 7},     {1, 3, 16},   {1, 17, 33}, {1, 64, 64},   {1, 69, 257},
      {1, 9, 1029}, {1, 130, 100}, {2, 5, 15},   {3, 13, 31}, {4, 8, 48},    {5, 21, 129},
      {6, 1, 65},   {7, 33, 200},  {8, 16, 512}, {9, 11, 77}, {9, 70, 1000}, {37, 12, 40},
  };
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (const LinearCase& c : shapes) {
      CheckLinear(rng, dtype, c, nullptr);
      CheckLinear(rng, dtype, c, &pool);
    }
  }
}

TEST(LinearTest, EveryBatchSizeOneToNine) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  ThreadPool pool(2);
  for (int64_t m = 1; m <= 9; ++m) {
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      CheckLinear(rng, dtype, {m, 23, 95}, &pool);
    }
  }
}

TEST(LinearTest, BatchedRowsEqualIndependentGemvs) {
  // m > 1 must compute each row exactly as an independent dot product would
  // up to rounding; compare against m separate m = 1 calls.
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  const int64_t m = 6, n = 40, k = 300;
  const auto w = MakeMatrix(rng, DType::kF16, n, k);
  const std::vector<float> x = RandomVector(rng, m * k);
  for (Isa isa : AvailableIsas()) {
    ScopedIsa forced(isa);
    std::vector<float> batched(m * n), single(n);
    Linear(x.data(), m, w.view, nullptr, batched.data(), nullptr);
    for (int64_t r = 0; r < m; ++r) {
      Linear(x.data() + r * k, 1, w.view, nullptr, single.data(), nullptr);
      for (int64_t j = 0; j < n; ++j) {
        EXPECT_NEAR(batched[r * n + j], single[j], 1e-4)
            << IsaName(isa) << " r=" << r << " j=" << j;
      }
    }
  }
}

TEST(LinearTest, SetIsaForTestingClampsToDetected) {
  const Isa detected = DetectIsa();
  const Isa before = SetIsaForTesting(Isa::kAvx512);
  EXPECT_LE(static_cast<int>(ActiveIsa()), static_cast<int>(detected));
  SetIsaForTesting(Isa::kReference);
  EXPECT_EQ(ActiveIsa(), Isa::kReference);
  SetIsaForTesting(before);
  EXPECT_EQ(IsaName(Isa::kAvx2), "avx2");
}

TEST(LinearTest, DetectIsaAgreesWithCompilerCpuModel) {
  // An independent view of CPUID (libgcc's); both also require OS support
  // for the wider registers, which every Linux of the last decade gives.
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const Isa want = avx512 && avx2 ? Isa::kAvx512 : (avx2 ? Isa::kAvx2 : Isa::kReference);
  EXPECT_EQ(DetectIsa(), want) << "detected " << IsaName(DetectIsa());
}

}  // namespace
}  // namespace lcd::kernels
