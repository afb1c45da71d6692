// Helpers shared by the kernel tests: fresh random seeds (printed so a
// failure can be replayed with LCD_TEST_SEED=<seed>), the ISA levels this CPU
// can run, and weight storage in each dtype.
#ifndef LCD_TESTS_KERNELS_KERNEL_TEST_UTIL_H_
#define LCD_TESTS_KERNELS_KERNEL_TEST_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "lcd/kernels/dtype.h"
#include "lcd/kernels/ops.h"

namespace lcd::kernels::testing {

// A seed from std::random_device, or LCD_TEST_SEED when set.
inline uint64_t FreshSeed() {
  if (const char* env = std::getenv("LCD_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

inline std::string SeedMessage(uint64_t seed) {
  return "seed " + std::to_string(seed) + " (replay with LCD_TEST_SEED=" + std::to_string(seed) +
         ")";
}

// Every ISA level this CPU supports, lowest first (kReference always).
inline std::vector<Isa> AvailableIsas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kReference, Isa::kAvx2, Isa::kAvx512}) {
    if (static_cast<int>(isa) <= static_cast<int>(DetectIsa())) out.push_back(isa);
  }
  return out;
}

// Forces an ISA for the lifetime of the object.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa) : previous_(SetIsaForTesting(isa)) {}
  ~ScopedIsa() { SetIsaForTesting(previous_); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;

 private:
  Isa previous_;
};

inline std::vector<float> RandomVector(std::mt19937_64& rng, size_t n, float lo = -1.0f,
                                       float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A matrix stored in `dtype` plus the exact fp32 values it holds (widening
// fp16/bf16 is exact, so `values` is the ground truth for the kernel).
struct StoredMatrix {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  MatrixView view;
};

inline StoredMatrix MakeMatrix(std::mt19937_64& rng, DType dtype, int64_t rows, int64_t cols,
                               float lo = -1.0f, float hi = 1.0f) {
  StoredMatrix m;
  const std::vector<float> src = RandomVector(rng, static_cast<size_t>(rows * cols), lo, hi);
  m.bytes.resize(static_cast<size_t>(rows * cols) * DTypeSize(dtype));
  m.values.resize(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    switch (dtype) {
      case DType::kF32:
        reinterpret_cast<float*>(m.bytes.data())[i] = src[i];
        m.values[i] = src[i];
        break;
      case DType::kF16: {
        const uint16_t h = FloatToFp16(src[i]);
        reinterpret_cast<uint16_t*>(m.bytes.data())[i] = h;
        m.values[i] = Fp16ToFloat(h);
        break;
      }
      case DType::kBF16: {
        const uint16_t b = FloatToBf16(src[i]);
        reinterpret_cast<uint16_t*>(m.bytes.data())[i] = b;
        m.values[i] = Bf16ToFloat(b);
        break;
      }
    }
  }
  m.view = MatrixView{m.bytes.data(), dtype, rows, cols};
  return m;
}

}  // namespace lcd::kernels::testing

#endif  // LCD_TESTS_KERNELS_KERNEL_TEST_UTIL_H_
