// fp16/bf16 conversions: exhaustive round trips over all 2^16 encodings,
// round-to-nearest-even checked in float64 against the neighbouring
// representable values, and (when the CPU has F16C) bit-exact agreement with
// the hardware converter _cvtss_sh on random and special inputs.
#include "lcd/kernels/dtype.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernel_test_util.h"
#include "lcd/kernels/ops.h"

namespace lcd::kernels {
namespace {

using testing::FreshSeed;
using testing::SeedMessage;

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

__attribute__((target("f16c"))) uint16_t HardwareFloatToFp16(float f) {
  return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}
__attribute__((target("f16c"))) float HardwareFp16ToFloat(uint16_t h) { return _cvtsh_ss(h); }

bool HaveF16c() { return DetectIsa() != Isa::kReference; }

// True when `h` is a correct round-to-nearest-even fp16 encoding of finite f.
bool IsNearestEvenFp16(float f, uint16_t h) {
  const double x = f;
  const double got = Fp16ToFloat(h);
  if (std::isinf(got)) return std::fabs(x) >= 65520.0;  // the overflow threshold
  // The neighbours of h on each side (through zero and up to infinity).
  for (int delta : {-1, 1}) {
    const uint16_t mag = h & 0x7fff;
    int next_mag = static_cast<int>(mag) + delta;
    uint16_t nb;
    if (next_mag < 0) {
      nb = static_cast<uint16_t>((h ^ 0x8000) & 0x8000) | 1;  // crosses zero
    } else {
      nb = static_cast<uint16_t>((h & 0x8000) | next_mag);
    }
    const double other = Fp16ToFloat(nb);
    if (std::isinf(other)) continue;
    const double d_got = std::fabs(got - x), d_other = std::fabs(other - x);
    if (d_other < d_got) return false;
    if (d_other == d_got && (h & 1) && got != 0.0) return false;  // tie must go to even
  }
  return true;
}

TEST(DtypeTest, Fp16RoundTripsEveryEncoding) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = Fp16ToFloat(static_cast<uint16_t>(h));
    const uint16_t back = FloatToFp16(f);
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0) {
      EXPECT_TRUE(std::isnan(f)) << h;
      EXPECT_EQ(back, h | 0x200) << "NaN keeps its payload and becomes quiet: " << h;
    } else {
      EXPECT_EQ(back, h) << "fp16 0x" << std::hex << h << " -> " << f;
    }
    if (HaveF16c()) {
      const float hw = HardwareFp16ToFloat(static_cast<uint16_t>(h));
      EXPECT_EQ(Bits(hw), Bits(f)) << "fp16 0x" << std::hex << h;
    }
  }
}

TEST(DtypeTest, Fp16SpecialValues) {
  EXPECT_EQ(FloatToFp16(0.0f), 0x0000);
  EXPECT_EQ(FloatToFp16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToFp16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToFp16(65519.996f), 0x7bff);
  EXPECT_EQ(FloatToFp16(65520.0f), 0x7c00);
  EXPECT_EQ(FloatToFp16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FloatToFp16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(FloatToFp16(std::ldexp(1.0f, -24)), 0x0001);     // smallest subnormal
  EXPECT_EQ(FloatToFp16(std::ldexp(1.0f, -25)), 0x0000);     // tie -> even (zero)
  EXPECT_EQ(FloatToFp16(std::ldexp(1.5f, -25)), 0x0001);     // above the tie
  EXPECT_EQ(FloatToFp16(std::ldexp(3.0f, -25)), 0x0002);     // 1.5 ulp tie -> even
  EXPECT_EQ(FloatToFp16(std::ldexp(1.0f, -14)), 0x0400);     // smallest normal
  EXPECT_EQ(FloatToFp16(std::ldexp(1023.5f, -24)), 0x0400);  // rounds up into normals
  EXPECT_EQ(FloatToFp16(std::numeric_limits<float>::denorm_min()), 0x0000);
  const uint16_t nan = FloatToFp16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x3ff, 0);
  // A signalling NaN whose payload lives only in the low bits must stay NaN.
  EXPECT_TRUE(std::isnan(Fp16ToFloat(FloatToFp16(FromBits(0x7f800001)))));
}

TEST(DtypeTest, Fp16RandomFloatsRoundToNearestEven) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint32_t> bits_dist;
  // Bias towards the fp16 range (exponents 2^-26 .. 2^17) to hit subnormals,
  // ties and overflow often; plus fully random bit patterns.
  std::uniform_int_distribution<uint32_t> exp_dist(127 - 26, 127 + 17);
  for (int i = 0; i < 400000; ++i) {
    uint32_t u = bits_dist(rng);
    if (i % 2 == 0) u = (u & 0x807fffff) | (exp_dist(rng) << 23);
    if (i % 7 == 0) u &= ~0x1fffu | 0x1000u;  // exact ties on the normal grid
    const float f = FromBits(u);
    const uint16_t h = FloatToFp16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(Fp16ToFloat(h)));
    } else {
      ASSERT_TRUE(IsNearestEvenFp16(f, h))
          << "f=" << f << " bits=0x" << std::hex << u << " h=0x" << h;
      EXPECT_EQ(std::signbit(Fp16ToFloat(h)), std::signbit(f));
    }
    if (HaveF16c()) {
      ASSERT_EQ(h, HardwareFloatToFp16(f)) << "bits=0x" << std::hex << u;
    }
  }
}

TEST(DtypeTest, Bf16RoundToNearestEvenAndSpecials) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint32_t> bits_dist;
  for (int i = 0; i < 400000; ++i) {
    uint32_t u = bits_dist(rng);
    if (i % 5 == 0) u = (u & 0xffff0000u) | 0x8000u;  // exact ties
    const float f = FromBits(u);
    const uint16_t b = FloatToBf16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(Bf16ToFloat(b))) << std::hex << u;
      continue;
    }
    // The two bf16 candidates around f are its truncation and the next one up
    // in magnitude; check b is the nearer, ties to even, in float64.
    const uint16_t lo = static_cast<uint16_t>(u >> 16);
    const uint16_t hi = static_cast<uint16_t>(lo + 1);
    const double d_lo = std::fabs(static_cast<double>(Bf16ToFloat(lo)) - f);
    // Rounding past the largest finite bf16 gives infinity; for the
    // distance comparison infinity stands at 2^128, as in IEEE-754.
    double hi_value = Bf16ToFloat(hi);
    if (std::isinf(hi_value)) hi_value = std::copysign(std::ldexp(1.0, 128), hi_value);
    const double d_hi = std::fabs(hi_value - f);
    uint16_t want = d_lo < d_hi ? lo : (d_hi < d_lo ? hi : ((lo & 1) ? hi : lo));
    if ((u & 0xffff) == 0) want = lo;  // exact
    ASSERT_EQ(b, want) << "bits=0x" << std::hex << u;
  }
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(FloatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBf16(FromBits(0x7f7fffff)), 0x7f80);  // max float rounds to inf
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(FromBits(0x7f800001)))));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(FromBits(0xffffffff)))));
  EXPECT_EQ(FloatToBf16(FromBits(0x00000001)), 0x0000);  // tiny subnormal -> 0
  EXPECT_EQ(FloatToBf16(FromBits(0x00018000)), 0x0002);  // subnormal tie -> even
  EXPECT_EQ(FloatToBf16(FromBits(0x00008000)), 0x0000);
}

TEST(DtypeTest, ConvertToF32AllTypes) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedMessage(seed));
  std::mt19937_64 rng(seed);
  const size_t n = 1001;
  const std::vector<float> src = testing::RandomVector(rng, n, -1000.0f, 1000.0f);
  std::vector<uint16_t> h(n), b(n);
  for (size_t i = 0; i < n; ++i) {
    h[i] = FloatToFp16(src[i]);
    b[i] = FloatToBf16(src[i]);
  }
  std::vector<float> out(n);
  ConvertToF32(src.data(), DType::kF32, n, out.data());
  EXPECT_EQ(out, src);
  ConvertToF32(h.data(), DType::kF16, n, out.data());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], Fp16ToFloat(h[i]));
  ConvertToF32(b.data(), DType::kBF16, n, out.data());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], Bf16ToFloat(b[i]));
  EXPECT_EQ(DTypeName(DType::kBF16), "bf16");
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
}

}  // namespace
}  // namespace lcd::kernels
