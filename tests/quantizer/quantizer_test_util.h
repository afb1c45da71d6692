// Helpers shared by the quantizer tests: the source tree (for the committed
// tiny model), fresh seeds (the kernel tests' LCD_TEST_SEED-replayable
// FreshSeed) and a stored tensor widened to fp32.
#ifndef LCD_TESTS_QUANTIZER_QUANTIZER_TEST_UTIL_H_
#define LCD_TESTS_QUANTIZER_QUANTIZER_TEST_UTIL_H_

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "../kernels/kernel_test_util.h"
#include "lcd/kernels/dtype.h"
#include "lcd/runtime/checkpoint.h"
#include "lcd/runtime/safetensors.h"

namespace lcd::quantizer::test_util {

using kernels::testing::FreshSeed;

// LCD_SOURCE_DIR (set by CTest), else the tree this file sits in.
inline std::string SourceDir() {
  const char* d = std::getenv("LCD_SOURCE_DIR");
  return d != nullptr ? std::string(d)
                      : std::filesystem::path(__FILE__).parent_path().parent_path().parent_path().string();
}

inline std::string TinyModelDir() { return SourceDir() + "/models/tiny-shakespeare"; }

// A stored F32/F16/BF16 tensor widened to fp32 (the test's tensors are known
// to be float types; anything else is a test bug).
inline std::vector<float> TensorF32(const runtime::TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.num_elements()));
  kernels::ConvertToF32(t.data, *runtime::ToKernelDType(t.dtype), out.size(), out.data());
  return out;
}

}  // namespace lcd::quantizer::test_util

#endif  // LCD_TESTS_QUANTIZER_QUANTIZER_TEST_UTIL_H_
